"""The FTP server front end of ``--sftp-server``: ftptrio answers an FTP client itself
and serves its session from one SFTP session on the SSH host (``_seams.RemoteFiles``).

RFC 959 with RFC 1123's corrections, 2428 (EPSV/EPRT), 3659 (SIZE, MDTM, MLST/MLSD,
REST STREAM) and 2389 (FEAT, OPTS), as real clients use them. The control connection
is read all the time: while a transfer runs, ABOR cancels it, STAT and NOOP are
answered at once, every other command waits its turn (clients pipeline). Data
connections are ftptrio's own: PASV/EPSV listen on the control connection's local
address (one-shot, only the control peer's address is accepted), PORT/EPRT connect
only to the control peer's own address and a port >= 1024. Transfers stream through
``read_file``/``write_file``; TYPE A converts line ends both ways.

A second USER after a login is refused (``530 Can't change to another user.``, as
vsftpd): a login is the SSH login of its files, which a session keeps to its end.
No asyncssh here: the SSH side is behind ``RemoteFiles``.
"""

from __future__ import annotations

import collections
import logging
import posixpath
import socket
import stat
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Iterable

import trio

from . import _scan
from ._errors import BadDataAddress, LineTooLong
from ._netaddr import same_address, unmapped
from ._seams import (RemoteFileError, RemoteFileInfo, RemoteFiles, RemoteReader, RemoteWriter,
                     WriteMode)
from ._text import visible


class LoginFailed(Exception):
    """The login was refused; ``str()`` is the text of the ``530`` reply."""


class UseFtpForwarding(Exception):
    """Raised by the login callback: hand this client to FTP forwarding (fallback)."""


@dataclass(frozen=True, slots=True)
class Handover:
    """A client handed back to the caller for FTP forwarding (its stream stays open)."""

    user: bytes  # the USER argument as sent
    password: bytes  # the PASS argument as sent (b"" if none)
    rest: bytes  # client bytes received after the PASS line, unprocessed


#: (user, password) -> the session's files; raises LoginFailed, UseFtpForwarding or
#: RemoteFileError("lost", ...). Both are the USER/PASS arguments decoded as UTF-8
#: (undecodable bytes replaced); ``Handover`` keeps the bytes as sent.
LoginCallback = Callable[[str, str], Awaitable[RemoteFiles]]


@dataclass(frozen=True, slots=True)
class FrontSettings:
    """How the front end treats its clients."""

    #: longest command line accepted (then 500 and the session closes)
    max_line: int = 2048
    #: seconds from connecting to a successful login (then 421)
    login_timeout: float = 60.0
    #: seconds without a command, no transfer running, before 421 (None: no limit)
    idle_timeout: float | None = 300.0
    #: seconds before a failed login's 530 (vsftpd's delay_failed_login)
    failed_login_delay: float = 1.0
    #: failed logins before 421 and close
    max_login_failures: int = 3
    #: the address data listeners bind to (None: the control connection's local one)
    data_bind_host: str | None = None
    #: seconds to wait for a data connection to be made (then 425)
    data_timeout: float = 30.0
    #: commands read ahead of the one being served (reading pauses beyond)
    max_pending_commands: int = 64
    #: bytes per read of a data connection
    chunk_size: int = 65536
    #: seconds a data connection may move no byte before its transfer fails (426)
    stall_timeout: float = 300.0
    #: the 220 greeting's text
    greeting: str = "ftptrio FTP server (files served by SFTP)"


FEATURES = ("EPRT", "EPSV", "MDTM", "MLST type*;size*;modify*;perm*;unix.mode*;", "PASV",
            "REST STREAM", "SIZE", "TVFS", "UTF8")
MLST_FACTS = ("type", "size", "modify", "perm", "unix.mode")
#: commands a client may send before it logged in
_BEFORE_LOGIN = {b"USER", b"PASS", b"QUIT", b"FEAT", b"SYST", b"OPTS", b"NOOP", b"HELP",
                 b"AUTH"}
#: commands whose argument is a path (a NUL or CR in it: 553)
_PATH_COMMANDS = {b"CWD", b"XCWD", b"LIST", b"NLST", b"MLSD", b"MLST", b"RETR", b"STOR",
                  b"APPE", b"STOU", b"SIZE", b"MDTM", b"DELE", b"MKD", b"XMKD", b"RMD",
                  b"XRMD", b"RNFR", b"RNTO"}
#: a command line with one of these flags is refused
_BAD_LINE = _scan.FLAG_NUL | _scan.FLAG_BARE_CR | _scan.FLAG_BAD_TELNET
_TRANSFER_COMMANDS = {b"RETR", b"STOR", b"APPE", b"STOU", b"LIST", b"NLST", b"MLSD"}
#: ls -l shows the time of day for files changed within this many seconds, else the year
_RECENT = 182 * 86400
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec")
_ERROR_CODES = {"not-found": 550, "permission": 550, "exists": 550, "bad-name": 553,
                "no-space": 452, "unsupported": 502, "failure": 451, "lost": 421}

_Command = tuple[bytes, bytes, bytes, int]  # (line, VERB, argument, flags)


class _Reply(Exception):
    """A command's final reply, raised from deep inside its handler."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


class _EndSession(Exception):
    """The session ends (its last reply is sent)."""


class _Abort(Exception):
    """A transfer was cut short: ``code`` and ``text`` of its reply."""


# ---------------------------------------------------------------- formats (no I/O)

def to_crlf(chunk: bytes, after_cr: bool) -> bytes:
    """TYPE A download: every LF not preceded by CR becomes CRLF; ``after_cr``: the
    previous chunk ended in CR."""
    out = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if after_cr and chunk.startswith(b"\n"):
        out = out[1:]
    return out


class CrlfToLf:
    """TYPE A upload: CRLF becomes LF, also when CR and LF arrive in different chunks."""

    def __init__(self) -> None:
        self._cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self._cr:
            chunk = b"\r" + chunk
        self._cr = chunk.endswith(b"\r")
        if self._cr:
            chunk = chunk[:-1]
        return chunk.replace(b"\r\n", b"\n")

    def end(self) -> bytes:
        """A CR held back at the end of the upload."""
        held, self._cr = self._cr, False
        return b"\r" if held else b""


def _file_mode(info: RemoteFileInfo) -> int:
    return info.mode if info.mode else stat.S_IFREG | 0o644


def _safe_name(name: str) -> str:
    return visible(name) if "\r" in name or "\n" in name else name


def _gmtime(seconds: float) -> time.struct_time:
    """time.gmtime, the epoch for a time the platform cannot show (an SFTP v4+ server
    may report any 64-bit time)."""
    try:
        return time.gmtime(seconds)
    except (OverflowError, OSError, ValueError):
        return time.gmtime(0)


def ls_line(info: RemoteFileInfo, now: float) -> str:
    """One ``ls -l`` line as vsftpd writes it (UTC; time of day for the last 6 months)."""
    when = _gmtime(info.mtime)
    if now - _RECENT < info.mtime <= now + 3600:
        stamp = f"{_MONTHS[when.tm_mon - 1]} {when.tm_mday:02d} {when.tm_hour:02d}:{when.tm_min:02d}"
    else:
        stamp = f"{_MONTHS[when.tm_mon - 1]} {when.tm_mday:02d}  {when.tm_year}"
    return (f"{stat.filemode(_file_mode(info))} {info.nlink:>4} {info.owner or '0':<8} "
            f"{info.group or '0':<8} {info.size:>12} {stamp} {_safe_name(info.name)}")


def _mlst_perm(info: RemoteFileInfo) -> str:
    mode = _file_mode(info)
    readable, writable = mode & 0o444, mode & 0o222
    if stat.S_ISDIR(mode):
        perm = ("e" if mode & 0o111 else "") + ("l" if readable else "")
        return perm + ("cdfmp" if writable else "")
    return ("r" if readable else "") + ("adfw" if writable else "")


def mlst_facts(info: RemoteFileInfo, facts: Iterable[str] = MLST_FACTS,
               kind: str | None = None) -> str:
    """The facts of one entry (``type=file;size=1;...;``), RFC 3659."""
    mode = _file_mode(info)
    values = {
        "type": kind or ("dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode)
                         else "OS.unix=symlink" if stat.S_ISLNK(mode) else "OS.unix=special"),
        "size": str(info.size),
        "modify": time.strftime("%Y%m%d%H%M%S", _gmtime(info.mtime)),
        "perm": _mlst_perm(info),
        "unix.mode": f"0{stat.S_IMODE(mode):o}",
    }
    names = {"unix.mode": "UNIX.mode"}
    return "".join(f"{names.get(fact, fact)}={values[fact]};" for fact in facts)


def _text_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- data connections

class _Passive:
    """A one-shot data listener (PASV/EPSV): the first connection from the control
    peer's address is kept, others are closed at once and logged."""

    def __init__(self, sock: trio.socket.SocketType, allowed: str,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.sock, self.allowed, self._log = sock, allowed, log
        self.port: int = sock.getsockname()[1]
        self.accepted: trio.socket.SocketType | None = None
        self.ready = trio.Event()
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            try:
                while True:
                    conn, peer = await self.sock.accept()
                    if same_address(str(peer[0]), self.allowed):
                        self.accepted = conn
                        return
                    self._log.warning("refused data connection from %s to port %d "
                                      "(not the client's address %s)", peer[0], self.port,
                                      self.allowed)
                    conn.close()
            except (OSError, trio.ClosedResourceError) as exc:
                if not self.scope.cancel_called:
                    self._log.warning("data listener on port %d failed: %s", self.port, exc)
            finally:
                self.sock.close()
                self.ready.set()

    def take(self) -> trio.socket.SocketType | None:
        sock, self.accepted = self.accepted, None
        return sock

    def close(self) -> None:
        self.scope.cancel()
        self.sock.close()
        if self.accepted is not None:
            self.accepted.close()
            self.accepted = None


@dataclass
class _Transfer:
    """The transfer being served: its cancel scope, bytes so far, and whether ABOR
    cancelled it."""

    scope: trio.CancelScope
    bytes: int = 0
    aborted: bool = False


_END = (b"", b"", b"", -1)  # the client closed: no more commands
_TOO_LONG = (b"", b"", b"", -2)  # a line was too long


# ---------------------------------------------------------------- the session

class _FrontSession:
    def __init__(self, client: trio.SocketStream, login: LoginCallback,
                 log: logging.LoggerAdapter[logging.Logger], settings: FrontSettings,
                 on_transfer: Callable[[dict[str, object]], None],
                 session_id: int | str) -> None:
        self.client, self._login, self._log = client, login, log
        self.settings, self._on_transfer, self.session_id = settings, on_transfer, session_id
        self.peer_host = unmapped(str(client.socket.getpeername()[0]))
        self.local_host = unmapped(str(client.socket.getsockname()[0]))
        self.files: RemoteFiles | None = None
        self.user: bytes | None = None
        self.logged_in_user = ""
        self.cwd = "/"
        self.type = "A"
        self.rest = 0
        #: the REST offset the running transfer uses
        self.rest_used = 0
        self.rename_from: str | None = None
        self.epsv_all = False
        self.mlst_facts: tuple[str, ...] = MLST_FACTS
        self.failures = 0
        self.passive: _Passive | None = None
        self.active: tuple[str, int] | None = None
        #: the running transfer's data connection negotiation
        self._negotiated: tuple[_Passive | None, tuple[str, int] | None] = (None, None)
        self.transfer: _Transfer | None = None
        self._queue: collections.deque[_Command] = collections.deque()
        self._arrived = trio.Event()
        self._drained = trio.Event()
        self._send_lock = trio.StrictFIFOLock()
        self._lines = _scan.LineSplitter(settings.max_line)
        self._reader_scope = trio.CancelScope()
        self._reader_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._session_scope: trio.CancelScope | None = None
        self._login_deadline = trio.current_time() + settings.login_timeout

    # -- replies

    async def reply(self, code: int, text: str) -> None:
        await self.send(_text_bytes(f"{code} {visible(text)}\r\n"))

    async def reply_lines(self, code: int, first: str, lines: Iterable[str], last: str) -> None:
        body = "".join(f" {visible(line)}\r\n" for line in lines)
        await self.send(_text_bytes(f"{code}-{visible(first)}\r\n{body}{code} {visible(last)}\r\n"))

    async def send(self, data: bytes) -> None:
        """Send on the control connection; a client that reads nothing ends its
        session at the login timeout (before a login) or after ``stall_timeout``."""
        if self.files is None:  # (the 421 of the login timeout gets a second)
            deadline = max(self._login_deadline, trio.current_time() + 1.0)
        else:
            deadline = trio.current_time() + self.settings.stall_timeout
        with trio.move_on_at(deadline) as scope:
            async with self._send_lock:
                await self.client.send_all(data)
        if scope.cancelled_caught:
            self._log.info("the client reads no replies; closing")
            raise trio.BrokenResourceError("the client reads no replies")

    # -- reading commands (a task of its own, all the time)

    def _push(self, command: _Command) -> None:
        self._queue.append(command)
        self._arrived.set()

    async def read_commands(self) -> None:
        try:
            with self._reader_scope:
                while True:
                    while len(self._queue) >= self.settings.max_pending_commands:
                        self._drained = trio.Event()
                        await self._drained.wait()
                    data = await self.client.receive_some(4096)
                    if not data:
                        self._client_gone()
                        return
                    try:
                        commands, too_long = self._lines.feed_commands(bytes(data)), False
                    except LineTooLong as exc:
                        commands, too_long = exc.lines, True
                    for command in commands:
                        await self._incoming(command)
                    if too_long:
                        self._push(_TOO_LONG)
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._client_gone()
        finally:
            self._reader_done.set()

    def _client_gone(self) -> None:
        if self.transfer is not None and self._session_scope is not None:
            self._log.info("client closed the control connection during a transfer")
            self._session_scope.cancel()
        self._push(_END)

    async def _incoming(self, command: _Command) -> None:
        """A command read: ABOR, STAT and NOOP during a transfer (nothing queued
        before them) are served now, the rest in order."""
        verb = command[1]
        transfer = self.transfer
        if transfer is not None and not self._queue and not command[3] & _BAD_LINE:
            if verb == b"ABOR":
                transfer.aborted = True
                transfer.scope.cancel()
                return
            if verb == b"NOOP":
                await self.reply(200, "NOOP ok.")
                return
            if verb == b"STAT" and not command[2].strip():
                await self.reply(213, f"Status: {transfer.bytes} bytes transferred so far.")
                return
        self._push(command)

    async def _next_command(self, deadline: float) -> _Command | None:
        """The next command, or None at ``deadline`` (also when commands keep coming)."""
        if trio.current_time() >= deadline:
            return None
        with trio.move_on_at(deadline):
            while not self._queue:
                self._arrived = trio.Event()
                await self._arrived.wait()
            self._drained.set()
            return self._queue.popleft()
        return None

    # -- the session

    async def run(self) -> Handover | None:
        result: Handover | None = None
        try:
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        except OSError:
            pass
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.read_commands)
                with trio.CancelScope() as self._session_scope:
                    result = await self._serve()
                if result is not None:
                    self._reader_scope.cancel()
                    await self._reader_done.wait()
                    rest = b"".join(line for line, _verb, _arg, flags in self._queue
                                    if flags >= 0)
                    result = Handover(result.user, result.password, rest + self._lines.pending)
                self._close_data()
                nursery.cancel_scope.cancel()
        finally:
            self._close_data()
            with trio.CancelScope(shield=True):
                if self.files is not None:
                    try:
                        await self.files.aclose()
                    except RemoteFileError as exc:
                        self._log.info("closing the SFTP session: %s", exc)
                if result is None:
                    await self.client.aclose()
        return result

    async def _serve(self) -> Handover | None:
        login_deadline = self._login_deadline
        try:
            await self.reply(220, self.settings.greeting)
            while True:
                if self.files is None:
                    deadline = login_deadline
                elif self.settings.idle_timeout is None:
                    deadline = float("inf")
                else:
                    deadline = trio.current_time() + self.settings.idle_timeout
                command = await self._next_command(deadline)
                if command is None:
                    what = "login" if self.files is None else "idle"
                    self._log.info("%s timeout; closing", what)
                    await self.reply(421, f"Timeout ({what}); closing control connection.")
                    return None
                _line, verb, arg, flags = command
                if flags == _END[3]:
                    return None
                if flags == _TOO_LONG[3]:
                    await self.reply(500, "Command line too long; closing.")
                    return None
                try:
                    handover = await self._dispatch(verb, arg, flags)
                except _EndSession:
                    return None
                if handover is not None:
                    return handover
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None

    async def _dispatch(self, verb: bytes, arg: bytes, flags: int) -> Handover | None:
        if verb != b"RNTO":  # RNTO follows its RNFR at once (RFC 959), or is 503
            self.rename_from = None
        if flags & _BAD_LINE:
            if verb in _PATH_COMMANDS:
                await self.reply(553, "File name not allowed (NUL or CR).")
            else:
                await self.reply(500, "Invalid characters in command line.")
            return None
        if verb == b"PASS":
            return await self._pass(arg)
        if self.files is None and verb not in _BEFORE_LOGIN:
            await self.reply(530, "Please login with USER and PASS.")
            return None
        handler = self._handlers.get(verb)
        if handler is None:
            await self.reply(502, "Command not implemented.")
            return None
        try:
            await handler(self, arg)
        except _Reply as exc:
            await self.reply(exc.code, exc.text)
        except RemoteFileError as exc:
            await self._file_error(verb, exc)
        return None

    async def _file_error(self, verb: bytes, exc: RemoteFileError) -> None:
        if exc.kind == "lost":
            self._log.warning("SFTP session lost: %s", exc)
            await self.reply(421, f"SFTP session lost ({exc}); closing control connection.")
            raise _EndSession
        code = _ERROR_CODES.get(exc.kind, 451)
        if exc.kind == "failure" and verb not in _TRANSFER_COMMANDS:
            code = 550
        if exc.kind == "exists" and verb == b"STOU":
            code = 553
        await self.reply(code, f"{_describe(exc)}.")

    # -- paths

    def path(self, arg: bytes) -> str:
        """The server path of an argument: joined with the cwd and normalised."""
        if b"\0" in arg or b"\r" in arg or b"\n" in arg:
            raise _Reply(553, "File name not allowed.")
        name = arg.decode("utf-8", "surrogateescape")
        joined = posixpath.normpath(posixpath.join(self.cwd, name)) if name else self.cwd
        if joined.startswith("//"):
            joined = "/" + joined.lstrip("/")
        return joined

    def _need_arg(self, arg: bytes) -> bytes:
        if not arg:
            raise _Reply(501, "Syntax error in parameters or arguments.")
        return arg

    @property
    def files_(self) -> RemoteFiles:
        assert self.files is not None
        return self.files

    # -- login

    async def _user(self, arg: bytes) -> None:
        if self.files is not None:
            await self.reply(530, "Can't change to another user.")
            return
        self.user = arg
        await self.reply(331, "Please specify the password.")

    async def _pass(self, arg: bytes) -> Handover | None:
        if self.files is not None:
            await self.reply(230, "Already logged in.")
            return None
        if self.user is None:
            await self.reply(503, "Login with USER first.")
            return None
        user = self.user
        user_text = user.decode("utf-8", "replace")
        try:
            files = await self._login(user_text, arg.decode("utf-8", "replace"))
        except UseFtpForwarding:
            self._log.info("user %s: handed to FTP forwarding", visible(user_text))
            return Handover(user, arg, b"")
        except LoginFailed as exc:
            self.failures += 1
            self.user = None
            self._log.warning("login of user %s failed (%d of %d): %s", visible(user_text),
                              self.failures, self.settings.max_login_failures, exc)
            await trio.sleep(self.settings.failed_login_delay)
            await self.reply(530, str(exc) or "Login incorrect.")
            if self.failures >= self.settings.max_login_failures:
                await self.reply(421, "Too many failed logins; closing control connection.")
                raise _EndSession from None
            return None
        except RemoteFileError as exc:
            self._log.warning("login of user %s: %s", visible(user_text), exc)
            if exc.kind == "lost":
                await self.reply(421, f"Service not available: {_describe(exc)}.")
                raise _EndSession from None
            await self.reply(530, f"Login failed: {_describe(exc)}.")
            return None
        self.files = files
        self.logged_in_user = user_text
        try:
            self.cwd = await files.realpath(".")
        except RemoteFileError as exc:
            if exc.kind == "lost":
                await self._file_error(b"PASS", exc)
            self.cwd = "/"
        self._log.info("user %s logged in; home %s", visible(user_text), visible(self.cwd))
        await self.reply(230, "Login successful.")
        return None

    # -- simple commands

    async def _quit(self, arg: bytes) -> None:
        await self.reply(221, "Goodbye.")
        raise _EndSession

    async def _syst(self, arg: bytes) -> None:
        await self.reply(215, "UNIX Type: L8")

    async def _feat(self, arg: bytes) -> None:
        await self.reply_lines(211, "Features:", FEATURES, "End")

    async def _opts(self, arg: bytes) -> None:
        words = arg.decode("ascii", "replace").split(None, 1)
        option = words[0].upper() if words else ""
        value = words[1].strip() if len(words) > 1 else ""
        if option == "UTF8" and value.upper() in ("ON", ""):
            await self.reply(200, "Always in UTF8 mode.")
        elif option == "MLST":
            wanted = [fact.lower() for fact in value.split(";") if fact]
            self.mlst_facts = tuple(fact for fact in MLST_FACTS if fact in wanted)
            await self.reply(200, "MLST OPTS " + "".join(f"{f};" for f in self.mlst_facts))
        else:
            await self.reply(501, "Option not understood.")

    async def _noop(self, arg: bytes) -> None:
        await self.reply(200, "NOOP ok.")

    async def _help(self, arg: bytes) -> None:
        names = sorted(verb.decode() for verb in self._handlers)
        rows = [" ".join(f"{name:<5}" for name in names[i:i + 8]).rstrip()
                for i in range(0, len(names), 8)]
        await self.reply_lines(214, "The following commands are recognized.", rows, "Help OK.")

    async def _stat(self, arg: bytes) -> None:
        if arg.strip():
            raise _Reply(504, "STAT with an argument is not supported; use LIST.")
        lines = [f"Connected to {self.local_host}", f"Logged in as {self.logged_in_user}",
                 f"TYPE: {'ASCII' if self.type == 'A' else 'BINARY'}",
                 "Session served by SFTP", "No data connection"]
        await self.reply_lines(211, "FTP server status:", lines, "End of status")

    async def _allo(self, arg: bytes) -> None:
        await self.reply(202, "ALLO command ignored.")

    async def _auth(self, arg: bytes) -> None:
        await self.reply(502, "TLS is not offered here (the SSH connection carries the files).")

    async def _abor(self, arg: bytes) -> None:
        await self.reply(225, "No transfer to ABOR.")

    async def _type(self, arg: bytes) -> None:
        words = arg.upper().split()
        if words in ([b"A"], [b"A", b"N"]):
            self.type = "A"
            await self.reply(200, "Switching to ASCII mode.")
        elif words in ([b"I"], [b"L", b"8"]):
            self.type = "I"
            await self.reply(200, "Switching to Binary mode.")
        elif not words:
            raise _Reply(501, "TYPE needs an argument.")
        else:
            raise _Reply(504, "Unrecognised TYPE command.")

    async def _mode(self, arg: bytes) -> None:
        if arg.strip().upper() == b"S":
            await self.reply(200, "Mode set to S.")
        else:
            raise _Reply(504, "Bad MODE command.")

    async def _stru(self, arg: bytes) -> None:
        if arg.strip().upper() == b"F":
            await self.reply(200, "Structure set to F.")
        else:
            raise _Reply(504, "Bad STRU command.")

    async def _rest(self, arg: bytes) -> None:
        text = arg.strip()
        if not text.isdigit() or len(text) > 19:
            raise _Reply(501, "REST needs a byte offset.")
        self.rest = int(text)
        await self.reply(350, f"Restart position accepted ({self.rest}).")

    # -- directories and files

    async def _pwd(self, arg: bytes) -> None:
        quoted = self.cwd.replace('"', '""')
        await self.reply(257, f'"{quoted}" is the current directory')

    async def _cwd(self, arg: bytes) -> None:
        path = self.path(self._need_arg(arg))
        await self._enter(path)

    async def _cdup(self, arg: bytes) -> None:
        await self._enter(posixpath.dirname(self.cwd) or "/")

    async def _enter(self, path: str) -> None:
        try:
            info = await self.files_.stat(path)
        except RemoteFileError as exc:
            if exc.kind == "lost":
                raise
            raise _Reply(550, f"Failed to change directory: {_describe(exc)}.") from None
        if not info.is_dir:
            raise _Reply(550, "Failed to change directory: not a directory.")
        self.cwd = path
        await self.reply(250, "Directory successfully changed.")

    async def _mkd(self, arg: bytes) -> None:
        path = self.path(self._need_arg(arg))
        await self.files_.mkdir(path)
        await self.reply(257, '"{}" created'.format(path.replace('"', '""')))

    async def _rmd(self, arg: bytes) -> None:
        await self.files_.rmdir(self.path(self._need_arg(arg)))
        await self.reply(250, "Remove directory operation successful.")

    async def _dele(self, arg: bytes) -> None:
        await self.files_.remove(self.path(self._need_arg(arg)))
        await self.reply(250, "Delete operation successful.")

    async def _rnfr(self, arg: bytes) -> None:
        path = self.path(self._need_arg(arg))
        self.rename_from = None
        await self.files_.stat(path)
        self.rename_from = path
        await self.reply(350, "Ready for RNTO.")

    async def _rnto(self, arg: bytes) -> None:
        old, self.rename_from = self.rename_from, None
        if old is None:
            raise _Reply(503, "RNFR required first.")
        await self.files_.rename(old, self.path(self._need_arg(arg)))
        await self.reply(250, "Rename successful.")

    async def _size(self, arg: bytes) -> None:
        info = await self.files_.stat(self.path(self._need_arg(arg)))
        if not stat.S_ISREG(_file_mode(info)):
            raise _Reply(550, "Could not get file size: not a plain file.")
        await self.reply(213, str(info.size))

    async def _mdtm(self, arg: bytes) -> None:
        info = await self.files_.stat(self.path(self._need_arg(arg)))
        await self.reply(213, time.strftime("%Y%m%d%H%M%S", _gmtime(info.mtime)))

    async def _mlst(self, arg: bytes) -> None:
        path = self.path(arg.strip())
        info = await self.files_.stat(path)
        facts = mlst_facts(info, self.mlst_facts)
        await self.reply_lines(250, f"Listing {path}", [f"{facts} {path}"], "End")

    # -- data connection setup

    def _close_data(self) -> None:
        if self.passive is not None:
            self.passive.close()
            self.passive = None
        self.active = None

    def _bind_host(self) -> str:
        return self.settings.data_bind_host or self.local_host

    async def _listen(self) -> _Passive:
        host = self._bind_host()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await sock.bind((host, 0))
            sock.listen(1)
        except OSError as exc:
            sock.close()
            raise _Reply(425, f"Cannot open a data listener: {exc.strerror or exc}.") from None
        self._close_data()
        passive = _Passive(sock, self.peer_host, self._log)
        assert self._nursery is not None
        self._nursery.start_soon(passive.run)
        self.passive = passive
        return passive

    async def _pasv(self, arg: bytes) -> None:
        if self.epsv_all:
            raise _Reply(501, "PASV not allowed after EPSV ALL.")
        if ":" in self._bind_host():
            raise _Reply(500, "PASV is for IPv4; use EPSV.")
        passive = await self._listen()
        await self.send(_scan.format_227(self._bind_host(), passive.port))

    async def _epsv(self, arg: bytes) -> None:
        what = arg.strip().upper()
        if what == b"ALL":
            self.epsv_all = True
            await self.reply(200, "EPSV ALL ok.")
            return
        proto = b"2" if ":" in self._bind_host() else b"1"
        if what and what != proto:
            raise _Reply(522, f"Network protocol not supported, use ({proto.decode()})")
        passive = await self._listen()
        await self.send(_scan.format_229(passive.port))

    async def _port(self, arg: bytes) -> None:
        if self.epsv_all:
            raise _Reply(501, "PORT not allowed after EPSV ALL.")
        try:
            host, port = _scan.parse_port_arg(arg)
        except BadDataAddress as exc:
            raise _Reply(501, f"Illegal PORT command: {exc}.") from None
        await self._set_active("PORT", host, port)

    async def _eprt(self, arg: bytes) -> None:
        if self.epsv_all:
            raise _Reply(501, "EPRT not allowed after EPSV ALL.")
        try:
            _proto, host, port = _scan.parse_eprt_arg(arg)
        except BadDataAddress as exc:
            code = 522 if "protocol" in str(exc) else 501
            raise _Reply(code, f"Illegal EPRT command: {exc}.") from None
        await self._set_active("EPRT", host, port)

    async def _set_active(self, verb: str, host: str, port: int) -> None:
        if not same_address(host, self.peer_host) or port < 1024:
            why = "port below 1024" if port < 1024 else f"address is not the client's {self.peer_host}"
            self._log.warning("refused %s %s:%d from %s: %s", verb, host, port, self.peer_host, why)
            raise _Reply(500, f"Illegal {verb} command: {why}.")
        self._close_data()
        self.active = (host, port)
        await self.reply(200, f"{verb} command successful. Consider using PASV.")

    async def _open_data(self) -> tuple[trio.SocketStream, str]:
        """The data connection of this transfer (the negotiation is used up)."""
        passive, active = self._negotiated
        self._negotiated = (None, None)
        if passive is not None:
            try:
                with trio.move_on_after(self.settings.data_timeout):
                    await passive.ready.wait()
                sock = passive.take()
            finally:
                passive.close()
            if sock is None:
                raise _Reply(425, "Failed to establish connection (no data connection came).")
            return trio.SocketStream(sock), "passive"
        if active is not None:
            try:
                with trio.fail_after(self.settings.data_timeout):
                    stream = await trio.open_tcp_stream(*active, local_address=self._bind_host())
            except (OSError, trio.TooSlowError) as exc:
                raise _Reply(425, f"Failed to establish connection: {exc or 'timeout'}.") from None
            return stream, "active"
        raise _Reply(425, "Use PORT or PASV first.")

    # -- transfers

    async def _transfer(self, verb: bytes, arg: bytes, direction: str,
                        body: Callable[[_Transfer], Awaitable[tuple[str, str]]]) -> None:
        """Run one transfer command with accounting; ``body`` returns the 226 text and
        the data mode, raises _Reply/RemoteFileError/_Abort."""
        started = trio.current_time()
        transfer = _Transfer(trio.CancelScope())
        code: int | None
        command = verb.decode() + (" " + arg.decode("utf-8", "replace") if arg else "")
        mode = "passive" if self.active is None else "active"
        # (what stays if the session is cancelled: the client went, or shutdown)
        result, code, moved = "error (session ended)", None, False
        self.rest_used, self.rest = self.rest, 0
        # the data connection's negotiation is used up by this command, whatever happens
        self._negotiated = (self.passive, self.active)
        self.passive, self.active = None, None
        try:
            if self._negotiated == (None, None):  # before a STOR truncates its file
                raise _Reply(425, "Use PORT or PASV first.")
            with transfer.scope:
                self.transfer = transfer
                try:
                    text, mode = await body(transfer)
                    moved = True
                finally:
                    self.transfer = None
            if transfer.scope.cancelled_caught:
                result, code, moved = "error (aborted)", 426, True
                await self.reply(426, "Connection closed; transfer aborted.")
                await self.reply(226, "ABOR successful.")
            else:
                result, code = "ok", 226
                await self.reply(226, text)
                if transfer.aborted:  # (ABOR came as the transfer ended: answered too)
                    await self.reply(225, "ABOR successful; the transfer had ended.")
        except _Abort as exc:
            result, code, moved = f"error ({exc})", 426, True
            await self.reply(426, f"Connection closed; transfer aborted ({exc}).")
        except _Reply as exc:
            code = exc.code
            result = "refused" if transfer.bytes == 0 and not moved else f"error ({exc.text})"
            raise
        except RemoteFileError as exc:
            code = _ERROR_CODES.get(exc.kind, 451)
            result = "refused" if transfer.bytes == 0 else f"error ({exc.kind}: {exc})"
            raise
        finally:
            if self._negotiated[0] is not None:
                self._negotiated[0].close()
            self._negotiated = (None, None)
            self._account(command, direction, mode, transfer.bytes, started, result, code)

    def _account(self, command: str, direction: str, mode: str, total: int, started: float,
                 result: str, code: int | None) -> None:
        seconds = trio.current_time() - started
        fields: dict[str, object] = {
            "session": self.session_id, "client": self.peer_host, "mode": mode,
            "direction": direction, "command": command, "bytes": total,
            "seconds": round(seconds, 6), "result": result, "reply": code,
            "user": self.logged_in_user, "type": self.type, "server": "sftp"}
        self._on_transfer(fields)
        rate = f"{total / seconds / 1e6:.1f}MB/s" if seconds >= 0.001 else "n/a"
        self._log.info("transfer client=%s mode=%s direction=%s command=%r bytes=%d "
                       "seconds=%.3f rate=%s result=%s", self.peer_host, mode, direction,
                       command, total, seconds, rate, result, extra={"transfer": fields})

    async def _send_data(self, transfer: _Transfer, data: trio.SocketStream,
                         chunks: RemoteReader) -> None:
        after_cr = False
        try:
            async for chunk in chunks:
                if self.type == "A":
                    out = to_crlf(chunk, after_cr)
                    after_cr = chunk.endswith(b"\r")
                else:
                    out = chunk
                with trio.fail_after(self.settings.stall_timeout):
                    await data.send_all(out)
                transfer.bytes += len(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _Abort(f"data connection lost: {exc or 'reset'}") from None
        except trio.TooSlowError:
            raise _Abort("data connection stalled") from None

    async def _retr(self, arg: bytes) -> None:
        path = self.path(self._need_arg(arg))

        async def body(transfer: _Transfer) -> tuple[str, str]:
            opened = False
            try:
                async with self.files_.read_file(path, self.rest_used) as chunks:
                    opened = True
                    return await send(transfer, chunks)
            except RemoteFileError as exc:  # a directory: SFTP 3 says FX_FAILURE
                if not opened and exc.kind == "failure" and await self._is_dir(path):
                    raise _Reply(550, "Failed to open file: it is a directory.") from None
                raise

        async def send(transfer: _Transfer, chunks: RemoteReader) -> tuple[str, str]:
            info = chunks.info
            if info.is_dir:
                raise _Reply(550, "Failed to open file: it is a directory.")
            data, mode = await self._open_data()
            async with data:
                kind = "ASCII" if self.type == "A" else "BINARY"
                await self.reply(150, f"Opening {kind} mode data connection for "
                                      f"{posixpath.basename(path)} ({info.size} bytes).")
                await self._send_data(transfer, data, chunks)
            return "Transfer complete.", mode

        await self._transfer(b"RETR", arg, "download", body)

    async def _stor(self, arg: bytes) -> None:
        await self._store(b"STOR", arg, self.path(self._need_arg(arg)),
                          "resume" if self.rest else "truncate")

    async def _appe(self, arg: bytes) -> None:
        await self._store(b"APPE", arg, self.path(self._need_arg(arg)), "append")

    async def _stou(self, arg: bytes) -> None:
        base = self.path(arg) if arg.strip() else posixpath.join(self.cwd, "ftp.upload")
        await self._store(b"STOU", arg, base, "exclusive")

    async def _store(self, verb: bytes, arg: bytes, path: str, mode: WriteMode) -> None:
        async def body(transfer: _Transfer) -> tuple[str, str]:
            target, opened = path, None
            candidates = [path] if mode != "exclusive" else [
                path if i == 0 else f"{path}.{i}" for i in range(100)]
            for target in candidates:
                manager = self.files_.write_file(target, mode,
                                                 self.rest_used if mode == "resume" else 0)
                try:
                    writer = await manager.__aenter__()
                except RemoteFileError as exc:
                    if mode == "exclusive" and await self._exists(exc, target):
                        continue
                    if exc.kind == "failure" and await self._is_dir(target):
                        # (SFTP 3 says FX_FAILURE; a 451 would be retried by clients)
                        raise _Reply(553, "Could not create file: it is a directory.") \
                            from None
                    raise
                opened = manager
                break
            if opened is None:
                raise _Reply(553, "Could not create a unique file name.")
            failed: BaseException | None = None
            try:
                data, data_mode = await self._open_data()
                async with data:
                    if mode == "exclusive":
                        await self.reply(150, f"FILE: {posixpath.basename(target)}")
                    else:
                        await self.reply(150, "Ok to send data.")
                    await self._receive_data(transfer, data, writer)
            except BaseException as exc:
                failed = exc
                raise
            finally:
                if failed is None:
                    await opened.__aexit__(None, None, None)
                else:
                    with trio.CancelScope(shield=True):
                        await opened.__aexit__(type(failed), failed, failed.__traceback__)
            if mode == "exclusive":
                return f"Transfer complete; stored as {posixpath.basename(target)}.", data_mode
            return "Transfer complete.", data_mode

        await self._transfer(verb, arg, "upload", body)

    async def _is_dir(self, path: str) -> bool:
        try:
            return (await self.files_.stat(path)).is_dir
        except RemoteFileError as exc:
            if exc.kind == "lost":
                raise
            return False

    async def _exists(self, exc: RemoteFileError, path: str) -> bool:
        """Whether an exclusive open failed because ``path`` exists: SFTP protocol 3
        (OpenSSH) says only FX_FAILURE for it."""
        if exc.kind != "failure":
            return exc.kind == "exists"
        try:
            await self.files_.stat(path)
        except RemoteFileError as stat_exc:
            if stat_exc.kind == "lost":
                raise
            return False
        return True

    async def _receive_data(self, transfer: _Transfer, data: trio.SocketStream,
                            out: RemoteWriter) -> None:
        convert = CrlfToLf() if self.type == "A" else None
        try:
            while True:
                with trio.fail_after(self.settings.stall_timeout):
                    chunk = await data.receive_some(self.settings.chunk_size)
                if not chunk:
                    break
                transfer.bytes += len(chunk)
                await out.write(convert.feed(chunk) if convert else chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _Abort(f"data connection lost: {exc or 'reset'}") from None
        except trio.TooSlowError:
            raise _Abort("data connection stalled") from None
        if convert is not None and (held := convert.end()):
            await out.write(held)

    async def _entries(self, arg: bytes, options: bool) -> tuple[str, list[RemoteFileInfo], bool]:
        """(path, entries, is a directory) of a listing's argument; ``options``: leading
        ``-la`` style words are ignored, as vsftpd does."""
        text = arg.strip()
        if options:
            words = text.split(b" ")
            while words and words[0].startswith(b"-"):
                words.pop(0)
            text = b" ".join(words).strip()
        path = self.path(text)
        info = await self.files_.stat(path)
        if info.is_dir:
            return path, await self.files_.listdir(path), True
        return path, [RemoteFileInfo(posixpath.basename(path) or path, info.size, info.mtime,
                                     info.mode, info.nlink, info.owner, info.group)], False

    async def _listing(self, verb: bytes, arg: bytes,
                       render: Callable[[str, list[RemoteFileInfo], bool], list[str]],
                       options: bool = True) -> None:
        async def body(transfer: _Transfer) -> tuple[str, str]:
            path, entries, is_dir = await self._entries(arg, options)
            payload = b"".join(_text_bytes(line) + b"\r\n" for line in render(path, entries, is_dir))
            data, mode = await self._open_data()
            async with data:
                await self.reply(150, "Here comes the directory listing.")
                try:
                    await data.send_all(payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise _Abort(f"data connection lost: {exc or 'reset'}") from None
                transfer.bytes += len(payload)
            return "Directory send OK.", mode

        await self._transfer(verb, arg, "download", body)

    async def _list(self, arg: bytes) -> None:
        now = time.time()
        await self._listing(b"LIST", arg, lambda _p, entries, _d: [ls_line(e, now) for e in entries])

    async def _nlst(self, arg: bytes) -> None:
        def names(path: str, entries: list[RemoteFileInfo], is_dir: bool) -> list[str]:
            return [_safe_name(e.name) for e in entries]
        await self._listing(b"NLST", arg, names)

    async def _mlsd(self, arg: bytes) -> None:
        def facts(path: str, entries: list[RemoteFileInfo], is_dir: bool) -> list[str]:
            if not is_dir:
                raise _Reply(501, "MLSD needs a directory; use MLST.")
            return [f"{mlst_facts(e, self.mlst_facts)} {_safe_name(e.name)}" for e in entries]
        await self._listing(b"MLSD", arg, facts, options=False)

    _handlers: dict[bytes, Callable[[_FrontSession, bytes], Awaitable[None]]] = {}


_FrontSession._handlers = {
    b"USER": _FrontSession._user, b"QUIT": _FrontSession._quit, b"SYST": _FrontSession._syst,
    b"FEAT": _FrontSession._feat, b"OPTS": _FrontSession._opts, b"NOOP": _FrontSession._noop,
    b"HELP": _FrontSession._help, b"STAT": _FrontSession._stat, b"ALLO": _FrontSession._allo,
    b"AUTH": _FrontSession._auth, b"ABOR": _FrontSession._abor, b"TYPE": _FrontSession._type,
    b"MODE": _FrontSession._mode, b"STRU": _FrontSession._stru, b"REST": _FrontSession._rest,
    b"PWD": _FrontSession._pwd, b"XPWD": _FrontSession._pwd, b"CWD": _FrontSession._cwd,
    b"XCWD": _FrontSession._cwd, b"CDUP": _FrontSession._cdup, b"XCUP": _FrontSession._cdup,
    b"MKD": _FrontSession._mkd, b"XMKD": _FrontSession._mkd, b"RMD": _FrontSession._rmd,
    b"XRMD": _FrontSession._rmd, b"DELE": _FrontSession._dele, b"RNFR": _FrontSession._rnfr,
    b"RNTO": _FrontSession._rnto, b"SIZE": _FrontSession._size, b"MDTM": _FrontSession._mdtm,
    b"MLST": _FrontSession._mlst, b"PASV": _FrontSession._pasv, b"EPSV": _FrontSession._epsv,
    b"PORT": _FrontSession._port, b"EPRT": _FrontSession._eprt, b"RETR": _FrontSession._retr,
    b"STOR": _FrontSession._stor, b"APPE": _FrontSession._appe, b"STOU": _FrontSession._stou,
    b"LIST": _FrontSession._list, b"NLST": _FrontSession._nlst, b"MLSD": _FrontSession._mlsd,
}


def _describe(exc: RemoteFileError) -> str:
    text = visible(str(exc))[:200]
    return text or exc.kind


async def serve_front_session(client: trio.SocketStream, *, login: LoginCallback,
                              log: logging.LoggerAdapter[logging.Logger],
                              settings: FrontSettings,
                              on_transfer: Callable[[dict[str, object]], None] = lambda t: None,
                              session_id: int | str = 0) -> Handover | None:
    """Serve one FTP client from SFTP until it quits or the session ends: None (the
    client stream is closed), or a ``Handover`` when ``login`` raised
    UseFtpForwarding (the stream stays open for FTP forwarding). The files ``login``
    returned are closed either way. ``on_transfer`` is told each transfer's fields
    (the data plane's accounting keys); ``session_id`` goes into them."""
    session = _FrontSession(client, login, log, settings, on_transfer, session_id)
    return await session.run()


__all__ = ["FEATURES", "CrlfToLf", "FrontSettings", "Handover", "LoginCallback", "LoginFailed",
           "UseFtpForwarding", "ls_line", "mlst_facts", "serve_front_session", "to_crlf"]
