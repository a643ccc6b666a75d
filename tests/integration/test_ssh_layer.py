"""The SSH layer (ftptrio._ssh) on its own, against the in-process asyncssh server:
streams and data relays with half-close, remote listeners, reconnect, and
asyncio error handling that stays inside ftptrio's own callbacks."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import socket
import struct
from typing import Any

import pytest
import trio
import trio_asyncio

import ftptrio
from ftptrio._ssh import (RemoteListener, RemoteStreamListener, SSHDataRelay, SSHStream, Tunnel,
                          asyncio_loop)
from ftptrio._ssh._bridge import guard_callback
from ftptrio._ssh._relay import RelaySocket, _Relay, open_data_relay
from ftp_fakes import wait_until
from ftptrio.testing.servers import sha256_bytes

try:
    from .integration_helpers import download, ssh_options, write_random
except ImportError:
    from integration_helpers import download, ssh_options, write_random  # type: ignore

TIMEOUT = 10


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def start_upcase_server(nursery: trio.Nursery) -> tuple[int, list[bytes]]:
    """A TCP server that reads until EOF, then answers the upper-cased bytes
    and closes (needs both half-closes relayed in order). Returns its port and
    the list of what each connection sent."""
    received: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        data = await receive_all(stream)
        received.append(data)
        await stream.send_all(data.upper())
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], received


async def exchange(stream: trio.abc.HalfCloseableStream, payload: bytes) -> bytes:
    """Send payload, half-close, read the answer until EOF."""
    await stream.send_all(payload)
    await stream.send_eof()
    return await receive_all(stream)


@pytest.fixture
async def tunnel(ssh_server):
    tun = Tunnel(ssh_options(ssh_server))
    try:
        yield tun
    finally:
        await tun.aclose()


PAYLOAD = b"ftptrio ssh layer " * 50000  # ~900 KB: several windows of back-pressure


async def test_stream_both_ways_with_half_close(tunnel, nursery):
    port, received = await start_upcase_server(nursery)
    stream = await tunnel.open_stream("127.0.0.1", port)
    assert isinstance(stream, SSHStream)
    with trio.fail_after(TIMEOUT):
        assert await exchange(stream, PAYLOAD) == PAYLOAD.upper()
    await stream.aclose()
    assert received == [PAYLOAD]
    assert tunnel.connects == 1


async def test_data_relay_both_ways_with_half_close(tunnel, nursery):
    port, received = await start_upcase_server(nursery)
    relay = await tunnel.open_data_relay("127.0.0.1", port)
    assert isinstance(relay, SSHDataRelay)
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = await trio.open_tcp_stream(*listener.getsockname())
    accepted, _ = await listener.accept()
    listener.close()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as inner:
            inner.start_soon(relay.relay_socket, accepted)
            assert await exchange(client, PAYLOAD) == PAYLOAD.upper()
        result = await relay.wait()
    await client.aclose()
    assert received == [PAYLOAD]
    assert (result.to_ssh, result.from_ssh, result.error) == (len(PAYLOAD), len(PAYLOAD), None)


async def test_remote_listener_relays_its_one_connection(tunnel, ssh_server, nursery):
    port, received = await start_upcase_server(nursery)
    remote = await tunnel.listen_remote("127.0.0.1", 0)
    assert isinstance(remote, RemoteListener) and remote.port > 0
    assert ssh_server.forward_requests == [("127.0.0.1", 0)]
    with trio.fail_after(TIMEOUT):
        # the in-process SSH server listens on its own loopback port for the forward
        client = await trio.open_tcp_stream("127.0.0.1", remote.port)
        relay, orig_host, _orig_port = await remote.accept()
        await remote.aclose()
        assert orig_host == "127.0.0.1"
        await relay.connect_socket("127.0.0.1", port)
        assert await exchange(client, PAYLOAD) == PAYLOAD.upper()
        result = await relay.wait()
    await client.aclose()
    assert received == [PAYLOAD]
    assert (result.to_ssh, result.from_ssh) == (len(PAYLOAD), len(PAYLOAD))


async def test_remote_listener_refuses_what_its_filter_refuses(tunnel):
    remote = await tunnel.listen_remote("127.0.0.1", 0, accept_filter=lambda host, port: False)
    try:
        with trio.fail_after(TIMEOUT):
            client = await trio.open_tcp_stream("127.0.0.1", remote.port)
            assert await receive_all(client) == b""  # refused: closed at once
        await client.aclose()
    finally:
        await remote.aclose()


async def test_remote_stream_listener_yields_streams(tunnel):
    remote = await tunnel.listen_remote_streams("127.0.0.1", 0)
    assert isinstance(remote, RemoteStreamListener) and remote.port > 0
    try:
        with trio.fail_after(TIMEOUT):
            client = await trio.open_tcp_stream("127.0.0.1", remote.port)
            async for stream, orig_host, _orig_port in remote:
                break
            assert orig_host == "127.0.0.1"
            await client.send_all(b"hello")
            await client.send_eof()
            assert await receive_all(stream) == b"hello"
            await stream.send_all(b"HELLO")
            await stream.send_eof()
            assert await receive_all(client) == b"HELLO"
        await stream.aclose()
        await client.aclose()
    finally:
        await remote.aclose()


async def test_reconnects_after_the_server_drops(tunnel, ssh_server, nursery):
    port, _received = await start_upcase_server(nursery)
    first = await tunnel.connect()
    with trio.fail_after(TIMEOUT):
        for conn in ssh_server.connections:
            conn.close()  # the SSH server drops every connection
        await trio_asyncio.aio_as_trio(first.wait_closed)()
        second = await tunnel.connect()
        assert second is not first and not second.is_closed()
        assert tunnel.connects == 2
        stream = await tunnel.open_stream("127.0.0.1", port)
        assert await exchange(stream, b"again") == b"AGAIN"
    await stream.aclose()


async def test_given_connection_is_not_closed_or_replaced(ssh_server, aio_loop):
    import asyncssh

    conn = await trio_asyncio.aio_as_trio(asyncssh.connect)(
        ssh_server.host, port=ssh_server.port, username=ssh_server.username,
        client_keys=[ssh_server.client_key], known_hosts=ssh_server.known_hosts)
    tun = Tunnel(ssh_options(ssh_server), conn)
    assert await tun.connect() is conn
    await tun.aclose()
    assert not conn.is_closed()
    conn.close()
    await trio_asyncio.aio_as_trio(conn.wait_closed)()
    with pytest.raises(ftptrio.TunnelError, match="given to ftptrio is closed"):
        await tun.connect()
    with pytest.raises(TypeError):
        Tunnel(ssh_options(ssh_server), object())


# ------------------------------------------------------------ refusals, by class
async def test_a_channel_the_ssh_server_forbids_is_channel_refused_with_code_1(
        tunnel, ssh_server):
    ssh_server.allow_direct = False
    for open_channel in (tunnel.open_stream, tunnel.open_data_relay):
        with pytest.raises(ftptrio.ChannelRefused) as info:
            await open_channel("127.0.0.1", 9)
        refused = info.value
        assert refused.code == ftptrio.ChannelRefused.ADMINISTRATIVELY_PROHIBITED, refused
        assert refused.reason and refused.reason in str(refused), refused
        assert "PermitOpen" in str(refused), refused  # the hint for code 1


async def test_a_destination_the_ssh_server_cannot_reach_is_channel_refused_with_code_2(
        tunnel):
    with socket.socket() as closed:  # bound, not listening: the SSH server's connect fails
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        for open_channel in (tunnel.open_stream, tunnel.open_data_relay):
            with pytest.raises(ftptrio.ChannelRefused) as info:
                await open_channel("127.0.0.1", port)
            assert info.value.code == ftptrio.ChannelRefused.CONNECT_FAILED, info.value
            assert "PermitOpen" not in str(info.value), info.value


async def test_a_refused_tcpip_forward_is_remote_forward_refused(tunnel, ssh_server):
    ssh_server.allow_remote_forward = False
    with pytest.raises(ftptrio.RemoteForwardRefused) as data_forward:
        await tunnel.listen_remote("127.0.0.1", 0)
    with pytest.raises(ftptrio.RemoteForwardRefused) as control_forward:
        await tunnel.listen_remote_streams("127.0.0.1", 0)
    for info in (data_forward, control_forward):
        assert not isinstance(info.value, ftptrio.ChannelRefused)
        assert "AllowTcpForwarding" in str(info.value), info.value


async def test_the_reconnect_back_off_error_has_the_failed_attempt_as_cause(aio_loop):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        tun = Tunnel(ftptrio.SSHOptions(host="127.0.0.1", port=closed.getsockname()[1],
                                        known_hosts=os.devnull))
        with pytest.raises(ftptrio.TunnelError) as first:
            await tun.connect()
        with pytest.raises(ftptrio.TunnelError) as backing_off:
            await tun.connect()
    assert type(first.value) is ftptrio.TunnelError  # refused: no more specific kind
    assert type(backing_off.value) is ftptrio.TunnelError
    assert backing_off.value.__cause__ is first.value
    assert "next attempt in" in str(backing_off.value), backing_off.value


# ------------------------------------------------------------ error handling
def recording_handler(seen: list[dict[str, Any]]):
    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context)

    return handler


async def test_embedding_apps_exception_handler_is_left_alone(aio_loop, forwarder_config,
                                                              inprocess_ftp):
    """ftptrio running in an application's loop never replaces its handler."""
    seen: list[dict[str, Any]] = []
    app_handler = recording_handler(seen)
    aio_loop.set_exception_handler(app_handler)
    payload = write_random(os.path.join(inprocess_ftp.root, "f.bin"), 300000)
    async with asyncio_loop():  # an existing loop: used as it is
        assert trio_asyncio.current_loop.get() is aio_loop
    async with ftptrio.open_forwarder(forwarder_config) as fwd:
        for passive in (True, False):
            data = await trio.to_thread.run_sync(
                lambda: download(fwd.addresses[0], inprocess_ftp, "f.bin", passive=passive))
            assert sha256_bytes(data) == sha256_bytes(payload)
        assert aio_loop.get_exception_handler() is app_handler
    assert aio_loop.get_exception_handler() is app_handler
    assert seen == []


async def test_a_loop_ftptrio_opens_itself_logs_errors_instead_of_crashing(caplog):
    """Only on its own loop does ftptrio set a handler: it logs, as stock asyncio does."""
    async with asyncio_loop():
        loop = asyncio.get_event_loop()
        assert loop.get_exception_handler() is not None
        with caplog.at_level(logging.WARNING, logger="ftptrio._ssh._bridge"):
            loop.call_soon(lambda: 1 / 0)
            await wait_until(lambda: any("ZeroDivisionError" in (r.exc_text or "") or r.exc_info
                                         for r in caplog.records),
                             5, "the callback's error to be logged")
    assert any("ZeroDivisionError" in (r.exc_text or "") or r.exc_info
               for r in caplog.records), caplog.records


class _BrokenTransport:
    """A socket transport whose peer reset the connection: write_eof fails."""

    def __init__(self) -> None:
        self.aborted = False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: bytes) -> None:
        pass

    def write_eof(self) -> None:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    close = abort


async def test_teardown_error_in_a_relay_callback_stays_in_the_relay(aio_loop, caplog):
    """docs/performance.md, trap 3: ENOTCONN while passing on a half-close, inside an
    asyncio callback, reaches no exception handler (under trio-asyncio's default
    one it would end the process); the relay end is aborted instead."""
    seen: list[dict[str, Any]] = []
    aio_loop.set_exception_handler(recording_handler(seen))
    relay = _Relay()
    relay.channel_end.transport = _BrokenTransport()  # type: ignore[assignment]
    relay.channel_end.eof = True  # the SSH side half-closed before the socket was attached
    broken = _BrokenTransport()
    done = trio.Event()
    with caplog.at_level(logging.DEBUG, logger="ftptrio._ssh._bridge"):
        aio_loop.call_soon(relay.socket_end.connection_made, broken)
        aio_loop.call_soon(done.set)
        await done.wait()
    assert seen == []
    assert broken.aborted and isinstance(relay.error, OSError)
    assert any("peer already gone" in r.getMessage() for r in caplog.records)


class _CorkRecorder:
    """A channel stand-in that records whether ``sock`` is corked at each write."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.corked: list[tuple[int, int]] = []

    def write(self, data: bytes) -> None:
        try:
            corked = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)
        except OSError:  # closed
            corked = -1
        self.corked.append((len(data), corked))

    def is_closing(self) -> bool:
        return False


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="Linux TCP_CORK")
async def test_socket_reads_larger_than_a_packet_go_into_ssh_with_the_socket_corked(aio_loop):
    """A socket read of several SSH packets is written into the channel with the
    SSH connection's socket corked (the packets leave as few segments), and
    uncorked right after; a read of one packet at most is written as it is."""
    lst = socket.create_server(("127.0.0.1", 0))
    ssh_sock = socket.create_connection(lst.getsockname())
    far, _ = lst.accept()
    lst.close()
    try:
        relay = _Relay()
        channel = _CorkRecorder(ssh_sock)
        relay.channel_end.transport = channel  # type: ignore[assignment]
        relay.socket_end.transport = _BrokenTransport()  # type: ignore[assignment]
        relay.socket_end.cork = ssh_sock
        relay.socket_end.data_received(b"x" * 256 * 1024)
        relay.socket_end.data_received(b"y" * 1000)
        assert channel.corked == [(256 * 1024, 1), (1000, 0)]
        assert ssh_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        ssh_sock.close()  # a gone SSH socket: the data still goes to the channel
        relay.socket_end.data_received(b"z" * 100_000)
        assert channel.corked[-1] == (100_000, -1) and relay.socket_end.cork is None
    finally:
        ssh_sock.close()
        far.close()


async def test_unexpected_callback_error_is_logged_as_warning(caplog):
    class Owner:
        cleaned: list[Exception] = []

        @guard_callback
        def data_received(self, data: bytes) -> None:
            raise ValueError("bug")

        def on_error(self, exc: Exception) -> None:
            self.cleaned.append(exc)

    owner = Owner()
    with caplog.at_level(logging.WARNING, logger="ftptrio._ssh._bridge"):
        assert owner.data_received(b"x") is None
    assert [type(e) for e in owner.cleaned] == [ValueError]
    assert any(r.levelno == logging.WARNING and "Owner.data_received" in r.getMessage()
               for r in caplog.records)


def test_relay_socket_tolerates_shutdown_of_a_gone_peer():
    sock = RelaySocket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.shutdown(socket.SHUT_WR)  # never connected: ENOTCONN, ignored
    finally:
        sock.close()
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(OSError) as info:
            plain.shutdown(socket.SHUT_WR)
        assert info.value.errno == errno.ENOTCONN
    finally:
        plain.close()


async def test_teardown_under_load_reaches_no_exception_handler(tunnel, aio_loop, nursery):
    """Many data relays whose local peer resets the connection right after
    writing, while the other side half-closes: nothing escapes to the loop."""
    seen: list[dict[str, Any]] = []
    handler = recording_handler(seen)
    aio_loop.set_exception_handler(handler)

    async def reset_after_writing(stream: trio.SocketStream) -> None:
        await stream.send_all(b"x" * 100000)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()  # RST

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, reset_after_writing, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]

    async def one() -> None:
        relay = await tunnel.open_data_relay("127.0.0.1", port)
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = await trio.open_tcp_stream(*listener.getsockname())
        accepted, _ = await listener.accept()
        listener.close()
        await client.send_eof()
        async with trio.open_nursery() as inner:
            inner.start_soon(relay.relay_socket, accepted)
            await receive_all(client)
        await client.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as load:
            for _ in range(40):
                load.start_soon(one)
    assert seen == []
    assert aio_loop.get_exception_handler() is handler  # never swapped out


async def test_data_relay_open_cancelled_midway_leaves_no_channel(tunnel, ssh_server, nursery):
    """A session can end while its data channel opens (the 227 went out first):
    asyncssh would keep a channel whose open was cancelled once the server confirms
    it; ftptrio closes it."""
    port, _received = await start_upcase_server(nursery)
    conn = await tunnel.connect()
    token = trio.lowlevel.current_trio_token()
    for _ in range(5):
        with trio.CancelScope() as scope:
            token.run_sync_soon(scope.cancel)  # once the open is under way
            await open_data_relay(conn, "127.0.0.1", port)
        assert scope.cancelled_caught
    await wait_until(lambda: not conn._channels, 5, "the cancelled data channels to close")
    # and a relay opened after that still works
    relay = await open_data_relay(conn, "127.0.0.1", port)
    assert len(conn._channels) == 1
    relay.close()
