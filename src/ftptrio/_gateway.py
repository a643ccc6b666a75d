"""The team gateway's FTP-proxy login: ftptrio greets the client itself, reads
``USER user@host[:port]`` (or ``SITE host`` / ``OPEN host``, then ``USER user``) and
decides the session's destination against the ``--allow-destination`` rules
(``_access``); the session then opens the control channel through SSH, reads the
server's greeting here, and goes on as a ``-L`` session to that host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import trio

from . import _scan
from ._access import (DestinationRule, LoginRefused, check_user_name, destination_allowed,
                      parse_host_port, split_proxy_user)
from ._errors import LineTooLong
from ._text import visible

#: how long a client may take to name its destination before it gets 421
LOGIN_TIMEOUT = 60.0
#: commands a client may send before naming a valid destination before it gets 421
MAX_LOGIN_COMMANDS = 16


@dataclass(frozen=True, slots=True)
class ProxyLogin:
    """A client's decided destination, the user name it logs in with, and the bytes
    it sent after its USER line (pipelined commands, PASS first)."""

    user: bytes
    host: str
    port: int
    rest: bytes = b""


#: ftptrio's greeting on a proxy listener
GREETING = (b"220 ftptrio FTP proxy: log in as USER user@host[:port] "
            b"(or OPEN host, then USER user).\r\n")


class _Login:
    """The proxy login dialogue of one client (sans I/O): lines in, replies out,
    until a destination is decided."""

    def __init__(self, rules: Sequence[DestinationRule], session_log: logging.LoggerAdapter[logging.Logger],
                 client: str) -> None:
        self.rules = rules
        self._log = session_log
        self.client = client
        #: set by OPEN/SITE host: the next USER names only the user
        self.chosen: tuple[str, int] | None = None
        self.replies: list[bytes] = []
        self.quit = False
        self.commands = 0
        #: destinations refused (by the allow-list or as malformed)
        self.refusals: list[str] = []

    def line(self, verb: bytes, arg: bytes, flags: int) -> tuple[bytes, str, int] | None:
        """One command line; (user, host, port) once decided, else None."""
        self.commands += 1
        if flags & (_scan.FLAG_NUL | _scan.FLAG_BARE_CR | _scan.FLAG_BAD_TELNET):
            self._reply("500 ftptrio: invalid characters in command line rejected.")
            return None
        if verb == b"QUIT":
            self._reply("221 Goodbye.")
            self.quit = True
            return None
        try:
            if verb == b"USER":
                return self._user(arg)
            if verb in (b"OPEN", b"SITE"):
                self._open(arg)
                return None
        except LoginRefused as exc:
            self._refuse(str(exc))
            return None
        if verb == b"PASS":
            self._reply("503 ftptrio: log in with USER user@host[:port] first.")
        else:
            self._reply("530 ftptrio: log in with USER user@host[:port] first.")
        return None

    def _user(self, arg: bytes) -> tuple[bytes, str, int] | None:
        parsed = split_proxy_user(arg.strip())
        if parsed is None:
            if self.chosen is None:
                raise LoginRefused("no destination: log in as USER user@host[:port]")
            check_user_name(arg.strip())
            parsed = (arg.strip(), *self.chosen)
        user, host, port = parsed
        self._check(host, port)
        return user, host, port

    def _open(self, arg: bytes) -> None:
        try:
            text = arg.strip().decode("ascii")
        except UnicodeDecodeError:
            raise LoginRefused("bad destination host (not ASCII)") from None
        words = text.split()
        if len(words) == 2 and words[1].isdigit():  # OPEN host port (ftp(1)'s form)
            where = f"[{words[0]}]" if ":" in words[0] and "[" not in words[0] else words[0]
            host, port = parse_host_port(f"{where}:{words[1]}")
        else:
            host, port = parse_host_port(words[0] if words else "")
        self._check(host, port)
        self.chosen = (host, port)
        self._reply(f"200 ftptrio: destination {_where(host, port)} accepted; "
                    "send USER user.")

    def _check(self, host: str, port: int) -> None:
        if not destination_allowed(self.rules, host, port):
            raise LoginRefused(f"destination {_where(host, port)} is not allowed "
                               "(--allow-destination)")

    def _refuse(self, reason: str) -> None:
        self.refusals.append(reason)
        self._log.warning("proxy login from %s refused: %s", self.client, reason)
        self._reply(f"530 ftptrio: {reason}.")

    def _reply(self, text: str) -> None:
        self.replies.append(visible(text).encode("ascii", "replace") + b"\r\n")


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def proxy_login(client: trio.abc.Stream, rules: Sequence[DestinationRule],
                      session_log: logging.LoggerAdapter[logging.Logger],
                      client_addr: str, max_line: int,
                      timeout: float = LOGIN_TIMEOUT) -> tuple[ProxyLogin | None, int]:
    """Greet ``client`` as an FTP proxy and read its login until a destination that
    ``rules`` allow is named: (the login, None if the client quit or failed; the
    number of destinations refused). Nothing is opened through SSH here."""
    login = _Login(rules, session_log, client_addr)
    lines = _scan.LineSplitter(min(max_line, 2047))
    try:
        with trio.move_on_after(timeout) as timer:
            await client.send_all(GREETING)
            while True:
                data = await client.receive_some(4096)
                if not data:
                    return None, len(login.refusals)
                try:
                    commands = lines.feed_commands(bytes(data))
                    too_long = False
                except LineTooLong as exc:
                    commands, too_long = exc.lines, True
                for index, (_line, verb, arg, flags) in enumerate(commands):
                    decided = login.line(verb, arg, flags)
                    if decided is not None:
                        await client.send_all(b"".join(login.replies))
                        rest = b"".join(line for line, *_ in commands[index + 1:])
                        return (ProxyLogin(*decided, rest=rest + lines.pending),
                                len(login.refusals))
                    if login.quit:
                        break
                if too_long:
                    login.replies.append(b"500 ftptrio: command line too long; closing.\r\n")
                elif login.commands >= MAX_LOGIN_COMMANDS and not login.quit:
                    login.replies.append(b"421 ftptrio: no valid destination named; "
                                         b"closing.\r\n")
                await client.send_all(b"".join(login.replies))
                login.replies.clear()
                if login.quit or too_long or login.commands >= MAX_LOGIN_COMMANDS:
                    return None, len(login.refusals)
        if timer.cancelled_caught:
            session_log.info("proxy login from %s: no destination within %.0f s",
                             client_addr, timeout)
            with trio.move_on_after(5):
                await client.send_all(b"421 ftptrio: login timeout; closing.\r\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return None, len(login.refusals)


async def read_greeting(server: trio.abc.Stream, max_line: int,
                        timeout: float) -> tuple[int, str, bytes]:
    """The FTP server's greeting, read and kept from the client (it had ftptrio's):
    (its code, its last line's text for messages, bytes that followed it). A code
    of 0: none came (closed, timed out or not FTP)."""
    lines = _scan.LineSplitter(max_line)
    multiline: bytes | None = None
    with trio.move_on_after(timeout):
        while True:
            data = await server.receive_some(4096)
            if not data:
                break
            try:
                replies = lines.feed_replies(bytes(data))
            except LineTooLong:
                break
            for index, (line, code, flags) in enumerate(replies):
                if multiline is not None:
                    if line[:3] != multiline or line[3:4] != b" ":
                        continue
                    multiline = None
                elif flags & _scan.FLAG_CONTINUES:
                    multiline = line[:3]
                    continue
                if code >= 200:
                    text = visible(line.rstrip(b"\r\n").decode("latin-1"))[:200]
                    rest = b"".join(later for later, *_ in replies[index + 1:])
                    return code, text, rest + lines.pending
    return 0, "no greeting", b""
