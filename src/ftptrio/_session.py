"""One FTP session: a thin pump between the client stream, the server stream, the
control protocol (``_control``) and the session's data plane (``_dataplane``).

Two readers feed the protocol bytes; two writers drain its outboxes in order,
handing data-channel events to the data plane and its results back to the protocol.
Every rule lives in the protocol and the data plane; this module only moves bytes
and events. The session's nursery owns the pumps and the data plane's nursery, so
cancelling it (client gone, server gone, protocol error, shutdown) closes the control
connections and every data listener, remote forward and SSH channel of the session.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Callable

import trio

from ._config import Config, ForwardSpec
from ._control import (CLOSE, ActiveAccepted, ActiveRefused, ActiveRequest, ControlChannel,
                       ConvertedActive, HoldForActiveData, Outbox, PassiveOffer, QuitSent,
                       SessionLog, TransferCommand, TransferReplied)
from ._dataplane import (DataPlane, DataSetupError, LocalDataPlane, RemoteDataPlane,
                         SessionAddresses)
from ._errors import TunnelError
from ._ftps import FtpsForward
from ._access import parse_destination_rules
from ._gateway import ProxyLogin, proxy_login, read_greeting
from ._netaddr import unmapped
from ._seams import SessionTunnel
from ._stats import TransferStats

log = logging.getLogger(__name__)

_session_ids = itertools.count(1)
#: readers stop reading while an outbox holds this many bytes (back-pressure: a peer
#: that does not read cannot make ftptrio queue its replies without bound)
MAX_OUTBOX_BYTES = 256 * 1024
RECEIVE_SIZE = 65536
#: while transfers run, the idle timeout polls their progress this often (part of it)
IDLE_POLL_PART = 1 / 8
MIN_IDLE_POLL = 0.05
#: FTP-proxy sessions: how long the FTP server's greeting may take
PROXY_GREETING_TIMEOUT = 30.0

#: a control connection: a trio SocketStream, or a stream over an SSH channel
ControlStream = trio.abc.HalfCloseableStream


def next_session_id() -> int:
    """A new session number (for the "session N:" prefix of every log line)."""
    return next(_session_ids)


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedIn:
    """A control connection opened and logged in by someone else (the --sftp-server
    fallback): the session goes on from there, as any ``-L`` session."""

    server: "ControlStream"
    #: client bytes not yet read by anyone (fed to the protocol first)
    client_bytes: bytes
    #: server bytes that followed the last reply read (fed to the protocol first)
    server_bytes: bytes
    #: the FTP user name, for the accounting
    user: str
    session_id: int


async def send_and_close(stream: trio.abc.HalfCloseableStream, text: str) -> None:
    """Send a last reply (at most 5 s), then close ``stream``, even when cancelled."""
    with trio.move_on_after(5):
        try:
            await stream.send_all(text.encode("ascii", "replace"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    with trio.CancelScope(shield=True):
        await stream.aclose()


class _ServerUnreachable(Exception):
    """A remote tunnel's FTP server cannot be reached from this machine."""


class _Pipe:
    """Wakes the writer of one outbox; tells the readers (``room``) when it drains."""

    def __init__(self, items: Outbox, room: trio.lowlevel.ParkingLot) -> None:
        self.items = items
        self._has_items = trio.lowlevel.ParkingLot()
        self._has_room = room

    def wake(self) -> None:
        self._has_items.unpark_all()

    @property
    def full(self) -> bool:
        return self.items.size >= MAX_OUTBOX_BYTES

    async def next(self) -> object:
        while not self.items:
            await self._has_items.park()
        item = self.items.popleft()
        if not self.full:
            self._has_room.unpark_all()
        return item

    def coalesce(self, first: bytes) -> bytes:
        """``first`` joined with the bytes items queued right behind it."""
        following = self.items.pop_bytes()
        if not self.full:
            self._has_room.unpark_all()
        return b"".join((first, *following)) if following else first


class Session:
    def __init__(self, client: ControlStream, forward: ForwardSpec, config: Config,
                 tunnel: SessionTunnel, stats: TransferStats,
                 peer: tuple[str, int] | None = None, ftps: FtpsForward | None = None,
                 logged_in: LoggedIn | None = None) -> None:
        """``client`` is a trio SocketStream (local tunnels) or an SSHStream from the
        SSH server (remote tunnels; then ``peer`` is the forwarded-tcpip originator as
        the SSH server reports it). ``ftps``: the forward's FTPS state (its passive
        range, joined once this session's control channel is TLS). ``logged_in``: the
        control connection is open and logged in already (``tunnel`` carries it)."""
        self.id = next(_session_ids) if logged_in is None else logged_in.session_id
        self._logged_in = logged_in
        #: this module's log lines, prefixed "session N: " (not rate-limited: a few each)
        self._log = SessionLog(log, {"session": self.id})
        self.client = client
        #: an FTP-proxy listener's forward until the login names the destination
        self.forward = forward
        self._given_config = config
        self.config = forward.effective(config)
        self.tunnel = tunnel
        self.stats = stats
        self.remote = forward.direction == "remote"
        if peer is None:
            assert isinstance(client, trio.SocketStream)
            peer = client.socket.getpeername()[:2]
        self.client_host = peer[0]
        self.client_addr = f"{peer[0]}:{peer[1]}"
        #: the client's (host, port): the direct-tcpip originator of its channels
        self.client_peer = (str(peer[0]), int(peer[1]))
        self.control = ControlChannel(
            client_host=peer[0],
            active_mode="remote-forward" if self.remote else self.config.active_mode,
            auth_tls=self.config.auth_tls, max_line=self.config.max_line, session_id=self.id,
            greeted=forward.proxy or logged_in is not None, read_only=self.config.read_only,
            denied=stats.deny)
        #: readers park here while output piles up; drained outboxes unpark them
        self._room = trio.lowlevel.ParkingLot()
        self._to_client = _Pipe(self.control.to_client, self._room)
        self._to_server = _Pipe(self.control.to_server, self._room)
        self._server: ControlStream | None = None
        self._control_scope: trio.CancelScope | None = None
        self.data: DataPlane | None = None
        self._last_activity = 0.0
        self.ftps = ftps
        #: this session's control channel is TLS and it joined the forward's FTPS state
        self._tls_joined = False

    async def run(self) -> None:
        """Serve the session until either side closes; always closes the client."""
        started = trio.current_time()
        self.stats.sessions += 1
        self.stats.sessions_active += 1
        login = None
        if self.forward.proxy:
            self._log.info("proxy client %s", self.client_addr)
        else:
            self._log.info("%s client %s -> ftp %s:%d", "remote" if self.remote else "local",
                           self.client_addr, self.forward.ftp_host, self.forward.ftp_port)
        try:
            if self.forward.proxy:
                login = await self._proxy_login()
                if login is None:
                    return
            if self._logged_in is not None:
                self._server = self._take_logged_in(self._logged_in)
            else:
                try:
                    self._server = await self._connect_server()
                except (TunnelError, _ServerUnreachable) as exc:
                    await self._refuse(str(exc))
                    return
            if login is not None and not await self._proxy_greeted(self._server, login):
                return
            self.data = self._data_plane(self._server)
            self.data.on_transfer = self._transfer_accounted
            async with self.data.open():
                async with trio.open_nursery() as pumps:
                    self._control_scope = pumps.cancel_scope
                    pumps.start_soon(self._read, self.client, self.control.receive_client,
                                     self.control.client_closed, "client")
                    pumps.start_soon(self._read, self._server, self.control.receive_server,
                                     self.control.server_closed, "server")
                    pumps.start_soon(self._write, self._to_client, self.client)
                    pumps.start_soon(self._write, self._to_server, self._server)
                    if self.config.idle_session_timeout is not None:
                        pumps.start_soon(self._close_when_idle, self.data,
                                         self.config.idle_session_timeout)
                # control ended: waiting listeners close now, transfers get a short drain
        finally:
            if self._tls_joined and self.ftps is not None:
                self.ftps.tls_ended(self.id)
            with trio.CancelScope(shield=True):
                if self._server is not None:
                    await self._server.aclose()
                await self.client.aclose()
            self.stats.sessions_active -= 1
            self.control.log_limiter.flush()  # "suppressed N similar ..." still untold
            self._log.info("closed client=%s ftp=%s:%d seconds=%.1f", self.client_addr,
                           self.forward.ftp_host, self.forward.ftp_port,
                           trio.current_time() - started)

    async def _proxy_login(self) -> ProxyLogin | None:
        """An FTP-proxy listener: greet the client, read its login and make this a -L
        session to the destination it names (None: no allowed destination was named;
        the client has its answer and nothing was opened through SSH)."""
        login, refused = await proxy_login(
            self.client, parse_destination_rules(self.config.allowed_destinations),
            self._log, self.client_addr, self.config.max_line)
        self.stats.deny("destination", refused)
        if login is None:
            if refused:
                self.stats.refuse_session("destination")
            return None
        self.forward = dataclasses.replace(self.forward, ftp_host=login.host,
                                           ftp_port=login.port, proxy=False)
        self.config = self.forward.effective(self._given_config)
        self._log.info("proxy client %s -> ftp %s:%d as user %s", self.client_addr,
                       login.host, login.port, login.user.decode("utf-8", "replace"))
        return login

    async def _proxy_greeted(self, server: ControlStream, login: ProxyLogin) -> bool:
        """The FTP server's greeting is read here (the client had ftptrio's), then the
        client's ``USER user`` and what followed it go to the server as any client
        commands do. False: the server did not greet (the client got 421)."""
        try:
            code, text, rest = await read_greeting(server, self.config.max_line,
                                                   PROXY_GREETING_TIMEOUT)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            code, text, rest = 0, str(exc), b""
        if not 200 <= code < 300:
            await self._refuse(f"{self.forward.ftp_host}:{self.forward.ftp_port} did not "
                               f"greet: {text}")
            return False
        self.control.receive_client(b"USER " + login.user + b"\r\n" + login.rest)
        if rest:
            self.control.receive_server(rest)
        return True

    def _take_logged_in(self, logged_in: LoggedIn) -> ControlStream:
        self.control.user = logged_in.user
        if logged_in.client_bytes:
            self.control.receive_client(logged_in.client_bytes)
        if logged_in.server_bytes:
            self.control.receive_server(logged_in.server_bytes)
        return logged_in.server

    def _transfer_accounted(self, transfer: dict[str, object]) -> None:
        """A transfer's log fields: with the FTP user and server, for the JSON log
        line, then for the forwarder's listeners (--xferlog, metrics)."""
        transfer["user"] = self.control.user
        transfer["server"] = f"{self.forward.ftp_host}:{self.forward.ftp_port}"
        self.stats.transfer_accounted(transfer)

    async def _connect_server(self) -> ControlStream:
        fwd = self.forward
        if not self.remote:
            return await self.tunnel.open_stream(fwd.ftp_host, fwd.ftp_port,
                                                 originator=self.client_peer)
        # remote tunnel: the FTP server is reached from this machine (a plain TCP
        # connect, no SSH involved: not a TunnelError)
        try:
            with trio.fail_after(self.config.ssh.effective_connect_timeout):
                return await trio.open_tcp_stream(fwd.ftp_host, fwd.ftp_port)
        except (OSError, trio.TooSlowError) as exc:
            raise _ServerUnreachable(f"cannot connect to {fwd.ftp_host}:{fwd.ftp_port}: "
                                     f"{exc or 'timeout'}") from exc

    async def _refuse(self, reason: str) -> None:
        self._log.warning("%s", reason)
        if self.control.opaque:  # implicit FTPS: a plaintext 421 would be a broken record
            return
        how = "" if self.remote else " through SSH"
        with trio.move_on_after(5):
            try:
                await self.client.send_all(
                    f"421 ftptrio: cannot reach the FTP server{how}: ".encode()
                    + reason.encode("ascii", "replace")[:300] + b"\r\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def _data_plane(self, server: ControlStream) -> DataPlane:
        client_local = (_local_host(self.client) if isinstance(self.client, trio.SocketStream)
                        else "")
        if self.remote:
            assert isinstance(server, trio.SocketStream)
            addresses = SessionAddresses(
                self.id, self.client_host, client_local,
                server_local_host=_local_host(server),
                server_peer_host=unmapped(server.socket.getpeername()[0]))
            return RemoteDataPlane(self.config, self.forward, self.tunnel, self.stats,
                                   addresses, self.control.log_limiter)
        return LocalDataPlane(self.config, self.forward, self.tunnel, self.stats,
                              SessionAddresses(self.id, self.client_host, client_local),
                              self.control.log_limiter)

    # ------------------------------------------------------------------ readers
    async def _read(self, stream: ControlStream, feed: Callable[[bytes], None],
                    closed: Callable[[], None], name: str) -> None:
        from_client = name == "client"
        try:
            while True:
                await self._wait_room(from_client)
                data = await stream.receive_some(RECEIVE_SIZE)
                self._last_activity = trio.current_time()
                if self.control.log_limiter.suppressing:
                    self.control.log_limiter.flush_expired()  # "suppressed N similar ..."
                if not data:
                    self._log.debug("%s closed the control connection", name)
                    closed()
                    break
                feed(bytes(data))  # (the same object when bytes: trio memory streams give bytearray)
                self._wake()
                if not from_client:
                    self._room.unpark_all()  # replies may release held local replies
                    if self.ftps is not None and not self._tls_joined:
                        await self._watch_tls()
                elif self.control.tls_hello_seen and not self._tls_joined:
                    await self._tls_started()  # implicit FTPS: a TLS client, not a scanner
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._log.info("%s control connection broke: %s", name, exc)
            if from_client:
                closed()
            else:
                self.control.server_lost()
        self._wake()

    async def _watch_tls(self) -> None:
        """After a server read: the control channel just became TLS (the server's 234
        to a passed-through AUTH): join the forward's passive range before reading on
        (no 227/229 can reach the client before its ports listen); or the server
        demands TLS that ftptrio refuses: tell the user once per forward."""
        assert self.ftps is not None
        if self.control.opaque:
            await self._tls_started()
        elif self.control.tls_demanded is not None:
            self.ftps.tls_demanded(self.control.tls_demanded)

    async def _tls_started(self) -> None:
        if self.ftps is None or self._tls_joined:
            return
        self._tls_joined = True
        await self.ftps.tls_started(self.id, self.client_host)

    async def _wait_room(self, from_client: bool) -> None:
        """Back-pressure: the server reader waits while replies pile up for the client;
        the client reader also while commands pile up for the server and while
        commands await their replies (with ftptrio's own replies held behind them),
        so a client that never reads, or floods, cannot grow memory. The server
        reader never waits for the client's side: its replies are what drains it."""
        while (self._to_client.full
               or from_client and (self._to_server.full
                                   or self.control.backlog >= MAX_OUTBOX_BYTES)):
            await self._room.park()

    def _wake(self) -> None:
        self._to_client.wake()
        self._to_server.wake()

    async def _close_when_idle(self, data: DataPlane, timeout: float) -> None:
        """Config.idle_session_timeout: 421 and close after ``timeout`` seconds with no
        control traffic and no byte moved on any data connection. A running transfer
        counts only while it moves bytes (either way, however slowly): one stalled
        for ``timeout`` is idle, and is cut at once when the session closes. While
        transfers run, their progress is polled every IDLE_POLL_PART of the
        timeout (the relay only counts bytes: no per-chunk crossing to trio), so a
        stalled one is closed between ``timeout`` and that much later."""
        self._last_activity = trio.current_time()
        poll = max(timeout * IDLE_POLL_PART, MIN_IDLE_POLL)
        while True:
            deadline = max(self._last_activity, self._data_activity(data)) + timeout
            if self._transfers_running(data):
                deadline = min(deadline, trio.current_time() + poll)
            await trio.sleep_until(deadline)
            if trio.current_time() < max(self._last_activity,
                                         self._data_activity(data)) + timeout:
                continue  # traffic meanwhile, or a poll of running transfers
            stalled = self._transfers_running(data)
            self._log.info("idle for %.0f s%s; closing", timeout,
                           f" ({stalled} transfer{'s' * (stalled > 1)} stalled)"
                           if stalled else "")
            if stalled:
                data.end_without_drain()
            self.control.idle_timeout(timeout)
            self._wake()
            return

    def _data_activity(self, data: DataPlane) -> float:
        """When a byte last moved on this session's data connections; a TLS session's
        are the FTPS passive range's connections from its client's address."""
        latest = data.last_data_activity()
        if self._tls_joined and self.ftps is not None:
            latest = max(latest, self.ftps.data_activity(self.client_host))
        return latest

    def _transfers_running(self, data: DataPlane) -> int:
        running = data.transfers_running
        if self._tls_joined and self.ftps is not None:
            running += self.ftps.data_running(self.client_host)
        return running

    # ------------------------------------------------------------------ writers
    async def _write(self, pipe: _Pipe, stream: ControlStream) -> None:
        data = self.data
        assert data is not None
        while True:
            item = await pipe.next()
            if isinstance(item, bytes):
                await self._send(stream, pipe.coalesce(item))
            elif isinstance(item, (PassiveOffer, ActiveRequest, ConvertedActive)):
                try:
                    host, port = await data.setup(item)
                except DataSetupError as exc:
                    first = self.control.data_failed(item, str(exc))
                else:
                    first = self.control.data_ready(item, host, port)
                self._wake()
                if first:  # the rewritten reply or command, or the 425, is next
                    await self._send(stream, pipe.coalesce(first))
            elif isinstance(item, HoldForActiveData):
                await data.wait_active_settled(item.channel_id)
            elif isinstance(item, ActiveRefused):
                data.refused(item.request_id)
            elif isinstance(item, ActiveAccepted):
                data.accepted(item.request_id)
            elif isinstance(item, TransferReplied):
                data.transfer_replied(item.code)
            elif isinstance(item, TransferCommand):
                data.name_transfer(item.command, item.channel_id, item.transfer_type)
                # its data channel may still be opening (the reply went out first)
                failure = await data.transfer_ready(item.channel_id)
                if failure is None:
                    await self._send(stream, pipe.coalesce(item.line))
                else:
                    self.control.transfer_refused(item, failure)
                    data.transfer_refused()
                    self._wake()
            elif isinstance(item, QuitSent):
                data.stop_unused()  # no transfer can follow a QUIT
            else:
                assert item is CLOSE
                self._end()
                return

    async def _send(self, stream: ControlStream, data: bytes) -> None:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end()

    def _end(self) -> None:
        assert self._control_scope is not None
        self._control_scope.cancel()


def _local_host(stream: trio.SocketStream) -> str:
    return unmapped(stream.socket.getsockname()[0])
