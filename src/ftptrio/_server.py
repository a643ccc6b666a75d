"""serve(): accept FTP clients on every forward's listener, one session task each."""

from __future__ import annotations

import collections
import copy

import errno
import ipaddress
import logging
import sys
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable, NoReturn

import trio

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10 (trio depends on it)
    from exceptiongroup import BaseExceptionGroup

from ._access import client_allowed
from ._config import Config, ForwardSpec
from ._stats import TransferStats
from ._text import visible
from ._errors import BindError, ConfigError, TunnelError
from ._ftps import FtpsForward, ftps_forwards
from ._netaddr import host_ip
from ._session import Session, send_and_close
from ._sftpsession import LoginFailures, run_sftp_session
from ._dataplane import ftp_server_only
from ._seams import ControlForward
from ._ssh import RemoteStreamListener, Tunnel, asyncio_loop
from ._xferlog import XferLog
from ._metrics import MetricsServer, Snapshot
from . import _scan

log = logging.getLogger(__name__)

#: pause before accepting again when out of file descriptors
ACCEPT_BACKOFF = 0.1
#: first and longest wait between attempts to re-establish a remote (-R) listener
REMOTE_RETRY_FIRST = 0.5
REMOTE_RETRY_MAX = 30.0


class Forwarder:
    """A running forwarder: where clients connect, its counters, and shutdown.

    ``serve()`` and ``open_forwarder()`` make it; it is not made directly."""

    def __init__(self, config: Config, tunnel: Tunnel, addresses: list[tuple[str, int]],
                 remote_listeners: list[ControlForward],
                 bind_hosts: list[list[str]] | None = None,
                 xferlog: XferLog | None = None) -> None:
        """``bind_hosts``: the addresses each forward's listener is bound to (the
        FTPS passive range listens there too). ``xferlog``: the --xferlog file."""
        self._config = config
        self._addresses = list(addresses)
        self._stats = TransferStats()
        self._xferlog = xferlog
        if xferlog is not None:
            self._stats.listeners.append(xferlog.write)
        #: the shared SSH connection
        self._tunnel = tunnel
        #: the SSH server's listeners of remote (-R) tunnels, in Config order (one is
        #: replaced when re-established on a new SSH connection)
        self._remote_listeners = remote_listeners
        self._accepting: trio.CancelScope | None = None
        #: running sessions by client address (Config.max_sessions_per_client)
        self._per_client: collections.Counter[str] = collections.Counter()
        self._idle = trio.Event()
        #: --sftp-server: failed logins by client address (across its sessions)
        self._login_failures = LoginFailures()
        #: each forward's FTPS state (passive range), in Config order
        self._ftps = ftps_forwards(config, tunnel, self._stats,
                                   bind_hosts or [[] for _ in config.forwards])

    def __repr__(self) -> str:
        return f"<Forwarder addresses={self._addresses!r} {self._stats!r}>"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where clients connect, per forward in Config order (remote tunnels: the
        listen address and port on the SSH server); a copy."""
        return list(self._addresses)

    @property
    def stats(self) -> TransferStats:
        """The counters (sessions, transfers by mode, bytes, errors), live; final
        once ``wait_idle()`` returns."""
        return self._stats

    @property
    def ports(self) -> list[int]:
        """The ports of ``addresses``, in the same order."""
        return [port for _host, port in self._addresses]

    def reopen_logs(self) -> None:
        """Reopen the --xferlog file (SIGHUP, after logrotate moved it)."""
        if self._xferlog is not None:
            self._xferlog.reopen()
            log.info("reopened --xferlog %s", self._xferlog.path)

    def stop_accepting(self) -> None:
        """Close the listeners; sessions in progress go on. serve() returns
        once the last session ends."""
        if self._accepting is not None:
            self._accepting.cancel()

    async def wait_idle(self) -> None:
        """Wait until no session is running."""
        while self._stats.sessions_active:
            await self._idle.wait()

    async def _accept(self, listeners: list[tuple[ForwardSpec, Any]],
                      task_status: trio.TaskStatus[Forwarder]) -> None:
        """Accept clients on every listener (reporting ready once they are all
        accepting) until ``stop_accepting()``, then wait for the sessions to end."""
        async with trio.open_nursery() as sessions:
            for ftps in self._ftps:
                if ftps.range is not None:  # runs while TLS sessions do
                    ftps.range.nursery = sessions
            async with trio.open_nursery() as accepting:
                self._accepting = accepting.cancel_scope
                for (forward, group), ftps, address in zip(listeners, self._ftps,
                                                           self._addresses):
                    handler = partial(self._handle_client, forward=forward, ftps=ftps,
                                      label=_forward_label(forward, address))
                    if isinstance(group, RemoteStreamListener):
                        accepting.start_soon(self._accept_remote, group, sessions, handler)
                        continue
                    for listener in group:
                        accepting.start_soon(_accept_loop, listener, sessions, handler)
                task_status.started(self)
            log.info("no longer accepting FTP clients; %d session(s) still running",
                     self._stats.sessions_active)

    async def _handle_client(self, stream: trio.abc.HalfCloseableStream, forward: ForwardSpec,
                             peer: tuple[str, int] | None = None,
                             ftps: FtpsForward | None = None, label: str = "") -> None:
        config = self._config
        client = _client_host(stream, peer)
        counted = False
        try:
            if config.allowed_clients:
                address = _peer_address(stream, peer)
                if address is None or not client_allowed(address, config.allowed_clients):
                    self._stats.refuse_session("client")
                    self._stats.deny("client")
                    await _refuse_client(stream, address)
                    return
            if self._stats.sessions_active >= config.max_sessions:
                self._stats.refuse_session("max_sessions")
                await _refuse_busy(stream, config.max_sessions)
                return
            if client is not None:
                if self._per_client[client] >= config.max_sessions_per_client:
                    self._stats.refuse_session("max_sessions_per_client")
                    await _refuse_busy(stream, config.max_sessions_per_client, client)
                    return
                self._per_client[client] += 1
                counted = True
            self._stats.session_started(label)
            if forward.sftp:
                assert isinstance(stream, trio.SocketStream)
                await run_sftp_session(stream, forward, config, self._tunnel, self._stats,
                                       self._login_failures)
            else:
                await Session(stream, forward, config, self._tunnel, self._stats, peer,
                              ftps).run()
        except Exception:  # one broken session must never stop the listener
            log.exception("session crashed")
        finally:
            if counted:
                assert client is not None
                self._per_client[client] -= 1
                if not self._per_client[client]:
                    del self._per_client[client]
            if not self._stats.sessions_active:
                self._idle.set()
                self._idle = trio.Event()

    def _metrics_snapshot(self) -> Snapshot:
        """The counters --metrics serves, copied on the trio thread."""
        # (the package's __version__, read without an import: ftptrio imports this module)
        version = str(getattr(sys.modules[__package__ or "ftptrio"], "__version__", "?"))
        stats, tunnel = self._stats, self._tunnel
        return Snapshot(
            version=version, implementation=_scan.IMPLEMENTATION, ssh_up=tunnel.up,
            ssh_reconnects=max(0, tunnel.connects - 1),
            sessions_active=stats.sessions_active, sessions=dict(stats.by_forward),
            sessions_refused=dict(stats.sessions_refused),
            transfers=dict(stats.by_outcome), bytes_to_server=stats.bytes_to_server,
            bytes_to_client=stats.bytes_to_client,
            duration_buckets=stats.duration_histogram(), duration_sum=stats.duration_sum,
            channel_open_failures=dict(tunnel.open_failures),
            policy_denied=dict(stats.policy_denied))

    async def _accept_remote(self, listener: ControlForward, nursery: trio.Nursery,
                             handler: Callable[..., Awaitable[None]]) -> None:
        """Every connection to a remote (-R) tunnel's listener on the SSH server.

        When the SSH connection is lost, the listener goes with it: it is requested
        again (same port) on a new connection, retrying with a growing delay.
        """
        while True:
            try:
                async with trio.open_nursery() as watch:
                    watch.start_soon(listener.wait_lost)
                    async for stream, orig_host, orig_port in listener:
                        nursery.start_soon(partial(handler, stream, peer=(orig_host, orig_port)))
                    watch.cancel_scope.cancel()
            finally:
                await listener.aclose()
            host, port = listener.host, listener.port
            log.warning("SSH connection lost: remote tunnel %s:%d on the SSH server is down; "
                        "re-establishing", host, port)
            delay = REMOTE_RETRY_FIRST
            while True:
                try:
                    fresh = await self._tunnel.listen_remote_streams(host, port)
                    break
                except TunnelError as exc:
                    log.warning("%s; retrying in %.0f s", exc, delay)
                    await trio.sleep(delay)
                    delay = min(delay * 2, REMOTE_RETRY_MAX)
            self._remote_listeners[self._remote_listeners.index(listener)] = fresh
            listener = fresh
            log.info("remote tunnel %s:%d on the SSH server re-established", host, port)


def _peer_address(stream: trio.abc.HalfCloseableStream,
                  peer: tuple[str, int] | None) -> str | None:
    """The FTP client's address (-R: the originator the SSH server reports); None:
    unknown (the socket is gone)."""
    if peer is not None:
        return peer[0]
    sock = getattr(stream, "socket", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else None
    except OSError:
        return None


def _forward_label(forward: ForwardSpec, address: tuple[str, int]) -> str:
    """A listener as the metrics name it: where clients connect, and where to."""
    host, port = address
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if forward.proxy:
        return f"proxy {where}"
    direction = "remote " if forward.direction == "remote" else ""
    return f"{direction}{where} -> {forward.ftp_host}:{forward.ftp_port}"


def _client_host(stream: trio.abc.HalfCloseableStream,
                 peer: tuple[str, int] | None) -> str | None:
    """The FTP client's address as --max-sessions-per-client counts it: an IPv4
    address, or an IPv6 client's /64 (one host usually holds a whole /64, privacy
    addresses included); None: unknown."""
    host = _peer_address(stream, peer)
    if host is None:
        return None
    addr = host_ip(host)
    if addr is None:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


async def _refuse_client(stream: trio.abc.HalfCloseableStream, client: str | None) -> None:
    """421 to a client whose address no --allow-client rule names, then close."""
    log.warning("refused an FTP client from %s: not allowed (--allow-client)",
                client or "an unknown address")
    await send_and_close(stream, f"421 ftptrio: your address {client or ''} is not "
                                  "allowed to use this forwarder.\r\n")


async def _refuse_busy(stream: trio.abc.HalfCloseableStream, limit: int,
                       client: str | None = None) -> None:
    """421 to a client over a session limit (Config.max_sessions, or with ``client``
    max_sessions_per_client), then close."""
    if client is None:
        log.warning("refused an FTP client: %d sessions running (--max-sessions)", limit)
        text = f"421 ftptrio: too many sessions ({limit}); try again later.\r\n"
    else:
        log.warning("refused an FTP client from %s: %d sessions from that address "
                    "(--max-sessions-per-client)", client, limit)
        text = (f"421 ftptrio: too many sessions from your address ({limit}); "
                "try again later.\r\n")
    await send_and_close(stream, text)


async def _accept_loop(listener: trio.SocketListener, nursery: trio.Nursery,
                       handler: Callable[..., Awaitable[None]]) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed (%s); retrying shortly", exc)
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                raise
            nursery.start_soon(handler, stream)


def _explain_active_setup(config: Config) -> None:
    """Log what active mode of each -L tunnel depends on, where it is not obvious."""
    if any(forward.proxy for forward in config.forwards) and not config.allowed_destinations:
        log.warning("FTP proxy: no --allow-destination given, so every destination a "
                    "login names is refused")
    for forward in config.forwards:
        if forward.proxy or forward.sftp:
            continue
        effective = forward.effective(config)
        if forward.direction == "local" and _is_host_name(forward.ftp_host):
            log.warning("FTP host %s is a name: the SSH server resolves it again for "
                        "every data channel, so whoever controls its DNS can steer data "
                        "connections to other hosts; give the FTP host as an address "
                        "where that matters", forward.ftp_host)
        if forward.direction != "local" or effective.active_mode != "remote-forward":
            continue
        if ftp_server_only(forward.ftp_host) is None:
            log.warning("FTP host %s is a name: active-mode data connections to the SSH "
                        "server's remote forward are accepted from any address; give the "
                        "FTP host as an IP address to accept only the FTP server",
                        forward.ftp_host)
        if not ipaddress.ip_address(effective.remote_listen_host).is_loopback:
            log.info("active mode: the SSH server listens on %s for the FTP server's data "
                     "connections (needs GatewayPorts clientspecified in its sshd_config)",
                     effective.remote_listen_host)


def _is_host_name(host: str) -> bool:
    """A name the SSH server resolves (localhost excepted: it never leaves the host)."""
    if host.lower() == "localhost":
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


#: how long the start-up check waits for an FTP server's greeting
GREETING_TIMEOUT = 15.0


async def _check_forwards(config: Config, tunnel: Tunnel) -> None:
    """Before ``ready``: one control connection to every -L tunnel's FTP server through
    the SSH server, reading its greeting, so that a forward that cannot work (sshd
    forbids forwarding, the FTP server is down) is reported at start, not to the first
    client. A failure is logged as an error; with ExitOnForwardFailure it ends
    start-up (TunnelError, exit 3)."""
    for forward in config.forwards:
        if forward.direction == "remote" or forward.proxy or forward.sftp:
            continue  # its tcpip-forward was already confirmed; the others have no FTP host
        where = f"{forward.ftp_host}:{forward.ftp_port}"
        implicit = forward.effective(config).auth_tls == "implicit"
        try:
            if implicit:  # the server waits for a TLS handshake: the channel opening is it
                stream = await tunnel.open_stream(forward.ftp_host, forward.ftp_port)
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                greeting = "implicit FTPS: channel opened"
            else:
                greeting = await _ftp_greeting(tunnel, forward.ftp_host, forward.ftp_port)
        except TunnelError as exc:
            if config.exit_on_forward_failure:
                # the same kind (ChannelRefused, ConnectTimeout ...), saying where
                failure = copy.copy(exc)
                failure.args = (f"forward to {where} cannot be set up "
                                f"(ExitOnForwardFailure=yes): {exc}",)
                raise failure from exc
            log.error("FTP server %s not reachable through the SSH server: %s", where, exc)
            continue
        log.info("FTP server %s reachable (%s)", where, greeting)


async def _ftp_greeting(tunnel: Tunnel, host: str, port: int) -> str:
    """The first line an FTP server sends through a direct-tcpip channel (a 220);
    TunnelError when the channel is refused or no 2xx greeting comes."""
    stream = await tunnel.open_stream(host, port)
    try:
        data = b""
        with trio.move_on_after(GREETING_TIMEOUT):
            while b"\n" not in data and len(data) < 4096:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise TunnelError(f"the connection closed before a greeting: {exc}") from None
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
    line = visible(data.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1"))[:120]
    if not line:
        raise TunnelError(f"no greeting within {GREETING_TIMEOUT:g} s (is it an FTP server?)"
                          if b"\n" not in data and not data else "no greeting")
    if not line.startswith("2"):
        raise TunnelError(f"it answered {line!r}")
    return line


def _needs_ssh_at_start(config: Config) -> bool:
    """Whether start-up connects ftptrio's own SSH login: not when every listener is
    an --sftp-server whose FTP users log in themselves (--sftp-login ftp)."""
    return config.ssh_connection is not None or any(
        not forward.sftp or config.sftp_login == "own" for forward in config.forwards)


async def _serve_in_loop(config: Config, task_status: trio.TaskStatus[Forwarder]) -> None:
    _explain_active_setup(config)
    try:
        tunnel = Tunnel(config.ssh, config.ssh_connection)
    except TypeError as exc:  # ssh_connection is not an asyncssh client connection
        raise ConfigError(f"Config.ssh_connection: {exc}") from None
    xferlog = XferLog(config.xferlog) if config.xferlog else None
    metrics: MetricsServer | None = None
    try:
        if _needs_ssh_at_start(config):
            await tunnel.connect()
        listeners: list[tuple[ForwardSpec, Any]] = []
        remote_listeners: list[RemoteStreamListener] = []
        try:
            for forward in config.forwards:
                if forward.direction == "remote":
                    remote = await tunnel.listen_remote_streams(forward.listen_host,
                                                                forward.listen_port)
                    remote_listeners.append(remote)
                    listeners.append((forward, remote))
                else:
                    try:
                        group = await trio.open_tcp_listeners(forward.listen_port,
                                                              host=forward.listen_host)
                    except OSError as exc:
                        raise BindError.of(forward.listen_host, forward.listen_port,
                                           exc) from exc
                    listeners.append((forward, group))
        except BaseException:
            with trio.CancelScope(shield=True):
                for remote in remote_listeners:
                    await remote.aclose()
            raise
        if config.check_ftp_servers or config.exit_on_forward_failure:
            await _check_forwards(config, tunnel)
        addresses = []
        for forward, group in listeners:
            if isinstance(group, RemoteStreamListener):
                addresses.append((group.host, group.port))
                log.info("forwarding FTP %s:%d on the SSH server %s -> %s:%d from here",
                         group.host, group.port, config.ssh.host, forward.ftp_host,
                         forward.ftp_port)
                continue
            sockname = group[0].socket.getsockname()
            addresses.append((sockname[0], sockname[1]))
            if forward.sftp:
                log.info("FTP server on %s:%d with the files of SSH %s (SFTP; --sftp-login "
                         "%s)", sockname[0], sockname[1], config.ssh.host, config.sftp_login)
                continue
            if forward.proxy:
                log.info("FTP proxy on %s:%d (USER user@host[:port]) via SSH %s; "
                         "destinations allowed: %s", sockname[0], sockname[1],
                         config.ssh.host, ", ".join(config.allowed_destinations) or "none")
                continue
            log.info("forwarding FTP %s:%d -> %s:%d via SSH %s", sockname[0], sockname[1],
                     forward.ftp_host, forward.ftp_port, config.ssh.host)
        bind_hosts = [[] if isinstance(group, RemoteStreamListener)
                      else [listener.socket.getsockname()[0] for listener in group]
                      for _forward, group in listeners]
        forwarder = Forwarder(config, tunnel, addresses, list(remote_listeners), bind_hosts,
                              xferlog)
        if config.metrics_listen is not None:
            metrics = MetricsServer(*config.metrics_listen, forwarder._metrics_snapshot)
        await forwarder._accept(listeners, task_status)
    finally:
        if metrics is not None:
            with trio.CancelScope(shield=True):
                await metrics.aclose()
        if xferlog is not None:
            xferlog.close()
        await tunnel.aclose()


def _unwrap(exc: BaseException) -> BaseException:
    """``exc`` without the exception groups that wrap a single exception (trio's
    nurseries, ftptrio's and trio-asyncio's, each wrap what leaves them): the one
    error inside, or the first group holding several (independent errors that
    really happened together)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc`` that are not groups, depth first (``[exc]`` if it is
    not a group). Splitting a group (as a cancel scope does) rebuilds the groups
    but keeps these very objects."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]


def _raise_keeping_context(exc: BaseException) -> NoReturn:
    """Raise ``exc`` with its own ``__context__`` (raised inside an ``except``
    block, it would get the exception being handled, here the group it came in)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


async def serve(config: Config, *,
                task_status: trio.TaskStatus[Forwarder] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the forwarder until cancelled.

    Connects to the SSH server, binds every forward's listener, then reports a
    ``Forwarder`` (bound addresses, counters) through ``task_status``. Use with
    ``await nursery.start(ftptrio.serve, config)``.

    A failure to start is raised by ``nursery.start()`` as the ``FtptrioError``
    itself, not inside an exception group: ``TunnelError`` (SSH connection,
    authentication, host key, ExitOnForwardFailure), ``BindError`` (a listen
    address), ``ConfigError`` (a Config that cannot be used). A group comes out
    only when several errors happened at once.
    """
    try:
        async with asyncio_loop():
            await _serve_in_loop(config, task_status=task_status)
    except BaseExceptionGroup as group:
        _raise_keeping_context(_unwrap(group))


@asynccontextmanager
async def open_forwarder(config: Config) -> AsyncIterator[Forwarder]:
    """``async with open_forwarder(config) as fwd:`` runs a forwarder for the block.

    ``fwd.addresses`` lists the bound (host, port) per forward, in order.

    A failure to start is raised by ``async with`` as the ``FtptrioError`` itself
    (as for ``serve``); an exception raised in the block comes out of it
    unchanged, not wrapped in an exception group. A group comes out only when
    several errors happened at once (the block's and the forwarder's).
    """
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            forwarder = await nursery.start(serve, config)
            try:
                yield forwarder
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the nursery wraps whatever leaves it, even a single error (trio's
        # strict_exception_groups, the default). Only the block's error left it:
        # re-raise the very object thrown in (asynccontextmanager then passes it on
        # with its own traceback), even a group of the block's own, which the
        # nursery's cancel scope rebuilt on the way out (same leaves, new groups)
        if (body_error is not None and len(group.exceptions) == 1
                and list(map(id, _leaves(group.exceptions[0])))
                == list(map(id, _leaves(body_error)))):
            _raise_keeping_context(body_error)
        # else a start-up failure, or the forwarder's error (with the block's):
        # the one error itself, a group only of several
        _raise_keeping_context(_unwrap(group))
