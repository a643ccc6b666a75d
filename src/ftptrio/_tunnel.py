"""The only module that touches asyncssh and trio-asyncio.

* ``Tunnel``: one SSH connection shared by every session; (re)connects lazily.
* ``ChannelStream``: a trio stream over a direct-tcpip channel (control channels).
* ``DataChannel``: a direct-tcpip or forwarded-tcpip channel that is relayed to a
  TCP socket entirely inside asyncio (``attach_socket`` / ``connect_socket``), so
  data never crosses the trio/asyncio bridge per chunk; trio owns its lifetime.
* ``RemoteListener``: a tcpip-forward on the SSH server that hands its first
  connection to trio and refuses the rest (one-shot data forwards).
* ``RemoteStreamListener``: a tcpip-forward on the SSH server that yields every
  incoming connection as a ``ChannelStream`` (the control listener of -R tunnels).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import asyncssh
import trio
import trio_asyncio

from ._config import SSHOptions
from ._errors import TunnelError

log = logging.getLogger(__name__)

#: SSH channel window: large enough to keep a fast link busy.
WINDOW = 8 * 1024 * 1024
MAX_PKTSIZE = 32768
#: reads smaller than this are acknowledged at once (see _ack_immediately)
QUICKACK_BELOW = 16384
#: per-end write buffer before the other end is paused (back-pressure)
WRITE_HIGH_WATER = 1024 * 1024
CLOSE_TIMEOUT = 5.0
#: longest wait between SSH reconnection attempts
RECONNECT_MAX = 60.0
#: what asyncssh raises when a request or channel fails (not all derive from asyncssh.Error)
_SSH_ERRORS = (asyncssh.Error, asyncssh.ChannelOpenError, asyncssh.ChannelListenError, OSError)
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")


def _encryption_algs(ciphers: tuple[str, ...] | None) -> list[str]:
    if ciphers:
        return list(ciphers)
    available = [alg.decode() for alg in asyncssh.encryption.get_default_encryption_algs()]
    preferred = [c for c in PREFERRED_CIPHERS if c in available]
    return preferred + [c for c in available if c not in preferred]


def _log_asyncio_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # trio-asyncio would otherwise turn a benign teardown error into a crash.
    exc = context.get("exception")
    log.debug("asyncio: %s (%r)", context.get("message"), exc)


def install_asyncio_error_handler() -> None:
    asyncio.get_event_loop().set_exception_handler(_log_asyncio_error)


class _TrioSide:
    """Wakes a trio task from asyncio callbacks (both run in the trio thread)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


# --------------------------------------------------------------------- control
class _StreamSession(asyncssh.SSHTCPSession):
    HIGH_WATER = 256 * 1024

    def __init__(self) -> None:
        self.chan: asyncssh.SSHTCPChannel | None = None
        self.buffer: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.closed_exc: BaseException | None = None
        self.closed = False
        self.writable = True
        self.readable = _TrioSide()
        self.drained = _TrioSide()

    def connection_made(self, chan: asyncssh.SSHTCPChannel) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered > self.HIGH_WATER and self.chan is not None:
            self.chan.pause_reading()
        self.readable.wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.readable.wake()
        return True  # keep our sending half open

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.drained.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closed_exc = exc
        self.readable.wake()
        self.drained.wake()


class ChannelStream(trio.abc.HalfCloseableStream):
    """A trio stream over one SSH direct-tcpip channel (used for control)."""

    def __init__(self, chan: asyncssh.SSHTCPChannel, session: _StreamSession) -> None:
        self._chan = chan
        self._session = session

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
            except (OSError, asyncssh.Error, BrokenPipeError):
                pass
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._chan.close()
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await trio_asyncio.aio_as_trio(self._chan.wait_closed)()


# ------------------------------------------------------------------------ data
class _RelayEnd:
    """One end of an asyncio-side relay: a TCP transport or an SSH channel.

    Works both as an asyncio Protocol and as an asyncssh session. Reading is
    paused until the other end is attached, so no early byte is lost.
    """

    def __init__(self, relay: "_Relay") -> None:
        self.relay = relay
        self.transport: Any = None
        self.peer: _RelayEnd | None = None
        self.eof = False
        self.lost = False
        self.count = 0
        self.early: list[bytes] = []  # data received before the peer was attached

    # -- callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_HIGH_WATER // 4)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = self.peer
        if peer is None or peer.transport is None:
            transport.pause_reading()
            return
        # the other end was first: flush what it got before we existed
        if peer.early:
            transport.write(b"".join(peer.early))
            peer.early.clear()
        if peer.eof:
            transport.write_eof()
        if peer.lost or self.relay.finishing:
            self.relay.finish()
        elif not peer.lost:
            peer.transport.resume_reading()

    def session_started(self) -> None:
        pass

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        self.count += len(data)
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        elif not peer.lost:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            try:
                peer.transport.write_eof()
            except (OSError, asyncssh.Error, RuntimeError):
                pass
        if peer is not None and peer.eof and peer.transport is not None:
            self.relay.finish()
            return False
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        if exc is not None and self.relay.error is None:
            self.relay.error = exc
        self.relay.finish()

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()


class _Relay:
    """Pairs a socket end and a channel end; ``done`` resolves when both closed."""

    def __init__(self) -> None:
        loop = asyncio.get_event_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self.socket_end = _RelayEnd(self)
        self.channel_end = _RelayEnd(self)
        self.socket_end.peer = self.channel_end
        self.channel_end.peer = self.socket_end
        self.finishing = False

    def finish(self) -> None:
        """Close both ends (gracefully: queued data is still flushed)."""
        if self.finishing:
            self._check_done()
            return
        self.finishing = True
        self.socket_end.close()
        self.channel_end.close()
        self._check_done()

    def _check_done(self) -> None:
        if self.socket_end.lost and self.channel_end.lost and not self.done.done():
            self.done.set_result(None)

    def abort(self) -> None:
        """Close both ends at once, discarding queued data (cancellation)."""
        self.finishing = True
        for end in (self.socket_end, self.channel_end):
            if end.transport is not None and not end.lost:
                end.transport.abort()


@dataclass(slots=True)
class RelayResult:
    to_ssh: int  # bytes read from the local socket and sent into SSH
    from_ssh: int  # bytes read from SSH and written to the local socket
    error: str | None = None


class DataChannel:
    """An opened (or incoming) SSH channel waiting to be paired with a socket."""

    def __init__(self, relay: _Relay, chan: Any) -> None:
        self._relay = relay
        self._chan = chan

    async def attach_socket(self, sock: trio.socket.SocketType) -> None:
        """Pair an accepted trio socket with this channel (the socket moves to asyncio)."""
        relay = self._relay
        fd_sock = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        loop = asyncio.get_event_loop()
        try:
            await trio_asyncio.aio_as_trio(loop.connect_accepted_socket)(
                lambda: relay.socket_end, fd_sock)
        except BaseException:
            fd_sock.close()
            self.close()
            raise

    async def connect_socket(self, host: str, port: int) -> None:
        """Connect to host:port locally and pair that connection with this channel."""
        relay = self._relay
        loop = asyncio.get_event_loop()
        try:
            await trio_asyncio.aio_as_trio(loop.create_connection)(
                lambda: relay.socket_end, host, port)
        except BaseException:
            self.close()
            raise

    async def relay_socket(self, sock: trio.socket.SocketType) -> RelayResult:
        """Relay between an accepted trio socket and this channel until both close."""
        await self.attach_socket(sock)
        return await self.wait()

    async def wait(self) -> RelayResult:
        """Wait until both ends closed; on cancellation abort both."""
        relay = self._relay
        try:
            await trio_asyncio.run_aio_future(asyncio.shield(relay.done))
        finally:
            if not relay.done.done():
                relay.abort()
        err = None if relay.error is None else str(relay.error) or type(relay.error).__name__
        return RelayResult(relay.socket_end.count, relay.channel_end.count, err)

    def close(self) -> None:
        self._relay.abort()


async def relayed_connection(host: str, port: int) -> _RelayEnd:
    """For SSH *servers* (asyncio coroutine): connect to host:port and return the
    channel session that relays it. Unlike asyncssh's own forwarder it loses no
    byte the destination sends before the channel is open."""
    relay = _Relay()
    try:
        await asyncio.get_event_loop().create_connection(lambda: relay.socket_end, host, port)
    except OSError as exc:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
    return relay.channel_end


class RemoteListener:
    """A tcpip-forward on the SSH server; relays only its first connection."""

    def __init__(self, tunnel: "Tunnel") -> None:
        self._tunnel = tunnel
        self._listener: Any = None
        self.port = 0
        self.host = ""
        self._incoming: asyncio.Future[tuple[DataChannel, str, int]] | None = None
        self._accept_filter: Callable[[str, int], bool] = lambda h, p: True

    def _session_factory(self, orig_host: str, orig_port: int) -> _RelayEnd:
        fut = self._incoming
        if fut is None or fut.done() or not self._accept_filter(orig_host, orig_port):
            log.warning("refused extra connection from %s:%s on remote forward port %d",
                        orig_host, orig_port, self.port)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            "ftptrio: one-shot data forward already used")
        relay = _Relay()
        fut.set_result((DataChannel(relay, None), orig_host, orig_port))
        return relay.channel_end

    async def accept(self) -> tuple[DataChannel, str, int]:
        """Wait for the FTP server's data connection; returns (channel, orig host, port)."""
        assert self._incoming is not None
        return await trio_asyncio.run_aio_future(asyncio.shield(self._incoming))

    async def aclose(self) -> None:
        """Cancel the forward (cancel-tcpip-forward); shielded, bounded."""
        listener, self._listener = self._listener, None
        if self._incoming is not None and not self._incoming.done():
            self._incoming.cancel()
        if listener is None:
            return
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            listener.close()
            try:
                await trio_asyncio.aio_as_trio(listener.wait_closed)()
            except Exception as exc:  # connection already gone
                log.debug("closing remote forward: %r", exc)


class _IncomingStreamSession(_StreamSession):
    """A forwarded-tcpip control connection; handed to trio once open."""

    def __init__(self, listener: "RemoteStreamListener", orig_host: str,
                 orig_port: int) -> None:
        super().__init__()
        self._listener = listener
        self._orig = (orig_host, orig_port)

    def connection_made(self, chan: asyncssh.SSHTCPChannel) -> None:
        super().connection_made(chan)
        self._listener._deliver(ChannelStream(chan, self), chan, *self._orig)


class RemoteStreamListener:
    """A tcpip-forward on the SSH server whose every connection becomes a trio
    stream: ``async for stream, orig_host, orig_port in listener``."""

    def __init__(self) -> None:
        self._listener: Any = None
        self.host = ""
        self.port = 0
        self._send, self._receive = trio.open_memory_channel[
            tuple[ChannelStream, str, int]](256)
        self._conn: Any = None

    def _session_factory(self, orig_host: str, orig_port: int) -> _IncomingStreamSession:
        if self._listener is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            "ftptrio: listener closed")
        return _IncomingStreamSession(self, orig_host, orig_port)

    def _deliver(self, stream: ChannelStream, chan: Any, orig_host: str, orig_port: int) -> None:
        try:
            self._send.send_nowait((stream, orig_host, orig_port))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning("refused connection from %s:%s on remote listener port %d "
                        "(not accepting)", orig_host, orig_port, self.port)
            chan.close()

    async def wait_lost(self) -> None:
        """Return when the SSH connection under this listener closes; iteration
        then ends (the forward is gone with the connection)."""
        if self._conn is not None:
            try:
                await trio_asyncio.aio_as_trio(self._conn.wait_closed)()
            except Exception as exc:  # noqa: BLE001 - closed either way
                log.debug("SSH connection closed: %r", exc)
        self._send.close()

    def __aiter__(self) -> "RemoteStreamListener":
        return self

    async def __anext__(self) -> tuple[ChannelStream, str, int]:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Cancel the forward and close connections not yet accepted; shielded."""
        listener, self._listener = self._listener, None
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
                    await trio_asyncio.aio_as_trio(listener.wait_closed)()
                except Exception as exc:  # connection already gone
                    log.debug("closing remote listener: %r", exc)


# ---------------------------------------------------------------------- tunnel
class Tunnel:
    """One shared SSH connection. Use inside ``trio_asyncio.open_loop()``."""

    def __init__(self, options: SSHOptions | None, connection: Any = None) -> None:
        self.options = options
        self._conn = connection
        self._owned = connection is None
        self._lock = trio.Lock()
        self._listen_lock = trio.Lock()
        self._jumps: list[Any] = []  # ProxyJump connections under self._conn
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        #: successful SSH connects (reconnects show as > 1)
        self.connects = 0

    @property
    def connection(self) -> Any:
        return self._conn

    async def connect(self) -> Any:
        """Return the live SSH connection, (re)connecting first if needed.

        After a failed attempt, further attempts wait for an exponential
        backoff (1 s doubling to RECONNECT_MAX); callers during the backoff get
        a TunnelError at once, so FTP clients get a prompt 421.
        """
        async with self._lock:
            conn = self._conn
            if conn is not None and not _is_closed(conn):
                return conn
            if not self._owned:
                raise TunnelError("the SSH connection given to ftptrio is closed")
            assert self.options is not None
            wait = self._retry_at - trio.current_time()
            if wait > 0:
                raise TunnelError(f"SSH connection down; next attempt in {wait:.0f} s "
                                  f"({self._last_error})")
            if conn is not None:
                log.warning("SSH connection lost; reconnecting")
            try:
                self._conn, self._jumps = await _connect_via_jumps(self.options)
            except TunnelError as exc:
                self._conn = None
                self._backoff = min(self._backoff * 2, RECONNECT_MAX) if self._backoff else 1.0
                self._retry_at = trio.current_time() + self._backoff
                self._last_error = str(exc)
                if self.connects:  # a reconnect: the next client triggers another try
                    log.warning("%s; retrying in %.0f s", exc, self._backoff)
                raise
            self._backoff = 0.0
            self.connects += 1
            return self._conn

    async def open_stream(self, host: str, port: int) -> ChannelStream:
        conn = await self.connect()
        try:
            chan, session = await trio_asyncio.aio_as_trio(conn.create_connection)(
                _StreamSession, host, port)
        except _SSH_ERRORS as exc:
            raise TunnelError(f"SSH server could not connect to {host}:{port}: "
                              f"{_reason(exc)}") from exc
        return ChannelStream(chan, session)

    async def open_data_channel(self, host: str, port: int) -> DataChannel:
        conn = await self.connect()
        relay = _Relay()
        try:
            chan, _ = await trio_asyncio.aio_as_trio(conn.create_connection)(
                lambda: relay.channel_end, host, port, window=WINDOW, max_pktsize=MAX_PKTSIZE)
        except _SSH_ERRORS as exc:
            raise TunnelError(f"SSH server could not open data connection to {host}:{port}: "
                              f"{_reason(exc)}") from exc
        return DataChannel(relay, chan)

    async def listen_remote(self, host: str, port: int = 0,
                            accept_filter: Callable[[str, int], bool] | None = None,
                            ) -> RemoteListener:
        """tcpip-forward on the SSH server. Port-0 requests are serialized."""
        conn = await self.connect()
        remote = RemoteListener(self)
        if accept_filter is not None:
            remote._accept_filter = accept_filter
        remote._incoming = asyncio.get_event_loop().create_future()
        async with self._listen_lock:
            try:
                remote._listener = await trio_asyncio.aio_as_trio(conn.create_server)(
                    remote._session_factory, host, port, window=WINDOW,
                    max_pktsize=MAX_PKTSIZE)
            except _SSH_ERRORS as exc:
                raise TunnelError(f"SSH server refused remote forward on {host}:{port}: "
                                  f"{_reason(exc)}") from exc
        remote.port = remote._listener.get_port()
        remote.host = host
        return remote

    async def listen_remote_streams(self, host: str, port: int) -> RemoteStreamListener:
        """tcpip-forward on the SSH server for FTP control connections (-R)."""
        conn = await self.connect()
        remote = RemoteStreamListener()
        remote._conn = conn
        remote._listener = True  # accepting from now on
        async with self._listen_lock:
            try:
                remote._listener = await trio_asyncio.aio_as_trio(conn.create_server)(
                    remote._session_factory, host, port)
            except _SSH_ERRORS as exc:
                remote._listener = None
                raise TunnelError(f"SSH server refused remote forward on {host}:{port}: "
                                  f"{_reason(exc)}") from exc
        remote.port = remote._listener.get_port()
        remote.host = host
        return remote

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        jumps, self._jumps = self._jumps, []
        if conn is None or not self._owned:
            return
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            for each in [conn, *reversed(jumps)]:
                each.close()
                try:
                    await trio_asyncio.aio_as_trio(each.wait_closed)()
                except Exception as exc:
                    log.debug("closing SSH connection: %r", exc)


def _is_closed(conn: Any) -> bool:
    return conn._transport is None or conn.is_closed()  # noqa: SLF001


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def _jump_hosts(options: SSHOptions) -> list[SSHOptions]:
    """ProxyJump "[user@]host[:port],..." as options for each hop."""
    hops = []
    for hop in filter(None, (options.proxy_jump or "").split(",")):
        user, _, hostport = hop.strip().rpartition("@")
        if hostport.startswith("["):  # [ipv6]:port
            host, _, port = hostport[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = hostport.partition(":")
        try:
            hops.append(dataclasses.replace(options, host=host, port=int(port) if port else None,
                                            username=user or None, proxy_jump=None))
        except ValueError:
            raise TunnelError(f"bad jump host {hop!r}: expected [user@]host[:port]") from None
    return hops


async def _connect_via_jumps(options: SSHOptions) -> tuple[Any, list[Any]]:
    """Connect, through ProxyJump hosts first if any (each checked and
    authenticated with the same known_hosts, keys and policy as the target)."""
    jumps: list[Any] = []
    try:
        for hop in _jump_hosts(options):
            jumps.append(await _connect(hop, via=jumps[-1] if jumps else None))
        return await _connect(options, via=jumps[-1] if jumps else None), jumps
    except BaseException:
        for jump in jumps:
            jump.close()
        raise


async def _connect(options: SSHOptions, via: Any = None) -> Any:
    kwargs: dict[str, Any] = {
        "encryption_algs": _encryption_algs(options.ciphers),
        "keepalive_interval": options.keepalive_interval or None,
        "keepalive_count_max": options.keepalive_count_max,
        "connect_timeout": options.connect_timeout,
    }
    if options.port is not None:
        kwargs["port"] = options.port
    if options.username is not None:
        kwargs["username"] = options.username
    if options.client_keys is not None:
        kwargs["client_keys"] = list(options.client_keys)
    if options.password is not None:
        kwargs["password"] = options.password
    if options.config_files is not None:
        kwargs["config"] = list(options.config_files)
    if via is not None:
        kwargs["tunnel"] = via
    if options.strict_host_key_checking == "no":
        kwargs["known_hosts"] = None
    elif options.known_hosts is not None:
        kwargs["known_hosts"] = options.known_hosts
    where = options.host + (f":{options.port}" if options.port else "")
    try:
        if options.strict_host_key_checking == "accept-new" and not _host_is_known(options):
            conn = await _connect_trust_on_first_use(options, kwargs)
        else:
            conn = await trio_asyncio.aio_as_trio(asyncssh.connect)(options.host, **kwargs)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise TunnelError(
            f"{where}: host key not verified ({exc.reason}); check the known_hosts file "
            f"({_known_hosts_path(options)}) or use "
            f"-o StrictHostKeyChecking=accept-new for a first connection") from exc
    except asyncssh.PermissionDenied as exc:
        raise TunnelError(f"{where}: authentication failed ({exc.reason}); "
                          "check the user name (-l) and key (-i)") from exc
    except (asyncssh.Error, OSError, asyncio.TimeoutError, TimeoutError) as exc:
        raise TunnelError(f"{where}: SSH connection failed: {_reason(exc)}") from exc
    log.info("SSH connection to %s established (cipher %s)", where,
             conn.get_extra_info("send_cipher"))
    _ack_immediately(conn)
    return conn


def _ack_immediately(conn: Any) -> None:
    """Acknowledge every read from the SSH server at once (Linux TCP_QUICKACK).

    OpenSSH's sshd leaves Nagle on for connections without a pty: when it sends
    two small packets in a row (a channel-open confirmation or a 150 reply,
    then the first data), the second waits for our ACK of the first, which
    the kernel delays by ~40 ms. Setting TCP_QUICKACK after each read sends
    the pending ACK immediately. Measured: ~48 ms -> ~1 ms per small file.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    sock = conn.get_extra_info("socket")
    if quickack is None or sock is None:
        return
    receive = conn.data_received

    def data_received(data: bytes, *args: Any) -> None:
        receive(data, *args)
        if len(data) < QUICKACK_BELOW:  # bulk reads get timely ACKs anyway
            try:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:
                pass

    conn.data_received = data_received


__all__ = ["Tunnel", "ChannelStream", "DataChannel", "RemoteListener", "RemoteStreamListener",
           "RelayResult",
           "install_asyncio_error_handler"]


@dataclasses.dataclass(frozen=True)
class _KnownHostsTarget:
    """Host, port and known_hosts files after ssh_config is applied (as asyncssh does)."""

    host: str
    port: int
    files: tuple[str, ...]

    @property
    def pattern(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _known_hosts_target(options: SSHOptions) -> _KnownHostsTarget:
    kwargs: dict[str, Any] = {"host": options.host}
    if options.port is not None:
        kwargs["port"] = options.port
    if options.config_files is not None:
        kwargs["config"] = list(options.config_files)
    if options.known_hosts is not None:
        kwargs["known_hosts"] = options.known_hosts
    resolved = asyncssh.SSHClientConnectionOptions(**kwargs)
    files = resolved.known_hosts
    if files is None or files == ():
        files = ["~/.ssh/known_hosts"]
    elif isinstance(files, (str, bytes)):
        files = [files]
    paths = tuple(os.path.expanduser(f) for f in files if isinstance(f, str))
    return _KnownHostsTarget(resolved.host or options.host, resolved.port or 22,
                             paths or (os.path.expanduser("~/.ssh/known_hosts"),))


def _known_hosts_path(options: SSHOptions) -> str:
    """The known_hosts file that was (or would be) checked, for error messages."""
    try:
        return ", ".join(_known_hosts_target(options).files)
    except (asyncssh.Error, OSError, ValueError):
        return os.path.expanduser(options.known_hosts or "~/.ssh/known_hosts")


def _host_is_known(options: SSHOptions) -> bool:
    """Whether any known_hosts file has a key for this host (then a mismatch is
    fatal, as with OpenSSH's accept-new). When in doubt, answer True (refuse)."""
    try:
        target = _known_hosts_target(options)
        for path in target.files:
            if os.path.exists(path):
                known = asyncssh.read_known_hosts(path)
                if any(known.match(target.host, "", target.port)):
                    return True
    except (asyncssh.Error, OSError, ValueError) as exc:
        log.warning("cannot read known_hosts (%s); refusing to accept a new host key", exc)
        return True
    return False


async def _connect_trust_on_first_use(options: SSHOptions, kwargs: dict[str, Any]) -> Any:
    """StrictHostKeyChecking=accept-new: accept an unknown host's key and remember it."""
    target = _known_hosts_target(options)
    conn = await trio_asyncio.aio_as_trio(asyncssh.connect)(
        options.host, **{**kwargs, "known_hosts": None})
    key = conn.get_server_host_key()
    path = target.files[0]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{target.pattern} {key.export_public_key().decode().strip()}\n")
    log.warning("permanently added %s (%s) to %s", target.pattern, key.get_algorithm(), path)
    return conn
