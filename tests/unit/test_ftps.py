"""FTPS through a forward (issue 25): the passive range (listening while a TLS session
is live, only for TLS clients' addresses, a few connections per session, only to the
FTP host's same port), implicit mode, the "server demands TLS" hint, and the options.
A loopback client, an in-memory FTP server and a fake tunnel: no SSH server."""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from ftptrio._config import Config, ForwardSpec, SSHOptions
from ftptrio._control import ControlChannel
from ftptrio._errors import ConfigError
from ftptrio._ftps import (MAX_RANGE_CONNECTIONS_PER_SESSION, FtpsForward, PassiveRange,
                           describe_ports)
from ftptrio._session import Session
from ftptrio._stats import TransferStats
from ftptrio.testing.fake_tunnel import FakeTunnel
from ftptrio.testing.servers import free_port_range
from session_streams import loopback_pair, receive_until  # type: ignore[import-not-found]


def range_config(ports: range, **changes: Any) -> tuple[ForwardSpec, Config]:
    spec = ForwardSpec(ftp_host="10.1.2.3", ftp_port=21)
    config = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,), auth_tls="passthrough",
                    passive_ports=(ports.start, ports.stop - 1), **changes)
    return spec, config


class RangeBed:
    def __init__(self, ports: range, passive: PassiveRange, tunnel: FakeTunnel,
                 stats: TransferStats) -> None:
        self.ports, self.range, self.tunnel, self.stats = ports, passive, tunnel, stats


@pytest.fixture
async def rbed(nursery: trio.Nursery) -> AsyncIterator[RangeBed]:
    ports = free_port_range(4)
    spec, config = range_config(ports, data_drain_timeout=0.5)
    tunnel, stats = FakeTunnel(), TransferStats()
    passive = PassiveRange(spec, config, tunnel, stats, ["127.0.0.1"])
    passive.nursery = nursery
    yield RangeBed(ports, passive, tunnel, stats)


async def connect(port: int, source: str = "127.0.0.1") -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return sock


async def closed_by_peer(sock: trio.socket.SocketType) -> bool:
    """The peer closed (or reset) ``sock`` without sending anything."""
    with trio.fail_after(5):
        try:
            return await sock.recv(10) == b""
        except ConnectionResetError:
            return True


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_range_listens_only_while_a_tls_session_is_live(rbed: RangeBed) -> None:
    port = rbed.ports[2]
    assert refused(port)
    await rbed.range.join(1, "127.0.0.1")
    await rbed.range.join(2, "127.0.0.1")
    assert rbed.range.bound_ports == list(rbed.ports)
    rbed.range.leave(1)
    await trio.testing.wait_all_tasks_blocked()
    assert not refused(port)  # one TLS session is still live
    rbed.range.leave(2)
    await trio.testing.wait_all_tasks_blocked()
    assert refused(port) and not rbed.range.live
    await rbed.range.join(3, "127.0.0.1")  # opens again
    assert not refused(port)
    rbed.range.leave(3)


async def test_a_range_connection_goes_to_the_ftp_hosts_same_port(rbed: RangeBed) -> None:
    await rbed.range.join(1, "127.0.0.1")
    port = rbed.ports[1]
    sock = await connect(port)
    await sock.send(b"x" * 1000)
    sock.close()
    with trio.fail_after(5):
        while not (rbed.tunnel.relays and rbed.tunnel.relays[0].done.is_set()):
            await trio.sleep(0.01)
    relay = rbed.tunnel.relays[0]
    assert relay.destination == ("10.1.2.3", port)  # never anywhere else
    assert relay.result.to_ssh == 1000
    await trio.testing.wait_all_tasks_blocked()
    assert rbed.stats.by_mode == {"tls-passive": 1} and rbed.stats.bytes_to_server == 1000
    rbed.range.leave(1)


async def test_a_stray_connection_is_closed_without_a_channel(rbed: RangeBed,
                                                              caplog: Any) -> None:
    """Only an address with a live TLS session may connect: another is closed at once
    and no SSH channel is opened for it."""
    caplog.set_level(logging.WARNING, "ftptrio._ftps")
    await rbed.range.join(1, "127.0.0.9")
    sock = await connect(rbed.ports[0], source="127.0.0.1")
    assert await closed_by_peer(sock)
    sock.close()
    assert rbed.tunnel.relays == []
    assert "refused a connection from 127.0.0.1" in caplog.text
    assert "no TLS session from that address" in caplog.text
    rbed.range.leave(1)


async def test_at_most_a_few_range_connections_per_tls_session(rbed: RangeBed) -> None:
    await rbed.range.join(1, "127.0.0.1")
    held = [await connect(rbed.ports[0]) for _ in range(MAX_RANGE_CONNECTIONS_PER_SESSION)]
    with trio.fail_after(5):
        while len(rbed.tunnel.relays) < MAX_RANGE_CONNECTIONS_PER_SESSION:
            await trio.sleep(0.01)
    extra = await connect(rbed.ports[1])
    assert await closed_by_peer(extra)
    extra.close()
    assert len(rbed.tunnel.relays) == MAX_RANGE_CONNECTIONS_PER_SESSION
    # a second TLS session from the same address doubles the allowance
    await rbed.range.join(2, "127.0.0.1")
    more = await connect(rbed.ports[1])
    with trio.fail_after(5):
        while len(rbed.tunnel.relays) < MAX_RANGE_CONNECTIONS_PER_SESSION + 1:
            await trio.sleep(0.01)
    for sock in [*held, more]:
        sock.close()
    rbed.range.leave(1)
    rbed.range.leave(2)


async def test_the_last_session_ending_ends_running_relays_after_the_drain(
        rbed: RangeBed) -> None:
    await rbed.range.join(1, "127.0.0.1")
    sock = await connect(rbed.ports[0])
    with trio.fail_after(5):
        while not rbed.tunnel.relays:
            await trio.sleep(0.01)
    rbed.range.leave(1)
    with trio.fail_after(3):  # data_drain_timeout 0.5 s: the relay is cut
        await rbed.range._closed.wait()
        while rbed.range._running:
            await trio.sleep(0.01)
    assert rbed.stats.by_mode == {"tls-passive": 1}
    sock.close()


async def test_range_connections_end_with_their_addresss_last_tls_session(
        rbed: RangeBed) -> None:
    """A range connection is not left running after the last TLS session of its
    address ended, even while another address's session keeps the range listening:
    it gets the drain time, as a plain session's transfers do."""
    await rbed.range.join(1, "127.0.0.1")
    await rbed.range.join(2, "127.0.0.2")
    mine = await connect(rbed.ports[0], source="127.0.0.1")
    other = await connect(rbed.ports[1], source="127.0.0.2")
    with trio.fail_after(5):
        while len(rbed.tunnel.relays) < 2:
            await trio.sleep(0.01)
    rbed.range.leave(1)
    with trio.fail_after(3):  # data_drain_timeout 0.5 s
        assert await closed_by_peer(mine)
    assert rbed.range.live and rbed.range.data_running("127.0.0.2") == 1
    assert rbed.range.data_running("127.0.0.1") == 0
    for sock in (mine, other):
        sock.close()
    rbed.range.leave(2)


class _AbortingListener:
    """A range listener whose accept() first fails as Linux reports a connection reset
    (or refused by a firewall rule) before it was accepted."""

    def __init__(self, real: trio.socket.SocketType, error: int) -> None:
        self.real, self.error = real, error

    def getsockname(self) -> Any:
        return self.real.getsockname()

    async def accept(self) -> Any:
        if self.error:
            error, self.error = self.error, 0
            raise OSError(error, os.strerror(error))
        return await self.real.accept()


@pytest.mark.parametrize("error", [errno.ECONNABORTED, errno.EPERM, errno.EPROTO],
                         ids=["ECONNABORTED", "EPERM", "EPROTO"])
async def test_a_connection_gone_before_accept_does_not_end_the_range(
        rbed: RangeBed, nursery: trio.Nursery, error: int) -> None:
    """The range runs beside every session of the forwarder: a failed accept() for a
    connection that is gone must not raise out of it (it would end them all)."""
    await rbed.range.join(1, "127.0.0.1")
    real = trio.socket.socket()
    await real.bind(("127.0.0.1", 0))
    real.listen(4)
    async with trio.open_nursery() as relays:
        listener: Any = _AbortingListener(real, error)
        relays.start_soon(rbed.range._accept_loop, listener, relays)
        sock = await connect(real.getsockname()[1])
        sock.close()
        with trio.fail_after(5):
            while not rbed.tunnel.relays:
                await trio.sleep(0.01)
        relays.cancel_scope.cancel()
    real.close()
    rbed.range.leave(1)


async def test_a_crashing_range_connection_does_not_end_the_range(
        rbed: RangeBed, caplog: Any) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unexpected")

    rbed.tunnel.open_data_relay = broken  # type: ignore[method-assign]
    await rbed.range.join(1, "127.0.0.1")
    sock = await connect(rbed.ports[0])
    assert await closed_by_peer(sock)
    sock.close()
    assert "FTPS data connection from 127.0.0.1" in caplog.text and "crashed" in caplog.text
    assert rbed.range.live and rbed.range.data_running("127.0.0.1") == 0
    rbed.range.leave(1)


async def test_a_taken_range_port_is_reported_with_its_number(rbed: RangeBed,
                                                              caplog: Any) -> None:
    caplog.set_level(logging.INFO, "ftptrio._ftps")
    taken = socket.socket()
    # SO_REUSEADDR, as ftptrio's own listeners: a port of an earlier test's connection
    # in TIME_WAIT can be listened on again (without it bind() failed in CI); the
    # listening socket still keeps the range's listener off the port
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for port in rbed.ports[1:]:  # one the rest of the machine is not using right now
        try:
            taken.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    else:
        pytest.fail(f"no port of {rbed.ports} could be bound")
    taken.listen(1)
    try:
        await rbed.range.join(1, "127.0.0.1")
        assert port not in rbed.range.bound_ports
        assert rbed.range.bound_ports and set(rbed.range.bound_ports) <= set(rbed.ports)
        assert f"FTPS passive port {port} already taken" in caplog.text
        rbed.range.leave(1)
    finally:
        taken.close()


async def test_a_taken_range_port_is_served_once_free_again(
        rbed: RangeBed, monkeypatch: Any) -> None:
    """A range port held when the range opened (here: the local end of a loopback
    connection, as an FTP client's own control connection may be, since Linux picks
    ephemeral ports from 32768-60999) is listened on once it is free, while the range
    is live."""
    monkeypatch.setattr("ftptrio._ftps.TAKEN_RETRY_INTERVAL", 0.1)
    server = socket.create_server(("127.0.0.1", 0))
    holder = socket.socket()
    for port in rbed.ports[2:]:  # one the rest of the machine is not using right now
        try:
            holder.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    else:
        pytest.fail(f"no port of {rbed.ports} free to hold")
    holder.connect(server.getsockname())
    try:
        await rbed.range.join(1, "127.0.0.1")
        assert port not in rbed.range.bound_ports
        assert rbed.range.bound_ports and set(rbed.range.bound_ports) <= set(rbed.ports)
    finally:
        holder.close()
        server.close()
    with trio.fail_after(5):
        while port not in rbed.range.bound_ports:
            await trio.sleep(0.05)
    sock = await connect(port)
    sock.close()
    with trio.fail_after(5):
        while ("10.1.2.3", port) not in [r.destination for r in rbed.tunnel.relays]:
            await trio.sleep(0.01)
    rbed.range.leave(1)
    await trio.testing.wait_all_tasks_blocked()
    assert refused(port)


async def test_no_range_connection_in_a_tls_session_hints_at_active_mode(
        rbed: RangeBed, caplog: Any, autojump_clock: Any) -> None:
    caplog.set_level(logging.WARNING, "ftptrio._ftps")
    await rbed.range.join(7, "127.0.0.1")
    await trio.sleep(5)
    rbed.range.leave(7)
    assert "session 7: its TLS session ended without a data connection" in caplog.text
    assert "active mode (PORT/EPRT)" in caplog.text


def test_describe_ports() -> None:
    assert describe_ports([40005, 40001, 40003, 40004]) == "40001, 40003-40005"


# ------------------------------------------------------------------ sessions

class Bed:
    def __init__(self, client: trio.SocketStream, server: trio.abc.Stream,
                 tunnel: FakeTunnel, ftps: FtpsForward, session: Session) -> None:
        self.client, self.server, self.tunnel, self.ftps = client, server, tunnel, ftps
        self.session = session


async def open_bed(nursery: trio.Nursery, **changes: Any) -> Bed:
    client, session_client = await loopback_pair()
    session_server, server = trio.testing.memory_stream_pair()
    spec = ForwardSpec(ftp_host="127.0.0.1", ftp_port=21)
    config = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,), **changes)
    tunnel = FakeTunnel(session_server)
    stats = TransferStats()
    passive = None
    if config.passive_ports is not None:
        passive = PassiveRange(spec, config, tunnel, stats, ["127.0.0.1"])
        passive.nursery = nursery
    ftps = FtpsForward(spec, passive)
    session = Session(session_client, spec, config, tunnel, stats, peer=("127.0.0.1", 40000),
                      ftps=ftps)
    nursery.start_soon(session.run)
    return Bed(client, server, tunnel, ftps, session)




async def test_explicit_tls_session_opens_the_range_and_closing_it_closes_it(
        nursery: trio.Nursery) -> None:
    ports = free_port_range(3)
    bed = await open_bed(nursery, auth_tls="passthrough",
                         passive_ports=(ports.start, ports.stop - 1))
    await bed.server.send_all(b"220 hello\r\n")
    await receive_until(bed.client, b"220 hello\r\n")
    await bed.client.send_all(b"AUTH TLS\r\n")
    await receive_until(bed.server, b"AUTH TLS\r\n")
    assert refused(ports[0])
    await bed.server.send_all(b"234 Proceed.\r\n\x16\x03\x01opaque")
    await receive_until(bed.client, b"\x16\x03\x01opaque")
    assert bed.ftps.range is not None
    # joined before the server's next bytes are read (no 227 can come before)
    await bed.server.send_all(b"\x17more")
    await receive_until(bed.client, b"\x17more")
    assert bed.ftps.range.live
    assert not refused(ports[0])
    # a range connection from the TLS client goes to the FTP host's same port
    sock = await connect(ports[1])
    sock.close()
    with trio.fail_after(5):
        while ("127.0.0.1", ports[1]) not in [r.destination for r in bed.tunnel.relays]:
            await trio.sleep(0.01)
    await bed.client.aclose()
    with trio.fail_after(5):
        while bed.ftps.range.live:
            await trio.sleep(0.01)
    assert refused(ports[0])


async def start_tls(bed: Bed) -> None:
    """The server's 234 to a passed-through AUTH TLS: the session joins the range."""
    await bed.server.send_all(b"220 hello\r\n")
    await receive_until(bed.client, b"220 hello\r\n")
    await bed.client.send_all(b"AUTH TLS\r\n")
    await receive_until(bed.server, b"AUTH TLS\r\n")
    await bed.server.send_all(b"234 Proceed.\r\n")
    await receive_until(bed.client, b"234 Proceed.\r\n")
    assert bed.ftps.range is not None
    with trio.fail_after(5):
        while not bed.ftps.range.live:
            await trio.sleep(0.01)


async def test_range_traffic_keeps_its_tls_session_from_idling_out(
        nursery: trio.Nursery) -> None:
    """--idle-timeout: while a range connection from the client's address moves data,
    its TLS session (no control traffic: the transfer's reply is still to come) is not
    idle; once that connection stalls, it is."""
    ports = free_port_range(2)
    bed = await open_bed(nursery, auth_tls="passthrough", idle_session_timeout=1.0,
                         passive_ports=(ports.start, ports.stop - 1))
    await start_tls(bed)
    assert bed.ftps.range is not None
    sock = await connect(ports[0])
    moving_until = trio.current_time() + 2.5
    while trio.current_time() < moving_until:
        await sock.send(b"x" * 100)
        await trio.sleep(0.1)
    assert bed.ftps.range.sessions == 1  # not idle-closed while data moved
    with trio.fail_after(3):  # stalled now: idle after 1 s (and a poll)
        while bed.ftps.range.sessions:
            await trio.sleep(0.05)
    sock.close()


async def test_a_plain_session_of_the_same_forward_keeps_rewriting(
        nursery: trio.Nursery) -> None:
    ports = free_port_range(2)
    bed = await open_bed(nursery, auth_tls="passthrough",
                         passive_ports=(ports.start, ports.stop - 1))
    await bed.server.send_all(b"220 hello\r\n")
    await bed.client.send_all(b"EPSV\r\n")
    await receive_until(bed.server, b"EPSV\r\n")
    await bed.server.send_all(b"229 Entering Extended Passive Mode (|||%d|)\r\n" % ports[0])
    reply = await receive_until(bed.client, b"|)")
    assert b"(|||%d|)" % ports[0] not in reply  # rewritten to ftptrio's own listener
    assert bed.ftps.range is not None and not bed.ftps.range.live
    await bed.client.aclose()


async def test_implicit_tls_is_opaque_from_the_first_byte(nursery: trio.Nursery) -> None:
    ports = free_port_range(2)
    bed = await open_bed(nursery, auth_tls="implicit",
                         passive_ports=(ports.start, ports.stop - 1))
    await bed.client.send_all(b"\x16\x03\x01hello PASV\r\n")
    assert await receive_until(bed.server, b"PASV\r\n") == b"\x16\x03\x01hello PASV\r\n"
    await bed.server.send_all(b"\x16\x03\x03227 (127,0,0,1,1,1)\r\n")
    assert await receive_until(bed.client, b")\r\n") == b"\x16\x03\x03227 (127,0,0,1,1,1)\r\n"
    assert bed.ftps.range is not None and bed.ftps.range.live
    assert not refused(ports[0])
    await bed.client.aclose()


async def test_implicit_range_opens_only_for_a_tls_handshake(nursery: trio.Nursery) -> None:
    """A port scanner or health check (connects, sends nothing) opens no range; a plain
    FTP client's first command gets a plaintext 421 and no range either."""
    ports = free_port_range(2)
    bed = await open_bed(nursery, auth_tls="implicit",
                         passive_ports=(ports.start, ports.stop - 1))
    await trio.sleep(0.2)  # the session is up and waiting for the client
    assert bed.ftps.range is not None and not bed.ftps.range.live
    assert refused(ports[0])
    await bed.client.send_all(b"USER bob\r\n")
    reply = await receive_until(bed.client, b"\r\n")
    assert reply.startswith(b"421 ftptrio: this port expects implicit FTPS"), reply
    assert not bed.ftps.range.live and refused(ports[0])
    await bed.client.aclose()


async def test_a_server_demanding_tls_is_explained_once_per_forward(
        nursery: trio.Nursery, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, "ftptrio._ftps")
    bed = await open_bed(nursery)
    await bed.server.send_all(b"220 hello\r\n")
    for _ in range(2):
        await bed.client.send_all(b"USER bob\r\n")
        await receive_until(bed.server, b"USER bob\r\n")
        await bed.server.send_all(b"530 Non-anonymous sessions must use encryption.\r\n")
        await receive_until(bed.client, b"must use encryption.\r\n")
    await trio.testing.wait_all_tasks_blocked()
    lines = [r.getMessage() for r in caplog.records if "demands TLS" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "--auth-tls passthrough --passive-ports" in lines[0]
    assert "530 Non-anonymous sessions must use encryption." in lines[0]
    await bed.client.aclose()


# ------------------------------------------------------------------ protocol

@pytest.mark.parametrize("reply", [b"530 Non-anonymous sessions must use encryption.\r\n",
                                   b"550 SSL/TLS required on the control channel\r\n",
                                   b"534 Policy requires SSL.\r\n"])
def test_control_notes_a_reply_demanding_tls(reply: bytes) -> None:
    control = ControlChannel(client_host="127.0.0.1")
    control.receive_server(b"220 hi\r\n")
    control.receive_client(b"USER bob\r\n")
    control.receive_server(reply)
    assert control.tls_demanded == reply.rstrip(b"\r\n").decode()


@pytest.mark.parametrize("reply, policy", [(b"530 Login incorrect.\r\n", "refuse"),
                                           (b"530 Must use encryption.\r\n", "passthrough")])
def test_control_ignores_other_refusals(reply: bytes, policy: Any) -> None:
    control = ControlChannel(client_host="127.0.0.1", auth_tls=policy)
    control.receive_server(b"220 hi\r\n")
    control.receive_client(b"USER bob\r\n")
    control.receive_server(reply)
    assert control.tls_demanded is None


def test_implicit_control_channel_relays_bytes_untouched() -> None:
    control = ControlChannel(client_host="127.0.0.1", auth_tls="implicit")
    control.receive_client(b"\x16\x03\x01PORT 1,2,3,4,5,6\r\n")
    control.receive_server(b"\x16\x03\x03227 (1,2,3,4,5,6)\r\n")
    assert list(control.to_server) == [b"\x16\x03\x01PORT 1,2,3,4,5,6\r\n"]
    assert list(control.to_client) == [b"\x16\x03\x03227 (1,2,3,4,5,6)\r\n"]


# ------------------------------------------------------------------ options

def cli_config(*args: str) -> Config:
    from ftptrio._options import build_parser, config_from_args

    return config_from_args(build_parser(raise_errors=True).parse_args([*args, "gw"]))


def test_passive_ports_option() -> None:
    cfg = cli_config("-L", "2121:h:21", "--auth-tls", "passthrough",
                     "--passive-ports", "40000-40100")
    assert cfg.passive_ports == (40000, 40100)
    assert cfg.forwards[0].effective(cfg).passive_ports == (40000, 40100)
    assert cli_config("-L", "2121:h:990", "--auth-tls", "implicit",
                      "--passive-ports", "50000").passive_ports == (50000, 50000)


@pytest.mark.parametrize("args, message", [
    (("--auth-tls", "passthrough", "--passive-ports", "1000-1100"), "ports below 1024"),
    (("--auth-tls", "passthrough", "--passive-ports", "5000-4000"), "LOW <= HIGH"),
    (("--auth-tls", "passthrough", "--passive-ports", "40000-49999"), "too wide"),
    (("--auth-tls", "passthrough", "--passive-ports", "40000:40010"), "bad port range"),
    (("--passive-ports", "40000-40010"), "needs --auth-tls passthrough or implicit"),
    (("--auth-tls", "implicit"), "--auth-tls implicit needs --passive-ports"),
])
def test_bad_ftps_options_are_refused(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        cli_config("-L", "2121:h:21", *args)


def test_listen_port_inside_the_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="inside the passive port range"):
        cli_config("-L", "40005:h:21", "--auth-tls", "passthrough",
                   "--passive-ports", "40000-40010")


def test_forwards_sharing_a_listen_address_cannot_share_passive_ports() -> None:
    """Two -L tunnels with one --passive-ports on one listen address: the second's
    range could bind none of its ports, and its clients' data connections would reach
    the first's range (and FTP host)."""
    with pytest.raises(ConfigError, match="passive port ranges 40000-40010 and "
                                          "40000-40010 overlap"):
        cli_config("-L", "2121:ftp1:21", "-L", "2122:ftp2:21", "--auth-tls", "passthrough",
                   "--passive-ports", "40000-40010")
    with pytest.raises(ConfigError, match="listen port 40005 is inside"):
        cli_config("-L", "2121:ftp1:21", "-L", "40005:ftp2:21", "--auth-tls", "passthrough",
                   "--passive-ports", "40000-40010")
    with pytest.raises(ConfigError, match="overlap"):
        cli_config("-L", "0.0.0.0:2121:ftp1:21", "-L", "127.0.0.1:2122:ftp2:21",
                   "--auth-tls", "passthrough", "--passive-ports", "40000-40010")
    # different listen addresses may hold the same port numbers
    cfg = cli_config("-L", "127.0.0.1:2121:ftp1:21", "-L", "127.0.0.2:2122:ftp2:21",
                     "--auth-tls", "passthrough", "--passive-ports", "40000-40010")
    assert len(cfg.forwards) == 2


def test_remote_tunnels_take_no_passive_range() -> None:
    with pytest.raises(ConfigError, match="local .-L. tunnels only"):
        ForwardSpec(ftp_host="h", direction="remote", passive_ports=(40000, 40010))
    with pytest.raises(ConfigError, match="local .-L. tunnels only"):
        cli_config("-R", "2121:h:21", "--auth-tls", "implicit", "--passive-ports", "40000")


def test_passive_ports_in_a_toml_profile(tmp_path: Any) -> None:
    from ftptrio._configfile import load_config

    path = tmp_path / "p.toml"
    path.write_text('host = "gw"\n[[tunnel]]\nlocal = "2121:ftp1:21"\nauth_tls = "passthrough"\n'
                    'passive_ports = "40000-40049"\n[[tunnel]]\nlocal = "2122:ftp2:21"\n')
    config, _args = load_config(str(path))
    first, second = config.forwards
    assert first.passive_ports == (40000, 40049)
    assert first.effective(config).auth_tls == "passthrough"
    assert second.effective(config).passive_ports is None
    path.write_text('host = "gw"\n[[tunnel]]\nlocal = "2121:ftp1:21"\nauth_tls = "passthrough"\n'
                    'passive_ports = "80-90"\n')
    with pytest.raises(ConfigError, match="tunnel 1: passive_ports: .*below 1024"):
        load_config(str(path))
    path.write_text('host = "gw"\nauth_tls = "implicit"\npassive_ports = "40000-40010"\n'
                    '[[tunnel]]\nlocal = "2121:ftp1:990"\n')
    assert load_config(str(path))[0].passive_ports == (40000, 40010)


@pytest.mark.parametrize("reply", [b"550 tls.txt: No such file or directory.\r\n",
                                   b"550 /pub/ssl/: Permission denied.\r\n"])
def test_a_file_named_tls_is_not_a_demand_for_tls(reply: bytes) -> None:
    control = ControlChannel(client_host="127.0.0.1")
    control.receive_server(b"220 hi\r\n")
    control.receive_client(b"RETR tls.txt\r\n")
    control.receive_server(reply)
    assert control.tls_demanded is None


@pytest.mark.parametrize("close", ["idle_timeout", "server_lost"])
@pytest.mark.parametrize("policy", ["implicit", "passthrough"])
def test_a_tls_control_channel_gets_no_plaintext_421(close: str, policy: Any) -> None:
    """Idle or SSH lost: a TLS session is closed without ftptrio's plaintext 421, which
    the client would read as a broken TLS record."""
    control = ControlChannel(client_host="127.0.0.1", auth_tls=policy)
    if policy == "passthrough":
        control.receive_server(b"220 hi\r\n")
        control.receive_client(b"AUTH TLS\r\n")
        control.receive_server(b"234 go\r\n")
        control.to_client.clear()
        control.to_server.clear()
    assert control.opaque
    getattr(control, close)(*([5.0] if close == "idle_timeout" else []))
    assert not any(isinstance(item, bytes) for item in control.to_client), list(control.to_client)
    assert control.closed
