"""Fuzz tests of the control-channel state machine (``ftptrio._control``).

Random and mutated transcripts go to both directions in random chunks. The
ControlChannel must never raise, its outboxes must stay proportional to its
input, and feeding each step whole or split at random points must give the same
outboxes.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftptrio._control import CLOSE, describe_line

from control_replay import quiet_debug_logging, run  # type: ignore[import-not-found]

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CLIENT_LINES = [
    b"USER anonymous\r\n", b"user ftp\n", b"PASS secret\r\n", b"ACCT x\r\n", b"SYST\r\n",
    b"FEAT\r\n", b"NOOP\r\n", b"STAT\r\n", b"QUIT\r\n", b"REIN\r\n", b"TYPE I\r\n",
    b"PASV\r\n", b"pasv\r\n", b"EPSV\r\n", b"EPSV ALL\r\n", b"epsv 2\r\n", b"EPSV 1\r\n",
    b"PORT 127,0,0,1,195,80\r\n", b"PORT 10,0,0,9,195,80\r\n", b"PORT 127,0,0,1,0,21\r\n",
    b"PORT 127,0,0,1,256,1\r\n", b"port 127,0,0,1,4,0\n", b"PORT\r\n",
    b"EPRT |1|127.0.0.1|50000|\r\n", b"EPRT |2|::1|50000|\r\n", b"EPRT |1|10.0.0.9|50000|\r\n",
    b"EPRT |3|x|1|\r\n", b"EPRT !1!127.0.0.1!21!\r\n",
    b"LPRT 4,4,127,0,0,1,2,195,80\r\n", b"LPSV\r\n", b"AUTH TLS\r\n", b"auth ssl\r\n",
    b"CCC\r\n", b"RETR file\r\n", b"STOR file\r\n", b"LIST\r\n",
    b"\xff\xf4\xff\xf2ABOR\r\n", b"\xff\xfb\x01NOOP\r\n", b"\r\n", b"\n",
]
SERVER_LINES = [
    b"220 (vsFTPd 3.0.5)\r\n", b"220-Welcome\r\n", b"220 ready\r\n", b"331 pw\r\n",
    b"230 ok\r\n", b"215 UNIX Type: L8\r\n", b"211-Features:\r\n", b" EPSV\r\n", b"211 End\r\n",
    b"200 ok\r\n", b"150 Opening data connection.\r\n", b"150-multi\r\n", b"226 done\r\n",
    b"426 aborted\r\n", b"421 bye\r\n", b"221 Goodbye.\r\n", b"234 Proceed.\r\n",
    b"500 unknown\r\n", b"502 not implemented\r\n", b"522 use (1)\r\n",
    b"227 Entering Passive Mode (192,168,1,2,4,1).\r\n",
    b"227 Entering passive mode (127,0,0,1,195,80).\r\n",
    b"227 Entering Passive Mode 127,0,0,1,195,80\r\n", b"227 =10,0,0,1,4,1\r\n",
    b"227 Entering Passive Mode (10,0,0,256,4,1).\r\n",
    b"227 Entering Passive Mode (10,0,0,1,0,0).\r\n",
    b"227 Entering Passive Mode (10,0,0,1,4).\r\n",
    b"227-Entering Passive Mode\r\n", b"227 (10,0,0,1,4,1)\r\n",
    b"229 Entering Extended Passive Mode (|||6446|)\r\n",
    b"229 Entering Extended Passive Mode (!!!6446!)\r\n",
    b"229 Entering Extended Passive Mode (|||0|)\r\n",
    b"229-ext\r\n", b"229 (|||65536|)\r\n", b"120 wait\r\n", b"200 ok\n", b"not a reply\r\n",
]
ALL_LINES = CLIENT_LINES + SERVER_LINES


@st.composite
def mutated(draw: Any) -> bytes:  # (st.DrawFn: hypothesis >= 6.19; the floor is 6.10)
    line = bytearray(draw(st.sampled_from(ALL_LINES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, len(line)))
        if op == "replace" and pos < len(line):
            line[pos] = draw(st.sampled_from([0, 10, 13, 32, 40, 41, 44, 45, 48, 57, 124, 255,
                                              draw(st.integers(0, 255))]))
        elif op == "insert":
            line[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and pos < len(line):
            del line[pos]
        elif op == "dup":
            line[pos:pos] = line[:pos]
    return bytes(line)


def overlong() -> st.SearchStrategy[bytes]:
    return st.builds(lambda n, end, fill: fill * n + end,
                     st.integers(100, 1100), st.sampled_from([b"", b"\n", b"\r\n"]),
                     st.sampled_from([b"A", b"227 ", b"\xff", b"1,"]))


FRAGMENT = st.one_of(
    st.sampled_from(CLIENT_LINES), st.sampled_from(SERVER_LINES), mutated(),
    st.binary(max_size=40), overlong(),
)
STEP = st.tuples(st.sampled_from("cs"),
                 st.lists(FRAGMENT, min_size=1, max_size=6).map(b"".join))
TRANSCRIPT = st.lists(STEP, min_size=1, max_size=10)
OPTIONS = st.fixed_dictionaries({
    "client_host": st.sampled_from(["127.0.0.1", "::1", "::ffff:127.0.0.1"]),
    "active_mode": st.sampled_from(["remote-forward", "passive"]),
    "auth_tls": st.sampled_from(["refuse", "passthrough"]),
    "max_line": st.sampled_from([512, 4096]),
})

def check_invariants(steps, options, seed):
    with quiet_debug_logging():
        _check_invariants(steps, options, seed)


def _check_invariants(steps, options, seed):
    in_bytes = sum(len(data) for _, data in steps)
    client, server, size, ch = run(steps, options, None)
    assert size <= 40 * in_bytes + 512, (size, in_bytes)
    # CLOSE only at the very end of to_client, and nothing after it
    if CLOSE in client:
        assert client.index(CLOSE) == len(client) - 1
        assert ch.closed
    assert CLOSE not in server
    # every byte string sent to the server ends in CRLF unless the channel went opaque
    if not ch.opaque:
        for item in server:
            if isinstance(item, bytes):
                assert item.endswith(b"\r\n"), item[-20:]
                assert b"\0" not in item
    split = run(steps, options, seed)
    assert (split[0], split[1], split[3].closed, split[3].opaque) == \
        (client, server, ch.closed, ch.opaque)


@SETTINGS
@given(TRANSCRIPT, OPTIONS, st.integers(0, 2**32 - 1))
def test_random_transcripts(steps, options, seed):
    check_invariants(steps, options, seed)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from("cs"), st.binary(max_size=300)), max_size=10),
       OPTIONS, st.integers(0, 2**32 - 1))
def test_random_bytes(steps, options, seed):
    check_invariants(steps, options, seed)


LOGIN = [("s", b"220 ready\r\n"), ("c", b"USER a\r\nPASS b\r\n"), ("s", b"331 pw\r\n230 ok\r\n")]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from("cs"), mutated()), min_size=1, max_size=12),
       OPTIONS, st.integers(0, 2**32 - 1))
def test_mutated_sessions_after_login(steps, options, seed):
    check_invariants(LOGIN + steps, options, seed)


@SETTINGS
@given(st.binary(max_size=200))
def test_describe_line_never_raises(line):
    text = describe_line(line)
    assert isinstance(text, str) and len(text) <= 200


BLOB = st.one_of(st.binary(min_size=1, max_size=200),
                 st.builds(lambda n, fill: fill * n, st.integers(1, 3000),
                           st.binary(min_size=1, max_size=3)))


@SETTINGS
@given(BLOB, st.lists(st.tuples(st.sampled_from("cs"), BLOB), max_size=6),
       st.integers(0, 2**32 - 1))
def test_opaque_after_auth_passthrough(first, steps, seed):
    """After AUTH passthrough and 234, every byte passes unchanged in both directions,
    including whatever arrived in the same segment as the 234."""
    options = {"client_host": "127.0.0.1", "auth_tls": "passthrough", "max_line": 512}
    transcript = [("s", b"220 ready\r\n"), ("c", b"AUTH TLS\r\n"),
                  ("s", b"234 Proceed.\r\n" + first), *steps]
    for run_seed in (None, seed):
        with quiet_debug_logging():
            client, server, _size, ch = run(transcript, options, run_seed)
        assert ch.opaque and not ch.closed
        assert client == [b"220 ready\r\n234 Proceed.\r\n" + first
                          + b"".join(d for side, d in steps if side == "s")]
        assert server == [b"AUTH TLS\r\n" + b"".join(d for side, d in steps if side == "c")]
