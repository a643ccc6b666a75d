"""Unit tests of the sans-I/O control-channel state machine (``ftptrio._control``).

Every scenario is a scripted transcript of client/server byte chunks. ``check``
replays it whole, one byte at a time and at random split points, demands identical
outboxes each time (consecutive bytes joined) and returns the whole-feed result.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeGuard

import pytest

from ftptrio._control import (
    CLOSE,
    ActiveAccepted,
    ActiveRefused,
    HoldForActiveData,
    ActiveRequest,
    ControlChannel,
    ConvertedActive,
    PassiveOffer,
    QuitSent,
    TransferCommand,
    TransferReplied,
    describe_line,
)

from control_replay import join as joined  # type: ignore[import-not-found]

GREETING = b"220 ready\r\n"

Step = tuple[str, Any]  # ("c", bytes) | ("s", bytes) | ("fail", reason)


def c(data: bytes) -> Step:
    return ("c", data)


def s(data: bytes) -> Step:
    return ("s", data)


def fail(reason: str) -> Step:
    """Call data_failed for the oldest ActiveRequest not yet failed."""
    return ("fail", reason)


@dataclass
class Result:
    client: list[Any]
    server: list[Any]
    channel: ControlChannel

    @property
    def key(self) -> tuple[object, ...]:
        return (self.client, self.server, self.channel.closed, self.channel.opaque)


Splitter = Callable[[bytes], list[bytes]]


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def random_splitter(seed: int) -> Splitter:
    rng = random.Random(seed)

    def split(data: bytes) -> list[bytes]:
        if len(data) < 2:
            return [data]
        points = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(6, len(data) - 1))))
        bounds = [0, *points, len(data)]
        return [data[a:b] for a, b in zip(bounds, bounds[1:])]

    return split


def replay(steps: Sequence[Step], split: Splitter = whole, *, greet: bool = True,
           client_host: str = "127.0.0.1", **kwargs: object) -> Result:
    """Feed a transcript; return the outboxes' contents (bytes joined)."""
    ch = ControlChannel(client_host=client_host, **kwargs)  # type: ignore[arg-type]
    if greet:
        ch.receive_server(GREETING)
        assert list(ch.to_client) == [GREETING]
        assert not ch.to_server
        ch.to_client.clear()
    to_client: list[object] = []
    to_server: list[object] = []
    requests: list[ActiveRequest] = []
    for kind, payload in steps:
        if kind == "fail":
            ch.data_failed(requests.pop(0), payload)
        else:
            feed = ch.receive_client if kind == "c" else ch.receive_server
            for chunk in split(payload):
                feed(chunk)
        # notices for the data plane, tested on their own: ActiveAccepted (older PORT/EPRT
        # listeners are unused), TransferReplied (accounts a transfer)
        to_client.extend(i for i in ch.to_client
                         if not isinstance(i, (ActiveAccepted, TransferReplied)))
        ch.to_client.clear()
        requests.extend(i for i in ch.to_server if isinstance(i, ActiveRequest))
        # a TransferCommand's line goes out when its data channel is ready: here at once
        # (the event itself is tested on its own)
        to_server.extend(i.line if isinstance(i, TransferCommand) else i
                         for i in ch.to_server)
        ch.to_server.clear()
    return Result(joined(to_client), joined(to_server), ch)


def check(steps: Sequence[Step], **kwargs: Any) -> Result:
    """Replay whole, byte by byte and at random splits; all must agree."""
    expected = replay(steps, whole, **kwargs)
    for name, splitter in [("bytewise", bytewise)] + [
            (f"random{seed}", random_splitter(seed)) for seed in range(5)]:
        got = replay(steps, splitter, **kwargs)
        assert got.key == expected.key, f"{name} feeding differs from whole feeding"
    return expected


def ready(ch: ControlChannel, event, host: str = "", port: int = 0) -> bytes:
    """What the writer sends first once the event's data channel is set up."""
    return ch.data_ready(event, host, port)


def is_reply(item: object, code: bytes) -> TypeGuard[bytes]:
    """One single-line reply with this code, CRLF-terminated."""
    return (isinstance(item, bytes) and item.startswith(code + b" ")
            and item.endswith(b"\r\n") and item.count(b"\n") == 1 and b"\0" not in item)


# ---------------------------------------------------------------- greeting

def test_greeting_passes_through():
    r = check([s(b"220 (vsFTPd 3.0.5)\r\n")], greet=False)
    assert r.client == [b"220 (vsFTPd 3.0.5)\r\n"]
    assert r.server == []


def test_multiline_greeting_and_commands_before_it():
    # a client may send USER before the greeting arrived: the greeting must not
    # be taken as the reply to USER
    r = check([c(b"USER anonymous\r\n"),
               s(b"220-Welcome\r\n220-to the\r\n220 server\r\n"),
               s(b"331 Password please.\r\n")], greet=False)
    assert r.server == [b"USER anonymous\r\n"]
    assert r.client == [b"220-Welcome\r\n220-to the\r\n220 server\r\n331 Password please.\r\n"]


def test_simple_login_session():
    r = check([c(b"USER bob\r\n"), s(b"331 pw\r\n"), c(b"PASS pw\r\n"), s(b"230 ok\r\n"),
               c(b"SYST\r\n"), s(b"215 UNIX Type: L8\r\n"), c(b"QUIT\r\n"), s(b"221 bye\r\n")])
    assert r.server == [b"USER bob\r\nPASS pw\r\nSYST\r\nQUIT\r\n", QuitSent()]
    assert r.client == [b"331 pw\r\n230 ok\r\n215 UNIX Type: L8\r\n221 bye\r\n"]
    assert not r.channel.closed


# ---------------------------------------------------------------- PASV / 227

PASV_227 = [
    (b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n", "10.0.0.1", 1025),
    (b"227 Entering passive mode (127,0,0,1,195,80).\r\n", "127.0.0.1", 50000),  # pyftpdlib
    (b"227 Entering Passive Mode 192,168,1,2,200,13\r\n", "192.168.1.2", 51213),  # no parens
    (b"227 Entering Passive Mode =10,1,2,3,39,16\r\n", "10.1.2.3", 10000),  # = form
    (b"227 Entering Passive Mode (10,0,0,1,4,1)\r\n", "10.0.0.1", 1025),  # no trailing dot
    (b"227 OK 3 ways, use 172,16,0,9,117,48 please (or not).\r\n", "172.16.0.9", 30000),
    (b"227 =10,0,0,1,4,1\n", "10.0.0.1", 1025),  # bare LF
]


@pytest.mark.parametrize("reply, host, port", PASV_227)
def test_pasv_227_gives_offer(reply, host, port):
    r = check([c(b"PASV\r\n"), s(reply)])
    assert r.server == [b"PASV\r\n"]
    assert r.client == [PassiveOffer(host, port, False)]


@pytest.mark.parametrize("command", [b"PASV\r\n", b"pasv\r\n", b"Pasv\n"])
def test_pasv_case_insensitive(command):
    r = check([c(command), s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    assert r.server == [command if command.endswith(b"\r\n") else command[:-1] + b"\r\n"]
    assert r.client == [PassiveOffer("10.0.0.1", 1025, False)]


def test_passive_reply_formats_227():
    r = check([c(b"PASV\r\n"), s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    (offer,) = r.client
    assert ready(r.channel, offer, "127.0.0.1", 40000) == \
        b"227 Entering Passive Mode (127,0,0,1,156,64).\r\n"
    assert ready(r.channel, offer, "192.168.7.8", 1025) == \
        b"227 Entering Passive Mode (192,168,7,8,4,1).\r\n"


def test_data_failed_is_a_425_line_first_in_line():
    r = replay([c(b"PASV\r\n"), s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n"),
                c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    ch = r.channel
    offer = r.client[0]
    ch.to_client.append(b"200 ok\r\n")
    reply = ch.data_failed(offer, "no listener")  # the writer sends it at once
    assert is_reply(reply, b"425")
    assert b"no listener" in reply
    assert list(ch.to_client) == [b"200 ok\r\n"]


@pytest.mark.parametrize("reply", [
    b"227 Entering Passive Mode (10,0,0,256,4,1).\r\n",  # octet 256
    b"227 Entering Passive Mode (10,0,0,1,0,0).\r\n",  # port 0
    b"227 Entering Passive Mode (10,0,0,1,4).\r\n",  # five numbers
    b"227 Entering Passive Mode.\r\n",  # no numbers at all
    b"227 Entering Passive Mode (10,0,0,1,4,1,7).\r\n",  # seven numbers
])
def test_invalid_227_gives_425_and_session_continues(reply):
    r = check([c(b"PASV\r\n"), s(reply),
               c(b"PASV\r\n"), s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    assert r.server == [b"PASV\r\nPASV\r\n"]
    assert len(r.client) == 2
    assert is_reply(r.client[0], b"425")
    assert r.client[1] == PassiveOffer("10.0.0.1", 1025, False)
    assert not r.channel.closed


@pytest.mark.parametrize("command, reply", [
    (b"PASV\r\n", b"227 Entering Passive Mode (10,0,0,1,3,255).\r\n"),  # port 1023
    (b"PASV\r\n", b"227 Entering Passive Mode (10,0,0,1,0,22).\r\n"),  # port 22
    (b"EPSV\r\n", b"229 Entering Extended Passive Mode (|||25|)\r\n"),
])
def test_passive_port_below_1024_gives_425(command, reply):
    # docs/protocol.md, "Valid data addresses": port 0, ports below 1024 and numbers
    # above 255 are invalid; for an invalid 227/229 no forward is made and the client
    # gets a 425.
    r = check([c(command), s(reply)])
    assert len(r.client) == 1
    assert is_reply(r.client[0], b"425"), r.client


def test_multiline_227_to_pasv_gives_one_offer():
    r = check([c(b"PASV\r\n"),
               s(b"227-Entering Passive Mode\r\n227-(10,0,0,1,4,1)\r\n227 OK\r\n"),
               c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert r.client == [PassiveOffer("10.0.0.1", 1025, False), b"200 ok\r\n"]


def test_227_lookalike_inside_multiline_reply_is_text():
    text = (b"211-Status of server\r\n"
            b"227 Entering Passive Mode (10,0,0,1,4,1)\r\n"
            b"229 Entering Extended Passive Mode (|||6446|)\r\n"
            b"211 End\r\n")
    r = check([c(b"STAT\r\n"), c(b"PASV\r\n"), s(text),
               s(b"227 Entering Passive Mode (10,0,0,2,4,2).\r\n")])
    assert r.server == [b"STAT\r\nPASV\r\n"]
    # inner lines a client could read as replies go out as text (a leading space)
    assert r.client == [text.replace(b"\n22", b"\n 22"),
                        PassiveOffer("10.0.0.2", 1026, False)]


def test_227_lookalike_inside_multiline_reply_while_pasv_outstanding():
    # the multi-line 211 answers STAT; the 227 inside it must not be taken for PASV's
    text = b"211-Status\r\n227 Entering Passive Mode (6,6,6,6,4,1)\r\n211 End\r\n"
    as_text = text.replace(b"\n227", b"\n 227")
    r = check([c(b"STAT\r\nPASV\r\n"), s(text)])
    assert r.client == [as_text]
    r = check([c(b"STAT\r\nPASV\r\n"), s(text),
               s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    assert r.client == [as_text, PassiveOffer("10.0.0.1", 1025, False)]


WITHHELD_227 = b"227 ftptrio: unsolicited passive reply withheld (no PASV/EPSV outstanding).\r\n"


def test_unsolicited_227_is_withheld():
    """Its port would reach a client that takes it for a later PASV's answer and
    connects there: through ftptrio, on the client's own machine (review finding)."""
    r = check([s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    assert r.client == [WITHHELD_227]
    assert r.server == []


@pytest.mark.parametrize("reply", [
    b"229 Entering Extended Passive Mode (|||6446|)\r\n",
    b"227-Entering Passive Mode\r\n227 (10,0,0,1,4,1)\r\n"])
def test_unsolicited_229_and_multiline_227_are_withheld(reply):
    r = check([s(reply), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert len(r.client) == 1 and b"withheld" in r.client[0]
    assert b"6446" not in r.client[0] and b"4,1" not in r.client[0]
    assert r.client[0].endswith(b"\r\n200 ok\r\n")


def test_227_answering_another_command_is_withheld():
    bogus = b"227 Entering Passive Mode (6,6,6,6,4,1).\r\n"
    r = check([c(b"NOOP\r\nPASV\r\n"), s(bogus),
               s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    assert r.client == [WITHHELD_227, PassiveOffer("10.0.0.1", 1025, False)]


def test_unsolicited_227_before_greeting_makes_no_offer():
    reply = b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n"
    r = check([s(reply), s(GREETING)], greet=False)
    assert r.client == [WITHHELD_227 + GREETING]


def test_command_lines_forwarded_are_at_most_2048_bytes():
    """pyftpdlib keeps 2048 bytes of a line and reads the rest as a new command: a
    longer line could smuggle a PORT past ftptrio (review finding)."""
    longest = b"NOOP " + b"A" * (2046 - 7) + b"\r\n"
    assert len(longest) == 2046
    r = check([c(longest)])
    assert r.server == [longest]
    smuggle = b"NOOP " + b"A" * 2100 + b"PORT 127,0,0,1,4,1\r\n"
    r = check([c(smuggle)])
    assert r.server == [] and r.channel.closed
    assert r.client[0].startswith(b"500 ftptrio: command line too long")
    r = check([c(b"NOOP " + b"A" * 2041 + b"\n")])  # 2047 bytes; forwarded with CRLF: 2048
    assert len(r.server[0]) == 2048


def test_backlog_counts_replies_held_behind_an_unanswered_command():
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.receive_client(b"RETR big.iso\r\n")  # its 226 comes when the transfer ends
    ch.to_client.clear()
    start = ch.backlog
    ch.receive_client(b"A\n" * 1000)  # 1000 x 500, held behind the RETR
    assert ch.to_client.size == 0
    assert ch.backlog >= start + 1000 * 40
    ch.receive_server(b"150 ok\r\n226 done\r\n")
    assert ch.backlog == 0 and ch.to_client.size > 1000 * 40


# ---------------------------------------------------------------- EPSV / 229

@pytest.mark.parametrize("command", [b"EPSV\r\n", b"epsv\r\n", b"EPSV 1\r\n", b"EPSV 2\r\n"])
@pytest.mark.parametrize("reply", [
    b"229 Entering Extended Passive Mode (|||6446|)\r\n",
    b"229 Entering Extended Passive Mode (!!!6446!)\r\n",
    b"229 Extended Passive mode OK (|||6446|)\r\n",
])
def test_epsv_229_gives_offer(command, reply):
    r = check([c(command), s(reply)])
    assert r.server == [command]
    assert r.client == [PassiveOffer(None, 6446, True)]
    assert ready(r.channel, r.client[0], "127.0.0.1", 40000) == \
        b"229 Entering Extended Passive Mode (|||40000|)\r\n"


@pytest.mark.parametrize("reply", [
    b"229 Entering Extended Passive Mode (|||0|)\r\n",
    b"229 Entering Extended Passive Mode (|||65536|)\r\n",
    b"229 Entering Extended Passive Mode\r\n",
    b"229 Entering Extended Passive Mode (|1|6446|)\r\n",
])
def test_invalid_229_gives_425(reply):
    r = check([c(b"EPSV\r\n"), s(reply), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert len(r.client) == 1
    body = r.client[0]
    assert body.startswith(b"425 ") and body.endswith(b"\r\n200 ok\r\n")
    assert body.count(b"\n") == 2


def test_epsv_all_passes_through_without_offer():
    r = check([c(b"EPSV ALL\r\n"), s(b"200 EPSV ALL ok.\r\n"),
               c(b"EPSV\r\n"), s(b"229 Entering Extended Passive Mode (|||6446|)\r\n")])
    assert r.server == [b"EPSV ALL\r\nEPSV\r\n"]
    assert r.client == [b"200 EPSV ALL ok.\r\n", PassiveOffer(None, 6446, True)]


def test_229_reply_to_epsv_all_is_not_an_offer():
    reply = b"229 Entering Extended Passive Mode (|||6446|)\r\n"
    r = check([c(b"epsv all\r\n"), s(reply)])
    assert r.client == [reply.replace(b"Entering Extended Passive Mode (|||6446|)",
                                      WITHHELD_227[4:-2])]


def test_multiline_229_to_epsv_gives_one_offer():
    r = check([c(b"EPSV\r\n"),
               s(b"229-Extended passive\r\n229 Entering Extended Passive Mode (|||6446|)\r\n")])
    assert r.client == [PassiveOffer(None, 6446, True)]


# ---------------------------------------------------------------- pipelining / FIFO

def test_pipelined_pasv_noop():
    r = check([c(b"PASV\r\nNOOP\r\n"),
               s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n200 NOOP ok.\r\n")])
    assert r.server == [b"PASV\r\nNOOP\r\n"]
    assert r.client == [PassiveOffer("10.0.0.1", 1025, False), b"200 NOOP ok.\r\n"]


def test_pipelined_noop_pasv_epsv():
    r = check([c(b"NOOP\r\nPASV\r\nEPSV\r\nNOOP\r\n"),
               s(b"200 ok\r\n227 Entering Passive Mode (10,0,0,1,4,1).\r\n"
                 b"229 Entering Extended Passive Mode (|||6446|)\r\n200 ok\r\n")])
    assert r.client == [b"200 ok\r\n", PassiveOffer("10.0.0.1", 1025, False),
                        PassiveOffer(None, 6446, True), b"200 ok\r\n"]


def test_preliminary_replies_do_not_consume_pending_command():
    r = check([c(b"RETR file\r\n"), c(b"PASV\r\n"),
               s(b"150 Opening BINARY mode data connection.\r\n"),
               s(b"150-multi\r\n150 line preliminary\r\n"),
               s(b"226 Transfer complete.\r\n"),
               s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    assert r.client == [b"150 Opening BINARY mode data connection.\r\n"
                        b"150-multi\r\n150 line preliminary\r\n"
                        b"226 Transfer complete.\r\n",
                        PassiveOffer("10.0.0.1", 1025, False)]


def test_preliminary_reply_to_pasv_then_227():
    r = check([c(b"PASV\r\n"), s(b"120 wait a moment\r\n"),
               s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    assert r.client == [b"120 wait a moment\r\n", PassiveOffer("10.0.0.1", 1025, False)]


def test_abor_with_telnet_sequences_passes_byte_identical():
    abor = b"\xff\xf4\xff\xf2ABOR\r\n"
    r = check([c(b"PASV\r\n"), s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n"),
               c(b"RETR big\r\n"), s(b"150 Opening\r\n"),
               c(abor), s(b"426 Connection closed; transfer aborted.\r\n226 ABOR ok.\r\n"),
               c(b"PASV\r\n"), s(b"227 Entering Passive Mode (10,0,0,1,4,2).\r\n")])
    assert r.server == [b"PASV\r\nRETR big\r\n" + abor + b"PASV\r\n"]
    assert r.client == [PassiveOffer("10.0.0.1", 1025, False),
                        b"150 Opening\r\n426 Connection closed; transfer aborted.\r\n"
                        b"226 ABOR ok.\r\n",
                        PassiveOffer("10.0.0.1", 1026, False)]


def test_rein_passes_through():
    r = check([c(b"USER a\r\n"), s(b"331 pw\r\n"), c(b"REIN\r\n"),
               s(b"120 soon\r\n220 Service ready for new user.\r\n"),
               c(b"PASV\r\n"), s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")])
    assert r.server == [b"USER a\r\nREIN\r\nPASV\r\n"]
    assert r.client == [b"331 pw\r\n120 soon\r\n220 Service ready for new user.\r\n",
                        PassiveOffer("10.0.0.1", 1025, False)]


# ---------------------------------------------------------------- PORT / EPRT

@pytest.mark.parametrize("command, request_", [
    (b"PORT 127,0,0,1,195,80\r\n", ActiveRequest("127.0.0.1", 50000, False)),
    (b"port 127,0,0,1,4,0\r\n", ActiveRequest("127.0.0.1", 1024, False)),
    (b"EPRT |1|127.0.0.1|50000|\r\n", ActiveRequest("127.0.0.1", 50000, True)),
    (b"eprt !1!127.0.0.1!1024!\n", ActiveRequest("127.0.0.1", 1024, True)),
])
def test_port_eprt_give_active_request(command, request_):
    r = check([c(command)])
    assert r.server == [request_]
    assert r.client == []
    r = check([c(command), s(b"200 PORT command successful.\r\n")])
    assert r.client == [b"200 PORT command successful.\r\n"]


def test_active_command_formats_port_and_eprt():
    ch = ControlChannel(client_host="127.0.0.1")
    port = ActiveRequest("127.0.0.1", 50000, False)
    eprt = ActiveRequest("127.0.0.1", 50000, True)
    assert ready(ch, port, "10.9.8.7", 40000) == b"PORT 10,9,8,7,156,64\r\n"
    assert ready(ch, eprt, "10.9.8.7", 40000) == b"EPRT |1|10.9.8.7|40000|\r\n"
    assert ready(ch, eprt, "::1", 40000) == b"EPRT |2|::1|40000|\r\n"


@pytest.mark.parametrize("command", [
    b"EPRT |2|::1|50000|\r\n", b"EPRT |2|0:0:0:0:0:0:0:1|50000|\r\n"])
def test_eprt_ipv6_from_ipv6_client(command):
    r = check([c(command)], client_host="::1")
    assert r.server == [ActiveRequest("::1", 50000, True)]
    assert r.client == []


def test_port_from_ipv4_mapped_client_address():
    r = check([c(b"PORT 127,0,0,1,195,80\r\n")], client_host="::ffff:127.0.0.1")
    assert r.server == [ActiveRequest("127.0.0.1", 50000, False)]


@pytest.mark.parametrize("command", [
    b"PORT 10,0,0,9,195,80\r\n", b"EPRT |1|10.0.0.9|50000|\r\n",
    b"EPRT |2|::1|50000|\r\n", b"PORT 127,0,0,2,195,80\r\n"])
def test_port_to_foreign_address_is_refused_locally(command):
    r = check([c(command), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert r.server == [b"NOOP\r\n"]
    assert len(r.client) == 1
    assert r.client[0].startswith(b"500 ") and r.client[0].endswith(b"\r\n200 ok\r\n")
    assert r.client[0].count(b"\n") == 2


@pytest.mark.parametrize("command", [
    b"PORT 127,0,0,1,0,21\r\n", b"PORT 127,0,0,1,3,255\r\n",
    b"EPRT |1|127.0.0.1|21|\r\n", b"EPRT |1|127.0.0.1|1023|\r\n"])
def test_port_below_1024_is_refused_with_501(command):
    r = check([c(command)])
    assert r.server == []
    assert len(r.client) == 1 and is_reply(r.client[0], b"501")


@pytest.mark.parametrize("command", [
    b"PORT\r\n", b"PORT 127,0,0,1,195\r\n", b"PORT 127,0,0,1,256,1\r\n",
    b"PORT 127,0,0,1,0,0\r\n", b"PORT a,b,c,d,e,f\r\n", b"PORT 127,0,0,1,195,80,1\r\n",
    b"PORT 127.0.0.1:50000\r\n",
    b"EPRT |3|127.0.0.1|50000|\r\n", b"EPRT |1|::1|50000|\r\n", b"EPRT |1|127.0.0.1|0|\r\n",
    b"EPRT |1|127.0.0.1|70000|\r\n", b"EPRT 1|127.0.0.1|50000\r\n", b"EPRT\r\n",
    b"EPRT |1|127.0.0.1|5x|\r\n",
])
def test_malformed_port_eprt_is_refused_with_501(command):
    r = check([c(command), c(b"NOOP\r\n")])
    assert r.server == [b"NOOP\r\n"]
    assert len(r.client) == 1 and is_reply(r.client[0], b"501"), r.client


def test_active_failed_answers_425_at_its_fifo_position():
    r = check([c(b"NOOP\r\nPORT 127,0,0,1,195,80\r\nSYST\r\n"), fail("remote forward refused"),
               s(b"200 noop ok\r\n"), s(b"215 UNIX\r\n")])
    assert r.server == [b"NOOP\r\n", ActiveRequest("127.0.0.1", 50000, False), b"SYST\r\n"]
    assert len(r.client) == 1
    lines = r.client[0].split(b"\r\n")
    assert lines[0] == b"200 noop ok"
    assert lines[1].startswith(b"425 ") and b"remote forward refused" in lines[1]
    assert lines[2:] == [b"215 UNIX", b""]


def test_active_failed_at_head_answers_at_once():
    r = check([c(b"PORT 127,0,0,1,195,80\r\n"), fail("nope")])
    assert len(r.client) == 1 and is_reply(r.client[0], b"425")


def test_active_failed_releases_local_replies_queued_behind_it():
    r = check([c(b"PORT 127,0,0,1,195,80\r\nLPSV\r\n"), fail("nope")])
    assert len(r.client) == 1
    lines = r.client[0].split(b"\r\n")
    assert lines[0].startswith(b"425 ") and lines[1].startswith(b"502 ") and lines[2:] == [b""]


def test_active_failed_for_unknown_request_is_harmless():
    ch = ControlChannel(client_host="127.0.0.1")
    assert ch.data_failed(ActiveRequest("127.0.0.1", 50000, False, id=999), "stale") == b""
    assert not ch.to_client and not ch.to_server


# ---------------------------------------------------------------- local replies wait

@pytest.mark.parametrize("command, code", [
    (b"LPRT 4,4,127,0,0,1,2,195,80\r\n", b"502"),
    (b"LPSV\r\n", b"502"),
    (b"AUTH TLS\r\n", b"534"),
    (b"auth ssl\r\n", b"534"),
])
def test_local_replies_wait_behind_outstanding_commands(command, code):
    steps = [c(b"NOOP\r\n"), c(command), c(b"SYST\r\n")]
    r = check(steps)
    assert r.server == [b"NOOP\r\nSYST\r\n"]
    assert r.client == []  # NOOP's reply has not come yet
    r = check(steps + [s(b"200 ok\r\n")])
    lines = r.client[0].split(b"\r\n")
    assert lines[0] == b"200 ok" and lines[1].startswith(code + b" ") and lines[2:] == [b""]
    r = check(steps + [s(b"200 ok\r\n215 UNIX\r\n")])
    lines = r.client[0].split(b"\r\n")
    assert lines[0] == b"200 ok" and lines[1].startswith(code + b" ")
    assert lines[2:] == [b"215 UNIX", b""]


def test_local_reply_with_nothing_outstanding_is_immediate():
    r = check([c(b"LPSV\r\n")])
    assert len(r.client) == 1 and is_reply(r.client[0], b"502")
    assert r.server == []


# ---------------------------------------------------------------- active -> passive

def test_converted_port_sends_pasv_and_yields_converted_active():
    r = check([c(b"PORT 127,0,0,1,195,80\r\n"),
               s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")], active_mode="passive")
    assert r.server == [b"PASV\r\n"]
    assert r.client == [ConvertedActive("127.0.0.1", 50000, "10.0.0.1", 1025, False)]
    reply = ready(r.channel, r.client[0])
    assert is_reply(reply, b"200")


def test_converted_eprt_sends_epsv():
    r = check([c(b"EPRT |1|127.0.0.1|50000|\r\n"),
               s(b"229 Entering Extended Passive Mode (|||6446|)\r\n")], active_mode="passive")
    assert r.server == [b"EPSV\r\n"]
    assert r.client == [ConvertedActive("127.0.0.1", 50000, None, 6446, True)]
    assert is_reply(ready(r.channel, r.client[0]), b"200")


def test_converted_refusals_and_errors():
    # foreign PORT: refused locally, no PASV to the server
    r = check([c(b"PORT 10,0,0,9,195,80\r\n")], active_mode="passive")
    assert r.server == [] and is_reply(r.client[0], b"500")
    # invalid 227 to our PASV: 425
    r = check([c(b"PORT 127,0,0,1,195,80\r\n"),
               s(b"227 Entering Passive Mode (10,0,0,1,0,0).\r\n")], active_mode="passive")
    assert len(r.client) == 1 and is_reply(r.client[0], b"425")
    # the server refuses passive mode: its reply reaches the client as PORT's answer
    r = check([c(b"PORT 127,0,0,1,195,80\r\n"), s(b"421 go away\r\n")], active_mode="passive")
    assert r.client == [b"421 go away\r\n"]


def test_converted_pipelined_with_pasv():
    r = check([c(b"PORT 127,0,0,1,195,80\r\nPASV\r\n"),
               s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n"
                 b"227 Entering Passive Mode (10,0,0,1,4,2).\r\n")], active_mode="passive")
    assert r.server == [b"PASV\r\nPASV\r\n"]
    assert r.client == [ConvertedActive("127.0.0.1", 50000, "10.0.0.1", 1025, False),
                        PassiveOffer("10.0.0.1", 1026, False)]


# ---------------------------------------------------------------- AUTH TLS

BLOB = bytes(range(256)) * 8 + b"PASV\r\nPORT 10,0,0,9,0,21\r\n\x00\r\r\n227 (1,2,3,4,5,6)\r\n"


def test_auth_refused_by_default():
    r = check([c(b"AUTH TLS\r\n"), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert r.server == [b"NOOP\r\n"]
    assert r.client[0].startswith(b"534 ")
    assert not r.channel.opaque


def test_auth_passthrough_makes_channel_opaque():
    r = check([c(b"AUTH TLS\r\n"), s(b"234 Proceed with negotiation.\r\n"),
               c(BLOB), s(BLOB), c(BLOB[::-1]), s(b"\x16\x03\x01" * 3000)],
              auth_tls="passthrough")
    assert r.channel.opaque
    assert r.server == [b"AUTH TLS\r\n" + BLOB + BLOB[::-1]]
    assert r.client == [b"234 Proceed with negotiation.\r\n" + BLOB + b"\x16\x03\x01" * 3000]
    assert not r.channel.closed


def test_auth_passthrough_bytes_in_same_segment_as_234():
    # whatever follows the 234 in the same read is TLS and passes unchanged
    r = check([c(b"AUTH TLS\r\n"), s(b"234 Proceed.\r\n" + BLOB)], auth_tls="passthrough")
    assert r.client == [b"234 Proceed.\r\n" + BLOB]


def test_auth_passthrough_long_tls_record_in_same_segment_as_234():
    # a TLS record is not a line: more than max_line bytes without LF right after
    # the 234 must pass unchanged, as they do when they come in a later segment
    record = bytes(i % 10 for i in range(10000))  # no LF
    r = check([c(b"AUTH TLS\r\n"), s(b"234 Proceed.\r\n" + record)], auth_tls="passthrough")
    assert r.client == [b"234 Proceed.\r\n" + record]
    assert not r.channel.closed


def test_auth_passthrough_refused_by_server_stays_plain():
    r = check([c(b"AUTH TLS\r\n"), s(b"504 not implemented\r\n"),
               c(b"PASV\r\n"), s(b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n")],
              auth_tls="passthrough")
    assert not r.channel.opaque
    assert r.client == [b"504 not implemented\r\n", PassiveOffer("10.0.0.1", 1025, False)]


# ---------------------------------------------------------------- hostile bytes

@pytest.mark.parametrize("command", [
    b"NO\x00OP\r\n", b"LIST\rfoo\r\n", b"PASS a\rb\r\n", b"\x00\r\n", b"RETR x\r\r\n"])
def test_client_nul_or_bare_cr_is_refused_locally(command):
    r = check([c(command), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert r.server == [b"NOOP\r\n"]
    body = r.client[0]
    assert body.startswith(b"500 ") and body.endswith(b"\r\n200 ok\r\n")
    assert body.count(b"\n") == 2
    assert not r.channel.closed


@pytest.mark.parametrize("max_line", [512, 4096])
def test_client_line_over_max_line_closes(max_line):
    long = b"STOR " + b"a" * max_line + b"\r\n"
    r = check([c(b"NOOP\r\n" + long), s(b"200 ok\r\n"), c(b"PASV\r\n")], max_line=max_line)
    assert r.server == [b"NOOP\r\n"]
    assert len(r.client) == 2
    assert is_reply(r.client[0], b"500")
    assert r.client[1] is CLOSE
    assert r.channel.closed


def test_client_unterminated_overlong_data_closes():
    r = check([c(b"x" * 600)], max_line=512)
    assert r.server == []
    assert len(r.client) == 2 and is_reply(r.client[0], b"500") and r.client[1] is CLOSE


def test_line_of_exactly_max_line_is_accepted():
    line = b"STOR " + b"a" * (512 - 7) + b"\r\n"
    assert len(line) == 512
    r = check([c(line), s(b"150 ok\r\n")], max_line=512)
    assert r.server == [line]
    assert r.client == [b"150 ok\r\n"]


@pytest.mark.parametrize("data", [
    b"200 " + b"x" * 600 + b"\r\n",
    b"211-" + b"y" * 700,
])
def test_server_line_over_max_line_closes_with_421(data):
    r = check([c(b"NOOP\r\n"), s(data), c(b"NOOP\r\n")], max_line=512)
    assert r.server == [b"NOOP\r\n"]
    assert len(r.client) == 2
    assert is_reply(r.client[0], b"421")
    assert r.client[1] is CLOSE
    assert r.channel.closed


@pytest.mark.parametrize("data", [b"200 o\x00k\r\n", b"200 a\rb\r\n"])
def test_server_line_with_nul_or_bare_cr_closes_with_421(data):
    r = check([c(b"NOOP\r\n"), s(b"150 fine\r\n" + data + b"200 late\r\n")])
    assert len(r.client) == 2
    assert r.client[0].startswith(b"150 fine\r\n421 ")
    assert r.client[0].count(b"\n") == 2
    assert r.client[1] is CLOSE
    assert b"late" not in r.client[0]


def test_server_nul_line_then_overlong_line_in_one_read_closes_once():
    # the NUL line closes the session; the overlong tail of the same read must not
    # produce a second 421 and a second CLOSE
    r = check([c(b"NOOP\r\n"), s(b"200 o\x00k\r\n" + b"x" * 600)], max_line=512)
    assert len(r.client) == 2, r.client
    assert is_reply(r.client[0], b"421") and b"NUL" in r.client[0]
    assert r.client[1] is CLOSE


def test_nothing_happens_after_close():
    r = check([s(b"200 " + b"x" * 600 + b"\r\n"), c(b"NOOP\r\n"), s(b"200 ok\r\n")],
              max_line=512)
    assert r.server == []
    assert r.client[-1] is CLOSE and len(r.client) == 2


def test_bare_lf_lines_are_forwarded_with_crlf():
    r = check([c(b"NOOP\n"), s(b"200 ok\n"),
               c(b"STAT\n"), s(b"211-status\n 227 Entering Passive Mode (1,2,3,4,5,6)\n211 End\n"),
               c(b"PASV\n"), s(b"227 Entering Passive Mode (10,0,0,1,4,1)\n")])
    assert r.server == [b"NOOP\r\nSTAT\r\nPASV\r\n"]
    assert r.client == [b"200 ok\r\n211-status\r\n 227 Entering Passive Mode (1,2,3,4,5,6)\r\n"
                        b"211 End\r\n", PassiveOffer("10.0.0.1", 1025, False)]


def test_empty_client_line_is_not_forwarded():
    r = check([c(b"\r\n\nNOOP\r\n"), s(b"200 ok\r\n")])
    assert r.server == [b"NOOP\r\n"]
    assert r.client == [b"200 ok\r\n"]


# ---------------------------------------------------------------- passwords never logged

@pytest.mark.parametrize("password_line", [
    b"PASS s3cret\r\n", b"pass s3cret\r\n", b"PASS s3cret\n", b"  PASS s3cret\r\n",
    b"\xff\xf4PASS s3cret\r\n", b"ACCT s3cret\r\n",
])
def test_password_never_logged(caplog, password_line):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="ftptrio")
    caplog.set_level(logging.DEBUG, logger="ftptrio._control")
    check([c(b"USER bob\r\n"), s(b"331 Password required.\r\n"),
           c(password_line), s(b"230 Logged in.\r\n")])
    assert any(r.levelno == logging.DEBUG and r.name == "ftptrio._control.lines"
               for r in caplog.records), "no DEBUG records: the test would prove nothing"
    for record in caplog.records:
        assert "s3cret" not in record.getMessage()
        assert "S3CRET" not in record.getMessage().upper()
    assert "s3cret" not in caplog.text.lower()


@pytest.mark.parametrize("password_line", [
    b"PASS s3\x00cret\r\n", b"PASS s3cr\ret\r\n", b"PASS s3cret" + b"x" * 600 + b"\r\n"])
def test_bad_password_lines_never_logged(caplog, password_line):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="ftptrio._control")
    check([c(b"USER bob\r\n"), s(b"331 Password required.\r\n"), c(password_line)],
          max_line=512)
    for record in caplog.records:
        message = record.getMessage()
        assert "s3" not in message and "cret" not in message


def test_describe_line_masks_pass_and_acct():
    assert describe_line(b"PASS s3cret\r\n") == "PASS ****"
    assert describe_line(b"pass s3cret\n") == "PASS ****"
    assert describe_line(b"ACCT s3cret\r\n") == "ACCT ****"
    assert describe_line(b"\xff\xf4PASS s3cret\r\n") == "PASS ****"
    assert "s3cret" not in describe_line(b"  Pass s3cret\r\n")
    assert describe_line(b"USER bob\r\n") == "USER bob"
    assert describe_line(b"RETR file.txt\r\n") == "RETR file.txt"


# ------------------------------------------- Telnet sequences anywhere (FTP bounce, issue 18)
# ProFTPD removes Telnet sequences anywhere in a line, so "PO<IAC IP>RT" is PORT to it:
# every check must judge the line as the server will read it.

IAC_IP, IAC_DM, IAC_WILL_ECHO = b"\xff\xf4", b"\xff\xf2", b"\xff\xfb\x01"


@pytest.mark.parametrize("command", [
    b"PO" + IAC_IP + b"RT 10,0,0,9,195,80\r\n",
    b"P" + IAC_DM + b"ORT" + IAC_IP + b" 10,0,0,9,195,80\r\n",
    b"EP" + IAC_IP + b"RT |1|10.0.0.9|50000|\r\n",
    b"EPR" + IAC_WILL_ECHO + b"T |2|::1|50000|\r\n",
    IAC_IP + b"PORT 10,0,0,9,195,80\r\n",
    b"PORT 10,0,0,9,195,80" + IAC_IP + b"\r\n",
])
def test_telnet_inside_port_cannot_bounce(command):
    r = check([c(command), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert r.server == [b"NOOP\r\n"]
    assert r.client[0].startswith(b"500 ") and r.client[0].endswith(b"\r\n200 ok\r\n")


@pytest.mark.parametrize("command", [
    b"PO" + IAC_IP + b"RT 127,0,0,1,0,22\r\n", b"EP" + IAC_IP + b"RT |1|127.0.0.1|22|\r\n"])
def test_telnet_inside_port_to_low_port_is_refused(command):
    r = check([c(command)])
    assert r.server == [] and is_reply(r.client[0], b"501")


def test_telnet_inside_own_port_is_a_port_command():
    r = check([c(b"PO" + IAC_IP + b"RT 127,0,0,1,195,80\r\n")])
    assert r.server == [ActiveRequest("127.0.0.1", 50000, False)]


def test_telnet_inside_auth_is_refused():
    r = check([c(b"AU" + IAC_IP + b"TH TLS\r\n"), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert r.server == [b"NOOP\r\n"]
    assert r.client[0].startswith(b"534 ")


@pytest.mark.parametrize("command", [
    b"PORT\t10,0,0,9,195,80\r\n",  # ProFTPD splits words on any whitespace
    b"PORTX 10,0,0,9,195,80\r\n", b"PO 10,0,0,9,195,80\r\n", b"P0RT 10,0,0,9,195,80\r\n",
    b"PO\xff\xffRT 10,0,0,9,195,80\r\n", b"\xe9tat x\r\n", b"PORT\x0b10,0,0,9,195,80\r\n",
])
def test_command_word_must_be_three_or_four_letters(command):
    r = check([c(command), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert r.server == [b"NOOP\r\n"]
    assert r.client[0].startswith(b"500 ")


@pytest.mark.parametrize("command", [
    b"RETR a\xffb\r\n", b"NOOP\xff\r\n", b"NOOP" + b"\xff\xfb\r\n", b"NO\xff\xfaOP\r\n",
    b"STOR x\xff\xf7\r\n"])
def test_unsupported_or_cut_short_telnet_is_refused(command):
    r = check([c(command), c(b"NOOP\r\n"), s(b"200 ok\r\n")])
    assert r.server == [b"NOOP\r\n"]
    assert r.client[0].startswith(b"500 ftptrio: invalid Telnet sequence")


@pytest.mark.parametrize(("command", "forwarded"), [
    (b"NO" + IAC_IP + b"OP\r\n", b"NOOP\r\n"),
    (b"RETR caf\xff\xffe\r\n", b"RETR caf\xff\xffe\r\n"),  # IAC IAC: literal 0xFF, kept escaped
    (IAC_WILL_ECHO + b"CWD /a" + IAC_IP + b"b\n", b"CWD /ab\r\n"),
    (b"PA" + IAC_IP + b"SS secret\r\n", b"PASS secret\r\n"),
    (b"AB" + IAC_IP + b"OR\r\n", b"\xff\xf4\xff\xf2ABOR\r\n"),  # the standard Synch prefix
    (IAC_IP + IAC_DM + b"abor\r\n", b"\xff\xf4\xff\xf2abor\r\n"),
])
def test_only_the_decoded_line_is_forwarded(command, forwarded):
    r = check([c(command)])
    assert r.server == [forwarded]


def test_telnet_inside_pass_is_masked_in_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="ftptrio._control")
    check([c(b"USER bob\r\n"), s(b"331 Password required.\r\n"),
           c(b"PA" + IAC_IP + b"SS s3cret\r\n"), s(b"230 Logged in.\r\n"),
           c(b"PASS\ts3cret\r\n")])
    assert "PASS ****" in caplog.text
    assert "s3cret" not in caplog.text.lower()


def test_control_bytes_are_escaped_in_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="ftptrio._control")
    check([c(b"CWD \x1b[2Jx\r\n"), s(b"250 \x1b]0;title\x07ok\r\n"), c(b"X\x1bYZ a\r\n")])
    assert "\x1b" not in caplog.text and "\x07" not in caplog.text
    assert "CWD \\x1b[2Jx" in caplog.text and "250 \\x1b]0;title\\x07ok" in caplog.text


# ------------------------------------------------ data plane results, holding, lifecycle

def test_events_carry_distinct_integer_ids():
    r = replay([c(b"PASV\r\n"), s(b"227 (10,0,0,1,4,1)\r\n"), c(b"PORT 127,0,0,1,195,80\r\n"),
                c(b"EPRT |1|127.0.0.1|50001|\r\n"), c(b"EPSV\r\n")])
    (offer,) = r.client
    requests = [i for i in r.server if isinstance(i, ActiveRequest)]
    ids = [offer.id] + [q.id for q in requests]
    assert len(requests) == 2 and all(isinstance(i, int) and i > 0 for i in ids)
    assert len(set(ids)) == 3


def test_transfer_complete_reply_is_held_after_an_active_transfer():
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.receive_client(b"PORT 127,0,0,1,195,80\r\nRETR f\r\n")
    ch.to_client.clear()
    request = ch.to_server.popleft()
    assert isinstance(request, ActiveRequest)
    assert ch.data_ready(request, "127.0.0.1", 40000) == b"PORT 127,0,0,1,156,64\r\n"
    (transfer,) = ch.to_server
    assert transfer == TransferCommand("RETR f", request.id)
    assert transfer.line == b"RETR f\r\n"
    ch.receive_server(b"200 PORT ok\r\n150 Opening\r\n226-Transfer complete\r\n226 done\r\n")
    assert list(ch.to_client) == [b"200 PORT ok\r\n", ActiveAccepted(request.id),
                                  b"150 Opening\r\n", HoldForActiveData(request.id),
                                  TransferReplied(226),
                                  b"226-Transfer complete\r\n", b"226 done\r\n"]
    # the next 226 (no active transfer in between) is not held
    ch.to_client.clear()
    ch.receive_client(b"NOOP\r\n")
    ch.receive_server(b"226 no hold\r\n")
    assert list(ch.to_client) == [b"226 no hold\r\n"]


def test_passive_transfer_complete_is_not_held():
    r = check([c(b"PASV\r\n"), s(b"227 (10,0,0,1,4,1)\r\n"), c(b"RETR f\r\n"),
               s(b"150 ok\r\n226 done\r\n")])
    assert not any(isinstance(i, HoldForActiveData) for i in r.client)


def test_refused_port_is_reported_by_request_id_and_releases_the_hold():
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.receive_client(b"PORT 127,0,0,1,195,80\r\n")
    request = ch.to_server.popleft()
    assert isinstance(request, ActiveRequest)
    ch.data_ready(request, "127.0.0.1", 40000)
    ch.to_client.clear()
    ch.receive_server(b"500 Illegal PORT\r\n")
    # the reply says what to do (vsftpd refuses a PORT naming the SSH server's listener)
    assert list(ch.to_client) == [
        b"500 Illegal PORT (ftptrio: the FTP server must reach the SSH server's listener; "
        b"try --active-address or --active-mode passive)\r\n", ActiveRefused(request.id)]
    ch.to_client.clear()
    ch.receive_client(b"NOOP\r\n")
    ch.receive_server(b"250 ok\r\n")
    assert list(ch.to_client) == [b"250 ok\r\n"]


def test_quit_is_followed_by_quit_sent():
    r = check([c(b"NOOP\r\nQUIT\r\n")])
    assert r.server == [b"NOOP\r\nQUIT\r\n", QuitSent()]


def test_server_lost_sends_421_then_close_and_stops_reading():
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.to_client.clear()
    ch.server_lost()
    reply, close = ch.to_client
    assert is_reply(reply, b"421") and close is CLOSE
    ch.receive_client(b"NOOP\r\n")
    assert not ch.to_server


def test_client_and_server_closed_queue_close_behind_pending_output():
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.receive_client(b"NOOP\r\n")
    ch.client_closed()
    assert list(ch.to_server) == [b"NOOP\r\n", CLOSE]
    ch.server_closed()
    assert list(ch.to_client) == [GREETING, CLOSE]


def test_transfer_commands_are_named_for_the_log():
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.receive_client(b"RETR my file\x1b.txt\r\nSTOR up\r\nNOOP\r\nlist\r\n")
    named = [i.command for i in ch.to_server if isinstance(i, TransferCommand)]
    assert named == ["RETR my file\\x1b.txt", "STOR up", "list"]
    assert list(ch.to_server)[0] == TransferCommand("RETR my file\\x1b.txt")


def test_transfer_command_names_its_data_channel_before_the_reply_came():
    """Pipelined EPSV + RETR: the RETR goes out before the 229 came back; it names
    the channel of its own EPSV (the id the offer gets), never one set up earlier."""
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.receive_client(b"EPSV\r\nRETR a\r\n")
    ch.receive_server(b"229 Entering Extended Passive Mode (|||6446|)\r\n")
    offer = next(i for i in ch.to_client if isinstance(i, PassiveOffer))
    ch.receive_client(b"RETR b\r\n")  # the same channel (no new EPSV)
    ch.receive_client(b"PASV\r\nLIST\r\n")
    named = [(i.command, i.channel_id) for i in ch.to_server
             if isinstance(i, TransferCommand)]
    assert named[:2] == [("RETR a", offer.id), ("RETR b", offer.id)]
    assert named[2][0] == "LIST" and named[2][1] not in (None, offer.id)
    ch.receive_server(b"200 ok\r\n150 ok\r\n226 ok\r\n"
                      b"227 Entering Passive Mode (127,0,0,1,4,1)\r\n")
    second = [i for i in ch.to_client if isinstance(i, PassiveOffer)][-1]
    assert second.id == named[2][1]


def test_a_translated_passive_command_keeps_its_channel_id():
    """The server refuses EPSV: ftptrio asks with PASV; the offer keeps the id the
    transfer command named."""
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.receive_client(b"EPSV\r\n")
    ch.receive_server(b"500-no\r\n500 EPSV not understood\r\n")
    ch.receive_client(b"RETR a\r\n")
    (transfer,) = [i for i in ch.to_server if isinstance(i, TransferCommand)]
    ch.receive_server(b"227 Entering Passive Mode (127,0,0,1,4,1)\r\n")
    (offer,) = [i for i in ch.to_client if isinstance(i, PassiveOffer)]
    assert offer.extended and offer.id == transfer.channel_id


def test_refused_auth_argument_is_escaped_in_logs(caplog):
    caplog.set_level(logging.INFO, logger="ftptrio._control")
    check([c(b"AUTH \x1b[31mTLS\r\n")])
    assert "\x1b" not in caplog.text and "\\x1b[31mTLS" in caplog.text


def test_transfer_refused_answers_425_in_fifo_order_and_sends_nothing():
    """The 229 went out before the data channel opened; the channel failed: the
    transfer command is not sent, and its 425 comes after the replies before it."""
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.receive_client(b"EPSV\r\n")
    ch.to_server.clear()
    ch.to_client.clear()
    ch.receive_server(b"229 Entering extended passive mode (|||6000|)\r\n")
    offer = ch.to_client.popleft()
    assert isinstance(offer, PassiveOffer)
    assert ch.data_ready(offer, "127.0.0.1", 40000).startswith(b"229 ")
    ch.receive_client(b"TYPE I\r\nRETR f\r\nNOOP\r\n")
    assert ch.to_server.popleft() == b"TYPE I\r\n"
    event = ch.to_server.popleft()
    assert event == TransferCommand("RETR f", offer.id)  # its channel: this offer's
    ch.transfer_refused(event, "SSH server could not open data connection: refused")
    assert list(ch.to_server) == [b"NOOP\r\n"]  # RETR never reaches the server
    assert list(ch.to_client) == []  # the 425 waits for TYPE's reply
    ch.receive_server(b"200 Type set to I\r\n")
    assert list(ch.to_client) == [
        b"200 Type set to I\r\n",
        b"425 ftptrio: cannot open data connection: SSH server could not open data "
        b"connection: refused\r\n"]
    ch.to_client.clear()
    ch.receive_server(b"200 NOOP ok\r\n")
    assert list(ch.to_client) == [b"200 NOOP ok\r\n"]
    assert ch.backlog == 0
    # a second call for the same command changes nothing
    ch.transfer_refused(event, "again")
    assert list(ch.to_server) == [b"NOOP\r\n"]


def test_transfer_after_a_port_is_not_tied_to_an_earlier_passive_offer():
    """PASV answered (its channel may have failed, unused), then PORT + RETR
    pipelined with active mode converted to passive: the RETR's data channel is the
    PORT's, so it must not name the old offer (whose failure would refuse it)."""
    ch = ControlChannel(client_host="127.0.0.1", active_mode="passive")
    ch.receive_server(GREETING)
    ch.receive_client(b"PASV\r\n")
    ch.receive_server(b"227 Entering Passive Mode (127,0,0,1,23,112).\r\n")
    offer = next(item for item in ch.to_client if isinstance(item, PassiveOffer))
    ch.data_ready(offer, "127.0.0.1", 40000)
    ch.to_server.clear()
    ch.receive_client(b"PORT 127,0,0,1,156,64\r\nRETR f\r\n")
    event = next(item for item in ch.to_server if isinstance(item, TransferCommand))
    assert event.channel_id != offer.id


def test_final_reply_to_a_transfer_command_is_announced_before_it():
    """TransferReplied(code) goes out right before the final reply to RETR/STOR/LIST
    (the data plane accounts the transfer by it), never for a preliminary 150 or for
    other commands' replies."""
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.to_client.clear()
    ch.receive_client(b"NOOP\r\nRETR missing.bin\r\nRETR f\r\n")
    ch.receive_server(b"200 ok\r\n550 No such file.\r\n150 Opening\r\n226 Done\r\n")
    items = [i for i in ch.to_client]
    assert items == [b"200 ok\r\n", TransferReplied(550), b"550 No such file.\r\n",
                     b"150 Opening\r\n", TransferReplied(226), b"226 Done\r\n"]


def test_a_227_answering_a_transfer_command_is_still_announced():
    """A hostile server answers RETR with a 227: withheld, and still the transfer
    command's final reply for the accounting (else every later transfer is
    accounted against the command before it)."""
    ch = ControlChannel(client_host="127.0.0.1")
    ch.receive_server(GREETING)
    ch.to_client.clear()
    ch.receive_client(b"RETR a\r\nRETR b\r\n")
    ch.receive_server(b"227 Entering Passive Mode (127,0,0,1,4,1)\r\n"
                      b"227-x\r\n227 (127,0,0,1,4,2)\r\n")
    replied = [i for i in ch.to_client if isinstance(i, TransferReplied)]
    assert replied == [TransferReplied(227), TransferReplied(227)]
