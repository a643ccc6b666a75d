"""Transfer accounting shared by every session of one forwarder (no I/O, no trio)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class TransferOutcome(Protocol):
    """What accounting needs from a finished data transfer (e.g. a RelayResult)."""

    @property
    def error(self) -> str | None: ...


@dataclass
class TransferStats:
    """Counters shared by every session of one forwarder."""

    sessions: int = 0
    sessions_active: int = 0
    transfers: int = 0
    transfer_errors: int = 0
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    #: transfers per data mode ("passive", "active", "converted")
    by_mode: dict[str, int] = field(default_factory=dict)

    def record(self, mode: str, result: TransferOutcome) -> None:
        """Count one finished transfer in ``mode`` (an error if ``result.error``)."""
        self.transfers += 1
        self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        if result.error:
            self.transfer_errors += 1
