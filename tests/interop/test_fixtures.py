"""The interop fixtures work on their own, without ftptrio."""

from __future__ import annotations

import ftplib
import io
import os
import uuid

import asyncssh
import trio
import trio_asyncio

from ftptrio.testing import servers

TIMEOUT = 30


async def _greeting_through_sshd(sshd: servers.OpenSSHServer, ftp: servers.FTPServer) -> bytes:
    """asyncio side: connect with the generated key, direct-tcpip to the FTP port."""
    conn = await asyncssh.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.username,
        client_keys=[sshd.client_key],
        known_hosts=sshd.known_hosts,
        config=None,
        login_timeout=TIMEOUT,
    )
    try:
        reader, writer = await conn.open_connection(ftp.host, ftp.port)
        try:
            line = await reader.readline()
            writer.write(b"QUIT\r\n")
            await writer.drain()
        finally:
            writer.close()
        return line
    finally:
        conn.close()
        await conn.wait_closed()


async def test_sshd_direct_tcpip_to_ftp_server(openssh, real_ftp_server):
    with trio.fail_after(TIMEOUT):
        async with trio_asyncio.open_loop():
            line = await trio_asyncio.aio_as_trio(_greeting_through_sshd)(openssh, real_ftp_server)
    assert line.startswith(b"220 "), line
    # LogLevel DEBUG1 records the forward: later tests can assert on the log.
    assert "direct-tcpip" in openssh.log()


async def test_sshd_rejects_unknown_host_key(openssh, tmp_path):
    other = tmp_path / "known_hosts"
    other.write_text(f"[{openssh.host}]:{openssh.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")

    async def connect():
        conn = await asyncssh.connect(
            openssh.host,
            port=openssh.port,
            username=openssh.username,
            client_keys=[openssh.client_key],
            known_hosts=str(other),
            config=None,
            login_timeout=TIMEOUT,
        )
        conn.close()

    with trio.fail_after(TIMEOUT):
        async with trio_asyncio.open_loop():
            try:
                await trio_asyncio.aio_as_trio(connect)()
            except asyncssh.HostKeyNotVerifiable:
                pass
            else:  # pragma: no cover
                raise AssertionError("a wrong known_hosts entry was accepted")


def _ftp_login(ftp: servers.FTPServer, passive: bool) -> ftplib.FTP:
    client = ftplib.FTP()
    client.connect(ftp.host, ftp.port, timeout=TIMEOUT)
    client.login(ftp.user, ftp.password)
    client.set_pasv(passive)
    return client


def _roundtrip(ftp: servers.FTPServer, passive: bool) -> None:
    client = _ftp_login(ftp, passive)
    try:
        assert client.getwelcome().startswith("220")
        for name in ("empty.bin", "one_mib.bin", "big.bin", servers.TEXT_FILE_NAME):
            buf = io.BytesIO()
            client.retrbinary(f"RETR {name}", buf.write)
            assert servers.sha256_bytes(buf.getvalue()) == servers.sha256_file(ftp.path(name)), name
        assert len(open(ftp.path("big.bin"), "rb").read()) == 32 << 20
        data = os.urandom(1 << 20)
        target = f"{ftp.upload_dir}/fixture-{uuid.uuid4().hex}.bin"
        client.storbinary(f"STOR {target}", io.BytesIO(data))
        assert servers.sha256_file(ftp.path(target)) == servers.sha256_bytes(data)
        client.quit()
    finally:
        client.close()


async def test_ftp_server_direct_passive(real_ftp_server):
    with trio.fail_after(2 * TIMEOUT):
        await trio.to_thread.run_sync(_roundtrip, real_ftp_server, True)


async def test_ftp_server_direct_active(real_ftp_server):
    with trio.fail_after(2 * TIMEOUT):
        await trio.to_thread.run_sync(_roundtrip, real_ftp_server, False)


def test_ftp_server_refuses_foreign_port(real_ftp_server):
    """Anti-bounce: the servers refuse PORT to an address that is not the client's."""
    client = _ftp_login(real_ftp_server, passive=False)
    try:
        try:
            resp = client.sendcmd("PORT 127,0,0,2,200,10")
        except ftplib.error_perm as exc:
            resp = str(exc)
        assert resp[:1] == "5", resp
    finally:
        client.close()


def test_openssh_extra_config(tmp_path):
    servers.require_tool("sshd")
    server = servers.start_openssh(tmp_path, extra_config=["AllowTcpForwarding local"])
    try:
        assert "AllowTcpForwarding local" in open(server.config_path).read()
        assert "AllowTcpForwarding yes" not in open(server.config_path).read()
    finally:
        server.stop()
    assert server.process.poll() is not None
