"""bench/many_files.py at test scale through a real sshd: every route transfers every
file intact, and the floor routes (asyncssh alone, on trio-asyncio and on stock
asyncio) report the floor next to ftptrio. The bench's figures are not asserted
(this machine is shared); that the bench runs and says what it measured is."""

from __future__ import annotations

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
    assert re.search(r"stack floor: asyncssh alone under trio-asyncio takes [0-9.]+ x direct",
                     out.stdout), out.stdout
    assert re.search(r"ftptrio passive \(EPSV\): [0-9.]+ x the floor's per-file time",
                     out.stdout), out.stdout
