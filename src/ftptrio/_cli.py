"""Command line: OpenSSH-like options, logging setup, runs serve() under trio.run."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
from typing import Sequence

import trio

from ._config import Config, ForwardSpec, SSHOptions
from ._datachannel import TransferStats
from ._errors import ConfigError, FtptrioError

log = logging.getLogger("ftptrio")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SSH = 3  # SSH connection or authentication failed
EXIT_BIND = 4  # a local listener could not be bound

DESCRIPTION = """\
Forward FTP through one SSH connection, data channels included.

ftptrio listens locally for FTP clients, carries each control connection to the
FTP server through SSH (direct-tcpip) and rewrites PASV/EPSV replies and
PORT/EPRT commands so that every data connection goes through SSH as well.
"""

EPILOG = """\
examples:
  ftptrio -L 2121:localhost:21 user@sshhost
      FTP server runs on sshhost; point your client at ftp://127.0.0.1:2121
  ftptrio -L 2121:ftp.internal:21 -p 2222 -i ~/.ssh/id_ed25519 gw.example.net
      FTP server behind an SSH gateway (active mode: --active-address must be
      the SSH host's address as the FTP server sees it)
  ftptrio -R ftp/2121:localhost:21 user@sshhost
      remote tunnel: FTP clients on sshhost use ftp://127.0.0.1:2121 to reach
      the FTP server on this machine
  ftptrio --config tunnels.toml
      SSH host, tunnels and options from a TOML file (see README)
  ftptrio demo
      self-contained demonstration with embedded SSH and FTP servers

exit codes: 0 clean exit, 2 usage or option error, 3 SSH connection failed,
            4 local port could not be bound, 1 anything else.
"""

_SSH_OPTIONS = {"port", "user", "identityfile", "userknownhostsfile", "proxyjump",
                "stricthostkeychecking", "serveraliveinterval", "serveralivecountmax",
                "ciphers", "connecttimeout"}


def parse_forward(spec: str, direction: str = "local") -> ForwardSpec:
    """``[ftp/][bind_address:]port:ftp_host:ftp_port`` (IPv6 in brackets).

    For remote (-R) tunnels bind_address is the listen address on the SSH server.
    """
    flag = "-R" if direction == "remote" else "-L"
    if not isinstance(spec, str):
        raise ConfigError(f"bad {flag} {spec!r}: expected a string")
    text = spec[4:] if spec.lower().startswith("ftp/") else spec
    parts = re.findall(r"\[[^\]]*\]|[^:]+", text)
    parts = [p[1:-1] if p.startswith("[") else p for p in parts]
    if len(parts) == 3:
        bind, (port, host, hostport) = "127.0.0.1", parts
    elif len(parts) == 4:
        bind, port, host, hostport = parts
        bind = {"*": "0.0.0.0", "localhost": "127.0.0.1"}.get(bind, bind)
    else:
        raise ConfigError(f"bad {flag} {spec!r}: expected "
                          "[bind_address:]port:ftp_host:ftp_port")
    try:
        return ForwardSpec(ftp_host=host, ftp_port=int(hostport), listen_host=bind,
                           listen_port=int(port), direction=direction)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(f"bad {flag} {spec!r}: ports must be numbers") from None
    except ConfigError as exc:
        raise ConfigError(f"bad {flag} {spec!r}: {exc}") from None


class _RaisingParser(argparse.ArgumentParser):
    """For --config files: a bad value is a ConfigError, not a usage message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def build_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    p = (_RaisingParser if raise_errors else argparse.ArgumentParser)(
        prog="ftptrio", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("destination", nargs="?", metavar="[user@]ssh_host",
                   help="SSH server to forward through")
    p.add_argument("-L", dest="forwards", action="append", default=[],
                   metavar="[bind_address:]port:ftp_host:ftp_port",
                   help="listen on port (default bind 127.0.0.1) and forward FTP sessions "
                        "to ftp_host:ftp_port as seen from the SSH server; repeatable")
    p.add_argument("-R", dest="remote_forwards", action="append", default=[],
                   metavar="ftp/[listen_address:]port:ftp_host:ftp_port",
                   help="remote tunnel: the SSH server listens on port (default "
                        "127.0.0.1) and ftptrio relays its FTP sessions to ftp_host:ftp_port "
                        "as seen from this machine; repeatable, may be mixed with -L")
    p.add_argument("--config", dest="config", metavar="FILE",
                   help="TOML file naming the SSH host, its tunnels and options (see README); "
                        "command-line options add to it (single values: command line wins)")
    p.add_argument("-p", dest="port", type=int, help="SSH server port (default 22)")
    p.add_argument("-l", dest="user", help="SSH user name")
    p.add_argument("-i", dest="identity", action="append",
                   help="private key file for SSH authentication; repeatable")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="Option=value",
                   help="ssh-style option: Port, User, IdentityFile, UserKnownHostsFile, "
                        "StrictHostKeyChecking (yes|accept-new|no), ServerAliveInterval, "
                        "ServerAliveCountMax, Ciphers, ConnectTimeout, ProxyJump")
    p.add_argument("-F", dest="config_file", help="ssh_config file (default ~/.ssh/config)")
    p.add_argument("-J", dest="jump", metavar="[user@]host[:port]",
                   help="connect through this jump host (ssh -J / ProxyJump; comma-separated "
                        "for several)")
    p.add_argument("-g", dest="gateway", action="store_true",
                   help="let other hosts connect to data listeners (binds 0.0.0.0)")
    p.add_argument("-N", action="store_true", help="accepted for ssh compatibility (no-op)")
    p.add_argument("--active-mode", choices=["remote-forward", "passive"],
                   default="remote-forward",
                   help="PORT/EPRT handling: remote-forward (tcpip-forward on the SSH "
                        "server, default) or passive (convert to PASV/EPSV; no remote "
                        "forwarding needed)")
    p.add_argument("--active-address", default="127.0.0.1", metavar="ADDRESS",
                   help="address the FTP server connects to for active data: the SSH "
                        "host as the FTP server sees it (default 127.0.0.1)")
    p.add_argument("--remote-listen-address", default="127.0.0.1", metavar="ADDRESS",
                   help="where the SSH server listens for active-mode data (tcpip-forward); "
                        "non-loopback needs GatewayPorts on the SSH server (default 127.0.0.1)")
    p.add_argument("--remote-reply-address", default=None, metavar="ADDRESS",
                   help="remote (-R) tunnels: address written into rewritten 227 replies, "
                        "for clients that reach the SSH host under another address "
                        "(default: the -R listen address, or 127.0.0.1 for a wildcard)")
    p.add_argument("--trust-pasv-address", dest="pasv_allow", action="append", default=[],
                   metavar="ADDRESS",
                   help="let passive data go to ADDRESS when a 227 reply names it "
                        "(repeatable allow-list); by default data always goes to the FTP "
                        "host of the control connection")
    p.add_argument("--auth-tls", choices=["refuse", "passthrough"], default="refuse",
                   help="AUTH TLS/SSL: refuse (534, default; SSH already encrypts) or "
                        "passthrough (opaque, data channels then cannot be forwarded)")
    p.add_argument("--data-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="close an unused data listener after this long (default 60)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="on SIGINT/SIGTERM, let running sessions finish for up to this "
                        "long (default 10); a second signal stops at once")
    p.add_argument("--stats", action="store_true",
                   help="print a summary (sessions, transfers, bytes, errors) at exit")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="log lines as text (default) or one JSON object per line")
    p.add_argument("-v", dest="verbose", action="count", default=0,
                   help="more logging (-v: rewriting decisions, -vv: protocol lines)")
    p.add_argument("-q", dest="quiet", action="store_true", help="only errors")
    p.add_argument("--version", action="store_true", help="print version and exit")
    return p


def _apply_ssh_options(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            key, _, value = pair.partition(" ")
        key = key.strip().lower()
        if key not in _SSH_OPTIONS:
            raise ConfigError(f"unsupported -o option {key!r}; supported: "
                              + ", ".join(sorted(_SSH_OPTIONS)))
        out.setdefault(key, value.strip())  # first value wins, as in ssh
    return out


def config_from_args(args: argparse.Namespace,
                     extra_forwards: tuple[ForwardSpec, ...] = ()) -> Config:
    if not args.destination:
        raise ConfigError("missing SSH destination ([user@]ssh_host)")
    if not args.forwards and not args.remote_forwards and not extra_forwards:
        raise ConfigError("missing -L [bind_address:]port:ftp_host:ftp_port "
                          "or -R ftp/[listen_address:]port:ftp_host:ftp_port")
    opts = _apply_ssh_options(args.options)
    user, _, host = args.destination.rpartition("@")
    identities = args.identity or ([opts["identityfile"]] if "identityfile" in opts else None)
    strict = opts.get("stricthostkeychecking", "yes").lower()
    strict = {"ask": "yes", "true": "yes", "false": "no", "off": "no"}.get(strict, strict)
    try:
        port = args.port if args.port is not None else (
            int(opts["port"]) if "port" in opts else None)
        ssh = SSHOptions(
            host=host, port=port, username=args.user or user or opts.get("user") or None,
            client_keys=tuple(identities) if identities else None,
            known_hosts=opts.get("userknownhostsfile"),
            strict_host_key_checking=strict,  # type: ignore[arg-type]
            config_files=(args.config_file,) if args.config_file else None,
            ciphers=tuple(opts["ciphers"].split(",")) if "ciphers" in opts else None,
            keepalive_interval=float(opts.get("serveraliveinterval", 15)),
            keepalive_count_max=int(opts.get("serveralivecountmax", 3)),
            connect_timeout=float(opts.get("connecttimeout", 15)),
            proxy_jump=args.jump or opts.get("proxyjump"),
        )
    except ValueError as exc:
        raise ConfigError(f"bad option value: {exc}") from None
    return Config(
        ssh=ssh,
        forwards=(*extra_forwards, *(parse_forward(spec) for spec in args.forwards),
                  *(parse_forward(spec, "remote") for spec in args.remote_forwards)),
        remote_reply_address=args.remote_reply_address,
        active_mode=args.active_mode,
        active_address=args.active_address,
        remote_listen_host=args.remote_listen_address,
        trust_pasv_address=bool(args.pasv_allow),
        pasv_allowed_hosts=tuple(args.pasv_allow),
        data_bind_host="0.0.0.0" if args.gateway else "127.0.0.1",
        auth_tls=args.auth_tls,
        data_idle_timeout=args.data_timeout,
    )


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ transfer fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if hasattr(record, "transfer"):
            entry["transfer"] = record.transfer
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(verbose: int, quiet: bool, log_format: str = "text") -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if verbose < 2:  # protocol-line tracing only at -vv
        logging.getLogger("ftptrio._control").setLevel(max(level, logging.INFO)
                                                        if verbose < 1 else logging.DEBUG)
    if verbose >= 4:
        from ._ssh import set_debug_level

        set_debug_level(2)
    for noisy in ("asyncssh", "trio_asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)


async def _run(config: Config, grace: float, stats_out: list) -> None:
    from ._server import serve

    async with trio.open_nursery() as nursery:
        forwarder = await nursery.start(serve, config)
        stats_out.append(forwarder.stats)
        for host, port in forwarder.addresses:
            log.info("ready: FTP clients connect to %s:%d", host, port)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                break
            log.info("received %s: no new sessions; waiting up to %.0f s for %d running "
                     "session(s) (signal again to stop at once)", signal.Signals(signum).name,
                     grace, forwarder.stats.sessions_active)
            forwarder.stop_accepting()
            async with trio.open_nursery() as waiters:

                async def second_signal() -> None:
                    async for _ in signals:
                        log.info("second signal: stopping now")
                        waiters.cancel_scope.cancel()

                async def sessions_done() -> None:
                    with trio.move_on_after(grace):
                        await forwarder.wait_idle()
                    waiters.cancel_scope.cancel()

                waiters.start_soon(second_signal)
                waiters.start_soon(sessions_done)
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from ._demo import main as demo_main

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        return demo_main()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import IMPLEMENTATION, __version__

        print(f"ftptrio {__version__} (rewriter: {IMPLEMENTATION})")
        return EXIT_OK
    setup_logging(args.verbose, args.quiet, args.log_format)
    try:
        if args.config:
            from ._configfile import load_config

            config, args = load_config(args.config, argv)
            setup_logging(args.verbose, args.quiet, args.log_format)
        else:
            config = config_from_args(args)
    except ConfigError as exc:
        print(f"ftptrio: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stats: list = []
    try:
        trio.run(_run, config, args.grace, stats)
    except BaseException as exc:  # noqa: BLE001 - turned into one clear line
        leaf = _leaf(exc)
        if isinstance(leaf, KeyboardInterrupt):
            return EXIT_OK
        if isinstance(leaf, FtptrioError):
            print(f"ftptrio: {leaf}", file=sys.stderr)
            return EXIT_SSH
        if isinstance(leaf, OSError):
            print(f"ftptrio: cannot listen: {leaf}", file=sys.stderr)
            return EXIT_BIND
        raise
    finally:
        if args.stats and stats:
            print(format_stats(stats[0]), file=sys.stderr)
    return EXIT_OK


def format_stats(stats: "TransferStats") -> str:
    modes = ", ".join(f"{mode} {count}" for mode, count in sorted(stats.by_mode.items()))
    return (f"ftptrio stats: {stats.sessions} sessions, {stats.transfers} transfers "
            f"({modes or 'none'}), {stats.transfer_errors} transfer errors, "
            f"{stats.bytes_to_client:,} bytes to clients, "
            f"{stats.bytes_to_server:,} bytes to servers")


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
