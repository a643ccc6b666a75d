"""FTPS through ftptrio without decrypting it (issue 25): a real sshd, vsftpd (and
ProFTPD with mod_tls, curl only) requiring
TLS for logins and data (explicit, AUTH TLS) or speaking TLS from the first byte
(implicit), and real clients (curl, lftp, Python's ftplib). ftptrio relays the TLS
control channel opaque and forwards the server's passive port range.

vsftpd listens on 127.0.0.2 and ftptrio on 127.0.0.1: both hold the same passive
port numbers, on different addresses (on one host they could not share one). Files
go both ways and are compared by sha256.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trio

import ftptrio
from ftptrio.testing import servers

from clients import CLIENT_MAX_TIME, CLIENT_TIMEOUT, _lftp_quote, forwarder_config, run_client

#: where the FTPS servers listen (ftptrio's range listens on 127.0.0.1)
SERVER_HOST = "127.0.0.2"
PASSIVE_COUNT = 20
DOWNLOAD = "one_mib.bin"


def start_tls_vsftpd(tmp_path_factory: Any, name: str, **options: Any) -> servers.FTPServer:
    servers.require_tool("vsftpd")
    return servers.start_vsftpd(tmp_path_factory.mktemp(name), host=SERVER_HOST,
                                passive_count=PASSIVE_COUNT, **options)


@pytest.fixture(scope="module")
def vsftpd_tls(tmp_path_factory):
    """vsftpd: ssl_enable, logins and data forced to TLS, require_ssl_reuse (default)."""
    server = start_tls_vsftpd(tmp_path_factory, "vsftpd-tls", tls="explicit")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vsftpd_tls_no_reuse(tmp_path_factory):
    """The same with require_ssl_reuse=NO: Python's ftplib cannot reuse TLS sessions."""
    server = start_tls_vsftpd(tmp_path_factory, "vsftpd-tls-noreuse", tls="explicit",
                              require_ssl_reuse=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vsftpd_implicit(tmp_path_factory):
    """vsftpd with implicit_ssl=YES (TLS from the first byte, port 990 style)."""
    server = start_tls_vsftpd(tmp_path_factory, "vsftpd-implicit", tls="implicit")
    try:
        yield server
    finally:
        server.stop()


def ftps_config(sshd: servers.OpenSSHServer, ftp: servers.FTPServer,
                policy: str = "passthrough") -> ftptrio.Config:
    ports = ftp.passive_ports
    return forwarder_config(sshd, ftp, auth_tls=policy,
                            passive_ports=(ports.start, ports.stop - 1))


async def upload_and_download(ftp: servers.FTPServer, tmp_path: Path, download: Any,
                              upload: Any) -> None:
    """``download(remote, local)`` and ``upload(local, remote)``: sha256 both ways."""
    local = tmp_path / f"down-{uuid.uuid4().hex}.bin"
    await download(DOWNLOAD, local)
    assert servers.sha256_file(local) == servers.sha256_file(ftp.path(DOWNLOAD))
    data = servers.random_bytes(3 * 1024 * 1024 + 17, seed=25)
    source = tmp_path / f"up-{uuid.uuid4().hex}.bin"
    source.write_bytes(data)
    remote = f"{ftp.upload_dir}/{source.name}"
    await upload(source, remote)
    with trio.fail_after(10):  # vsftpd may still be closing the file after 226
        while not (ftp.path(remote).exists()
                   and ftp.path(remote).stat().st_size == len(data)):
            await trio.sleep(0.05)
    assert servers.sha256_file(ftp.path(remote)) == servers.sha256_bytes(data)


def curl_base(*extra: str) -> list[str]:
    return [servers.require_tool("curl"), "--silent", "--show-error", "--verbose",
            "--max-time", str(CLIENT_MAX_TIME), "--connect-timeout", str(CLIENT_TIMEOUT),
            "--noproxy", "*", "--insecure", "--ssl-reqd", *extra]


def url(scheme: str, fwd: Any, ftp: servers.FTPServer, path: str) -> str:
    host, port = fwd.addresses[0]
    return f"{scheme}://{ftp.user}:x@{host}:{port}/{path}"


@pytest.mark.parametrize("mode", ["EPSV", "PASV"])
async def test_curl_explicit_ftps(openssh, vsftpd_tls, tmp_path, mode):
    extra = ["--disable-epsv"] if mode == "PASV" else []

    async with ftptrio.open_forwarder(ftps_config(openssh, vsftpd_tls)) as fwd:
        async def download(remote: str, local: Path) -> None:
            _out, err = await run_client([*curl_base(*extra), "--output", str(local),
                                          url("ftp", fwd, vsftpd_tls, remote)],
                                         f"curl {mode} FTPS download")
            assert "> AUTH " in err and f"> {mode}" in err

        async def upload(local: Path, remote: str) -> None:
            await run_client([*curl_base(*extra), "--upload-file", str(local),
                              url("ftp", fwd, vsftpd_tls, remote)], f"curl {mode} FTPS upload")

        await upload_and_download(vsftpd_tls, tmp_path, download, upload)
        stats = fwd.stats
    # every data connection went through the passive range, none was rewritten
    assert set(stats.by_mode) == {"tls-passive"} and stats.transfer_errors == 0


async def test_a_slow_ftps_upload_outlasts_the_idle_timeout(openssh, vsftpd_tls, tmp_path):
    """--idle-timeout 1.5 s and a 2 MiB upload at 512 KiB/s (about 4 s, no control
    traffic meanwhile): the range connection's traffic keeps the TLS session alive."""
    config = replace(ftps_config(openssh, vsftpd_tls), idle_session_timeout=1.5)
    data = servers.random_bytes(2 * 1024 * 1024, seed=27)
    source = tmp_path / "slow.bin"
    source.write_bytes(data)
    remote = f"{vsftpd_tls.upload_dir}/slow-{uuid.uuid4().hex}.bin"
    async with ftptrio.open_forwarder(config) as fwd:
        await run_client([*curl_base("--limit-rate", "512K"), "--upload-file", str(source),
                          url("ftp", fwd, vsftpd_tls, remote)], "curl slow FTPS upload")
    with trio.fail_after(10):  # vsftpd may still be closing the file after 226
        while not (vsftpd_tls.path(remote).exists()
                   and vsftpd_tls.path(remote).stat().st_size == len(data)):
            await trio.sleep(0.05)
    assert servers.sha256_file(vsftpd_tls.path(remote)) == servers.sha256_bytes(data)


async def test_lftp_explicit_ftps(openssh, vsftpd_tls, tmp_path):
    """lftp with ftp:ssl-force (its default PASV; vsftpd's 227 names 127.0.0.2, which
    lftp's fix-pasv-address replaces with the control address: 127.0.0.1 is loopback
    to it, 127.0.0.2 is not)."""
    lftp = servers.require_tool("lftp")

    async with ftptrio.open_forwarder(ftps_config(openssh, vsftpd_tls)) as fwd:
        host, port = fwd.addresses[0]

        async def run(what: str, command: str) -> None:
            script = "; ".join([
                f"set net:timeout {CLIENT_TIMEOUT}", "set net:max-retries 1",
                "set cmd:fail-exit yes", "set xfer:clobber on",
                "set ftp:ssl-force true", "set ftp:ssl-protect-data true",
                "set ssl:verify-certificate no", "debug 5",
                f"open -u {_lftp_quote(vsftpd_tls.user + ',x')} ftp://{host}:{port}", command])
            out, err = await run_client([lftp, "-c", script], f"lftp FTPS {what}")
            assert "AUTH TLS" in out + err or "AUTH SSL" in out + err

        async def download(remote: str, local: Path) -> None:
            await run("download", f"get {_lftp_quote(remote)} -o {_lftp_quote(str(local))}")

        async def upload(local: Path, remote: str) -> None:
            await run("upload", f"put {_lftp_quote(str(local))} -o {_lftp_quote(remote)}")

        await upload_and_download(vsftpd_tls, tmp_path, download, upload)
        assert set(fwd.stats.by_mode) == {"tls-passive"}


async def test_ftplib_ftp_tls_prot_p(openssh, vsftpd_tls_no_reuse, tmp_path):
    """Python's ftplib.FTP_TLS with prot_p(), PASV (its 227 address is ignored by
    default). vsftpd runs with require_ssl_reuse=NO: ftplib cannot reuse the control
    connection's TLS session on the data connection (522 with vsftpd's default)."""
    import ftplib

    ftp_server = vsftpd_tls_no_reuse
    async with ftptrio.open_forwarder(ftps_config(openssh, ftp_server)) as fwd:
        host, port = fwd.addresses[0]

        def session(action: Any) -> None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client = ftplib.FTP_TLS(context=context, timeout=CLIENT_TIMEOUT)
            try:
                client.connect(host, port)
                client.login(ftp_server.user, "x")
                client.prot_p()
                action(client)
                client.quit()
            finally:
                client.close()

        async def download(remote: str, local: Path) -> None:
            def action(client: ftplib.FTP_TLS) -> None:
                with open(local, "wb") as f:
                    client.retrbinary(f"RETR {remote}", f.write)
            await trio.to_thread.run_sync(session, action)

        async def upload(local: Path, remote: str) -> None:
            def action(client: ftplib.FTP_TLS) -> None:
                with open(local, "rb") as f:
                    client.storbinary(f"STOR {remote}", f)
            await trio.to_thread.run_sync(session, action)

        with trio.fail_after(CLIENT_MAX_TIME):
            await upload_and_download(ftp_server, tmp_path, download, upload)
        assert set(fwd.stats.by_mode) == {"tls-passive"}


async def test_curl_implicit_ftps(openssh, vsftpd_implicit, tmp_path, caplog):
    """--auth-tls implicit: curl ftps:// (TLS from the first byte), EPSV. The start-up
    check opens the channel but waits for no greeting (the server waits for the
    client's TLS handshake: it was a 15 s wait and an error line)."""
    caplog.set_level(logging.INFO, "ftptrio._server")
    with trio.fail_after(10):
        async with ftptrio.open_forwarder(ftps_config(openssh, vsftpd_implicit, "implicit")):
            pass
    assert "implicit FTPS: channel opened" in caplog.text
    assert "not reachable" not in caplog.text
    async with ftptrio.open_forwarder(ftps_config(openssh, vsftpd_implicit, "implicit")) as fwd:
        async def download(remote: str, local: Path) -> None:
            await run_client([*curl_base(), "--output", str(local),
                              url("ftps", fwd, vsftpd_implicit, remote)],
                             "curl implicit FTPS download")

        async def upload(local: Path, remote: str) -> None:
            await run_client([*curl_base(), "--upload-file", str(local),
                              url("ftps", fwd, vsftpd_implicit, remote)],
                             "curl implicit FTPS upload")

        await upload_and_download(vsftpd_implicit, tmp_path, download, upload)
        assert set(fwd.stats.by_mode) == {"tls-passive"}


async def test_lftp_implicit_ftps(openssh, vsftpd_implicit, tmp_path):
    lftp = servers.require_tool("lftp")
    async with ftptrio.open_forwarder(ftps_config(openssh, vsftpd_implicit, "implicit")) as fwd:
        host, port = fwd.addresses[0]
        local = tmp_path / "implicit-lftp.bin"
        script = "; ".join([
            f"set net:timeout {CLIENT_TIMEOUT}", "set net:max-retries 1",
            "set cmd:fail-exit yes", "set ssl:verify-certificate no",
            "set ftp:ssl-protect-data true",
            f"open -u {_lftp_quote(vsftpd_implicit.user + ',x')} ftps://{host}:{port}",
            f"get {DOWNLOAD} -o {_lftp_quote(str(local))}"])
        await run_client([lftp, "-c", script], "lftp implicit FTPS download")
    assert servers.sha256_file(local) == servers.sha256_file(vsftpd_implicit.path(DOWNLOAD))


@pytest.fixture(scope="module")
def proftpd_tls(tmp_path_factory):
    """ProFTPD with mod_tls (Debian's proftpd-mod-crypto, unpacked by
    .ci/install-proftpd) requiring TLS on control and data (TLSRequired on)."""
    servers.require_tool("proftpd")
    if servers.proftpd_tls_module() is None:
        message = "ProFTPD's mod_tls.so is not unpacked (run .ci/install-proftpd)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = servers.start_proftpd(tmp_path_factory.mktemp("proftpd-tls"), host=SERVER_HOST,
                                   passive_count=PASSIVE_COUNT, tls=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["EPSV", "PASV"])
async def test_curl_explicit_ftps_proftpd(openssh, proftpd_tls, tmp_path, mode):
    extra = ["--disable-epsv"] if mode == "PASV" else []
    async with ftptrio.open_forwarder(ftps_config(openssh, proftpd_tls)) as fwd:
        async def download(remote: str, local: Path) -> None:
            await run_client([*curl_base(*extra), "--output", str(local),
                              url("ftp", fwd, proftpd_tls, remote)],
                             f"curl {mode} FTPS download (ProFTPD)")

        async def upload(local: Path, remote: str) -> None:
            await run_client([*curl_base(*extra), "--upload-file", str(local),
                              url("ftp", fwd, proftpd_tls, remote)],
                             f"curl {mode} FTPS upload (ProFTPD)")

        await upload_and_download(proftpd_tls, tmp_path, download, upload)
        stats = fwd.stats
    assert set(stats.by_mode) == {"tls-passive"} and stats.transfer_errors == 0


@pytest.fixture
async def live_tls_session(openssh, vsftpd_tls) -> AsyncIterator[Any]:
    """ftptrio with one TLS session live (AUTH TLS, handshake done): yields the forwarder."""
    async with ftptrio.open_forwarder(ftps_config(openssh, vsftpd_tls)) as fwd:
        host, port = fwd.addresses[0]
        stream = await trio.open_tcp_stream(host, port)
        with trio.fail_after(20):
            greeting = b""
            while b"\r\n" not in greeting:
                greeting += await stream.receive_some(4096)
            await stream.send_all(b"AUTH TLS\r\n")
            reply = b""
            while b"\r\n" not in reply:
                reply += await stream.receive_some(4096)
            assert reply.startswith(b"234")
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            tls = trio.SSLStream(stream, context, server_hostname=SERVER_HOST)
            await tls.do_handshake()
        try:
            yield fwd
        finally:
            await trio.aclose_forcefully(tls)


async def test_a_stray_connection_to_a_range_port_gets_no_channel(
        live_tls_session, openssh, vsftpd_tls, caplog):
    caplog.set_level(logging.WARNING, "ftptrio._ftps")
    port = vsftpd_tls.passive_ports[3]
    before = openssh.log().count(f"port {port}")
    stray = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await stray.bind(("127.0.0.3", 0))  # not the TLS client's address
    await stray.connect(("127.0.0.1", port))
    with trio.fail_after(5):
        try:
            assert await stray.recv(10) == b""
        except ConnectionResetError:
            pass
    stray.close()
    assert "refused a connection from 127.0.0.3" in caplog.text
    await trio.sleep(0.5)
    # sshd logs every direct-tcpip request (LogLevel DEBUG1): none for that port
    assert openssh.log().count(f"port {port}") == before
    assert live_tls_session.stats.by_mode == {}


async def test_a_server_demanding_tls_gets_the_hint(openssh, vsftpd_tls, caplog):
    """--auth-tls refuse (default) and a plaintext login: vsftpd answers 530; ftptrio
    says once how to forward FTPS."""
    caplog.set_level(logging.WARNING, "ftptrio._ftps")
    config = forwarder_config(openssh, vsftpd_tls)
    async with ftptrio.open_forwarder(config) as fwd:
        host, port = fwd.addresses[0]
        result = await trio.run_process(
            [servers.require_tool("curl"), "--silent", "--show-error", "--max-time", "20",
             f"ftp://{host}:{port}/{DOWNLOAD}", "--output", "/dev/null"],
            capture_stdout=True, capture_stderr=True, check=False)
        assert b"Access denied: 530" in result.stderr
    hints = [r.getMessage() for r in caplog.records if "demands TLS" in r.getMessage()]
    assert len(hints) == 1, hints
    assert "must use encryption" in hints[0]
    assert "--auth-tls passthrough --passive-ports" in hints[0]


async def test_ftps_bench_runs(tmp_path):
    """bench/ftps.py --quick runs through and prints its ratios (figures are never
    asserted: they are for users to see what TLS costs)."""
    servers.require_tool("vsftpd")
    servers.require_tool("sshd")
    bench = Path(__file__).resolve().parents[2] / "bench" / "ftps.py"
    env = {**os.environ, "PYTHONPATH": str(Path(ftptrio.__file__).parents[1])}
    result = await trio.run_process([sys.executable, str(bench), "--quick"], cwd=tmp_path,
                                    capture_stdout=True, capture_stderr=True, check=False,
                                    env=env)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-3000:] + out[-3000:]
    for link in ("LAN", "50 ms"):
        for client in ("curl", "lftp"):
            assert f"FTPS/FTP through ftptrio, {link}, {client}: download" in out, out
