"""SSH connect errors say what happened, with host:port, as ssh users expect."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[2]


async def run_cli(*args: str) -> tuple[int, str]:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "ftptrio", "-L", "127.0.0.1:0:127.0.0.1:21", *args],
            cwd=REPO, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True,
            check=False)
    return result.returncode, result.stderr.decode()


async def test_connection_refused_names_host_port_and_exits_3():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused
        code, err = await run_cli("-p", str(port), "127.0.0.1")
    assert code == 3, err
    assert err.strip() == (f"ftptrio: 127.0.0.1:{port}: SSH connection failed: connection "
                           "refused (is the SSH server listening on that port?)"), err


async def test_silent_server_times_out_after_connect_timeout():
    with socket.socket() as silent:  # accepts (backlog) but never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        code, err = await run_cli("-p", str(port), "-o", "ConnectTimeout=1", "127.0.0.1")
    assert code == 3, err
    assert err.strip() == (f"ftptrio: 127.0.0.1:{port}: SSH connection failed: timed out "
                           "after 1 s (ConnectTimeout)"), err
