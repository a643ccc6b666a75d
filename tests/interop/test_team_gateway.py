"""ftptrio as a team gateway (--ftp-proxy), through a real sshd to a real vsftpd: lftp
with ``set ftp:proxy`` and ftplib logging in as ``user@host:port`` download and upload;
destinations outside the allow-list (or with none given) get 530 and their server
sees no connection."""

from __future__ import annotations

import ftplib
import logging
import stat
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import trio

import ftptrio
from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

CASE_TIMEOUT = 120


def gateway_config(sshd: servers.OpenSSHServer, allow: tuple[str, ...] = (),
                   **options) -> ftptrio.Config:
    """ftptrio with one FTP-proxy listener on 127.0.0.1 (a free port)."""
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(host=sshd.host, port=sshd.port, username=sshd.username,
                               client_keys=(sshd.client_key,), known_hosts=sshd.known_hosts),
        forwards=(ftptrio.ForwardSpec(ftp_host="", proxy=True),),
        allowed_destinations=allow, **options)


async def lftp_through(gateway: tuple[str, int], ftp: servers.FTPServer,
                       *commands: str) -> str:
    """lftp with ``ftp:proxy`` pointing at the gateway (it sends USER user@host:port)."""
    script = "; ".join([
        f"set net:timeout {clients.CLIENT_TIMEOUT}", "set net:max-retries 1",
        "set cmd:fail-exit yes", "set xfer:clobber on", "set ftp:ssl-allow no",
        *clients.Lftp.modes["PASV"],
        f"set ftp:proxy ftp://{gateway[0]}:{gateway[1]}",
        "debug 5",
        f"open -u {ftp.user},{ftp.password} ftp://{ftp.host}:{ftp.port}",
        *commands,
    ])
    out, err = await clients.run_client([servers.require_tool("lftp"), "-c", script],
                                        "lftp through the gateway")
    return out + err


async def test_lftp_downloads_and_uploads_through_the_proxy(openssh, vsftpd, tmp_path):
    servers.require_tool("lftp")
    ftp = vsftpd
    local = tmp_path / "one.bin"
    upload = tmp_path / "up.bin"
    upload.write_bytes(servers.random_bytes(300_000, 7))
    name = f"upload/lftp-{uuid.uuid4().hex}.bin"
    with trio.fail_after(CASE_TIMEOUT):
        config = gateway_config(openssh, (f"{ftp.host}:{ftp.port}",))
        async with ftptrio.open_forwarder(config) as fwd:
            transcript = await lftp_through(
                fwd.addresses[0], ftp, f"get one_mib.bin -o {local}",
                f"put {upload} -o {name}")
            with trio.fail_after(10):
                await fwd.wait_idle()
            stats = fwd.stats
    assert f"USER {ftp.user}@{ftp.host}:{ftp.port}" in transcript
    assert servers.sha256_file(local) == servers.sha256_file(ftp.path("one_mib.bin"))
    assert servers.sha256_file(ftp.path(name)) == servers.sha256_file(upload)
    assert stats.transfers == 2 and stats.transfer_errors == 0, stats
    assert stats.bytes_to_server == 300_000, stats


def ftplib_session(gateway: tuple[str, int], user: str, password: str, action) -> list[str]:
    replies: list[str] = []
    ftp = ftplib.FTP(timeout=clients.CLIENT_TIMEOUT)
    try:
        replies.append(ftp.connect(*gateway))
        replies.append(ftp.login(user, password))
        action(ftp)
        ftp.quit()
    finally:
        ftp.close()
    return replies


async def test_ftplib_logs_in_as_user_at_host_port(openssh, vsftpd, tmp_path):
    ftp = vsftpd
    name = f"upload/ftplib-{uuid.uuid4().hex}.bin"
    payload = servers.random_bytes(123_457, 3)
    got = bytearray()
    listing: list[str] = []

    def action(session: ftplib.FTP) -> None:
        session.retrbinary("RETR one_mib.bin", got.extend)
        session.retrlines("LIST", listing.append)
        session.storbinary(f"STOR {name}", _Reader(payload))

    with trio.fail_after(CASE_TIMEOUT):
        config = gateway_config(openssh, (f"{ftp.host}:{ftp.port}",))
        async with ftptrio.open_forwarder(config) as fwd:
            replies = await trio.to_thread.run_sync(
                ftplib_session, fwd.addresses[0], f"{ftp.user}@{ftp.host}:{ftp.port}",
                ftp.password, action)
    assert replies[0].startswith("220 ftptrio FTP proxy")
    assert replies[1].startswith("230")
    assert bytes(got) == ftp.path("one_mib.bin").read_bytes()
    assert any("one_mib.bin" in line for line in listing)
    assert ftp.path(name).read_bytes() == payload


def _latin1(session: ftplib.FTP) -> ftplib.FTP:
    """``session`` sending each character as one byte (a Telnet IAC as 0xFF)."""
    session.encoding = "latin-1"
    return session


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        chunk, self.data = self.data[:size], self.data[size:]
        return bytes(chunk)


@pytest.mark.parametrize("allow", ["other", "none"])
async def test_refused_destination_gets_530_and_sees_no_connection(openssh, vsftpd, allow):
    """Outside the allow-list, or with no --allow-destination at all (default deny):
    a 530 naming the reason, and nothing reaches the destination through SSH."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    connections: list[object] = []

    async def count_connections() -> None:
        while True:
            connections.append(await listener.accept())

    rules = (f"{vsftpd.host}:{vsftpd.port}",) if allow == "other" else ()
    with trio.fail_after(CASE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count_connections)
            async with ftptrio.open_forwarder(gateway_config(openssh, rules)) as fwd:
                with pytest.raises(ftplib.error_perm, match="530 ftptrio: destination "
                                   rf"127.0.0.1:{port} is not allowed"):
                    await trio.to_thread.run_sync(
                        ftplib_session, fwd.addresses[0], f"anonymous@127.0.0.1:{port}",
                        "x", lambda session: None)
                if allow == "none":  # nor the allowed-elsewhere vsftpd
                    with pytest.raises(ftplib.error_perm, match="530"):
                        await trio.to_thread.run_sync(
                            ftplib_session, fwd.addresses[0],
                            f"anonymous@{vsftpd.host}:{vsftpd.port}", "x",
                            lambda session: None)
                with trio.fail_after(10):
                    await fwd.wait_idle()
                stats = fwd.stats
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    assert connections == []
    assert "direct-tcpip" not in _log_since_start(openssh, port)
    assert stats.policy_denied["destination"] == (2 if allow == "none" else 1)


def _log_since_start(sshd: servers.OpenSSHServer, port: int) -> str:
    """sshd's log lines naming ``port`` (a channel opened to it would be logged)."""
    return "\n".join(line for line in sshd.log().splitlines() if f":{port}" in line
                     or f" port {port}" in line)


def _connects(ftp: servers.FTPServer) -> int:
    """Control connections vsftpd has logged so far."""
    return ftp.log().count("CONNECT: Client")


@pytest.mark.parametrize("listener", ["local", "proxy"])
async def test_client_rules_from_two_loopback_addresses(openssh, vsftpd, listener):
    """--allow-client 127.0.0.1: a client from 127.0.0.1 is served; one from
    127.0.0.2 gets 421 and a log line, and its FTP server sees no connection."""
    ftp = vsftpd
    if listener == "local":
        config = clients.forwarder_config(openssh, ftp, allowed_clients=("127.0.0.1/32",))
        user = ftp.user
    else:
        config = gateway_config(openssh, (f"{ftp.host}:{ftp.port}",),
                                allowed_clients=("127.0.0.1",))
        user = f"{ftp.user}@{ftp.host}:{ftp.port}"
    got = bytearray()

    def session(source: str) -> str:
        client = ftplib.FTP(timeout=clients.CLIENT_TIMEOUT)
        try:
            welcome = client.connect(*fwd.addresses[0], source_address=(source, 0))
            client.login(user, ftp.password)
            client.retrbinary("RETR one_mib.bin", got.extend)
            client.quit()
            return welcome
        finally:
            client.close()

    with trio.fail_after(CASE_TIMEOUT):
        async with ftptrio.open_forwarder(config) as fwd:
            await trio.to_thread.run_sync(session, "127.0.0.1")
            before = _connects(ftp)
            with pytest.raises(ftplib.error_temp, match="421 ftptrio: your address "
                               "127.0.0.2 is not allowed"):
                await trio.to_thread.run_sync(session, "127.0.0.2")
            with trio.fail_after(10):
                await fwd.wait_idle()
            stats = fwd.stats
    assert bytes(got) == ftp.path("one_mib.bin").read_bytes()
    assert _connects(ftp) == before
    assert stats.sessions == 1 and stats.sessions_refused == {"client": 1}, stats


async def test_read_only_refuses_changes_and_the_server_files_stay(openssh, vsftpd, tmp_path):
    """--read-only through the proxy: downloads and listings work; STOR, APPE, MKD,
    DELE, RNFR and SITE get ftptrio's 550 and never reach vsftpd."""
    ftp = vsftpd
    upload = Path(ftp.root) / ftp.upload_dir
    before = sorted(p.name for p in upload.iterdir())
    name = f"ro-{uuid.uuid4().hex}"
    refusals: list[str] = []
    got = bytearray()
    listing: list[str] = []

    def action(session: ftplib.FTP) -> None:
        session.retrbinary("RETR one_mib.bin", got.extend)
        session.retrlines("LIST", listing.append)
        for attempt in (
                lambda: session.storbinary(f"STOR upload/{name}", _Reader(b"x" * 1000)),
                lambda: session.storbinary(f"APPE upload/{name}", _Reader(b"x")),
                lambda: session.mkd(f"upload/{name}"),
                lambda: session.delete("one_mib.bin"),
                lambda: session.rename("one_mib.bin", f"upload/{name}"),
                lambda: session.sendcmd(f"SITE CHMOD 777 upload/{name}"),
                lambda: _latin1(session).sendcmd(f"MK\xff\xf4D upload/{name}")):
            with pytest.raises(ftplib.error_perm) as refused:
                attempt()
            refusals.append(str(refused.value))
        session.retrbinary("RETR one_mib.bin", got.extend)  # still a working session

    with trio.fail_after(CASE_TIMEOUT):
        config = gateway_config(openssh, (f"{ftp.host}:{ftp.port}",), read_only=True)
        async with ftptrio.open_forwarder(config) as fwd:
            await trio.to_thread.run_sync(
                ftplib_session, fwd.addresses[0], f"{ftp.user}@{ftp.host}:{ftp.port}",
                ftp.password, action)
            with trio.fail_after(10):
                await fwd.wait_idle()
            stats = fwd.stats
    assert bytes(got) == ftp.path("one_mib.bin").read_bytes() * 2
    assert any("one_mib.bin" in line for line in listing)
    assert all(r.startswith("550 ftptrio: read-only access;") for r in refusals), refusals
    assert len(refusals) == 7
    assert sorted(p.name for p in upload.iterdir()) == before
    assert ftp.path("one_mib.bin").exists()
    assert name not in ftp.log()  # vsftpd never saw one of those commands
    assert stats.policy_denied == {"read_only": 7}, stats


async def test_xferlog_lines_and_json_fields(openssh, vsftpd, tmp_path, caplog):
    """--xferlog: one xferlog(5) line per file transfer (not for listings), parsed
    field by field; the transfer's log record names the FTP user and server."""
    ftp = vsftpd
    path = tmp_path / "xferlog"
    name = f"upload/xfer-{uuid.uuid4().hex}.bin"
    payload = servers.random_bytes(54_321, 9)
    size = ftp.path("one_mib.bin").stat().st_size

    def action(session: ftplib.FTP) -> None:
        session.retrbinary("RETR one_mib.bin", lambda data: None)
        session.retrlines("LIST", lambda line: None)
        session.storbinary(f"STOR {name}", _Reader(payload))

    caplog.set_level(logging.INFO, logger="ftptrio")
    started = time.time()
    with trio.fail_after(CASE_TIMEOUT):
        config = gateway_config(openssh, (f"{ftp.host}:{ftp.port}",), xferlog=str(path))
        async with ftptrio.open_forwarder(config) as fwd:
            await trio.to_thread.run_sync(
                ftplib_session, fwd.addresses[0], f"{ftp.user}@{ftp.host}:{ftp.port}",
                ftp.password, action)
            with trio.fail_after(10):
                await fwd.wait_idle()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 2, lines
    for line, (size_, file_, direction) in zip(lines, [(size, "one_mib.bin", "o"),
                                                      (len(payload), name, "i")]):
        words = line.split()
        assert len(words) == 18, line
        logged = time.mktime(time.strptime(" ".join(words[:5]), "%a %b %d %H:%M:%S %Y"))
        assert started - 1 <= logged <= time.time() + 1
        seconds, host, nbytes, filename, kind, flag, way, access, user, service, \
            method, user_id, completion = words[5:]
        assert int(seconds) >= 1 and host == "127.0.0.1" and int(nbytes) == size_
        assert (filename, kind, flag, way) == (file_, "b", "_", direction)
        assert (access, user, service, method, user_id, completion) == (
            "a", "anonymous", "ftp", "0", "*", "c")
    records = [r.transfer for r in caplog.records if hasattr(r, "transfer")]
    assert [(t["user"], t["server"]) for t in records] == [
        ("anonymous", f"{ftp.host}:{ftp.port}")] * 3  # RETR, LIST, STOR


def scrape(address: tuple[str, int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed by prometheus_client's own parser: {(sample name, labels):
    value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics",
                                timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples}


async def test_metrics_during_and_after_transfers(openssh, vsftpd):
    """--metrics: scraped while a session runs and after it ended; the counters are
    the transfers made, the bytes moved, the refusals and the SSH state."""
    ftp = vsftpd
    port = servers.free_port()
    payload = servers.random_bytes(77_777, 5)
    name = f"upload/metrics-{uuid.uuid4().hex}.bin"
    size = ftp.path("one_mib.bin").stat().st_size
    scraped: list[dict] = []

    with trio.fail_after(CASE_TIMEOUT):
        config = gateway_config(openssh, (f"{ftp.host}:{ftp.port}",),
                                metrics_listen=("127.0.0.1", port), read_only=False)
        async with ftptrio.open_forwarder(config) as fwd:
            gateway = fwd.addresses[0]
            token = trio.lowlevel.current_trio_token()

            def action(session: ftplib.FTP) -> None:
                session.retrbinary("RETR one_mib.bin", lambda data: None)
                session.retrbinary("RETR one_mib.bin", lambda data: None)
                # the session still runs: scrape now (the 2 downloads are accounted
                # once their relay and reply are both in: wait for that)
                trio.from_thread.run(_wait_transfers, fwd, 2, trio_token=token)
                scraped.append(scrape(("127.0.0.1", port)))
                session.storbinary(f"STOR {name}", _Reader(payload))

            await trio.to_thread.run_sync(ftplib_session, gateway,
                                          f"{ftp.user}@{ftp.host}:{ftp.port}",
                                          ftp.password, action)
            with pytest.raises(ftplib.error_perm):  # a refused destination
                await trio.to_thread.run_sync(ftplib_session, gateway,
                                              "anonymous@10.9.9.9", "x", lambda s: None)
            with trio.fail_after(10):
                await fwd.wait_idle()
            after = await trio.to_thread.run_sync(scrape, ("127.0.0.1", port))
            stats = fwd.stats
    during = scraped[0]
    label = (("forward", f"proxy {gateway[0]}:{gateway[1]}"),)
    assert during[("ftptrio_sessions_active", ())] == 1
    assert during[("ftptrio_ssh_up", ())] == 1
    assert during[("ftptrio_transfers_total", (("direction", "download"), ("mode", "passive"),
                                               ("result", "ok")))] == 2
    assert during[("ftptrio_transfer_bytes_total", (("direction", "download"),))] == 2 * size
    assert after[("ftptrio_sessions_active", ())] == 0
    assert after[("ftptrio_sessions_total", label)] == 2 == stats.sessions
    assert after[("ftptrio_transfers_total", (("direction", "upload"), ("mode", "passive"),
                                              ("result", "ok")))] == 1
    transfers = sum(value for (sample, _labels), value in after.items()
                    if sample == "ftptrio_transfers_total")
    assert transfers == 3 == stats.transfers
    assert after[("ftptrio_transfer_bytes_total", (("direction", "upload"),))] == len(
        payload) == stats.bytes_to_server
    assert after[("ftptrio_transfer_bytes_total", (("direction", "download"),))] == (
        stats.bytes_to_client)
    assert after[("ftptrio_transfer_duration_seconds_count", ())] == 3
    assert after[("ftptrio_transfer_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert after[("ftptrio_policy_denied_total", (("rule", "destination"),))] == 1
    assert after[("ftptrio_sessions_refused_total", (("reason", "destination"),))] == 1
    assert after[("ftptrio_ssh_reconnects_total", ())] == 0
    info = [labels for (sample, labels) in after if sample == "ftptrio_build_info"]
    assert dict(info[0])["version"] == ftptrio.__version__
    with pytest.raises(OSError):  # stopped with the forwarder
        scrape(("127.0.0.1", port))


async def _wait_transfers(fwd: ftptrio.Forwarder, count: int) -> None:
    with trio.fail_after(10):
        while fwd.stats.transfers < count:
            await trio.sleep(0.01)
