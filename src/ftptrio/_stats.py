"""Transfer accounting shared by every session of one forwarder (no I/O, no trio)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class TransferStats:
    """Counters shared by every session of one forwarder."""

    sessions: int = 0
    sessions_active: int = 0
    transfers: int = 0
    transfer_errors: int = 0
    #: transfer commands the server (or ftptrio, 425) refused before any data moved
    #: (RETR of a missing file: 550); not counted in ``transfers``
    transfers_refused: int = 0
    #: bytes the FTP clients sent to the servers (uploads) and received (downloads)
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    #: transfers per data mode ("passive", "active", "converted")
    by_mode: dict[str, int] = field(default_factory=dict)
    #: sessions ended before an FTP server was reached, by reason ("max_sessions",
    #: "max_sessions_per_client", "client", "destination")
    sessions_refused: dict[str, int] = field(default_factory=dict)
    #: requests an access rule refused, by rule ("destination", "client", "read_only")
    policy_denied: dict[str, int] = field(default_factory=dict)
    #: told every accounted transfer's fields (the log line's ``transfer`` dict with
    #: the session's user, type and server): --xferlog
    listeners: list[Callable[[dict[str, object]], None]] = field(
        default_factory=list, repr=False, compare=False)

    def transfer_accounted(self, transfer: dict[str, object]) -> None:
        for listener in self.listeners:
            listener(transfer)

    def refuse_session(self, reason: str) -> None:
        self.sessions_refused[reason] = self.sessions_refused.get(reason, 0) + 1

    def deny(self, rule: str, count: int = 1) -> None:
        if count:
            self.policy_denied[rule] = self.policy_denied.get(rule, 0) + count

    def record(self, mode: str, *, to_server: int, to_client: int,
               error: str | None = None, refused: bool = False) -> None:
        """Count one finished (or cut) transfer in ``mode``: its bytes each way, and
        an error if ``error`` says why it failed; a ``refused`` one only as refused."""
        if refused:
            self.transfers_refused += 1
            return
        self.transfers += 1
        self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        self.bytes_to_server += to_server
        self.bytes_to_client += to_client
        if error:
            self.transfer_errors += 1
