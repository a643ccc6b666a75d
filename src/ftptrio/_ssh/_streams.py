"""trio streams over SSH channels, and remote (tcpip-forward) listeners.

* ``SSHStream``: a trio stream over one direct-tcpip or forwarded-tcpip
  channel (FTP control connections).
* ``RemoteListener``: a tcpip-forward on the SSH server that hands its first
  connection to trio as an ``SSHDataRelay`` and refuses the rest (one-shot
  data forwards).
* ``RemoteStreamListener``: a tcpip-forward on the SSH server that yields every
  incoming connection as an ``SSHStream`` (the control listener of -R tunnels).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable

import asyncssh
import trio

from ._bridge import aio, guard_callback, run_future
from ._relay import (DEFAULT_MAX_WINDOW, MAX_PKTSIZE, MIN_BUDGET_WINDOW, WINDOW, SSHDataRelay,
                     WindowBudget, bound_receive_window, incoming_data_relay, recv_buffered)

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0

_Incoming = tuple[SSHDataRelay, str, int]


class _TrioSide:
    """Wakes a trio task from asyncio callbacks (both run in the trio thread)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class _StreamSession(asyncssh.SSHTCPSession[bytes]):
    """The asyncssh side of an SSHStream: buffers incoming data for trio."""

    HIGH_WATER = 256 * 1024

    def __init__(self) -> None:
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.buffer: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.closed_exc: BaseException | None = None
        self.closed = False
        self.writable = True
        self.readable = _TrioSide()
        self.drained = _TrioSide()

    @guard_callback
    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        bound_receive_window(chan)

    @guard_callback
    def data_received(self, data: bytes, datatype: asyncssh.DataType = None) -> None:
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered > self.HIGH_WATER and self.chan is not None:
            self.chan.pause_reading()
        self.readable.wake()

    @guard_callback
    def eof_received(self) -> bool:
        self.eof = True
        self.readable.wake()
        return True  # keep our sending half open

    @guard_callback
    def pause_writing(self) -> None:
        self.writable = False

    @guard_callback
    def resume_writing(self) -> None:
        self.writable = True
        self.drained.wake()

    @guard_callback
    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closed_exc = exc
        self.readable.wake()
        self.drained.wake()

    def on_error(self, exc: Exception) -> None:
        """A callback failed: the stream is broken."""
        if self.chan is not None:
            self.chan.abort()


class SSHStream(trio.abc.HalfCloseableStream):
    """A trio stream over one SSH TCP channel (used for FTP control)."""

    def __init__(self, chan: asyncssh.SSHTCPChannel[bytes], session: _StreamSession) -> None:
        self._chan = chan
        self._session = session

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (here and paused in the channel): at
        most the high-water mark plus the channel's window, however slowly the
        stream is read."""
        return self._session.buffered + recv_buffered(self._chan)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        s = self._session
        while not s.buffer:
            if s.closed and s.closed_exc is not None and not s.eof:
                raise trio.BrokenResourceError(f"SSH channel lost: {s.closed_exc}")
            if s.eof or s.closed:
                await trio.lowlevel.checkpoint()
                return b""
            await s.readable.wait()
        data = s.buffer.popleft()
        if max_bytes is not None and len(data) > max_bytes:
            s.buffer.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        was_over = s.buffered > s.HIGH_WATER
        s.buffered -= len(data)
        if was_over and s.buffered <= s.HIGH_WATER and not s.closed:
            self._chan.resume_reading()
        await trio.lowlevel.checkpoint()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        s = self._session
        if s.closed:
            raise trio.BrokenResourceError("SSH channel closed")
        self._chan.write(bytes(data))
        while not s.writable and not s.closed:
            await s.drained.wait()
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        while not self._session.writable and not self._session.closed:
            await self._session.drained.wait()

    async def send_eof(self) -> None:
        if not self._session.closed:
            try:
                self._chan.write_eof()
            except (OSError, asyncssh.Error):
                pass
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._chan.close()
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await aio(self._chan.wait_closed)()


async def open_ssh_stream(conn: asyncssh.SSHClientConnection, host: str, port: int,
                          originator: tuple[str, int] = ("", 0)) -> SSHStream:
    """Open a direct-tcpip channel to host:port as a trio stream (asyncssh errors
    propagate); ``originator`` names the connecting client to the SSH server."""
    session = _StreamSession()
    chan, _ = await aio(conn.create_connection)(lambda: session, host, port,
                                                orig_host=originator[0],
                                                orig_port=originator[1])
    return SSHStream(chan, session)


class RemoteListener:
    """A tcpip-forward on the SSH server; relays only its first connection, and none
    before it is armed (``armed=False``: a forward requested ahead of the PORT/EPRT
    that will use it refuses every connection until then).

    Open with ``await RemoteListener.open(conn, host, port)``.
    """

    def __init__(self, accept_filter: Callable[[str, int], bool] | None = None,
                 max_window: int = DEFAULT_MAX_WINDOW,
                 budget: WindowBudget | None = None, armed: bool = True) -> None:
        self.armed = armed
        self._listener: asyncssh.SSHListener | None = None
        self._max_window = max_window
        self._budget = budget or WindowBudget(None)
        #: the one data channel's share of the --data-memory budget: the relay's once
        #: the FTP server connects, released here if it never does. A forward requested
        #: ahead takes its share only when armed (it holds no data before), and its
        #: channel's window starts at the budget's guaranteed minimum until then.
        self._reservation = self._budget.reserve(min(WINDOW, max_window) if armed else 0)
        self._initial_window = (self._reservation.window if armed
                                else min(MIN_BUDGET_WINDOW, max_window))
        self.port = 0
        self.host = ""
        self._incoming: asyncio.Future[_Incoming] = asyncio.get_event_loop().create_future()
        self._accept_filter = accept_filter
        #: accept() handed the connection to its caller
        self._taken = False

    @classmethod
    async def open(cls, conn: asyncssh.SSHClientConnection, host: str, port: int = 0,
                   accept_filter: Callable[[str, int], bool] | None = None,
                   max_window: int = DEFAULT_MAX_WINDOW,
                   budget: WindowBudget | None = None, armed: bool = True) -> RemoteListener:
        """Request the forward (asyncssh errors propagate). The data channel's
        receive window starts at WINDOW (or what ``budget`` has left) and may grow
        to ``max_window``."""
        remote = cls(accept_filter, max_window, budget, armed)
        try:
            remote._listener = await aio(conn.create_server)(
                remote._session_factory, host, port, window=remote._initial_window,
                max_pktsize=MAX_PKTSIZE)
        except BaseException:
            remote._reservation.release()
            raise
        remote.host = host
        remote.port = remote._listener.get_port()
        return remote

    def _session_factory(self, orig_host: str, orig_port: int) -> asyncssh.SSHTCPSession[bytes]:
        fut = self._incoming
        if not self.armed or fut.done() or (self._accept_filter is not None
                                            and not self._accept_filter(orig_host, orig_port)):
            log.warning("refused extra connection from %s:%s on remote forward port %d",
                        orig_host, orig_port, self.port)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            "ftptrio: one-shot data forward already used")
        relay, session = incoming_data_relay(self._max_window, self._reservation)
        fut.set_result((relay, orig_host, orig_port))
        return session

    def arm(self) -> None:
        """From now on, the first connection allowed is relayed; the data channel's
        share of the budget is taken now, and its window starts at that share where
        asyncssh's listener lets it be set (otherwise at the guaranteed minimum)."""
        if self.armed:
            return
        self.armed = True
        wanted = min(WINDOW, self._max_window)
        listener = self._listener
        if listener is not None and isinstance(getattr(listener, "_window", None), int):
            self._reservation = self._budget.reserve(wanted)
            setattr(listener, "_window", self._reservation.window)  # asyncssh's, read per channel
        else:
            self._reservation = self._budget.reserve(self._initial_window)

    async def accept(self) -> _Incoming:
        """Wait for the FTP server's data connection; returns (relay, orig host, port)."""
        incoming = await run_future(asyncio.shield(self._incoming))
        self._taken = True
        return incoming

    async def aclose(self) -> None:
        """Cancel the forward (cancel-tcpip-forward); shielded, bounded."""
        listener, self._listener = self._listener, None
        if not self._incoming.done():
            self._incoming.cancel()
            self._reservation.release()  # no data channel came: nothing will use it
        elif not self._taken and not self._incoming.cancelled():
            # the connection came, but the wait for it ended first (superseded, timed
            # out): close it, after asyncssh has finished opening it (call_soon keeps
            # the order of the channel's pending open step)
            relay, _host, _port = self._incoming.result()
            asyncio.get_event_loop().call_soon(relay.close)
        if listener is None:
            return
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            listener.close()
            try:
                await aio(listener.wait_closed)()
            except Exception as exc:  # connection already gone
                log.debug("closing remote forward: %r", exc)


class _IncomingStreamSession(_StreamSession):
    """A forwarded-tcpip control connection; handed to trio once open."""

    def __init__(self, listener: RemoteStreamListener, orig_host: str,
                 orig_port: int) -> None:
        super().__init__()
        self._listener = listener
        self._orig = (orig_host, orig_port)

    @guard_callback
    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        bound_receive_window(chan)
        self._listener._deliver(SSHStream(chan, self), chan, *self._orig)


class RemoteStreamListener:
    """A tcpip-forward on the SSH server whose every connection becomes a trio
    stream: ``async for stream, orig_host, orig_port in listener``.

    Open with ``await RemoteStreamListener.open(conn, host, port)``.
    """

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn
        self._listener: asyncssh.SSHListener | None = None
        #: connections are accepted from the request on (the SSH server may send
        #: one before confirming the forward) until aclose()
        self._accepting = True
        self.host = ""
        self.port = 0
        self._send, self._receive = trio.open_memory_channel[tuple[SSHStream, str, int]](256)

    @classmethod
    async def open(cls, conn: asyncssh.SSHClientConnection, host: str,
                   port: int) -> RemoteStreamListener:
        """Request the forward (asyncssh errors propagate)."""
        remote = cls(conn)
        try:
            remote._listener = await aio(conn.create_server)(remote._session_factory, host, port)
        except BaseException:
            remote._accepting = False
            remote._send.close()
            remote._receive.close()
            raise
        remote.host = host
        remote.port = remote._listener.get_port()
        return remote

    def _session_factory(self, orig_host: str, orig_port: int) -> _IncomingStreamSession:
        if not self._accepting:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            "ftptrio: listener closed")
        return _IncomingStreamSession(self, orig_host, orig_port)

    def _deliver(self, stream: SSHStream, chan: asyncssh.SSHTCPChannel[bytes], orig_host: str,
                 orig_port: int) -> None:
        try:
            self._send.send_nowait((stream, orig_host, orig_port))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning("refused connection from %s:%s on remote listener port %d "
                        "(not accepting)", orig_host, orig_port, self.port)
            chan.close()

    async def wait_lost(self) -> None:
        """Return when the SSH connection under this listener closes; iteration
        then ends (the forward is gone with the connection)."""
        try:
            await aio(self._conn.wait_closed)()
        except Exception as exc:  # noqa: BLE001 - closed either way
            log.debug("SSH connection closed: %r", exc)
        self._send.close()

    def __aiter__(self) -> RemoteStreamListener:
        return self

    async def __anext__(self) -> tuple[SSHStream, str, int]:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Cancel the forward and close connections not yet accepted; shielded."""
        listener, self._listener = self._listener, None
        self._accepting = False
        self._send.close()
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            while True:
                try:
                    stream, _h, _p = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                await stream.aclose()
            self._receive.close()
            if listener is not None:
                listener.close()
                try:
                    await aio(listener.wait_closed)()
                except Exception as exc:  # connection already gone
                    log.debug("closing remote listener: %r", exc)
