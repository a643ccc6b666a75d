"""OpenSSH's sshd and an encrypted client key: the passphrase asked on the
terminal (-i), not asked when ssh-agent holds the key, asked through SSH_ASKPASS
without a terminal, and a clear message when it cannot be asked."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
import trio

from ftptrio.testing.servers import find_tool, start_openssh

REPO = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse"


def need(tool: str) -> str:
    path = find_tool(tool) or shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI")
        pytest.skip(f"{tool} not installed")
    return path


@pytest.fixture
def sshd(tmp_path):
    need("sshd")
    keygen = need("ssh-keygen")
    d = tmp_path / "sshd"
    d.mkdir()
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "encrypted",
                    "-f", str(d / "id_ed25519")], check=True, stdin=subprocess.DEVNULL,
                   timeout=30)
    server = start_openssh(d)
    try:
        yield server
    finally:
        server.stop()


def args(server, *extra: str) -> list[str]:
    return ["-L", "127.0.0.1:0:127.0.0.1:21", "-p", str(server.port),
            "-l", server.username, "-o", f"UserKnownHostsFile={server.known_hosts}",
            *extra, "127.0.0.1"]


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if k not in ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY", "SSH_AUTH_SOCK")}
    out["PYTHONPATH"] = str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    out.update(extra)
    return out


def run_until_ready(argv: list[str], **extra: str) -> tuple[bool, int, str]:
    """No terminal: new session, stdin from /dev/null. (ready?, exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "ftptrio", *argv], env=env(**extra),
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stderr is not None
    err, ready = b"", False
    for line in iter(proc.stderr.readline, b""):
        err += line
        if b"ready: FTP clients connect to" in line:
            ready = True
            proc.send_signal(signal.SIGTERM)
    err += proc.stderr.read()
    return ready, proc.wait(timeout=30), err.decode(errors="replace")


class Agent:
    def __init__(self, tmp_path: Path) -> None:
        self.sock = str(tmp_path / "agent.sock")
        self.proc = subprocess.Popen([need("ssh-agent"), "-D", "-a", self.sock],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def add(self, key: str, tmp_path: Path) -> None:
        askpass = tmp_path / "add-askpass"
        askpass.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
        askpass.chmod(0o755)
        deadline = time.monotonic() + 10  # poll: the socket appears once the agent listens
        while not os.path.exists(self.sock):
            assert time.monotonic() < deadline, "ssh-agent did not start"
            assert self.proc.poll() is None, "ssh-agent exited"
            time.sleep(0.01)
        subprocess.run([need("ssh-add"), key], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, start_new_session=True,
                       env={**os.environ, "SSH_AUTH_SOCK": self.sock,
                            "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"})

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def test_passphrase_asked_on_the_terminal(sshd):
    child = pexpect.spawn(sys.executable, ["-m", "ftptrio", *args(sshd, "-i", sshd.client_key)],
                          env=env(), cwd=str(REPO), timeout=30, echo=False)
    try:
        def dialogue() -> None:
            child.expect_exact(f"Enter passphrase for key '{sshd.client_key}': ")
            child.sendline("not it")
            child.expect_exact(f"Enter passphrase for key '{sshd.client_key}': ")
            child.sendline(PASSPHRASE)
            child.expect("ready: FTP clients connect to")
        await trio.to_thread.run_sync(dialogue)
        assert b"Traceback" not in (child.before or b"")
    finally:
        child.kill(signal.SIGTERM)
        await trio.to_thread.run_sync(lambda: child.expect(pexpect.EOF))
        child.close()


async def test_key_in_agent_is_used_without_asking(sshd, tmp_path):
    agent = Agent(tmp_path)
    try:
        await trio.to_thread.run_sync(agent.add, sshd.client_key, tmp_path)
        ready, code, err = await trio.to_thread.run_sync(
            lambda: run_until_ready(args(sshd, "-i", sshd.client_key, "-v"),
                                    SSH_AUTH_SOCK=agent.sock))
    finally:
        agent.stop()
    assert ready and code == 0, err
    assert "Traceback" not in err and "Passphrase" not in err
    assert "the agent holds this key" in err, err


async def test_passphrase_through_askpass(sshd, tmp_path):
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho \"$1\" > '{tmp_path}/prompt'\necho '{PASSPHRASE}'\n")
    askpass.chmod(0o755)
    ready, code, err = await trio.to_thread.run_sync(
        lambda: run_until_ready(args(sshd, "-i", sshd.client_key), SSH_ASKPASS=str(askpass),
                                SSH_ASKPASS_REQUIRE="force"))
    assert ready and code == 0, err
    assert (tmp_path / "prompt").read_text().strip() == \
        f"Enter passphrase for key '{sshd.client_key}':"


async def test_encrypted_key_without_agent_or_terminal_says_why(sshd, tmp_path):
    ready, code, err = await trio.to_thread.run_sync(
        lambda: run_until_ready(args(sshd, "-i", sshd.client_key)))
    assert not ready and code == 3, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "Permission denied (publickey)" in err
    assert f"identity file {sshd.client_key}: encrypted" in err and "no terminal" in err


async def test_encrypted_default_key_says_why(sshd, tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    for name in ("id_ed25519", "id_ed25519.pub"):
        shutil.copy(Path(sshd.client_key).parent / name, home / ".ssh" / name)
    ready, code, err = await trio.to_thread.run_sync(
        lambda: run_until_ready(args(sshd), HOME=str(home)))
    assert not ready and code == 3, err
    assert f"identity file {home}/.ssh/id_ed25519: encrypted" in err, err


async def test_ctrl_c_at_the_passphrase_prompt_exits_and_restores_echo(sshd):
    """As ssh: Ctrl-C while the passphrase is asked ends ftptrio at once, and the
    terminal echoes again (the prompt thread used to keep reading the terminal, so
    ftptrio waited for Enter with echo off)."""
    child = pexpect.spawn(sys.executable, ["-m", "ftptrio", *args(sshd, "-i", sshd.client_key)],
                          env=env(), cwd=str(REPO), timeout=30, echo=True)
    try:
        def dialogue() -> tuple[bool, float, bool]:
            child.expect_exact(f"Enter passphrase for key '{sshd.client_key}': ")
            echo_while_asking = child.getecho()
            started = time.monotonic()
            child.sendintr()
            child.expect(pexpect.EOF, timeout=10)
            return echo_while_asking, time.monotonic() - started, child.getecho()
        echo_while_asking, seconds, echo_after = await trio.to_thread.run_sync(dialogue)
        assert not echo_while_asking
        assert seconds < 10
        assert echo_after, "terminal echo not restored after Ctrl-C"
        assert b"Traceback" not in (child.before or b"")
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
