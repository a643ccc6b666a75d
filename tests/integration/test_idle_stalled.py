"""--idle-timeout (Config.idle_session_timeout) with transfers running (security round
3, lows): a data connection on which no byte moves, either way, for the idle time is
idle, so its session gets the 421 and everything is torn down; a transfer that keeps
moving bytes, however slowly (a slow sender, a slow reader), is never closed.

ftptrio runs between the in-process SSH server and the scriptable HostileFTP, whose
passive data port is a trio server run by each test."""

from __future__ import annotations

import functools
import logging
import re
import socket
from typing import Awaitable, Callable

import pytest
import trio

from ftp_fakes import wait_for_log, wait_until

#: the idle timeout of the stalled tests
IDLE = 1.0
#: the idle timeout of the slow-transfer tests, and how often their sender moves bytes
SLOW_IDLE = 2.0
TRICKLE_EVERY = SLOW_IDLE / 8
#: generous bound for everything that should happen "soon"
SOON = 20


def pasv_reply(port: int) -> bytes:
    return f"227 Entering Passive Mode (127,0,0,1,{port >> 8},{port & 255}).\r\n".encode()


def data_port(reply_line: bytes) -> int:
    numbers = re.search(rb"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", reply_line)
    assert numbers is not None, reply_line
    return int(numbers.group(5)) * 256 + int(numbers.group(6))


async def serve_data(nursery: trio.Nursery,
                     script: Callable[[trio.SocketStream], Awaitable[None]]) -> int:
    """The FTP server's passive data port: runs ``script`` on each connection."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, script, 0,
                                                      host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def connect(port: int, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket()
    if rcvbuf is not None:  # before connecting: the window is agreed on the handshake
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def until_closed(stream: trio.SocketStream) -> int:
    """Read until the peer closes (EOF or reset); the bytes read."""
    total = 0
    try:
        while data := await stream.receive_some(65536):
            total += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return total


async def receive_exactly(stream: trio.SocketStream, size: int) -> None:
    got = 0
    while got < size:
        data = await stream.receive_some(size - got)
        assert data, f"data connection closed after {got} of {size} bytes"
        got += len(data)


async def reply_to_transfer(done: trio.Event, line: bytes, stream: trio.SocketStream) -> None:
    """The FTP server's answer to RETR/STOR: 150, and 226 once its data side is done."""
    await stream.send_all(b"150 opening data connection\r\n")
    await done.wait()
    await stream.send_all(b"226 transfer complete\r\n")


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_stalled_transfer_is_closed_with_421_after_the_idle_timeout(
        make_setup, nursery, caplog, direction):
    """The server sends the 150 and a little data (or the client a little), then
    nothing moves, while both keep their connections open: 421 idle, and the data
    connection is torn down at both ends (no drain for a stalled transfer)."""
    caplog.set_level(logging.INFO, logger="ftptrio")
    # a drain longer than every bound below: the teardown must not wait for it
    setup = await make_setup(idle_session_timeout=IDLE, data_drain_timeout=600.0)
    server_data_closed = trio.Event()

    async def data_side(stream: trio.SocketStream) -> None:
        if direction == "download":
            await stream.send_all(b"x" * 1000)  # then nothing more
        else:
            await receive_exactly(stream, 1000)
        await until_closed(stream)  # (the upload sends nothing more either)
        server_data_closed.set()

    port = await serve_data(nursery, data_side)
    setup.ftp.replies[b"PASV"] = pasv_reply(port)
    setup.ftp.replies[b"RETR" if direction == "download" else b"STOR"] = (
        b"150 opening data connection\r\n")  # and never a 226
    async with setup.client() as client:
        data = await connect(data_port((await client.command(b"PASV"))[0]))
        verb = b"RETR" if direction == "download" else b"STOR"
        assert (await client.command(verb + b" stalled.bin"))[0].startswith(b"150")
        if direction == "download":
            await receive_exactly(data, 1000)
        else:
            await data.send_all(b"y" * 1000)
        line = await client.line(timeout=SOON)
        assert line.startswith(b"421 ") and b"idle for 1 seconds" in line, \
            client.transcript_text()
        with pytest.raises(EOFError):
            await client.line(timeout=SOON)
        with trio.fail_after(SOON):
            await until_closed(data)
            await server_data_closed.wait()
        await data.aclose()
    await wait_until(lambda: setup.forwarder.stats.sessions_active == 0, SOON)
    await wait_for_log(caplog, "idle for 1 s (1 transfer stalled); closing")
    record = await wait_for_log(caplog, "transfer client=")
    assert "result=error (aborted)" in record.getMessage(), record.getMessage()


async def test_slowly_moving_download_is_not_closed(make_setup, nursery):
    """One small chunk every SLOW_IDLE/8 seconds, for longer than the idle timeout:
    the transfer completes and the session goes on."""
    setup = await make_setup(idle_session_timeout=SLOW_IDLE)
    chunks = 12  # 1.5 idle timeouts
    done = trio.Event()

    async def trickle(stream: trio.SocketStream) -> None:
        for _ in range(chunks):
            await stream.send_all(b"z" * 100)
            await trio.sleep(TRICKLE_EVERY)
        await stream.aclose()
        done.set()

    setup.ftp.replies[b"PASV"] = pasv_reply(await serve_data(nursery, trickle))
    setup.ftp.handlers[b"RETR"] = functools.partial(reply_to_transfer, done)
    async with setup.client() as client:
        data = await connect(data_port((await client.command(b"PASV"))[0]))
        await client.send(b"RETR slow.bin\r\n")
        with trio.fail_after(SOON + chunks * TRICKLE_EVERY):
            assert await until_closed(data) == chunks * 100
        await data.aclose()
        assert (await client.reply())[0].startswith(b"150"), client.transcript_text()
        assert (await client.reply())[0].startswith(b"226"), client.transcript_text()
        assert (await client.command(b"NOOP"))[0].startswith(b"200")


async def test_slow_reader_is_not_closed(make_setup, nursery):
    """The server sends as fast as it can, the client reads a little at a time: the
    bytes pile up in the relay's buffers and the kernel's, and leave them slowly,
    with no read by the relay for long stretches. That is movement too."""
    setup = await make_setup(idle_session_timeout=SLOW_IDLE)
    payload = 16 * 1024 * 1024  # far more than the kernel, relay and SSH window hold
    slow_phase = 2.5 * SLOW_IDLE
    done = trio.Event()

    async def flood(stream: trio.SocketStream) -> None:
        await stream.send_all(b"f" * payload)
        await stream.aclose()
        done.set()

    setup.ftp.replies[b"PASV"] = pasv_reply(await serve_data(nursery, flood))
    setup.ftp.handlers[b"RETR"] = functools.partial(reply_to_transfer, done)
    async with setup.client() as client:
        data = await connect(data_port((await client.command(b"PASV"))[0]), rcvbuf=16384)
        await client.send(b"RETR big.bin\r\n")
        received = 0
        with trio.move_on_after(slow_phase):  # ~200 KB/s
            while True:
                received += len(await data.receive_some(8192))
                await trio.sleep(0.04)
        assert 0 < received < payload
        with trio.fail_after(SOON * 3):
            received += await until_closed(data)
        assert received == payload
        await data.aclose()
        assert (await client.reply())[0].startswith(b"150"), client.transcript_text()
        assert (await client.reply())[0].startswith(b"226"), client.transcript_text()
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
