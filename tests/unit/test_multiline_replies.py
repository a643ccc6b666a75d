"""Inner lines of multi-line replies reach clients as text (security round 3, point 2).

RFC 959 ends a multi-line reply at its own code followed by a space, but curl, wget,
lftp and tnftp end a reply at *any* line of three digits and a space, and Python's
ftplib at its own code followed by anything but ``-``. A hostile server answering
EPSV with ``200-x`` / ``229 (|||V|)`` / ``200 x`` made each of them connect to port
V on its own machine. Here the forwarded output is read by each client's parser:
they must all see the same replies as RFC 959, and no passive reply but ftptrio's own.
"""

from __future__ import annotations

import re
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftptrio import _rewrite_py
from ftptrio._control import ControlChannel

from control_replay import quiet_debug_logging, run  # type: ignore[import-not-found]

_rewrite_cy: ModuleType | None
try:
    from ftptrio import _rewrite as _rewrite_cy
except ImportError:  # pragma: no cover - the differential tests report a missing build
    _rewrite_cy = None

DATA_PORT = 40000  # what run() answers every passive offer with


def lines_of(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


def finals_any_code_space(data: bytes) -> list[bytes]:
    """curl / wget / lftp / tnftp: a reply ends at any ``ddd `` line; other lines are
    its text."""
    return [line for line in lines_of(data) if re.match(rb"\d{3} ", line)]


def finals_ftplib(data: bytes) -> list[bytes]:
    """Python's ftplib.getmultiline: any line starts a reply; a ``ddd-`` one ends at a
    line of the same code whose fourth character is not ``-``. Only replies whose last
    line starts with 1-5 are kept (ftplib raises error_proto for the others)."""
    finals, first = [], None
    for line in lines_of(data):
        if first is None:
            if line[3:4] == b"-":
                first = line
                continue
        elif not (line[:3] == first[:3] and line[3:4] != b"-"):
            continue
        first = None
        if line[:1] in (b"1", b"2", b"3", b"4", b"5"):
            finals.append(line)
    return finals


def finals_rfc959(data: bytes) -> list[bytes]:
    """RFC 959: ``ddd-`` starts a multi-line reply that ends at ``ddd `` of the same
    code; outside one, a ``ddd `` line is a reply and other lines are text."""
    finals, code = [], None
    for line in lines_of(data):
        if code is None:
            if re.match(rb"\d{3}-", line):
                code = line[:3]
            elif re.match(rb"\d{3} ", line):
                finals.append(line)
        elif line[:3] == code and line[3:4] == b" ":
            finals.append(line)
            code = None
    return finals


def client_output(commands: list[bytes], server: bytes, split: int | None) -> bytes:
    steps = [("c", b"".join(commands)), ("s", b"220 ready\r\n" + server)]
    with quiet_debug_logging():
        to_client, _, _, _ = run(steps, {"client_host": "127.0.0.1"}, split)
    return b"".join(item for item in to_client if isinstance(item, bytes))


def check_every_client_reads_the_same(out: bytes) -> None:
    # lftp, tnftp and inetutils ftp remove Telnet sequences from replies: none may remain
    assert b"\xff" not in out, out
    rfc = finals_rfc959(out)
    assert finals_any_code_space(out) == rfc, out
    assert finals_ftplib(out) == rfc, out
    for final in rfc:  # a passive reply's address is ftptrio's own listener
        if final[:3] in (b"227", b"229"):
            assert (b"|||%d|" % DATA_PORT in final or b"156,64)" in final
                    or b"withheld" in final), out


def test_the_reported_inner_229_and_227_are_text():
    out = client_output([b"EPSV\r\n", b"TYPE I\r\n"],
                        b"200-x\r\n229 Entering Extended Passive Mode (|||6000|)\r\n200 x\r\n"
                        b"200-x\r\n200\r\n227 (127,0,0,1,23,112)\r\n200 y\r\n", None)
    assert b"\r\n 229 Entering Extended Passive Mode (|||6000|)\r\n" in out
    assert b"\r\n 200\r\n 227 (127,0,0,1,23,112)\r\n200 y\r\n" in out
    check_every_client_reads_the_same(out)


def test_telnet_bytes_in_replies_are_read_as_telnet_aware_clients_read_them():
    """lftp took ``<IAC NOP>229 (|||22|)`` (ftptrio: "not a reply") for its EPSV's
    answer and connected to port 22 of its own machine."""
    for hostile in (b"\xff\xf1229 Entering Extended Passive Mode (|||22|)\r\n",
                    b"22\xff\xf19 Entering Extended Passive Mode (|||22|)\r\n",
                    b"\xff\xfb\x01229 (|||22|)\r\n"):
        out = client_output([b"EPSV\r\n"], hostile
                            + b"229 Entering Extended Passive Mode (|||6000|)\r\n", None)
        assert b"|||22|" not in out, out
        check_every_client_reads_the_same(out)
    out = client_output([b"NOOP\r\n"], b"200-x\r\n\xff\xf1200 inner\r\n200 end\r\n", None)
    assert out.endswith(b"200-x\r\n200 inner\r\n200 end\r\n"), out  # inner: the end
    check_every_client_reads_the_same(out)


INNER = st.one_of(
    st.sampled_from([b"229 Entering Extended Passive Mode (|||6000|)", b"227 (127,0,0,1,23,112)",
                     b"227 Entering Passive Mode (10,0,0,1,4,1).", b"200", b"200 y", b"2001 x",
                     b"150 Opening", b"226 done", b"421 bye", b"x", b"", b" 200 ok", b"229",
                     b"200-more", b"229-(|||6000|)", b"\xff\xf1229 (|||22|)",
                     b"22\xff\xf19 (|||22|)", b"\xff\xfb\x01229 (|||22|)", b"2\xff\xff29 x",
                     b"\xff", b"200 \xff"]),
    st.builds(lambda code, sep, text: b"%03d" % code + sep + text, st.integers(100, 599),
              st.sampled_from([b"", b" ", b"-", b"x", b"\t"]), st.binary(max_size=8).map(
                  lambda b: b.replace(b"\n", b"").replace(b"\r", b"").replace(b"\0", b""))),
)
CODES = st.sampled_from([200, 211, 214, 226, 227, 229, 150, 250, 331, 500])


@st.composite
def reply(draw) -> bytes:
    code = draw(CODES)
    inner = draw(st.lists(INNER, max_size=4))
    if not inner and draw(st.booleans()):
        return b"%d single\r\n" % code
    return (b"%d-first\r\n" % code + b"".join(line + b"\r\n" for line in inner)
            + b"%d last\r\n" % code)


COMMANDS = st.sampled_from([b"NOOP\r\n", b"TYPE I\r\n", b"EPSV\r\n", b"PASV\r\n", b"SYST\r\n",
                            b"FEAT\r\n", b"STAT\r\n"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(COMMANDS, min_size=1, max_size=6),
       replies=st.lists(reply(), min_size=1, max_size=6), split=st.none() | st.integers(0, 99))
def test_fuzz_every_client_parser_sees_the_rfc_replies(commands, replies, split):
    out = client_output(commands, b"".join(replies), split)
    check_every_client_reads_the_same(out)


@pytest.mark.parametrize("module", [_rewrite_py, _rewrite_cy], ids=["python", "cython"])
def test_reply_text_line(module):
    if module is None:
        pytest.skip("the Cython extension is not built (the differential tests fail then)")
    for line, text in [(b"229 (|||5|)\r\n", b" 229 (|||5|)\r\n"), (b"200\r\n", b" 200\r\n"),
                       (b"2001 x\r\n", b" 2001 x\r\n"), (b"200", b" 200"),
                       (b"200-x\r\n", b"200-x\r\n"), (b"20 x\r\n", b"20 x\r\n"),
                       (b" 200 x\r\n", b" 200 x\r\n"), (b"abc\r\n", b"abc\r\n")]:
        assert module.reply_text_line(line) == text


def test_control_channel_is_importable():
    assert isinstance(ControlChannel, type)  # the module under test (kept for the layering check's import map)
