"""Frozen, validated configuration objects for every ftptrio option."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ._control import ActiveMode, AuthTLSPolicy, ForwardAhead
from ._errors import ConfigError
from ._access import check_client_rule, parse_destination_rules
from ._netaddr import host_ip

# each vocabulary spelled once (the protocol's own policies in _control, which imports
# no configuration); the runtime choices below are derived from these
Direction = Literal["local", "remote"]
AddressFamily = Literal["any", "inet", "inet6"]
StrictHostKeyChecking = Literal["yes", "accept-new", "ask", "no"]
#: who logs in to SFTP for an --sftp-server session: the FTP user ("ftp") or ftptrio ("own")
SftpLogin = Literal["ftp", "own"]
SFTP_LOGINS: tuple[SftpLogin, ...] = ("ftp", "own")
ACTIVE_MODES: tuple[ActiveMode, ...] = get_args(ActiveMode)
AUTH_TLS_POLICIES: tuple[AuthTLSPolicy, ...] = get_args(AuthTLSPolicy)
FORWARD_AHEAD: tuple[ForwardAhead, ...] = get_args(ForwardAhead)
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
ADDRESS_FAMILIES: tuple[AddressFamily, ...] = get_args(AddressFamily)
STRICT_HOST_KEY_CHECKING: tuple[StrictHostKeyChecking, ...] = get_args(StrictHostKeyChecking)
#: built-in defaults, used when neither the command line, -o nor ssh_config sets them
DEFAULT_KEEPALIVE_INTERVAL = 15.0
DEFAULT_KEEPALIVE_COUNT_MAX = 3
DEFAULT_CONNECT_TIMEOUT = 15.0
#: largest SSH receive window a data channel grows to (--max-window). Equal to the
#: initial window (no growth) by default: against OpenSSH's sshd a larger window
#: made sshd queue a backlog and slow down (bench/wan.py; see _relay.bound_receive_window)
DEFAULT_MAX_WINDOW = 8 * 1024 * 1024
MIN_MAX_WINDOW = 64 * 1024
#: --data-memory default: 64 data channels at the full 8 MiB window
DEFAULT_DATA_MEMORY = 512 * 1024 * 1024
MAX_MAX_WINDOW = 1024 * 1024 * 1024
#: --passive-ports: the widest range ftptrio listens on (each port is one listening
#: socket per address, so one file descriptor each)
MAX_PASSIVE_PORTS = 1000
#: a passive port range: (lowest, highest), both included
PortRange = tuple[int, int]


def one_of(choices: tuple[str, ...], *, quoted: bool = False) -> str:
    """``a, b or c`` (``'a', 'b' or 'c'``), for messages naming a vocabulary."""
    words = [f"'{choice}'" if quoted else choice for choice in choices]
    return " or ".join(filter(None, (", ".join(words[:-1]), words[-1])))


def _check_port(name: str, port: int, *, allow_zero: bool) -> None:
    if not isinstance(port, int) or not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigError(f"{name} must be a TCP port number (got {port!r})")


@dataclass(frozen=True, slots=True)
class ForwardSpec:
    """One FTP forward.

    ``direction="local"`` (-L): listen locally on listen_host:listen_port and
    reach ftp_host:ftp_port *from the SSH server* (direct-tcpip).
    ``direction="remote"`` (-R): the SSH server listens on
    listen_host:listen_port (tcpip-forward) and ftptrio connects to
    ftp_host:ftp_port *from its own machine* (plain TCP).

    The optional per-tunnel fields override the Config options of the same
    meaning for this forward only (None: use the Config's).
    """

    #: the FTP server: as the SSH server reaches it (local), as this machine does (remote)
    ftp_host: str
    #: the FTP server's control port
    ftp_port: int = 21
    #: where FTP clients connect: an address of this machine (local), on the SSH
    #: server (remote)
    listen_host: str = "127.0.0.1"
    #: the port FTP clients connect to; 0: picked by the OS (local) or the SSH
    #: server (remote), see ``Forwarder.addresses``
    listen_port: int = 0
    #: "local" (-L) or "remote" (-R), as above
    direction: Direction = "local"
    #: ``Config.active_mode`` for this forward
    active_mode: ActiveMode | None = None
    #: ``Config.auth_tls`` for this forward
    auth_tls: AuthTLSPolicy | None = None
    #: local tunnels: data listeners bind 0.0.0.0 (-g) for this forward
    gateway: bool | None = None
    #: remote tunnels: address written into rewritten 227 replies
    #: (--remote-reply-address)
    reply_address: str | None = None
    #: ``Config.passive_ports`` for this forward (local tunnels only)
    passive_ports: PortRange | None = None
    #: an FTP-proxy listener (--ftp-proxy): each client names its FTP server in its
    #: login (``USER user@host[:port]``), allowed by ``Config.allowed_destinations``;
    #: ftp_host and ftp_port are not used (a local forward otherwise)
    proxy: bool = False
    #: ``Config.read_only`` for this forward
    read_only: bool | None = None
    #: an FTP server fed from SFTP (--sftp-server): ftptrio answers the FTP commands
    #: itself and moves the files with SFTP on the SSH server (or, per session, on the
    #: host a ``USER user@host[:port]`` login names, allowed by
    #: ``Config.allowed_destinations``); ftp_host and ftp_port are not used
    sftp: bool = False

    def __post_init__(self) -> None:
        if self.proxy and self.sftp:
            raise ConfigError("a listener is an FTP proxy or an SFTP-backed FTP server, "
                              "not both")
        if self.proxy or self.sftp:
            if self.direction != "local":
                raise ConfigError("an FTP proxy or --sftp-server listener is local "
                                  "(like -L)")
        elif not self.ftp_host:
            raise ConfigError("FTP host must not be empty")
        _check_port("FTP port", self.ftp_port, allow_zero=False)
        _check_port("listen port", self.listen_port, allow_zero=True)
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"tunnel direction must be {one_of(DIRECTIONS, quoted=True)}")
        if self.active_mode is not None:
            _check_active_mode(self.active_mode)
        if self.auth_tls is not None:
            _check_auth_tls(self.auth_tls)
        if self.gateway is not None and not isinstance(self.gateway, bool):
            raise ConfigError("gateway must be true or false")
        if self.read_only is not None and not isinstance(self.read_only, bool):
            raise ConfigError("read_only must be true or false")
        if self.direction == "remote" and self.active_mode == "passive":
            raise ConfigError("active mode 'passive' (PORT/EPRT converted to PASV/EPSV) is "
                              "only available for local (-L) tunnels")
        if self.reply_address is not None:
            if self.direction != "remote":
                raise ConfigError("reply address applies to remote (-R) tunnels only")
            _check_ip("remote reply address", self.reply_address, v4_only=True)
        if self.passive_ports is not None:
            check_port_range(self.passive_ports)
            if self.direction != "local":
                raise ConfigError("passive ports (FTPS passive range) apply to local (-L) "
                                  "tunnels only")

    def effective(self, config: "Config") -> "Config":
        """The Config with this forward's overrides applied (its only forward: this)."""
        changes: dict[str, object] = {}
        if self.active_mode is not None:
            changes["active_mode"] = self.active_mode
        if self.auth_tls is not None:
            changes["auth_tls"] = self.auth_tls
        if self.gateway is not None:
            changes["data_bind_host"] = "0.0.0.0" if self.gateway else "127.0.0.1"
        if self.reply_address is not None:
            changes["remote_reply_address"] = self.reply_address
        if self.passive_ports is not None:
            changes["passive_ports"] = self.passive_ports
        if self.read_only is not None:
            changes["read_only"] = self.read_only
        if not changes:
            return config
        return dataclasses.replace(config, forwards=(self,), **changes)  # type: ignore[arg-type]

    def remote_reply_host(self, config: "Config") -> str:
        """Remote tunnels: the address written into rewritten 227 replies."""
        chosen = self.reply_address or config.remote_reply_address
        if chosen:
            return chosen
        try:
            addr = ipaddress.ip_address(self.listen_host)
        except ValueError:
            return "127.0.0.1"  # a name (e.g. localhost)
        if addr.is_unspecified or addr.version != 4:
            return "127.0.0.1"
        return self.listen_host


@dataclass(frozen=True, slots=True)
class SSHOptions:
    """How to reach the SSH server. None means: asyncssh/ssh_config default."""

    #: the SSH server: a host name, an address or an ssh_config ``Host`` alias
    host: str
    #: the SSH server's port; None: ssh_config's, else 22
    port: int | None = None
    #: the login name; None: ssh_config's ``User``, else the local user's name
    username: str | None = None
    #: private key files (ssh -i), tried after the agent's keys; None: ssh_config's
    #: ``IdentityFile``, else the ``~/.ssh/id_*`` files that exist
    client_keys: tuple[str, ...] | None = None
    #: the password of the final SSH host (never sent to a ProxyJump hop)
    password: str | None = field(default=None, repr=False)
    #: UserKnownHostsFile: path of the user known_hosts file, or "none" (no user
    #: file); None: ssh_config's, else ~/.ssh/known_hosts and ~/.ssh/known_hosts2.
    #: A file that does not exist is read as empty (no fallback to the default).
    known_hosts: str | None = None
    #: GlobalKnownHostsFile: a path or "none"; None: ssh_config's, else
    #: /etc/ssh/ssh_known_hosts and /etc/ssh/ssh_known_hosts2
    global_known_hosts: str | None = None
    #: HashKnownHosts: keys accepted on first use are written with the host name
    #: hashed; None: ssh_config's value, else no
    hash_known_hosts: bool | None = None
    #: "yes" (default: unknown or changed keys are refused), "accept-new"
    #: (trust on first use, append to known_hosts), "ask" (as accept-new after
    #: the user confirms on the terminal; refused without one), "no" (as
    #: accept-new, as OpenSSH: unknown keys accepted; a changed key is refused in
    #: every mode, since OpenSSH would disable forwarding for it).
    strict_host_key_checking: StrictHostKeyChecking = "yes"
    #: ssh_config files read instead of ``~/.ssh/config`` (ssh -F); None: ``~/.ssh/config``
    config_files: tuple[str, ...] | None = None
    #: other ``-o Key=value`` options, as ssh_config lines read before the files
    #: (HostName, BindAddress, RekeyLimit, ...: every key asyncssh's ssh_config takes)
    ssh_config_lines: tuple[tuple[str, str], ...] = ()
    #: Ciphers, in order of preference; None: ftptrio's preference (AES-GCM first)
    ciphers: tuple[str, ...] | None = None
    #: -o MACs: MAC algorithms, as ssh_config's (each name checked against asyncssh's;
    #: a +, - or ^ prefix as OpenSSH's); None: asyncssh's defaults
    macs: tuple[str, ...] | None = None
    #: -o KexAlgorithms: key exchange algorithms (as ``macs``)
    kex_algorithms: tuple[str, ...] | None = None
    #: -o HostKeyAlgorithms: host key algorithms the client accepts (as ``macs``)
    host_key_algorithms: tuple[str, ...] | None = None
    #: -o HostKeyAlias: the name known_hosts knows the host by; None: ssh_config's
    host_key_alias: str | None = None
    #: -o IdentityAgent: the ssh-agent socket ("none": no agent); None: ssh_config's,
    #: else $SSH_AUTH_SOCK
    identity_agent: str | None = None
    #: ProxyJump: "[user@]host[:port]" jump host(s), comma-separated (ssh -J)
    proxy_jump: str | None = None
    #: ServerAliveInterval: seconds between keepalives (0: none); None: ssh_config's
    #: value, else DEFAULT_KEEPALIVE_INTERVAL
    keepalive_interval: float | None = None
    #: ServerAliveCountMax: keepalives unanswered before the connection counts as
    #: lost; None: ssh_config's value, else DEFAULT_KEEPALIVE_COUNT_MAX
    keepalive_count_max: int | None = None
    #: ConnectTimeout in seconds; None: ssh_config's value, else DEFAULT_CONNECT_TIMEOUT
    connect_timeout: float | None = None
    # the rest of ssh's options; None: ssh_config's value, else ssh's default (but
    # batch_mode is never None: only -o BatchMode=yes sets it, ssh_config's is not read)
    #: BatchMode: never prompt (for passphrases, passwords, keyboard-interactive)
    batch_mode: bool = False
    #: IdentitiesOnly: of the agent's keys, offer only those of client_keys' files
    identities_only: bool | None = None
    #: PubkeyAuthentication
    pubkey_auth: bool | None = None
    #: PasswordAuthentication
    password_auth: bool | None = None
    #: KbdInteractiveAuthentication
    kbdint_auth: bool | None = None
    #: PreferredAuthentications, in order (e.g. ("publickey", "password"))
    preferred_auth: tuple[str, ...] | None = None
    #: -C / Compression
    compression: bool | None = None
    #: -4 / -6 / AddressFamily
    address_family: AddressFamily | None = None
    #: --max-window: a data channel's SSH receive window starts at 8 MiB (or this, if
    #: smaller) and doubles while the local side keeps up, up to this many bytes
    #: (as HPN-SSH does): in flight over a long fat network, and the most a
    #: slowed-down channel may hold
    max_window: int = DEFAULT_MAX_WINDOW
    #: --data-memory: the most the SSH receive windows of all data channels hold
    #: together (a window is what a channel may hold while its local side does not
    #: read); past it new channels get smaller windows (down to 256 KiB) and windows
    #: do not grow. None: no limit
    data_memory: int | None = DEFAULT_DATA_MEMORY

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("SSH host must not be empty")
        if isinstance(self.max_window, bool) or not isinstance(self.max_window, int) or not (
                MIN_MAX_WINDOW <= self.max_window <= MAX_MAX_WINDOW):
            raise ConfigError(f"max window must be {MIN_MAX_WINDOW} to {MAX_MAX_WINDOW} bytes "
                              f"(got {self.max_window!r})")
        if self.data_memory is not None and (
                isinstance(self.data_memory, bool) or not isinstance(self.data_memory, int)
                or self.data_memory < MIN_MAX_WINDOW):
            raise ConfigError(f"--data-memory must be at least {MIN_MAX_WINDOW} bytes "
                              f"(got {self.data_memory!r})")
        if self.port is not None:
            _check_port("SSH port", self.port, allow_zero=False)
        if self.strict_host_key_checking not in STRICT_HOST_KEY_CHECKING:
            raise ConfigError("StrictHostKeyChecking must be "
                              + one_of(STRICT_HOST_KEY_CHECKING))
        if (self.keepalive_interval is not None and self.keepalive_interval < 0) or (
                self.keepalive_count_max is not None and self.keepalive_count_max < 0):
            raise ConfigError("keepalive settings must not be negative")
        if self.keepalive_interval is not None and not math.isfinite(self.keepalive_interval):
            raise ConfigError("ServerAliveInterval must be a finite number")
        if self.connect_timeout is not None:
            _check_seconds("ConnectTimeout (connect_timeout)", self.connect_timeout)
        if self.address_family is not None and self.address_family not in ADDRESS_FAMILIES:
            raise ConfigError(f"AddressFamily must be {one_of(ADDRESS_FAMILIES)}")

    @property
    def effective_connect_timeout(self) -> float:
        """ConnectTimeout when ssh_config is not consulted (plain TCP connects)."""
        return self.connect_timeout or DEFAULT_CONNECT_TIMEOUT


@dataclass(frozen=True, slots=True)
class Config:
    """Everything serve() needs."""

    #: the SSH server and how to log in
    ssh: SSHOptions
    #: the FTP forwards, at least one (``Forwarder.addresses`` has the same order)
    forwards: tuple[ForwardSpec, ...]
    #: "remote-forward": PORT/EPRT get a tcpip-forward on the SSH server (Tectia style).
    #: "passive": PORT/EPRT are converted to PASV/EPSV towards the server.
    active_mode: ActiveMode = "remote-forward"
    #: address the FTP server must connect to for active data (the SSH server's
    #: remote-forward listener as the FTP server sees it)
    active_address: str = "127.0.0.1"
    #: request the remote forward of a session's next PORT/EPRT ahead, refusing every
    #: connection until that PORT/EPRT (saves a round trip per file): "yes", "no", or
    #: "auto" (only when the FTP host and remote_listen_host are addresses other than
    #: loopback, so that no other user of the SSH server's host can pass the forward's
    #: address check)
    active_forward_ahead: ForwardAhead = "auto"
    #: where the SSH server listens for active-mode remote forwards
    remote_listen_host: str = "127.0.0.1"
    #: address data listeners bind to; -g widens it to all interfaces
    data_bind_host: str = "127.0.0.1"
    #: passive data goes to the control connection's FTP host unless this is set
    trust_pasv_address: bool = False
    #: addresses or networks (CIDR) a 227 may name when trust_pasv_address is set
    pasv_allowed_hosts: tuple[str, ...] = ()
    #: AUTH TLS/SSL: "refuse" (534: the client goes on in plain text inside the SSH
    #: tunnel), "passthrough" (TLS relayed untouched; data only through passive_ports)
    #: or "implicit" (TLS from the first byte, port 990 style; needs passive_ports)
    auth_tls: AuthTLSPolicy = "refuse"
    #: FTPS: the FTP server's passive port range (low, high). While a TLS session of
    #: a local forward is live, ftptrio listens on these ports and forwards each
    #: connection from a TLS client's address to the FTP host's same port
    passive_ports: PortRange | None = None
    #: a data listener or remote forward waits this long for its peer
    data_idle_timeout: float = 60.0
    #: after the control connection ends, running transfers get this long to finish
    data_drain_timeout: float = 5.0
    #: longest a transfer-complete reply (226) waits for its active data connection
    active_hold_timeout: float = 10.0
    #: a session with no control traffic and no data moved for this long (a stalled
    #: transfer counts as idle) is closed with 421 (None: never)
    idle_session_timeout: float | None = None
    #: sessions served at once; more clients get 421 and are closed
    max_sessions: int = 256
    #: sessions served at once for one client address; its further sessions get 421
    #: (one address cannot take every session, nor the memory their windows hold)
    max_sessions_per_client: int = 32
    #: longest control line in bytes (512 to 65536); a longer one ends the session
    max_line: int = 4096
    #: remote (-R) tunnels: address written into rewritten 227 replies (the SSH
    #: host as the remote clients reach it); None: the -R listen address, or
    #: 127.0.0.1 when that is a wildcard
    remote_reply_address: str | None = None
    #: before ready, open one control connection to each -L tunnel's FTP server
    #: through SSH and read its greeting (logged; a failure is an error line, or
    #: with exit_on_forward_failure the end of start-up)
    check_ftp_servers: bool = True
    #: ssh's ExitOnForwardFailure: at start, check that the SSH server opens a
    #: channel to every -L tunnel's FTP server, and fail (exit 3) if it refuses
    exit_on_forward_failure: bool = False
    #: FTP-proxy listeners: the FTP servers a login may name, each an address, a
    #: network (CIDR) or a host-name glob (``*.lan``), with an optional ``:PORT`` or
    #: ``:LOW-HIGH`` (default port 21 only); none: every destination is refused
    allowed_destinations: tuple[str, ...] = ()
    #: addresses or networks (CIDR) of the FTP clients served (every listener; -R: the
    #: client address the SSH server reports); others get 421 before any SSH channel
    #: opens. Empty: every client
    allowed_clients: tuple[str, ...] = ()
    #: read-only access: STOR, STOU, APPE, DELE, RNFR, RNTO, MKD, RMD, SITE and the
    #: like get 550 from ftptrio and never reach the server; downloads and listings work
    read_only: bool = False
    #: --xferlog: append one xferlog(5) line per file transfer to this file (created
    #: 0600; ``Forwarder.reopen_logs()``, SIGHUP for the command line, reopens it)
    xferlog: str | None = None
    #: --metrics: (address, port) serving the Prometheus text format at /metrics (the
    #: counters of ``Forwarder.stats``; needs the ``metrics`` extra); None: no server
    metrics_listen: tuple[str, int] | None = None
    #: --sftp-login: who logs in to SFTP for --sftp-server sessions. "ftp": each FTP
    #: login (USER/PASS) is the password or keyboard-interactive login of an SSH
    #: connection of its own (keys and agent are never used for it; none is made at
    #: start-up unless other forwards need one). "own": every session uses ftptrio's
    #: own SSH login and connection (loopback listeners only; the FTP user name must
    #: be the SSH user's, the FTP password is ignored)
    sftp_login: SftpLogin = "ftp"
    #: --sftp-fallback: the port of the FTP server on the SSH host that --sftp-server
    #: sessions are forwarded to (as -L does) when the SSH server offers no SFTP
    #: subsystem; None: no fallback (those logins get 530)
    sftp_fallback_port: int | None = None
    #: an open asyncssh.SSHClientConnection to forward through instead of connecting
    #: (opened in the embedder's trio-asyncio loop; ftptrio neither closes nor reopens it)
    ssh_connection: object | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.forwards:
            raise ConfigError("at least one forward (-L or -R) is required")
        _check_active_mode(self.active_mode)
        _check_auth_tls(self.auth_tls)
        if self.active_forward_ahead not in FORWARD_AHEAD:
            raise ConfigError("active forward ahead must be "
                              f"{one_of(FORWARD_AHEAD, quoted=True)}")
        for name, option in (("active_address", "--active-address / active_address"),
                             ("remote_listen_host",
                              "--remote-listen-address / remote_listen_address"),
                             ("data_bind_host", "data bind address")):
            _check_ip(option, getattr(self, name))
        if self.remote_reply_address is not None:
            _check_ip("remote reply address", self.remote_reply_address, v4_only=True)
        for forward in self.forwards:
            if (forward.direction == "remote" and forward.active_mode is None
                    and self.active_mode == "passive"):
                raise ConfigError("active mode 'passive' (PORT/EPRT converted to PASV/EPSV) "
                                  "is only available for local (-L) tunnels; give the remote "
                                  "tunnel active_mode = \"remote-forward\"")
        for name, option in (("data_idle_timeout", "--data-timeout"),
                             ("data_drain_timeout", "--drain-timeout"),
                             ("active_hold_timeout", "--active-hold-timeout")):
            _check_seconds(f"{option} ({name})", getattr(self, name))
        if self.idle_session_timeout is not None:
            _check_seconds("--idle-timeout (idle_session_timeout)", self.idle_session_timeout)
        for name, value in (("--max-sessions", self.max_sessions),
                            ("--max-sessions-per-client", self.max_sessions_per_client)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer (got {value!r})")
        for allowed in self.pasv_allowed_hosts:
            try:
                ipaddress.ip_network(allowed, strict=False)
            except ValueError:
                raise ConfigError(f"trusted passive address must be an IP address or network "
                                  f"such as 10.0.0.0/24 (got {allowed!r})") from None
        if not 512 <= self.max_line <= 65536:
            raise ConfigError("max line length must be between 512 and 65536")
        if self.passive_ports is not None:
            check_port_range(self.passive_ports)
        parse_destination_rules(self.allowed_destinations)
        _check_sftp(self)
        if self.metrics_listen is not None:
            if not isinstance(self.metrics_listen, tuple) or len(self.metrics_listen) != 2:
                raise ConfigError("metrics_listen must be (address, port)")
            _check_ip("--metrics address", self.metrics_listen[0])
            _check_port("--metrics port", self.metrics_listen[1], allow_zero=True)
        for allowed in self.allowed_clients:
            check_client_rule(allowed)
        for forward in self.forwards:
            policy = forward.auth_tls or self.auth_tls
            _check_ftps(forward, policy, forward.passive_ports or self.passive_ports)
            read_only = self.read_only if forward.read_only is None else forward.read_only
            if read_only and policy != "refuse":
                raise ConfigError(f"forward on port {forward.listen_port}: --read-only needs "
                                  "--auth-tls refuse (ftptrio cannot see the commands of a "
                                  "TLS control channel)")
        _check_shared_ports(self)


def _check_sftp(config: "Config") -> None:
    if config.sftp_login not in SFTP_LOGINS:
        raise ConfigError(f"--sftp-login must be {one_of(SFTP_LOGINS, quoted=True)}")
    if config.sftp_fallback_port is not None:
        _check_port("--sftp-fallback port", config.sftp_fallback_port, allow_zero=False)
    if config.sftp_login != "own":
        return
    for forward in config.forwards:
        if forward.sftp and not _is_loopback(forward.listen_host):
            raise ConfigError(f"--sftp-login own serves every FTP client with ftptrio's own "
                              f"SSH login, so its --sftp-server listener must be on a "
                              f"loopback address (not {forward.listen_host})")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_of(name: str, of: type[Config] | type[SSHOptions] = Config) -> Any:
    """The default of a field of Config (or of SSHOptions): defaults live only in
    these dataclasses; the command line leaves unset options None and its help
    shows the defaults from here."""
    for item in dataclasses.fields(of):
        if item.name == name:
            if item.default is dataclasses.MISSING:
                raise ValueError(f"{of.__name__}.{name} has no default")
            return item.default
    raise ValueError(f"{of.__name__} has no field {name!r}")


def _check_active_mode(mode: str) -> None:
    if mode not in ACTIVE_MODES:
        raise ConfigError(f"active mode must be {one_of(ACTIVE_MODES, quoted=True)}")


def _check_auth_tls(policy: str) -> None:
    if policy not in AUTH_TLS_POLICIES:
        raise ConfigError(f"AUTH TLS policy must be {one_of(AUTH_TLS_POLICIES, quoted=True)}")


def check_port_range(ports: object) -> None:
    """A passive port range (low, high): ports 1024-65535, low <= high, at most
    MAX_PASSIVE_PORTS ports."""
    if (not isinstance(ports, tuple) or len(ports) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports)):
        raise ConfigError(f"passive ports must be a range LOW-HIGH (got {ports!r})")
    low, high = ports
    if not 1024 <= low <= high <= 65535:
        raise ConfigError(f"passive ports must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535 "
                          f"(got {low}-{high}; ports below 1024 are refused)")
    if high - low + 1 > MAX_PASSIVE_PORTS:
        raise ConfigError(f"passive port range {low}-{high} is too wide: at most "
                          f"{MAX_PASSIVE_PORTS} ports (narrow the FTP server's range)")


def _check_ftps(forward: ForwardSpec, policy: AuthTLSPolicy, ports: PortRange | None) -> None:
    """The FTPS settings of one forward (its own, else the Config's) fit together."""
    if forward.proxy:
        if policy != "refuse" or ports is not None:
            raise ConfigError(f"FTP proxy listener on port {forward.listen_port}: it reads "
                              "the login in plain text, so it needs --auth-tls refuse and "
                              "no --passive-ports (set them per tunnel in a --config file)")
        return
    where = f"forward to {forward.ftp_host}:{forward.ftp_port}"
    if forward.direction == "remote":
        if policy == "implicit" or ports is not None:
            raise ConfigError(f"{where}: --auth-tls implicit and --passive-ports apply to "
                              "local (-L) tunnels only; set them per tunnel in a --config "
                              "file")
        return
    if policy == "implicit" and ports is None:
        raise ConfigError(f"{where}: --auth-tls implicit needs --passive-ports LOW-HIGH "
                          "(the FTP server's passive port range)")
    if ports is not None and policy == "refuse":
        raise ConfigError(f"{where}: --passive-ports needs --auth-tls passthrough or "
                          "implicit (plain FTP sessions have their passive replies "
                          "rewritten)")
    if ports is not None and ports[0] <= forward.listen_port <= ports[1]:
        raise ConfigError(f"{where}: its listen port {forward.listen_port} is inside the "
                          f"passive port range {ports[0]}-{ports[1]}")


def _may_share_address(a: str, b: str) -> bool:
    """Listeners on hosts ``a`` and ``b`` may hold the same address (the same IP, a
    wildcard, or a name)."""
    try:
        ia, ib = ipaddress.ip_address(a.split("%")[0]), ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return True
    return ia == ib or ia.is_unspecified or ib.is_unspecified


def _check_shared_ports(config: "Config") -> None:
    """Two local forwards on one listen address cannot both listen on a passive port
    (the first TLS session's range would take it, and another forward's data would
    reach the first forward's FTP host), nor one's range hold another's listen port."""
    local = [(forward, forward.passive_ports or config.passive_ports)
             for forward in config.forwards if forward.direction == "local"]
    for index, (forward, ports) in enumerate(local):
        if ports is None:
            continue
        for other, other_ports in local[:index] + local[index + 1:]:
            if not _may_share_address(forward.listen_host, other.listen_host):
                continue
            where = (f"forwards to {other.ftp_host}:{other.ftp_port} and "
                     f"{forward.ftp_host}:{forward.ftp_port}")
            if ports[0] <= other.listen_port <= ports[1]:
                raise ConfigError(f"{where}: the listen port {other.listen_port} is inside "
                                  f"the passive port range {ports[0]}-{ports[1]}")
            if (other_ports is not None and other_ports[0] <= ports[1]
                    and ports[0] <= other_ports[1]):
                raise ConfigError(f"{where}: their passive port ranges {other_ports[0]}-"
                                  f"{other_ports[1]} and {ports[0]}-{ports[1]} overlap on "
                                  "the same listen address; give them different listen "
                                  "addresses (-L 127.0.0.2:PORT:...) or, per tunnel in a "
                                  "--config file, ranges that do not overlap")


def _check_seconds(name: str, value: float) -> None:
    """A positive, finite number of seconds (nan and inf would break every deadline)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds (got {value!r})")


def _check_ip(name: str, value: str, *, v4_only: bool = False) -> None:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name} must be an IP address (got {value!r})") from None
    if v4_only and addr.version != 4:
        raise ConfigError(f"{name} must be an IPv4 address (got {value!r})")


def address_allowed(address: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``address`` (IPv4-mapped aware) is in one of the addresses/networks."""
    ip = host_ip(address)
    if ip is None:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in allowed)


@dataclass(frozen=True, slots=True)
class Destination:
    """An SSH destination: host, and the user and port it names (None: not given)."""

    host: str
    user: str | None = None
    port: int | None = None


def parse_jump_hosts(text: str) -> list[Destination]:
    """ProxyJump (``-J``): ``[user@]host[:port]``, comma-separated (IPv6 in brackets)."""
    hops = []
    for hop in filter(None, text.split(",")):
        user, _, hostport = hop.strip().rpartition("@")
        if hostport.startswith("["):  # [ipv6]:port
            host, _, port = hostport[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = hostport.partition(":")
        try:
            number = int(port) if port else None
        except ValueError:
            number = 0
        if not host or number is not None and not 1 <= number <= 65535:
            raise ConfigError(f"bad jump host {hop!r}: expected [user@]host[:port]")
        hops.append(Destination(host, user or None, number))
    return hops
