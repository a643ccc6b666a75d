"""The interop fixtures work on their own, without ftptrio."""

from __future__ import annotations

import ftplib
import io
import os
import shutil
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


# ---------------------------------------------------------------- SFTP with passwords


async def _password_connect(sshd: servers.OpenSSHServer, user: servers.SystemUser, method: str,
                            password: str | None = None) -> asyncssh.SSHClientConnection:
    """A password (``method`` "password") or keyboard-interactive login, nothing else."""
    return await asyncssh.connect(
        sshd.host, port=sshd.port, username=user.name,
        password=user.password if password is None else password,
        client_keys=None, agent_path=None, known_hosts=sshd.known_hosts, config=None,
        preferred_auth=method, login_timeout=TIMEOUT)


def _run_asyncio(fn, *args):
    async def bridged():
        with trio.fail_after(TIMEOUT):
            async with trio_asyncio.open_loop():
                return await trio_asyncio.aio_as_trio(fn)(*args)
    return bridged()


async def test_sshd_sftp_with_password_and_kbdint_logins(openssh_sftp, sftp_user):
    work = sftp_user.make_dir("fixture")
    data = os.urandom(100_000)

    async def session(method: str) -> tuple[bytes, int]:
        async with await _password_connect(openssh_sftp, sftp_user, method) as conn:
            async with conn.start_sftp_client() as sftp:
                assert await sftp.getcwd() == sftp_user.home
                async with sftp.open(f"{work}/{method}.bin", "wb") as f:
                    await f.write(data)
                async with sftp.open(f"{work}/{method}.bin", "rb") as f:
                    back = await f.read()
                return back, (await sftp.stat(f"{work}/{method}.bin")).uid or -1

    async def key_login() -> str:
        """The generated client key logs in as the user too (--sftp-login own)."""
        async with asyncssh.connect(
                openssh_sftp.host, port=openssh_sftp.port, username=sftp_user.name,
                client_keys=[openssh_sftp.client_key], agent_path=None,
                known_hosts=openssh_sftp.known_hosts, config=None, preferred_auth="publickey",
                login_timeout=TIMEOUT) as conn:
            async with conn.start_sftp_client() as sftp:
                return await sftp.getcwd()

    async def wrong_password() -> str:
        try:
            await _password_connect(openssh_sftp, sftp_user, "password", "not-the-password")
        except asyncssh.PermissionDenied as exc:
            return str(exc)
        raise AssertionError("a wrong password logged in")

    try:
        for method in ("password", "keyboard-interactive"):
            back, uid = await _run_asyncio(session, method)
            assert back == data and uid == sftp_user.uid, method
            # written by the user itself, as the SSH server enforces permissions
            assert os.stat(work / f"{method}.bin").st_uid == sftp_user.uid
        assert await _run_asyncio(key_login) == sftp_user.home
        assert "ermission denied" in await _run_asyncio(wrong_password)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def test_sshd_sftp_readonly_user(openssh_sftp, sftp_readonly_user):
    user = sftp_readonly_user
    kept = f"{servers.READONLY_DIR}/{servers.READONLY_FILE}"

    async def session() -> list[str]:
        outcomes = []
        async with await _password_connect(openssh_sftp, user, "password") as conn:
            async with conn.start_sftp_client() as sftp:
                async with sftp.open(f"{servers.READONLY_DIR}/{servers.READONLY_FILE}") as f:
                    assert (await f.read()).startswith("a file")
                for attempt in (lambda: sftp.open(f"{servers.READONLY_DIR}/new.txt", "w"),
                                lambda: sftp.remove(kept),
                                lambda: sftp.open(servers.UNREADABLE_FILE, "r")):
                    try:
                        await attempt()
                    except asyncssh.SFTPPermissionDenied:
                        outcomes.append("denied")
                    else:
                        outcomes.append("allowed")
        return outcomes

    assert await _run_asyncio(session) == ["denied"] * 3
    assert os.path.exists(os.path.join(user.home, servers.READONLY_DIR, servers.READONLY_FILE))


async def test_sshd_without_sftp_and_vsftpd_local_login(openssh_no_sftp_passwords, vsftpd_local,
                                                        sftp_user):
    """No SFTP from this sshd, but direct-tcpip to vsftpd, where the same user logs in."""
    async def session() -> tuple[str, bytes]:
        sshd = openssh_no_sftp_passwords
        async with await _password_connect(sshd, sftp_user, "password") as conn:
            try:
                async with conn.start_sftp_client():
                    pass
            except asyncssh.ChannelOpenError as exc:
                refusal = str(exc)
            else:
                raise AssertionError("this sshd offers SFTP")
            reader, writer = await conn.open_connection(vsftpd_local.host, vsftpd_local.port)
            line = await reader.readline()
            writer.close()
            return refusal, line

    refusal, greeting = await _run_asyncio(session)
    assert refusal and greeting.startswith(b"220 "), (refusal, greeting)
    assert "Subsystem" not in open(openssh_no_sftp_passwords.config_path).read()

    def ftp_roundtrip() -> None:
        client = _ftp_login(vsftpd_local, passive=True)
        try:
            data = os.urandom(300_000)
            target = f"{vsftpd_local.upload_dir}/fixture-{uuid.uuid4().hex}.bin"
            client.storbinary(f"STOR {target}", io.BytesIO(data))
            buf = io.BytesIO()
            client.retrbinary(f"RETR {target}", buf.write)
            assert buf.getvalue() == data
            assert os.stat(vsftpd_local.path(target)).st_uid == sftp_user.uid
            client.delete(target)
            client.quit()
        finally:
            client.close()

    await trio.to_thread.run_sync(ftp_roundtrip)
