"""Sans-I/O FTP control-channel protocol: every FTP rule of a forwarding session.

Bytes from the client go in through ``receive_client``, bytes from the server
through ``receive_server``; the end of either connection through
``client_closed``/``server_closed``/``server_lost``. Output accumulates, in order,
in two outboxes, ``to_client`` and ``to_server``. An outbox item is ``bytes`` to
send, ``CLOSE`` (send what came before, then end the session) or an event:

* ``PassiveOffer`` (in ``to_client``): the server answered PASV/EPSV. The data
  plane opens the forward (for -L: binds the listener, the SSH channel opens
  meanwhile); the writer sends what ``data_ready(offer, host, port)`` returns (the
  reply naming host:port) or ``data_failed(offer, reason)`` (a 425 instead).
* ``ActiveRequest`` (in ``to_server``): the client sent PORT/EPRT. The data
  plane opens a listener for the server; the writer sends what
  ``data_ready(request, host, port)`` returns (the rewritten PORT/EPRT), or calls
  ``data_failed(request, reason)`` (the client gets a 425 in its turn).
* ``ConvertedActive`` (in ``to_client``): active-to-passive conversion; the
  server answered our PASV/EPSV. The data plane connects the server's data port
  to the client's listener; the writer sends what ``data_ready(event)`` (a 200)
  or ``data_failed`` returns.
* ``ActiveRefused`` (in ``to_client``): the server refused a rewritten
  PORT/EPRT; the data plane drops that request's listener.
* ``ActiveAccepted`` (in ``to_client``): the server accepted a rewritten PORT/EPRT;
  listeners of older PORT/EPRT commands (kept while the client pipelines) are unused.
* ``HoldForActiveData`` (in ``to_client``): what follows is the transfer-complete
  reply (226/250) to a transfer command on an active channel (``channel_id``); send
  it only once that channel's data connection is settled (connected to the client,
  or given up), so a client never sees 226 before its data connection.
* ``TransferCommand`` (in ``to_server``, in place of a RETR/STOR/LIST... line):
  names the transfer and its data channel (``channel_id``) for the data plane; the
  session waits there for that channel if it is still opening, then sends the
  event's ``line``, or calls ``transfer_refused(event, reason)`` if it failed (the
  line is not sent, the client gets a 425 in its turn).
* ``TransferReplied`` (in ``to_client``, right before the final reply to a
  transfer command): the data plane accounts that transfer by its code.
* ``QuitSent`` (in ``to_server``, after the QUIT line): no transfer can follow,
  so data listeners no transfer command was sent for can close.

Replies are matched to commands in FIFO order, so pipelining works and a
227/229 is acted on only as the answer to an outstanding PASV/EPSV. Every data
channel has an integer id, unique in the session, given when its PASV/EPSV/PORT/EPRT
is read: the events of one channel (its offer or request, the transfer commands
using it) carry the same id. The protocol never edits an outbox except by appending;
results for the writers are return values. This module never imports trio, asyncssh
or sockets.
"""

from __future__ import annotations

import enum
import itertools
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal, Union

from . import _scan
from ._errors import BadDataAddress, LineTooLong
from ._netaddr import same_address
from ._text import visible

log = logging.getLogger(__name__)
#: the protocol lines themselves (client> / server<): shown from -vv on
lines_log = logging.getLogger(__name__ + ".lines")


#: a session logs at most LOG_BURST messages of one kind (INFO and above) per
#: LOG_WINDOW seconds; the rest are counted and summed up in one line
LOG_BURST = 5
LOG_WINDOW = 60.0


class SessionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every message with "session N: " (no prefix without an id), and
    passes messages of INFO and above through the session's ``LogLimiter``."""

    def __init__(self, logger: logging.Logger, extra: dict[str, object],
                 limiter: LogLimiter | None = None) -> None:
        super().__init__(logger, extra)
        self.limiter = limiter

    def process(self, msg: object, kwargs: Any) -> tuple[object, Any]:
        session = self.extra.get("session") if self.extra else None
        return (msg if session is None else f"session {session}: {msg}"), kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        limiter = self.limiter
        if (limiter is not None and level >= logging.INFO and self.isEnabledFor(level)
                and not limiter.allow(self, level, msg, args)):
            return
        # the record names the caller, not this method (Python >= 3.11)
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        super().log(level, msg, *args, **kwargs)


class _Kind:
    """One kind of message in a LogLimiter: its current window and what it suppressed."""

    __slots__ = ("log", "level", "msg", "args", "start", "count", "suppressed")

    def __init__(self, log: SessionLog, level: int, msg: object, args: tuple[object, ...],
                 start: float) -> None:
        self.log, self.level, self.msg, self.args = log, level, msg, args
        self.start = start
        self.count = 0
        self.suppressed = 0


class LogLimiter:
    """Rate limit of one session's repeated log messages (log amplification: 300 KB
    of bad lines from a peer were 7.9 MB of WARNING lines, one per line).

    A kind is a logger, a level and a message format (its arguments left out). Of
    each kind, the first ``burst`` messages within ``window`` seconds are logged as
    they are; further ones are only counted, and one line "suppressed N similar
    warnings (like: <the first one>)" follows once the window has passed (at the
    session's next message or ``flush_expired`` call) or at the session's end
    (``flush``). DEBUG messages (the -vv protocol trace) are never limited. Message
    formats are constants (arguments go separately), so the kinds are few."""

    def __init__(self, burst: int = LOG_BURST, window: float = LOG_WINDOW,
                 clock: Any = time.monotonic) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._kinds: dict[tuple[str, int, object], _Kind] = {}
        #: kinds with suppressed messages not summed up yet
        self.suppressing = 0
        #: the earliest end of such a kind's window
        self._expires = float("inf")

    def allow(self, log: SessionLog, level: int, msg: object,
              args: tuple[object, ...]) -> bool:
        """Whether to log this message now (else it is counted)."""
        now = self._clock()
        if now >= self._expires:
            self.flush_expired(now)
        key = (log.logger.name, level, msg)
        kind = self._kinds.get(key)
        if kind is None or now - kind.start >= self.window:
            kind = self._kinds[key] = _Kind(log, level, msg, args, now)
        kind.count += 1
        if kind.count <= self.burst:
            return True
        if not kind.suppressed:
            self.suppressing += 1
            self._expires = min(self._expires, kind.start + self.window)
        kind.suppressed += 1
        return False

    def flush_expired(self, now: float | None = None) -> None:
        """Sum up the kinds whose window has passed."""
        if not self.suppressing:
            return
        self._flush(self._clock() if now is None else now)

    def flush(self) -> None:
        """Sum up every kind that suppressed messages (the session ends)."""
        if self.suppressing:
            self._flush(float("inf"))

    def _flush(self, now: float) -> None:
        self._expires = float("inf")
        for kind in self._kinds.values():
            if not kind.suppressed:
                continue
            if now - kind.start < self.window:
                self._expires = min(self._expires, kind.start + self.window)
                continue
            count, kind.suppressed = kind.suppressed, 0
            self.suppressing -= 1
            what = ("warnings" if kind.level == logging.WARNING
                    else f"{logging.getLevelName(kind.level).lower()} messages")
            msg = str(kind.msg) if kind.args else str(kind.msg).replace("%", "%%")
            # the summary itself is not limited
            logging.LoggerAdapter.log(kind.log, kind.level,
                                      "suppressed %d similar " + what + " (like: " + msg + ")",
                                      count, *kind.args)


#: how PORT/EPRT is carried: a remote forward for the server's connection, or
#: converted to PASV/EPSV (--active-mode)
ActiveMode = Literal["remote-forward", "passive"]
#: whether an active-mode remote forward is requested ahead of the PORT/EPRT that uses it
#: (--active-forward-ahead; "auto": when only the FTP server's own non-loopback address
#: may connect to it)
ForwardAhead = Literal["auto", "yes", "no"]
#: what AUTH TLS gets: a 534, or passed to the server; or TLS from the first byte
#: (--auth-tls)
AuthTLSPolicy = Literal["refuse", "passthrough", "implicit"]
#: replies by which a server refuses a plaintext login because it demands TLS (vsftpd
#: "530 Non-anonymous sessions must use encryption.", ProFTPD TLSRequired "550 SSL/TLS
#: required on the control channel", "534 Policy requires SSL.")
_TLS_DEMANDED_CODES = (421, 530, 534, 550)
#: the first byte of a TLS handshake record (a ClientHello)
TLS_HANDSHAKE_RECORD = b"\x16"
_TLS_DEMANDED = re.compile(rb"encrypt|\b(?:SSL|TLS)\b.*\b(?:requir|must|only)"
                           rb"|\b(?:requir\w*|must use|policy)\b.*\b(?:SSL|TLS)\b", re.IGNORECASE)
#: Most lines a multi-line 227/229 reply may have before it is refused.
MAX_CAPTURED_LINES = 32
#: Longest command line forwarded, CRLF included: pyftpdlib keeps only 2048 bytes of a
#: line and reads what follows as a new command, so a longer line could smuggle one
#: past ftptrio (vsftpd allows 4096, ProFTPD discards over-long lines)
MAX_COMMAND_LINE = 2048
_BAD_LINE = _scan.FLAG_NUL | _scan.FLAG_BARE_CR | _scan.FLAG_BAD_TELNET
#: Telnet "interrupt process" + "data mark": the Synch clients put before ABOR; vsftpd
#: matches it byte for byte, servers that read Telnet remove it
ABOR_SYNCH = b"\xff\xf4\xff\xf2"
#: final replies that end a transfer: held until an active data connection is settled
_TRANSFER_DONE = (226, 250)
#: commands that move data over a data connection
_TRANSFER_VERBS = frozenset((b"RETR", b"STOR", b"STOU", b"APPE", b"LIST", b"NLST", b"MLSD"))
#: commands that change the server's files: refused locally on a read-only session
#: (SITE: CHMOD, UTIME, SYMLINK ... all of it; MFMT/MFCT/MFF set file facts)
WRITE_VERBS = frozenset((b"STOR", b"STOU", b"APPE", b"DELE", b"RNFR", b"RNTO", b"MKD",
                         b"XMKD", b"RMD", b"XRMD", b"SITE", b"MFMT", b"MFCT", b"MFF"))
#: ``MDTM time file`` sets the file's time (vsftpd's mdtm_write, Pure-FTPd): a write too
_MDTM_SETS_TIME = re.compile(rb"\s*\d{14}(?:\.\d+)?(?:[+-]\d+)?\s+\S")


@dataclass(frozen=True, slots=True)
class PassiveOffer:
    """The server offers a passive data port (227 or 229 to our PASV/EPSV)."""

    host: str | None  # address named in a 227; None for 229 (same host as control)
    port: int
    extended: bool  # True: reply with 229, else 227
    id: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ActiveRequest:
    """The client listens at host:port and wants the server to connect there."""

    host: str
    port: int
    extended: bool  # EPRT rather than PORT
    id: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ConvertedActive:
    """Active converted to passive: connect server_port (via SSH) to the client's listener."""

    client_host: str
    client_port: int
    server_host: str | None
    server_port: int
    extended: bool
    id: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ActiveRefused:
    """The server refused our rewritten PORT/EPRT: the listener of ``request_id`` is unused."""

    request_id: int


@dataclass(frozen=True, slots=True)
class ActiveAccepted:
    """The server accepted our rewritten PORT/EPRT: its next transfer uses the listener
    of ``request_id``, so listeners of older PORT/EPRT commands are unused."""

    request_id: int


@dataclass(frozen=True, slots=True)
class TransferReplied:
    """The server's final reply to a transfer command (RETR, STOR, LIST ...) is next
    in ``to_client``: the transfer is accounted by it (2xx: ok; 4xx/5xx: refused, or
    failed once data moved)."""

    code: int


@dataclass(frozen=True, slots=True)
class HoldForActiveData:
    """Send what follows only once the active data connection of ``channel_id`` is
    settled."""

    channel_id: int


@dataclass(frozen=True, slots=True)
class TransferCommand:
    """A transfer command (RETR, STOR, LIST ...) for the server: the session sends
    ``line`` once the data plane says its data channel is ready, or calls
    ``transfer_refused`` (the client gets a 425 in its turn, the line is never sent).
    ``command`` names the transfer in the log (printable, PASS-free by construction)."""

    command: str
    #: the data channel it uses: the id of the latest PASV/EPSV/PORT/EPRT before it
    #: (given when that command was read, so known even while its reply is still to
    #: come); None: no data command before it that ftptrio set up
    channel_id: int | None = None
    #: the command line, CRLF-terminated
    line: bytes = field(default=b"", compare=False, repr=False)
    #: the command's entry among the replies awaited (for transfer_refused)
    entry: _Pending | None = field(default=None, compare=False, repr=False)
    #: the TYPE in force when the command was read ("A" ascii, "I" image ...)
    transfer_type: str = field(default="I", compare=False)


@dataclass(frozen=True, slots=True)
class QuitSent:
    """The QUIT line before this went to the server: no transfer can follow."""


class _Close:
    def __repr__(self) -> str:
        return "CLOSE"


CLOSE = _Close()

DataEvent = Union[PassiveOffer, ActiveRequest, ConvertedActive]
Event = Union[PassiveOffer, ActiveRequest, ConvertedActive, ActiveRefused, ActiveAccepted,
              HoldForActiveData, TransferReplied, TransferCommand, QuitSent]
OutItem = Union[bytes, Event, _Close]

#: what an event counts for in ``Outbox.size``
EVENT_SIZE = 64


def _size(item: OutItem) -> int:
    return len(item) if isinstance(item, bytes) else EVENT_SIZE


class Outbox:
    """The protocol's output for one peer, in order: ``OutItem``s, and how many bytes
    they hold (``size``), so the session can stop reading while output piles up
    (events count ``EVENT_SIZE``). Only the protocol appends; only the session's
    writer for that peer takes items out (``popleft``, ``pop_bytes``)."""

    __slots__ = ("_items", "size")

    def __init__(self) -> None:
        self._items: deque[OutItem] = deque()
        self.size = 0

    def append(self, item: OutItem) -> None:
        self.size += _size(item)
        self._items.append(item)

    def extend(self, items: Iterable[OutItem]) -> None:
        for item in items:
            self.append(item)

    def popleft(self) -> OutItem:
        item = self._items.popleft()
        self.size -= _size(item)
        return item

    def pop_bytes(self) -> list[bytes]:
        """The bytes items at the front, taken out (up to the first other item)."""
        items, taken = self._items, []
        while items and isinstance(items[0], bytes):
            data = items.popleft()
            assert isinstance(data, bytes)
            self.size -= len(data)
            taken.append(data)
        return taken

    def clear(self) -> None:
        self.size = 0
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[OutItem]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"Outbox({list(self._items)!r})"


class Awaits(enum.Enum):
    """What an entry among the replies awaited stands for: how its reply is read."""

    GREETING = enum.auto()
    PLAIN = enum.auto()
    PASV = enum.auto()
    EPSV = enum.auto()
    PASV_VIA_EPSV = enum.auto()  # the client sent PASV, the server gets EPSV
    EPSV_VIA_PASV = enum.auto()
    ACTIVE = enum.auto()  # a PORT/EPRT, rewritten
    CONVERTED = enum.auto()  # a PORT/EPRT sent to the server as PASV/EPSV
    AUTH = enum.auto()
    REIN = enum.auto()
    TRANSFER = enum.auto()
    LOCAL = enum.auto()  # answered by ftptrio itself, in its turn


#: passive entry kind -> (reply code the server must send, client wants extended reply)
_PASSIVE_KINDS: dict[Awaits, tuple[int, bool]] = {
    Awaits.PASV: (227, False), Awaits.EPSV: (229, True),
    Awaits.PASV_VIA_EPSV: (229, False), Awaits.EPSV_VIA_PASV: (227, True),
}
#: replies meaning "command not supported": try the other passive command
_NOT_SUPPORTED = (500, 501, 502, 504, 522)


class _Pending:
    """A command that awaits its final reply. ``local_reply``: ftptrio answers it
    itself (the command was refused here, or never sent): the reply goes to the
    client in its turn, when every command before it is answered."""

    __slots__ = ("kind", "request", "channel_id", "active_data", "local_reply")

    def __init__(self, kind: Awaits, request: ActiveRequest | None = None, *,
                 channel_id: int = 0, active_data: bool = False,
                 local_reply: bytes | None = None) -> None:
        self.kind = kind
        self.request = request
        #: PASV/EPSV: the id its offer and the data channel get; a transfer command:
        #: the channel it uses
        self.channel_id = channel_id
        #: a transfer command on an active (PORT/EPRT, not converted) channel
        self.active_data = active_data
        self.local_reply = local_reply


def describe_line(line: bytes) -> str:
    """A loggable form of a control line: never shows PASS/ACCT arguments.

    The verb is read as the server reads it (Telnet sequences interpreted), so
    ``PA<IAC IP>SS secret`` is masked too; non-printable bytes are escaped.
    """
    verb, _arg = _scan.split_command(line)
    if verb[:4] in (b"PASS", b"ACCT"):  # also "PASS\tsecret", which splits oddly
        return verb[:4].decode("ascii") + " ****"
    return printable(line.rstrip(b"\r\n")[:200])


def reply_without_telnet(line: bytes, flags: int) -> tuple[bytes, int, int]:
    """A server line as Telnet-aware clients read it (lftp, tnftp and inetutils ftp
    remove IAC sequences from replies): ``22<IAC NOP>9 (|||22|)`` is a 229 to them.
    Returns (line, code, flags) of the line with every Telnet sequence removed and any
    byte 0xFF left (a doubled IAC, which tnftp drops) shown as ``?``, so that every
    client and ftptrio read the same line."""
    body = line.rstrip(b"\r\n")
    decoded = _scan.telnet_decode(body)[0].replace(b"\xff", b"?") + line[len(body):]
    parsed = _scan.parse_reply_code(decoded)
    flags &= ~_scan.FLAG_CONTINUES
    if parsed is None:
        return decoded, -1, flags
    return decoded, parsed[0], flags | (_scan.FLAG_CONTINUES if parsed[1] else 0)


def printable(data: bytes) -> str:
    """``data`` for a text log: printable ASCII as is, every other byte as ``\\xNN``."""
    text = data.decode("latin-1")
    if text.isprintable() and text.isascii():
        return text
    return "".join(ch if " " <= ch <= "~" else f"\\x{ord(ch):02x}" for ch in text)


def is_command_word(verb: bytes) -> bool:
    """An FTP command word: 3 or 4 ASCII letters (RFC 959)."""
    return 3 <= len(verb) <= 4 and verb.isalpha()


class ControlChannel:
    """State of one FTP control connection as seen by the forwarder."""

    def __init__(
        self,
        *,
        client_host: str,
        active_mode: ActiveMode = "remote-forward",
        auth_tls: AuthTLSPolicy = "refuse",
        max_line: int = _scan.MAX_LINE,
        session_id: int | None = None,
        log_limiter: LogLimiter | None = None,
        greeted: bool = False,
        read_only: bool = False,
        denied: Callable[[str], None] | None = None,
    ) -> None:
        """``session_id``: named in every log line of this channel. ``log_limiter``:
        the session's (shared with its data plane); by default one of its own.
        ``greeted``: the client has its greeting already and the server's was read
        (an FTP-proxy login): no greeting is awaited. ``read_only``: WRITE_VERBS get
        550 here and never reach the server; ``denied`` is told each such refusal
        (with the rule's name, "read_only")."""
        #: repeated messages of this channel's session are limited here
        self.log_limiter = LogLimiter() if log_limiter is None else log_limiter
        self._log = SessionLog(log, {"session": session_id}, self.log_limiter)
        self._lines_log = SessionLog(lines_log, {"session": session_id})
        self.client_host = client_host
        self.read_only = read_only
        self._denied = denied
        #: the latest USER argument (printable) and TYPE ("A" ascii, "I" image...), for
        #: the transfer log and --xferlog
        self.user: str | None = None
        self.transfer_type = "I"
        self.active_mode = active_mode
        self.auth_tls = auth_tls
        self.to_client = Outbox()
        self.to_server = Outbox()
        self.closed = False
        #: after AUTH TLS was passed through and accepted (implicit FTPS: from the
        #: first byte): bytes are opaque
        self.opaque = auth_tls == "implicit"
        #: implicit FTPS: the client's first byte opened a TLS handshake record (only
        #: then does its session join the passive range)
        self.tls_hello_seen = False
        #: the server's reply saying it demands TLS (530/534 "... must use encryption"),
        #: seen in plain text while AUTH is refused; None: not seen
        self.tls_demanded: str | None = None
        # one byte spare: a bare-LF line is forwarded with CRLF
        self._client_lines = _scan.LineSplitter(min(max_line, MAX_COMMAND_LINE - 1))
        self._server_lines = _scan.LineSplitter(max_line)
        self._ids = itertools.count(1)
        self._held_reply_bytes = 0
        self._pending: deque[_Pending] = deque(() if greeted else [_Pending(Awaits.GREETING)])
        self._multiline_code: bytes | None = None
        self._captured: list[bytes] | None = None
        #: b"PASV" or b"EPSV" once the server refused it: translate from then on
        self._server_lacks: bytes | None = None
        #: the data channel of the latest PASV/EPSV/PORT/EPRT (its id, given when it was
        #: read): the channel of the transfer commands that follow it
        self._latest_channel: int | None = None
        #: that channel is an active one (the server connects to it)
        self._latest_channel_active = False

    # ------------------------------------------------------------------ input
    def receive_client(self, data: bytes) -> None:
        """Feed bytes the FTP client sent."""
        if self.closed:
            return
        if self.opaque:
            if self.auth_tls == "implicit" and not self.tls_hello_seen:
                if data[:1] != TLS_HANDSHAKE_RECORD:
                    self._log.warning("implicit FTPS: the client's first byte is %s, not a "
                                      "TLS handshake; closing (a plain FTP client needs a "
                                      "forward without --auth-tls implicit)",
                                      printable(data[:1]))
                    self.to_client.append(b"421 ftptrio: this port expects implicit FTPS "
                                          b"(TLS from the first byte, ftps://).\r\n")
                    self.to_client.append(CLOSE)
                    self.closed = True
                    return
                self.tls_hello_seen = True
            self.to_server.append(bytes(data))
            return
        try:
            commands = self._client_lines.feed_commands(data)
            too_long = False
        except LineTooLong as exc:
            commands, too_long = exc.lines, True
        for line, verb, arg, flags in commands:
            if self.closed:
                return
            self._client_line(line, verb, arg, flags)
        if too_long and not self.closed:
            self._fail_client("500 ftptrio: command line too long; closing.")

    def receive_server(self, data: bytes) -> None:
        """Feed bytes the FTP server sent."""
        if self.closed:
            return
        if self.opaque:
            self.to_client.append(bytes(data))
            return
        earlier = self._server_lines.pending
        try:
            replies = self._server_lines.feed_replies(data)
            too_long = False
        except LineTooLong as exc:
            replies, too_long = exc.lines, True
        for index, (line, code, flags) in enumerate(replies):
            if self.closed:
                return
            self._server_line(line, code, flags)
            if self.opaque:  # everything after the 234 line is TLS: pass it on as is
                rest = _after_lines(earlier + bytes(data), index + 1)
                if rest:
                    self.to_client.append(rest)
                if self._client_lines.pending:
                    self.to_server.append(self._client_lines.pending)
                return
        if too_long and not self.closed:
            self._fail_server("reply line too long")

    def client_closed(self) -> None:
        """The client closed its control connection: the server gets what is queued."""
        self.to_server.append(CLOSE)

    def server_closed(self) -> None:
        """The server closed its control connection: the client gets what is queued."""
        self.to_client.append(CLOSE)

    def server_lost(self) -> None:
        """The connection to the server broke (SSH lost): 421 to the client, then close."""
        self._close_with(b"421 ftptrio: lost the connection to the FTP server "
                         b"(SSH connection lost); closing.\r\n")

    def idle_timeout(self, seconds: float) -> None:
        """No control traffic and no byte moved on a data connection for ``seconds``:
        421 to the client, close."""
        self._close_with(b"421 ftptrio: idle for %d seconds; closing the session.\r\n"
                         % int(seconds))

    def _close_with(self, reply: bytes) -> None:
        """The client's last reply: nothing more is read, the session ends after it. A
        TLS control channel gets no plaintext reply (the client would read it as a
        broken TLS record): it is closed, and the reason is logged."""
        if self.opaque:
            self._log.info("TLS session closed without a reply: %s",
                           printable(reply.rstrip(b"\r\n")[4:]))
        else:
            self.to_client.append(reply)
        self.to_client.append(CLOSE)
        self.closed = True

    # ---------------------------------------------------------- data plane results
    def data_ready(self, event: DataEvent, host: str = "", port: int = 0) -> bytes:
        """The data channel of ``event`` is set up; host:port is where the peer connects
        (the client for a passive offer, the server for an active request). Returns
        what the writer of the event's outbox sends next: the rewritten reply (to the
        client) or PORT/EPRT command (to the server)."""
        if isinstance(event, PassiveOffer):
            return (_scan.format_229(port) if event.extended
                    else _scan.format_227(host, port))
        if isinstance(event, ActiveRequest):
            return (_scan.format_eprt(host, port) if event.extended
                    else _scan.format_port(host, port))
        verb = b"EPRT" if event.extended else b"PORT"
        return b"200 " + verb + b" command successful (ftptrio: converted to passive).\r\n"

    def data_failed(self, event: DataEvent, reason: str) -> bytes:
        """The data channel of ``event`` could not be set up: the client gets a 425.
        Returns what the writer of the event's outbox sends next: the 425 (passive and
        converted: it answers the reply the event stands for), or nothing (active: the
        PORT/EPRT never reaches the server, its 425 goes out in its turn)."""
        reply = self._data_failed_reply(reason)
        if not isinstance(event, ActiveRequest):
            return reply
        for entry in self._pending:
            if entry.kind is Awaits.ACTIVE and entry.request is not None \
                    and entry.request.id == event.id and entry.local_reply is None:
                self._answer_entry(entry, reply)
                break
        return b""

    def transfer_refused(self, event: TransferCommand, reason: str) -> None:
        """The data channel of ``event`` could not be opened (after its 227/229 was
        sent): its line is not sent to the server, and the client gets a 425 in its
        turn. Once per event."""
        entry = event.entry
        if self.closed or entry is None or entry.local_reply is not None \
                or entry not in self._pending:
            return
        self._answer_entry(entry, self._data_failed_reply(reason))

    def _answer_entry(self, entry: _Pending, reply: bytes) -> None:
        """ftptrio answers ``entry`` itself: ``reply`` goes out in the entry's turn."""
        entry.local_reply = reply
        self._held_reply_bytes += len(reply)
        self._release_local_replies()

    # ------------------------------------------------------------ client side
    def _client_line(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        if flags & _BAD_LINE:
            bad = ("NUL byte" if flags & _scan.FLAG_NUL else "bare CR"
                   if flags & _scan.FLAG_BARE_CR else "invalid Telnet sequence")
            self._log.warning("client sent a command with a %s; answered 500", bad)
            self._answer_locally(f"500 ftptrio: {bad} in command line rejected.")
            return
        if self._lines_log.isEnabledFor(logging.DEBUG):
            self._lines_log.debug("client> %s", describe_line(line))
        if not verb:
            return  # empty line: servers ignore it inconsistently, so do not forward
        if not is_command_word(verb):
            self._log.warning("client sent %r, not a command word (3-4 letters); answered 500",
                        printable(verb[:4]) if verb[:4] in (b"PASS", b"ACCT")
                        else printable(verb[:40]))
            self._answer_locally("500 ftptrio: command not understood "
                                 "(a command is 3 or 4 letters).")
            return
        if self.read_only and (verb in WRITE_VERBS
                               or verb == b"MDTM" and _MDTM_SETS_TIME.match(arg)):
            self._refuse_write(verb)
            return
        _COMMANDS.get(verb, ControlChannel._plain_command)(self, line, verb, arg, flags)

    def _refuse_write(self, verb: bytes) -> None:
        self._log.warning("refused %s: read-only access", verb.decode())
        if self._denied is not None:
            self._denied("read_only")
        self._answer_locally(f"550 ftptrio: read-only access; {verb.decode()} refused.")

    # one method per command with a rule of its own (the table _COMMANDS, below)
    def _plain_command(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        self._forward_command(line, Awaits.PLAIN)

    def _user(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        self.user = printable(arg.strip()[:256])
        self._forward_command(line, Awaits.PLAIN)

    def _type(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        self.transfer_type = printable(arg.strip()[:1].upper()) or "I"
        self._forward_command(line, Awaits.PLAIN)

    def _quit(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        self._forward_command(line, Awaits.PLAIN)
        self.to_server.append(QuitSent())

    def _pasv(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        if self._server_lacks == b"PASV":
            self._passive_command(b"EPSV\r\n", Awaits.PASV_VIA_EPSV)
        else:
            self._passive_command(line, Awaits.PASV)

    def _epsv(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        argument = arg.strip().upper()
        if argument == b"ALL":
            self._forward_command(line, Awaits.PLAIN)
        elif self._server_lacks == b"EPSV" and argument in (b"", b"1"):
            self._passive_command(b"PASV\r\n", Awaits.EPSV_VIA_PASV)
        else:
            self._passive_command(line, Awaits.EPSV)

    def _passive_command(self, line: bytes, kind: Awaits) -> None:
        """A PASV/EPSV: its data channel's id is given now, so the transfer commands
        that follow it name their channel even while its reply is still to come."""
        channel_id = self._latest_channel = next(self._ids)
        self._latest_channel_active = False
        self._expect(_Pending(kind, channel_id=channel_id))
        self.to_server.append(line)

    def _long_address_command(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        self._answer_locally(f"502 ftptrio: {verb.decode()} not supported; use EPRT/EPSV.")

    def _auth(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        if self.auth_tls == "refuse":
            self._log.info("refused AUTH %s: control stays plaintext inside the SSH tunnel",
                           printable(arg[:20]))
            self._answer_locally(
                "534 ftptrio: TLS refused; this connection is already encrypted by SSH.")
        else:
            self._log.warning("passing AUTH through: the control channel becomes opaque; "
                              "data connections go only through --passive-ports (passive "
                              "mode; active mode cannot work)")
            self._forward_command(line, Awaits.AUTH)

    def _rein(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        self._forward_command(line, Awaits.REIN)

    def _transfer(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        entry = _Pending(Awaits.TRANSFER, channel_id=self._latest_channel or 0,
                         active_data=self._latest_channel_active)
        self._expect(entry)
        self.to_server.append(TransferCommand(printable(line.rstrip(b"\r\n")[:200]),
                                              self._latest_channel, line, entry,
                                              self.transfer_type))

    def _abor(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        self._forward_command(ABOR_SYNCH + line if flags & _scan.FLAG_TELNET else line,
                              Awaits.PLAIN)

    def _active_command(self, line: bytes, verb: bytes, arg: bytes, flags: int) -> None:
        extended = verb == b"EPRT"
        try:
            if extended:
                _proto, host, port = _scan.parse_eprt_arg(arg)
            else:
                host, port = _scan.parse_port_arg(arg)
        except BadDataAddress as exc:
            self._log.warning("client sent invalid %s: %s", verb.decode(), exc)
            self._answer_locally(f"501 ftptrio: invalid {verb.decode()} argument: {exc}")
            return
        if not same_address(host, self.client_host):
            self._log.warning("refused %s to %s: not the client's own address %s (bounce)",
                        verb.decode(), host, self.client_host)
            self._answer_locally(
                f"500 ftptrio: {verb.decode()} must name your own address ({self.client_host}).")
            return
        if port < 1024:
            self._log.warning("refused %s to privileged port %d", verb.decode(), port)
            self._answer_locally(f"501 ftptrio: {verb.decode()} to a port below 1024 refused.")
            return
        request = ActiveRequest(host, port, extended, next(self._ids))
        self._latest_channel = request.id  # the transfers after it use its channel
        self._latest_channel_active = self.active_mode != "passive"
        if self.active_mode == "passive":
            self._log.debug("converting %s %s:%d to %s", verb.decode(), host, port,
                            "EPSV" if extended else "PASV")
            self._expect(_Pending(Awaits.CONVERTED, request, channel_id=request.id))
            self.to_server.append(b"EPSV\r\n" if extended else b"PASV\r\n")
        else:
            self._expect(_Pending(Awaits.ACTIVE, request, channel_id=request.id))
            self.to_server.append(request)

    def _expect(self, entry: _Pending) -> None:
        """``entry`` awaits its reply, after those already awaited."""
        self._pending.append(entry)

    def _forward_command(self, line: bytes, kind: Awaits) -> None:
        self._expect(_Pending(kind))
        self.to_server.append(line)  # already CRLF-terminated by the scanner

    @property
    def backlog(self) -> int:
        """Bytes held for commands the server has not answered yet, with the replies
        ftptrio made itself waiting behind them (each entry counts EVENT_SIZE): the
        session stops reading the client while this is large."""
        return len(self._pending) * EVENT_SIZE + self._held_reply_bytes

    def _answer_locally(self, text: str) -> None:
        reply = _ascii(text) + b"\r\n"
        self._held_reply_bytes += len(reply)
        self._expect(_Pending(Awaits.LOCAL, local_reply=reply))
        self._release_local_replies()

    def _release_local_replies(self) -> None:
        while self._pending and self._pending[0].local_reply is not None:
            reply = self._pending.popleft().local_reply
            assert reply is not None
            self._held_reply_bytes -= len(reply)
            self.to_client.append(reply)

    def _data_failed_reply(self, reason: str) -> bytes:
        return b"425 ftptrio: cannot open data connection: " + _ascii(reason) + b"\r\n"

    def _fail_client(self, text: str) -> None:
        self._log.warning("closing session: %s", text)
        self._close_with(_ascii(text) + b"\r\n")

    def _fail_server(self, reason: str) -> None:
        self._fail_client(f"421 ftptrio: FTP server sent an invalid control line ({reason})")

    # ------------------------------------------------------------ server side
    def _server_line(self, line: bytes, code: int, flags: int) -> None:
        if flags & _BAD_LINE:
            self._fail_server("NUL byte" if flags & _scan.FLAG_NUL else "bare CR")
            return
        if self._lines_log.isEnabledFor(logging.DEBUG):
            self._lines_log.debug("server< %s", printable(line.rstrip(b"\r\n")[:200]))
        if b"\xff" in line:  # read as lftp, tnftp and inetutils ftp read it: Telnet removed
            line, code, flags = reply_without_telnet(line, flags)
            self._log.warning("FTP server sent Telnet bytes in a reply; passed on without "
                              "them: %s", printable(line[:80]))
        if self._multiline_code is not None:
            ends = line[:3] == self._multiline_code and line[3:4] == b" "
            if not ends:  # text to every client, never a final reply (e.g. an inner 229)
                line = _scan.reply_text_line(line)
            if self._captured is not None:
                self._captured.append(line)
                if len(self._captured) > MAX_CAPTURED_LINES:
                    self._fail_server("multi-line passive reply too long")
                    return
            else:
                self.to_client.append(line)
            if ends:
                self._multiline_code = None
                self._reply_complete(int(line[:3]), line)
            return
        if code < 0:
            self._log.warning("FTP server sent a line that is not a reply; passed on as "
                              "text: %s", printable(line[:80]))
            # text to every client: ftplib takes any line starting with 1-3 for a reply
            self.to_client.append(b" " + line if line[:1].isdigit() else line)
            return
        if line[3:4] in (b"\r", b"\n"):  # "200\r\n": a reply to ftplib, text to curl
            line = line[:3] + b" " + line[3:]
        if flags & _scan.FLAG_CONTINUES:
            self._multiline_code = line[:3]
            head = self._pending[0].kind if self._pending else None
            if head in _PASSIVE_KINDS or head is Awaits.CONVERTED or code in (227, 229):
                self._captured = [line]
            else:
                self._reply_to_client(line, code)
            return
        if code < 200 or not self._pending:
            if code in (227, 229):
                self._withhold_passive(code)
                return
            if code >= 200:
                self._log.warning("unsolicited reply from FTP server passed on: %s",
                                  printable(line.rstrip(b"\r\n")[:80]))
            self._reply_to_client(line, code)
            return
        head = self._pending[0].kind
        if code in (227, 229) or head in _PASSIVE_KINDS:
            self._captured = [line]
        else:
            self._reply_to_client(line, code)
        self._reply_complete(code, line)

    def _withhold_passive(self, code: int) -> None:
        """A 227/229 that answers no PASV/EPSV: its address and port never reach the
        client, which would otherwise connect there (through ftptrio, that is the
        client's own machine) when it takes it for the answer to a later PASV."""
        self._log.warning("unsolicited %d reply (no PASV/EPSV outstanding) withheld: "
                          "no data channel opened", code)
        self.to_client.append(b"%d ftptrio: unsolicited passive reply withheld "
                              b"(no PASV/EPSV outstanding).\r\n" % code)

    def _reply_to_client(self, line: bytes, code: int) -> None:
        """The first line of a reply; a transfer-complete one waits for active data;
        the final reply to a transfer command is announced to the data plane first."""
        head = self._pending[0] if self._pending else None
        if head is not None and head.kind is Awaits.TRANSFER and code >= 200:
            if code in _TRANSFER_DONE and head.active_data:
                self.to_client.append(HoldForActiveData(head.channel_id))
            self.to_client.append(TransferReplied(code))
        if code >= 400 and self._pending and self._pending[0].kind is Awaits.ACTIVE:
            line = self._active_refused_hint(line)
        elif (code in _TLS_DEMANDED_CODES and self.auth_tls == "refuse"
              and _TLS_DEMANDED.search(line) is not None):
            self.tls_demanded = printable(line.rstrip(b"\r\n")[:120])
        self.to_client.append(line)

    def _active_refused_hint(self, line: bytes) -> bytes:
        """The server refused a rewritten PORT/EPRT (vsftpd: "500 Illegal PORT command.":
        it accepts only its control peer's address, and the SSH server's listener is
        another): say what to do, in the log and, on a one-line reply, to the client."""
        self._log.warning("FTP server refused the rewritten PORT/EPRT (%s): it must reach "
                          "the SSH server's remote forward; give --active-address <the SSH "
                          "host as the FTP server sees it>, or use --active-mode passive",
                          printable(line.rstrip(b"\r\n")[:80]))
        if line[3:4] != b" " or len(line) > 300:
            return line  # a multi-line reply: its last line ends it, left as it is
        return (line.rstrip(b"\r\n") + b" (ftptrio: the FTP server must reach the SSH "
                b"server's listener; try --active-address or --active-mode passive)\r\n")

    def _reply_complete(self, code: int, last_line: bytes) -> None:
        captured, self._captured = self._captured, None
        if code < 200:
            if captured:
                self.to_client.extend(captured)
            return
        if not self._pending:
            if code in (227, 229):
                self._withhold_passive(code)
            elif captured:
                self.to_client.extend(captured)
            return
        entry = self._pending.popleft()
        if entry.kind is Awaits.TRANSFER and code in (227, 229):  # (captured:
            self.to_client.append(TransferReplied(code))  # _reply_to_client did not)
        text = b" ".join(l.rstrip(b"\r\n") for l in captured) if captured else last_line
        passive = _PASSIVE_KINDS.get(entry.kind)
        if passive is not None and code == passive[0]:
            self._passive_reply(entry, code, text, extended=passive[1])
        elif (entry.kind in (Awaits.PASV, Awaits.EPSV) and code in _NOT_SUPPORTED and captured
              and not self._pending):
            self._translate_passive(entry, code)
        elif entry.kind is Awaits.CONVERTED and code in (227, 229):
            self._converted_reply(entry, code, text)
        else:
            if code in (227, 229):
                self._withhold_passive(code)
            elif captured:
                self.to_client.extend(captured)
            after = _AFTER_REPLY.get(entry.kind)
            if after is not None:
                after(self, entry, code, last_line)
        self._release_local_replies()

    # what a final reply means beyond itself, by what it answers (the table _AFTER_REPLY)
    def _after_converted(self, entry: _Pending, code: int, last_line: bytes) -> None:
        assert entry.request is not None
        self._log.warning("server refused passive mode while converting %s: %s",
                          "EPRT" if entry.request.extended else "PORT",
                          printable(last_line.rstrip(b"\r\n")[:80]))

    def _after_active(self, entry: _Pending, code: int, last_line: bytes) -> None:
        assert entry.request is not None
        if code >= 400:
            self.to_client.append(ActiveRefused(entry.request.id))
        elif code // 100 == 2:
            self.to_client.append(ActiveAccepted(entry.request.id))

    def _after_auth(self, entry: _Pending, code: int, last_line: bytes) -> None:
        if code == 234:
            self._log.warning("AUTH accepted by server: control channel is now opaque")
            self.opaque = True

    def _after_rein(self, entry: _Pending, code: int, last_line: bytes) -> None:
        if code // 100 == 2:
            self._log.debug("REIN: session state reset")

    def _parse_offer(self, code: int, text: bytes, channel_id: int) -> PassiveOffer:
        if code == 227:
            host, port = _scan.parse_227(text)
            offer = PassiveOffer(host, port, False, channel_id)
        else:
            offer = PassiveOffer(None, _scan.parse_229(text), True, channel_id)
        if offer.port < 1024:
            raise BadDataAddress(f"privileged port {offer.port} in {code} reply")
        return offer

    def _passive_reply(self, entry: _Pending, code: int, text: bytes, *,
                       extended: bool) -> None:
        try:
            offer = self._parse_offer(code, text, entry.channel_id)
        except BadDataAddress as exc:
            self._log.warning("invalid %d reply from FTP server: %s; answered 425", code, exc)
            self.to_client.append(self._data_failed_reply(str(exc)))
            return
        if offer.extended != extended:
            offer = PassiveOffer(offer.host, offer.port, extended, offer.id)
        self.to_client.append(offer)

    def _translate_passive(self, entry: _Pending, code: int) -> None:
        """The server refused PASV (or EPSV): ask with the other command instead (for
        the same data channel)."""
        pasv = entry.kind is Awaits.PASV
        refused, other = (b"PASV", b"EPSV") if pasv else (b"EPSV", b"PASV")
        self._log.info("FTP server answered %d to %s; translating to %s", code,
                       refused.decode(), other.decode())
        self._server_lacks = refused
        self._expect(_Pending(Awaits.PASV_VIA_EPSV if pasv else Awaits.EPSV_VIA_PASV,
                              channel_id=entry.channel_id))
        self.to_server.append(other + b"\r\n")

    def _converted_reply(self, entry: _Pending, code: int, text: bytes) -> None:
        request = entry.request
        assert request is not None
        try:
            offer = self._parse_offer(code, text, request.id)
        except BadDataAddress as exc:
            self._log.warning("invalid %d reply while converting active mode: %s", code, exc)
            self.to_client.append(self._data_failed_reply(str(exc)))
            return
        self.to_client.append(ConvertedActive(request.host, request.port, offer.host,
                                              offer.port, request.extended, request.id))


_CommandHandler = Callable[[ControlChannel, bytes, bytes, bytes, int], None]
#: command word -> its rule (every other command is forwarded as it is)
_COMMANDS: dict[bytes, _CommandHandler] = {
    b"QUIT": ControlChannel._quit,
    b"USER": ControlChannel._user,
    b"TYPE": ControlChannel._type,
    b"PASV": ControlChannel._pasv,
    b"EPSV": ControlChannel._epsv,
    b"PORT": ControlChannel._active_command,
    b"EPRT": ControlChannel._active_command,
    b"LPRT": ControlChannel._long_address_command,
    b"LPSV": ControlChannel._long_address_command,
    b"AUTH": ControlChannel._auth,
    b"REIN": ControlChannel._rein,
    b"ABOR": ControlChannel._abor,
    **{verb: ControlChannel._transfer for verb in _TRANSFER_VERBS},
}


_AfterReply = Callable[[ControlChannel, _Pending, int, bytes], None]
#: what a final reply to these commands also means (passive replies are read above)
_AFTER_REPLY: dict[Awaits, _AfterReply] = {
    Awaits.CONVERTED: ControlChannel._after_converted,
    Awaits.ACTIVE: ControlChannel._after_active,
    Awaits.AUTH: ControlChannel._after_auth,
    Awaits.REIN: ControlChannel._after_rein,
}


def _ascii(text: str) -> bytes:
    """ftptrio's own reply text: one line (CR, LF and escapes shown in octal), ASCII."""
    return visible(text).encode("ascii", "replace")


def _after_lines(buffer: bytes, count: int) -> bytes:
    """What follows the first ``count`` LF-terminated lines of buffer."""
    position = -1
    for _ in range(count):
        position = buffer.index(b"\n", position + 1)
    return buffer[position + 1:]
