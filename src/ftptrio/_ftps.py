"""FTPS through a forward without decrypting it: the passive range, and the hint.

Once a session's control channel is TLS (``--auth-tls passthrough`` after the
server's 234, or ``--auth-tls implicit`` from the first byte), its 227/229 replies
cannot be read. What still works: the FTP server takes its passive ports from a
fixed range (``Config.passive_ports``), and the common clients connect their data
channel to the control connection's address with the port from the reply. So while
at least one TLS session of the forward is live, ``PassiveRange`` listens on those
port numbers on the forward's listen addresses and forwards each connection through
a direct-tcpip channel of its own to the FTP host's same port (the data plane's
bounded relay, ``SessionTunnel.open_data_relay``). It accepts connections only from
an address that has a live TLS session on the forward, at most
MAX_RANGE_CONNECTIONS_PER_SESSION at a time per such session.

``FtpsForward`` is one forward's FTPS state: its range (if configured) and the
once-per-forward hint for users whose server demands TLS while ftptrio refuses it.
Its range runs as one task in the forwarder's session nursery, started by the first
TLS session and ended (listeners closed at once, running relays after
``Config.data_drain_timeout``) when the last one ends.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import math
import socket
from typing import Sequence

import trio

from ._config import Config, ForwardSpec
from ._control import LogLimiter, SessionLog
from ._errors import TunnelError
from ._netaddr import unmapped
from ._seams import DataRelay, SessionTunnel
from ._stats import TransferStats

log = logging.getLogger(__name__)

#: range connections one TLS session may have open at a time. FTP moves one transfer
#: at a time per control connection (RFC 959); the second covers the next data
#: connection arriving while the last one's teardown is still crossing SSH. More
#: would only let a client (or anyone sharing its address) open SSH channels in bulk.
MAX_RANGE_CONNECTIONS_PER_SESSION = 2
#: the data-plane mode range connections are counted under (TransferStats.by_mode)
RANGE_MODE = "tls-passive"
#: how often a live range tries again to listen on its ports that were taken
TAKEN_RETRY_INTERVAL = 2.0
#: pause before accepting again when out of file descriptors
ACCEPT_BACKOFF = 0.1
#: accept() errors about one connection that is gone (reset before it was accepted,
#: or refused by a firewall rule): the listener is fine
_ACCEPT_GONE = (errno.ECONNABORTED, errno.EPERM, errno.EPROTO)
#: relay errors that only say a peer closed first (see PassiveRange._account)
_PEER_CLOSED = ("Broken pipe", "Connection reset")
#: a TLS session this old that saw no range connection is told about active mode
ACTIVE_HINT_MIN_SECONDS = 1.0


def describe_ports(ports: Sequence[int]) -> str:
    """``40001, 40003-40005`` for the ports 40001, 40003, 40004, 40005."""
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class _TLSSession:
    __slots__ = ("host", "joined", "connections")

    def __init__(self, host: str, joined: float) -> None:
        self.host = host
        self.joined = joined
        #: range connections accepted from its address since it joined
        self.connections = 0


class _RangeConnection:
    """One running range connection: its relay (once its channel is open), for the
    idle timeout of its address's TLS sessions, and the scope that ends it."""
    __slots__ = ("relay", "progress", "moved_at", "scope")

    def __init__(self, now: float) -> None:
        self.relay: DataRelay | None = None
        self.progress: tuple[int, ...] = ()
        #: when a byte last moved, as far as polling (data_activity) tells
        self.moved_at = now
        self.scope = trio.CancelScope()


class PassiveRange:
    """One local forward's passive port range, live while a TLS session is."""

    def __init__(self, forward: ForwardSpec, config: Config, tunnel: SessionTunnel,
                 stats: TransferStats, bind_hosts: Sequence[str]) -> None:
        """``config``: the forward's effective Config (``passive_ports`` set);
        ``bind_hosts``: the addresses its control listener is bound to."""
        assert config.passive_ports is not None
        self.forward = forward
        self.config = config
        self.tunnel = tunnel
        self.stats = stats
        self.low, self.high = config.passive_ports
        self.bind_hosts = [unmapped(h) for h in bind_hosts]
        #: where the range task runs (the forwarder's session nursery); set before use
        self.nursery: trio.Nursery | None = None
        #: repeated warnings (stray connections: a port scan) are summed up
        self._log = SessionLog(log, {}, LogLimiter())
        self._sessions: dict[int, _TLSSession] = {}
        #: running range connections per client address
        self._running: collections.Counter[str] = collections.Counter()
        self._connections: dict[str, set[_RangeConnection]] = {}
        #: when a range connection of an address last started or ended
        self._changed: dict[str, float] = {}
        self._starting = trio.Lock()
        self._listening: trio.CancelScope | None = None
        self._relays: trio.CancelScope | None = None
        #: set once the current range task's listeners are closed
        self._closed = trio.Event()
        self._closed.set()
        self._reported_taken: set[int] = set()
        self._told_active = False
        #: the ports bound right now (for tests and the log)
        self.bound_ports: list[int] = []

    @property
    def live(self) -> bool:
        """The range listens (at least one TLS session is live)."""
        return self._listening is not None

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    async def join(self, session_id: int, client_host: str) -> None:
        """A TLS session started: the range listens once this returns."""
        host = unmapped(client_host)
        async with self._starting:
            self._sessions[session_id] = _TLSSession(host, trio.current_time())
            if self._listening is None:
                await self._closed.wait()  # the last range task's ports are free again
                assert self.nursery is not None
                try:
                    await self.nursery.start(self._serve)
                except BaseException:
                    self._sessions.pop(session_id, None)
                    raise

    def leave(self, session_id: int) -> None:
        """A TLS session ended; the last one closes the range."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        if (not session.connections and not self._told_active
                and trio.current_time() - session.joined >= ACTIVE_HINT_MIN_SECONDS):
            self._told_active = True
            log.warning("session %d: its TLS session ended without a data connection on the "
                        "passive ports %d-%d: ftptrio cannot see its commands, so if the "
                        "client used active mode (PORT/EPRT), that cannot work through "
                        "--auth-tls %s; make the client use passive mode (EPSV/PASV)",
                        session_id, self.low, self.high, self.config.auth_tls)
        if not self._allowed(session.host):  # its address's last: its connections drain
            drained = trio.current_time() + self.config.data_drain_timeout
            for connection in self._connections.get(session.host, ()):
                connection.scope.deadline = min(connection.scope.deadline, drained)
        if self._sessions:
            return
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None
        if self._relays is not None:  # running transfers get the drain time
            self._relays.deadline = min(self._relays.deadline, trio.current_time()
                                        + self.config.data_drain_timeout)
            self._relays = None

    def data_activity(self, client_host: str) -> float:
        """When a byte last moved on a range connection from ``client_host`` (as far as
        polling tells: the latest call that saw its relay's progress change), or one
        started or ended; -inf if none ran. Its TLS sessions' idle timeout polls it."""
        host = unmapped(client_host)
        latest = self._changed.get(host, -math.inf)
        now = trio.current_time()
        for connection in self._connections.get(host, ()):
            if connection.relay is not None:
                progress = connection.relay.progress
                if progress != connection.progress:
                    connection.progress, connection.moved_at = progress, now
            latest = max(latest, connection.moved_at)
        return latest

    def data_running(self, client_host: str) -> int:
        """Range connections from ``client_host`` running right now."""
        return len(self._connections.get(unmapped(client_host), ()))

    def _allowed(self, host: str) -> int:
        """How many range connections ``host`` may have open at once (0: none)."""
        live = sum(1 for s in self._sessions.values() if s.host == host)
        return live * MAX_RANGE_CONNECTIONS_PER_SESSION

    # ------------------------------------------------------------------ the task
    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        closed = self._closed = trio.Event()
        listening = trio.CancelScope()
        try:
            listeners, taken = await self._bind()
            async with trio.open_nursery() as relays:
                self._relays = relays.cancel_scope
                self._listening = listening
                with listening:
                    try:
                        async with trio.open_nursery() as accepting:
                            for sock in listeners:
                                accepting.start_soon(self._accept_loop, sock, relays)
                            if taken:
                                accepting.start_soon(self._retry_taken, taken, listeners,
                                                     accepting, relays)
                            task_status.started()
                    finally:
                        for sock in listeners:
                            sock.close()
                        self.bound_ports = []
                        closed.set()
                        log.info("FTPS passive ports %d-%d: no TLS session left; listeners "
                                 "closed", self.low, self.high)
        finally:
            if self._listening is listening:  # (cancelled from outside: shutdown)
                self._listening = None
            closed.set()

    async def _bind(self) -> tuple[list[trio.socket.SocketType], list[tuple[str, int]]]:
        """The range's listeners, and the (host, port)s taken on this machine."""
        listeners: list[trio.socket.SocketType] = []
        taken_at: list[tuple[str, int]] = []
        for host in self.bind_hosts:
            for port in range(self.low, self.high + 1):
                try:
                    sock = await self._listen_on(host, port)
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        log.error("FTPS passive ports: out of file descriptors at port %d "
                                  "(%s); the range is only partly served", port, exc)
                        break
                    taken_at.append((host, port))
                    continue
                except BaseException:
                    for bound in listeners:
                        bound.close()
                    raise
                listeners.append(sock)
        taken = [port for _host, port in taken_at]
        new = sorted(set(taken) - self._reported_taken)
        if new:
            self._reported_taken.update(new)
            log.warning("FTPS passive port%s %s already taken on this machine: data "
                        "connections the FTP server offers there cannot be forwarded",
                        "s" * (len(new) > 1), describe_ports(new))
        self.bound_ports = sorted({sock.getsockname()[1] for sock in listeners})
        log.info("FTPS passive ports %d-%d: listening on %s for TLS sessions of %s:%d "
                 "(%d ports)", self.low, self.high, ", ".join(self.bind_hosts),
                 self.forward.ftp_host, self.forward.ftp_port, len(self.bound_ports))
        return listeners, taken_at

    @staticmethod
    async def _listen_on(host: str, port: int) -> trio.socket.SocketType:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 \
            else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind((host, port))
            sock.listen(8)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _retry_taken(self, taken: list[tuple[str, int]],
                           listeners: list[trio.socket.SocketType], accepting: trio.Nursery,
                           relays: trio.Nursery) -> None:
        """While the range is live, listen on its taken ports once they are free: a
        port is often held only briefly (the local end of a loopback connection, such
        as an FTP client's own control connection, or a plain session's listener)."""
        while taken:
            await trio.sleep(TAKEN_RETRY_INTERVAL)
            for host, port in list(taken):
                try:
                    sock = await self._listen_on(host, port)
                except OSError:
                    continue
                taken.remove((host, port))
                listeners.append(sock)  # (closed with the others)
                self.bound_ports = sorted({*self.bound_ports, port})
                log.info("FTPS passive port %d on %s: free again, listening", port, host)
                accepting.start_soon(self._accept_loop, sock, relays)

    async def _accept_loop(self, listener: trio.socket.SocketType,
                           relays: trio.Nursery) -> None:
        port = listener.getsockname()[1]
        while True:
            try:
                sock, peer = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_GONE:  # (trio's SocketListener skips these too)
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("FTPS passive port %d: accept failed (%s); retrying shortly",
                              port, exc)
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                raise
            host = unmapped(peer[0])
            allowed = self._allowed(host)
            if not allowed:
                self._log.warning("refused a connection from %s to FTPS passive port %d: no "
                                  "TLS session from that address", host, port)
                sock.close()
                continue
            if self._running[host] >= allowed:
                self._log.warning("refused a connection from %s to FTPS passive port %d: "
                                  "%d already open (at most %d per TLS session)", host, port,
                                  self._running[host], MAX_RANGE_CONNECTIONS_PER_SESSION)
                sock.close()
                continue
            for session in self._sessions.values():
                if session.host == host:
                    session.connections += 1
            self._running[host] += 1
            relays.start_soon(self._relay, sock, host, peer[1], port)

    async def _relay(self, sock: trio.socket.SocketType, host: str, client_port: int,
                     port: int) -> None:
        """One range connection through its own direct-tcpip channel to the FTP host's
        same port."""
        ftp_host = self.forward.ftp_host
        started = trio.current_time()
        connection = _RangeConnection(started)
        self._connections.setdefault(host, set()).add(connection)
        self._changed[host] = started
        try:
            with sock, connection.scope:
                try:
                    relay = await self.tunnel.open_data_relay(ftp_host, port,
                                                              originator=(host, client_port))
                except TunnelError as exc:
                    self._log.warning("FTPS data connection from %s to port %d: %s", host,
                                      port, exc)
                    return
                connection.relay = relay
                try:
                    result = await relay.relay_socket(sock)
                except trio.Cancelled:
                    result = relay.snapshot(cancelled=True)
                    self._account(host, port, started, result.to_ssh, result.from_ssh,
                                  result.error)
                    raise
                self._account(host, port, started, result.to_ssh, result.from_ssh,
                              result.error)
        except Exception:  # it runs beside every session: it must never end them all
            log.exception("FTPS data connection from %s to port %d crashed", host, port)
        finally:
            self._changed[host] = trio.current_time()
            running = self._connections[host]
            running.discard(connection)
            if not running:
                del self._connections[host]
                if not self._allowed(host):  # (its sessions are gone: forget the address)
                    del self._changed[host]
            self._running[host] -= 1
            if not self._running[host]:
                del self._running[host]

    def _account(self, host: str, port: int, started: float, to_server: int,
                 to_client: int, error: str | None) -> None:
        """Count one range connection. Its transfer's outcome is in the encrypted reply,
        so only bytes are known; a peer closing while the other side's last TLS alert
        (close_notify) is still on its way is how TLS data connections end (vsftpd
        after an upload the client already closed): not an error."""
        outcome = error or "ok"
        if error is not None and any(mark in error for mark in _PEER_CLOSED):
            outcome, error = f"peer closed ({error})", None
        self.stats.record(RANGE_MODE, to_server=to_server, to_client=to_client, error=error)
        log.info("FTPS data connection client=%s port=%d to_server=%d to_client=%d "
                 "seconds=%.3f result=%s", host, port, to_server, to_client,
                 trio.current_time() - started, outcome)


class FtpsForward:
    """One forward's FTPS state: its passive range (None: no --passive-ports, or a
    remote tunnel) and whether users were told how to forward FTPS."""

    def __init__(self, forward: ForwardSpec, passive_range: PassiveRange | None = None) -> None:
        self.forward = forward
        self.range = passive_range
        self._told = False
        self._told_no_range = False

    def tls_demanded(self, reply: str) -> None:
        """The FTP server refused a plaintext login for want of TLS (``reply``): say
        once per forward how to forward FTPS."""
        if self._told:
            return
        self._told = True
        log.warning("FTP server %s:%d demands TLS (it answered %r) and ftptrio refuses AUTH "
                    "TLS (--auth-tls refuse): to forward FTPS, run ftptrio with --auth-tls "
                    "passthrough --passive-ports <the server's passive port range> "
                    "(README: FTPS)", self.forward.ftp_host, self.forward.ftp_port, reply)

    async def tls_started(self, session_id: int, client_host: str) -> bool:
        """A session's control channel became TLS: the range listens once this
        returns. False: no range (data connections cannot be forwarded; said once)."""
        if self.range is None:
            if not self._told_no_range:
                self._told_no_range = True
                log.warning("session %d: TLS passed through without --passive-ports: its "
                            "data connections cannot be forwarded; give --passive-ports "
                            "<the FTP server's passive port range>", session_id)
            return False
        await self.range.join(session_id, client_host)
        return True

    def data_activity(self, client_host: str) -> float:
        """When a byte last moved on a range connection from ``client_host``
        (``PassiveRange.data_activity``); -inf without a range."""
        return -math.inf if self.range is None else self.range.data_activity(client_host)

    def data_running(self, client_host: str) -> int:
        return 0 if self.range is None else self.range.data_running(client_host)

    def tls_ended(self, session_id: int) -> None:
        if self.range is not None:
            self.range.leave(session_id)


def ftps_forwards(config: Config, tunnel: SessionTunnel, stats: TransferStats,
                  bind_hosts: Sequence[Sequence[str]]) -> list[FtpsForward]:
    """The FtpsForward of every forward of ``config``, in order; ``bind_hosts``: the
    addresses each forward's listener is bound to (empty for remote tunnels)."""
    result = []
    for forward, hosts in zip(config.forwards, bind_hosts):
        effective = forward.effective(config)
        passive_range = None
        if forward.direction == "local" and effective.passive_ports is not None:
            passive_range = PassiveRange(forward, effective, tunnel, stats, hosts)
        result.append(FtpsForward(forward, passive_range))
    return result
