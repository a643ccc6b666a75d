"""Command line: OpenSSH-like options, logging setup, runs serve() under trio.run."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import sys
import tempfile
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator, Sequence

import trio

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10 (trio depends on it)
    from exceptiongroup import BaseExceptionGroup

from . import _options
from ._config import Config
from ._errors import BindError, ConfigError, FtptrioError, TunnelError
from ._stats import TransferStats
from ._text import visible

if TYPE_CHECKING:
    from ._server import Forwarder

log = logging.getLogger("ftptrio")

EXIT_OK = 0
EXIT_OTHER = 1  # any other error
EXIT_USAGE = 2  # a bad option, argument or config file
EXIT_SSH = 3  # SSH connection or authentication failed
EXIT_BIND = 4  # a local listener could not be bound

#: exit code by error class, most specific first
EXIT_CODES: tuple[tuple[type[FtptrioError], int], ...] = (
    (ConfigError, EXIT_USAGE),
    (TunnelError, EXIT_SSH),
    (BindError, EXIT_BIND),
    (FtptrioError, EXIT_OTHER),
)

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

def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (the grammar is _options.build_parser's)."""
    return _options.build_parser(description=DESCRIPTION, epilog=EPILOG)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, milliseconds), level, logger, message
    (+ transfer fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}",
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if hasattr(record, "transfer"):
            entry["transfer"] = record.transfer
        if hasattr(record, "stats"):
            entry["stats"] = record.stats
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class VisibleFormatter(logging.Formatter):
    """Text logs: control characters from peers shown as escapes (``\033``), never
    sent to the terminal raw."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record), newlines=True)


def setup_logging(verbose: int, quiet: bool, log_format: _options.LogFormat = "text",
                  log_file: str | None = None) -> None:
    """Levels as ssh's: -v connection and authentication steps (keys tried, methods
    the server offers, host-key fingerprint, cipher) and rewriting decisions; -vv
    also the protocol lines of every session, with times in milliseconds; -vvv
    asyncssh's own debugging.
    ``log_file`` (-E): append there instead of standard error."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO)
    if log_file:  # as ssh -E: created 0600 (at -vv it holds user names and paths)
        os.close(os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600))
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file
                                else logging.StreamHandler())
    # from -vv on, text times carry milliseconds: a trace of where a transfer's time goes
    clock = "%(asctime)s.%(msecs)03d" if verbose >= 2 else "%(asctime)s"
    handler.setFormatter(JSONFormatter() if log_format == "json" else VisibleFormatter(
        f"{clock} %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # protocol lines (client> / server<) only from -vv on
    logging.getLogger("ftptrio._control.lines").setLevel(
        logging.DEBUG if verbose >= 2 else max(level, logging.INFO))
    if verbose >= 4:
        from ._ssh import set_debug_level

        set_debug_level(2)
    for noisy in ("asyncssh", "trio_asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)


def notify_systemd_ready() -> None:
    """Tell systemd (Type=notify) that the listeners are up: READY=1 to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(b"READY=1\nSTATUS=forwarding FTP\n")
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)


def write_pid_file(path: str) -> None:
    """--pid-file: this process's id, written whole: a new file of a random name
    (O_EXCL, never through a symbolic link planted in the directory) renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=".ftptrio-pid-", dir=os.path.dirname(path) or ".")
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


def remove_pid_file(path: str) -> None:
    """Remove --pid-file if it is still this process's own (a regular file naming this
    process: not a newer instance's, not a symbolic link someone put there)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass


async def _run(config: Config, grace: float, stats_out: list[TransferStats],
               background: Callable[[], None] | None = None,
               pid_file: str | None = None) -> None:
    """Serve until SIGINT/SIGTERM. ``background`` (-f) is called once ready, then
    ``pid_file`` is written (removed again at exit)."""
    try:
        await _serve_until_signalled(config, grace, stats_out, background, pid_file)
    finally:
        if pid_file:
            remove_pid_file(pid_file)


async def _serve_until_signalled(config: Config, grace: float,
                                 stats_out: list[TransferStats],
                                 background: Callable[[], None] | None,
                                 pid_file: str | None) -> None:
    # SIGINT/SIGTERM are received from the start, never raised as KeyboardInterrupt:
    # Ctrl-C at a startup prompt then cancels the start (the prompt restores the
    # terminal's echo) wherever the main thread happens to be running
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            forwarder = await _start_unless_signalled(nursery, config, signals)
            if forwarder is not None:
                stats_out.append(forwarder.stats)
                with _reopen_on_sighup(config, forwarder, nursery):
                    await _serve_until_signal(config, grace, forwarder, signals,
                                              background, pid_file)
            nursery.cancel_scope.cancel()
    # stopping: more signals while the last connections close must not kill the
    # process with a signal exit status (the receiver above restored the default)
    for signum in (signal.SIGINT, signal.SIGTERM) + (
            (signal.SIGHUP,) if config.xferlog else ()):
        signal.signal(signum, signal.SIG_IGN)


async def _start_unless_signalled(nursery: trio.Nursery, config: Config,
                                  signals: AsyncIterator[int]) -> Forwarder | None:
    """Start serving in ``nursery``; None when a signal came first (the start is
    cancelled: prompts end, nothing is left running)."""
    from ._server import serve

    started: list[Forwarder] = []
    async with trio.open_nursery() as starting:

        async def stop_on_signal() -> None:
            async for signum in signals:
                log.debug("received %s while starting: stopping",
                          signal.Signals(signum).name)
                starting.cancel_scope.cancel()
                return

        starting.start_soon(stop_on_signal)
        started.append(await nursery.start(serve, config))
        starting.cancel_scope.cancel()
    return started[0] if started else None


async def _serve_until_signal(config: Config, grace: float, forwarder: Forwarder,
                              signals: AsyncIterator[int],
                              background: Callable[[], None] | None,
                              pid_file: str | None) -> None:
    """Say "ready", serve until the first signal, then let sessions finish for
    ``grace`` seconds (a second signal stops at once)."""
    for forward, (host, port) in zip(config.forwards, forwarder.addresses):
        where = (f" on the SSH server {config.ssh.host}"
                 if forward.direction == "remote" else "")
        log.info("ready: FTP clients connect to %s:%d%s", host, port, where)
    notify_systemd_ready()
    if background is not None:
        background()
    if pid_file:
        write_pid_file(pid_file)
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


@contextlib.contextmanager
def _reopen_on_sighup(config: Config, forwarder: Forwarder,
                      nursery: trio.Nursery) -> Iterator[None]:
    """--xferlog: SIGHUP (logrotate) reopens the file, caught from the moment this is
    entered (before "ready") until it is left."""
    if not config.xferlog:
        yield
        return
    with trio.open_signal_receiver(signal.SIGHUP) as hangups:

        async def reopen() -> None:
            async for _ in hangups:
                forwarder.reopen_logs()

        nursery.start_soon(reopen)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from ._demo import main as demo_main

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        return demo_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import IMPLEMENTATION, __version__

        print(f"ftptrio {__version__} (rewriter: {IMPLEMENTATION})")
        return EXIT_OK
    try:
        setup_logging(*_options.log_verbosity(args), args.log_format, args.log_file)
        if args.config:
            from ._configfile import load_config

            config, args = load_config(args.config, argv)
            setup_logging(*_options.log_verbosity(args), args.log_format, args.log_file)
        else:
            config = _options.config_from_args(args)
    except FtptrioError as exc:
        print(f"ftptrio: {exc}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:  # -E log file
        print(f"ftptrio: cannot open log file: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stats: list[TransferStats] = []
    background: Callable[[], None] | None = None
    if args.background:
        forked = _fork_to_background(keep_stderr=bool(args.verbose) and not args.log_file)
        if isinstance(forked, int):
            return forked  # the parent: the child's fate
        background = forked
    try:
        trio.run(_run, config, args.grace, stats, background, args.pid_file)
    except BaseException as exc:  # noqa: BLE001 - turned into one clear line
        leaf = _leaf(exc)
        if isinstance(leaf, KeyboardInterrupt):
            return EXIT_OK
        if isinstance(leaf, FtptrioError):
            print(f"ftptrio: {visible(str(leaf), newlines=True)}", file=sys.stderr)
            return exit_code(leaf)
        if isinstance(leaf, OSError):  # the environment, not a bug: one line
            print(f"ftptrio: {visible(str(leaf), newlines=True)}", file=sys.stderr)
            return EXIT_OTHER
        raise
    finally:
        if args.stats and stats:
            if args.log_format == "json":  # the stream stays one JSON object per line
                log.info("%s", format_stats(stats[0]), extra={"stats": stats_dict(stats[0])})
            else:
                print(format_stats(stats[0]), file=sys.stderr)
    return EXIT_OK


def _fork_to_background(keep_stderr: bool) -> int | Callable[[], None]:
    """-f as ssh does it: the command returns once authentication is done and the
    listeners are up, and the forwarder goes on in the background.

    Forks *before* trio starts (forking a running trio/asyncio process is unsafe):
    the parent waits on a pipe and exits 0 when the child says "ready", or with
    the child's exit code if it fails first. The child prompts on the terminal
    if it must, then detaches (new session; stdin and stdout from/to /dev/null,
    stderr too unless -v without -E) through the returned function.
    Returns the parent's exit code, or the child's detach function.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            ready = pipe.read(1)
        if ready:
            return EXIT_OK
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) or EXIT_OTHER
    os.close(read_end)

    def detach() -> None:
        log.info("going to background (pid %d)", os.getpid())
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1) if keep_stderr else (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        os.write(write_end, b"1")
        os.close(write_end)

    return detach


def exit_code(exc: FtptrioError) -> int:
    """The exit code of an error: by its class (see EXIT_CODES)."""
    return next(code for cls, code in EXIT_CODES if isinstance(exc, cls))


def stats_dict(stats: "TransferStats") -> dict[str, object]:
    """--stats as JSON fields (--log-format json)."""
    return {"sessions": stats.sessions, "transfers": stats.transfers,
            "transfers_refused": stats.transfers_refused,
            "transfer_errors": stats.transfer_errors, "by_mode": dict(stats.by_mode),
            "bytes_to_client": stats.bytes_to_client, "bytes_to_server": stats.bytes_to_server}


def format_stats(stats: "TransferStats") -> str:
    modes = ", ".join(f"{mode} {count}" for mode, count in sorted(stats.by_mode.items()))
    return (f"ftptrio stats: {stats.sessions} sessions, {stats.transfers} transfers "
            f"({modes or 'none'}), {stats.transfers_refused} refused, "
            f"{stats.transfer_errors} transfer errors, "
            f"{stats.bytes_to_client:,} bytes to clients, "
            f"{stats.bytes_to_server:,} bytes to servers")


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
