"""The one option grammar of the command line and of ``--config`` files.

* ``-L``/``-R`` forward specs: ``[ftp/][bind_address:]port:ftp_host:ftp_port``
* SSH destinations: ``[user@]host`` and ``ssh://[user@]host[:port]`` (as OpenSSH);
  ``-J`` hosts are read by ``_config.parse_jump_hosts``
* ``-o Option=value`` keys (the subset of ssh_config ftptrio understands)
* the argparse parser of every option, and Options -> Config

``_cli`` (the command line) and ``_configfile`` (TOML profiles, turned into the
same arguments) both use this module; it imports neither of them.
Every error here is a ConfigError (exit code 2).
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import math
import re
import sys
from typing import Any, Literal, NoReturn, Sequence, TypeVar, get_args
from urllib.parse import unquote

from ._config import (ACTIVE_MODES, ADDRESS_FAMILIES, AUTH_TLS_POLICIES, FORWARD_AHEAD,
                      DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_COUNT_MAX,
                      DEFAULT_KEEPALIVE_INTERVAL, STRICT_HOST_KEY_CHECKING, Config, Destination,
                      Direction, ForwardSpec, SFTP_LOGINS, SSHOptions, check_port_range, default_of, one_of,
                      parse_jump_hosts)
from ._errors import ConfigError

#: the ``-o`` keys ftptrio understands: lower case (as ssh_config keys are matched)
#: -> as ssh_config spells them (for messages)
SSH_OPTIONS = {name.lower(): name for name in (
    "AddressFamily", "BatchMode", "ChallengeResponseAuthentication", "Ciphers",
    "Compression", "ConnectTimeout", "ExitOnForwardFailure", "GlobalKnownHostsFile",
    "HashKnownHosts", "HostKeyAlgorithms", "HostKeyAlias", "IdentitiesOnly", "IdentityAgent",
    "IdentityFile", "KbdInteractiveAuthentication", "KexAlgorithms", "LogLevel", "MACs",
    "PasswordAuthentication", "Port", "PreferredAuthentications", "ProxyJump",
    "PubkeyAuthentication", "ServerAliveCountMax", "ServerAliveInterval",
    "StrictHostKeyChecking", "User", "UserKnownHostsFile")}
#: ssh_config keys ftptrio does not model, handed to asyncssh's ssh_config reader
#: as lines read before the files (SSHOptions.ssh_config_lines), as ssh_config spells them
SSH_CONFIG_PASSTHROUGH = (
    "BindAddress", "CASignatureAlgorithms", "CanonicalDomains", "CanonicalizeFallbackLocal",
    "CanonicalizeHostname", "CanonicalizeMaxDots", "CanonicalizePermittedCNAMEs",
    "CertificateFile", "ForwardAgent", "GSSAPIAuthentication", "GSSAPIDelegateCredentials",
    "GSSAPIKeyExchange", "HostName", "HostbasedAuthentication", "PKCS11Provider",
    "ProxyCommand", "RekeyLimit", "SendEnv", "SetEnv", "TCPKeepAlive")
#: LogLevel -> (verbosity as a count of -v, quiet)
LOG_LEVELS = {"quiet": (0, True), "fatal": (0, True), "error": (0, True), "info": (0, False),
              "verbose": (1, False), "debug": (1, False), "debug1": (1, False),
              "debug2": (2, False), "debug3": (3, False)}
#: the built-in defaults of options ssh_config may also set (README: "SSH options")
DEFAULTS = (f"ServerAliveInterval {DEFAULT_KEEPALIVE_INTERVAL:g}, ServerAliveCountMax "
            f"{DEFAULT_KEEPALIVE_COUNT_MAX}, ConnectTimeout {DEFAULT_CONNECT_TIMEOUT:g}")
#: ssh_config's yes/no flags, as OpenSSH reads them (readconf.c multistate_flag,
#: matched in any case)
YES_NO = {"yes": True, "true": True, "no": False, "false": False}
#: ssh_config spellings of StrictHostKeyChecking values -> ftptrio's
_STRICT_ALIASES = {"true": "yes", "false": "no", "off": "no"}
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
#: on SIGINT/SIGTERM, how long running sessions may finish (--grace)
DEFAULT_GRACE = 10.0
#: options that set the Config field of the same name as given (None: not given,
#: Config's default applies)
CONFIG_OPTIONS = ("active_mode", "active_address", "active_forward_ahead", "auth_tls",
                  "data_idle_timeout", "data_drain_timeout", "active_hold_timeout",
                  "idle_session_timeout", "max_sessions", "max_sessions_per_client",
                  "remote_reply_address", "passive_ports", "read_only", "xferlog",
                  "metrics_listen", "sftp_login", "sftp_fallback_port")


# ---------------------------------------------------------------- -L / -R

def parse_forward(spec: str, direction: Direction = "local", *,
                  gateway: bool = False) -> ForwardSpec:
    """``[ftp/][bind_address:]port:ftp_host:ftp_port`` (IPv6 in brackets).

    For remote (-R) tunnels bind_address is the listen address on the SSH server.
    Without a bind address a local tunnel listens on 127.0.0.1, or on every address
    with ``gateway`` (ssh -g).
    """
    flag = "-R" if direction == "remote" else "-L"
    if not isinstance(spec, str):
        raise ConfigError(f"bad {flag} {spec!r}: expected a string")
    text = spec[4:] if spec.lower().startswith("ftp/") else spec
    parts = [p[1:-1] if p.startswith("[") else p
             for p in re.findall(r"\[[^\]]*\]|[^:]+", text)]
    if "[" not in text and text.count(":") > 3:
        raise ConfigError(f"bad {flag} {spec!r}: an IPv6 address goes in brackets, e.g. "
                          "[::1]:2121:ftp_host:21 or 2121:[2001:db8::5]:21")
    if len(parts) == 3:
        bind = "0.0.0.0" if gateway and direction == "local" else "127.0.0.1"
        port, host, hostport = parts
    elif len(parts) == 4:
        bind, port, host, hostport = parts
        bind = {"*": "0.0.0.0", "localhost": "127.0.0.1"}.get(bind, bind)
    else:
        raise ConfigError(f"bad {flag} {spec!r}: expected "
                          "[bind_address:]port:ftp_host:ftp_port")
    try:
        return ForwardSpec(ftp_host=host, ftp_port=int(hostport), listen_host=bind,
                           listen_port=int(port), direction=direction)
    except ValueError:
        raise ConfigError(f"bad {flag} {spec!r}: ports must be numbers") from None
    except ConfigError as exc:
        raise ConfigError(f"bad {flag} {spec!r}: {exc}") from None


def parse_proxy_listen(spec: str, *, gateway: bool = False) -> ForwardSpec:
    """--ftp-proxy ``[bind_address:]port`` (IPv6 in brackets): an FTP-proxy listener;
    without a bind address on 127.0.0.1, or on every address with ``gateway`` (-g)."""
    return _listener(spec, "--ftp-proxy", gateway, sftp=False)


def parse_sftp_listen(spec: str, *, gateway: bool = False) -> ForwardSpec:
    """--sftp-server ``[bind_address:]port``: an FTP server fed from the SSH server's
    SFTP; bound as --ftp-proxy is."""
    return _listener(spec, "--sftp-server", gateway, sftp=True)


def _listener(spec: str, flag: str, gateway: bool, *, sftp: bool) -> ForwardSpec:
    """A listener of its own (``[bind_address:]port``): an FTP proxy, or with ``sftp``
    an SFTP-backed FTP server."""
    if not isinstance(spec, str):
        raise ConfigError(f"bad {flag} {spec!r}: expected a string")
    text = spec.strip()
    if text.startswith("["):
        bind, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ConfigError(f"bad {flag} {spec!r}: expected [bind_address:]port")
        port = rest[1:]
    elif ":" in text:
        bind, _, port = text.rpartition(":")
        if ":" in bind:
            raise ConfigError(f"bad {flag} {spec!r}: an IPv6 address goes in "
                              "brackets, e.g. [::1]:2121")
    else:
        bind, port = ("0.0.0.0" if gateway else "127.0.0.1"), text
    bind = {"*": "0.0.0.0", "localhost": "127.0.0.1"}.get(bind, bind)
    try:
        return ForwardSpec(ftp_host="", listen_host=bind, listen_port=int(port),
                           proxy=not sftp, sftp=sftp)
    except ValueError:
        raise ConfigError(f"bad {flag} {spec!r}: the port must be a number") from None
    except ConfigError as exc:
        raise ConfigError(f"bad {flag} {spec!r}: {exc}") from None


def parse_sftp_fallback(text: str) -> int:
    """--sftp-fallback ``ftp[:port]`` -> the FTP port on the SSH host (21 if none)."""
    kind, colon, port = text.strip().partition(":")
    if kind.lower() != "ftp" or (colon and not port.isdigit()):
        raise argparse.ArgumentTypeError(f"bad --sftp-fallback {text!r}: expected "
                                         "ftp or ftp:PORT")
    number = int(port) if colon else 21
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"bad --sftp-fallback {text!r}: the port must "
                                         "be 1-65535")
    return number


def parse_metrics_listen(text: str) -> tuple[str, int]:
    """--metrics ``[bind_address:]port`` (IPv6 in brackets); loopback by default."""
    m = re.fullmatch(r"\s*(?:(\[[^\]]+\]|[^:\[\]]+):)?(\d{1,5})\s*", text)
    if m is None or int(m[2]) > 65535:
        raise argparse.ArgumentTypeError(f"bad --metrics {text!r}: expected "
                                         "[bind_address:]port, e.g. 9464 or 10.0.0.1:9464")
    host = (m[1] or "127.0.0.1").strip("[]")
    host = {"*": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host)
    return host, int(m[2])


# ---------------------------------------------------------------- destinations

_URI = re.compile(r"ssh://(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/@\[\]]*)"
                  r"(?::(?P<port>[^/]*))?/?", re.IGNORECASE)


def parse_destination(text: str) -> Destination:
    """``[user@]host`` (split at the last ``@``) or ``ssh://[user@]host[:port]``.

    As in OpenSSH the URI form takes no path, its user may be %-encoded and an
    IPv6 host is written in brackets. An empty host is left for SSHOptions to
    refuse (its message names the SSH host).
    """
    if text[:6].lower() != "ssh://":
        user, _, host = text.rpartition("@")
        name, colon, tail = host.rpartition(":")
        if colon and ":" not in name and tail.isdigit():
            at = f"{user}@" if user else ""
            raise ConfigError(f"bad destination {text!r}: a port does not go after the host "
                              f"here; use -p {tail} {at}{name} or ssh://{at}{name}:{tail}")
        return Destination(host, user or None)
    match = _URI.fullmatch(text)
    if match is None:
        raise ConfigError(f"bad destination {text!r}: expected ssh://[user@]host[:port]")
    host = match["host"]
    if host.startswith("["):
        host = host[1:-1]
    port = None
    if match["port"]:
        try:
            port = int(match["port"])
        except ValueError:
            raise ConfigError(f"bad destination {text!r}: port must be a number") from None
    return Destination(host, unquote(match["user"]) if match["user"] else None, port)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_data_memory(text: str) -> int | Literal["none"]:
    """--data-memory: a size, or ``none`` (no limit; None is "not given")."""
    return "none" if text.strip().lower() == "none" else parse_size(text)


def parse_port_range(text: str) -> tuple[int, int]:
    """--passive-ports: ``LOW-HIGH`` (or one port); ports below 1024 are refused."""
    m = re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"bad port range {text!r}: expected LOW-HIGH, "
                                         "e.g. 40000-40100")
    ports = (int(m.group(1)), int(m.group(2) or m.group(1)))
    try:
        check_port_range(ports)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return ports


def parse_size(text: str) -> int:
    """A byte count: an integer with an optional K, M or G suffix (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgKMG]?)(?:i?[bB])?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: expected bytes, or a number "
                                         "with K, M or G")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


# ---------------------------------------------------------------- -o

def parse_ssh_options(pairs: Sequence[str]) -> dict[str, str]:
    """``-o Key=value`` (or ``Key value``) -> {lower-case key: value}; as in ssh,
    the first value of a key wins."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            key, _, value = pair.partition(" ")
        given = key.strip()
        key = given.lower()
        if key not in SSH_OPTIONS and key not in _PASSTHROUGH:
            names = sorted((*SSH_OPTIONS.values(), *SSH_CONFIG_PASSTHROUGH), key=str.lower)
            close = difflib.get_close_matches(key, [n.lower() for n in names], 1)
            hint = next((f"did you mean {n}? " for n in names
                         if close and n.lower() == close[0]), "")
            raise ConfigError(f"unsupported -o option {given!r}; {hint}supported: "
                              + ", ".join(names))
        out.setdefault(key, value.strip())
    return out


_PASSTHROUGH = {name.lower(): name for name in SSH_CONFIG_PASSTHROUGH}


def ssh_config_lines(opts: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The -o options handed to asyncssh's ssh_config reader, as (Key, value) lines."""
    lines = []
    for key, value in opts.items():
        if key in _PASSTHROUGH:
            if not value or "\n" in value or "\r" in value:
                raise ConfigError(f"bad option value: {_PASSTHROUGH[key]} needs a value "
                                  "on one line")
            lines.append((_PASSTHROUGH[key], value))
    return tuple(lines)


def yes_no(opts: dict[str, str], key: str) -> bool | None:
    """A yes/no option of ``opts`` (None: not given), read as ssh_config reads its
    flags (YES_NO); anything else is a ConfigError."""
    if key not in opts:
        return None
    value = YES_NO.get(opts[key].lower())
    if value is None:
        raise ConfigError(f"bad option value: {SSH_OPTIONS[key]} must be yes or no "
                          f"(got {opts[key]!r})")
    return value


def log_verbosity(args: argparse.Namespace) -> tuple[int, bool]:
    """(count of -v, quiet) from -v/-q and -o LogLevel (the command line's -v/-q win)."""
    verbose, quiet = args.verbose, args.quiet
    if not verbose and not quiet:
        try:
            level = parse_ssh_options(args.options).get("loglevel")
        except ConfigError:
            level = None  # reported by config_from_args
        if level is not None and level.lower() in LOG_LEVELS:
            verbose, quiet = LOG_LEVELS[level.lower()]
    return verbose, quiet


# ---------------------------------------------------------------- the parser

def _shown(name: str, of: type[Config] | type[SSHOptions] = Config) -> str:
    """The default of a Config (or SSHOptions) field as --help writes it, in the
    option's own syntax (60, 8M)."""
    value = default_of(name, of)
    if isinstance(value, float):
        return f"{value:g}"
    if name in ("max_window", "data_memory"):
        return size_text(value)
    return str(value)


def size_text(size: int) -> str:
    """A byte count as --max-window and --data-memory take it: 8M, 512M, 64K."""
    for suffix in "GMK":
        unit = _SIZE_UNITS[suffix.lower()]
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


class _Parser(argparse.ArgumentParser):
    """argparse, plus: an unknown long option is named with the nearest known one
    (``--data-timout``: "did you mean --data-timeout?"), instead of its value being
    taken for the SSH destination."""

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        words = list(sys.argv[1:] if args is None else args)
        known = [s for action in self._actions for s in action.option_strings
                 if s.startswith("--")]
        for word in words:
            if word == "--":
                break
            name = word.split("=", 1)[0]
            if name.startswith("--") and not any(k.startswith(name) for k in known):
                close = difflib.get_close_matches(name, known, 1)
                self.error(f"unknown option {name}"
                           + (f"; did you mean {close[0]}?" if close else ""))
        return super().parse_args(words, namespace)


class _RaisingParser(_Parser):
    """For --config files: a bad value is a ConfigError, not a usage message."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def build_parser(raise_errors: bool = False, *, description: str | None = None,
                 epilog: str | None = None) -> argparse.ArgumentParser:
    """Every option of ``ftptrio``. ``raise_errors``: a bad argument raises
    ConfigError instead of printing usage and exiting 2."""
    p = (_RaisingParser if raise_errors else _Parser)(
        prog="ftptrio", description=description, epilog=epilog,
        usage="%(prog)s [options] -L|-R spec ... [user@]ssh_host\n"
              "       %(prog)s [options] --ftp-proxy [bind:]port --allow-destination PATTERN "
              "... [user@]ssh_host\n       %(prog)s [options] --sftp-server [bind:]port "
              "[user@]ssh_host\n       %(prog)s --config FILE"
              "\n       %(prog)s demo [--size MIB]",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("destination", nargs="?", metavar="[user@]ssh_host",
                   help="SSH server to forward through ([user@]host, an ssh_config Host "
                        "alias, or ssh://[user@]host[:port])")
    p.add_argument("-L", dest="forwards", action="append", default=[],
                   metavar="[bind_address:]port:ftp_host:ftp_port",
                   help="listen on port (default bind 127.0.0.1) and forward FTP sessions "
                        "to ftp_host:ftp_port as seen from the SSH server; repeatable")
    p.add_argument("-R", dest="remote_forwards", action="append", default=[],
                   metavar="ftp/[listen_address:]port:ftp_host:ftp_port",
                   help="remote tunnel: the SSH server listens on port (default "
                        "127.0.0.1) and ftptrio relays its FTP sessions to ftp_host:ftp_port "
                        "as seen from this machine; repeatable, may be mixed with -L")
    p.add_argument("--ftp-proxy", dest="ftp_proxies", action="append", default=[],
                   metavar="[bind_address:]port",
                   help="FTP-proxy listener (default bind 127.0.0.1): each client names "
                        "its FTP server in its login, USER user@host[:port] (lftp's "
                        "ftp:proxy, FileZilla's and WinSCP's USER user@host), reached "
                        "through the SSH server if --allow-destination allows it; "
                        "repeatable")
    p.add_argument("--sftp-server", dest="sftp_servers", action="append", default=[],
                   metavar="[bind_address:]port",
                   help="an FTP server for unchanged FTP clients (default bind 127.0.0.1) "
                        "whose files are moved with SFTP on the SSH server: no FTP server "
                        "is needed there; USER user@host[:port] names another SSH host "
                        "if --allow-destination allows it (port 22 when none is given); "
                        "repeatable")
    p.add_argument("--sftp-login", dest="sftp_login", choices=SFTP_LOGINS, default=None,
                   help="who logs in to SFTP for --sftp-server: ftp: each FTP user with "
                        "their password, over an SSH connection of their own; own: "
                        "ftptrio's SSH login for every session (loopback listeners only, "
                        f"the FTP user must be the SSH user); default {_shown('sftp_login')}")
    p.add_argument("--sftp-fallback", dest="sftp_fallback_port", metavar="ftp[:port]",
                   type=parse_sftp_fallback, default=None,
                   help="--sftp-server sessions to an SSH server without SFTP are forwarded "
                        "to the FTP server on that host (port 21 by default), as -L does")
    p.add_argument("--allow-destination", dest="allow_destination", action="append",
                   default=[], metavar="PATTERN",
                   help="an FTP server --ftp-proxy logins may name (or an SSH host "
                        "--sftp-server logins may name: port 22 when none is given): an "
                        "address, a network (CIDR) or a host-name glob (*.lan), with :PORT "
                        "or :LOW-HIGH (port 21 when none is given); repeatable. Without one "
                        "every destination is refused")
    p.add_argument("--allow-client", dest="allow_client", action="append", default=[],
                   metavar="ADDRESS|CIDR",
                   help="serve only FTP clients from these addresses or networks (for "
                        "listeners exposed with -g or a LAN bind); others get 421 before "
                        "any SSH channel opens; repeatable (default: every client)")
    p.add_argument("--read-only", dest="read_only", action="store_true", default=None,
                   help="refuse every command that changes the FTP server's files (STOR, "
                        "STOU, APPE, DELE, RNFR/RNTO, MKD, RMD, SITE ...) with 550; "
                        "downloads and listings work (per tunnel in a --config file)")
    p.add_argument("--xferlog", metavar="FILE",
                   help="audit trail: one xferlog(5) line per file transfer (the wu-ftpd/"
                        "vsftpd/ProFTPD format), appended to FILE (created 0600, reopened "
                        "on SIGHUP for logrotate); the JSON log line beside it names the "
                        "FTP user and server")
    p.add_argument("--metrics", dest="metrics_listen", type=parse_metrics_listen,
                   metavar="[bind_address:]port",
                   help="serve the counters (sessions, transfers, bytes, refusals, SSH "
                        "state) in the Prometheus text format at http://ADDRESS:port/"
                        "metrics, on loopback unless a bind address is given (needs "
                        "pip install 'ftptrio[metrics]')")
    p.add_argument("--config", dest="config", metavar="FILE",
                   help="TOML file naming the SSH host, its tunnels and options (see README); "
                        "command-line options add to it (single values: command line wins)")
    p.add_argument("-p", dest="port", type=int, help="SSH server port (default 22)")
    p.add_argument("-l", dest="user", help="SSH user name")
    p.add_argument("-i", dest="identity", action="append",
                   help="private key file for SSH authentication; repeatable")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="Option=value",
                   help="ssh_config option: " + ", ".join(SSH_OPTIONS.values())
                        + " (StrictHostKeyChecking: " + "|".join(STRICT_HOST_KEY_CHECKING)
                        + "); defaults: " + DEFAULTS + " seconds, unless ssh_config sets "
                        "them")
    p.add_argument("-F", dest="config_file", help="ssh_config file (default ~/.ssh/config)")
    p.add_argument("-J", dest="jump", metavar="[user@]host[:port]",
                   help="connect through this jump host (ssh -J / ProxyJump; comma-separated "
                        "for several)")
    p.add_argument("-g", dest="gateway", action="store_true",
                   help="let other hosts connect to data listeners (binds 0.0.0.0)")
    p.add_argument("-N", action="store_true", help="accepted for ssh compatibility (no-op)")
    p.add_argument("-T", action="store_true", help="accepted for ssh compatibility (no-op)")
    p.add_argument("-f", dest="background", action="store_true",
                   help="go to background once authenticated and listening (as ssh -f)")
    p.add_argument("-E", dest="log_file", metavar="log_file",
                   help="append log lines to log_file instead of standard error")
    p.add_argument("--pid-file", metavar="FILE",
                   help="write the process id to FILE once ready (with -f: the "
                        "background process's); removed at exit. Stop it with "
                        "kill $(cat FILE)")
    p.add_argument("-C", dest="compression", action="store_true",
                   help="compress the SSH connection (-o Compression=yes)")
    p.add_argument("-4", dest="address_family", action="store_const", const="inet",
                   help="SSH connection over IPv4 only")
    p.add_argument("-6", dest="address_family", action="store_const", const="inet6",
                   help="SSH connection over IPv6 only")
    p.add_argument("--active-mode", choices=ACTIVE_MODES,
                   help="PORT/EPRT handling: remote-forward (tcpip-forward on the SSH "
                        "server) or passive (convert to PASV/EPSV; no remote forwarding "
                        f"needed); default {_shown('active_mode')}")
    p.add_argument("--active-address", metavar="ADDRESS",
                   help="address the FTP server connects to for active data: the SSH "
                        "host as the FTP server sees it (default "
                        f"{_shown('active_address')})")
    p.add_argument("--active-forward-ahead", choices=FORWARD_AHEAD,
                   help="request each active-mode remote forward ahead of its PORT/EPRT "
                        "(one round trip less per file; it refuses every connection until "
                        "then): auto = only when the FTP host and the remote listen "
                        "address are both non-loopback addresses "
                        f"(default {_shown('active_forward_ahead')})")
    p.add_argument("--remote-listen-address", metavar="ADDRESS",
                   help="where the SSH server listens for active-mode data (tcpip-forward); "
                        "non-loopback needs GatewayPorts clientspecified on the SSH server "
                        "(default: --active-address when it is not loopback, else 127.0.0.1)")
    p.add_argument("--remote-reply-address", metavar="ADDRESS",
                   help="remote (-R) tunnels: address written into rewritten 227 replies, "
                        "for clients that reach the SSH host under another address "
                        "(default: the -R listen address, or 127.0.0.1 for a wildcard)")
    p.add_argument("--trust-pasv-address", dest="pasv_allow", action="append", default=[],
                   metavar="ADDRESS",
                   help="let passive data go to ADDRESS when a 227 reply names it "
                        "(repeatable allow-list); by default data always goes to the FTP "
                        "host of the control connection")
    p.add_argument("--auth-tls", choices=AUTH_TLS_POLICIES,
                   help="AUTH TLS/SSL: refuse (534; SSH already encrypts), passthrough "
                        "(FTPS relayed opaque; data through --passive-ports) or implicit "
                        "(TLS from the first byte, port 990 style; needs --passive-ports); "
                        f"default {_shown('auth_tls')}")
    p.add_argument("--passive-ports", type=parse_port_range, metavar="LOW-HIGH",
                   help="FTPS: the FTP server's passive port range (vsftpd pasv_min_port-"
                        "pasv_max_port, ProFTPD PassivePorts); while a TLS session is live, "
                        "ftptrio listens on these ports and forwards them to the FTP host "
                        "(-L tunnels; with --auth-tls passthrough or implicit)")
    p.add_argument("--data-timeout", dest="data_idle_timeout", type=float, metavar="SECONDS",
                   help="close an unused data listener after this long (default "
                        f"{_shown('data_idle_timeout')})")
    p.add_argument("--drain-timeout", dest="data_drain_timeout", type=float,
                   metavar="SECONDS",
                   help="after a control connection ends, let its running transfers "
                        f"finish this long (default {_shown('data_drain_timeout')})")
    p.add_argument("--active-hold-timeout", type=float, metavar="SECONDS",
                   help="longest a transfer-complete reply waits for its active data "
                        f"connection (default {_shown('active_hold_timeout')})")
    p.add_argument("--idle-timeout", dest="idle_session_timeout", type=float,
                   metavar="SECONDS",
                   help="close sessions with no control traffic and no data moving for "
                        "this long; a stalled transfer counts as idle (default: never)")
    p.add_argument("--max-window", type=parse_size, metavar="SIZE",
                   help="largest SSH receive window of a data channel, in bytes (suffix K, "
                        f"M or G; default {_shown('max_window', SSHOptions)}): above "
                        f"{_shown('max_window', SSHOptions)} the window doubles while that "
                        "makes the channel faster (fast links with a long round trip, SSH "
                        "servers that cope with a large window, e.g. HPN-SSH); below, it is "
                        "the window")
    p.add_argument("--data-memory", type=parse_data_memory, metavar="SIZE",
                   help="the most all data channels' SSH windows hold together (K, M or G, "
                        f"or 'none'; default {_shown('data_memory', SSHOptions)}): past it "
                        "new channels get smaller windows and windows do not grow")
    p.add_argument("--max-sessions", type=int, metavar="N",
                   help="FTP sessions served at once; more clients get 421 (default "
                        f"{_shown('max_sessions')})")
    p.add_argument("--max-sessions-per-client", type=int, metavar="N",
                   help="FTP sessions served at once for one client address; more get "
                        f"421 (default {_shown('max_sessions_per_client')})")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                   help="on SIGINT/SIGTERM, let running sessions finish for up to this "
                        f"long (default {DEFAULT_GRACE:g}); a second signal stops at once")
    p.add_argument("--stats", action="store_true",
                   help="print a summary (sessions, transfers, bytes, errors) at exit")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                   help="log lines as text (default) or one JSON object per line")
    p.add_argument("-v", dest="verbose", action="count", default=0,
                   help="more logging, as ssh: -v connection and authentication steps and "
                        "rewriting decisions, -vv protocol lines, -vvv asyncssh debugging")
    p.add_argument("-q", dest="quiet", action="store_true", help="only errors")
    p.add_argument("--version", action="store_true", help="print version and exit")
    return p


# ---------------------------------------------------------------- -> Config

def _number(opts: dict[str, str], key: str, kind: type[int] | type[float]) -> Any:
    """A numeric -o value, or None when not given; a ConfigError naming the option."""
    if key not in opts:
        return None
    try:
        return kind(opts[key])
    except ValueError:
        raise ConfigError(f"bad option value: {SSH_OPTIONS[key]} must be "
                          f"{'an integer' if kind is int else 'a number'} "
                          f"(got {opts[key]!r})") from None


def config_from_args(args: argparse.Namespace,
                     extra_forwards: tuple[ForwardSpec, ...] = ()) -> Config:
    """The Config of parsed arguments (``extra_forwards``: a config file's tunnels).

    Precedence, as in ssh: -p / -l / -i, then the destination's port and user,
    then ``-o`` (first value wins), then the defaults (Config's and SSHOptions').
    """
    if not args.destination:
        raise ConfigError("missing SSH destination ([user@]ssh_host)")
    if (not args.forwards and not args.remote_forwards and not extra_forwards
            and not args.ftp_proxies and not args.sftp_servers):
        raise ConfigError("missing -L [bind_address:]port:ftp_host:ftp_port, "
                          "-R ftp/[listen_address:]port:ftp_host:ftp_port, "
                          "--ftp-proxy [bind_address:]port or --sftp-server "
                          "[bind_address:]port")
    grace = getattr(args, "grace", DEFAULT_GRACE)
    if not math.isfinite(grace) or grace < 0:
        raise ConfigError(f"--grace must be a finite number of seconds >= 0 (got {grace})")
    opts = parse_ssh_options(args.options)
    dest = parse_destination(args.destination)
    identities = args.identity or ([opts["identityfile"]] if "identityfile" in opts else None)
    if "loglevel" in opts and opts["loglevel"].lower() not in LOG_LEVELS:
        raise ConfigError(f"bad option value: LogLevel must be one of "
                          f"{', '.join(k.upper() for k in LOG_LEVELS)} (got {opts['loglevel']!r})")
    strict = opts.get("stricthostkeychecking")
    strict_mode = _choice("StrictHostKeyChecking",
                          strict and _STRICT_ALIASES.get(strict.lower(), strict),
                          STRICT_HOST_KEY_CHECKING)
    family = _choice("AddressFamily", args.address_family or opts.get("addressfamily") or None,
                     ADDRESS_FAMILIES)
    preferred = opts.get("preferredauthentications")
    proxy_jump = args.jump or opts.get("proxyjump")
    if proxy_jump:
        parse_jump_hosts(proxy_jump)  # refuse a bad one now, as an option error
    limits = _given(max_window=args.max_window, data_memory=args.data_memory)
    if limits.get("data_memory") == "none":
        limits["data_memory"] = None  # no limit
    try:
        if args.port is not None:
            port = args.port
        elif dest.port is not None:
            port = dest.port
        else:
            port = _number(opts, "port", int)
        ssh = SSHOptions(
            host=dest.host, port=port,
            username=args.user or dest.user or opts.get("user") or None,
            client_keys=tuple(identities) if identities else None,
            known_hosts=opts.get("userknownhostsfile"),
            global_known_hosts=opts.get("globalknownhostsfile"),
            hash_known_hosts=yes_no(opts, "hashknownhosts"),
            config_files=(args.config_file,) if args.config_file else None,
            ciphers=_algorithm_list(opts, "ciphers"),
            macs=_algorithm_list(opts, "macs"),
            kex_algorithms=_algorithm_list(opts, "kexalgorithms"),
            host_key_algorithms=_algorithm_list(opts, "hostkeyalgorithms"),
            host_key_alias=opts.get("hostkeyalias") or None,
            keepalive_interval=_number(opts, "serveraliveinterval", float),
            keepalive_count_max=_number(opts, "serveralivecountmax", int),
            connect_timeout=_number(opts, "connecttimeout", float),
            proxy_jump=proxy_jump,
            identities_only=yes_no(opts, "identitiesonly"),
            pubkey_auth=yes_no(opts, "pubkeyauthentication"),
            password_auth=yes_no(opts, "passwordauthentication"),
            kbdint_auth=_first_given(yes_no(opts, "kbdinteractiveauthentication"),
                                     yes_no(opts, "challengeresponseauthentication")),
            identity_agent=opts.get("identityagent") or None,
            ssh_config_lines=ssh_config_lines(opts),
            preferred_auth=(tuple(m.strip() for m in preferred.split(",") if m.strip())
                            if preferred else None),
            compression=True if args.compression else yes_no(opts, "compression"),
            address_family=family,
            **_given(strict_host_key_checking=strict_mode,
                     batch_mode=yes_no(opts, "batchmode")),
            **limits,
        )
    except ValueError as exc:
        raise ConfigError(f"bad option value: {exc}") from None
    active_address = (default_of("active_address") if args.active_address is None
                      else args.active_address)
    return Config(
        ssh=ssh,
        forwards=(*extra_forwards,
                  *(parse_forward(spec, gateway=args.gateway) for spec in args.forwards),
                  *(parse_forward(spec, "remote") for spec in args.remote_forwards),
                  *(parse_proxy_listen(spec, gateway=args.gateway)
                    for spec in args.ftp_proxies),
                  *(parse_sftp_listen(spec, gateway=args.gateway)
                    for spec in args.sftp_servers)),
        allowed_destinations=tuple(args.allow_destination),
        allowed_clients=tuple(args.allow_client),
        remote_listen_host=remote_listen_host(args.remote_listen_address, active_address),
        trust_pasv_address=bool(args.pasv_allow),
        pasv_allowed_hosts=tuple(args.pasv_allow),
        **_given(data_bind_host="0.0.0.0" if args.gateway else None,
                 exit_on_forward_failure=yes_no(opts, "exitonforwardfailure"),
                 **{name: getattr(args, name) for name in CONFIG_OPTIONS}),
    )


_Word = TypeVar("_Word", bound=str)


def _choice(name: str, given: str | None, choices: tuple[_Word, ...]) -> _Word | None:
    """An -o value of a vocabulary, in any case (None: not given)."""
    if given is None:
        return None
    for choice in choices:
        if choice == given.lower():
            return choice
    raise ConfigError(f"bad option value: {name} must be {one_of(choices)} (got {given!r})")


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that are not None (None: not given, the default applies)."""
    return {name: value for name, value in values.items() if value is not None}


def _first_given(*values: bool | None) -> bool | None:
    return next((v for v in values if v is not None), None)


def _algorithm_list(opts: dict[str, str], key: str) -> tuple[str, ...] | None:
    """An -o algorithm list (comma-separated, as ssh_config's); None when not given."""
    if key not in opts:
        return None
    names = tuple(name.strip() for name in opts[key].split(",") if name.strip())
    if not names:
        raise ConfigError(f"bad option value: {SSH_OPTIONS[key]} must name at least one "
                          "algorithm")
    return names


def remote_listen_host(given: str | None, active_address: str) -> str:
    """Where the SSH server listens for active data: as given, else where the FTP
    server can reach it: the --active-address when that is not loopback (a gateway;
    the SSH server needs GatewayPorts clientspecified), else 127.0.0.1."""
    if given is not None:
        return "127.0.0.1" if given == "localhost" else given  # as ssh -R's bind address
    try:
        loopback = ipaddress.ip_address(active_address).is_loopback
    except ValueError:
        loopback = True
    return "127.0.0.1" if loopback else active_address

