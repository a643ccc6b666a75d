"""Differential and fuzz tests: the Cython and Python scanners must agree on everything.

Random and mutated control transcripts, split at random points, go through both
implementations; lines, return values, exception types and messages must be identical,
and only the documented exceptions may escape.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftptrio._errors import BadDataAddress, LineTooLong

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

REALISTIC_LINES = [
    b"220 (vsFTPd 3.0.5)\r\n",
    b"220-Welcome\r\n", b"220-\r\n", b"220 ready\r\n",
    b"USER anonymous\r\n", b"user ftp\n", b"331 Please specify the password.\r\n",
    b"PASS secret\r\n", b"230 Login successful.\r\n",
    b"SYST\r\n", b"215 UNIX Type: L8\r\n", b"FEAT\r\n",
    b"211-Features:\r\n", b" EPRT\r\n", b" EPSV\r\n", b" PASV\r\n", b" UTF8\r\n", b"211 End\r\n",
    b"PASV\r\n", b"pasv\r\n", b"EPSV\r\n", b"EPSV ALL\r\n", b"epsv 2\r\n",
    b"227 Entering Passive Mode (192,168,1,2,4,1).\r\n",
    b"227 Entering passive mode (127,0,0,1,195,80).\r\n",
    b"227 Entering Passive Mode (127,0,0,1,195,80)\r\n",
    b"227 Entering Passive Mode 127,0,0,1,195,80\r\n",
    b"227 =10,0,0,1,4,1\r\n",
    b"227 Entering Passive Mode (10,0,0,256,4,1).\r\n",
    b"227 Entering Passive Mode (10,0,0,1,0,0).\r\n",
    b"227 Entering Passive Mode (10,0,0,1,4).\r\n",
    b"227 Entering Passive Mode (10,0,0,1,4,1,7).\r\n",
    b"227-Entering Passive Mode\r\n", b"227 (10,0,0,1,4,1)\r\n",
    b"229 Entering Extended Passive Mode (|||6446|)\r\n",
    b"229 Entering Extended Passive Mode (!!!6446!)\r\n",
    b"229 Entering Extended Passive Mode (~~~6446~)\r\n",
    b"229 Entering Extended Passive Mode (|||0|)\r\n",
    b"229 Entering Extended Passive Mode (|||65536|)\r\n",
    b"229 Entering Extended Passive Mode (||!6446|)\r\n",
    b"PORT 10,0,0,1,4,1\r\n", b"port 127,0,0,1,195,80\r\n", b"PORT 1,2,3,4,0,0\r\n",
    b"PORT 1,2,3,4,5\r\n", b"PORT 1,2,3,256,5,6\r\n",
    b"EPRT |1|132.235.1.2|6275|\r\n", b"EPRT |2|1080::8:800:200C:417A|5282|\r\n",
    b"eprt !2!::1!21!\r\n", b"EPRT |3|1.2.3.4|21|\r\n", b"EPRT |1|::1|21|\r\n",
    b"200 PORT command successful. Consider using PASV.\r\n",
    b"150 Here comes the directory listing.\r\n", b"226 Directory send OK.\r\n",
    b"LIST\r\n", b"RETR file.txt\r\n", b"STOR dir/na me.bin\r\n", b"TYPE I\r\n",
    b"\xff\xf4\xff\xf2ABOR\r\n", b"\xff\xfb\x01NOOP\r\n", b"226 ABOR successful\r\n",
    b"AUTH TLS\r\n", b"534 Policy refuses TLS\r\n", b"QUIT\r\n", b"221 Goodbye.\r\n",
    b"\r\n", b"\n", b"NOOP\x00\r\n", b"MKD a\rb\r\n", b"500 \xff\xfe bad\r\n",
    b"421 Timeout.\r\n", b"220", b"12", b"",
]

NUMBERISH = b"0123456789,()|!~=. -\r\n"


@st.composite
def mutated_line(draw):
    line = bytearray(draw(st.sampled_from(REALISTIC_LINES)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(line)))
        byte = draw(st.one_of(st.sampled_from(NUMBERISH), st.integers(0, 255)))
        if op == 0 or not line:
            line.insert(pos, byte)
        elif op == 1:
            del line[min(pos, len(line) - 1)]
        elif op == 2:
            line[min(pos, len(line) - 1)] = byte
        else:
            line[pos:pos] = draw(st.sampled_from([b"\r", b"\x00", b"\n", b",", b"255,",
                                                  b"999", b"(", b"|||", b"\xff\xfd"]))
    return bytes(line)


# number-heavy bytes exercise the 227/PORT scanners
LINE = st.one_of(
    st.sampled_from(REALISTIC_LINES),
    mutated_line(),
    st.binary(max_size=40),
    st.lists(st.sampled_from(NUMBERISH), max_size=40).map(bytes),
    st.builds(lambda n, c: c * n, st.integers(0, 300), st.sampled_from([b"x", b"1,", b"\r", b"("])),
)

TRANSCRIPT = st.lists(LINE, max_size=30).map(b"".join)


@st.composite
def splitter_case(draw, limits=(1, 2, 8, 64, 512, 4096)):
    """(max_line, transcript) with some lines right at the length limit."""
    max_line = draw(st.sampled_from(limits))
    boundary = st.builds(
        lambda extra, ending, fill: fill * max(0, max_line + extra - len(ending)) + ending,
        st.integers(-2, 2), st.sampled_from([b"\r\n", b"\n", b""]), st.sampled_from([b"a", b"\r"]))
    lines = draw(st.lists(st.one_of(LINE, boundary), max_size=30))
    return max_line, b"".join(lines)


def outcome(func, *args):
    """Return value, or (exception type name, message, attached lines) for comparison."""
    try:
        return ("ok", func(*args))
    except Exception as exc:  # noqa: BLE001 - the whole point is to compare them
        return ("raised", type(exc).__name__, str(exc), getattr(exc, "lines", None))


def run_splitter(module, max_line, chunks):
    splitter = module.LineSplitter(max_line)
    events = []
    for chunk in chunks:
        result = outcome(splitter.feed, chunk)
        events.append(result)
        if result[0] == "raised":
            # a failed splitter stays failed
            events.append(outcome(splitter.feed, b"more\r\n"))
            break
        events.append(splitter.pending)
    return events


def split_points(data, draw_points):
    points = sorted(p % (len(data) + 1) for p in draw_points)
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def all_results(module, line):
    verb, arg = module.split_command(line)
    return [
        outcome(module.parse_reply_code, line),
        outcome(module.reply_text_line, line),
        outcome(module.split_command, line),
        outcome(module.telnet_decode, line),
        outcome(module.parse_227, line),
        outcome(module.parse_229, line),
        outcome(module.parse_port_arg, arg),
        outcome(module.parse_eprt_arg, arg),
        outcome(module.parse_port_arg, line),
        outcome(module.parse_eprt_arg, line),
    ]


@SETTINGS
@given(case=splitter_case(), points=st.lists(st.integers(0, 10**6), max_size=12))
def test_splitter_differential(both_rewrites, case, points):
    py, cy = both_rewrites
    max_line, data = case
    chunks = split_points(data, points)
    assert run_splitter(py, max_line, chunks) == run_splitter(cy, max_line, chunks)


@SETTINGS
@given(case=splitter_case(), points=st.lists(st.integers(0, 10**6), max_size=12))
def test_splitter_split_invariance(both_rewrites, case, points):
    """Any split gives the lines of a one-shot feed (and the same error, if any)."""
    max_line, data = case
    for module in both_rewrites:
        def collect(chunks):
            splitter = module.LineSplitter(max_line)
            lines = []
            for chunk in chunks:
                try:
                    lines.extend(splitter.feed(chunk))
                except LineTooLong as exc:
                    return lines + exc.lines, str(exc)
            return lines, splitter.pending

        assert collect(split_points(data, points)) == collect([data])


FEED_METHODS = ("feed", "feed_replies", "feed_commands")


def run_bulk(module, max_line, chunks, methods):
    """Like run_splitter, with one method (feed / feed_replies / feed_commands) per chunk."""
    splitter = module.LineSplitter(max_line)
    events = []
    for chunk, method in zip(chunks, methods):
        result = outcome(getattr(splitter, method), chunk)
        events.append(result)
        if result[0] == "raised":
            events.append(outcome(getattr(splitter, method), b"more\r\n"))
            break
        events.append(splitter.pending)
    return events


@SETTINGS
@given(case=splitter_case(), points=st.lists(st.integers(0, 10**6), max_size=12),
       methods=st.lists(st.sampled_from(FEED_METHODS), min_size=13, max_size=13))
def test_bulk_differential(both_rewrites, case, points, methods):
    """feed_replies / feed_commands (mixed with feed): identical results and exceptions."""
    py, cy = both_rewrites
    max_line, data = case
    chunks = split_points(data, points)
    assert run_bulk(py, max_line, chunks, methods) == run_bulk(cy, max_line, chunks, methods)


def crlf(line):
    return line if line.endswith(b"\r\n") else line[:-1] + b"\r\n"


def bad_flags(line):
    body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    return (2 if b"\0" in line else 0) | (4 if b"\r" in body else 0)


def expected_bulk(module, method, lines):
    """What feed_replies / feed_commands must return for lines ``feed`` returned."""
    result: list[tuple[object, ...]] = []
    for line in lines:
        if method == "feed_replies":
            parsed = module.parse_reply_code(line)
            code, continues = parsed if parsed is not None else (-1, False)
            result.append((crlf(line), code, bad_flags(line) | int(continues)))
        else:
            verb, arg = module.split_command(line)
            decoded, telnet_flags = module.telnet_decode(crlf(line)[:-2])
            result.append((decoded.replace(b"\xff", b"\xff\xff") + b"\r\n", verb, arg,
                           bad_flags(line) | telnet_flags))
    return result


@SETTINGS
@given(case=splitter_case(), points=st.lists(st.integers(0, 10**6), max_size=12),
       method=st.sampled_from(["feed_replies", "feed_commands"]))
def test_bulk_matches_feed_and_split_invariant(both_rewrites, case, points, method):
    """Any split: the bulk method gives feed's lines + parse_reply_code / split_command +
    the flag rules, and raises where feed raises (same message, lines in tuple form)."""
    max_line, data = case
    for module in both_rewrites:
        def collect(name, chunks):
            splitter = module.LineSplitter(max_line)
            items = []
            for chunk in chunks:
                try:
                    items.extend(getattr(splitter, name)(chunk))
                except LineTooLong as exc:
                    return items + exc.lines, str(exc)
            return items, splitter.pending

        chunks = split_points(data, points)
        lines, end = collect("feed", chunks)
        assert collect(method, chunks) == (expected_bulk(module, method, lines), end)
        assert collect(method, [data]) == collect(method, chunks)


def test_bulk_every_split_point_of_sample(both_rewrites):
    sample = b"".join(REALISTIC_LINES[:-3]) + b"220 tail"
    results = []
    for module in both_rewrites:
        for method in ("feed_replies", "feed_commands"):
            expected = expected_bulk(module, method, module.LineSplitter().feed(sample))
            for point in range(len(sample) + 1):
                splitter = module.LineSplitter()
                got = getattr(splitter, method)(sample[:point])
                got += getattr(splitter, method)(sample[point:])
                assert got == expected, (module.__name__, method, point)
                assert splitter.pending == b"220 tail"
            results.append(expected)
    assert results[:2] == results[2:]


@SETTINGS
@given(data=TRANSCRIPT, points=st.lists(st.integers(0, 10**6), max_size=6))
def test_functions_differential(both_rewrites, data, points):
    py, cy = both_rewrites
    lines = py.LineSplitter(1 << 20).feed(data + b"\n")
    for chunk in split_points(data, points):  # arbitrary fragments too
        lines.append(chunk)
    for line in lines:
        assert all_results(py, line) == all_results(cy, line), line


HOSTS = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["", "localhost", "10.0.0.256", "010.0.0.1", "fe80::1%eth0", "1.2.3",
                     " 1.2.3.4", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8:9"]),
    st.text(max_size=20),
    st.integers(-1, 2**32),
    st.none(),
    st.binary(max_size=8),
)
PORTS = st.one_of(st.integers(-2, 70000), st.sampled_from([True, False, 1.0, "21", None]))


@SETTINGS
@given(host=HOSTS, port=PORTS)
def test_format_differential(both_rewrites, host, port):
    py, cy = both_rewrites
    for name in ("format_227", "format_port", "format_eprt"):
        assert outcome(getattr(py, name), host, port) == outcome(getattr(cy, name), host, port)
    assert outcome(py.format_229, port) == outcome(cy.format_229, port)
    for module in both_rewrites:
        for result in (outcome(module.format_227, host, port), outcome(module.format_eprt, host, port),
                       outcome(module.format_port, host, port), outcome(module.format_229, port)):
            assert result[0] == "ok" or result[1] == "ValueError"


@SETTINGS
@given(line=st.one_of(LINE, st.binary(max_size=200)), max_line=st.integers(1, 100))
def test_fuzz_only_documented_exceptions(rewrite, line, max_line):
    for func in (rewrite.parse_227, rewrite.parse_229, rewrite.parse_port_arg,
                 rewrite.parse_eprt_arg):
        try:
            func(line)
        except BadDataAddress:
            pass
    code = rewrite.parse_reply_code(line)
    assert code is None or (0 <= code[0] <= 999 and isinstance(code[1], bool))
    verb, arg = rewrite.split_command(line)
    assert type(verb) is bytes and type(arg) is bytes
    splitter = rewrite.LineSplitter(max_line)
    try:
        for i in range(0, len(line), 7):
            splitter.feed(line[i:i + 7])
    except LineTooLong:
        pass


@SETTINGS
@given(data=TRANSCRIPT)
def test_roundtrip_valid_results(both_rewrites, data):
    """Whatever parses successfully formats back to something that parses the same."""
    py, _ = both_rewrites
    for line in py.LineSplitter(1 << 20).feed(data + b"\n"):
        for module in both_rewrites:
            try:
                host, port = module.parse_227(line)
            except BadDataAddress:
                pass
            else:
                assert module.parse_227(module.format_227(host, port)) == (host, port)
            try:
                proto, host, port = module.parse_eprt_arg(module.split_command(line)[1])
            except BadDataAddress:
                pass
            else:
                again = module.split_command(module.format_eprt(host, port))[1]
                assert module.parse_eprt_arg(again) == (proto, host, port)


ADDRESS_TEXT = st.one_of(
    st.ip_addresses().map(lambda a: str(a).encode()),
    st.lists(st.sampled_from(b"0123456789.:abcdefABCDEF%"), max_size=24).map(bytes),
    st.lists(st.integers(0, 300), min_size=3, max_size=5).map(
        lambda xs: b".".join(b"%d" % x for x in xs)),
    st.lists(st.sampled_from([b"0", b"00", b"01", b"1", b"255", b"256", b"099", b"", b"1000"]),
             min_size=3, max_size=5).map(b".".join),
)


@SETTINGS
@given(addr=ADDRESS_TEXT, proto=st.sampled_from([b"1", b"2"]),
       delim=st.sampled_from([b"|", b"!", b":", b"."]))
def test_eprt_address_differential(both_rewrites, addr, proto, delim):
    """The Cython IPv4 fast path accepts exactly what ipaddress.IPv4Address accepts."""
    py, cy = both_rewrites
    arg = delim + proto + delim + addr + delim + b"21" + delim
    assert outcome(py.parse_eprt_arg, arg) == outcome(cy.parse_eprt_arg, arg)


def _mutate_text(draw, text):
    chars = list(text)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(chars)))
        char = draw(st.sampled_from(":0aF19.g%"))
        if op == 0 or not chars:
            chars.insert(pos, char)
        elif op == 1:
            del chars[min(pos, len(chars) - 1)]
        else:
            chars[min(pos, len(chars) - 1)] = char
    return "".join(chars)


@st.composite
def ipv6_text(draw):
    """IPv6 addresses in every spelling (compressed, exploded, upper case, with zero runs),
    then mutated: exercises the Cython EPRT IPv6 fast path against ipaddress."""
    hextets = draw(st.lists(st.one_of(st.just(0), st.integers(0, 15), st.integers(0, 0xFFFF)),
                            min_size=8, max_size=8))
    address = ipaddress.IPv6Address(int.from_bytes(
        b"".join(h.to_bytes(2, "big") for h in hextets), "big"))
    text = draw(st.sampled_from([address.compressed, address.exploded,
                                 address.exploded.upper(), address.compressed.upper()]))
    if draw(st.booleans()):
        text = _mutate_text(draw, text)
    return text.encode("ascii")


@SETTINGS
@given(addr=st.one_of(ipv6_text(), ADDRESS_TEXT))
def test_eprt_ipv6_matches_ipaddress(both_rewrites, addr):
    py, cy = both_rewrites
    arg = b"|2|" + addr + b"|21|"
    assert outcome(py.parse_eprt_arg, arg) == outcome(cy.parse_eprt_arg, arg)
    try:
        address = ipaddress.ip_address(addr.decode("ascii"))
        expected = address.compressed if address.version == 6 and b"%" not in addr else None
    except ValueError:
        expected = None
    result = outcome(cy.parse_eprt_arg, arg)
    assert (result[1][1] if result[0] == "ok" else None) == expected


# ------------------------------------------------- Telnet sequences anywhere in a command
TELNET_SEQUENCES = [
    b"\xff\xf4", b"\xff\xf2", b"\xff\xf1", b"\xff\xf5", b"\xff\xf6", b"\xff\xf3",
    b"\xff\xf9", b"\xff\xfb\x01", b"\xff\xfc\xff", b"\xff\xfd\x03", b"\xff\xfe\x00",
    b"\xff\xff", b"\xff", b"\xff\xfb", b"\xff\xf0", b"\xff\xf7", b"\xff\xf8",
    b"\xff\xfa", b"\xff\x41", b"\xff\r", b"\xff\x00",
]
COMMANDS = [b"PORT 127,0,0,1,0,22\r\n", b"EPRT |1|127.0.0.1|22|\r\n", b"PASS secret\r\n",
            b"AUTH TLS\r\n", b"ABOR\r\n", b"RETR file\n", b"PASV\r\n", b"EPSV ALL\r\n"]


@st.composite
def command_with_telnet(draw):
    """A command line with Telnet sequences (valid, invalid, cut short) at random places."""
    line = bytearray(draw(st.sampled_from(COMMANDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(line)))
        line[pos:pos] = draw(st.sampled_from(TELNET_SEQUENCES))
    return bytes(line)


@SETTINGS
@given(lines=st.lists(command_with_telnet(), min_size=1, max_size=8),
       points=st.lists(st.integers(0, 10**6), max_size=8))
def test_telnet_anywhere_differential(both_rewrites, lines, points):
    """Both twins agree on lines with IAC sequences anywhere, whatever the split."""
    py, cy = both_rewrites
    data = b"".join(lines)
    chunks = split_points(data, points)
    methods = ["feed_commands"] * len(chunks)
    assert run_bulk(py, 4096, chunks, methods) == run_bulk(cy, 4096, chunks, methods)
    for line in lines:
        assert all_results(py, line) == all_results(cy, line)


@SETTINGS
@given(line=command_with_telnet())
def test_forwarded_line_reads_the_same_to_every_server(both_rewrites, line):
    """What may be forwarded carries no Telnet command, only IAC IAC pairs: a server that
    interprets Telnet and one that does not read the same command word and argument."""
    for module in both_rewrites:
        [(forwarded, verb, arg, flags)] = module.LineSplitter().feed_commands(line)
        body = forwarded[:-2]
        assert forwarded.endswith(b"\r\n")
        if not flags & module.FLAG_BARE_CR:
            assert b"\r" not in body
        assert body.replace(b"\xff\xff", b"").count(b"\xff") == 0
        # a Telnet-reading server (ProFTPD) sees exactly what ftptrio checked
        assert module.split_command(forwarded) == (verb, arg)
        assert module.telnet_decode(body)[1] == 0
        # a server that ignores Telnet (vsftpd) reads the same command word on every
        # line ftptrio forwards (well-formed, with a 3-4 letter command word)
        raw_verb = body.lstrip(b" ").split(b" ", 1)[0].upper()
        bad = module.FLAG_NUL | module.FLAG_BARE_CR | module.FLAG_BAD_TELNET
        if not flags & bad and 3 <= len(verb) <= 4 and verb.isalpha():
            assert raw_verb == verb
