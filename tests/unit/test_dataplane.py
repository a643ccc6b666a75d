"""Unit tests of the data plane (``ftptrio._dataplane``) with a fake SSH tunnel.

No SSH server: the fake tunnel (``ftptrio.testing.fake_tunnel``) records what would be
asked of SSH and hands out fake relays and remote listeners; only the data plane's own
one-shot listeners are real (loopback) sockets.
"""

from __future__ import annotations

import gc
import socket
from typing import Callable

import pytest
import trio

from ftptrio._config import Config, ForwardSpec, SSHOptions
from ftptrio._control import ActiveRequest, ConvertedActive, PassiveOffer
from ftptrio._dataplane import (MAX_ACTIVE_WAITING, DataPlane, DataSetupError, LocalDataPlane,
                                RemoteDataPlane, SessionAddresses, forward_ahead_allowed)
from ftptrio._stats import TransferStats
from ftptrio.testing.fake_tunnel import FakeRelay, FakeTunnel


def make_plane(direction: str = "local", **config: object,
               ) -> tuple[DataPlane, FakeTunnel, TransferStats]:
    spec = (ForwardSpec(ftp_host="127.0.0.1", ftp_port=21) if direction == "local" else
            ForwardSpec(ftp_host="127.0.0.1", ftp_port=21, direction="remote"))
    cfg = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,), **config)  # type: ignore[arg-type]
    tunnel = FakeTunnel()
    stats = TransferStats()
    addresses = SessionAddresses(1, "127.0.0.1", "127.0.0.1",
                                 server_local_host="127.0.0.1", server_peer_host="127.0.0.1")
    cls = LocalDataPlane if direction == "local" else RemoteDataPlane
    return cls(cfg, spec, tunnel, stats, addresses), tunnel, stats


async def connect(port: int, source: str = "127.0.0.1") -> trio.socket.SocketType:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return sock


async def test_passive_relays_the_clients_one_connection_and_counts_it():
    plane, tunnel, stats = make_plane()
    async with plane.open():
        host, port = await plane.setup(PassiveOffer("10.9.9.9", 50000, False, 1))
        assert host == "127.0.0.1"
        plane.name_transfer("STOR f", 1)  # as the session does before transfer_ready
        assert await plane.transfer_ready(1) is None  # the channel opened
        assert tunnel.relays[0].destination == ("127.0.0.1", 50000)  # the FTP host, not 10.9.9.9
        sock = await connect(port)
        with sock:
            await sock.send(b"x" * 1000)
        await tunnel.relays[0].done.wait()
        plane.transfer_replied(226)
    assert (stats.transfers, stats.bytes_to_server, stats.bytes_to_client) == (1, 1000, 0)
    assert stats.by_mode == {"passive": 1}


async def test_passive_listener_refuses_other_addresses():
    plane, tunnel, _ = make_plane()
    async with plane.open():
        _, port = await plane.setup(PassiveOffer(None, 50000, True, 1))
        assert await plane.transfer_ready(1) is None
        stranger = await connect(port, "127.0.0.2")
        with stranger:
            assert await stranger.recv(10) == b""  # closed by the data plane
        sock = await connect(port)
        sock.close()
        await tunnel.relays[0].done.wait()


async def test_new_passive_offer_supersedes_the_unused_one():
    plane, tunnel, _ = make_plane()
    async with plane.open():
        await plane.setup(PassiveOffer(None, 50000, True, 1))
        await plane.setup(PassiveOffer(None, 50001, True, 2))
        await trio.testing.wait_all_tasks_blocked()
        # superseded before its turn to open: its channel is never opened
        assert [relay.destination[1] for relay in tunnel.relays] == [50001]
        assert not tunnel.relays[0].closed
        assert plane.waiting == 1
        plane.stop_waiting()
    assert tunnel.relays[0].closed


async def test_passive_address_not_allow_listed_is_refused():
    plane, tunnel, _ = make_plane(trust_pasv_address=True, pasv_allowed_hosts=("10.0.0.7",))
    async with plane.open():
        with pytest.raises(DataSetupError, match="not allowed"):
            await plane.setup(PassiveOffer("10.0.0.8", 50000, False, 1))
        await plane.setup(PassiveOffer("10.0.0.7", 50000, False, 2))
        assert await plane.transfer_ready(2) is None
        assert tunnel.relays[0].destination == ("10.0.0.7", 50000)
        plane.stop_waiting()


async def test_a_failed_channel_does_not_refuse_a_pipelined_later_transfer():
    """EPSV whose channel failed, never used; then EPSV + RETR pipelined: the RETR
    (sent before the new 229 came back) is not refused with the old failure."""
    plane, tunnel, _ = make_plane()
    tunnel.fail = True
    async with plane.open():
        await plane.setup(PassiveOffer(None, 50000, True, 1))
        await trio.sleep(0.05)  # the open fails meanwhile
        # the RETR names channel 2, whose EPSV is not answered yet
        assert await plane.transfer_ready(2) is None
        tunnel.fail = False
        await plane.setup(PassiveOffer(None, 50001, True, 2))
        assert await plane.transfer_ready(2) is None
        plane.stop_waiting()


async def test_tunnel_errors_become_setup_errors_with_the_reason():
    plane, tunnel, _ = make_plane()
    tunnel.fail = True
    async with plane.open():
        # the 227/229 goes out before the channel is open: the transfer gets the 425
        _, port = await plane.setup(PassiveOffer(None, 50000, True, 1))
        assert "administratively prohibited" in (await plane.transfer_ready(1) or "")
        assert await plane.transfer_ready(1) is None  # one answer per data channel
        with pytest.raises(OSError):  # the listener closed with the failure
            await connect(port)
        assert plane.waiting == 0
        # converted: the 200 goes out at once, the transfer command gets the 425
        with socket.create_server(("127.0.0.1", 0)) as client_listener:
            await plane.setup(ConvertedActive("127.0.0.1", client_listener.getsockname()[1],
                                              None, 6000, False, 3))
            assert "administratively prohibited" in (await plane.transfer_ready(3) or "")
        assert plane._channels == {}
        with pytest.raises(DataSetupError, match="remote forward refused"):
            await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 2))


async def test_active_request_opens_a_filtered_remote_forward_and_settles():
    plane, tunnel, stats = make_plane()
    async with plane.open():
        host, port = await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 1))
        assert (host, port) == ("127.0.0.1", 40000)
        plane.accepted(1)  # the server's 200 to the rewritten PORT
        plane.name_transfer("RETR f", 1)
        listener = tunnel.armed_listeners[0]
        assert listener.accept_filter is not None
        assert listener.accept_filter("127.0.0.1", 20) and not listener.accept_filter("10.0.0.1", 20)
        relay = FakeRelay("", 0)
        await listener.incoming.send((relay, "127.0.0.1", 20))
        with trio.fail_after(5):
            await plane.wait_active_settled(1)
        assert listener.closed and relay.connected_to == ("127.0.0.1", 50000)
        plane.transfer_replied(226)
    assert stats.by_mode == {"active": 1} and stats.bytes_to_client == 11


async def test_refused_request_drops_its_forward():
    plane, tunnel, _ = make_plane()
    async with plane.open():
        await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 7))
        plane.refused(7)
        with trio.fail_after(5):
            await plane.wait_active_settled(7)
        assert tunnel.armed_listeners[0].closed


async def test_hold_is_bounded_by_the_active_hold_timeout():
    plane, _, _ = make_plane(active_hold_timeout=0.05)
    async with plane.open():
        await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 1))
        plane.accepted(1)  # the server never connects
        with trio.fail_after(5):
            await plane.wait_active_settled(1)  # returns after the hold timeout
        plane.stop_waiting()


async def test_many_active_transfers_leave_no_per_request_state():
    plane, tunnel, _ = make_plane()
    async with plane.open():
        for request_id in range(1, 2001):
            await plane.setup(ActiveRequest("127.0.0.1", 50000, False, request_id))
            if request_id % 2:
                plane.refused(request_id)
            else:
                plane.accepted(request_id)
                await tunnel.armed_listeners[-1].incoming.send((FakeRelay("", 0), "127.0.0.1", 20))
            await plane.wait_active_settled(request_id)
        await trio.testing.wait_all_tasks_blocked()
        assert plane._channels == {}
        gc.collect()
        assert plane.waiting == 0


async def test_converted_connects_the_server_port_to_the_clients_listener():
    """The client's listener is connected first, then the SSH channel to the server's
    passive port opens; the transfer command goes out after both."""
    plane, tunnel, stats = make_plane()
    with socket.create_server(("127.0.0.1", 0)) as client_listener:
        client_port = client_listener.getsockname()[1]
        async with plane.open():
            assert await plane.setup(
                ConvertedActive("127.0.0.1", client_port, None, 6000, False, 1)) == ("", 0)
            plane.name_transfer("RETR f", 1)
            assert await plane.transfer_ready(1) is None
            assert tunnel.relays[0].destination == ("127.0.0.1", 6000)
            client_listener.accept()[0].close()  # (it was connected, in the backlog)
            await trio.testing.wait_all_tasks_blocked()  # relaying: the 226 comes after
            plane.transfer_replied(226)
    assert stats.by_mode == {"converted": 1}


async def test_converted_with_no_client_listener_fails_its_port():
    """The client does not listen on its PORT: the PORT gets the 425 (so no transfer
    command of it reaches the server, which would see an empty data connection: a
    STOR emptying the file, a RETR answered 226); no SSH channel is opened."""
    plane, tunnel, stats = make_plane()
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # closed when the block ends: nothing listens
    async with plane.open():
        with pytest.raises(DataSetupError, match="cannot connect to your data port"):
            await plane.setup(ConvertedActive("127.0.0.1", port, None, 6000, False, 1))
        assert tunnel.relays == []
        assert plane._channels == {}


async def test_remote_tunnel_counts_bytes_from_ssh_as_bytes_to_the_server():
    """-R: the client is on the SSH side, so what comes out of SSH goes to the server
    (an upload) and what goes into SSH goes to the client (a download)."""
    plane, tunnel, stats = make_plane("remote")
    async with plane.open():
        _, port = await plane.setup(PassiveOffer(None, 50000, True, 1))
        accept_filter = tunnel.armed_listeners[0].accept_filter
        assert port == 40000 and accept_filter is not None
        assert accept_filter("127.0.0.1", 1) and not accept_filter("127.0.0.9", 1)
        relay = FakeRelay("", 0)
        await tunnel.armed_listeners[0].incoming.send((relay, "127.0.0.1", 5555))
        plane.name_transfer("STOR f", 1)
        await relay.done.wait()
        plane.transfer_replied(226)
    # FakeRelay.connect_socket reports 11 bytes from SSH: the client uploaded them
    assert (stats.bytes_to_server, stats.bytes_to_client) == (11, 0)


async def test_remote_active_listener_accepts_only_the_ftp_server():
    plane, tunnel, stats = make_plane("remote")
    async with plane.open():
        host, port = await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 1))
        assert host == "127.0.0.1"
        plane.accepted(1)  # the server's 200 to the rewritten PORT
        plane.name_transfer("RETR f", 1)
        sock = await connect(port)
        sock.close()
        with trio.fail_after(5):
            await plane.wait_active_settled(1)
        assert tunnel.relays[0].destination == ("127.0.0.1", 50000)
        plane.transfer_replied(226)
    assert stats.by_mode == {"active": 1} and stats.bytes_to_server == 7


async def test_closing_the_plane_cancels_waiting_listeners():
    plane, tunnel, _ = make_plane()
    async with plane.open():
        _, port = await plane.setup(PassiveOffer(None, 50000, True, 1))
    assert all(relay.closed for relay in tunnel.relays)  # if it got to open at all
    with pytest.raises(OSError):
        await connect(port)


async def test_port_flood_leaves_one_forward_waiting():
    """300 valid PORTs (issue 18.3): at most MAX_ACTIVE_WAITING forwards while the
    server has not answered them, one once it accepted the last."""
    plane, tunnel, _ = make_plane()
    async with plane.open():
        await plane.setup(PassiveOffer(None, 50000, True, 1))
        for request_id in range(2, 302):
            await plane.setup(ActiveRequest("127.0.0.1", 50000, False, request_id))
            await trio.testing.wait_all_tasks_blocked()
            open_now = [listener.closed for listener in tunnel.armed_listeners].count(False)
            assert open_now <= MAX_ACTIVE_WAITING
        await trio.testing.wait_all_tasks_blocked()
        assert [listener.closed for listener in tunnel.armed_listeners].count(False) == 4
        assert all(relay.closed for relay in tunnel.relays)  # the PASV's channel too
        for request_id in range(2, 302):
            plane.accepted(request_id)  # the server's 200s, in order
        await trio.testing.wait_all_tasks_blocked()
        assert [listener.closed for listener in tunnel.armed_listeners].count(False) == 1
        assert [c.id for c in plane._channels.values() if c.waiting] == [301]
        gc.collect()
        assert plane.waiting == 1
        plane.stop_waiting()


async def test_pipelined_port_keeps_the_earlier_forward_until_the_server_took_the_next():
    """PORT a, RETR, PORT b, RETR sent at once: b's forward is set up when the client
    sends PORT b, before the server has connected to a's; a's stays until the server
    accepts PORT b, and the 226 of a's transfer is not held for b's."""
    plane, tunnel, _ = make_plane()
    async with plane.open():
        await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 1))
        await plane.setup(ActiveRequest("127.0.0.1", 50001, False, 2))
        first, second = tunnel.armed_listeners
        await trio.testing.wait_all_tasks_blocked()
        assert not first.closed and not second.closed
        plane.accepted(1)  # 200 to PORT a; the server connects to a's forward
        relay = FakeRelay("", 0)
        await first.incoming.send((relay, "127.0.0.1", 20))
        with trio.fail_after(5):
            await plane.wait_active_settled(1)  # a's connection, not b's
        assert relay.connected_to == ("127.0.0.1", 50000) and not second.closed
        plane.accepted(2)
        await trio.testing.wait_all_tasks_blocked()
        assert not second.closed  # b's own forward stays for its transfer
        plane.stop_waiting()


async def test_finished_waits_are_dropped_at_once():
    """A wait that ended (peer connected) leaves the plane's set at once, not when the
    garbage collector gets to it: trio keeps an exited scope alive in its deadline heap
    until the deadline (data_idle_timeout), and every new data request cancels every
    scope still in the set (measured: ~450 stale scopes per request after 1000 files,
    2.5 ms of CPU per file)."""
    plane, tunnel, _ = make_plane()
    async with trio.open_nursery() as nursery, plane.open():
        # an earlier deadline that stays registered (as a session's other timeouts do)
        # keeps trio from popping the exited scopes off its heap
        nursery.start_soon(trio.sleep, plane.config.data_idle_timeout / 2)
        for offer_id in range(1, 51):
            _, port = await plane.setup(PassiveOffer(None, 50000, True, offer_id))
            assert await plane.transfer_ready(offer_id) is None
            sock = await connect(port)
            sock.close()
            await tunnel.relays[-1].done.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert plane.waiting == 0
        for request_id in range(51, 101):
            await plane.setup(ActiveRequest("127.0.0.1", 50000, False, request_id))
            plane.accepted(request_id)
            await tunnel.armed_listeners[-1].incoming.send((FakeRelay("", 0), "127.0.0.1", 20))
            await plane.wait_active_settled(request_id)
            await trio.testing.wait_all_tasks_blocked()
            assert plane.waiting == 0
        nursery.cancel_scope.cancel()


async def test_reply_goes_out_before_the_channel_opens_and_the_transfer_waits():
    """The 229 names a bound listener at once; the channel opens meanwhile; the
    transfer command waits until the open request is on the SSH connection (not for
    its answer); a superseded offer's channel is closed once open."""
    plane, tunnel, _ = make_plane()
    gate = trio.Event()
    sent = trio.Event()
    real_open = tunnel.open_data_relay

    async def slow_open(host: str, port: int, originator: tuple[str, int] = ("", 0),
                        requested: Callable[[], None] | None = None) -> FakeRelay:
        await sent.wait()  # (the SSH connection is busy: the request waits)
        assert requested is not None
        requested()
        await gate.wait()  # the SSH server's answer
        return await real_open(host, port)

    tunnel.open_data_relay = slow_open  # type: ignore[method-assign]
    async with plane.open(), trio.open_nursery() as nursery:
        _, port = await plane.setup(PassiveOffer(None, 50000, True, 1))
        assert tunnel.relays == []  # replied before the channel exists
        sock = await connect(port)  # waits in the listen backlog
        ready: list[str | None] = []

        async def transfer() -> None:
            ready.append(await plane.transfer_ready(1))

        nursery.start_soon(transfer)
        await trio.testing.wait_all_tasks_blocked()
        assert ready == []  # the transfer command waits for the open request
        sent.set()
        await trio.testing.wait_all_tasks_blocked()
        assert ready == [None] and tunnel.relays == []  # sent before the answer
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        sock.close()
        await tunnel.relays[0].done.wait()
        # superseded while opening: the channel is closed as soon as it is open
        gate = trio.Event()
        _, first = await plane.setup(PassiveOffer(None, 50001, True, 2))
        await trio.testing.wait_all_tasks_blocked()  # its open has started
        await plane.setup(PassiveOffer(None, 50002, True, 3))
        with pytest.raises(OSError):  # its listener closed at once, not once opened
            await connect(first)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        by_port = {r.destination[1]: r for r in tunnel.relays}
        assert sorted(by_port) == [50000, 50001, 50002]
        assert by_port[50001].closed and not by_port[50002].closed
        assert plane.waiting == 1
        plane.stop_waiting()


async def test_listener_closes_after_the_idle_timeout_while_the_channel_still_opens():
    """A channel open that hangs (sshd's connect to a port whose host drops SYNs takes
    ~2 min) does not keep the passive listener bound past data_idle_timeout: no
    connection can be accepted or queued there any more, and the transfer gets its
    425 in time."""
    plane, tunnel, _ = make_plane(data_idle_timeout=0.3)
    gate = trio.Event()
    real_open = tunnel.open_data_relay

    async def hanging_open(host: str, port: int, originator: tuple[str, int] = ("", 0),
                           requested: Callable[[], None] | None = None) -> FakeRelay:
        await gate.wait()  # not even requested (the SSH connection is not there yet)
        return await real_open(host, port)

    tunnel.open_data_relay = hanging_open  # type: ignore[method-assign]
    async with plane.open():
        _, port = await plane.setup(PassiveOffer(None, 50000, True, 1))
        assert "timed out" in (await plane.transfer_ready(1) or "")
        await trio.sleep(0.1)
        with pytest.raises(OSError):  # the listener is gone with its timeout
            await connect(port)
        assert plane.waiting == 0
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert all(relay.closed for relay in tunnel.relays)  # no channel left open


async def test_pipelined_refused_transfer_commands_stay_bounded():
    """A client pipelining thousands of RETRs refused before login (530): each is
    counted as refused; at most MAX_UNPAIRED wait for a data connection at a time
    (no task or list growing with the number of commands)."""
    from ftptrio._dataplane import MAX_UNPAIRED

    plane, _tunnel, stats = make_plane()
    async with plane.open():
        for _ in range(2000):
            plane.name_transfer("RETR x")
            plane.transfer_replied(530)
            assert len(plane._unpaired) <= MAX_UNPAIRED
        assert len(plane._awaiting_reply) == 0
    assert stats.transfers_refused == 2000 and stats.transfers == 0


def transfer_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(command, result) of every transfer line logged."""
    return [(r.transfer["command"], r.transfer["result"])
            for r in caplog.records if hasattr(r, "transfer")]


async def test_pipelined_transfers_are_named_by_their_own_channel(caplog):
    """PASV, RETR a, PASV, RETR b pipelined: the second 227's channel supersedes the
    first before the client connected to it, so only b's data connection comes. It
    is RETR b's (by channel id), not the oldest command still waiting (RETR a), and
    a is accounted by the server's 425 as refused (before channel ids, b's bytes
    were logged as "RETR a")."""
    caplog.set_level("INFO", logger="ftptrio._dataplane")
    plane, tunnel, stats = make_plane()
    async with plane.open():
        plane.name_transfer("RETR a", 1)  # both sent before either 227 came back
        plane.name_transfer("RETR b", 2)
        await plane.setup(PassiveOffer(None, 50000, True, 1))
        _, port = await plane.setup(PassiveOffer(None, 50001, True, 2))
        assert await plane.transfer_ready(2) is None
        sock = await connect(port)
        sock.close()
        await tunnel.relays[-1].done.wait()
        plane.transfer_replied(425)  # a: the server got no data connection
        plane.transfer_replied(226)  # b
    assert transfer_lines(caplog) == [("RETR a", "refused"), ("RETR b", "ok")]
    assert (stats.transfers, stats.transfers_refused) == (1, 1)


async def test_a_data_connection_pairs_with_the_command_of_its_channel_whatever_the_order():
    """Two active channels (PORT 1, PORT 2, each with its RETR): the FTP server
    connects to channel 2 first; its transfer is RETR b's."""
    paired: list[str] = []
    plane, tunnel, stats = make_plane()
    async with plane.open():
        await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 1))
        await plane.setup(ActiveRequest("127.0.0.1", 50001, False, 2))
        plane.name_transfer("RETR a", 1)
        plane.name_transfer("RETR b", 2)
        second = FakeRelay("", 0)
        await tunnel.armed_listeners[1].incoming.send((second, "127.0.0.1", 20))
        await trio.testing.wait_all_tasks_blocked()
        records = [r for r in plane._awaiting_reply if r.relay is not None]
        paired = [r.command for r in records]
        plane.stop_waiting()
    assert paired == ["RETR b"]


def test_remote_forward_filter_reads_mapped_loopback_in_either_notation():
    """sshd may report the FTP server's loopback address IPv4-mapped, in the dotted or
    the hex notation; both are the FTP server, any other address is not."""
    from ftptrio._dataplane import ftp_server_only

    accept = ftp_server_only("localhost")
    assert accept is not None
    for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "127.0.0.2"):
        assert accept(host, 20), host
    for host in ("10.0.0.1", "::ffff:a00:1", "example.org", ""):
        assert not accept(host, 20), host


@pytest.mark.parametrize("setting, ftp_host, allowed", [
    ("auto", "127.0.0.1", False), ("auto", "localhost", False), ("auto", "::1", False),
    ("auto", "ftp.example.org", False), ("auto", "0.0.0.0", False),
    ("auto", "192.0.2.10", True), ("auto", "2001:db8::10", True),
    ("yes", "127.0.0.1", True), ("yes", "ftp.example.org", True),
    ("no", "192.0.2.10", False),
])
def test_forward_ahead_only_where_the_address_check_pins_the_ftp_server(
        setting: str, ftp_host: str, allowed: bool) -> None:
    """auto: only when no other user of the SSH server's host can connect from an
    address the forward accepts (a loopback FTP host accepts all of loopback; a name
    accepts any address)."""
    assert forward_ahead_allowed(setting, ftp_host, "0.0.0.0") is allowed


@pytest.mark.parametrize("setting, remote_listen_host, allowed", [
    ("auto", "127.0.0.1", False), ("auto", "::1", False),
    ("auto", "0.0.0.0", True), ("auto", "192.0.2.1", True), ("yes", "127.0.0.1", True),
])
def test_forward_ahead_not_on_a_loopback_remote_forward(
        setting: str, remote_listen_host: str, allowed: bool) -> None:
    """auto: a forward on the SSH server's loopback is reached only from that host, so
    an FTP server passing the address check runs there, with an address any user of
    that host can connect from."""
    assert forward_ahead_allowed(setting, "192.0.2.10", remote_listen_host) is allowed


async def test_auto_requests_no_forward_ahead_on_the_default_remote_listen_address():
    """The default --remote-listen-address (127.0.0.1) with a non-loopback FTP host (the
    SSH host's own LAN address): one forward per PORT, none ahead."""
    spec = ForwardSpec(ftp_host="192.0.2.10", ftp_port=21)
    cfg = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,))
    tunnel = FakeTunnel()
    plane = LocalDataPlane(cfg, spec, tunnel, TransferStats(),
                           SessionAddresses(1, "127.0.0.1", "127.0.0.1"))
    async with plane.open():
        await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 1))
        await trio.testing.wait_all_tasks_blocked()
        assert [listener.armed for listener in tunnel.listeners] == [True]


async def test_forward_ahead_is_armed_by_the_next_port_and_cancelled_with_the_session():
    plane, tunnel, _stats = make_plane(active_forward_ahead="yes")
    async with plane.open():
        await plane.setup(ActiveRequest("127.0.0.1", 50000, False, 1))
        await trio.testing.wait_all_tasks_blocked()
        first, ahead = tunnel.listeners
        assert first.armed and not ahead.armed  # requested ahead, refusing until armed
        _host, port = await plane.setup(ActiveRequest("127.0.0.1", 50001, False, 2))
        assert port == ahead.port and ahead.armed  # no tcpip-forward of its own
        await trio.testing.wait_all_tasks_blocked()
        assert len(tunnel.listeners) == 3 and not tunnel.listeners[2].armed
    assert all(listener.closed for listener in tunnel.listeners)
