"""Data-channel forwards: one-shot passive listeners, active remote forwards and
active-to-passive conversions. Every task here runs in its session's nursery."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Callable, Literal

import trio

from ._config import Config
from ._control import same_address
from ._errors import TunnelError
from ._ssh import RelayResult, RemoteListener, SSHDataRelay, Tunnel
from ._stats import TransferStats

log = logging.getLogger(__name__)

Mode = Literal["passive", "active", "converted"]


@dataclass
class DataContext:
    """What the data-channel tasks of one session need."""

    config: Config
    tunnel: Tunnel
    ftp_host: str
    client_host: str
    stats: TransferStats
    session_id: int


def _log_transfer(ctx: DataContext, mode: Mode, started: float, result: RelayResult) -> None:
    """One log line per transfer: client, mode, direction, bytes, time, rate, result."""
    to_server, to_client = result.to_ssh, result.from_ssh
    ctx.stats.bytes_to_server += to_server
    ctx.stats.bytes_to_client += to_client
    ctx.stats.record(mode, result)
    seconds = max(trio.current_time() - started, 1e-9)
    total = to_server + to_client
    direction = "upload" if to_server > to_client else "download"
    log.info("session %d: transfer client=%s mode=%s direction=%s bytes=%d seconds=%.3f "
             "rate=%.1fMB/s result=%s", ctx.session_id, ctx.client_host, mode, direction,
             total, seconds, total / seconds / 1e6,
             f"error ({result.error})" if result.error else "ok",
             extra={"transfer": {"session": ctx.session_id, "client": ctx.client_host,
                                 "mode": mode, "direction": direction, "bytes": total,
                                 "seconds": round(seconds, 6),
                                 "result": result.error or "ok"}})


async def open_data_listener(ctx: DataContext, local_host: str) -> trio.socket.SocketType:
    """A loopback (or -g: wildcard) listener for one passive data connection.

    ``local_host`` is the control connection's local address: an IPv6 client
    gets an IPv6 listener (it connects to the control connection's host).
    """
    host = ctx.config.data_bind_host
    if ":" in local_host and not local_host.startswith("::ffff:"):
        host = {"127.0.0.1": "::1", "0.0.0.0": "::"}.get(host, host)
    return await open_local_listener(host)


async def _accept_one(ctx: DataContext, listener: trio.socket.SocketType, allowed_host: str,
                      who: str, waiting: trio.CancelScope) -> trio.socket.SocketType | None:
    """The first connection to listener from allowed_host (others are refused and
    logged), or None when ``waiting`` ends first. The listener is closed either way."""
    port = listener.getsockname()[1]
    try:
        with waiting:
            while True:
                sock, peer = await listener.accept()
                if same_address(peer[0], allowed_host):
                    return sock
                log.warning("session %d: refused data connection from %s to port %d "
                            "(only %s %s may connect)", ctx.session_id, peer[0], port, who,
                            allowed_host)
                sock.close()
    finally:
        listener.close()
    return None


async def _forwarded_connection(ctx: DataContext, remote: RemoteListener,
                                waiting: trio.CancelScope, host: str, port: int,
                                who: str) -> SSHDataRelay | None:
    """Wait for the one connection on a remote forward (bounded by ``waiting``),
    cancel the forward, and connect it locally to host:port. None if unused or
    the local connect failed (both logged)."""
    incoming = None
    try:
        with waiting:
            incoming = await remote.accept()
    finally:
        await remote.aclose()  # cancel-tcpip-forward as soon as accepted
    if incoming is None:
        log.info("session %d: remote forward port %d closed unused (%s)", ctx.session_id,
                 remote.port, "timeout" if waiting.deadline <= trio.current_time()
                 else "superseded or session ended")
        return None
    channel, orig_host, orig_port = incoming
    log.debug("session %d: %s connected from %s:%d to remote forward %d", ctx.session_id,
              who, orig_host, orig_port, remote.port)
    try:
        await channel.connect_socket(host, port)
    except OSError as exc:
        log.warning("session %d: cannot connect to data port %s:%d: %s", ctx.session_id,
                    host, port, exc)
        return None
    return channel


async def serve_passive(ctx: DataContext, listener: trio.socket.SocketType,
                        channel: SSHDataRelay, waiting: trio.CancelScope) -> None:
    """Accept the client's one data connection on listener and relay it to channel.

    ``waiting`` is cancelled when a newer PASV supersedes this listener; its
    deadline is the idle timeout. Either way the listener closes and the
    SSH channel with it.
    """
    port = listener.getsockname()[1]
    sock = None
    try:
        sock = await _accept_one(ctx, listener, ctx.client_host, "the client", waiting)
    finally:
        if sock is None:
            channel.close()
    if sock is None:
        log.info("session %d: passive listener on port %d closed unused (%s)", ctx.session_id,
                 port, "timeout" if waiting.deadline <= trio.current_time() else "superseded")
        return
    started = trio.current_time()
    result = await channel.relay_socket(sock)
    _log_transfer(ctx, "passive", started, result)


class ActiveGate:
    """Tracks active-mode data connections not yet connected to the client.

    A server can finish a small transfer and send 226 before ftptrio has
    connected its data to the client; the client must not see 226 first.
    """

    def __init__(self) -> None:
        self.pending = 0
        self._changed = trio.Event()

    def opened(self) -> None:
        self.pending += 1

    def settled(self) -> None:
        self.pending -= 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_settled(self) -> None:
        while self.pending:
            await self._changed.wait()


async def serve_active(ctx: DataContext, remote: RemoteListener, client_host: str,
                       client_port: int, gate: ActiveGate, waiting: trio.CancelScope) -> None:
    """Wait for the FTP server on the remote forward, cancel it, relay to the client.

    ``waiting`` bounds the wait (idle timeout, or the session's control ended).
    """
    try:
        channel = await _forwarded_connection(ctx, remote, waiting, client_host, client_port,
                                               "FTP server")
    finally:
        gate.settled()
    if channel is not None:
        _log_transfer(ctx, "active", trio.current_time(), await channel.wait())


async def serve_converted(ctx: DataContext, channel: SSHDataRelay) -> None:
    """Active-to-passive conversion: relay an already connected pair until done."""
    started = trio.current_time()
    _log_transfer(ctx, "converted", started, await channel.wait())


def ftp_server_only(ftp_host: str) -> Callable[[str, int], bool] | None:
    """A filter for remote-forward connections: only from the FTP server's address.

    None (accept any) when ftp_host is a name other than localhost: its
    address as the SSH server sees it is unknown here.
    """
    if ftp_host.lower() == "localhost":
        ftp_host = "127.0.0.1"
    try:
        expected = ipaddress.ip_address(ftp_host)
    except ValueError:
        return None

    def accept(orig_host: str, _orig_port: int) -> bool:
        if expected.is_loopback:
            try:
                return ipaddress.ip_address(orig_host.split("%")[0]).is_loopback
            except ValueError:
                return False
        return same_address(orig_host, ftp_host)

    return accept


# ------------------------------------------------------ remote (-R) tunnels
# Mirrored: the FTP client is on the SSH server's side, the FTP server on ours.

def client_only(client_host: str) -> Callable[[str, int], bool]:
    """A filter for a remote tunnel's passive forward: only the control client's address."""

    def accept(orig_host: str, _orig_port: int) -> bool:
        return same_address(orig_host, client_host)

    return accept


async def serve_remote_passive(ctx: DataContext, remote: RemoteListener, ftp_port: int,
                               waiting: trio.CancelScope) -> None:
    """Wait for the client on the SSH server's forward, relay it to ftp_host:ftp_port.

    The data port is always on the control connection's FTP host (``ctx.ftp_host``),
    whatever address the 227 named. The forward is cancelled once used.
    """
    channel = await _forwarded_connection(ctx, remote, waiting, ctx.ftp_host, ftp_port,
                                          "client")
    if channel is not None:
        _log_transfer(ctx, "passive", trio.current_time(), await channel.wait())


async def open_local_listener(host: str) -> trio.socket.SocketType:
    """A listener on host:<OS-picked port> for one data connection."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((host, 0))
        sock.listen(4)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_remote_active(ctx: DataContext, listener: trio.socket.SocketType,
                              server_host: str, client_host: str, client_port: int,
                              gate: ActiveGate, waiting: trio.CancelScope) -> None:
    """Accept the FTP server's data connection (only from server_host) and relay it
    through SSH (direct-tcpip) to the client's data listener client_host:client_port."""
    port = listener.getsockname()[1]
    sock = None
    channel: SSHDataRelay | None = None
    try:
        sock = await _accept_one(ctx, listener, server_host, "the FTP server", waiting)
        if sock is None:
            log.info("session %d: active listener on port %d closed unused", ctx.session_id,
                     port)
            return
        started = trio.current_time()
        try:
            channel = await ctx.tunnel.open_data_relay(client_host, client_port)
        except TunnelError as exc:
            log.warning("session %d: %s", ctx.session_id, exc)
            sock.close()
            return
        taken, sock = sock, None
        await channel.attach_socket(taken)
    finally:
        if sock is not None:
            sock.close()
        gate.settled()
    _log_transfer(ctx, "active", started, await channel.wait())
