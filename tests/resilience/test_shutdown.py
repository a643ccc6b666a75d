"""`python -m ftptrio` shutdown: SIGTERM/SIGINT stop accepting, let sessions finish
within the grace period and exit 0; a second signal exits at once."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import trio

from ftp_fakes import FTPClient, wait_until


async def start_cli(setup, *extra: str) -> tuple[trio.Process, int, list[bytes]]:
    ssh = setup.ssh
    args = [sys.executable, "-m", "ftptrio", "-L", f"127.0.0.1:0:127.0.0.1:{setup.ftp.port}",
            "-p", str(ssh.port), "-i", ssh.client_key_path,
            "-o", f"UserKnownHostsFile={ssh.known_hosts}", *extra, f"{ssh.username}@127.0.0.1"]
    proc = await trio.lowlevel.open_process(args, stderr=subprocess.PIPE)
    output: list[bytes] = []
    with trio.fail_after(20):
        while True:
            chunk = await proc.stderr.receive_some(4096)
            assert chunk, b"".join(output)
            output.append(chunk)
            found = re.search(rb"ready: FTP clients connect to [\d.]+:(\d+)", b"".join(output))
            if found:
                return proc, int(found.group(1)), output


async def drain(proc: trio.Process, output: list[bytes]) -> None:
    while chunk := await proc.stderr.receive_some(4096):
        output.append(chunk)


async def wait_logged(output: list[bytes], text: bytes) -> None:
    """Wait until ftptrio's stderr (collected by ``drain``) contains ``text``."""
    await wait_until(lambda: text in b"".join(output), 10, f"ftptrio to log {text!r}")


async def open_client(port: int) -> FTPClient:
    client = await FTPClient.connect(("127.0.0.1", port))
    assert (await client.reply())[0].startswith(b"220")
    return client


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_lets_running_session_finish_then_exits_0(make_setup, nursery, signum):
    setup = await make_setup()
    proc, port, output = await start_cli(setup, "--grace", "20")
    nursery.start_soon(drain, proc, output)
    try:
        client = await open_client(port)
        proc.send_signal(signum)
        # logged once the listeners are closed
        await wait_logged(output, b"no longer accepting FTP clients")
        with pytest.raises(OSError):  # no longer accepting
            await trio.open_tcp_stream("127.0.0.1", port)
        assert (await client.command(b"NOOP"))[0].startswith(b"200")  # session goes on
        assert (await client.command(b"QUIT"))[0].startswith(b"221")
        await client.aclose()
        with trio.fail_after(10):
            assert await proc.wait() == 0, b"".join(output)
    finally:
        proc.kill()


async def test_grace_period_expires_then_exits_0(make_setup, nursery):
    setup = await make_setup()
    proc, port, output = await start_cli(setup, "--grace", "1")
    nursery.start_soon(drain, proc, output)
    try:
        client = await open_client(port)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0, b"".join(output)
        with pytest.raises(EOFError):
            await client.line()
    finally:
        proc.kill()


async def test_second_signal_exits_at_once(make_setup, nursery):
    setup = await make_setup()
    proc, port, output = await start_cli(setup, "--grace", "60")
    nursery.start_soon(drain, proc, output)
    try:
        # held open (not garbage-collected) so that a session is still running when
        # the second signal arrives: only that makes ftptrio stop before the grace ends
        client = await open_client(port)
        proc.send_signal(signal.SIGINT)
        # trio merges a signal that arrives again before the first is taken: wait
        # until ftptrio has taken the first one
        await wait_logged(output, b"received SIGINT")
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(5):
            assert await proc.wait() == 0, b"".join(output)
        await wait_logged(output, b"second signal: stopping now")
        assert b"Traceback" not in b"".join(output)
        await client.aclose()
    finally:
        proc.kill()
