"""A whole session (loopback client, in-memory FTP server, fake tunnel) with pipelined
and refused transfers: which 226 waits for which active data connection, which
channel a superseding one may close, what a pipelined QUIT leaves running, and a
final reply that comes late."""

from __future__ import annotations

import re
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from ftptrio._config import Config, ForwardSpec, SSHOptions
from ftptrio._session import Session
from ftptrio._stats import TransferStats
from ftptrio.testing.fake_tunnel import FakeRelay, FakeTunnel
from session_streams import loopback_pair, receive_until  # type: ignore[import-not-found]




class Bed:
    def __init__(self, client: trio.SocketStream, server: trio.abc.Stream,
                 tunnel: FakeTunnel, stats: TransferStats, session: Session) -> None:
        self.client, self.server, self.tunnel, self.stats = client, server, tunnel, stats
        self.session = session


@pytest.fixture
async def bed(nursery: trio.Nursery, request: Any) -> AsyncIterator[Bed]:
    config_changes = getattr(request, "param", {})
    client, session_client = await loopback_pair()
    session_server, server = trio.testing.memory_stream_pair()
    spec = ForwardSpec(ftp_host="127.0.0.1", ftp_port=21)
    config = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,), **config_changes)
    tunnel = FakeTunnel(session_server)
    stats = TransferStats()
    session = Session(session_client, spec, config, tunnel, stats, peer=("127.0.0.1", 40000))
    nursery.start_soon(session.run)
    await server.send_all(b"220 hello\r\n")
    await receive_until(client, b"220 hello\r\n")
    yield Bed(client, server, tunnel, stats, session)
    await client.aclose()


async def test_a_refused_active_transfer_does_not_hold_a_later_250(bed: Bed) -> None:
    """PORT (200), RETR missing (550: the server never connects), CWD (250): the 250
    goes out at once, not after active_hold_timeout (10 s)."""
    await bed.client.send_all(b"PORT 127,0,0,1,200,1\r\n")
    await receive_until(bed.server, b"PORT")
    await bed.server.send_all(b"200 PORT ok\r\n")
    await receive_until(bed.client, b"200 PORT ok\r\n")
    await bed.client.send_all(b"RETR missing\r\n")
    await receive_until(bed.server, b"RETR missing\r\n")
    await bed.server.send_all(b"550 No such file.\r\n")
    await receive_until(bed.client, b"550")
    await bed.client.send_all(b"CWD d\r\n")
    await receive_until(bed.server, b"CWD d\r\n")
    await bed.server.send_all(b"250 CWD ok.\r\n")
    await receive_until(bed.client, b"250 CWD ok", timeout=2)
    assert bed.stats.transfers_refused == 1


@pytest.mark.parametrize("bed", [{"active_hold_timeout": 3.0}], indirect=True)
async def test_each_pipelined_active_transfer_holds_its_own_226(bed: Bed) -> None:
    """PORT a, RETR x, PORT b, RETR y pipelined: the second 226 also waits until the
    server's connection for b reached the client (before, the first 226 cleared the
    hold for both)."""
    await bed.client.send_all(b"PORT 127,0,0,1,200,1\r\nRETR x\r\nPORT 127,0,0,1,200,2\r\n"
                              b"RETR y\r\n")
    await receive_until(bed.server, b"RETR y\r\n")
    await bed.server.send_all(b"200 PORT ok\r\n150 go\r\n")
    await trio.testing.wait_all_tasks_blocked()
    await bed.tunnel.armed_listeners[0].incoming.send((FakeRelay(), "127.0.0.1", 20))
    await bed.server.send_all(b"226 done x\r\n")
    await receive_until(bed.client, b"226 done x")
    await bed.server.send_all(b"200 PORT ok\r\n150 go\r\n226 done y\r\n")
    await receive_until(bed.client, b"150 go")
    with trio.move_on_after(0.5):
        await receive_until(bed.client, b"226 done y", timeout=1)
        pytest.fail("226 for y sent before its data connection")
    relay = FakeRelay()
    await bed.tunnel.armed_listeners[1].incoming.send((relay, "127.0.0.1", 20))
    await receive_until(bed.client, b"226 done y", timeout=2)
    assert relay.connected_to == ("127.0.0.1", 200 * 256 + 2)


async def test_a_newer_passive_channel_leaves_one_whose_transfer_went_out(bed: Bed) -> None:
    """PASV, RETR a, EPSV, LIST pipelined: the server gets its data connection with
    the RETR, sends the file, 226, then the 229; channel 1 must still take the client's
    connection (before, channel 2 superseded it: data dropped, yet 226)."""
    await bed.client.send_all(b"PASV\r\nRETR a\r\nEPSV\r\nLIST\r\n")
    await receive_until(bed.server, b"PASV\r\n")
    await bed.server.send_all(b"227 Entering Passive Mode (127,0,0,1,200,1).\r\n")
    reply = await receive_until(bed.client, b")")
    found = re.search(rb"\(127,0,0,1,(\d+),(\d+)\)", reply)
    assert found
    port = int(found[1]) * 256 + int(found[2])
    await receive_until(bed.server, b"RETR a\r\n")
    await trio.testing.wait_all_tasks_blocked()
    await bed.server.send_all(b"150 Opening\r\n226 Transfer complete.\r\n"
                              b"229 Entering Extended Passive Mode (|||51201|)\r\n")
    await trio.testing.wait_all_tasks_blocked()
    data = await trio.open_tcp_stream("127.0.0.1", port)  # refused before the fix
    await data.aclose()
    await receive_until(bed.client, b"229 ")
    await trio.testing.wait_all_tasks_blocked()
    assert not bed.tunnel.relays[0].closed


async def test_a_pipelined_quit_leaves_the_active_transfer_sent_before_it(bed: Bed) -> None:
    """PORT, RETR, QUIT in one write: the server handles the QUIT after the transfer,
    so the forward of the RETR's PORT stays until the server connected."""
    await bed.client.send_all(b"PORT 127,0,0,1,200,1\r\nRETR x\r\nQUIT\r\n")
    await receive_until(bed.server, b"QUIT\r\n")
    await trio.testing.wait_all_tasks_blocked()
    (expected,) = bed.tunnel.armed_listeners
    assert not expected.closed
    await bed.server.send_all(b"200 PORT ok\r\n150 go\r\n")
    relay = FakeRelay()
    await expected.incoming.send((relay, "127.0.0.1", 20))
    await bed.server.send_all(b"226 done\r\n221 bye\r\n")
    await receive_until(bed.client, b"221 bye")
    assert relay.connected_to == ("127.0.0.1", 200 * 256 + 1)


async def test_a_final_reply_later_than_the_reply_wait_is_not_taken_for_the_next(
        bed: Bed, autojump_clock: trio.testing.MockClock) -> None:
    """The data of RETR a ends, its 226 comes after REPLY_WAIT (the transfer is then
    accounted without it); RETR b follows and is refused (550): the late 226 belongs
    to a, so b is accounted as refused, not as ok."""
    await bed.client.send_all(b"PASV\r\n")
    await receive_until(bed.server, b"PASV\r\n")
    await bed.server.send_all(b"227 Entering Passive Mode (127,0,0,1,200,1).\r\n")
    reply = await receive_until(bed.client, b")")
    found = re.search(rb"\(127,0,0,1,(\d+),(\d+)\)", reply)
    assert found
    data = await trio.open_tcp_stream("127.0.0.1", int(found[1]) * 256 + int(found[2]))
    await bed.client.send_all(b"RETR a\r\n")
    await receive_until(bed.server, b"RETR a\r\n")
    await data.send_all(b"x" * 10)
    await data.aclose()
    await trio.sleep(30)  # past REPLY_WAIT: a is accounted without its reply
    assert bed.stats.transfer_errors == 1
    await bed.client.send_all(b"RETR b\r\n")
    await receive_until(bed.server, b"RETR b\r\n")
    await bed.server.send_all(b"150 go\r\n226 done a\r\n550 no b\r\n")
    await receive_until(bed.client, b"550 no b")
    await trio.sleep(5)
    assert bed.stats.transfers_refused == 1, bed.stats
