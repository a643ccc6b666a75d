"""Transfer accounting shared by every session of one forwarder (no I/O, no trio)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable

#: upper bounds of the transfer duration histogram (seconds; +Inf implied)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


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
    #: sessions served per listener (a label naming it), for --metrics
    by_forward: dict[str, int] = field(default_factory=dict, repr=False)
    #: transfers by (direction, mode, result: "ok", "error" or "refused"), for --metrics
    by_outcome: dict[tuple[str, str, str], int] = field(default_factory=dict, repr=False)
    #: transfers (not refused) per DURATION_BUCKETS bucket (the last: longer), and the
    #: sum of their seconds
    duration_counts: list[int] = field(
        default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1), repr=False)
    duration_sum: float = field(default=0.0, repr=False)

    def session_started(self, forward: str) -> None:
        self.by_forward[forward] = self.by_forward.get(forward, 0) + 1

    def transfer_accounted(self, transfer: dict[str, object]) -> None:
        """One accounted transfer's log fields (after ``record``): counted by outcome
        and duration, then handed to the listeners."""
        result = transfer.get("result")
        outcome = "ok" if result == "ok" else "refused" if result == "refused" else "error"
        key = (str(transfer.get("direction")), str(transfer.get("mode")), outcome)
        self.by_outcome[key] = self.by_outcome.get(key, 0) + 1
        seconds = transfer.get("seconds")
        if outcome != "refused" and isinstance(seconds, (int, float)):
            self.duration_counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
            self.duration_sum += seconds
        for listener in self.listeners:
            listener(transfer)

    def duration_histogram(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) per bucket, +Inf last."""
        total, buckets = 0, []
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), self.duration_counts):
            total += count
            buckets.append((bound, total))
        return buckets

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
