"""``--metrics [bind:]port``: the forwarder's own counters (the numbers of ``--stats``
and ``Forwarder.stats``) in the Prometheus text format at ``/metrics``, through
prometheus_client (the ``metrics`` extra; imported only when --metrics is used).

prometheus_client's WSGI app and the standard library's WSGI server run in one
thread of their own, one request at a time: a scrape never runs on the trio loop.
Its collector asks the trio loop for one ``Snapshot`` (``trio.from_thread``: a copy of
a few dozen numbers, made between two trio steps, so the counters of one scrape agree
with each other), then builds the metric families in the HTTP thread. Nothing here
grows with the number of sessions: the labels are forwards, reasons, rules, and
(direction, mode, result).
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import trio

from ._errors import BindError, ConfigError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

#: a scraper that sends nothing for this long is dropped (one request at a time)
REQUEST_TIMEOUT = 10.0
#: a request not read and answered within this long is cut (a client trickling bytes
#: would otherwise hold the one request slot, and close(), for as long as it likes)
REQUEST_DEADLINE = 10.0


@dataclass
class Snapshot:
    """The forwarder's counters at one moment (taken on the trio thread)."""

    version: str
    implementation: str
    ssh_up: bool
    ssh_reconnects: int
    sessions_active: int
    sessions: dict[str, int]
    sessions_refused: dict[str, int]
    transfers: dict[tuple[str, str, str], int]
    bytes_to_server: int
    bytes_to_client: int
    duration_buckets: list[tuple[float, int]]
    duration_sum: float
    channel_open_failures: dict[str, int]
    policy_denied: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


class _Collector:
    """A prometheus_client collector reading ``Snapshot``s."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)

        s = self._snapshot()
        info = GaugeMetricFamily("ftptrio_build_info", "ftptrio's version and control-line "
                                 "scanner (always 1)", labels=["version", "implementation"])
        info.add_metric([s.version, s.implementation], 1)
        yield info
        yield GaugeMetricFamily("ftptrio_ssh_up", "1 while the SSH connection is up",
                                value=int(s.ssh_up))
        yield CounterMetricFamily("ftptrio_ssh_reconnects", "SSH connections made after "
                                  "the first", value=s.ssh_reconnects)
        yield GaugeMetricFamily("ftptrio_sessions_active", "FTP sessions running",
                                value=s.sessions_active)
        yield _labelled(CounterMetricFamily, "ftptrio_sessions", "FTP sessions served, per "
                        "listener", ["forward"], {(k,): v for k, v in s.sessions.items()})
        yield _labelled(CounterMetricFamily, "ftptrio_sessions_refused", "FTP clients "
                        "refused before an FTP server was reached", ["reason"],
                        {(k,): v for k, v in s.sessions_refused.items()})
        yield _labelled(CounterMetricFamily, "ftptrio_transfers", "transfer commands "
                        "accounted (result: ok, error, refused)",
                        ["direction", "mode", "result"], s.transfers)
        yield _labelled(CounterMetricFamily, "ftptrio_transfer_bytes", "bytes moved on "
                        "data connections (upload: to the FTP servers)", ["direction"],
                        {("upload",): s.bytes_to_server, ("download",): s.bytes_to_client})
        yield HistogramMetricFamily(
            "ftptrio_transfer_duration_seconds", "duration of transfers (refused ones "
            "excluded)", buckets=[(_le(bound), count) for bound, count in s.duration_buckets],
            sum_value=s.duration_sum)
        yield _labelled(CounterMetricFamily, "ftptrio_channel_open_failures", "SSH channel "
                        "opens that failed (control and data)", ["reason"],
                        {(k,): v for k, v in s.channel_open_failures.items()})
        yield _labelled(CounterMetricFamily, "ftptrio_policy_denied", "requests an access "
                        "rule refused", ["rule"],
                        {(k,): v for k, v in s.policy_denied.items()})


def _labelled(kind: Any, name: str, documentation: str, labels: list[str],
              values: Mapping[Any, int]) -> Metric:
    family = kind(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    result: Metric = family
    return result


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        self._deadline = threading.Timer(REQUEST_DEADLINE, self.cut)
        self._deadline.daemon = True
        self._deadline.start()
        self.server.handling = self
        if self.server.closing:
            self.cut()

    def cut(self) -> None:
        """End this request now: its pending reads see end of file."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self._deadline.cancel()
        self.server.handling = None
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


class _Server(WSGIServer):
    #: the request being served, if any (``cut()`` by close)
    handling: _QuietHandler | None = None
    closing = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """prometheus_client's WSGI app on a WSGI server in a thread; ``close()`` stops it."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], Snapshot]) -> None:
        try:
            from prometheus_client import CollectorRegistry, make_wsgi_app
        except ImportError:
            raise ConfigError("--metrics needs prometheus_client: "
                              "pip install 'ftptrio[metrics]'") from None
        token = trio.lowlevel.current_trio_token()

        def from_trio() -> Snapshot:
            return trio.from_thread.run_sync(snapshot, trio_token=token)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(from_trio))
        try:
            self._server: _Server = make_server(
                host, port, make_wsgi_app(registry),
                server_class=_Server6 if ":" in host else _Server,
                handler_class=_QuietHandler)
        except OSError as exc:
            raise BindError.of(host, port, exc) from exc
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="ftptrio-metrics", daemon=True)
        self._thread.start()
        log.info("metrics: Prometheus text format at http://%s:%d/metrics", *self.address)

    async def aclose(self) -> None:
        """Stop serving (waits for a scrape in progress, in a worker thread)."""
        await trio.to_thread.run_sync(self._stop)

    def _stop(self) -> None:
        self._server.closing = True
        handling = self._server.handling
        if handling is not None:
            handling.cut()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
