"""One FTP control session: a nursery owning the control relay and every data forward.

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
from ._control import (CLOSE, ActiveRefused, ActiveRequest, ControlChannel, ConvertedActive,
                       OutItem, PassiveOffer)
from ._errors import TunnelError
from ._tunnel import Tunnel

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
    def __init__(self, client: trio.SocketStream, forward: ForwardSpec, config: Config,
                 tunnel: Tunnel, stats: dc.TransferStats) -> None:
        self.id = next(_session_ids)
        self.client = client
        self.forward = forward
        self.config = config
        self.tunnel = tunnel
        self.stats = stats
        peer = client.socket.getpeername()
        self.client_addr = f"{peer[0]}:{peer[1]}"
        self.data = dc.DataContext(config, tunnel, forward.ftp_host, peer[0], stats, self.id)
        self.control = ControlChannel(client_host=peer[0], active_mode=config.active_mode,
                                      auth_tls=config.auth_tls, max_line=config.max_line)
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
        log.info("session %d: client %s -> ftp %s:%d", self.id, self.client_addr,
                 self.forward.ftp_host, self.forward.ftp_port)
        try:
            try:
                self._server = await self.tunnel.open_stream(self.forward.ftp_host,
                                                             self.forward.ftp_port)
            except TunnelError as exc:
                log.warning("session %d: %s", self.id, exc)
                with trio.move_on_after(5):
                    await self.client.send_all(
                        b"421 ftptrio: cannot reach the FTP server through SSH: "
                        + str(exc).encode("ascii", "replace")[:300] + b"\r\n")
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
                await self._send(self.client, await self._passive(item))
            elif isinstance(item, ConvertedActive):
                await self._send(self.client, await self._converted(item))
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
                command = await self._active(item)
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

    def _waiting_scope(self) -> trio.CancelScope:
        """A scope for a data channel's wait for its peer: idle timeout, and
        cancelled when the control connection ends."""
        scope = trio.CancelScope(deadline=trio.current_time() + self.config.data_idle_timeout)
        self._waiting.add(scope)
        return scope

    # ------------------------------------------------------- data-channel setup
    def _passive_destination(self, offer: PassiveOffer) -> str | None:
        """Where passive data goes; None when policy forbids the named address.

        Default: the control connection's FTP host, whatever a 227 names (no
        SSRF through a hostile 227; also fixes servers behind NAT). With
        trust_pasv_address, the named address is used only if allow-listed.
        """
        named, ftp_host, cfg = offer.host, self.forward.ftp_host, self.config
        if named is None or named == ftp_host:
            return ftp_host
        if cfg.trust_pasv_address:
            if named in cfg.pasv_allowed_hosts:
                log.info("session %d: 227 names %s (allow-listed): data goes there",
                         self.id, named)
                return named
            log.warning("session %d: 227 names %s, which is not allow-listed; refused",
                        self.id, named)
            return None
        if not self._warned_pasv_address:
            self._warned_pasv_address = True
            log.warning("session %d: 227 names %s; ignored, data goes to the FTP host %s",
                        self.id, named, ftp_host)
        return ftp_host

    def _reply_address(self) -> str:
        if self.config.passive_address:
            return self.config.passive_address
        local = self.client.socket.getsockname()[0]
        if local.startswith("::ffff:"):
            local = local[7:]
        return local if ":" not in local else "127.0.0.1"

    async def _passive(self, offer: PassiveOffer) -> bytes:
        host = self._passive_destination(offer)
        if host is None:
            return self.control.data_failed(f"passive address {offer.host} not allowed")
        try:
            channel = await self.tunnel.open_data_channel(host, offer.port)
        except TunnelError as exc:
            log.warning("session %d: %s", self.id, exc)
            return self.control.data_failed(str(exc))
        try:
            local_host = self.client.socket.getsockname()[0]
            listener = await dc.open_data_listener(self.data, local_host)
        except OSError as exc:
            channel.close()
            return self.control.data_failed(f"no local listener: {exc}")
        if self._waiting_passive is not None:
            self._waiting_passive.cancel()  # superseded by this PASV/EPSV
        waiting = self._waiting_scope()
        self._waiting_passive = waiting
        assert self._nursery is not None
        self._nursery.start_soon(dc.serve_passive, self.data, listener, channel, waiting)
        port = listener.getsockname()[1]
        log.debug("session %d: passive %s:%d via SSH, client connects to port %d", self.id,
                  host, offer.port, port)
        return self.control.passive_reply(offer, self._reply_address(), port)

    async def _active(self, request: ActiveRequest) -> bytes | None:
        cfg = self.config
        try:
            remote = await self.tunnel.listen_remote(
                cfg.remote_listen_host, 0, accept_filter=dc.ftp_server_only(self.forward.ftp_host))
        except TunnelError as exc:
            log.warning("session %d: %s", self.id, exc)
            self.control.active_failed(request, str(exc))
            self._to_client.wake()
            return None
        assert self._nursery is not None
        self._active_gate.opened()
        waiting = self._waiting_scope()
        self._active_waiting[id(request)] = waiting
        self._nursery.start_soon(dc.serve_active, self.data, remote, request.host, request.port,
                                 self._active_gate, waiting)
        log.debug("session %d: active %s:%d via remote forward %s:%d", self.id, request.host,
                  request.port, cfg.active_address, remote.port)
        return self.control.active_command(request, cfg.active_address, remote.port)

    async def _converted(self, event: ConvertedActive) -> bytes:
        host = self._passive_destination(
            PassiveOffer(event.server_host, event.server_port, event.extended))
        if host is None:
            return self.control.data_failed(f"passive address {event.server_host} not allowed")
        try:
            channel = await self.tunnel.open_data_channel(host, event.server_port)
        except TunnelError as exc:
            log.warning("session %d: %s", self.id, exc)
            return self.control.data_failed(str(exc))
        try:
            await channel.connect_socket(event.client_host, event.client_port)
        except OSError as exc:
            log.warning("session %d: cannot connect to client data port %s:%d: %s", self.id,
                        event.client_host, event.client_port, exc)
            return self.control.data_failed(f"cannot connect to your data port: {exc}")
        assert self._nursery is not None
        self._nursery.start_soon(dc.serve_converted, self.data, channel)
        return self.control.converted_reply(event)
