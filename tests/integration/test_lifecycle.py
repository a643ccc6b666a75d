"""Leak and teardown checks: sessions, data listeners, SSH channels, remote forwards."""

from __future__ import annotations

import ftplib
import io
import logging
import os
import socket
from dataclasses import replace

import pytest
import trio

import ftptrio
from ftp_fakes import FTPClient, asyncssh_table, wait_for_log
from ftptrio._demo import run_demo
from ftptrio.testing.servers import sha256_bytes

try:
    from .integration_helpers import (CLIENT_TIMEOUT, connect_refused,
                                      open_channels, remote_listeners, server_channels,
                                      server_listeners, wait_closed, wait_until,
                                      write_random)
except ImportError:
    from integration_helpers import (CLIENT_TIMEOUT,  # type: ignore
                                     connect_refused, open_channels, remote_listeners,
                                     server_channels, server_listeners, wait_closed,
                                     wait_until, write_random)

BIG = 32 * 1024 * 1024


async def assert_no_leaks(fwd: ftptrio.Forwarder, ssh_server, timeout: float = 3.0) -> None:
    """Nothing of any session is left: counters, channels and remote forwards."""
    conn = fwd._tunnel.connection
    assert conn is not None, "the forwarder lost its SSH connection"
    await wait_until(lambda: fwd.stats.sessions_active == 0, timeout, "sessions_active == 0")
    await wait_until(lambda: not open_channels(conn), timeout,
                     "the client connection's channels to close")
    await wait_until(lambda: not remote_listeners(conn), timeout,
                     "the client connection's remote listeners to close")
    await wait_until(lambda: not server_channels(ssh_server), timeout,
                     "the SSH server's channels to close")
    await wait_until(lambda: not any(server_listeners(c) for c in ssh_server.connections),
                     timeout, "the SSH server's tcpip-forward listeners to close")


def _session_with_transfers(addr, ftp_info, name: str) -> tuple[bytes, bytes, list[str]]:
    """One ftplib session: passive RETR, active RETR, LIST, then QUIT."""
    with ftplib.FTP() as ftp:
        ftp.connect(addr[0], addr[1], timeout=CLIENT_TIMEOUT)
        ftp.login(ftp_info.user, ftp_info.password)
        a, b, lines = io.BytesIO(), io.BytesIO(), []
        ftp.set_pasv(True)
        ftp.retrbinary(f"RETR {name}", a.write)
        ftp.set_pasv(False)
        ftp.retrbinary(f"RETR {name}", b.write)
        ftp.retrlines("LIST", lines.append)
        ftp.quit()
    return a.getvalue(), b.getvalue(), lines


# ---------------------------------------------------------------- leak checks
async def test_leak_checks_read_real_asyncssh_tables(forwarder, ssh_server):
    """The leak checks read asyncssh's private tables; they exist on both ends,
    and a missing one fails loudly instead of reading as "nothing leaked"."""
    client_conn = forwarder._tunnel.connection
    for name in ("_channels", "_remote_listeners", "_local_listeners"):
        assert isinstance(asyncssh_table(client_conn, name), dict)
    assert ssh_server.connections
    for conn in ssh_server.connections:
        for name in ("_channels", "_local_listeners"):
            assert isinstance(asyncssh_table(conn, name), dict)
    with pytest.raises(pytest.fail.Exception, match="changed its internals"):
        asyncssh_table(object(), "_channels")


# ------------------------------------------------------------------- sessions
async def test_no_leak_after_quit(forwarder, inprocess_ftp, ssh_server):
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), 2 * 1024 * 1024)
    a, b, lines = await trio.to_thread.run_sync(
        _session_with_transfers, forwarder.addresses[0], inprocess_ftp, "file.bin")
    assert a == payload and b == payload and len(lines) == 1
    assert len(ssh_server.forward_requests) == 2  # active RETR and active LIST
    await assert_no_leaks(forwarder, ssh_server)
    assert forwarder.stats.sessions == 1
    assert forwarder.stats.transfer_errors == 0


async def test_no_leak_after_unused_port_and_pasv(forwarder, inprocess_ftp, ssh_server):
    """PORT and PASV set up, no transfer, QUIT: forward, listener and channels go away.

    (pyftpdlib connects to the PORT address at once, so the remote forward is
    used; its relay to our listener must still be torn down.)"""
    client = await FTPClient.connect(forwarder.addresses[0])
    await client.login(inprocess_ftp)
    with socket.create_server(("127.0.0.1", 0)) as own:
        port = own.getsockname()[1]
        reply = await client.cmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}")
        assert reply.startswith("200"), reply
        assert len(ssh_server.forward_requests) == 1
        pasv_port = await client.pasv()
        assert (await client.cmd("QUIT")).startswith("221")
        await client.aclose()  # like ftplib: close after the 221
    # the client is gone, its data listener (and the connection queued on it) too
    await assert_no_leaks(forwarder, ssh_server)
    assert await connect_refused(pasv_port)


async def test_quit_after_unused_pasv_closes_promptly(forwarder, inprocess_ftp, ssh_server):
    """After QUIT the FTP server closes the control connection; through ftptrio too.

    Directly, pyftpdlib closes right after 221. ftptrio connects the server's
    passive port as soon as it sees the 227, so the server believes a transfer
    is in progress and (RFC 959) keeps the control connection open until that
    data connection closes: until ftptrio's data_idle_timeout (60 s) expires.
    """
    client = await FTPClient.connect(forwarder.addresses[0])
    await client.login(inprocess_ftp)
    await client.pasv()
    assert (await client.cmd("QUIT")).startswith("221")
    try:
        await wait_closed(client.stream, 3)
    finally:
        await client.aclose()
    await assert_no_leaks(forwarder, ssh_server)


async def test_no_leak_after_client_vanishes_mid_transfer(forwarder, inprocess_ftp, ssh_server):
    write_random(os.path.join(inprocess_ftp.root, "big.bin"), BIG)
    client, data = await _start_stalled_download(forwarder, inprocess_ftp)
    # the client disappears without QUIT: both connections just close
    await data.aclose()
    await client.aclose()
    await assert_no_leaks(forwarder, ssh_server, timeout=5)
    assert forwarder.stats.sessions == 1


async def _start_stalled_download(fwd, ftp_info, name: str = "big.bin"
                                  ) -> tuple[FTPClient, trio.SocketStream]:
    """Log in, start a passive RETR and read only its first bytes (the rest stalls)."""
    client = await FTPClient.connect(fwd.addresses[0])
    await client.login(ftp_info)
    assert (await client.cmd("TYPE I")).startswith("200")
    port = await client.pasv()
    with trio.fail_after(5):
        data = await trio.open_tcp_stream("127.0.0.1", port)
    reply = await client.cmd(f"RETR {name}")
    assert reply.startswith(("125", "150")), reply
    with trio.fail_after(5):
        assert await data.receive_some(65536)
    return client, data


# --------------------------------------------------------------- cancellation
async def test_cancelling_forwarder_mid_transfer_tears_down(forwarder_config, inprocess_ftp,
                                                            ssh_server):
    write_random(os.path.join(inprocess_ftp.root, "big.bin"), BIG)
    start = None
    async with ftptrio.open_forwarder(forwarder_config) as fwd:
        client, data = await _start_stalled_download(fwd, inprocess_ftp)
        assert fwd.stats.sessions_active == 1
        conn = fwd._tunnel.connection
        assert len(open_channels(conn)) == 2  # control + data
        start = trio.current_time()
    # leaving open_forwarder cancelled everything; it must not have hung
    assert trio.current_time() - start < 5
    got = await wait_closed(data, 5)
    assert len(got) < BIG
    await wait_closed(client.stream, 5)
    await client.aclose()
    await data.aclose()
    assert fwd.stats.sessions_active == 0
    assert conn.is_closed()
    await wait_until(lambda: not server_channels(ssh_server), 5,
                     "the SSH server's channels to close")
    assert await connect_refused(fwd.addresses[0][1])


async def test_cancelling_forwarder_mid_active_upload_tears_down(forwarder_config,
                                                                 inprocess_ftp, ssh_server):
    """An active-mode upload in flight (client keeps sending) when ftptrio stops."""
    async with ftptrio.open_forwarder(forwarder_config) as fwd:
        client = await FTPClient.connect(fwd.addresses[0])
        await client.login(inprocess_ftp)
        assert (await client.cmd("TYPE I")).startswith("200")
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert (await client.cmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}")).startswith("200")
        await client.send("STOR up.bin\r\n")
        with trio.fail_after(5):
            sock, _ = await listener.accept()
        listener.close()
        data = trio.SocketStream(sock)
        assert (await client.text_reply()).startswith(("125", "150"))
        with trio.fail_after(5):
            await data.send_all(os.urandom(256 * 1024))
        await wait_until(lambda: os.path.exists(os.path.join(inprocess_ftp.root, "up.bin")), 5,
                         "the upload to start")
        start = trio.current_time()
    assert trio.current_time() - start < 5
    # the client's data connection breaks: sending eventually fails
    with trio.fail_after(5):
        with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
            while True:
                await data.send_all(b"x" * 65536)
    await wait_closed(client.stream, 5)
    await client.aclose()
    await data.aclose()
    await wait_until(lambda: not server_channels(ssh_server), 5,
                     "the SSH server's channels to close")
    await wait_until(lambda: not any(server_listeners(c) for c in ssh_server.connections), 5,
                     "the SSH server's tcpip-forward listeners to close")


# --------------------------------------------------------- passive listeners
async def test_unused_passive_listener_closes_after_idle_timeout(forwarder_config, inprocess_ftp,
                                                                 ssh_server, caplog):
    caplog.set_level(logging.INFO, logger="ftptrio")
    config = replace(forwarder_config, data_idle_timeout=0.5)
    async with ftptrio.open_forwarder(config) as fwd:
        client = await FTPClient.connect(fwd.addresses[0])
        await client.login(inprocess_ftp)
        conn = fwd._tunnel.connection
        port = await client.pasv()
        # control + the waiting data channel (it opens just after the 227 went out)
        await wait_until(lambda: len(open_channels(conn)) == 2, 3, "the data channel to open")
        # (a connection to find out would be accepted while the listener waits)
        await wait_for_log(caplog, f"passive listener on port {port} closed unused (timeout)")
        assert await connect_refused(port)
        # the SSH channel opened for it is gone too; the session lives on
        await wait_until(lambda: len(open_channels(conn)) == 1, 3,
                         "the idle data channel to close")
        assert (await client.cmd("NOOP")).startswith("200")
        assert fwd.stats.sessions_active == 1
        await client.aclose()


async def test_second_pasv_supersedes_first(forwarder, inprocess_ftp, ssh_server):
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), 500_000)
    client = await FTPClient.connect(forwarder.addresses[0])
    await client.login(inprocess_ftp)
    assert (await client.cmd("TYPE I")).startswith("200")
    first = await client.pasv()
    second = await client.pasv()
    assert first != second
    conn = forwarder._tunnel.connection
    await wait_until(lambda: len(open_channels(conn)) == 2, 3,
                     "the first passive data channel to close")
    assert await connect_refused(first)
    # the second one works
    with trio.fail_after(5):
        data = await trio.open_tcp_stream("127.0.0.1", second)
    assert (await client.cmd("RETR file.bin")).startswith(("125", "150"))
    got = await wait_closed(data, 10)
    assert (await client.text_reply()).startswith("226")
    assert sha256_bytes(got) == sha256_bytes(payload)
    await client.aclose()
    await data.aclose()


async def test_second_connection_to_used_passive_listener_refused(forwarder, inprocess_ftp):
    write_random(os.path.join(inprocess_ftp.root, "big.bin"), BIG)
    client, data = await _start_stalled_download(forwarder, inprocess_ftp)
    port = data.socket.getpeername()[1]
    assert await connect_refused(port)
    await client.aclose()
    await data.aclose()


async def test_passive_listener_refuses_other_sources(forwarder, inprocess_ftp):
    """Only the control connection's client address may use a data listener."""
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), 100_000)
    client = await FTPClient.connect(forwarder.addresses[0])
    await client.login(inprocess_ftp)
    assert (await client.cmd("TYPE I")).startswith("200")
    port = await client.pasv()
    # a connection from another loopback address (127.0.0.2) is dropped, not relayed
    intruder = trio.socket.socket()
    await intruder.bind(("127.0.0.2", 0))
    with trio.fail_after(5):
        await intruder.connect(("127.0.0.1", port))
    stream = trio.SocketStream(intruder)
    assert await wait_closed(stream, 5) == b""
    await stream.aclose()
    # the real client still gets its data
    with trio.fail_after(5):
        data = await trio.open_tcp_stream("127.0.0.1", port)
    assert (await client.cmd("RETR file.bin")).startswith(("125", "150"))
    assert await wait_closed(data, 10) == payload
    assert (await client.text_reply()).startswith("226")
    await client.aclose()
    await data.aclose()


async def test_unused_remote_forward_closes_after_idle_timeout(forwarder_config, inprocess_ftp,
                                                               ssh_server):
    """A remote forward nobody connects to is cancelled after data_idle_timeout.

    active_address 127.0.0.2 makes pyftpdlib refuse the rewritten PORT (foreign
    address), so it never connects to the forward.
    """
    config = replace(forwarder_config, data_idle_timeout=0.5, active_address="127.0.0.2")
    async with ftptrio.open_forwarder(config) as fwd:
        client = await FTPClient.connect(fwd.addresses[0])
        await client.login(inprocess_ftp)
        reply = await client.cmd("PORT 127,0,0,1,200,1")
        assert reply.startswith("5"), reply  # the server's refusal, passed on
        conn = fwd._tunnel.connection
        assert len(remote_listeners(conn)) == 1
        await wait_until(lambda: not remote_listeners(conn), 3,
                         "the idle remote forward to be cancelled")
        await wait_until(lambda: not any(server_listeners(c) for c in ssh_server.connections),
                         3, "the SSH server's listener to close")
        assert (await client.cmd("NOOP")).startswith("200")
        await client.aclose()


async def test_stats_count_every_completed_transfer(forwarder, inprocess_ftp, ssh_server):
    """Every transfer that completed is counted, even when the client quits at once.

    A session that ends (QUIT) while a finished data relay is still closing
    its SSH channel cancels the relay task before it records the transfer.
    """
    write_random(os.path.join(inprocess_ftp.root, "f.txt"), 100)

    def sessions(n: int) -> None:
        for _ in range(n):
            with ftplib.FTP() as ftp:
                ftp.connect(*forwarder.addresses[0], timeout=CLIENT_TIMEOUT)
                ftp.login(inprocess_ftp.user, inprocess_ftp.password)
                ftp.set_pasv(True)
                ftp.retrlines("LIST", lambda line: None)
                ftp.set_pasv(False)
                ftp.retrlines("LIST", lambda line: None)
                ftp.quit()

    n = 12
    await trio.to_thread.run_sync(sessions, n)
    await assert_no_leaks(forwarder, ssh_server)
    assert forwarder.stats.sessions == n
    assert forwarder.stats.by_mode == {"passive": n, "active": n}, forwarder.stats
    assert forwarder.stats.transfers == 2 * n


# ----------------------------------------------------------------------- demo
async def test_demo_runs_and_verifies():
    """run_demo opens its own trio-asyncio loop: no fixture loop here."""
    lines: list[str] = []
    assert await run_demo(size=1 << 20, out=lines.append), "\n".join(lines)
    assert any("ALL TRANSFERS VERIFIED: 8/8 ok" in line for line in lines), lines
    for mode in ("passive", "active", "active->passive", "sftp-server"):
        assert sum(line.split()[:1] == [mode] and "OK (sha256 verified)" in line
                   for line in lines) == 2, (mode, lines)
