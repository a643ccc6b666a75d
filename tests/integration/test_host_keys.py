"""Host-key trust (StrictHostKeyChecking yes/accept-new/ask) against the in-process
SSH server, whose host key a test can change (as after a reinstall, or under a
man-in-the-middle): first-use pinning in the file and in memory, HostKeyAlias,
the known_hosts file's safety, and OpenSSH's messages and question."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import threading
import time
import sys
from pathlib import Path

import asyncssh
import pytest
import trio
import trio_asyncio

import ftptrio
from ftptrio._ssh import _auth

try:
    import pexpect
except ImportError:  # pragma: no cover - listed in the test extras
    pexpect = None

try:
    from .integration_helpers import pub, refused, with_ssh
except ImportError:  # run from this directory
    from integration_helpers import pub, refused, with_ssh  # type: ignore

REPO = Path(__file__).resolve().parents[2]


async def wait_closed(conn) -> None:
    """asyncssh's own event: the connection is closed."""
    with trio.fail_after(10):
        await trio_asyncio.aio_as_trio(conn.wait_closed)()
    assert conn.is_closed()


# ------------------------------------------------------------------ accept-new
async def test_accept_new_after_a_last_line_without_newline_pins_the_key(
        ssh_server, forwarder_config, tmp_path):
    """The first-use line goes on a line of its own, so the next connection finds
    it: a changed key is then refused (before: the line was glued onto the last
    one, never matched, and every connection accepted any key)."""
    known = tmp_path / "known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519")
    known.write_text(f"otherhost {pub(other)}")  # no final newline
    config = with_ssh(forwarder_config, known_hosts=str(known),
                      strict_host_key_checking="accept-new")
    async with ftptrio.open_forwarder(config):
        pass
    assert known.read_text() == (f"otherhost {pub(other)}\n"
                                 f"[127.0.0.1]:{ssh_server.port} {pub(ssh_server.host_key)}\n")
    async with ftptrio.open_forwarder(with_ssh(config, strict_host_key_checking="yes")):
        pass  # pinned: strict checking passes
    new_key = ssh_server.change_host_key()
    error = await refused(config)
    message = str(error)
    assert error.changed and error.fingerprint == new_key.get_fingerprint("sha256"), message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
    assert new_key.get_fingerprint("sha256") in message, message
    assert f"{known}:2" in message, message  # the offending line
    assert len(known.read_text().splitlines()) == 2  # nothing added


async def test_accept_new_keeps_the_first_key_for_reconnects_without_a_file(
        ssh_server, forwarder_config):
    """known_hosts /dev/null: nothing can be recorded, yet a reconnect must present
    the key accepted first (before: every reconnect was a first use)."""
    config = with_ssh(forwarder_config, known_hosts=os.devnull,
                      strict_host_key_checking="accept-new")
    first_key = ssh_server.host_key
    async with ftptrio.open_forwarder(config) as fwd:
        tunnel = fwd._tunnel
        assert tunnel is not None and tunnel.connection is not None
        conn = tunnel.connection
        ssh_server.change_host_key(first_key)  # drops the connection, same key
        await wait_closed(conn)
        conn = await tunnel.connect()  # the same key: accepted again
        assert tunnel.connects == 2
        new_key = ssh_server.change_host_key()
        await wait_closed(conn)
        with pytest.raises(ftptrio.HostKeyError) as info:
            await tunnel.connect()
    message = str(info.value)
    assert info.value.changed, message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
    assert new_key.get_fingerprint("sha256") in message, message
    assert first_key.get_fingerprint("sha256") in message, message  # the pinned one
    assert tunnel.connects == 2


def alias_config(path: Path, ssh, known_hosts: Path) -> None:
    path.write_text(f"Host ftpalias\n"
                    f"    HostName 127.0.0.1\n"
                    f"    Port {ssh.port}\n"
                    f"    HostKeyAlias pinned.example\n"
                    f"    UserKnownHostsFile {known_hosts}\n")


async def test_accept_new_refuses_a_changed_key_pinned_under_host_key_alias(
        ssh_server, forwarder_config, tmp_path):
    """known_hosts names the host by its ssh_config HostKeyAlias with another key:
    the host is known, so accept-new must refuse (before: looked up by name, the
    host seemed unknown and was connected to without any check)."""
    known = tmp_path / "known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519")
    known.write_text(f"pinned.example {pub(other)}\n")
    ssh_config = tmp_path / "ssh_config"
    alias_config(ssh_config, ssh_server, known)
    config = with_ssh(forwarder_config, host="ftpalias", port=None, known_hosts=None,
                      config_files=(str(ssh_config),), strict_host_key_checking="accept-new")
    error = await refused(config)
    message = str(error)
    assert error.changed, message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
    assert f"{known}:1" in message, message
    assert known.read_text() == f"pinned.example {pub(other)}\n"
    assert not ssh_server.direct_requests


async def test_accept_new_records_an_unknown_host_under_its_host_key_alias(
        ssh_server, forwarder_config, tmp_path):
    known = tmp_path / "known_hosts"
    ssh_config = tmp_path / "ssh_config"
    alias_config(ssh_config, ssh_server, known)
    config = with_ssh(forwarder_config, host="ftpalias", port=None, known_hosts=None,
                      config_files=(str(ssh_config),), strict_host_key_checking="accept-new")
    async with ftptrio.open_forwarder(config):
        pass
    assert known.read_text() == f"pinned.example {pub(ssh_server.host_key)}\n"
    async with ftptrio.open_forwarder(with_ssh(config, strict_host_key_checking="yes")):
        pass  # asyncssh's own check finds it under the alias


async def test_accept_new_creates_private_directories_and_file(
        ssh_server, forwarder_config, tmp_path):
    fresh = tmp_path / "home" / ".ssh"
    known = fresh / "known_hosts"
    (tmp_path / "home").mkdir()
    old_umask = os.umask(0o022)
    try:
        async with ftptrio.open_forwarder(with_ssh(
                forwarder_config, known_hosts=str(known),
                strict_host_key_checking="accept-new")):
            pass
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert known.read_text() == f"[127.0.0.1]:{ssh_server.port} {pub(ssh_server.host_key)}\n"


async def test_accept_new_does_not_write_through_a_symlink(
        ssh_server, forwarder_config, tmp_path, caplog):
    target = tmp_path / "elsewhere"
    target.write_text("")
    known = tmp_path / "known_hosts"
    known.symlink_to(target)
    caplog.set_level(logging.WARNING)
    async with ftptrio.open_forwarder(with_ssh(
            forwarder_config, known_hosts=str(known), strict_host_key_checking="accept-new")):
        pass  # accepted for this run, as ssh does when it cannot record the key
    assert target.read_text() == ""
    assert known.is_symlink()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "symbolic link: not followed" in text, text
    assert "for this run only" in text, text


# ------------------------------------------------------------------ messages
async def test_unknown_host_key_names_its_fingerprint_and_what_to_do(
        ssh_server, forwarder_config, tmp_path):
    known = tmp_path / "known_hosts"  # does not exist
    error = await refused(with_ssh(forwarder_config, known_hosts=str(known)))
    message = str(error)
    fp = ssh_server.host_key.get_fingerprint("sha256")
    assert not error.changed and error.fingerprint == fp, message
    assert f"the authenticity of host '[127.0.0.1]:{ssh_server.port}' can't be established" \
        in message, message
    assert f"ED25519 key fingerprint is {fp}." in message, message
    assert str(known) in message and "StrictHostKeyChecking=ask" in message, message
    assert not known.exists()


# ------------------------------------------------------------------ ask
def cli_args(ssh, inprocess_ftp, known: Path) -> list[str]:
    return ["-m", "ftptrio", "-L", f"127.0.0.1:0:127.0.0.1:{inprocess_ftp.port}",
            "-p", str(ssh.port), "-i", ssh.client_key_path,
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=ask",
            f"{ssh.username}@127.0.0.1"]


def need_pexpect():
    if pexpect is None:
        if os.environ.get("CI"):
            pytest.fail("pexpect is required (pip install -e .[test])")
        pytest.skip("pexpect not installed")


@pytest.mark.parametrize("answer", ["yes", "fingerprint", "no"])
async def test_ask_on_a_terminal_asks_like_ssh(ssh_server, inprocess_ftp, tmp_path, answer):
    need_pexpect()
    known = tmp_path / "known_hosts"
    fp = ssh_server.host_key.get_fingerprint("sha256")

    def converse() -> tuple[str, int | None]:
        child = pexpect.spawn(sys.executable, cli_args(ssh_server, inprocess_ftp, known),
                              cwd=str(REPO), encoding="utf-8", timeout=20)
        try:
            child.expect_exact(f"ED25519 key fingerprint is {fp}.")
            child.expect_exact("Are you sure you want to continue connecting "
                               "(yes/no/[fingerprint])? ")
            if answer == "fingerprint":
                child.sendline("maybe")
                child.expect_exact("Please type 'yes', 'no' or the fingerprint: ")
            child.sendline({"fingerprint": fp}.get(answer, answer))
            if answer == "no":
                child.expect(pexpect.EOF)
                child.close()
                return child.before, child.exitstatus
            child.expect(r"ready: FTP clients connect to 127\.0\.0\.1:\d+")
            return child.before, None
        finally:
            child.close(force=True)

    output, code = await trio.to_thread.run_sync(converse)
    if answer == "no":
        assert code == 3, output
        assert "host key was not accepted" in output, output
        assert not known.exists()
    else:
        assert f"Permanently added '[127.0.0.1]:{ssh_server.port}' (ED25519)" in output, output
        assert known.read_text() == (f"[127.0.0.1]:{ssh_server.port} "
                                     f"{pub(ssh_server.host_key)}\n")


async def test_ask_without_a_terminal_refuses(ssh_server, inprocess_ftp, tmp_path):
    known = tmp_path / "known_hosts"
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, *cli_args(ssh_server, inprocess_ftp, known)], cwd=REPO,
            stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False,
            start_new_session=True)  # no controlling terminal
    err = result.stderr.decode()
    assert result.returncode == 3, err
    assert "there is no terminal to ask on" in err, err
    assert re.search(r"ED25519 key fingerprint is SHA256:\S+\.", err), err
    assert "Traceback" not in err, err
    assert not known.exists()


async def test_ask_pauses_connect_timeout_while_the_question_waits(
        ssh_server, inprocess_ftp, tmp_path):
    """ConnectTimeout=1 and the answer typed after 2 s: the connection is made, as
    for a password prompt (before: the question bypassed the prompt path that pauses
    the deadline, and the connection failed with "timed out after 1 s")."""
    need_pexpect()
    known = tmp_path / "known_hosts"
    args = cli_args(ssh_server, inprocess_ftp, known)
    args[-1:-1] = ["-o", "ConnectTimeout=1"]

    def converse() -> str:
        child = pexpect.spawn(sys.executable, args, cwd=str(REPO), encoding="utf-8",
                              timeout=20)
        try:
            child.expect_exact("Are you sure you want to continue connecting "
                               "(yes/no/[fingerprint])? ")
            time.sleep(2)
            child.sendline("yes")
            child.expect(r"ready: FTP clients connect to 127\.0\.0\.1:\d+")
            return child.before
        finally:
            child.close(force=True)

    output = await trio.to_thread.run_sync(converse)
    assert "timed out" not in output, output
    assert known.read_text() == f"[127.0.0.1]:{ssh_server.port} {pub(ssh_server.host_key)}\n"


@pytest.fixture
def terminal(monkeypatch):
    """A pseudo-terminal as the prompts' terminal: (master, slave) descriptors."""
    master, slave = os.openpty()
    monkeypatch.setattr(_auth, "TTY", os.ttyname(slave))
    yield master, slave
    os.close(master)
    os.close(slave)


async def read_until(fd: int, text: bytes) -> bytes:
    seen = b""
    with trio.fail_after(15):
        while text not in seen:
            await trio.lowlevel.wait_readable(fd)
            seen += os.read(fd, 4096)
    return seen


async def test_a_cancelled_question_leaves_no_thread_reading_the_terminal(
        ssh_server, forwarder_config, tmp_path, terminal):
    """Start-up cancelled while the host-key question waits: the question ends with it
    (before: a thread abandoned on cancel went on reading the terminal, and took the
    next line typed there)."""
    master, slave = terminal
    config = with_ssh(forwarder_config, known_hosts=str(tmp_path / "known_hosts"),
                      strict_host_key_checking="ask")

    async def start() -> None:
        async with ftptrio.open_forwarder(config):
            pytest.fail("the forwarder started without an answer")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start)
        await read_until(master, b"(yes/no/[fingerprint])? ")
        nursery.cancel_scope.cancel()
    assert not any(t.name == "ftptrio-prompt" for t in threading.enumerate())
    os.write(master, b"yes\n")
    await trio.sleep(0.3)  # a thread still reading would take the line now
    os.set_blocking(slave, False)
    assert os.read(slave, 100) == b"yes\n"  # still there for the terminal's next reader
    assert not (tmp_path / "known_hosts").exists()


async def test_ask_asks_through_the_prompter_and_accepts_the_fingerprint(
        ssh_server, forwarder_config, tmp_path, terminal):
    master, _slave = terminal
    known = tmp_path / "known_hosts"
    config = with_ssh(forwarder_config, known_hosts=str(known), strict_host_key_checking="ask")
    fp = ssh_server.host_key.get_fingerprint("sha256")
    async with trio.open_nursery() as nursery:
        started = trio.Event()

        async def start() -> None:
            async with ftptrio.open_forwarder(config):
                started.set()

        nursery.start_soon(start)
        asked = await read_until(master, b"(yes/no/[fingerprint])? ")
        assert f"ED25519 key fingerprint is {fp}.".encode() in asked, asked
        os.write(master, b"maybe\n")
        await read_until(master, b"Please type 'yes', 'no' or the fingerprint: ")
        os.write(master, fp.encode() + b"\n")
        with trio.fail_after(15):
            await started.wait()
    assert known.read_text() == f"[127.0.0.1]:{ssh_server.port} {pub(ssh_server.host_key)}\n"


async def test_batch_mode_never_asks_about_a_host_key(ssh_server, forwarder_config, tmp_path,
                                                      terminal):
    """BatchMode=yes disables host-key confirmation requests, as in OpenSSH."""
    master, _slave = terminal
    config = with_ssh(forwarder_config, known_hosts=str(tmp_path / "known_hosts"),
                      strict_host_key_checking="ask", batch_mode=True)
    error = await refused(config)
    assert not error.changed
    assert "can't be established and BatchMode forbids asking" in str(error), error
    os.set_blocking(master, False)
    with pytest.raises(BlockingIOError):
        os.read(master, 100)  # nothing was written to the terminal
