"""Logins as with ssh: password and keyboard-interactive accounts (in-process
asyncssh servers offering only that method), prompts on the terminal (pexpect),
SSH_ASKPASS without a terminal, BatchMode, and the failure messages."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import trio

from ftptrio.testing import inprocess_ssh_server

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(rb"ready: FTP clients connect to ([\d.]+):(\d+)")
SECRET = "s3cret pass"


def base_args(ssh) -> list[str]:
    return ["-L", "127.0.0.1:0:127.0.0.1:21", "-p", str(ssh.port), "-l", ssh.username,
            "-o", f"UserKnownHostsFile={ssh.known_hosts}", "127.0.0.1"]


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if k not in ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY", "WAYLAND_DISPLAY",
                        "SSH_AUTH_SOCK")}
    out["PYTHONPATH"] = str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    out.update(extra)
    return out


def spawn(args: list[str], **extra: str) -> pexpect.spawn:
    """The CLI on a pseudo-terminal of its own (its /dev/tty)."""
    return pexpect.spawn(sys.executable, ["-m", "ftptrio", *args], env=env(**extra),
                         cwd=str(REPO), timeout=20, echo=False)


def stop(child: pexpect.spawn) -> None:
    if child.isalive():
        child.kill(signal.SIGTERM)
        child.expect(pexpect.EOF)
        child.wait()


async def run_detached(args: list[str], **extra: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI with no terminal (new session, stdin from /dev/null); expected to exit."""
    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "ftptrio", *args], env=env(**extra),
                              cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                              start_new_session=True, timeout=30)
    return await trio.to_thread.run_sync(run)


class Detached:
    """The CLI with no terminal, running until ready (then stopped by the test)."""

    def __init__(self, args: list[str], **extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ftptrio", *args],
                                     env=env(**extra), cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.err = b""

    def wait_ready(self) -> bool:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self.err += line
            if READY.search(line):
                return True
        return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stderr is not None
        self.err += self.proc.stderr.read()
        return self.proc.wait(timeout=20)


def askpass_script(tmp_path: Path, answer: str, name: str = "askpass") -> Path:
    """An SSH_ASKPASS program: records its prompt, prints ``answer``."""
    script = tmp_path / name
    log = tmp_path / f"{name}.prompts"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{log}'\n"
                      f"printf '%s\\n' '{answer}'\n")
    script.chmod(0o755)
    return script


def prompts_seen(script: Path) -> list[str]:
    log = script.parent / f"{script.name}.prompts"
    return log.read_text().splitlines() if log.exists() else []


# ------------------------------------------------------------------ password
async def test_password_login_on_the_terminal_three_tries(aio_loop):
    async with inprocess_ssh_server(password=SECRET) as ssh:
        child = spawn(base_args(ssh))
        try:
            def dialogue() -> None:
                child.expect_exact(f"{ssh.username}@127.0.0.1's password: ")
                child.sendline("wrong")
                child.expect_exact("Permission denied, please try again.")
                child.expect_exact(f"{ssh.username}@127.0.0.1's password: ")
                child.sendline(SECRET)
                child.expect(READY)
            await trio.to_thread.run_sync(dialogue)
            # the password is never echoed nor logged
            assert SECRET.encode() not in (child.before or b"")
        finally:
            await trio.to_thread.run_sync(stop, child)


async def test_password_three_wrong_tries_exit_3(aio_loop):
    async with inprocess_ssh_server(password=SECRET) as ssh:
        child = spawn(base_args(ssh))
        try:
            def dialogue() -> bytes:
                for _ in range(3):
                    child.expect_exact("password: ")
                    child.sendline("wrong")
                child.expect(pexpect.EOF)
                child.wait()
                return child.before or b""
            out = await trio.to_thread.run_sync(dialogue)
        finally:
            await trio.to_thread.run_sync(stop, child)
        assert child.exitstatus == 3, out
        assert b"Permission denied (password)" in out, out
        assert b"Traceback" not in out


async def test_password_through_askpass_without_terminal(aio_loop, tmp_path):
    script = askpass_script(tmp_path, SECRET)
    async with inprocess_ssh_server(password=SECRET) as ssh:
        cli = Detached(base_args(ssh), SSH_ASKPASS=str(script), SSH_ASKPASS_REQUIRE="force")
        try:
            assert await trio.to_thread.run_sync(cli.wait_ready), cli.err
        finally:
            assert await trio.to_thread.run_sync(cli.stop) == 0, cli.err
    assert prompts_seen(script) == [f"{ssh.username}@127.0.0.1's password: "]


@pytest.mark.parametrize("askpass_env", [
    {},  # no SSH_ASKPASS at all
    {"SSH_ASKPASS_REQUIRE": "never"},  # askpass forbidden
    {"SSH_ASKPASS_REQUIRE": "prefer"},  # preferred, but no DISPLAY: not allowed
])
async def test_no_terminal_and_no_usable_askpass_fails_clearly(aio_loop, tmp_path, askpass_env):
    script = askpass_script(tmp_path, SECRET)
    extra = {**askpass_env, **({"SSH_ASKPASS": str(script)} if askpass_env else {})}
    async with inprocess_ssh_server(password=SECRET) as ssh:
        done = await run_detached(base_args(ssh), **extra)
    assert done.returncode == 3, done.stderr
    err = done.stderr.decode()
    assert "Permission denied (password)" in err and "no terminal" in err, err
    assert "Traceback" not in err
    assert prompts_seen(script) == []


async def test_askpass_with_display_is_used_without_terminal(aio_loop, tmp_path):
    script = askpass_script(tmp_path, SECRET)
    async with inprocess_ssh_server(password=SECRET) as ssh:
        cli = Detached(base_args(ssh), SSH_ASKPASS=str(script), DISPLAY=":99")
        try:
            assert await trio.to_thread.run_sync(cli.wait_ready), cli.err
        finally:
            await trio.to_thread.run_sync(cli.stop)
    assert len(prompts_seen(script)) == 1


async def test_batch_mode_never_prompts(aio_loop, tmp_path):
    script = askpass_script(tmp_path, SECRET)
    async with inprocess_ssh_server(password=SECRET) as ssh:
        child = spawn([*base_args(ssh), "-o", "BatchMode=yes"],
                      SSH_ASKPASS=str(script), SSH_ASKPASS_REQUIRE="force")
        try:
            def wait() -> bytes:
                child.expect(pexpect.EOF)
                child.wait()
                return child.before or b""
            out = await trio.to_thread.run_sync(wait)
        finally:
            await trio.to_thread.run_sync(stop, child)
    assert child.exitstatus == 3, out
    assert b"password:" not in out and b"BatchMode" in out, out
    assert prompts_seen(script) == []


async def test_password_authentication_no_is_honoured(aio_loop, tmp_path):
    script = askpass_script(tmp_path, SECRET)
    async with inprocess_ssh_server(password=SECRET) as ssh:
        done = await run_detached([*base_args(ssh), "-o", "PasswordAuthentication=no"],
                                  SSH_ASKPASS=str(script), SSH_ASKPASS_REQUIRE="force")
    assert done.returncode == 3, done.stderr
    assert prompts_seen(script) == []


# ------------------------------------------------------------------ keyboard-interactive
TWO_FACTOR = ("Two-factor login", "Enter your password, then the code from your app.",
              [("Password: ", False, SECRET), ("Verification code: ", True, "123456")])


async def test_keyboard_interactive_shows_instructions_and_prompts(aio_loop):
    async with inprocess_ssh_server(kbdint=TWO_FACTOR) as ssh:
        child = spawn(base_args(ssh))
        try:
            def dialogue() -> None:
                child.expect_exact("Two-factor login")
                child.expect_exact("Enter your password, then the code from your app.")
                child.expect_exact(f"({ssh.username}@127.0.0.1) Password: ")
                child.sendline(SECRET)
                child.expect_exact(f"({ssh.username}@127.0.0.1) Verification code: ")
                child.sendline("123456")
                child.expect(READY)
            await trio.to_thread.run_sync(dialogue)
        finally:
            await trio.to_thread.run_sync(stop, child)
        assert ssh.kbdint_answers == [[SECRET, "123456"]]


async def test_keyboard_interactive_through_askpass(aio_loop, tmp_path):
    script = askpass_script(tmp_path, SECRET)
    single = ("", "", [("Password: ", False, SECRET)])
    async with inprocess_ssh_server(kbdint=single) as ssh:
        cli = Detached(base_args(ssh), SSH_ASKPASS=str(script), SSH_ASKPASS_REQUIRE="force")
        try:
            assert await trio.to_thread.run_sync(cli.wait_ready), cli.err
        finally:
            await trio.to_thread.run_sync(cli.stop)
    assert prompts_seen(script) == [f"({ssh.username}@127.0.0.1) Password: "]


async def test_kbd_interactive_authentication_no_is_honoured(aio_loop, tmp_path):
    script = askpass_script(tmp_path, SECRET)
    single = ("", "", [("Password: ", False, SECRET)])
    async with inprocess_ssh_server(kbdint=single) as ssh:
        done = await run_detached(
            [*base_args(ssh), "-o", "KbdInteractiveAuthentication=no"],
            SSH_ASKPASS=str(script), SSH_ASKPASS_REQUIRE="force")
    assert done.returncode == 3, done.stderr
    assert b"Permission denied" in done.stderr
    assert prompts_seen(script) == []


# ------------------------------------------------------------------ precedence
def test_ssh_config_values_win_over_builtin_defaults(tmp_path):
    """-o > ssh_config > built-in defaults, for ServerAliveInterval/CountMax,
    ConnectTimeout and the authentication switches."""
    from ftptrio import SSHOptions
    from ftptrio._ssh._auth import Settings

    config = tmp_path / "ssh_config"
    config.write_text("Host gw\n    ServerAliveInterval 7\n    ServerAliveCountMax 5\n"
                      "    ConnectTimeout 4\n    PasswordAuthentication no\n"
                      "    IdentitiesOnly yes\n")

    def settings(**options: object) -> Settings:
        opts = SSHOptions(host="gw", config_files=(str(config),), **options)  # type: ignore[arg-type]
        return Settings(opts, {"config": [str(config)]})

    from_config = settings()
    assert (from_config.keepalive_interval, from_config.keepalive_count_max,
            from_config.connect_timeout) == (7, 5, 4)
    assert from_config.password is False and from_config.identities_only is True
    given = settings(keepalive_interval=2.0, keepalive_count_max=1, connect_timeout=9.0,
                     password_auth=True)
    assert (given.keepalive_interval, given.keepalive_count_max, given.connect_timeout,
            given.password) == (2.0, 1, 9.0, True)
    other = tmp_path / "empty_config"
    other.write_text("")
    defaults = Settings(SSHOptions(host="gw", config_files=(str(other),)),
                        {"config": [str(other)]})
    assert (defaults.keepalive_interval, defaults.keepalive_count_max,
            defaults.connect_timeout) == (15, 3, 15)
    assert defaults.password is True and defaults.kbdint is True
