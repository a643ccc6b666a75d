"""Pure-Python control-channel scanner: line splitting and 227/229/PORT/EPRT parsing.

This is the reference implementation; ``_rewrite.pyx`` is its Cython twin and must
behave identically (same return values, same exception types and messages), which
``tests/unit/test_rewrite_differential.py`` checks. Use it through ``ftptrio._scan``.

Every function accepts hostile input of any length: the only exceptions that escape
are ``LineTooLong`` and ``BadDataAddress`` (and ``ValueError`` from ``format_*``
for bad arguments).
"""

from __future__ import annotations

import ipaddress
import re

from ._errors import BadDataAddress, LineTooLong

__all__ = [
    "FLAG_BAD_TELNET",
    "FLAG_BARE_CR",
    "FLAG_CONTINUES",
    "FLAG_NUL",
    "FLAG_TELNET",
    "MAX_LINE",
    "LineSplitter",
    "format_227",
    "format_229",
    "format_eprt",
    "format_port",
    "parse_227",
    "parse_229",
    "parse_eprt_arg",
    "parse_port_arg",
    "parse_reply_code",
    "reply_text_line",
    "split_command",
    "telnet_decode",
]

#: Longest accepted control line in bytes, terminator included.
MAX_LINE = 4096

#: ``flags`` bits of ``LineSplitter.feed_replies`` / ``feed_commands``.
FLAG_CONTINUES = 1  # reply line ``xyz-``: a multi-line reply continues
FLAG_NUL = 2  # the line contains a NUL byte
FLAG_BARE_CR = 4  # the line contains a CR not immediately followed by its final LF
FLAG_TELNET = 8  # command line: Telnet commands (IAC IP, IAC DM, IAC WILL x ...) were removed
FLAG_BAD_TELNET = 16  # command line: an IAC that is no supported Telnet command, or cut short

IAC = 0xFF
#: Telnet commands removed from a command line: NOP, DM, BRK, IP, AO, AYT, GA (2 bytes)
_TELNET_SKIP = frozenset((241, 242, 243, 244, 245, 246, 249))
#: WILL, WONT, DO, DONT: 3 bytes with the option
_TELNET_OPTION = frozenset((251, 252, 253, 254))

_DIGITS = frozenset(b"0123456789")
_NUMBER_RUN = re.compile(rb"[0-9]+(?:,[0-9]+)*")
_PORT_ARG = re.compile(rb"([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3})")


class LineSplitter:
    """Split a control-channel byte stream into lines, whatever the TCP segmentation.

    ``feed`` returns every complete line (terminator included: CRLF stays CRLF, a bare
    LF line is returned as is) and buffers the incomplete tail. A line longer than
    ``max_line`` bytes raises ``LineTooLong`` in the very ``feed`` call that delivers
    its ``max_line + 1``-th byte, whatever the split; the complete lines of that call
    that precede it are attached to the exception as ``exc.lines``. After that the
    splitter is failed: every later ``feed`` raises ``LineTooLong`` again (resuming in
    the middle of an overlong line would misread the rest of it as a new line).
    """

    __slots__ = ("_buf", "_max_line", "_failed")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if isinstance(max_line, bool) or not isinstance(max_line, int) or max_line < 1:
            raise ValueError(f"max_line must be a positive integer, got {max_line!r}")
        self._max_line = max_line
        self._buf = b""
        self._failed = False

    @property
    def pending(self) -> bytes:
        """The buffered incomplete tail (no LF yet)."""
        return self._buf

    def _fail(self, lines: list[bytes]) -> LineTooLong:
        self._failed = True
        self._buf = b""
        exc = LineTooLong(f"control line longer than {self._max_line} bytes")
        exc.lines = lines
        return exc

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the complete lines it finishes, in order."""
        if self._failed:
            raise self._fail([])
        if type(data) is not bytes:
            data = bytes(data)
        if self._buf:
            data = self._buf + data
        max_line = self._max_line
        if b"\n" not in data:
            if len(data) > max_line:
                raise self._fail([])
            self._buf = data
            return []
        parts = data.split(b"\n")
        tail = parts.pop()
        # A part of length >= max_line makes a line (part + LF) longer than max_line.
        if max(map(len, parts)) >= max_line:
            for index, part in enumerate(parts):
                if len(part) >= max_line:
                    raise self._fail([p + b"\n" for p in parts[:index]])
        if len(tail) > max_line:
            raise self._fail([p + b"\n" for p in parts])
        self._buf = tail
        return [p + b"\n" for p in parts]

    def feed_replies(self, data: bytes) -> list[tuple[bytes, int, int]]:
        """``feed`` for the server stream: ``(line, code, flags)`` per complete line.

        ``line`` has its ending normalised to CRLF (a bare LF becomes CRLF); ``code`` is
        the reply code as ``parse_reply_code`` reads it, or -1; ``flags`` combines
        ``FLAG_CONTINUES`` (``xyz-``), ``FLAG_NUL`` and ``FLAG_BARE_CR``, the last two
        judged on the line as received. ``LineTooLong`` is raised exactly as by ``feed``,
        with ``exc.lines`` in this tuple form.
        """
        try:
            lines = self.feed(data)
        except LineTooLong as exc:
            exc.lines = _reply_tuples(exc.lines)
            raise
        return _reply_tuples(lines)

    def feed_commands(self, data: bytes) -> list[tuple[bytes, bytes, bytes, int]]:
        """``feed`` for the client stream: ``(line, VERB, argument, flags)`` per line.

        Telnet sequences are interpreted everywhere in the line (``telnet_decode``), as a
        server such as ProFTPD reads it: ``line`` is the decoded line in canonical form
        (every literal 0xFF written as IAC IAC, CRLF ending), the only form that may be
        forwarded; ``VERB`` and ``argument`` are ``split_command(line)`` of the decoded
        line; ``flags`` combines ``FLAG_NUL`` and ``FLAG_BARE_CR`` (judged on the line as
        received), ``FLAG_TELNET`` and ``FLAG_BAD_TELNET``.
        ``LineTooLong`` is raised exactly as by ``feed``, ``exc.lines`` in this tuple form.
        """
        try:
            lines = self.feed(data)
        except LineTooLong as exc:
            exc.lines = _command_tuples(exc.lines)
            raise
        return _command_tuples(lines)


def _crlf_and_bad_flags(line: bytes) -> tuple[bytes, int]:
    """(line with a CRLF ending, FLAG_NUL | FLAG_BARE_CR bits) for a complete line."""
    flags = FLAG_NUL if b"\0" in line else 0
    if line.endswith(b"\r\n"):
        if line.find(b"\r", 0, len(line) - 2) >= 0:
            flags |= FLAG_BARE_CR
        return line, flags
    if line.find(b"\r", 0, len(line) - 1) >= 0:
        flags |= FLAG_BARE_CR
    return line[:-1] + b"\r\n", flags


def _reply_tuples(lines: list[bytes]) -> list[tuple[bytes, int, int]]:
    result = []
    for line in lines:
        crlf, flags = _crlf_and_bad_flags(line)
        parsed = parse_reply_code(line)
        if parsed is None:
            code = -1
        else:
            code, continues = parsed
            if continues:
                flags |= FLAG_CONTINUES
        result.append((crlf, code, flags))
    return result


def _command_tuples(lines: list[bytes]) -> list[tuple[bytes, bytes, bytes, int]]:
    result = []
    for line in lines:
        crlf, flags = _crlf_and_bad_flags(line)
        if IAC in line:
            body, telnet_flags = telnet_decode(crlf[:-2])
            flags |= telnet_flags
            crlf = body.replace(b"\xff", b"\xff\xff") + b"\r\n"
            verb, arg = _split_body(body)
        else:
            verb, arg = split_command(line)
        result.append((crlf, verb, arg, flags))
    return result


def _line_body(line: bytes) -> bytes:
    """``line`` without its terminator (a final LF, with the CR before it)."""
    if line[-1:] == b"\n":
        return line[:-2] if line[-2:-1] == b"\r" else line[:-1]
    return line


def telnet_decode(body: bytes) -> tuple[bytes, int]:
    """``(decoded, flags)``: a command line body as a Telnet-reading server sees it.

    RFC 854 on the whole body, not only its start: IAC IAC is a literal 0xFF; IAC
    NOP/DM/BRK/IP/AO/AYT/GA (2 bytes) and IAC WILL/WONT/DO/DONT x (3 bytes) are removed
    (``FLAG_TELNET``); any other IAC sequence (SB, SE, EC, EL, a non-command byte) or one
    cut short by the end of the line sets ``FLAG_BAD_TELNET`` and is dropped.
    """
    if IAC not in body:
        return body, 0
    out = bytearray()
    flags = 0
    n = len(body)
    i = 0
    while i < n:
        ch = body[i]
        if ch != IAC:
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            flags |= FLAG_BAD_TELNET
            break
        command = body[i + 1]
        if command == IAC:
            out.append(IAC)
            i += 2
        elif command in _TELNET_OPTION:
            if i + 2 >= n:
                flags |= FLAG_BAD_TELNET
                break
            flags |= FLAG_TELNET
            i += 3
        elif command in _TELNET_SKIP:
            flags |= FLAG_TELNET
            i += 2
        else:
            flags |= FLAG_BAD_TELNET
            i += 2
    return bytes(out), flags


def parse_reply_code(line: bytes) -> tuple[int, bool] | None:
    """``(code, continues)`` for a line starting with a 3-digit reply code, else None.

    The code must be followed by ``' '``, ``'-'`` (continues=True), CR, LF or the end.
    """
    if len(line) < 3:
        return None
    a, b, c = line[0], line[1], line[2]
    if not (48 <= a <= 57 and 48 <= b <= 57 and 48 <= c <= 57):
        return None
    if len(line) == 3:
        return (a * 100 + b * 10 + c - 5328, False)
    sep = line[3]
    if sep == 45:  # '-'
        return (a * 100 + b * 10 + c - 5328, True)
    if sep == 32 or sep == 13 or sep == 10:
        return (a * 100 + b * 10 + c - 5328, False)
    return None


def reply_text_line(line: bytes) -> bytes:
    """An inner line of a multi-line reply, made text for every client: a line that
    starts with three digits not followed by ``-`` gets a leading space (RFC 959
    continuation text), since curl, wget, lftp and tnftp end a reply at any
    ``ddd `` line and Python's ftplib at its own code followed by anything but ``-``."""
    if (len(line) >= 3 and 48 <= line[0] <= 57 and 48 <= line[1] <= 57
            and 48 <= line[2] <= 57 and line[3:4] != b"-"):
        return b" " + line
    return line


def split_command(line: bytes) -> tuple[bytes, bytes]:
    """``(VERB, argument)`` of a command line as the server reads it.

    Telnet sequences anywhere in the line are interpreted first (``telnet_decode``);
    leading spaces are skipped; the verb runs to the first space, CR or LF and is ASCII
    upper-cased; one space separating the argument is dropped, as is the line's
    terminator (a final LF, with the CR before it).
    """
    return _split_body(telnet_decode(_line_body(line))[0])


def _split_body(body: bytes) -> tuple[bytes, bytes]:
    n = len(body)
    i = 0
    while i < n and body[i] == 32:
        i += 1
    j = i
    while j < n:
        ch = body[j]
        if ch == 32 or ch == 13 or ch == 10:
            break
        j += 1
    verb = body[i:j].upper()
    if j < n and body[j] == 32:
        j += 1
    return verb, body[j:]


def parse_227(line: bytes) -> tuple[str, int]:
    """``(host, port)`` from a 227 reply (RFC 1123 4.1.2.6: free-form text).

    Scans the text after the 3-digit code for the first run of exactly six
    comma-separated numbers; shorter runs are skipped, a longer run is an error.
    """
    for match in _NUMBER_RUN.finditer(line, 3):
        numbers = match.group().split(b",")
        if len(numbers) < 6:
            continue
        if len(numbers) > 6:
            raise BadDataAddress("more than six comma-separated numbers in 227 reply")
        values = []
        for number in numbers:
            if len(number) > 3:
                raise BadDataAddress("number with more than 3 digits in 227 reply")
            value = int(number)
            if value > 255:
                raise BadDataAddress(f"octet {value} out of range in 227 reply")
            values.append(value)
        port = values[4] * 256 + values[5]
        if port == 0:
            raise BadDataAddress("port 0 in 227 reply")
        return f"{values[0]}.{values[1]}.{values[2]}.{values[3]}", port
    raise BadDataAddress("no h1,h2,h3,h4,p1,p2 in 227 reply")


def _check_port_digits(digits: bytes, where: str) -> int:
    if not digits:
        raise BadDataAddress(f"missing port in {where}")
    if len(digits) > 5:
        raise BadDataAddress(f"port with more than 5 digits in {where}")
    port = int(digits)
    if port == 0:
        raise BadDataAddress(f"port 0 in {where}")
    if port > 65535:
        raise BadDataAddress(f"port {port} out of range in {where}")
    return port


def parse_229(line: bytes) -> int:
    """The port of a 229 reply: ``(<d><d><d>port<d>)`` in the text after the code (RFC 2428).

    ``d`` is one character in 33..126 other than a digit, the same all four times.
    Each ``(`` is tried in turn; the first that opens a well-formed group decides.
    """
    n = len(line)
    start = line.find(b"(", 3)
    while start >= 0:
        i = start + 1
        if i + 3 < n:
            d = line[i]
            if 33 <= d <= 126 and d not in _DIGITS and line[i + 1] == d and line[i + 2] == d:
                j = i + 3
                while j < n and line[j] in _DIGITS:
                    j += 1
                if j + 1 < n and line[j] == d and line[j + 1] == 41:  # ')'
                    return _check_port_digits(line[i + 3:j], "229 reply")
        start = line.find(b"(", start + 1)
    raise BadDataAddress("no (<d><d><d>port<d>) in 229 reply")


def parse_port_arg(arg: bytes) -> tuple[str, int]:
    """``(host, port)`` from a PORT argument: exactly ``h1,h2,h3,h4,p1,p2``."""
    match = _PORT_ARG.fullmatch(arg.strip(b" \t"))
    if match is None:
        raise BadDataAddress("PORT argument is not six comma-separated numbers h1,h2,h3,h4,p1,p2")
    values = []
    for number in match.groups():
        value = int(number)
        if value > 255:
            raise BadDataAddress(f"octet {value} out of range in PORT argument")
        values.append(value)
    port = values[4] * 256 + values[5]
    if port == 0:
        raise BadDataAddress("port 0 in PORT argument")
    return f"{values[0]}.{values[1]}.{values[2]}.{values[3]}", port


def parse_eprt_arg(arg: bytes) -> tuple[int, str, int]:
    """``(proto, address, port)`` from an EPRT argument ``<d>proto<d>addr<d>port<d>``.

    proto 1 = IPv4, 2 = IPv6; the address is validated with ``ipaddress`` (zone
    indexes such as ``%eth0`` are refused) and returned compressed.
    """
    arg = arg.strip(b" \t")
    if len(arg) < 2:
        raise BadDataAddress("EPRT argument is not <d>proto<d>addr<d>port<d>")
    d = arg[0]
    if not 33 <= d <= 126 or d in _DIGITS:
        raise BadDataAddress("EPRT delimiter must be a character in 33..126 other than a digit")
    parts = arg.split(arg[:1])
    if len(parts) != 5 or parts[0] or parts[4]:
        raise BadDataAddress("EPRT argument is not <d>proto<d>addr<d>port<d>")
    proto_field, addr_field, port_field = parts[1], parts[2], parts[3]
    if proto_field == b"1":
        proto = 1
    elif proto_field == b"2":
        proto = 2
    else:
        raise BadDataAddress("EPRT network protocol must be 1 (IPv4) or 2 (IPv6)")
    family = "IPv4" if proto == 1 else "IPv6"
    try:
        if not addr_field.isascii() or b"%" in addr_field:
            raise ValueError
        address = ipaddress.ip_address(addr_field.decode("ascii"))
        if address.version != (4 if proto == 1 else 6):
            raise ValueError
    except ValueError:
        raise BadDataAddress(
            f"invalid {family} address {addr_field[:64]!r} in EPRT argument") from None
    if not all(ch in _DIGITS for ch in port_field):
        raise BadDataAddress("EPRT port is not a decimal number")
    port = _check_port_digits(port_field, "EPRT argument")
    return proto, address.compressed, port


# ---------------------------------------------------------------- formatting

def _check_port_arg(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    return port


def _ipv4_octets(host: object) -> bytes:
    if not isinstance(host, str):
        raise ValueError(f"host must be an IPv4 address string, got {host!r}")
    try:
        return ipaddress.IPv4Address(host).packed
    except ValueError:
        raise ValueError(f"host must be a dotted IPv4 address, got {host!r}") from None


def format_227(host: str, port: int) -> bytes:
    """``227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).`` + CRLF."""
    o = _ipv4_octets(host)
    p = _check_port_arg(port)
    return (f"227 Entering Passive Mode ({o[0]},{o[1]},{o[2]},{o[3]},"
            f"{p >> 8},{p & 255}).\r\n").encode("ascii")


def format_229(port: int) -> bytes:
    """``229 Entering Extended Passive Mode (|||port|)`` + CRLF."""
    p = _check_port_arg(port)
    return f"229 Entering Extended Passive Mode (|||{p}|)\r\n".encode("ascii")


def format_port(host: str, port: int) -> bytes:
    """``PORT h1,h2,h3,h4,p1,p2`` + CRLF."""
    o = _ipv4_octets(host)
    p = _check_port_arg(port)
    return f"PORT {o[0]},{o[1]},{o[2]},{o[3]},{p >> 8},{p & 255}\r\n".encode("ascii")


def format_eprt(host: str, port: int) -> bytes:
    """``EPRT |1|host|port|`` (``|2|`` for IPv6) + CRLF; the address is normalised."""
    if not isinstance(host, str):
        raise ValueError(f"host must be an IP address string, got {host!r}")
    try:
        if "%" in host:
            raise ValueError
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IPv4 or IPv6 address, got {host!r}") from None
    p = _check_port_arg(port)
    proto = 1 if address.version == 4 else 2
    return f"EPRT |{proto}|{address.compressed}|{p}|\r\n".encode("ascii")
