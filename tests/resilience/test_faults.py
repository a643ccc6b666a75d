"""Faults: SSH drops, refused forwards, peers that vanish mid-transfer, half-close.

Every test ends with the shared leak check (``make_setup``): no session task,
SSH channel or remote forward may remain.
"""

from __future__ import annotations

import functools
import os
import re

import pytest
import trio

from ftp_fakes import wait_until
from ftptrio.testing.servers import sha256_bytes

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


def pasv_reply(port: int) -> bytes:
    return f"227 Entering Passive Mode (127,0,0,1,{port >> 8},{port & 255}).\r\n".encode()


def port_of(reply: bytes) -> int:
    nums = [int(n) for n in re.search(rb"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", reply).groups()]
    return nums[4] * 256 + nums[5]


async def start_server(nursery: trio.Nursery, handler) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0,
                                                      host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    chunks = []
    while data := await stream.receive_some(65536):
        chunks.append(data)
    return b"".join(chunks)


async def endless(stream: trio.SocketStream) -> None:
    try:
        while True:
            await stream.send_all(b"z" * 65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


# ------------------------------------------------------------------ SSH faults
async def test_ssh_connection_lost_gives_421_and_next_client_reconnects(make_setup):
    setup = await make_setup()
    async with setup.client() as client:
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
        for conn in list(setup.ssh.connections):
            conn.abort()
        reply = await client.reply()
        assert reply[0].startswith(b"421 ") and b"SSH" in reply[0]
        with pytest.raises(EOFError):
            await client.line()
    async with setup.client() as client:  # the listener stayed up; ftptrio reconnects
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
    assert setup.forwarder._tunnel.connects == 2


async def test_ssh_drop_mid_transfer(make_setup, nursery):
    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = pasv_reply(await start_server(nursery, endless))
    async with setup.client() as client:
        data = await connect(port_of((await client.command(b"PASV"))[0]))
        assert await data.receive_some(65536)
        for conn in list(setup.ssh.connections):
            conn.abort()
        with trio.fail_after(10):  # the data connection ends: the client sees the error
            try:
                while await data.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
        assert (await client.reply())[0].startswith(b"421 ")
        await data.aclose()


async def test_ftp_server_unreachable_gives_421(make_setup):
    setup = await make_setup()
    setup.ssh.allow_direct = False
    host, port = setup.address
    stream = await trio.open_tcp_stream(host, port)
    with trio.fail_after(10):
        reply = await receive_all(stream)
    assert reply.startswith(b"421 ") and b"cannot reach the FTP server" in reply
    await stream.aclose()
    setup.ssh.allow_direct = True
    async with setup.client() as client:
        assert (await client.command(b"NOOP"))[0].startswith(b"200")


async def test_refused_data_channel_gives_425_and_session_continues(make_setup, nursery):
    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = pasv_reply(await start_server(nursery, endless))
    async with setup.client() as client:
        setup.ssh.allow_direct = False
        # the 227 goes out as soon as the listener is bound, before the SSH channel
        # opens; once an open was refused on the SSH connection, a transfer command
        # waits for the answer: the failure reaches the client as ftptrio's 425
        assert (await client.command(b"PASV"))[0].startswith(b"227 ")
        await wait_until(lambda: setup.forwarder._tunnel.data_opens_refused)
        assert (await client.command(b"PASV"))[0].startswith(b"227 ")
        reply = (await client.command(b"RETR f"))[0]
        assert reply.startswith(b"425 ftptrio: cannot open data connection: "), reply
        setup.ssh.allow_direct = True
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
    assert b"RETR f" not in b" ".join(setup.ftp.commands)  # never sent to the server


async def test_refused_remote_forward_gives_425_and_session_continues(make_setup):
    setup = await make_setup()
    setup.ssh.allow_remote_forward = False
    async with setup.client() as client:
        assert (await client.command(b"PORT 127,0,0,1,200,1"))[0].startswith(b"425 ")
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
    assert b"PORT" not in b" ".join(setup.ftp.commands)


async def test_active_converted_to_passive_needs_no_remote_forward(make_setup, nursery):
    setup = await make_setup(active_mode="passive")
    setup.ssh.allow_remote_forward = False
    setup.ftp.replies[b"PASV"] = pasv_reply(await start_server(nursery, endless))
    received = trio.Event()

    async def client_data(stream: trio.SocketStream) -> None:
        assert await stream.receive_some(65536)
        received.set()

    listen_port = await start_server(nursery, client_data)
    async with setup.client() as client:
        port_cmd = f"PORT 127,0,0,1,{listen_port >> 8},{listen_port & 255}".encode()
        reply = await client.command(port_cmd)
        assert reply[0].startswith(b"200 ") and b"converted" in reply[0]
        with trio.fail_after(10):
            await received.wait()
    assert setup.ssh.forward_requests == []
    assert b"PASV" in setup.ftp.commands and not any(c.startswith(b"PORT")
                                                     for c in setup.ftp.commands)


# --------------------------------------------------------- peers that vanish
async def test_ftp_server_closes_control_while_data_open(make_setup, nursery):
    # once the control connection ends, a running transfer gets data_drain_timeout
    # (5 s by default) before it is cut: a short one, not a 5 s wait
    setup = await make_setup(data_drain_timeout=0.3)
    setup.ftp.replies[b"PASV"] = pasv_reply(await start_server(nursery, endless))

    async def retr_then_vanish(line: bytes, stream: trio.SocketStream) -> None:
        await stream.send_all(b"150 here it comes\r\n")
        await stream.aclose()

    setup.ftp.handlers[b"RETR"] = retr_then_vanish
    async with setup.client() as client:
        data = await connect(port_of((await client.command(b"PASV"))[0]))
        assert (await client.command(b"RETR x"))[0].startswith(b"150")
        with pytest.raises(EOFError):
            await client.line()
        with trio.fail_after(10):  # the session's data forward is torn down with it
            try:
                while await data.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
        await data.aclose()


async def test_client_disconnects_during_transfer(make_setup, nursery):
    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = pasv_reply(await start_server(nursery, endless))
    async with setup.client() as client:
        data = await connect(port_of((await client.command(b"PASV"))[0]))
        assert await data.receive_some(65536)
        await data.aclose()
    async with setup.client() as client:
        assert (await client.command(b"NOOP"))[0].startswith(b"200")


# ----------------------------------------------------------------- half-close
async def test_half_close_passive_upload_then_reply(make_setup, nursery):
    """Client sends, shuts down writing, then still reads the server's answer."""
    async def digest_after_eof(stream: trio.SocketStream) -> None:
        received = await receive_all(stream)
        await stream.send_all(sha256_bytes(received).encode())
        await stream.aclose()

    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = pasv_reply(await start_server(nursery, digest_after_eof))
    async with setup.client() as client:
        data = await connect(port_of((await client.command(b"PASV"))[0]))
        await data.send_all(PAYLOAD)
        await data.send_eof()
        with trio.fail_after(20):
            assert await receive_all(data) == sha256_bytes(PAYLOAD).encode()
        await data.aclose()


async def test_half_close_passive_download_then_ack(make_setup, nursery):
    """Server sends, shuts down writing, then still reads the client's answer."""
    acks: list[bytes] = []
    acked = trio.Event()

    async def send_then_read(stream: trio.SocketStream) -> None:
        await stream.send_all(PAYLOAD)
        await stream.send_eof()
        acks.append(await receive_all(stream))
        acked.set()
        await stream.aclose()

    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = pasv_reply(await start_server(nursery, send_then_read))
    async with setup.client() as client:
        data = await connect(port_of((await client.command(b"PASV"))[0]))
        with trio.fail_after(20):
            assert await receive_all(data) == PAYLOAD
        await data.send_all(b"ack")
        await data.aclose()
        with trio.fail_after(10):
            await acked.wait()
    assert acks == [b"ack"]


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_half_close_active(make_setup, nursery, direction):
    """Active mode through the remote forward, half-closing in each direction."""
    setup = await make_setup()
    server_got: list[bytes] = []
    target: list[tuple[str, int]] = []

    async def port(line: bytes, stream: trio.SocketStream) -> None:
        nums = [int(n) for n in line.split(b" ", 1)[1].split(b",")]
        target.append((".".join(map(str, nums[:4])), nums[4] * 256 + nums[5]))
        await stream.send_all(b"200 PORT ok\r\n")

    async def transfer(line: bytes, stream: trio.SocketStream) -> None:
        await stream.send_all(b"150 connecting\r\n")
        data = await trio.open_tcp_stream(*target[-1])
        if direction == "download":
            await data.send_all(PAYLOAD)
            await data.send_eof()
            server_got.append(await receive_all(data))
        else:
            server_got.append(await receive_all(data))
            await data.send_all(b"stored")
        await data.aclose()
        await stream.send_all(b"226 done\r\n")

    setup.ftp.handlers[b"PORT"] = port
    setup.ftp.handlers[b"RETR"] = transfer
    client_got: list[bytes] = []

    async def client_data(stream: trio.SocketStream) -> None:
        if direction == "download":
            client_got.append(await receive_all(stream))
            await stream.send_all(b"ack")
        else:
            await stream.send_all(PAYLOAD)
            await stream.send_eof()
            client_got.append(await receive_all(stream))
        await stream.aclose()

    listen_port = await start_server(nursery, client_data)
    async with setup.client() as client:
        reply = await client.command(
            f"PORT 127,0,0,1,{listen_port >> 8},{listen_port & 255}".encode())
        assert reply[0].startswith(b"200")
        assert target[-1] != ("127.0.0.1", listen_port)  # rewritten to the remote forward
        assert (await client.command(b"RETR x"))[0].startswith(b"150")
        with trio.fail_after(20):
            assert (await client.reply())[0].startswith(b"226")
    if direction == "download":
        assert client_got == [PAYLOAD] and server_got == [b"ack"]
    else:
        assert server_got == [PAYLOAD] and client_got == [b"stored"]
