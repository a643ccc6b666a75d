"""What a user touches: the embedding example, an SSH connection of one's own,
~/.ssh/config aliases, -F, -J, --stats, --log-format json and the host-key
error, each through real transfers with the in-process SSH and FTP servers."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest
import trio
import trio_asyncio

import ftptrio
from ftptrio.testing.servers import sha256_bytes

try:
    from .integration_helpers import download, write_random
except ImportError:
    from integration_helpers import download, write_random  # type: ignore

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(rb"ready: FTP clients connect to ([\d.]+):(\d+)")
PAYLOAD_SIZE = 512 * 1024 + 7


@pytest.fixture
def payload(inprocess_ftp) -> bytes:
    return write_random(os.path.join(inprocess_ftp.root, "file.bin"), PAYLOAD_SIZE)


# ------------------------------------------------------------------ CLI helpers
class CLI:
    """``python -m ftptrio ...`` as a subprocess; stderr collected in the background."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.chunks: list[bytes] = []
        self.eof = trio.Event()

    @property
    def stderr(self) -> bytes:
        return b"".join(self.chunks)

    async def drain(self) -> None:
        while chunk := await self.proc.stderr.receive_some(65536):
            self.chunks.append(chunk)
        self.eof.set()

    async def ready(self) -> tuple[str, int]:
        with trio.fail_after(20):
            while not (found := READY.search(self.stderr)):
                assert self.proc.poll() is None, (self.proc.returncode, self.stderr)
                await trio.sleep(0.02)
        return found.group(1).decode(), int(found.group(2))

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit code (and the rest of stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            code = await self.proc.wait()
            await self.eof.wait()  # all of stderr read
        return code


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


async def run_cli(nursery: trio.Nursery, args: list[str], env: dict[str, str] | None = None,
                  ) -> CLI:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "ftptrio", *args], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or cli_env(), cwd=REPO)
    cli = CLI(proc)
    nursery.start_soon(cli.drain)
    return cli


def forward_arg(inprocess_ftp) -> list[str]:
    return ["-L", f"127.0.0.1:0:127.0.0.1:{inprocess_ftp.port}"]


def direct_args(ssh) -> list[str]:
    return ["-p", str(ssh.port), "-i", ssh.client_key_path,
            "-o", f"UserKnownHostsFile={ssh.known_hosts}"]


async def transfer_via(addr: tuple[str, int], inprocess_ftp, payload: bytes) -> None:
    got = await trio.to_thread.run_sync(download, addr, inprocess_ftp, "file.bin")
    assert sha256_bytes(got) == sha256_bytes(payload)


async def cli_transfer_and_stop(nursery, args, inprocess_ftp, payload, env=None, transfers=1
                                ) -> CLI:
    cli = await run_cli(nursery, args, env)
    try:
        addr = await cli.ready()
        for _ in range(transfers):
            await transfer_via(addr, inprocess_ftp, payload)
        assert await cli.stop() == 0, cli.stderr
    finally:
        if cli.proc.returncode is None:
            cli.proc.kill()
    assert b"Traceback" not in cli.stderr, cli.stderr.decode()
    return cli


def write_ssh_config(path: Path, ssh) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"Host ftpalias\n"
                    f"    HostName 127.0.0.1\n"
                    f"    Port {ssh.port}\n"
                    f"    User {ssh.username}\n"
                    f"    IdentityFile {ssh.client_key_path}\n"
                    f"    UserKnownHostsFile {ssh.known_hosts}\n")


# ------------------------------------------------------------------- the example
@pytest.mark.parametrize("style", [[], ["--nursery"]], ids=["open_forwarder", "nursery"])
async def test_embed_example_runs_standalone(style):
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "examples/embed.py", "--demo", *style], cwd=REPO,
            capture_stdout=True, capture_stderr=True, check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, (out, result.stderr.decode())
    assert re.search(r"^forwarder listening on 127\.0\.0\.1:\d+$", out, re.M), out
    assert re.search(r"^sha256 [0-9a-f]{64}  hello\.bin \(1048576 bytes\)$", out, re.M), out
    assert "1 transfer(s) {'passive': 1}" in out, out
    assert b"Traceback" not in result.stderr


# ------------------------------------------------------ an SSH connection of one's own
async def test_existing_ssh_connection_is_used_and_left_open(ssh_server, inprocess_ftp, payload):
    conn = await trio_asyncio.aio_as_trio(asyncssh.connect)(
        ssh_server.host, ssh_server.port, username=ssh_server.username,
        client_keys=[ssh_server.client_key_path], known_hosts=ssh_server.known_hosts)
    try:
        config = ftptrio.Config(
            ssh=ftptrio.SSHOptions(host=ssh_server.host),
            forwards=(ftptrio.ForwardSpec(ftp_host=inprocess_ftp.host,
                                          ftp_port=inprocess_ftp.port),),
            ssh_connection=conn)
        async with ftptrio.open_forwarder(config) as fwd:
            await transfer_via(fwd.addresses[0], inprocess_ftp, payload)
            with trio.fail_after(10):
                await fwd.wait_idle()
            assert fwd.stats.transfers == 1
        assert len(ssh_server.connections) == 1  # ftptrio opened no connection of its own
        assert (inprocess_ftp.host, inprocess_ftp.port) in ssh_server.direct_requests
        assert not conn.is_closed()
        # and the connection still works for its owner
        reader, writer = await trio_asyncio.aio_as_trio(conn.open_connection)(
            inprocess_ftp.host, inprocess_ftp.port)
        banner = await trio_asyncio.aio_as_trio(reader.readline)()
        assert banner.startswith(b"220"), banner
        writer.close()
    finally:
        conn.close()
        await trio_asyncio.aio_as_trio(conn.wait_closed)()


# ------------------------------------------------------------------ ssh_config
async def test_ssh_config_host_alias_in_home(ssh_server, inprocess_ftp, payload, tmp_path, nursery):
    home = tmp_path / "home"
    write_ssh_config(home / ".ssh" / "config", ssh_server)
    await cli_transfer_and_stop(nursery, [*forward_arg(inprocess_ftp), "ftpalias"], inprocess_ftp,
                                payload, env=cli_env(HOME=str(home)))
    assert ("127.0.0.1", inprocess_ftp.port) in ssh_server.direct_requests


async def test_ssh_config_file_given_with_F(ssh_server, inprocess_ftp, payload, tmp_path, nursery):
    home = tmp_path / "emptyhome"
    home.mkdir()
    config = tmp_path / "elsewhere" / "ssh_config"
    write_ssh_config(config, ssh_server)
    await cli_transfer_and_stop(nursery, [*forward_arg(inprocess_ftp), "-F", str(config),
                                          "ftpalias"], inprocess_ftp, payload,
                                env=cli_env(HOME=str(home)))
    assert ("127.0.0.1", inprocess_ftp.port) in ssh_server.direct_requests


# ------------------------------------------------------------------ -J
async def test_jump_host(ssh_server, inprocess_ftp, payload, nursery):
    ssh = ssh_server
    await cli_transfer_and_stop(
        nursery, [*forward_arg(inprocess_ftp), *direct_args(ssh),
                  "-J", f"{ssh.username}@127.0.0.1:{ssh.port}", f"{ssh.username}@127.0.0.1"],
        inprocess_ftp, payload)
    assert ("127.0.0.1", ssh.port) in ssh.direct_requests  # the hop through the jump host
    assert ("127.0.0.1", inprocess_ftp.port) in ssh.direct_requests
    assert len(ssh.connections) == 2  # jump host, then the target through it


# ------------------------------------------------------------------ --stats
async def test_stats_printed_at_exit(ssh_server, inprocess_ftp, payload, nursery):
    cli = await cli_transfer_and_stop(
        nursery, [*forward_arg(inprocess_ftp), *direct_args(ssh_server), "--stats",
                  f"{ssh_server.username}@127.0.0.1"], inprocess_ftp, payload, transfers=2)
    lines = [line for line in cli.stderr.decode().splitlines()
             if line.startswith("ftptrio stats:")]
    assert len(lines) == 1, cli.stderr.decode()
    assert "2 sessions, 2 transfers (passive 2), 0 refused, 0 transfer errors" in lines[0], \
        lines[0]
    assert f"{2 * PAYLOAD_SIZE:,} bytes to clients" in lines[0], lines[0]


# ------------------------------------------------------------------ --log-format json
async def test_json_log_format(ssh_server, inprocess_ftp, payload, nursery):
    cli = await cli_transfer_and_stop(
        nursery, [*forward_arg(inprocess_ftp), *direct_args(ssh_server), "--log-format", "json",
                  f"{ssh_server.username}@127.0.0.1"], inprocess_ftp, payload)
    entries = []
    for line in cli.stderr.decode().splitlines():
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    assert any("ready: FTP clients connect to" in e["message"] for e in entries), entries
    transfers = [e["transfer"] for e in entries if "transfer" in e]
    assert len(transfers) == 1, entries
    t = transfers[0]
    assert {"client", "mode", "direction", "bytes", "seconds", "result"} <= t.keys(), t
    assert t["client"] == "127.0.0.1"
    assert (t["mode"], t["direction"], t["bytes"], t["result"]) == (
        "passive", "download", PAYLOAD_SIZE, "ok")
    assert isinstance(t["seconds"], (int, float)) and t["seconds"] >= 0


async def test_stats_with_json_logs_is_one_more_json_line(ssh_server, inprocess_ftp, payload,
                                                          nursery):
    """--stats --log-format json: the summary is a JSON line too (it was plain text)."""
    cli = await cli_transfer_and_stop(
        nursery, [*forward_arg(inprocess_ftp), *direct_args(ssh_server), "--stats",
                  "--log-format", "json", f"{ssh_server.username}@127.0.0.1"],
        inprocess_ftp, payload)
    entries = [json.loads(line) for line in cli.stderr.decode().splitlines()]
    stats = [e["stats"] for e in entries if "stats" in e]
    assert len(stats) == 1, entries
    assert stats[0]["sessions"] == 1 and stats[0]["transfers"] == 1, stats
    assert stats[0]["bytes_to_client"] == PAYLOAD_SIZE, stats


# ------------------------------------------------------------------ host key
async def test_wrong_host_key_exits_3_with_openssh_warning(ssh_server, inprocess_ftp, tmp_path):
    other = asyncssh.generate_private_key("ssh-ed25519")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{ssh_server.port} "
                           f"{other.export_public_key().decode().strip()}\n")
    args = [sys.executable, "-m", "ftptrio", *forward_arg(inprocess_ftp),
            "-p", str(ssh_server.port), "-i", ssh_server.client_key_path,
            "-o", f"UserKnownHostsFile={known_hosts}", f"{ssh_server.username}@127.0.0.1"]
    with trio.fail_after(30):
        result = await trio.run_process(args, cwd=REPO, capture_stdout=True,
                                        capture_stderr=True, check=False)
    err = result.stderr.decode()
    assert result.returncode == 3, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    # one summary line naming the offending known_hosts line, then OpenSSH's warning
    assert lines[0].startswith(f"ftptrio: host key of 127.0.0.1:{ssh_server.port} "), err
    assert f"{known_hosts}:1" in lines[0], err
    assert "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @" in lines, err
    assert ssh_server.host_key.get_fingerprint("sha256") + "." in lines, err
    assert f"Offending key for '[127.0.0.1]:{ssh_server.port}' in {known_hosts}:1" in lines, err
    assert lines[-1] == "Host key verification failed.", err
    assert "accept-new" not in err and "StrictHostKeyChecking" not in err, err  # no way around
    assert ("127.0.0.1", inprocess_ftp.port) not in ssh_server.direct_requests


async def test_port_in_use_exits_4_with_one_clear_line(ssh_server, inprocess_ftp):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [sys.executable, "-m", "ftptrio", "-L", f"127.0.0.1:{port}:127.0.0.1:"
                f"{inprocess_ftp.port}", *direct_args(ssh_server),
                f"{ssh_server.username}@127.0.0.1"]
        with trio.fail_after(30):
            result = await trio.run_process(args, cwd=REPO, capture_stdout=True,
                                            capture_stderr=True, check=False)
    err = result.stderr.decode()
    assert result.returncode == 4, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == f"ftptrio: cannot listen on 127.0.0.1:{port}: Address already in use"


async def test_port_in_use_is_a_bind_error_for_embedders(ssh_server, inprocess_ftp,
                                                         forwarder_config, nursery):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        forward = ftptrio.ForwardSpec("127.0.0.1", inprocess_ftp.port, "127.0.0.1", port)
        config = dataclasses.replace(forwarder_config, forwards=(forward,))
        with pytest.raises(ftptrio.BindError) as info:
            await nursery.start(ftptrio.serve, config)
    assert isinstance(info.value, OSError) and info.value.errno == errno.EADDRINUSE


def write_wrong_known_hosts(path: Path, ssh) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    path.write_text(f"[127.0.0.1]:{ssh.port} {other.export_public_key().decode().strip()}\n")


async def run_alias_with_wrong_key(ssh_server, inprocess_ftp, tmp_path, *extra: str):
    """ftpalias from -F, whose UserKnownHostsFile names another key for the host."""
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "ssh_config"
    write_ssh_config(config, ssh_server)
    known_hosts = Path(ssh_server.known_hosts)
    write_wrong_known_hosts(known_hosts, ssh_server)  # the file ssh_config points at
    args = [sys.executable, "-m", "ftptrio", *forward_arg(inprocess_ftp), *extra,
            "-F", str(config), "ftpalias"]
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(args, cwd=REPO, stderr=subprocess.PIPE,
                                                env=cli_env(HOME=str(home)))
        cli = CLI(proc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cli.drain)
            with trio.move_on_after(10):  # a wrongly accepted key keeps it running
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return proc.returncode, cli.stderr.decode(), home


async def test_wrong_host_key_from_ssh_config_known_hosts_names_that_file(
        ssh_server, inprocess_ftp, tmp_path):
    code, err, _home = await run_alias_with_wrong_key(ssh_server, inprocess_ftp, tmp_path)
    assert code == 3, err
    assert "host key" in err, err
    # the hint must name the file that was actually checked (UserKnownHostsFile
    # from ssh_config), not ~/.ssh/known_hosts
    assert ssh_server.known_hosts in err, err


async def test_accept_new_refuses_changed_key_from_ssh_config_known_hosts(
        ssh_server, inprocess_ftp, tmp_path):
    """StrictHostKeyChecking=accept-new trusts *unknown* hosts only: a host whose
    key differs from the one in known_hosts (here: the UserKnownHostsFile of the
    ssh_config entry) must still be refused, as OpenSSH does."""
    code, err, home = await run_alias_with_wrong_key(
        ssh_server, inprocess_ftp, tmp_path, "-o", "StrictHostKeyChecking=accept-new")
    assert "ready: FTP clients connect to" not in err, err
    assert code == 3, err
    assert "host key" in err, err
    assert not (home / ".ssh" / "known_hosts").exists(), err


async def test_sighup_reopens_the_xferlog(ssh_server, inprocess_ftp, payload, nursery, tmp_path):
    """logrotate: once the xferlog is renamed, SIGHUP makes ftptrio open a new one
    (0600) and the next transfer's line goes there."""
    xferlog = tmp_path / "xfer.log"
    cli = await run_cli(nursery, [*forward_arg(inprocess_ftp), *direct_args(ssh_server),
                                  "--xferlog", str(xferlog), f"{ssh_server.username}@127.0.0.1"])
    try:
        addr = await cli.ready()
        await transfer_via(addr, inprocess_ftp, payload)
        with trio.fail_after(10):
            while not (xferlog.exists() and xferlog.read_text().count("\n") == 1):
                await trio.sleep(0.05)
        rotated = tmp_path / "xfer.log.1"
        xferlog.rename(rotated)
        cli.proc.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while not xferlog.exists():
                await trio.sleep(0.05)
        assert xferlog.stat().st_mode & 0o777 == 0o600
        await transfer_via(addr, inprocess_ftp, payload)
        with trio.fail_after(10):
            while xferlog.read_text().count("\n") != 1:
                await trio.sleep(0.05)
        assert await cli.stop() == 0, cli.stderr
    finally:
        if cli.proc.returncode is None:
            cli.proc.kill()
    assert rotated.read_text().count("\n") == 1
    line = xferlog.read_text()
    assert f" file.bin b _ o r {inprocess_ftp.user} ftp 0 * c\n" in line, line
    assert b"Traceback" not in cli.stderr, cli.stderr.decode()
