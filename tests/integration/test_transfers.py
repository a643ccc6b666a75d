"""Real transfers with ftplib through ftptrio, verified by sha256."""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
from dataclasses import replace

import pytest
import trio
import trio_asyncio

import ftptrio
from ftptrio.testing.servers import sha256_bytes, sha256_file

try:
    from .integration_helpers import (CLIENT_TIMEOUT, assert_direct_requests_only_ftp,
                                      download, epsv_download, eprt_download, listing, login,
                                      remote_listeners, upload, wait_until, write_random)
except ImportError:
    from integration_helpers import (CLIENT_TIMEOUT, login,  # type: ignore
                                     assert_direct_requests_only_ftp,
                                     download, epsv_download, eprt_download, listing,
                                     remote_listeners, upload, wait_until, write_random)

BIG = 32 * 1024 * 1024
MEDIUM = 3 * 1024 * 1024 + 12345  # not a multiple of any buffer size


async def run(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def test_forwarder_uses_the_fixture_loop(forwarder, aio_loop):
    # the forwarder must not have opened a private trio-asyncio loop
    assert trio_asyncio.current_loop.get() is aio_loop
    assert forwarder._tunnel is not None and forwarder._tunnel.connection is not None
    host, port = forwarder.addresses[0]
    assert host == "127.0.0.1" and port > 0


# ---------------------------------------------------------------------- passive
@pytest.mark.parametrize("size", [BIG, 0], ids=["32MiB", "empty"])
async def test_passive_download(forwarder, inprocess_ftp, ssh_server, size):
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), size)
    got = await run(download, forwarder.addresses[0], inprocess_ftp, "file.bin")
    assert len(got) == size
    assert sha256_bytes(got) == sha256_bytes(payload)
    assert ssh_server.forward_requests == []
    assert_direct_requests_only_ftp(ssh_server, inprocess_ftp)


@pytest.mark.parametrize("size", [BIG, 0], ids=["32MiB", "empty"])
async def test_passive_upload(forwarder, inprocess_ftp, ssh_server, size):
    payload = os.urandom(size)
    await run(upload, forwarder.addresses[0], inprocess_ftp, "up.bin", payload)
    path = os.path.join(inprocess_ftp.root, "up.bin")
    assert os.path.getsize(path) == size
    assert sha256_file(path) == sha256_bytes(payload)
    assert ssh_server.forward_requests == []
    assert_direct_requests_only_ftp(ssh_server, inprocess_ftp)


# ----------------------------------------------------------------------- active
async def test_active_remote_forward_download_and_upload(forwarder, inprocess_ftp, ssh_server):
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), MEDIUM)
    got = await run(download, forwarder.addresses[0], inprocess_ftp, "file.bin", passive=False)
    assert sha256_bytes(got) == sha256_bytes(payload)
    assert len(ssh_server.forward_requests) == 1

    up = os.urandom(MEDIUM)
    await run(upload, forwarder.addresses[0], inprocess_ftp, "up.bin", up, passive=False)
    assert sha256_file(os.path.join(inprocess_ftp.root, "up.bin")) == sha256_bytes(up)
    # one tcpip-forward per data connection, all on the configured remote listen host
    assert len(ssh_server.forward_requests) == 2
    assert all(host == "127.0.0.1" for host, _port in ssh_server.forward_requests)
    await wait_until(lambda: forwarder.stats.sessions_active == 0, 5, "sessions to end")
    # (exact per-mode counts: test_lifecycle.py::test_stats_count_every_completed_transfer)
    assert set(forwarder.stats.by_mode) <= {"active"}, forwarder.stats
    # the control channels only: active data never uses direct-tcpip
    # the start-up check's control connection, then one per session
    assert ssh_server.direct_requests == [(inprocess_ftp.host, inprocess_ftp.port)] * 3


async def test_active_empty_file_download_and_upload(forwarder, inprocess_ftp, ssh_server):
    write_random(os.path.join(inprocess_ftp.root, "empty.bin"), 0)
    got = await run(download, forwarder.addresses[0], inprocess_ftp, "empty.bin", passive=False)
    assert got == b""
    await run(upload, forwarder.addresses[0], inprocess_ftp, "empty-up.bin", b"", passive=False)
    assert os.path.getsize(os.path.join(inprocess_ftp.root, "empty-up.bin")) == 0
    assert len(ssh_server.forward_requests) == 2


async def test_a_forward_requested_ahead_refuses_connections_until_its_port(
        forwarder_config, inprocess_ftp, ssh_server, caplog):
    """--active-forward-ahead yes: after a PORT, the forward for the session's next PORT
    is requested ahead (its rewritten PORT then goes out without a tcpip-forward round
    trip); until that PORT takes it, it refuses every connection, then it is one-shot
    as any; it is cancelled with the session."""
    caplog.set_level(logging.DEBUG, "ftptrio._dataplane")
    config = replace(forwarder_config, active_forward_ahead="yes")
    payload = write_random(os.path.join(inprocess_ftp.root, "p.bin"), 50_000)
    async with ftptrio.open_forwarder(config) as fwd:
        def listening() -> list[int]:
            conn = fwd._tunnel.connection if fwd._tunnel else None
            return [key[1] for key in remote_listeners(conn)] if conn else []

        def session() -> tuple[bytes, bytes, bytes, int, int]:
            with login(fwd.addresses[0], inprocess_ftp) as ftp:
                ftp.set_pasv(False)
                first = io.BytesIO()
                ftp.retrbinary("RETR p.bin", first.write)
                deadline = time.monotonic() + 5
                while len(listening()) != 1 and time.monotonic() < deadline:
                    time.sleep(0.02)  # the PORT's forward gone, the one ahead there
                (ahead,) = listening()
                with socket.create_connection(("127.0.0.1", ahead), timeout=5) as stray:
                    stray.settimeout(5)
                    try:
                        stray_got = stray.recv(100)  # refused: closed by the SSH server
                    except OSError:
                        stray_got = b""
                second = io.BytesIO()
                ftp.sendcmd("TYPE I")
                host, port = ftp.sock.getsockname()[:2]
                with socket.create_server((host, 0)) as own:
                    own.settimeout(5)
                    reply = ftp.sendcmd(f"EPRT |1|{host}|{own.getsockname()[1]}|")
                    assert reply.startswith("200"), reply
                    ftp.putcmd("RETR p.bin")
                    assert ftp.getresp().startswith("1")
                    data, _ = own.accept()
                    with data:
                        while chunk := data.recv(65536):
                            second.write(chunk)
                    assert ftp.getresp().startswith("226")
                ftp.quit()
            return first.getvalue(), stray_got, second.getvalue(), ahead

        first, stray_got, second, ahead = await run(session)
        # the port the rewritten EPRT named (which ports listen right after its 200
        # cannot tell: the next one ahead may be there already)
        used = [int(r.getMessage().rsplit(":", 1)[1]) for r in caplog.records
                if "via remote forward" in r.getMessage()][-1]
        assert first == second == payload
        assert stray_got == b""
        assert used == ahead, "the second PORT did not use the forward requested ahead"
        await wait_until(lambda: fwd.stats.sessions_active == 0, 5, "the session to end")
        assert fwd.stats.by_mode == {"active": 2}, fwd.stats
        await wait_until(lambda: not listening(), 5, "the forward ahead to be cancelled")


async def test_auto_requests_no_forward_ahead_for_a_loopback_ftp_host(
        forwarder, inprocess_ftp, ssh_server):
    """--active-forward-ahead auto (the default) with the FTP server on loopback: one
    tcpip-forward per PORT and none ahead (any user of the SSH host could connect to a
    forward from loopback, and a port known ahead gives them time to race)."""
    payload = write_random(os.path.join(inprocess_ftp.root, "a.bin"), 10_000)
    for _ in range(2):
        got = await run(download, forwarder.addresses[0], inprocess_ftp, "a.bin", passive=False)
        assert got == payload
    assert len(ssh_server.forward_requests) == 2


async def test_active_converted_to_passive(forwarder_config, inprocess_ftp, ssh_server):
    config = replace(forwarder_config, active_mode="passive")
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), MEDIUM)
    up = os.urandom(MEDIUM)
    async with ftptrio.open_forwarder(config) as fwd:
        got = await run(download, fwd.addresses[0], inprocess_ftp, "file.bin", passive=False)
        await run(upload, fwd.addresses[0], inprocess_ftp, "up.bin", up, passive=False)
        await wait_until(lambda: fwd.stats.sessions_active == 0, 5, "sessions to end")
        assert set(fwd.stats.by_mode) <= {"converted"}, fwd.stats
    assert sha256_bytes(got) == sha256_bytes(payload)
    assert sha256_file(os.path.join(inprocess_ftp.root, "up.bin")) == sha256_bytes(up)
    assert ssh_server.forward_requests == [], "conversion mode asked for a remote forward"
    assert_direct_requests_only_ftp(ssh_server, inprocess_ftp)
    # control + one passive data channel per transfer
    assert len(ssh_server.direct_requests) == 5  # the start-up check + 4


async def test_converted_mode_works_without_remote_forwarding(forwarder_config, inprocess_ftp,
                                                              ssh_server):
    ssh_server.allow_remote_forward = False
    config = replace(forwarder_config, active_mode="passive")
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), 100_000)
    async with ftptrio.open_forwarder(config) as fwd:
        got = await run(download, fwd.addresses[0], inprocess_ftp, "file.bin", passive=False)
    assert got == payload
    assert ssh_server.forward_requests == []


# ------------------------------------------------------------------ EPSV / EPRT
async def test_epsv_download(forwarder, inprocess_ftp, ssh_server):
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), MEDIUM)
    reply, got = await run(epsv_download, forwarder.addresses[0], inprocess_ftp, "file.bin")
    assert reply.startswith("229 ")
    assert sha256_bytes(got) == sha256_bytes(payload)
    assert ssh_server.forward_requests == []
    assert_direct_requests_only_ftp(ssh_server, inprocess_ftp)


async def test_eprt_download(forwarder, inprocess_ftp, ssh_server):
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), MEDIUM)
    reply, got = await run(eprt_download, forwarder.addresses[0], inprocess_ftp, "file.bin")
    assert reply.startswith("200")
    assert sha256_bytes(got) == sha256_bytes(payload)
    assert len(ssh_server.forward_requests) == 1


async def test_eprt_download_converted(forwarder_config, inprocess_ftp, ssh_server):
    config = replace(forwarder_config, active_mode="passive")
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), MEDIUM)
    async with ftptrio.open_forwarder(config) as fwd:
        reply, got = await run(eprt_download, fwd.addresses[0], inprocess_ftp, "file.bin")
    assert reply.startswith("200")
    assert sha256_bytes(got) == sha256_bytes(payload)
    assert ssh_server.forward_requests == []
    assert_direct_requests_only_ftp(ssh_server, inprocess_ftp)


# -------------------------------------------------------------- listing / REST
@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
async def test_directory_listing(forwarder, inprocess_ftp, passive):
    names = {f"file-{i:02d}.txt" for i in range(40)}
    for name in names:
        write_random(os.path.join(inprocess_ftp.root, name), 10)
    os.mkdir(os.path.join(inprocess_ftp.root, "subdir"))
    lines, nlst = await run(listing, forwarder.addresses[0], inprocess_ftp, passive=passive)
    assert set(nlst) == names | {"subdir"}
    assert len(lines) == len(names) + 1
    assert all(any(line.endswith(" " + name) for line in lines) for name in names)
    assert any(line.startswith("d") and line.endswith(" subdir") for line in lines)


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
async def test_resumed_download(forwarder, inprocess_ftp, passive):
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), MEDIUM)
    offset = 1_234_567
    got = await run(download, forwarder.addresses[0], inprocess_ftp, "file.bin",
                    passive=passive, rest=offset)
    assert len(got) == MEDIUM - offset
    assert got == payload[offset:]


# ---------------------------------------------------------------- concurrency
async def test_two_sessions_at_once(forwarder, inprocess_ftp, ssh_server):
    """Two logged-in sessions transfer at the same time (one passive, one active)."""
    a = write_random(os.path.join(inprocess_ftp.root, "a.bin"), 8 * 1024 * 1024)
    b = write_random(os.path.join(inprocess_ftp.root, "b.bin"), 8 * 1024 * 1024 + 1)
    both_logged_in = threading.Barrier(2, timeout=CLIENT_TIMEOUT)
    active_counts: list[int] = []

    def get(name: str, passive: bool) -> bytes:
        sink = io.BytesIO()
        with login(forwarder.addresses[0], inprocess_ftp) as ftp:
            ftp.set_pasv(passive)
            both_logged_in.wait()
            active_counts.append(forwarder.stats.sessions_active)
            ftp.retrbinary(f"RETR {name}", sink.write, blocksize=256 * 1024)
            ftp.quit()
        return sink.getvalue()

    results: dict[str, bytes] = {}

    async def run_get(name: str, passive: bool) -> None:
        results[name] = await trio.to_thread.run_sync(get, name, passive)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_get, "a.bin", True)
        nursery.start_soon(run_get, "b.bin", False)
    assert sha256_bytes(results["a.bin"]) == sha256_bytes(a)
    assert sha256_bytes(results["b.bin"]) == sha256_bytes(b)
    assert active_counts == [2, 2]
    assert forwarder.stats.sessions == 2
    assert forwarder.stats.transfer_errors == 0
    assert_direct_requests_only_ftp(ssh_server, inprocess_ftp)


async def test_serve_in_own_nursery(forwarder_config, inprocess_ftp, ssh_server):
    """``await nursery.start(ftptrio.serve, config)`` returns a working Forwarder."""
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), 300_000)
    async with trio.open_nursery() as nursery:
        fwd = await nursery.start(ftptrio.serve, forwarder_config)
        assert isinstance(fwd, ftptrio.Forwarder)
        assert fwd.ports == [fwd.addresses[0][1]]
        got = await run(download, fwd.addresses[0], inprocess_ftp, "file.bin")
        nursery.cancel_scope.cancel()
    assert got == payload
    assert fwd.stats.sessions == 1


async def test_direct_requests_name_only_the_ftp_server(forwarder, inprocess_ftp, ssh_server):
    payload = write_random(os.path.join(inprocess_ftp.root, "file.bin"), 200_000)
    addr = forwarder.addresses[0]
    assert await run(download, addr, inprocess_ftp, "file.bin") == payload
    assert (await run(epsv_download, addr, inprocess_ftp, "file.bin"))[1] == payload
    assert await run(download, addr, inprocess_ftp, "file.bin", passive=False) == payload
    await run(listing, addr, inprocess_ftp)
    assert_direct_requests_only_ftp(ssh_server, inprocess_ftp)
    control = [r for r in ssh_server.direct_requests
               if r == (inprocess_ftp.host, inprocess_ftp.port)]
    assert len(control) == 5  # the start-up check, then one control channel per session
    passive_ports = [p for _h, p in ssh_server.direct_requests if p != inprocess_ftp.port]
    # PASV download, EPSV download, LIST and NLST used passive data channels
    assert len(passive_ports) == 4
