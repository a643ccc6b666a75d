"""Unit tests of the session pump (``ftptrio._session``) with in-memory streams and a
fake tunnel: bytes and events move in order, and output cannot pile up without bound."""

from __future__ import annotations

from typing import Callable

import trio
import trio.testing

from ftptrio._config import Config, ForwardSpec, SSHOptions
from ftptrio._session import MAX_OUTBOX_BYTES, Session
from ftptrio._stats import TransferStats
from ftptrio.testing.fake_tunnel import FakeRelay, FakeTunnel
from session_streams import loopback_pair, receive_until  # type: ignore[import-not-found]


def make_session(client_end, server_end) -> Session:
    spec = ForwardSpec(ftp_host="127.0.0.1", ftp_port=21)
    config = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,))
    return Session(client_end, spec, config, FakeTunnel(server_end),
                   TransferStats(), peer=("127.0.0.1", 40000))




async def test_pump_relays_commands_and_replies_and_ends_on_quit():
    client, session_client = trio.testing.memory_stream_pair()
    session_server, server = trio.testing.memory_stream_pair()
    session = make_session(session_client, session_server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await server.send_all(b"220 hello\r\n")
        assert await receive_until(client, b"\r\n") == b"220 hello\r\n"
        await client.send_all(b"USER a\r\nLPRT 1\r\nNOOP\r\n")
        assert await receive_until(server, b"NOOP\r\n") == b"USER a\r\nNOOP\r\n"
        await server.send_all(b"331 pw\r\n200 ok\r\n")
        got = await receive_until(client, b"200 ok\r\n")
        assert got.startswith(b"331 pw\r\n502 ") and got.endswith(b"\r\n200 ok\r\n")
        await client.send_all(b"QUIT\r\n")
        assert await receive_until(server, b"QUIT\r\n") == b"QUIT\r\n"
        await server.send_all(b"221 bye\r\n")
        await server.send_eof()
        assert await receive_until(client, b"221 bye\r\n") == b"221 bye\r\n"
        with trio.fail_after(5):
            assert await client.receive_some(10) == b""  # session closed the client


async def test_client_that_never_reads_cannot_grow_local_replies():
    """12 MB of commands ftptrio answers itself (LPRT: 502): once the to-client outbox
    is full the session stops reading, so the client's writes stall (issue 18.2)."""
    client, session_client = trio.testing.lockstep_stream_pair()
    session_server, server = trio.testing.memory_stream_pair()
    session = make_session(session_client, session_server)
    sent = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await server.send_all(b"220 hello\r\n")
        line = b"LPRT 1,4,127,0,0,1,2,4,1\r\n"
        block = line * 2048
        with trio.move_on_after(2):
            while sent < 12_000_000:
                await client.send_all(block)
                sent += len(block)
        assert sent < 12_000_000, "the session kept reading from a client that never reads"
        # bounded by the outbox limit plus what one read's replies add
        assert session.control.to_client.size <= MAX_OUTBOX_BYTES + 65536 * 10
        assert len(session.control.to_client) < 20_000
        nursery.cancel_scope.cancel()


class DataTunnel(FakeTunnel):
    """A FakeTunnel whose data channel opens fail while ``fail`` is set, and once they
    succeed never finish (not needed here)."""

    async def open_data_relay(self, host: str, port: int,
                              originator: tuple[str, int] = ("", 0),
                              requested: Callable[[], None] | None = None) -> FakeRelay:
        await super().open_data_relay(host, port, originator, requested)  # refused while fail
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # (older trio stubs: sleep_forever returns)


async def test_transfer_is_not_refused_by_an_older_offers_failure_before_its_own_is_set_up():
    """PASV 1 answered, its channel failed, unused. PASV 2: the server's 227 is read,
    and the client's RETR right behind it, before the session has set the new offer
    up: the RETR must not get PASV 1's 425 (it belongs to PASV 2)."""
    # the client over loopback TCP: the data plane binds where the client connected
    client, session_client = await loopback_pair()
    session_server, server = trio.testing.memory_stream_pair()
    spec = ForwardSpec(ftp_host="127.0.0.1", ftp_port=21)
    config = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,))
    tunnel = DataTunnel(session_server)
    tunnel.fail = True
    session = Session(session_client, spec, config, tunnel,
                      TransferStats(), peer=("127.0.0.1", 40000))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await server.send_all(b"220 hello\r\n")
        await receive_until(client, b"220 hello\r\n")
        await client.send_all(b"PASV\r\n")
        await receive_until(server, b"PASV\r\n")
        await server.send_all(b"227 Entering Passive Mode (127,0,0,1,200,1).\r\n")
        assert (await receive_until(client, b"\r\n")).startswith(b"227 ")
        await trio.testing.wait_all_tasks_blocked()  # PASV 1's channel failed
        tunnel.fail = False
        await client.send_all(b"PASV\r\n")
        await receive_until(server, b"PASV\r\n")
        # the 227 and the RETR arrive together
        await server.send_all(b"227 Entering Passive Mode (127,0,0,1,200,2).\r\n")
        await client.send_all(b"RETR f\r\n")
        got = await receive_until(client, b"227 ")
        with trio.move_on_after(1):
            got += await receive_until(client, b"425 ")
        assert b"425 " not in got, got
        assert await receive_until(server, b"RETR f\r\n") == b"RETR f\r\n"
        nursery.cancel_scope.cancel()
