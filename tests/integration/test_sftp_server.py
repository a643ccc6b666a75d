"""--sftp-server through ftptrio's forwarder and the in-process SSH server: who logs
in (--sftp-login ftp / own), per-session destinations (USER user@host:port with
--allow-destination), the fallback to FTP forwarding (--sftp-fallback), and an SSH
server that goes away mid-transfer."""

from __future__ import annotations

import dataclasses
import ftplib
import hashlib
import io
import os
from pathlib import Path

import pytest
import trio

import ftptrio
from ftptrio.testing import inprocess_ssh_server, threaded_ftp_server, trio_task_count

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


def _config(ssh, *forwards: ftptrio.ForwardSpec, **changes) -> ftptrio.Config:
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(host=ssh.host, port=ssh.port, username=ssh.username,
                               client_keys=(ssh.client_key_path,),
                               known_hosts=ssh.known_hosts, connect_timeout=10.0),
        forwards=forwards or (ftptrio.ForwardSpec(ftp_host="", sftp=True),), **changes)


def _ftp(port: int, user: str, password: str) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    ftp.login(user, password)
    return ftp


def _download(port: int, user: str, password: str, name: str) -> bytes:
    with _ftp(port, user, password) as ftp:
        sink = io.BytesIO()
        ftp.retrbinary(f"RETR {name}", sink.write)
        ftp.quit()
    return sink.getvalue()


@pytest.fixture
async def sftp_host(aio_loop, tmp_path):
    root = tmp_path / "sftproot"
    root.mkdir()
    async with inprocess_ssh_server(passwords=PASSWORDS, sftp_root=str(root)) as info:
        yield info, root


async def test_ftp_logins_are_ssh_logins_of_their_own(sftp_host):
    ssh, root = sftp_host
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (root / "data.bin").write_bytes(payload)
    async with ftptrio.open_forwarder(_config(ssh)) as fwd:
        assert ssh.connections == []  # --sftp-login ftp: nothing connects at start-up
        port = fwd.ports[0]
        got = await trio.to_thread.run_sync(_download, port, "alice", "alice-pw",
                                            "data.bin")
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()

        def upload() -> None:
            with _ftp(port, "bob", "bob-pw") as ftp:
                ftp.storbinary("STOR up.bin", io.BytesIO(payload))
                ftp.quit()

        await trio.to_thread.run_sync(upload)
        assert (root / "up.bin").read_bytes() == payload
        assert [user for user, _pw in ssh.passwords_tried] == ["alice", "bob"]
        assert ssh.sftp_sessions == ["alice", "bob"]
        assert fwd.stats.transfers == 2
        assert len(ssh.connections) == 2
        with trio.fail_after(10):  # each login's SSH connection closes with its session
            while not all(conn.is_closed() for conn in ssh.connections):
                await trio.sleep(0.02)


async def test_wrong_password_is_530_and_keys_are_never_offered(sftp_host):
    ssh, _root = sftp_host
    async with ftptrio.open_forwarder(_config(ssh)) as fwd:
        port = fwd.ports[0]

        def login() -> str:
            with pytest.raises(ftplib.error_perm) as refused:
                _ftp(port, "alice", "wrong")
            return str(refused.value)

        started = trio.current_time()
        reply = await trio.to_thread.run_sync(login)
        assert reply.startswith("530"), reply
        assert trio.current_time() - started >= 0.9  # the failed-login back-off
        # the demo user's key is ftptrio's own: never tried for an FTP login
        assert ("alice", "wrong") in ssh.passwords_tried
        assert ssh.sftp_sessions == []


async def test_own_login_serves_ftptrios_ssh_user_only(sftp_host):
    ssh, root = sftp_host
    (root / "mine.txt").write_bytes(b"own\n")
    config = _config(ssh, sftp_login="own")
    async with ftptrio.open_forwarder(config) as fwd:
        port = fwd.ports[0]
        got = await trio.to_thread.run_sync(_download, port, ssh.username, "ignored",
                                            "mine.txt")
        assert got == b"own\n"

        def other() -> str:
            with pytest.raises(ftplib.error_perm) as refused:
                _ftp(port, "alice", "alice-pw")
            return str(refused.value)

        assert (await trio.to_thread.run_sync(other)).startswith("530")
        assert ssh.passwords_tried == []  # own: the key login, no FTP password sent


async def test_user_at_host_names_an_allowed_ssh_host_only(sftp_host):
    ssh, root = sftp_host
    (root / "f").write_bytes(b"x")
    config = dataclasses.replace(
        _config(ssh), ssh=dataclasses.replace(_config(ssh).ssh, host="unused.invalid"),
        allowed_destinations=(f"127.0.0.1:{ssh.port}",))
    async with ftptrio.open_forwarder(config) as fwd:
        port = fwd.ports[0]
        got = await trio.to_thread.run_sync(
            _download, port, f"alice@127.0.0.1:{ssh.port}", "alice-pw", "f")
        assert got == b"x"

        def refused(user: str) -> str:
            with pytest.raises(ftplib.error_perm) as exc:
                _ftp(port, user, "alice-pw")
            return str(exc.value)

        for user in ("alice@127.0.0.2:%d" % ssh.port, "alice@127.0.0.1"):
            reply = await trio.to_thread.run_sync(refused, user)
            assert reply.startswith("530") and "not allowed" in reply, reply
        assert [u for u, _ in ssh.passwords_tried] == ["alice"]


async def test_without_sftp_the_session_falls_back_to_ftp_forwarding(aio_loop, tmp_path):
    ftproot = tmp_path / "ftproot"
    ftproot.mkdir()
    (ftproot / "legacy.bin").write_bytes(b"legacy" * 1000)
    with threaded_ftp_server(str(ftproot), user="alice", password="alice-pw") as ftpd:
        async with inprocess_ssh_server(passwords=PASSWORDS) as ssh:  # no sftp subsystem
            config = _config(ssh, sftp_fallback_port=ftpd.port)
            async with ftptrio.open_forwarder(config) as fwd:
                port = fwd.ports[0]

                def session() -> tuple[bytes, str]:
                    with _ftp(port, "alice", "alice-pw") as ftp:
                        sink = io.BytesIO()
                        ftp.retrbinary("RETR legacy.bin", sink.write)
                        ftp.storbinary("STOR back.bin", io.BytesIO(b"up" * 500))
                        pwd = ftp.pwd()
                        ftp.quit()
                    return sink.getvalue(), pwd

                got, pwd = await trio.to_thread.run_sync(session)
                assert got == b"legacy" * 1000 and pwd == "/"
                assert (ftproot / "back.bin").read_bytes() == b"up" * 500
                assert ("localhost", ftpd.port) in ssh.direct_requests

                def wrong() -> str:
                    with pytest.raises(ftplib.error_perm) as exc:
                        _ftp(port, "alice", "nope")
                    return str(exc.value)

                # the SSH login already refuses it: 530 before any FTP server is asked
                assert (await trio.to_thread.run_sync(wrong)).startswith("530")

            # a login naming its SSH host: the FTP server is sent the user name alone
            named = dataclasses.replace(config, allowed_destinations=(
                f"127.0.0.1:{ssh.port}",))
            async with ftptrio.open_forwarder(named) as fwd:
                got = await trio.to_thread.run_sync(
                    _download, fwd.ports[0], f"alice@127.0.0.1:{ssh.port}", "alice-pw",
                    "legacy.bin")
                assert got == b"legacy" * 1000


async def test_without_sftp_or_fallback_the_login_is_refused(aio_loop):
    async with inprocess_ssh_server(passwords=PASSWORDS) as ssh:
        async with ftptrio.open_forwarder(_config(ssh)) as fwd:
            def login() -> str:
                with pytest.raises(ftplib.error_perm) as exc:
                    _ftp(fwd.ports[0], "alice", "alice-pw")
                return str(exc.value)

            reply = await trio.to_thread.run_sync(login)
            assert reply.startswith("530") and "no SFTP" in reply, reply


async def test_ssh_lost_mid_transfer_is_421_and_leaves_nothing(sftp_host):
    ssh, root = sftp_host
    (root / "big.bin").write_bytes(os.urandom(64 * 1024 * 1024))
    async with ftptrio.open_forwarder(_config(ssh)) as fwd:
        port = fwd.ports[0]
        before = trio_task_count()
        started = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def download() -> str:
            with _ftp(port, "alice", "alice-pw") as ftp:
                ftp.voidcmd("TYPE I")
                conn = ftp.transfercmd("RETR big.bin")
                conn.recv(65536)
                trio.from_thread.run_sync(started.set, trio_token=token)
                try:
                    while conn.recv(65536):
                        pass
                finally:
                    conn.close()
                try:
                    return ftp.voidresp()
                except ftplib.Error as exc:
                    return str(exc)

        async with trio.open_nursery() as nursery:
            result: list[str] = []

            async def run() -> None:
                result.append(await trio.to_thread.run_sync(download))

            nursery.start_soon(run)
            await started.wait()
            for conn in ssh.connections:
                conn.abort()
        assert result[0][:3] in ("421", "426", "451"), result
        with trio.fail_after(10):
            while fwd.stats.sessions_active:
                await trio.sleep(0.05)
        assert trio_task_count() <= before


async def test_ftp_password_answers_a_keyboard_interactive_password_prompt(aio_loop,
                                                                           tmp_path):
    """PAM-style servers ask for the password by keyboard-interactive: the FTP
    password answers its one hidden prompt, once (a wrong one is not retried)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "k.txt").write_bytes(b"kbd")
    prompt = ("", "", [("Password: ", False, "alice-pw")])
    async with inprocess_ssh_server("alice", kbdint=prompt, sftp_root=str(root)) as ssh:
        async with ftptrio.open_forwarder(_config(ssh)) as fwd:
            port = fwd.ports[0]
            assert await trio.to_thread.run_sync(_download, port, "alice", "alice-pw",
                                                 "k.txt") == b"kbd"

            def wrong() -> str:
                with pytest.raises(ftplib.error_perm) as exc:
                    _ftp(port, "alice", "bad")
                return str(exc.value)

            assert (await trio.to_thread.run_sync(wrong)).startswith("530")
            assert ssh.kbdint_answers == [["alice-pw"], ["bad"]]


async def test_stou_twice_on_a_protocol_3_server_stores_two_files(sftp_host):
    ssh, root = sftp_host
    async with ftptrio.open_forwarder(_config(ssh)) as fwd:
        port = fwd.ports[0]

        def stou_twice() -> list[str]:
            with _ftp(port, "alice", "alice-pw") as ftp:
                replies = [ftp.storbinary("STOU", io.BytesIO(b"%d" % i)) for i in range(2)]
                ftp.quit()
            return replies

        replies = await trio.to_thread.run_sync(stou_twice)
    assert [r[:4] for r in replies] == ["226 ", "226 "], replies
    assert (root / "ftp.upload").read_bytes() == b"0"
    assert (root / "ftp.upload.1").read_bytes() == b"1"


async def test_fallback_server_that_closes_after_user_is_421(aio_loop):
    async def greets_then_closes(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"220 legacy\r\n")
            await stream.receive_some(100)  # USER alice

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, greets_then_closes, 0)
        ftp_port = listeners[0].socket.getsockname()[1]
        async with inprocess_ssh_server(passwords=PASSWORDS) as ssh:  # no sftp subsystem
            async with ftptrio.open_forwarder(_config(ssh, sftp_fallback_port=ftp_port)) as fwd:

                def login() -> str:
                    ftp = ftplib.FTP()
                    ftp.connect("127.0.0.1", fwd.ports[0], timeout=30)
                    with pytest.raises(ftplib.Error) as exc:
                        ftp.login("alice", "alice-pw")
                    ftp.close()
                    return str(exc.value)

                reply = await trio.to_thread.run_sync(login)
        nursery.cancel_scope.cancel()
    assert reply.startswith("421 "), reply


async def test_ftp_logins_reach_the_ssh_host_through_ftptrios_jump_host(aio_loop, tmp_path):
    """-J with --sftp-login ftp: the jump host is reached with ftptrio's own login
    (its key); the FTP user's password goes to the final SSH host only."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "j.txt").write_bytes(b"through the bastion")
    async with inprocess_ssh_server("gateway") as bastion, \
            inprocess_ssh_server(passwords=PASSWORDS, sftp_root=str(root)) as target:
        known = tmp_path / "known_hosts"
        known.write_text(Path(bastion.known_hosts).read_text()
                         + Path(target.known_hosts).read_text())
        config = ftptrio.Config(
            ssh=ftptrio.SSHOptions(host="127.0.0.1", port=target.port, username="gateway",
                                   client_keys=(bastion.client_key_path,),
                                   known_hosts=str(known), connect_timeout=10.0,
                                   proxy_jump=f"gateway@127.0.0.1:{bastion.port}"),
            forwards=(ftptrio.ForwardSpec(ftp_host="", sftp=True),))
        async with ftptrio.open_forwarder(config) as fwd:
            got = await trio.to_thread.run_sync(_download, fwd.ports[0], "alice", "alice-pw",
                                                "j.txt")
        assert got == b"through the bastion"
        assert bastion.passwords_tried == []
        assert target.passwords_tried == [("alice", "alice-pw")]


async def test_unknown_host_key_tells_the_log_not_the_ftp_client(sftp_host, tmp_path,
                                                                 caplog):
    ssh, _root = sftp_host
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = _config(ssh)
    config = dataclasses.replace(config, ssh=dataclasses.replace(
        config.ssh, known_hosts=str(empty), global_known_hosts="none"))
    async with ftptrio.open_forwarder(config) as fwd:
        def login() -> str:
            with pytest.raises(ftplib.error_temp) as exc:
                _ftp(fwd.ports[0], "alice", "alice-pw")
            return str(exc.value)

        reply = await trio.to_thread.run_sync(login)
    assert reply.startswith("421") and "cannot reach the SSH server" in reply, reply
    assert "key" not in reply.lower() and "SHA256" not in reply, reply
    assert ssh.passwords_tried == []  # no password to a host that is not verified
    assert any("FTP logins cannot ask about host keys" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_failed_logins_from_one_address_lock_it_out_for_a_while(sftp_host, monkeypatch):
    """Reconnecting gives no unlimited tries: after MAX_FAILURES_PER_ADDRESS failed
    logins from one address within FAILURE_WINDOW, its new sessions get 421 (every
    try reaches the SSH server from ftptrio's address)."""
    from ftptrio import _sftpsession

    monkeypatch.setattr(_sftpsession, "MAX_FAILURES_PER_ADDRESS", 2)
    ssh, _root = sftp_host
    async with ftptrio.open_forwarder(_config(ssh)) as fwd:
        port = fwd.ports[0]

        def attempt(password: str) -> str:
            try:
                with _ftp(port, "alice", password) as ftp:
                    ftp.quit()
                return "230"
            except ftplib.Error as exc:
                return str(exc)

        assert (await trio.to_thread.run_sync(attempt, "bad1")).startswith("530")
        assert (await trio.to_thread.run_sync(attempt, "alice-pw")) == "230"  # resets
        for bad in ("bad2", "bad3"):
            assert (await trio.to_thread.run_sync(attempt, bad)).startswith("530")
        reply = await trio.to_thread.run_sync(attempt, "alice-pw")
        assert reply.startswith("421") and "too many failed logins" in reply, reply
        assert [pw for _u, pw in ssh.passwords_tried] == ["bad1", "alice-pw", "bad2",
                                                          "bad3"]
        assert fwd.stats.sessions_refused == {"login_failures": 1}
