"""One FTP control session: a nursery owning the control relay and every data forward.

The session's data-channel strategy depends on its forward's direction:
``LocalData`` (-L: client here, FTP server behind SSH) or ``RemoteData`` (-R:
client behind the SSH server, FTP server here; the mirror image).

Four tasks share one ``ControlChannel``: two readers feed it bytes, two writers
drain its outboxes in order, setting up data channels where it asks. Cancelling
the nursery (client gone, server gone, protocol error, shutdown) closes the
control channel, every data listener, remote forward and SSH channel of the session.
"""

from __future__ import annotations

import itertools
import re
import weakref
import logging
from collections import deque
from typing import Any

import trio

from . import _datachannel as dc
from ._config import Config, ForwardSpec
from ._control import (CLOSE, same_address, ActiveRefused, ActiveRequest, ControlChannel, ConvertedActive,
                       OutItem, PassiveOffer)
from ._errors import TunnelError
from ._ssh import SSHDataRelay, Tunnel

log = logging.getLogger(__name__)

_session_ids = itertools.count(1)
#: a reader stops reading while its outbox holds this many items (back-pressure)
MAX_OUTBOX_ITEMS = 64
RECEIVE_SIZE = 65536
#: longest a transfer-complete reply waits for its active data connection
ACTIVE_HOLD_TIMEOUT = 10.0
#: after the control connection ends, running transfers get this long to finish
DATA_DRAIN_TIMEOUT = 5.0
_TRANSFER_DONE = re.compile(rb"(?:^|\n)(?:226|250)[ -]")


class _Outbox:
    """Wakes the writer of one direction; parks readers when it is full."""

    def __init__(self, items: deque[OutItem]) -> None:
        self.items = items
        self.has_items = trio.lowlevel.ParkingLot()
        self.has_room = trio.lowlevel.ParkingLot()

    def wake(self) -> None:
        self.has_items.unpark_all()

    async def next(self) -> OutItem:
        while not self.items:
            await self.has_items.park()
        item = self.items.popleft()
        if len(self.items) < MAX_OUTBOX_ITEMS:
            self.has_room.unpark_all()
        return item

    async def wait_room(self) -> None:
        while len(self.items) >= MAX_OUTBOX_ITEMS:
            await self.has_room.park()


class Session:
    def __init__(self, client: Any, forward: ForwardSpec, config: Config,
                 tunnel: Tunnel, stats: dc.TransferStats,
                 peer: tuple[str, int] | None = None) -> None:
        """``client`` is a trio SocketStream (local tunnels) or an SSHStream
        from the SSH server (remote tunnels, then ``peer`` is the forwarded-tcpip
        originator as the SSH server reports it)."""
        self.id = next(_session_ids)
        self.client = client
        self.forward = forward
        config = forward.effective(config)
        self.config = config
        self.tunnel = tunnel
        self.stats = stats
        self.remote = forward.direction == "remote"
        if peer is None:
            peer = client.socket.getpeername()[:2]
        self.client_addr = f"{peer[0]}:{peer[1]}"
        self.data = dc.DataContext(config, tunnel, forward.ftp_host, peer[0], stats, self.id)
        self.control = ControlChannel(
            client_host=peer[0],
            active_mode="remote-forward" if self.remote else config.active_mode,
            auth_tls=config.auth_tls, max_line=config.max_line)
        self.strategy: LocalData | RemoteData = (RemoteData(self) if self.remote
                                                  else LocalData(self))
        self._to_client = _Outbox(self.control.to_client)
        self._to_server = _Outbox(self.control.to_server)
        self._server: Any = None
        self._nursery: trio.Nursery | None = None  # owns every data forward
        self._control_scope: trio.CancelScope | None = None
        self._waiting: weakref.WeakSet[trio.CancelScope] = weakref.WeakSet()
        self._waiting_passive: trio.CancelScope | None = None
        #: id(ActiveRequest) -> the wait of its remote forward
        self._active_waiting: dict[int, trio.CancelScope] = {}
        self._active_gate = dc.ActiveGate()
        self._warned_pasv_address = False

    async def run(self) -> None:
        """Serve the session until either side closes; always closes the client."""
        started = trio.current_time()
        self.stats.sessions += 1
        self.stats.sessions_active += 1
        log.info("session %d: %s client %s -> ftp %s:%d", self.id,
                 "remote" if self.remote else "local", self.client_addr,
                 self.forward.ftp_host, self.forward.ftp_port)
        try:
            try:
                self._server = await self._connect_server()
            except TunnelError as exc:
                log.warning("session %d: %s", self.id, exc)
                how = "" if self.remote else " through SSH"
                with trio.move_on_after(5):
                    try:
                        await self.client.send_all(
                            f"421 ftptrio: cannot reach the FTP server{how}: ".encode()
                            + str(exc).encode("ascii", "replace")[:300] + b"\r\n")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                return
            async with trio.open_nursery() as data_forwards:
                self._nursery = data_forwards
                async with trio.open_nursery() as control:
                    self._control_scope = control.cancel_scope
                    control.start_soon(self._read, self.client, self.control.receive_client,
                                       self._to_server, self._to_client, "client")
                    control.start_soon(self._read, self._server, self.control.receive_server,
                                       self._to_client, self._to_server, "server")
                    control.start_soon(self._write_client)
                    control.start_soon(self._write_server)
                # control ended: unused listeners and forwards close now; transfers
                # still flushing get a short grace, then the session is torn down
                for waiting in self._waiting:
                    waiting.cancel()
                data_forwards.cancel_scope.deadline = trio.current_time() + DATA_DRAIN_TIMEOUT
        finally:
            with trio.CancelScope(shield=True):
                if self._server is not None:
                    await self._server.aclose()
                await self.client.aclose()
            self.stats.sessions_active -= 1
            log.info("session %d: closed client=%s ftp=%s:%d seconds=%.1f", self.id,
                     self.client_addr, self.forward.ftp_host, self.forward.ftp_port,
                     trio.current_time() - started)

    async def _connect_server(self) -> Any:
        fwd = self.forward
        if not self.remote:
            return await self.tunnel.open_stream(fwd.ftp_host, fwd.ftp_port)
        # remote tunnel: the FTP server is reached from this machine
        try:
            with trio.fail_after(self.config.ssh.connect_timeout):
                return await trio.open_tcp_stream(fwd.ftp_host, fwd.ftp_port)
        except (OSError, trio.TooSlowError) as exc:
            raise TunnelError(f"cannot connect to {fwd.ftp_host}:{fwd.ftp_port}: "
                              f"{exc or 'timeout'}") from exc

    # ------------------------------------------------------------------ readers
    async def _read(self, stream: Any, feed: Any, outbox: _Outbox, other: _Outbox,
                    name: str) -> None:
        try:
            while True:
                await outbox.wait_room()
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    log.debug("session %d: %s closed the control connection", self.id, name)
                    break
                feed(data)
                outbox.wake()
                other.wake()  # locally answered commands go the other way
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("session %d: %s control connection broke: %s", self.id, name, exc)
            if name == "server":
                outbox.items.append(b"421 ftptrio: lost the connection to the FTP server "
                                    b"(SSH connection lost); closing.\r\n")
        # the other side gets everything queued so far, then the session ends
        outbox.items.append(CLOSE)
        outbox.wake()

    # ------------------------------------------------------------------ writers
    async def _write_client(self) -> None:
        while True:
            item = await self._to_client.next()
            if isinstance(item, bytes):
                data = self._coalesce(item, self._to_client)
                if self._active_gate.pending and _TRANSFER_DONE.search(data):
                    with trio.move_on_after(ACTIVE_HOLD_TIMEOUT):
                        await self._active_gate.wait_settled()
                await self._send(self.client, data)
            elif isinstance(item, PassiveOffer):
                await self._send(self.client, await self.strategy.passive(item))
            elif isinstance(item, ConvertedActive):
                await self._send(self.client, await self.strategy.converted(item))
            elif isinstance(item, ActiveRefused):
                scope = self._active_waiting.pop(id(item.request), None)
                if scope is not None:
                    scope.cancel()
            elif item is CLOSE:
                self._end()
                return

    async def _write_server(self) -> None:
        while True:
            item = await self._to_server.next()
            if isinstance(item, bytes):
                await self._send(self._server, self._coalesce(item, self._to_server))
                if self.control.quit_requested:  # no transfer can follow a QUIT
                    for waiting in self._waiting:
                        waiting.cancel()
            elif isinstance(item, ActiveRequest):
                command = await self.strategy.active(item)
                if command is not None:
                    await self._send(self._server, command)
            elif item is CLOSE:
                self._end()
                return

    @staticmethod
    def _coalesce(first: bytes, outbox: _Outbox) -> bytes:
        parts = [first]
        while outbox.items and isinstance(outbox.items[0], bytes):
            parts.append(outbox.items.popleft())  # type: ignore[arg-type]
        return first if len(parts) == 1 else b"".join(parts)

    async def _send(self, stream: Any, data: bytes) -> None:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end()

    def _end(self) -> None:
        assert self._control_scope is not None
        self._control_scope.cancel()

    def _warn_ignored_pasv_address(self, named: str) -> None:
        """Say once per session that a 227's address is ignored (no SSRF)."""
        if not self._warned_pasv_address:
            self._warned_pasv_address = True
            log.warning("session %d: 227 names %s; ignored, data goes to the FTP host %s",
                        self.id, named, self.forward.ftp_host)

    def _new_passive_wait(self) -> trio.CancelScope:
        """The wait of a new passive listener/forward; it supersedes the previous one."""
        if self._waiting_passive is not None:
            self._waiting_passive.cancel()
        self._waiting_passive = self._waiting_scope()
        return self._waiting_passive

    def _new_active_wait(self, request: ActiveRequest) -> trio.CancelScope:
        """The wait of an active data connection: holds 226 until it is connected
        (ActiveGate) and is cancelled if the server refuses the PORT/EPRT."""
        self._active_gate.opened()
        waiting = self._waiting_scope()
        self._active_waiting[id(request)] = waiting
        return waiting

    def _waiting_scope(self) -> trio.CancelScope:
        """A scope for a data channel's wait for its peer: idle timeout, and
        cancelled when the control connection ends."""
        scope = trio.CancelScope(deadline=trio.current_time() + self.config.data_idle_timeout)
        self._waiting.add(scope)
        return scope



# ------------------------------------------------------------ data strategies
class LocalData:
    """Local (-L) tunnels: the client is here, the FTP server behind the SSH server.

    Passive: direct-tcpip to the data port + a local one-shot listener.
    Active: a remote forward (tcpip-forward) on the SSH server, or conversion to
    passive (``active_mode="passive"``).
    """

    def __init__(self, session: Session) -> None:
        self.s = session

    def _passive_destination(self, offer: PassiveOffer) -> str | None:
        """Where passive data goes; None when policy forbids the named address.

        Default: the control connection's FTP host, whatever a 227 names (no
        SSRF through a hostile 227; also fixes servers behind NAT). With
        trust_pasv_address, the named address is used only if allow-listed.
        """
        named, ftp_host, cfg = offer.host, self.s.forward.ftp_host, self.s.config
        if named is None or named == ftp_host:
            return ftp_host
        if cfg.trust_pasv_address:
            if named in cfg.pasv_allowed_hosts:
                log.info("session %d: 227 names %s (allow-listed): data goes there",
                         self.s.id, named)
                return named
            log.warning("session %d: 227 names %s, which is not allow-listed; refused",
                        self.s.id, named)
            return None
        self.s._warn_ignored_pasv_address(named)
        return ftp_host

    def _reply_address(self) -> str:
        if self.s.config.passive_address:
            return self.s.config.passive_address
        local = _sock_host(self.s.client, "getsockname")
        return local if ":" not in local else "127.0.0.1"

    async def _server_data_channel(self, offer: PassiveOffer) -> SSHDataRelay | bytes:
        """An SSH channel to the server's passive port, or the 425 reply to send."""
        host = self._passive_destination(offer)
        if host is None:
            return self.s.control.data_failed(f"passive address {offer.host} not allowed")
        try:
            return await self.s.tunnel.open_data_relay(host, offer.port)
        except TunnelError as exc:
            log.warning("session %d: %s", self.s.id, exc)
            return self.s.control.data_failed(str(exc))

    async def passive(self, offer: PassiveOffer) -> bytes:
        channel = await self._server_data_channel(offer)
        if isinstance(channel, bytes):
            return channel
        try:
            local_host = self.s.client.socket.getsockname()[0]
            listener = await dc.open_data_listener(self.s.data, local_host)
        except OSError as exc:
            channel.close()
            return self.s.control.data_failed(f"no local listener: {exc}")
        waiting = self.s._new_passive_wait()
        assert self.s._nursery is not None
        self.s._nursery.start_soon(dc.serve_passive, self.s.data, listener, channel, waiting)
        port = listener.getsockname()[1]
        log.debug("session %d: passive data port %d via SSH, client connects to port %d",
                  self.s.id, offer.port, port)
        return self.s.control.passive_reply(offer, self._reply_address(), port)

    async def active(self, request: ActiveRequest) -> bytes | None:
        cfg = self.s.config
        try:
            remote = await self.s.tunnel.listen_remote(
                cfg.remote_listen_host, 0, accept_filter=dc.ftp_server_only(self.s.forward.ftp_host))
        except TunnelError as exc:
            log.warning("session %d: %s", self.s.id, exc)
            self.s.control.active_failed(request, str(exc))
            self.s._to_client.wake()
            return None
        assert self.s._nursery is not None
        waiting = self.s._new_active_wait(request)
        self.s._nursery.start_soon(dc.serve_active, self.s.data, remote, request.host,
                                   request.port, self.s._active_gate, waiting)
        log.debug("session %d: active %s:%d via remote forward %s:%d", self.s.id, request.host,
                  request.port, cfg.active_address, remote.port)
        return self.s.control.active_command(request, cfg.active_address, remote.port)

    async def converted(self, event: ConvertedActive) -> bytes:
        channel = await self._server_data_channel(
            PassiveOffer(event.server_host, event.server_port, event.extended))
        if isinstance(channel, bytes):
            return channel
        try:
            await channel.connect_socket(event.client_host, event.client_port)
        except OSError as exc:
            log.warning("session %d: cannot connect to client data port %s:%d: %s", self.s.id,
                        event.client_host, event.client_port, exc)
            return self.s.control.data_failed(f"cannot connect to your data port: {exc}")
        assert self.s._nursery is not None
        self.s._nursery.start_soon(dc.serve_converted, self.s.data, channel)
        return self.s.control.converted_reply(event)


class RemoteData:
    """Remote (-R) tunnels, mirrored: the client is behind the SSH server, the FTP
    server here (plain TCP from this machine).

    Passive: a port-0 remote forward on the SSH server whose one connection (only
    from the control client's address) is relayed to the FTP server's data port
    on the FTP host; the 227/229 is rewritten to the SSH server's listen address.
    Active: a local one-shot listener (only the FTP server may connect) relayed
    through SSH (direct-tcpip) to the client's data listener; the PORT/EPRT is
    rewritten to that listener. Active-to-passive conversion is local-only.
    """

    def __init__(self, session: Session) -> None:
        self.s = session

    async def passive(self, offer: PassiveOffer) -> bytes:
        s = self.s
        if offer.host is not None and not same_address(offer.host, s.forward.ftp_host):
            s._warn_ignored_pasv_address(offer.host)  # data always goes to the FTP host
        try:
            remote = await s.tunnel.listen_remote(
                s.forward.listen_host, 0, accept_filter=dc.client_only(s.data.client_host))
        except TunnelError as exc:
            log.warning("session %d: %s", s.id, exc)
            return s.control.data_failed(str(exc))
        waiting = s._new_passive_wait()
        assert s._nursery is not None
        s._nursery.start_soon(dc.serve_remote_passive, s.data, remote, offer.port, waiting)
        reply_host = s.forward.remote_reply_host(s.config)
        log.debug("session %d: passive %s:%d locally, client connects to SSH server port %d",
                  s.id, s.forward.ftp_host, offer.port, remote.port)
        return s.control.passive_reply(offer, reply_host, remote.port)

    async def active(self, request: ActiveRequest) -> bytes | None:
        s = self.s
        local_host, server_host = _sock_host(s._server, "getsockname"), \
            _sock_host(s._server, "getpeername")
        try:
            listener = await dc.open_local_listener(local_host)
        except OSError as exc:
            s.control.active_failed(request, f"no local listener: {exc}")
            s._to_client.wake()
            return None
        assert s._nursery is not None
        waiting = s._new_active_wait(request)
        port = listener.getsockname()[1]
        s._nursery.start_soon(dc.serve_remote_active, s.data, listener, server_host,
                              request.host, request.port, s._active_gate, waiting)
        log.debug("session %d: active %s:%d via SSH, FTP server connects to %s:%d", s.id,
                  request.host, request.port, local_host, port)
        return s.control.active_command(request, local_host, port)

    async def converted(self, event: ConvertedActive) -> bytes:  # pragma: no cover
        raise AssertionError("remote tunnels never convert active mode to passive")


def _sock_host(stream: Any, which: str) -> str:
    host = getattr(stream.socket, which)()[0]
    return host[7:] if host.startswith("::ffff:") else host
