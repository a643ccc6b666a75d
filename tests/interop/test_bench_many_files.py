"""bench/many_files.py at test scale through a real sshd: every route transfers every
file intact, and the floor routes (asyncssh alone, on trio-asyncio and on stock
asyncio) report the floor next to ftptrio. The bench's figures are not asserted
(this machine is shared); that the bench runs and says what it measured is."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ftptrio.testing import servers

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_many_files_with_floor_routes(tmp_path: Path) -> None:
    servers.require_tool("sshd")
    servers.require_tool("ssh-keygen")
    out = subprocess.run(
        [sys.executable, str(BENCH / "many_files.py"), "--files", "12", "--size", "1500",
         "--settle", "0.1", "--routes", "direct-passive,passive,floor,floor-asyncio"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "errors: 0" in out.stdout
    for route in ("direct (EPSV)", "ftptrio passive (EPSV)",
                  "asyncssh alone, trio-asyncio (EPSV)", "asyncssh alone, asyncio (EPSV)"):
        row = re.search(rf"^{re.escape(route)}\s+(\d+)\s", out.stdout, re.M)
        assert row and int(row.group(1)) == 12, (route, out.stdout)
    for loop in ("trio-asyncio", "asyncio"):
        assert re.search(rf"floor: asyncssh alone on {loop} takes [0-9.]+ x direct \(EPSV\)",
                         out.stdout), out.stdout
    assert len(re.findall(r"ftptrio passive \(EPSV\): [0-9.]+ x this floor's per-file time",
                          out.stdout)) == 2, out.stdout
    assert "floor client (asyncio): cipher aes128-gcm@openssh.com, loop asyncio." in out.stdout


def test_many_files_floor_client_reports_failures(tmp_path: Path) -> None:
    """A floor client that cannot log in says why, as a bench error, at once."""
    servers.require_tool("sshd")
    servers.require_tool("ssh-keygen")
    server = servers.start_openssh(tmp_path / "sshd")
    try:
        refused = servers.free_port()  # nothing listens there
        for loop in ("asyncio", "trio-asyncio"):
            job = {"ssh": {"host": server.host, "port": server.port,
                           "username": server.username, "client_key": server.client_key,
                           "known_hosts": server.known_hosts,
                           "ciphers": ["aes128-gcm@openssh.com"]},
                   "ftp": {"host": "127.0.0.1", "port": refused, "user": "u", "password": "p"},
                   "subdir": "many", "names": ["a"], "size": 1, "warmup": 0, "legacy": False,
                   "timeout": 10}
            out = subprocess.run([sys.executable, str(BENCH / "_floor_client.py"), "--loop", loop],
                                 input=json.dumps(job), capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            result = json.loads(out.stdout)
            assert result["lat"] == [] and len(result["errors"]) == 1, result
            assert "floor client:" in result["errors"][0] and "Connect" in result["errors"][0]
            if loop == "asyncio":  # a stock loop, nothing of trio in the process
                assert result["loop"] == ("asyncio.unix_events._UnixSelectorEventLoop "
                                          "(trio not loaded)"), result
            else:
                assert result["loop"].startswith("trio_asyncio."), result
    finally:
        server.stop()
