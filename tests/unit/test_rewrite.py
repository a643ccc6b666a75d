"""Unit tests of the control-channel scanner, run on both implementations."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftptrio._errors import BadDataAddress, LineTooLong, ProtocolError

# --------------------------------------------------------------- LineSplitter

TRANSCRIPT = (
    b"220-Welcome to the\r\n"
    b"220 test server\r\n"
    b"USER anonymous\r\n"
    b"331 Please specify the password.\r\n"
    b"PASS guest\n"  # bare LF from a sloppy peer
    b"230 Login successful.\r\n"
    b"pasv\r\n"
    b"227 Entering passive mode (127,0,0,1,195,80).\r\n"
    b"\xff\xf4\xff\xf2ABOR\r\n"
    b"225 No transfer to ABOR.\r\n"
    b"EPSV\r\n"
    b"229 Entering Extended Passive Mode (|||6446|)\r\n"
    b"\r\n"
    b"PORT 10,0,0,1,4,1\r\n"
    b"200 PORT command successful.\r\n"
    b"QUIT\r\n"
    b"221 Goodbye"  # incomplete tail
)
TRANSCRIPT_LINES = [line + b"\n" for line in TRANSCRIPT.split(b"\n")[:-1]]
TRANSCRIPT_TAIL = b"221 Goodbye"


def feed_chunks(splitter, chunks):
    lines = []
    for chunk in chunks:
        lines.extend(splitter.feed(chunk))
    return lines


def chunks_at(data, points):
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def test_max_line_value(rewrite):
    assert rewrite.MAX_LINE == 4096


def test_splitter_whole(rewrite):
    splitter = rewrite.LineSplitter()
    assert splitter.feed(TRANSCRIPT) == TRANSCRIPT_LINES
    assert splitter.pending == TRANSCRIPT_TAIL
    assert splitter.feed(b"\r\n") == [TRANSCRIPT_TAIL + b"\r\n"]
    assert splitter.pending == b""


def test_splitter_keeps_terminators(rewrite):
    splitter = rewrite.LineSplitter()
    assert splitter.feed(b"a\r\nb\nc\r\r\n\n") == [b"a\r\n", b"b\n", b"c\r\r\n", b"\n"]
    assert splitter.feed(b"") == []
    assert splitter.feed(b"x\ry") == []
    assert splitter.pending == b"x\ry"


def test_splitter_every_split_point(rewrite):
    for point in range(len(TRANSCRIPT) + 1):
        splitter = rewrite.LineSplitter()
        assert feed_chunks(splitter, chunks_at(TRANSCRIPT, [point])) == TRANSCRIPT_LINES, point
        assert splitter.pending == TRANSCRIPT_TAIL


def test_splitter_every_pair_of_split_points(rewrite):
    sample = TRANSCRIPT[:120]
    expected_lines = [line + b"\n" for line in sample.split(b"\n")[:-1]]
    expected_tail = sample.split(b"\n")[-1]
    for a, b in itertools.combinations_with_replacement(range(len(sample) + 1), 2):
        splitter = rewrite.LineSplitter()
        assert feed_chunks(splitter, chunks_at(sample, [a, b])) == expected_lines, (a, b)
        assert splitter.pending == expected_tail


def test_splitter_one_byte_at_a_time(rewrite):
    splitter = rewrite.LineSplitter()
    chunks = [TRANSCRIPT[i:i + 1] for i in range(len(TRANSCRIPT))]
    assert feed_chunks(splitter, chunks) == TRANSCRIPT_LINES


def test_splitter_accepts_bytes_like(rewrite):
    splitter = rewrite.LineSplitter()
    assert splitter.feed(bytearray(b"A\r\nB")) == [b"A\r\n"]
    assert splitter.feed(memoryview(b"\r\n")) == [b"B\r\n"]
    assert all(type(line) is bytes for line in splitter.feed(bytearray(b"C\n")))


def test_splitter_bad_max_line(rewrite):
    for bad in (0, -1, True, 1.5, "10"):
        with pytest.raises(ValueError):
            rewrite.LineSplitter(bad)


def test_line_too_long_bounds(rewrite):
    # exactly max_line bytes including CRLF is fine
    splitter = rewrite.LineSplitter(16)
    assert splitter.feed(b"x" * 14 + b"\r\n") == [b"x" * 14 + b"\r\n"]
    # max_line bytes without LF yet is fine too; one more byte is not
    splitter = rewrite.LineSplitter(16)
    assert splitter.feed(b"y" * 16) == []
    with pytest.raises(LineTooLong):
        splitter.feed(b"\n")
    splitter = rewrite.LineSplitter(16)
    with pytest.raises(LineTooLong, match="longer than 16 bytes"):
        splitter.feed(b"z" * 17)
    assert issubclass(LineTooLong, ProtocolError)


def test_line_too_long_default_limit(rewrite):
    splitter = rewrite.LineSplitter()
    line = b"STOR " + b"a" * (rewrite.MAX_LINE - 7) + b"\r\n"
    assert len(line) == rewrite.MAX_LINE
    assert splitter.feed(line) == [line]
    with pytest.raises(LineTooLong):
        splitter.feed(b"STOR " + b"a" * rewrite.MAX_LINE)


def test_line_too_long_raised_where_limit_is_crossed(rewrite):
    """Whatever the split, the error comes from the feed delivering byte max_line + 1."""
    stream = b"ok\r\n" + b"q" * 20 + b"\r\nnext\r\n"
    limit = 10
    crossing = 4 + limit  # index of the overlong line's (limit+1)-th byte
    for point in range(len(stream) + 1):
        splitter = rewrite.LineSplitter(limit)
        got = []
        raised_in = None
        for index, chunk in enumerate(chunks_at(stream, [point])):
            try:
                got.extend(splitter.feed(chunk))
            except LineTooLong as exc:
                got.extend(exc.lines)
                raised_in = index
                break
        assert got == [b"ok\r\n"], point
        assert raised_in == (0 if point > crossing else 1), point


def test_line_too_long_lines_attached(rewrite):
    splitter = rewrite.LineSplitter(8)
    with pytest.raises(LineTooLong) as info:
        splitter.feed(b"a\r\nb\r\n" + b"c" * 9 + b"\r\nd\r\n")
    assert info.value.lines == [b"a\r\n", b"b\r\n"]
    splitter = rewrite.LineSplitter(8)
    with pytest.raises(LineTooLong) as info:
        splitter.feed(b"a\r\n" + b"c" * 9)
    assert info.value.lines == [b"a\r\n"]


def test_splitter_failed_stays_failed(rewrite):
    splitter = rewrite.LineSplitter(8)
    with pytest.raises(LineTooLong):
        splitter.feed(b"x" * 9)
    assert splitter.pending == b""
    with pytest.raises(LineTooLong):
        splitter.feed(b"ok\r\n")


def test_splitter_memory_bounded(rewrite):
    splitter = rewrite.LineSplitter(64)
    for _ in range(8):
        splitter.feed(b"p" * 8)
    assert len(splitter.pending) == 64
    with pytest.raises(LineTooLong):
        splitter.feed(b"p")


def test_splitter_many_lines_one_chunk(rewrite):
    data = b"".join(b"NOOP %d\r\n" % i for i in range(10000))
    lines = rewrite.LineSplitter().feed(data)
    assert len(lines) == 10000 and lines[-1] == b"NOOP 9999\r\n"


# ------------------------------------------- LineSplitter bulk methods (feed_*)

def reference_crlf(line):
    return line if line.endswith(b"\r\n") else line[:-1] + b"\r\n"


def reference_bad_flags(line):
    """The documented flag rules, written independently of both implementations."""
    body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    return (2 if b"\0" in line else 0) | (4 if b"\r" in body else 0)


def reference_reply(rewrite, line):
    parsed = rewrite.parse_reply_code(line)
    if parsed is None:
        return (reference_crlf(line), -1, reference_bad_flags(line))
    return (reference_crlf(line), parsed[0], reference_bad_flags(line) | int(parsed[1]))


def reference_command(rewrite, line):
    verb, arg = rewrite.split_command(line)
    crlf = reference_crlf(line)
    decoded, telnet_flags = rewrite.telnet_decode(crlf[:-2])
    return (decoded.replace(b"\xff", b"\xff\xff") + b"\r\n", verb, arg,
            reference_bad_flags(line) | telnet_flags)


def test_flag_constants(rewrite):
    assert (rewrite.FLAG_CONTINUES, rewrite.FLAG_NUL, rewrite.FLAG_BARE_CR,
            rewrite.FLAG_TELNET, rewrite.FLAG_BAD_TELNET) == (1, 2, 4, 8, 16)


def test_feed_replies_example(rewrite):
    splitter = rewrite.LineSplitter()
    got = splitter.feed_replies(b"220-Hi\r\n220 ok\n230\n500 a\x00b\r\n421 x\ry\r\n"
                                b"211 End\r\r\n hello\n2x0 no\r\n12\n\n226 part")
    assert got == [
        (b"220-Hi\r\n", 220, rewrite.FLAG_CONTINUES),
        (b"220 ok\r\n", 220, 0),
        (b"230\r\n", 230, 0),
        (b"500 a\x00b\r\n", 500, rewrite.FLAG_NUL),
        (b"421 x\ry\r\n", 421, rewrite.FLAG_BARE_CR),
        (b"211 End\r\r\n", 211, rewrite.FLAG_BARE_CR),
        (b" hello\r\n", -1, 0),
        (b"2x0 no\r\n", -1, 0),
        (b"12\r\n", -1, 0),
        (b"\r\n", -1, 0),
    ]
    assert splitter.pending == b"226 part"
    assert splitter.feed_replies(b"ial\r") == []
    assert splitter.feed_replies(b"\n") == [(b"226 partial\r\n", 226, 0)]
    for line, code, flags in got:
        assert type(line) is bytes and type(code) is int and type(flags) is int


def test_feed_commands_example(rewrite):
    splitter = rewrite.LineSplitter()
    got = splitter.feed_commands(b"user anonymous\n\xff\xf4\xff\xf2ABOR\r\nPASV\r\n"
                                 b"STOR a b\x00\r\nMKD a\rb\r\nx\r\r\n\r\n\nNOOP")
    assert got == [
        (b"user anonymous\r\n", b"USER", b"anonymous", 0),
        (b"ABOR\r\n", b"ABOR", b"", rewrite.FLAG_TELNET),
        (b"PASV\r\n", b"PASV", b"", 0),
        (b"STOR a b\x00\r\n", b"STOR", b"a b\x00", rewrite.FLAG_NUL),
        (b"MKD a\rb\r\n", b"MKD", b"a\rb", rewrite.FLAG_BARE_CR),
        (b"x\r\r\n", b"X", b"\r", rewrite.FLAG_BARE_CR),
        (b"\r\n", b"", b"", 0),
        (b"\r\n", b"", b"", 0),
    ]
    assert splitter.pending == b"NOOP"


@pytest.mark.parametrize(
    ("line", "flags"),
    [
        (b"ok\r\n", 0), (b"ok\n", 0), (b"\r\n", 0), (b"\n", 0),
        (b"\r\r\n", 4), (b"a\rb\n", 4), (b"a\r\rb\r\n", 4), (b"\rok\r\n", 4),
        (b"\x00\n", 2), (b"\x00\r\n", 2), (b"\x00\r\r\n", 6), (b"a\r\x00\n", 6),
    ],
)
def test_bulk_bad_byte_flags(rewrite, line, flags):
    assert rewrite.LineSplitter().feed_replies(line)[0][2] & ~rewrite.FLAG_CONTINUES == flags
    assert rewrite.LineSplitter().feed_commands(line)[0][3] == flags
    assert reference_bad_flags(line) == flags


def test_bulk_match_feed_and_parsers(rewrite):
    lines = TRANSCRIPT_LINES + [b"226-x\n", b"2\x0026 y\r\n", b"\xff\xfb\n", b"999-\r\n"]
    data = b"".join(lines)
    assert rewrite.LineSplitter().feed_replies(data) == [
        reference_reply(rewrite, line) for line in lines]
    assert rewrite.LineSplitter().feed_commands(data) == [
        reference_command(rewrite, line) for line in lines]


def test_bulk_every_split_point(rewrite):
    replies = [reference_reply(rewrite, line) for line in TRANSCRIPT_LINES]
    commands = [reference_command(rewrite, line) for line in TRANSCRIPT_LINES]
    for point in range(len(TRANSCRIPT) + 1):
        for method, expected in (("feed_replies", replies), ("feed_commands", commands)):
            splitter = rewrite.LineSplitter()
            got = []
            for chunk in chunks_at(TRANSCRIPT, [point]):
                got.extend(getattr(splitter, method)(chunk))
            assert got == expected, (method, point)
            assert splitter.pending == TRANSCRIPT_TAIL


def test_bulk_one_byte_at_a_time_and_mixed_methods(rewrite):
    """The methods share one buffer: switching between them loses or repeats nothing."""
    splitter = rewrite.LineSplitter()
    got = []
    methods = itertools.cycle(["feed", "feed_replies", "feed_commands"])
    for byte, method in zip(TRANSCRIPT, methods):
        for item in getattr(splitter, method)(bytes([byte])):
            got.append(reference_crlf(item) if method == "feed" else item[0])
    assert got == [reference_crlf(line) for line in TRANSCRIPT_LINES]
    assert splitter.pending == TRANSCRIPT_TAIL


def test_bulk_accepts_bytes_like(rewrite):
    assert rewrite.LineSplitter().feed_replies(bytearray(b"200 a\n")) == [(b"200 a\r\n", 200, 0)]
    assert rewrite.LineSplitter().feed_commands(memoryview(b"noop\r\n")) == [
        (b"noop\r\n", b"NOOP", b"", 0)]


@pytest.mark.parametrize("method", ["feed_replies", "feed_commands"])
def test_bulk_line_too_long(rewrite, method):
    def reference(lines):
        if method == "feed_replies":
            return [reference_reply(rewrite, line) for line in lines]
        return [reference_command(rewrite, line) for line in lines]

    splitter = rewrite.LineSplitter(8)
    with pytest.raises(LineTooLong, match="^control line longer than 8 bytes$") as info:
        getattr(splitter, method)(b"a\r\n200-b\n" + b"c" * 9 + b"\r\nd\r\n")
    assert info.value.lines == reference([b"a\r\n", b"200-b\n"])
    assert splitter.pending == b""
    for again in ("feed", "feed_replies", "feed_commands"):  # failed stays failed
        with pytest.raises(LineTooLong) as info:
            getattr(splitter, again)(b"ok\r\n")
        assert info.value.lines == []
    # overlong unterminated tail: every complete line of the call is attached
    splitter = rewrite.LineSplitter(8)
    with pytest.raises(LineTooLong) as info:
        getattr(splitter, method)(b"a\r\n" + b"c" * 9)
    assert info.value.lines == reference([b"a\r\n"])
    # exactly max_line bytes is fine, one more is not
    splitter = rewrite.LineSplitter(8)
    assert getattr(splitter, method)(b"abcdef\r\n") == reference([b"abcdef\r\n"])
    assert getattr(splitter, method)(b"x" * 8) == []
    with pytest.raises(LineTooLong):
        getattr(splitter, method)(b"\n")


@pytest.mark.parametrize("method", ["feed_replies", "feed_commands"])
def test_bulk_line_too_long_raised_where_feed_raises(rewrite, method):
    stream = b"ok\r\n" + b"q" * 20 + b"\r\nnext\r\n"
    for point in range(len(stream) + 1):
        outcomes = []
        for name in ("feed", method):
            splitter = rewrite.LineSplitter(10)
            raised_in = None
            count = 0
            for index, chunk in enumerate(chunks_at(stream, [point])):
                try:
                    count += len(getattr(splitter, name)(chunk))
                except LineTooLong as exc:
                    raised_in, count = index, count + len(exc.lines)
                    break
            outcomes.append((raised_in, count))
        assert outcomes[0] == outcomes[1], point


def test_bulk_many_lines_one_chunk(rewrite):
    data = b"".join(b"200 NOOP %d\n" % i for i in range(10000))
    replies = rewrite.LineSplitter().feed_replies(data)
    assert len(replies) == 10000 and replies[-1] == (b"200 NOOP 9999\r\n", 200, 0)
    commands = rewrite.LineSplitter().feed_commands(data)
    assert commands[-1] == (b"200 NOOP 9999\r\n", b"200", b"NOOP 9999", 0)


# ----------------------------------------------------------- parse_reply_code

@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"200 OK\r\n", (200, False)),
        (b"230-Welcome\r\n", (230, True)),
        (b"226\r\n", (226, False)),
        (b"226\n", (226, False)),
        (b"226", (226, False)),
        (b"000 x", (0, False)),
        (b"999-", (999, True)),
        (b"2000 x", None),
        (b"20 x", None),
        (b"20", None),
        (b"", None),
        (b" 200 x", None),
        (b"2a0 x", None),
        (b"200x", None),
        (b"200\t", None),
        (b"200\r", (200, False)),
        (b"\xd9\xa0\xd9\xa1 ", None),
        (b"USER x\r\n", None),
    ],
)
def test_parse_reply_code(rewrite, line, expected):
    assert rewrite.parse_reply_code(line) == expected


# --------------------------------------------------------------- split_command

@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"port 1,2,3,4,5,6\r\n", (b"PORT", b"1,2,3,4,5,6")),
        (b"\xff\xf4\xff\xf2ABOR\r\n", (b"ABOR", b"")),
        (b"EPSV ALL\r\n", (b"EPSV", b"ALL")),
        (b"\r\n", (b"", b"")),
        (b"\n", (b"", b"")),
        (b"", (b"", b"")),
        (b"pasv\r\n", (b"PASV", b"")),
        (b"Pasv\n", (b"PASV", b"")),
        (b"NOOP", (b"NOOP", b"")),
        (b"  user  anonymous \r\n", (b"USER", b" anonymous ")),
        (b"STOR my file.txt\r\n", (b"STOR", b"my file.txt")),
        (b"RETR caf\xc3\xa9\r\n", (b"RETR", b"caf\xc3\xa9")),
        (b"\xe9tat x\r\n", (b"\xe9TAT", b"x")),
        (b"\xff\xfb\x01\xff\xfd\x03 quit\r\n", (b"QUIT", b"")),
        (b"\xff\xff\xff\xf2abor\r\n", (b"\xffABOR", b"")),
        (b"PO\xff\xf4RT 127,0,0,1,0,22\r\n", (b"PORT", b"127,0,0,1,0,22")),
        (b"EP\xff\xfb\x01RT |1|127.0.0.1|22|\r\n", (b"EPRT", b"|1|127.0.0.1|22|")),
        (b"PA\xff\xf2SS sec\xff\xffret\r\n", (b"PASS", b"sec\xffret")),
        (b"AUTH\xff\xf6 TLS\r\n", (b"AUTH", b"TLS")),
        (b"RETR a\xff\xf4\r\n", (b"RETR", b"a")),
        (b"NOOP\xff\r\n", (b"NOOP", b"")),
        (b"\xff", (b"", b"")),
        (b"\xff\xfb", (b"", b"")),
        (b"\xff\xfbX", (b"", b"")),
        (b"\xff\xfbXY", (b"Y", b"")),
        (b"MKD a\r\r\n", (b"MKD", b"a\r")),
        (b"MKD a\r", (b"MKD", b"a\r")),
        (b"NOOP\rX\r\n", (b"NOOP", b"\rX")),
        (b"CWD \r\n", (b"CWD", b"")),
        (b"CWD  \r\n", (b"CWD", b" ")),
        (b"SITE\x00X y\r\n", (b"SITE\x00X", b"y")),
    ],
)
def test_split_command(rewrite, line, expected):
    assert rewrite.split_command(line) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"PORT 1,2,3,4,5,6", (b"PORT 1,2,3,4,5,6", 0)),
        (b"PO\xff\xf4RT", (b"PORT", 8)),  # IAC IP
        (b"\xff\xf4\xff\xf2ABOR", (b"ABOR", 8)),  # IAC IP IAC DM
        (b"A\xff\xf1B\xff\xf3C\xff\xf5D\xff\xf6E\xff\xf9F", (b"ABCDEF", 8)),  # NOP BRK AO AYT GA
        (b"A\xff\xfb\x01B\xff\xfc\xffC\xff\xfd\x03D\xff\xfe\x00E", (b"ABCDE", 8)),  # options
        (b"a\xff\xffb", (b"a\xffb", 0)),  # IAC IAC: a literal 0xFF
        (b"\xff\xff\xff\xff", (b"\xff\xff", 0)),
        (b"AB\xff", (b"AB", 16)),  # cut short
        (b"AB\xff\xfb", (b"AB", 16)),
        (b"A\xff\xf0B", (b"AB", 16)),  # SE
        (b"A\xff\xf7B\xff\xf8C", (b"ABC", 16)),  # EC, EL
        (b"A\xff\xfaB", (b"AB", 16)),  # SB
        (b"A\xffB", (b"A", 16)),  # not a Telnet command: both bytes dropped
        (b"A\xff\xf4\xff", (b"A", 24)),
        (b"", (b"", 0)),
    ],
)
def test_telnet_decode(rewrite, body, expected):
    assert rewrite.telnet_decode(body) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"PO\xff\xf4RT 1,2,3,4,5,6\r\n", (b"PORT 1,2,3,4,5,6\r\n", b"PORT", b"1,2,3,4,5,6", 8)),
        (b"RETR a\xff\xffb\n", (b"RETR a\xff\xffb\r\n", b"RETR", b"a\xffb", 0)),
        (b"RETR a\xffb\r\n", (b"RETR a\r\n", b"RETR", b"a", 16)),
        (b"PASS \xff\xfb\r\n", (b"PASS \r\n", b"PASS", b"", 16)),
        (b"\xff\xfb\n", (b"\r\n", b"", b"", 16)),
        (b"P\xff\xf4O\x00\r\n", (b"PO\x00\r\n", b"PO\x00", b"", 10)),
    ],
)
def test_feed_commands_interprets_telnet_everywhere(rewrite, line, expected):
    """The forwarded line is the decoded one, every literal 0xFF doubled; no other IAC."""
    assert rewrite.LineSplitter().feed_commands(line) == [expected]


# ------------------------------------------------------------------ parse_227

@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"227 Entering Passive Mode (192,168,1,2,4,1).\r\n", ("192.168.1.2", 1025)),
        (b"227 Entering passive mode (127,0,0,1,195,80).\r\n", ("127.0.0.1", 50000)),  # pyftpdlib
        (b"227 Entering Passive Mode (127,0,0,1,195,80)\r\n", ("127.0.0.1", 50000)),  # no dot
        (b"227 Entering Passive Mode 127,0,0,1,195,80\r\n", ("127.0.0.1", 50000)),  # no parens
        (b"227 =10,0,0,1,4,1\r\n", ("10.0.0.1", 1025)),
        (b"227 Entering Passive Mode =10,0,0,1,4,1\r\n", ("10.0.0.1", 1025)),
        (b"227 entering passive mode (10,0,0,1,4,1)", ("10.0.0.1", 1025)),
        (b"227 Entering Passive Mode (10,0,0,1,4,1). Have fun 1,2,3\r\n", ("10.0.0.1", 1025)),
        (b"227 Passive (1,2,3,4,5,6) and later (9,9,9,9,9,9)\r\n", ("1.2.3.4", 1286)),
        (b"227 Entering Passive Mode (010,000,000,001,004,001).\r\n", ("10.0.0.1", 1025)),
        (b"227 Entering Passive Mode (255,255,255,255,255,255)\r\n", ("255.255.255.255", 65535)),
        (b"227 Entering Passive Mode (0,0,0,0,0,1)\r\n", ("0.0.0.0", 1)),
        (b"227 v2024 1,2 then 10,0,0,1,4,1\r\n", ("10.0.0.1", 1025)),  # short runs skipped
        (b"227 (1,2,3,4,5) (10,0,0,1,4,1)\r\n", ("10.0.0.1", 1025)),
        (b"227 1,2,3,4,5,6,\r\n", ("1.2.3.4", 1286)),  # trailing comma ends the run
        (b"227-Entering Passive Mode 227 (10,0,0,1,4,1)", ("10.0.0.1", 1025)),  # joined multi-line
        (b"2271,2,3,4,5,6", ("1.2.3.4", 1286)),  # only the bytes after the code count
    ],
)
def test_parse_227_valid(rewrite, line, expected):
    assert rewrite.parse_227(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"227 Entering Passive Mode (10,0,0,256,4,1).\r\n", "octet 256 out of range in 227 reply"),
        (b"227 Entering Passive Mode (10,0,0,1,999,1).\r\n", "octet 999 out of range in 227 reply"),
        (b"227 Entering Passive Mode (10,0,0,1,0,0).\r\n", "port 0 in 227 reply"),
        (b"227 Entering Passive Mode (10,0,0,1,4).\r\n", "no h1,h2,h3,h4,p1,p2 in 227 reply"),
        (b"227 Entering Passive Mode (10,0,0,1,4,1,7).\r\n", "more than six"),
        (b"227 Entering Passive Mode (10,0,0,1,0004,1).\r\n", "more than 3 digits"),
        (b"227 Entering Passive Mode\r\n", "no h1,h2,h3,h4,p1,p2 in 227 reply"),
        (b"227 Entering Passive Mode (10, 0, 0, 1, 4, 1)\r\n", "no h1,h2,h3,h4,p1,p2"),
        (b"227 (10,0,0,1,4,1", None),  # valid, see below
        (b"2", "no h1,h2,h3,h4,p1,p2 in 227 reply"),
        (b"", "no h1,h2,h3,h4,p1,p2 in 227 reply"),
        (b"10,0,0,1,4,1", "no h1,h2,h3,h4,p1,p2 in 227 reply"),  # numbers inside the code
    ],
)
def test_parse_227_invalid(rewrite, line, message):
    if message is None:
        assert rewrite.parse_227(line) == ("10.0.0.1", 1025)
        return
    with pytest.raises(BadDataAddress) as info:
        rewrite.parse_227(line)
    assert message in str(info.value)


# ------------------------------------------------------------------ parse_229

@pytest.mark.parametrize(
    ("line", "port"),
    [
        (b"229 Entering Extended Passive Mode (|||6446|)\r\n", 6446),
        (b"229 Entering Extended Passive Mode (!!!6446!)\r\n", 6446),
        (b"229 Entering Extended Passive Mode (~~~6446~)\r\n", 6446),
        (b"229 Entering Extended Passive Mode ()))6446))\r\n", 6446),
        (b"229 ((((1()\r\n", 1),
        (b"229 (|||65535|)", 65535),
        (b"229 (|||01|)", 1),
        (b"229 Entering passive mode (EPSV) (|||2121|).\r\n", 2121),  # first good group
        (b"229-Extended (|||6446|)", 6446),
    ],
)
def test_parse_229_valid(rewrite, line, port):
    assert rewrite.parse_229(line) == port


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"229 Entering Extended Passive Mode (|||0|)\r\n", "port 0 in 229 reply"),
        (b"229 Entering Extended Passive Mode (|||65536|)\r\n", "port 65536 out of range"),
        (b"229 Entering Extended Passive Mode (|||123456|)\r\n", "more than 5 digits"),
        (b"229 Entering Extended Passive Mode (||||)\r\n", "missing port in 229 reply"),
        (b"229 Entering Extended Passive Mode (|||6446!)\r\n", "no (<d><d><d>port<d>)"),
        (b"229 Entering Extended Passive Mode (||!6446|)\r\n", "no (<d><d><d>port<d>)"),
        (b"229 Entering Extended Passive Mode (|1|127.0.0.1|6446|)\r\n", "no (<d><d><d>port<d>)"),
        (b"229 Entering Extended Passive Mode (|||6446|\r\n", "no (<d><d><d>port<d>)"),
        (b"229 Entering Extended Passive Mode |||6446|\r\n", "no (<d><d><d>port<d>)"),
        (b"229 Entering Extended Passive Mode (   6446 )\r\n", "no (<d><d><d>port<d>)"),
        (b"229 Entering Extended Passive Mode (1116446)\r\n", "no (<d><d><d>port<d>)"),
        (b"229 (\x7f\x7f\x7f6446\x7f)", "no (<d><d><d>port<d>)"),
        (b"229 (|||64a46|)", "no (<d><d><d>port<d>)"),
        (b"(|||6446|)", "no (<d><d><d>port<d>)"),  # inside the code
        (b"", "no (<d><d><d>port<d>)"),
    ],
)
def test_parse_229_invalid(rewrite, line, message):
    with pytest.raises(BadDataAddress) as info:
        rewrite.parse_229(line)
    assert message in str(info.value)


# -------------------------------------------------------------- parse_port_arg

@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (b"1,2,3,4,5,6", ("1.2.3.4", 1286)),
        (b" \t10,0,0,1,4,1 \t", ("10.0.0.1", 1025)),
        (b"127,000,000,001,255,255", ("127.0.0.1", 65535)),
        (b"0,0,0,0,0,1", ("0.0.0.0", 1)),
    ],
)
def test_parse_port_arg_valid(rewrite, arg, expected):
    assert rewrite.parse_port_arg(arg) == expected


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (b"1,2,3,256,5,6", "octet 256 out of range in PORT argument"),
        (b"1,2,3,4,0,0", "port 0 in PORT argument"),
        (b"1,2,3,4,5", "not six"),
        (b"1,2,3,4,5,6,7", "not six"),
        (b"1,2,3,4,5,6,", "not six"),
        (b",1,2,3,4,5,6", "not six"),
        (b"1,2,3,4,5,0006", "not six"),
        (b"1, 2,3,4,5,6", "not six"),
        (b"1,2,3,4,5,6\r\n", "not six"),
        (b"(1,2,3,4,5,6)", "not six"),
        (b"1,2,3,4,5,6x", "not six"),
        (b"1,,3,4,5,6", "not six"),
        (b"", "not six"),
        (b" ", "not six"),
        (b"\xd9\xa1,2,3,4,5,6", "not six"),
    ],
)
def test_parse_port_arg_invalid(rewrite, arg, message):
    with pytest.raises(BadDataAddress) as info:
        rewrite.parse_port_arg(arg)
    assert message in str(info.value)


# -------------------------------------------------------------- parse_eprt_arg

@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (b"|1|132.235.1.2|6275|", (1, "132.235.1.2", 6275)),
        (b"|2|1080::8:800:200C:417A|5282|", (2, "1080::8:800:200c:417a", 5282)),
        (b"|2|0:0:0:0:0:0:0:1|21|", (2, "::1", 21)),
        (b"|2|::ffff:1.2.3.4|1|", (2, "::ffff:102:304", 1)),
        (b"!1!10.0.0.1!65535!", (1, "10.0.0.1", 65535)),
        (b" |1|10.0.0.1|1025| ", (1, "10.0.0.1", 1025)),
        (b"|1|10.0.0.1|00021|", (1, "10.0.0.1", 21)),
    ],
)
def test_parse_eprt_arg_valid(rewrite, arg, expected):
    assert rewrite.parse_eprt_arg(arg) == expected


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (b"|1|10.0.0.1|0|", "port 0 in EPRT argument"),
        (b"|1|10.0.0.1|65536|", "port 65536 out of range in EPRT argument"),
        (b"|1|10.0.0.1|123456|", "more than 5 digits"),
        (b"|1|10.0.0.1||", "missing port in EPRT argument"),
        (b"|1|10.0.0.1|21a|", "not a decimal number"),
        (b"|1|10.0.0.1|-21|", "not a decimal number"),
        (b"|3|10.0.0.1|21|", "network protocol must be 1 (IPv4) or 2 (IPv6)"),
        (b"||10.0.0.1|21|", "network protocol"),
        (b"|01|10.0.0.1|21|", "network protocol"),
        (b"|1|::1|21|", "invalid IPv4 address b'::1'"),
        (b"|2|10.0.0.1|21|", "invalid IPv6 address b'10.0.0.1'"),
        (b"|1|10.0.0.256|21|", "invalid IPv4 address"),
        (b"|1|010.0.0.1|21|", "invalid IPv4 address"),
        (b"|1||21|", "invalid IPv4 address"),
        (b"|2|fe80::1%eth0|21|", "invalid IPv6 address"),
        (b"|1|10.0.0.\xd9\xa1|21|", "invalid IPv4 address"),
        (b"|1|10.0.0.1|21", "not <d>proto<d>addr<d>port<d>"),
        (b"|1|10.0.0.1|21|x", "not <d>proto<d>addr<d>port<d>"),
        (b"|1|10.0.0.1|21||", "not <d>proto<d>addr<d>port<d>"),
        (b"|1!10.0.0.1!21!", "not <d>proto<d>addr<d>port<d>"),
        (b"|", "not <d>proto<d>addr<d>port<d>"),
        (b"", "not <d>proto<d>addr<d>port<d>"),
        (b"1110.0.0.1121", "delimiter"),
        (b"\x7f1\x7f10.0.0.1\x7f21\x7f", "delimiter"),
        (b"\x001\x0010.0.0.1\x0021\x00", "delimiter"),
    ],
)
def test_parse_eprt_arg_invalid(rewrite, arg, message):
    with pytest.raises(BadDataAddress) as info:
        rewrite.parse_eprt_arg(arg)
    assert message in str(info.value)


# ------------------------------------------------------------------ formatting

def test_format_227(rewrite):
    assert rewrite.format_227("10.0.0.1", 1025) == b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n"
    assert rewrite.format_227("127.0.0.1", 50000) == (
        b"227 Entering Passive Mode (127,0,0,1,195,80).\r\n")
    assert rewrite.parse_227(rewrite.format_227("192.168.7.9", 65535)) == ("192.168.7.9", 65535)


def test_format_229(rewrite):
    assert rewrite.format_229(6446) == b"229 Entering Extended Passive Mode (|||6446|)\r\n"
    assert rewrite.parse_229(rewrite.format_229(1)) == 1


def test_format_port(rewrite):
    assert rewrite.format_port("10.0.0.1", 1025) == b"PORT 10,0,0,1,4,1\r\n"
    verb, arg = rewrite.split_command(rewrite.format_port("1.2.3.4", 1286))
    assert verb == b"PORT" and rewrite.parse_port_arg(arg) == ("1.2.3.4", 1286)


def test_format_eprt(rewrite):
    assert rewrite.format_eprt("10.0.0.1", 21) == b"EPRT |1|10.0.0.1|21|\r\n"
    assert rewrite.format_eprt("::1", 2121) == b"EPRT |2|::1|2121|\r\n"
    assert rewrite.format_eprt("1080:0::8:800:200C:417A", 5) == (
        b"EPRT |2|1080::8:800:200c:417a|5|\r\n")
    verb, arg = rewrite.split_command(rewrite.format_eprt("fd00::5", 6000))
    assert verb == b"EPRT" and rewrite.parse_eprt_arg(arg) == (2, "fd00::5", 6000)


@pytest.mark.parametrize("port", [0, -1, 65536, 1.0, "21", None, True])
def test_format_bad_port(rewrite, port):
    for call in (lambda: rewrite.format_227("10.0.0.1", port),
                 lambda: rewrite.format_229(port),
                 lambda: rewrite.format_port("10.0.0.1", port),
                 lambda: rewrite.format_eprt("10.0.0.1", port)):
        with pytest.raises(ValueError, match="port must be an integer"):
            call()


@pytest.mark.parametrize("host", ["::1", "localhost", "10.0.0.256", "010.0.0.1", "", 167772161,
                                  b"10.0.0.1", None])
def test_format_ipv4_bad_host(rewrite, host):
    with pytest.raises(ValueError, match="host must be"):
        rewrite.format_227(host, 21)
    with pytest.raises(ValueError, match="host must be"):
        rewrite.format_port(host, 21)


@pytest.mark.parametrize("host", ["localhost", "fe80::1%eth0", "1.2.3", "", None, 1])
def test_format_eprt_bad_host(rewrite, host):
    with pytest.raises(ValueError, match="host must be"):
        rewrite.format_eprt(host, 21)


# ---------------------------------------------------------------- API surface

API = {"MAX_LINE", "LineSplitter", "parse_reply_code", "split_command", "parse_227", "parse_229",
       "parse_port_arg", "parse_eprt_arg", "format_227", "format_229", "format_port",
       "format_eprt", "FLAG_CONTINUES", "FLAG_NUL", "FLAG_BARE_CR", "FLAG_TELNET",
       "FLAG_BAD_TELNET", "telnet_decode", "reply_text_line"}


def test_api_names(rewrite):
    assert set(rewrite.__all__) == API
    for name in API:
        assert hasattr(rewrite, name)


def test_scan_exports():
    from ftptrio import _scan

    assert set(_scan.__all__) == API | {"IMPLEMENTATION"}
    assert (_scan.FLAG_CONTINUES, _scan.FLAG_NUL, _scan.FLAG_BARE_CR) == (1, 2, 4)
    assert _scan.IMPLEMENTATION in ("cython", "python")
    module = "ftptrio._rewrite" if _scan.IMPLEMENTATION == "cython" else "ftptrio._rewrite_py"
    assert _scan.parse_227.__module__ == module or _scan.LineSplitter.__module__ == module


# ---------------------------------------------------- _scan selection (subprocess)

def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import ftptrio

    src = str(Path(next(iter(ftptrio.__path__))).resolve().parent)
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("FTPTRIO_NO_EXTENSIONS", "FTPTRIO_REQUIRE_EXTENSIONS", "CI")}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [src, os.environ.get("PYTHONPATH", "")]))
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=60)


def test_scan_no_extensions_forces_python():
    result = _run("import ftptrio._scan as s; print(s.IMPLEMENTATION, s.parse_227.__module__)",
                  FTPTRIO_NO_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "ftptrio._rewrite_py"]


def test_scan_no_extensions_wins_over_require():
    result = _run("import ftptrio._scan as s; print(s.IMPLEMENTATION)",
                  FTPTRIO_NO_EXTENSIONS="1", FTPTRIO_REQUIRE_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"


_BLOCK_EXTENSION = "import sys; sys.modules['ftptrio._rewrite'] = None\n"


def test_scan_require_extensions_raises_when_missing():
    result = _run(_BLOCK_EXTENSION + "import ftptrio._scan", FTPTRIO_REQUIRE_EXTENSIONS="1")
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "Cython extension ftptrio._rewrite is required but not built" in result.stderr


def test_scan_falls_back_when_missing():
    result = _run(_BLOCK_EXTENSION + "import ftptrio._scan as s; print(s.IMPLEMENTATION)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"


def test_scan_prefers_extension(both_rewrites):
    result = _run("import ftptrio._scan as s; print(s.IMPLEMENTATION)",
                  FTPTRIO_REQUIRE_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cython"


@pytest.mark.parametrize("addr", [b"1.2.3.4", b"0.0.0.0", b"255.255.255.255", b"01.2.3.4",
                                  b"1.2.3.04", b"1.2.3", b"1.2.3.4.5", b"1.2.3.4.", b".1.2.3.4",
                                  b"1..2.3", b"1.2.3.256", b"1.2.3.1000", b"0000.1.2.3",
                                  b"1.2.3.-4", b"1.2.3.4 ", b"::1"])
def test_eprt_ipv4_matches_ipaddress(rewrite, addr):
    import ipaddress

    expected: tuple[str, str | None]
    try:
        expected = ("ok", str(ipaddress.IPv4Address(addr.decode())))
    except ValueError:
        expected = ("bad", None)
    try:
        proto, host, port = rewrite.parse_eprt_arg(b"|1|" + addr + b"|21|")
        got = ("ok", host)
    except BadDataAddress:
        got = ("bad", None)
    assert got == expected
