"""ssh's verbosity levels (-v steps, -vv protocol lines with session ids, -vvv
asyncssh), -E log file and -f (background once ready), through the command line
with the in-process SSH and FTP servers."""

from __future__ import annotations

import ftplib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"ready: FTP clients connect to ([\d.]+):(\d+)")


def cli_args(ssh, ftp, *extra: str) -> list[str]:
    return ["-L", f"127.0.0.1:0:127.0.0.1:{ftp.port}", "-p", str(ssh.port), "-l", ssh.username,
            "-i", ssh.client_key_path, "-o", f"UserKnownHostsFile={ssh.known_hosts}",
            *extra, "127.0.0.1"]


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK",)}
    out["PYTHONPATH"] = str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    return out


def list_files(addr: tuple[str, int], ftp) -> list[str]:
    client = ftplib.FTP()
    client.connect(addr[0], addr[1], timeout=10)
    try:
        client.login(ftp.user, ftp.password)
        return client.nlst()
    finally:
        client.quit()


def run_session(args: list[str], ftp) -> str:
    """Start the CLI, list the FTP root once through it, stop it; its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "ftptrio", *args], env=env(), cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = ""
    try:
        for line in iter(proc.stderr.readline, ""):
            err += line
            found = READY.search(line)
            if found:
                list_files((found.group(1), int(found.group(2))), ftp)
                break
        else:
            raise AssertionError(err)
        proc.send_signal(signal.SIGTERM)
        err += proc.stderr.read()
        assert proc.wait(timeout=20) == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err


async def test_v_shows_connection_and_auth_steps_not_protocol_lines(ssh_server, inprocess_ftp):
    err = await trio.to_thread.run_sync(run_session, cli_args(ssh_server, inprocess_ftp, "-v"),
                                        inprocess_ftp)
    fingerprint = ssh_server.host_key.get_fingerprint()
    assert f"server host key: ssh-ed25519 {fingerprint}" in err, err
    key_fingerprint = re.escape(ssh_server.client_key.get_fingerprint())
    assert re.search(rf"offering public key: .*ssh-ed25519 {key_fingerprint} \(file\)", err), err
    assert "authentications that can continue: publickey" in err
    assert "cipher aes128-gcm@openssh.com" in err
    assert re.search(r"session 1: passive data port \d+ via SSH", err), err  # rewriting
    assert "client>" not in err and "server<" not in err
    assert "Traceback" not in err


async def test_vv_adds_protocol_lines_with_session_ids(ssh_server, inprocess_ftp):
    err = await trio.to_thread.run_sync(run_session, cli_args(ssh_server, inprocess_ftp, "-vv"),
                                        inprocess_ftp)
    assert "session 1: client> USER" in err, err
    assert "session 1: client> PASS ****" in err or "session 1: client> PASS" in err
    assert inprocess_ftp.password not in err  # never logged
    assert re.search(r"session 1: server< 227 ", err), err
    assert "[conn=" not in err  # asyncssh's own debugging only from -vvv
    for line in err.splitlines():  # every protocol line names its session
        if "client>" in line or "server<" in line:
            assert "session 1: " in line, line


async def test_vvv_adds_asyncssh_debugging(ssh_server, inprocess_ftp):
    err = await trio.to_thread.run_sync(run_session, cli_args(ssh_server, inprocess_ftp, "-vvv"),
                                        inprocess_ftp)
    assert "[conn=" in err, err
    assert "session 1: client> USER" in err


async def test_log_level_option_sets_verbosity(ssh_server, inprocess_ftp):
    err = await trio.to_thread.run_sync(
        run_session, cli_args(ssh_server, inprocess_ftp, "-o", "LogLevel=DEBUG2"), inprocess_ftp)
    assert "session 1: client> USER" in err, err


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def background_pids():
    """Process ids of forwarders a test sent to the background: stopped at teardown
    whatever the test's outcome (a failed assertion must not leave one running)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_f_goes_to_background_once_ready_and_E_logs_to_a_file(
        ssh_server, inprocess_ftp, tmp_path, background_pids):
    log_file = tmp_path / "ftptrio.log"
    pid_file = tmp_path / "ftptrio.pid"

    def scenario() -> None:
        done = subprocess.run([sys.executable, "-m", "ftptrio",
                               *cli_args(ssh_server, inprocess_ftp, "-f", "-E", str(log_file),
                                         "--pid-file", str(pid_file))],
                              env=env(), cwd=REPO, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)
        text = log_file.read_text() if log_file.exists() else ""
        logged = re.search(r"going to background \(pid (\d+)\)", text)
        if logged:
            background_pids.append(int(logged.group(1)))
        # the command returns once the forwarder is ready; nothing on its stderr (-E)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert logged, text
        pid = int(logged.group(1))
        # --pid-file names the background process (how to stop a -f instance)
        assert pid_file.read_text() == f"{pid}\n"
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600  # as ssh -E
        found = READY.search(text)
        assert found, text
        assert list_files((found.group(1), int(found.group(2))), inprocess_ftp) == []
        os.kill(pid, signal.SIGTERM)
        assert wait_gone(pid), "the background forwarder did not stop on SIGTERM"
        assert "session 1:" in log_file.read_text()
        assert not pid_file.exists()  # removed at exit

    await trio.to_thread.run_sync(scenario)


async def test_f_reports_failure_with_the_exit_code(ssh_server, inprocess_ftp, tmp_path):
    args = cli_args(ssh_server, inprocess_ftp, "-f")
    args[args.index("-l") + 1] = "nobody"  # a user the server refuses
    done = await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "ftptrio", *args, "-o", "BatchMode=yes"], env=env(), cwd=REPO,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30))
    assert done.returncode == 3, done.stderr
    assert "Permission denied" in done.stderr and "Traceback" not in done.stderr
