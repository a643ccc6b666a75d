"""Remote (-R) tunnels through the in-process asyncssh server: the FTP client
connects to a listener on the SSH server, ftptrio reaches pyftpdlib from its own
side. Transfers are sha256-verified in both directions and both data modes."""

from __future__ import annotations

import ftplib
import io
import os
import socket

import pytest
import trio

import ftptrio
from ftp_fakes import assert_no_leaks, wait_until
from ftptrio.testing.servers import sha256_bytes, sha256_file

try:
    from .integration_helpers import (CLIENT_TIMEOUT, download, eprt_download, epsv_download,
                                      login, upload, write_random)
except ImportError:
    from integration_helpers import (CLIENT_TIMEOUT, download, eprt_download,  # type: ignore
                                     epsv_download, login, upload,
                                     write_random)

SIZE = 1024 * 1024 + 4321


async def run(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def remote_config(ssh_server, inprocess_ftp, **options) -> ftptrio.Config:
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(host=ssh_server.host, port=ssh_server.port,
                               username=ssh_server.username,
                               client_keys=(ssh_server.client_key_path,),
                               known_hosts=ssh_server.known_hosts, connect_timeout=10.0),
        forwards=(ftptrio.ForwardSpec(ftp_host=inprocess_ftp.host, ftp_port=inprocess_ftp.port,
                                      direction="remote"),),
        **options)


@pytest.fixture
async def remote_forwarder(ssh_server, inprocess_ftp):
    async with ftptrio.open_forwarder(remote_config(ssh_server, inprocess_ftp)) as fwd:
        yield fwd
        await assert_no_leaks(fwd)


def _no_direct_to_ftp(ssh_server, inprocess_ftp) -> None:
    # control and data reach the FTP server from ftptrio's side, never via direct-tcpip
    assert (inprocess_ftp.host, inprocess_ftp.port) not in ssh_server.direct_requests


@pytest.mark.parametrize("passive", [True, False], ids=["PASV", "PORT"])
async def test_remote_download_and_upload(remote_forwarder, ssh_server, inprocess_ftp, passive):
    addr = remote_forwarder.addresses[0]
    # the control listener is the SSH server's (tcpip-forward), not ours
    assert (addr[0], 0) in ssh_server.forward_requests
    payload = write_random(os.path.join(inprocess_ftp.root, "down.bin"), SIZE)
    got = await run(download, addr, inprocess_ftp, "down.bin", passive=passive)
    assert sha256_bytes(got) == sha256_bytes(payload)
    up = os.urandom(SIZE)
    await run(upload, addr, inprocess_ftp, "up.bin", up, passive=passive)
    assert sha256_file(os.path.join(inprocess_ftp.root, "up.bin")) == sha256_bytes(up)
    await assert_no_leaks(remote_forwarder)  # sessions over: counters are final
    stats = remote_forwarder.stats
    assert stats.by_mode == {"passive" if passive else "active": 2}
    assert stats.transfer_errors == 0
    # a download is bytes to the client, an upload bytes to the server (issue 14.4)
    assert (stats.bytes_to_client, stats.bytes_to_server) == (SIZE, SIZE)
    _no_direct_to_ftp(ssh_server, inprocess_ftp)
    if passive:  # one port-0 remote forward per PASV (plus the control listener)
        assert ssh_server.forward_requests.count(("127.0.0.1", 0)) == 3
    else:  # active data goes through SSH to the client's own address
        assert {h for h, _p in ssh_server.direct_requests} == {"127.0.0.1"}


async def test_remote_download_only_counts_bytes_to_the_client(remote_forwarder, inprocess_ftp,
                                                                caplog):
    caplog.set_level("INFO", logger="ftptrio")
    payload = write_random(os.path.join(inprocess_ftp.root, "d.bin"), SIZE)
    got = await run(download, remote_forwarder.addresses[0], inprocess_ftp, "d.bin")
    assert sha256_bytes(got) == sha256_bytes(payload)
    await assert_no_leaks(remote_forwarder)
    stats = remote_forwarder.stats
    assert (stats.bytes_to_client, stats.bytes_to_server) == (SIZE, 0)
    [line] = [r.getMessage() for r in caplog.records if "transfer client=" in r.getMessage()]
    assert "direction=download" in line


async def test_remote_epsv_and_eprt(remote_forwarder, ssh_server, inprocess_ftp):
    addr = remote_forwarder.addresses[0]
    payload = write_random(os.path.join(inprocess_ftp.root, "e.bin"), 200_000)
    reply, got = await run(epsv_download, addr, inprocess_ftp, "e.bin")
    assert sha256_bytes(got) == sha256_bytes(payload)
    reply, got = await run(eprt_download, addr, inprocess_ftp, "e.bin")
    assert sha256_bytes(got) == sha256_bytes(payload)
    await assert_no_leaks(remote_forwarder)
    assert remote_forwarder.stats.by_mode == {"passive": 1, "active": 1}


async def test_remote_227_names_ssh_listen_address(remote_forwarder, ssh_server, inprocess_ftp):
    """The rewritten 227 names the SSH server's listener; honouring it works."""
    addr = remote_forwarder.addresses[0]
    payload = write_random(os.path.join(inprocess_ftp.root, "p.bin"), 100_000)

    def honour_227() -> tuple[str, bytes]:
        with login(addr, inprocess_ftp) as ftp:
            ftp.voidcmd("TYPE I")
            reply = ftp.sendcmd("PASV")
            host, port = ftplib.parse227(reply)
            with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT) as data:
                assert ftp.sendcmd("RETR p.bin").startswith("1")
                chunks = []
                while chunk := data.recv(65536):
                    chunks.append(chunk)
            ftp.voidresp()
            ftp.quit()
        return reply, b"".join(chunks)

    reply, got = await run(honour_227)
    assert "127,0,0,1" in reply and sha256_bytes(got) == sha256_bytes(payload)


async def test_remote_port_must_name_client_address(remote_forwarder, inprocess_ftp):
    addr = remote_forwarder.addresses[0]

    def foreign_port() -> tuple[str, str]:
        with login(addr, inprocess_ftp) as ftp:
            try:
                ftp.sendcmd("PORT 10,1,2,3,100,100")
            except ftplib.error_perm as exc:
                bad = str(exc)
            try:
                ftp.sendcmd("PORT 127,0,0,1,0,80")
            except ftplib.error_perm as exc:
                low = str(exc)
            ftp.quit()
        return bad, low

    bad, low = await run(foreign_port)
    assert bad.startswith("500") and low.startswith("501")


async def test_remote_reply_address_option(ssh_server, inprocess_ftp):
    config = remote_config(ssh_server, inprocess_ftp, remote_reply_address="192.0.2.7")
    async with ftptrio.open_forwarder(config) as fwd:
        addr = fwd.addresses[0]

        def pasv() -> str:
            with login(addr, inprocess_ftp) as ftp:
                reply = ftp.sendcmd("PASV")
                ftp.quit()
            return reply

        assert "192,0,2,7" in await run(pasv)
        await assert_no_leaks(fwd)


async def test_mixed_local_and_remote(ssh_server, inprocess_ftp):
    base = remote_config(ssh_server, inprocess_ftp)
    local = ftptrio.ForwardSpec(ftp_host=inprocess_ftp.host, ftp_port=inprocess_ftp.port)
    config = ftptrio.Config(ssh=base.ssh, forwards=(local, base.forwards[0]))
    payload = write_random(os.path.join(inprocess_ftp.root, "m.bin"), 300_000)
    async with ftptrio.open_forwarder(config) as fwd:
        for addr in fwd.addresses:
            for passive in (True, False):
                got = await run(download, addr, inprocess_ftp, "m.bin", passive=passive)
                assert sha256_bytes(got) == sha256_bytes(payload)
        await assert_no_leaks(fwd)
        assert fwd.stats.by_mode == {"passive": 2, "active": 2}
    # after the forwarder stops, the SSH server's listener is gone as well
    assert fwd._tunnel.connection is None


async def test_remote_session_cancel_tears_down(ssh_server, inprocess_ftp):
    """Closing the client mid-session (after PASV) leaves no forward or task."""
    async with ftptrio.open_forwarder(remote_config(ssh_server, inprocess_ftp)) as fwd:
        addr = fwd.addresses[0]

        def pasv_then_drop() -> None:
            ftp = login(addr, inprocess_ftp)
            ftp.sendcmd("PASV")
            ftp.sendcmd("TYPE I")
            ftp.sock.close()

        await run(pasv_then_drop)
        await assert_no_leaks(fwd)
        assert fwd.stats.sessions == 1


def test_remote_passive_conversion_refused():
    with pytest.raises(ftptrio.ConfigError, match="only available for local"):
        ftptrio.ForwardSpec(ftp_host="h", direction="remote", active_mode="passive")


async def test_remote_listener_reestablished_after_ssh_loss(ssh_server, inprocess_ftp):
    payload = write_random(os.path.join(inprocess_ftp.root, "r.bin"), 100_000)
    async with ftptrio.open_forwarder(remote_config(ssh_server, inprocess_ftp)) as fwd:
        addr = fwd.addresses[0]
        assert sha256_bytes(await run(download, addr, inprocess_ftp, "r.bin")) == sha256_bytes(payload)
        await assert_no_leaks(fwd)
        first = fwd._remote_listeners[0]
        for conn in list(ssh_server.connections):
            conn.close()  # the SSH server drops ftptrio
        await wait_until(lambda: fwd._remote_listeners[0] is not first, 20,
                         "the remote listener to be re-established")
        assert fwd._tunnel.connects == 2
        assert (fwd._remote_listeners[0].host, fwd._remote_listeners[0].port) == addr
        assert sha256_bytes(await run(download, addr, inprocess_ftp, "r.bin", passive=False)) == \
            sha256_bytes(payload)
        await assert_no_leaks(fwd)
