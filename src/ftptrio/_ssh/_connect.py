"""The SSH connection: connect (through jump hosts, authenticated by ``_auth``,
the host key checked by ``_hostkeys``), keepalive, and reconnect with backoff.

``Tunnel`` is the one SSH connection shared by every session of a forwarder;
it (re)connects lazily and opens streams, data relays and remote listeners on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import math
import os
import socket
from typing import Awaitable, Callable, Sequence, TypeVar

import asyncssh
import trio

from .._config import SSHOptions, parse_jump_hosts
from .._errors import (AuthenticationError, ChannelRefused, ConfigError, ConnectTimeout,
                       RemoteForwardRefused, TunnelError)
from ._auth import Authenticator, Settings, auth_kwargs, denied_message, fingerprint
from ._bridge import SSH_ERRORS, aio, is_prohibited, reason, refusal
from ._hostkeys import HostKeyPolicy, connect_verified
from ._sshconfig import ssh_config_paths
from ._relay import SSHDataRelay, WindowBudget, open_data_relay
from ._sftp import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_REQUESTS, SFTPFiles, open_sftp_files
from ._streams import CLOSE_TIMEOUT, RemoteListener, RemoteStreamListener, SSHStream, open_ssh_stream

log = logging.getLogger(__name__)

L = TypeVar("L", RemoteListener, RemoteStreamListener)

#: reads smaller than this are acknowledged at once (see _ack_immediately)
QUICKACK_BELOW = 16384
#: longest wait between SSH reconnection attempts
RECONNECT_MAX = 60.0
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")
#: the likely fix when the SSH server refuses a tcpip-forward
LISTEN_HINT = ("; the SSH server does not allow remote forwarding (AllowTcpForwarding "
               "yes/remote, PermitListen in its sshd_config)")


def _channel_error(message: str, exc: BaseException) -> TunnelError:
    """ChannelRefused (with the SSH reason code) when the SSH server refused the
    channel, else a TunnelError (the connection failed meanwhile)."""
    if isinstance(exc, asyncssh.ChannelOpenError):
        return ChannelRefused(message, code=exc.code, reason=exc.reason)
    return TunnelError(message)


def _open_hint(exc: BaseException) -> str:
    """The likely fix when the SSH server refuses a direct-tcpip channel."""
    if is_prohibited(exc):
        return ("; the SSH server does not allow this forwarding (AllowTcpForwarding "
                "yes/local, PermitOpen in its sshd_config)")
    return ""


def set_debug_level(level: int) -> None:
    """asyncssh's packet-level debug logging (1-3), for -vvvv."""
    asyncssh.set_debug_level(level)


def _checked_algorithms(option: str, names: tuple[str, ...],
                        supported: Sequence[bytes]) -> list[str]:
    """An ssh_config algorithm list (-o Ciphers, MACs, KexAlgorithms,
    HostKeyAlgorithms; a +, - or ^ prefix as OpenSSH's) as asyncssh takes it; a name
    this asyncssh does not support is a ConfigError naming it (exit 2)."""
    known = {alg.decode() for alg in supported}
    for name in names:
        if name.lstrip("+-^") not in known:
            raise ConfigError(f"bad option value: {option}: unsupported algorithm {name!r}; "
                              f"supported: {', '.join(sorted(known))}")
    return list(names)


def _algorithm_kwargs(options: SSHOptions) -> dict[str, object]:
    """asyncssh.connect's algorithm arguments from -o MACs/KexAlgorithms/HostKeyAlgorithms."""
    kwargs: dict[str, object] = {}
    if options.macs:
        kwargs["mac_algs"] = _checked_algorithms("MACs", options.macs,
                                                 asyncssh.mac.get_mac_algs())
    if options.kex_algorithms:
        kwargs["kex_algs"] = _checked_algorithms("KexAlgorithms", options.kex_algorithms,
                                                 asyncssh.kex.get_kex_algs())
    if options.host_key_algorithms:
        kwargs["server_host_key_algs"] = _checked_algorithms(
            "HostKeyAlgorithms", options.host_key_algorithms,
            [*asyncssh.public_key.get_public_key_algs(),
             *asyncssh.public_key.get_certificate_algs()])
    return kwargs


def _encryption_algs(ciphers: tuple[str, ...] | None) -> list[str]:
    """-o Ciphers as asyncssh takes it (each name checked), else ftptrio's preference."""
    if ciphers:
        return _checked_algorithms("Ciphers", ciphers,
                                   asyncssh.encryption.get_encryption_algs())
    available = [alg.decode() for alg in asyncssh.encryption.get_default_encryption_algs()]
    preferred = [c for c in PREFERRED_CIPHERS if c in available]
    return preferred + [c for c in available if c not in preferred]


#: SSH_MSG_CHANNEL_OPEN_FAILURE reason codes (RFC 4254 5.1) -> metric reason
_OPEN_FAILURES = {1: "administratively_prohibited", 2: "connect_failed",
                  3: "unknown_channel_type", 4: "resource_shortage"}


class Tunnel:
    """One shared SSH connection. Use inside ``_bridge.asyncio_loop()``."""

    def __init__(self, options: SSHOptions, connection: object | None = None, *,
                 hop_options: SSHOptions | None = None) -> None:
        """``hop_options``: what the ProxyJump hops are reached with (their login,
        keys, agent), when that is not ``options`` (--sftp-login ftp: the FTP user's
        password logs in to the final host only; the hops are ftptrio's own)."""
        if connection is not None and not isinstance(connection,
                                                     asyncssh.SSHClientConnection):
            raise TypeError(f"not an asyncssh client connection: {connection!r}")
        self.options = options
        self._hop_options = hop_options
        self._conn = connection
        self._owned = connection is None
        #: host-key checking, with the keys accepted on first use (pinned across reconnects)
        self._hostkeys = HostKeyPolicy(options.strict_host_key_checking)
        # usage errors (exit 2) before anything connects
        _encryption_algs(options.ciphers)
        _algorithm_kwargs(options)
        for path in options.config_files or ():
            if not os.path.isfile(os.path.expanduser(path)):
                raise ConfigError(f"Can't open user config file {path}: "
                                  "No such file or directory (-F)")
        self._lock = trio.Lock()
        self._listen_lock = trio.Lock()
        self._jumps: list[asyncssh.SSHClientConnection] = []  # ProxyJump connections under self._conn
        self._backoff = 0.0
        self._retry_at = 0.0
        #: the last failed attempt's error (the reconnect back-off's message and cause)
        self._last_error: TunnelError | None = None
        #: what the user unlocked (keys, password), in memory for reconnects
        self.auth = Authenticator(options)
        #: successful SSH connects (reconnects show as > 1)
        self.connects = 0
        #: --data-memory: what the data channels' SSH receive windows hold together
        self.budget = WindowBudget(options.data_memory)
        #: the SSH server refused a data channel open (PermitOpen, a data port it
        #: cannot reach): sessions then wait for its answer before a transfer command
        self.data_opens_refused = False
        #: SSH channel opens (control and data) that failed, by reason: the SSH
        #: server's refusal code ("administratively_prohibited", "connect_failed" ...),
        #: "ssh_down" (no connection) or "ssh_error"
        self.open_failures: dict[str, int] = {}

    def _open_failed(self, exc: BaseException) -> None:
        if isinstance(exc, asyncssh.ChannelOpenError):
            reason = _OPEN_FAILURES.get(exc.code, "ssh_error")
        elif isinstance(exc, TunnelError):
            reason = "ssh_down"
        else:
            reason = "ssh_error"
        self.open_failures[reason] = self.open_failures.get(reason, 0) + 1

    @property
    def up(self) -> bool:
        """Whether the SSH connection is up (as far as asyncssh knows)."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def max_window(self) -> int:
        """The largest receive window a data channel grows to (--max-window)."""
        return self.options.max_window

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        return self._conn

    @property
    def username(self) -> str | None:
        """The user the SSH connection logged in as (None before it connected)."""
        if self._conn is None:
            return None
        name = self._conn.get_extra_info("username")
        return None if name is None else str(name)

    async def connect(self) -> asyncssh.SSHClientConnection:
        """Return the live SSH connection, (re)connecting first if needed.

        After a failed attempt, further attempts wait for an exponential
        backoff (1 s doubling to RECONNECT_MAX); callers during the backoff get
        a TunnelError at once, so FTP clients get a prompt 421.
        """
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            if not self._owned:
                raise TunnelError("the SSH connection given to ftptrio is closed")
            wait = self._retry_at - trio.current_time()
            if wait > 0:
                raise TunnelError(f"SSH connection down; next attempt in {wait:.0f} s "
                                  f"({self._last_error})") from self._last_error
            if conn is not None:
                log.warning("SSH connection lost; reconnecting")
            try:
                self._conn, self._jumps = await _connect_via_jumps(self.options, self._hop_options, self.auth,
                                                                   self._hostkeys)
            except TunnelError as exc:
                self._conn = None
                self._backoff = min(self._backoff * 2, RECONNECT_MAX) if self._backoff else 1.0
                self._retry_at = trio.current_time() + self._backoff
                self._last_error = exc
                if self.connects:  # a reconnect: the next client triggers another try
                    log.warning("%s; retrying in %.0f s", exc, self._backoff)
                raise
            self._backoff = 0.0
            self.connects += 1
            self.auth.finished_login()
            return self._conn

    async def open_stream(self, host: str, port: int,
                          originator: tuple[str, int] = ("", 0)) -> SSHStream:
        """A trio stream over a direct-tcpip channel to host:port (FTP control);
        ``originator``: the FTP client's (address, port), for the SSH server's logs."""
        try:
            conn = await self.connect()
        except TunnelError as exc:
            self._open_failed(exc)
            raise
        try:
            return await open_ssh_stream(conn, host, port, originator)
        except SSH_ERRORS as exc:
            self._open_failed(exc)
            raise _channel_error(f"SSH server could not connect to {host}:{port}: "
                                 f"{refusal(exc)}{_open_hint(exc)}", exc) from exc

    async def open_data_relay(self, host: str, port: int,
                              originator: tuple[str, int] = ("", 0),
                              requested: Callable[[], None] | None = None) -> SSHDataRelay:
        """A direct-tcpip channel to host:port, to be paired with a local socket;
        ``requested``: called once the open request is on the connection."""
        try:
            conn = await self.connect()
        except TunnelError as exc:
            self._open_failed(exc)
            raise
        try:
            return await open_data_relay(conn, host, port, self.max_window, self.budget,
                                         originator, requested)
        except SSH_ERRORS as exc:
            self._open_failed(exc)
            self.data_opens_refused = True
            raise _channel_error(f"SSH server could not open data connection to "
                                 f"{host}:{port}: {refusal(exc)}{_open_hint(exc)}", exc) from exc

    async def open_sftp(self, *, max_requests: int = DEFAULT_MAX_REQUESTS,
                        block_size: int = DEFAULT_BLOCK_SIZE) -> SFTPFiles:
        """An SFTP session on the SSH server (--sftp-server), each transfer pipelining
        ``max_requests`` requests of ``block_size``; SFTPUnavailable when the server
        has no sftp subsystem."""
        return await open_sftp_files(await self.connect(), max_requests=max_requests,
                                     block_size=block_size)

    async def listen_remote(self, host: str, port: int = 0,
                            accept_filter: Callable[[str, int], bool] | None = None,
                            armed: bool = True) -> RemoteListener:
        """tcpip-forward on the SSH server for one data connection (``armed=False``:
        it refuses every connection until ``arm()``). Port-0 requests are serialized."""
        return await self._forward(host, port, lambda conn: RemoteListener.open(
            conn, host, port, accept_filter, self.max_window, self.budget, armed))

    async def listen_remote_streams(self, host: str, port: int) -> RemoteStreamListener:
        """tcpip-forward on the SSH server for FTP control connections (-R)."""
        return await self._forward(host, port,
                                   lambda conn: RemoteStreamListener.open(conn, host, port))

    async def _forward(self, host: str, port: int,
                       request: Callable[[asyncssh.SSHClientConnection], Awaitable[L]]) -> L:
        """Run a tcpip-forward ``request`` on the live connection, one at a time
        (port 0: the SSH server's answer names the port); RemoteForwardRefused when
        the SSH server refuses it."""
        conn = await self.connect()
        async with self._listen_lock:
            try:
                return await request(conn)
            except SSH_ERRORS as exc:
                message = (f"SSH server refused remote forward on {host}:{port}: "
                           f"{refusal(exc)}{LISTEN_HINT}")
                if isinstance(exc, asyncssh.ChannelListenError):
                    raise RemoteForwardRefused(message) from exc
                raise TunnelError(message) from exc

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
                    await aio(each.wait_closed)()
                except Exception as exc:
                    log.debug("closing SSH connection: %r", exc)


#: the longest ProxyJump chain followed (ssh_config's ProxyJump of each first hop included)
MAX_JUMPS = 8


def _config_proxy_jump(options: SSHOptions) -> str | None:
    """ssh_config's ProxyJump for ``options.host`` (None: none set, or ``none``). A
    ``-o ProxyCommand`` comes first, as in OpenSSH (the first of the two wins): then
    no ProxyJump from the files applies."""
    if any(key == "ProxyCommand" for key, _value in options.ssh_config_lines):
        return None
    kwargs: dict[str, object] = {"host": options.host, "config": ssh_config_paths(options)}
    if options.port is not None:
        kwargs["port"] = options.port
    value = asyncssh.SSHClientConnectionOptions(**kwargs).config.get("ProxyJump")
    return str(value) if value else None


def _jump_hosts(options: SSHOptions, hop_base: SSHOptions | None = None
                ) -> list[SSHOptions]:
    """The hops before ``options.host``, first to last, as options for each: -J, else
    ssh_config's ProxyJump for the host; a first hop's own ssh_config ProxyJump is
    followed too (as ssh -W does). ftptrio connects every hop itself, so each is
    checked with the same known_hosts files and policy as the target (asyncssh's own
    ProxyJump handling would read its default files). A hop's ``proxy_jump`` is ""
    (resolved: ssh_config is not consulted again for it). Each hop is reached with
    ``hop_base``'s settings (default: ``options``')."""
    chain: list[SSHOptions] = []
    current = options
    while True:
        spec = current.proxy_jump if current.proxy_jump is not None else \
            _config_proxy_jump(current)
        try:
            hops = parse_jump_hosts(spec or "")
        except ConfigError as exc:
            raise TunnelError(str(exc)) from None
        if not hops:
            return chain
        # an embedder's password is the final host's: never sent to a hop
        # -o lines are the destination's (-o HostName must not redirect a hop)
        chain[:0] = [dataclasses.replace(hop_base or options, host=hop.host, port=hop.port,
                                         username=hop.user, proxy_jump="", password=None,
                                         ssh_config_lines=())
                     for hop in hops]
        if len(chain) > MAX_JUMPS:
            raise TunnelError(f"ProxyJump: more than {MAX_JUMPS} jump hosts before "
                              f"{options.host} (a loop in ssh_config?)")
        current = dataclasses.replace(chain[0], proxy_jump=None)


async def _connect_via_jumps(
        options: SSHOptions, hop_options: SSHOptions | None, auth: Authenticator,
        hostkeys: HostKeyPolicy,
) -> tuple[asyncssh.SSHClientConnection, list[asyncssh.SSHClientConnection]]:
    """Connect, through ProxyJump hosts first if any (each checked and
    authenticated with the same known_hosts, keys and policy as the target)."""
    jumps: list[asyncssh.SSHClientConnection] = []
    try:
        for hop in await trio.to_thread.run_sync(_jump_hosts, options, hop_options):
            jumps.append(await _connect(hop, auth, jumps[-1] if jumps else None, hostkeys,
                                        jump=True))
        return await _connect(options, auth, jumps[-1] if jumps else None, hostkeys), jumps
    except BaseException:
        for jump in jumps:
            jump.close()
        raise


async def _connect(options: SSHOptions, auth: Authenticator,
                   via: asyncssh.SSHClientConnection | None, hostkeys: HostKeyPolicy, *,
                   jump: bool = False,
                   ) -> asyncssh.SSHClientConnection:
    # tunnel=None: never asyncssh's own ProxyJump (_jump_hosts resolved it)
    kwargs: dict[str, object] = {"encryption_algs": _encryption_algs(options.ciphers),
                                 "tunnel": via, **_algorithm_kwargs(options)}
    if options.host_key_alias is not None:
        kwargs["host_key_alias"] = options.host_key_alias
    if options.port is not None:
        kwargs["port"] = options.port
    if options.username is not None:
        kwargs["username"] = options.username
    config = ssh_config_paths(options)
    if config:
        kwargs["config"] = config
    address = options.host + (f":{options.port}" if options.port else "")
    where = f"jump host {options.host}:{options.port or 22}" if jump else address
    agent = None
    settings: Settings | None = None
    try:
        settings = Settings(options, kwargs)
        kwargs.update(auth_kwargs(options, settings))
        log.debug("connecting to %s as %r; ServerAliveInterval %g, ServerAliveCountMax %d, "
                  "ConnectTimeout %g", settings.host, settings.username,
                  settings.keepalive_interval, settings.keepalive_count_max,
                  settings.connect_timeout)
        agent, agent_keys = await aio(auth.agent_keys)(settings)
        if agent_keys:
            log.debug("ssh-agent at %s holds %d key(s)", settings.agent_path, len(agent_keys))
        with trio.CancelScope() as deadline:
            # ConnectTimeout covers the connection, not the user typing at a prompt
            deadline.deadline = trio.current_time() + settings.connect_timeout
            paused: list[float] = []

            def pause() -> None:
                paused.append(deadline.deadline - trio.current_time())
                deadline.deadline = math.inf

            def resume() -> None:
                deadline.deadline = trio.current_time() + paused.pop()

            auth.prompt_started, auth.prompt_ended = pause, resume
            auth.failure_notes.clear()
            keys = await aio(auth.key_list)(settings, agent_keys)
            kwargs["client_factory"] = auth.client_factory(settings, keys)
            conn = await connect_verified(options, kwargs, hostkeys, where, auth)
        if deadline.cancelled_caught:
            raise ConnectTimeout(f"{where}: SSH connection failed: timed out after "
                                 f"{settings.connect_timeout:g} s (ConnectTimeout)")
    except asyncssh.PermissionDenied as exc:
        user = settings.username if settings is not None else options.username
        raise AuthenticationError(denied_message(
            ("jump host " if jump else "") + (f"{user}@{address}" if user else address), auth,
            ",".join(auth.server_methods) or exc.reason)) from exc
    except (asyncssh.Error, OSError, asyncio.TimeoutError, TimeoutError) as exc:
        timeout = settings.connect_timeout if settings is not None else (
            options.effective_connect_timeout)
        message = f"{where}: SSH connection failed: {_connect_failure(exc, timeout)}"
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            raise ConnectTimeout(message) from exc
        raise TunnelError(message) from exc
    finally:
        if agent is not None:
            agent.close()
    host_key = conn.get_server_host_key()
    if host_key is not None:
        log.debug("server host key: %s %s", host_key.get_algorithm(), fingerprint(host_key))
    log.debug("authenticated to %s as %r; compression %s", where,
              conn.get_extra_info("username"), conn.get_extra_info("send_compression"))
    log.info("SSH connection to %s established (cipher %s)", where,
             conn.get_extra_info("send_cipher"))
    _ack_immediately(conn)
    lazy_keepalive(conn)
    return conn


def _connect_failure(exc: BaseException, timeout: float) -> str:
    """Why a connection to the SSH server failed, in the words ssh users know."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"timed out after {timeout:g} s (ConnectTimeout)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the SSH server listening on that port?)"
    if isinstance(exc, socket.gaierror):
        return f"could not resolve host name: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable" if exc.errno == errno.ENETUNREACH else "host unreachable"
    return reason(exc)


def _ack_immediately(conn: asyncssh.SSHClientConnection) -> None:
    """Acknowledge every read from the SSH server at once (Linux TCP_QUICKACK).

    OpenSSH's sshd leaves Nagle on for connections without a pty: when it sends
    two small packets in a row (a channel-open confirmation or a 150 reply,
    then the first data), the second waits for our ACK of the first, which
    the kernel delays by ~40 ms. Setting TCP_QUICKACK after each read sends
    the pending ACK immediately. Measured: ~48 ms -> ~1 ms per small file.

    Why this wraps the connection's ``data_received`` on the instance: asyncssh
    offers no per-read hook. ``asyncssh.connect`` builds its
    ``SSHClientConnection`` in a local factory, so a subclass cannot be given;
    the ``tunnel=`` and ``sock=`` hooks could interpose ftptrio's own protocol
    or socket, but they bypass what asyncssh resolves from ssh_config for the
    TCP connection (ProxyJump, ProxyCommand, BindAddress, AddressFamily,
    canonicalization), and a host reached through an ssh_config ProxyJump would
    lose the fix. The wrapper calls asyncssh's own method first and only adds
    a setsockopt on the connection's socket (for a tunnelled connection, the
    jump connection's socket, which carries its bytes).
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    sock = conn.get_extra_info("socket")
    if quickack is None or sock is None:
        return
    receive = conn.data_received

    def data_received(data: bytes, datatype: asyncssh.DataType = None) -> None:
        receive(data, datatype)
        if len(data) < QUICKACK_BELOW:  # bulk reads get timely ACKs anyway
            try:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:
                pass

    conn.data_received = data_received  # type: ignore[method-assign]


def lazy_keepalive(conn: asyncssh.SSHClientConnection) -> None:
    """Re-arm the keepalive timer (ServerAliveInterval) lazily, not on every read.

    asyncssh cancels and re-creates its keepalive timer for every read from the
    SSH server: at LAN speed tens of thousands of timers a second, each an extra
    event-loop iteration under trio-asyncio, the cancelled ones queued until they
    expire (measured: ~6 % of the forwarder's CPU per byte down, ~13 % up). Here a
    read only notes the time; when the timer fires, it is re-armed for the rest of
    the interval if anything arrived meanwhile, and only a connection silent for
    the whole interval gets asyncssh's own keepalive check (same ServerAliveInterval
    and ServerAliveCountMax semantics). If asyncssh lacks any of the private names
    used here (``names``), its own behaviour is kept.
    """
    names = ("_reset_keepalive_timer", "_cancel_keepalive_timer", "_keepalive_timer_callback",
             "_keepalive_timer", "_keepalive_interval", "_loop", "_auth_complete")
    if not all(hasattr(conn, name) for name in names):
        log.debug("asyncssh connection without its keepalive timer attributes: "
                  "keepalive left as asyncssh does it")
        return
    loop = conn._loop
    check = conn._keepalive_timer_callback
    last_read = loop.time()

    def reset() -> None:  # called by asyncssh on every read
        nonlocal last_read
        last_read = loop.time()
        if conn._keepalive_timer is None and conn._keepalive_interval and conn._auth_complete:
            conn._keepalive_timer = loop.call_later(conn._keepalive_interval, fired)

    def fired() -> None:
        interval = conn._keepalive_interval
        quiet = loop.time() - last_read
        if interval and quiet < interval:  # data came in meanwhile: not idle yet
            conn._keepalive_timer = loop.call_later(interval - quiet, fired)
        else:
            check()  # asyncssh's check: count, send keepalive@openssh.com, re-arm

    conn._keepalive_timer_callback = fired  # type: ignore[method-assign]
    conn._reset_keepalive_timer = reset  # type: ignore[method-assign]
    conn._cancel_keepalive_timer()
    reset()
