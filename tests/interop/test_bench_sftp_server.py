"""bench/sftp_server.py --quick: every route (FTP through --sftp-server, OpenSSH sftp,
FTP forwarding through ftptrio) moves the large file both ways and every small file
intact at both RTTs, and the bench reports each against sftp. The figures are not
asserted (this machine is shared); that the bench runs and says what it measured is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ftptrio.testing import servers

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_sftp_server_bench_quick(tmp_path: Path, sftp_user: servers.SystemUser) -> None:
    for tool in ("sshd", "ssh-keygen", "sftp", "vsftpd", "curl"):
        servers.require_tool(tool)
    out = subprocess.run([sys.executable, str(BENCH / "sftp_server.py"), "--quick"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=400)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    assert "errors: 0" in out.stdout
    large = out.stdout.split("## Large file", 1)[1].split("##", 1)[0]
    number = r"([0-9.]+|-)"  # "-": sftp's time was within its set-up's noise (--quick)
    for rtt in ("0 ms", "50 ms"):
        for route in ("sftp", "ftptrio --sftp-server", "ftptrio -L (FTP forwarding)"):
            row = re.search(rf"^{rtt}\s+{re.escape(route)}\s+{number}\s+{number}\s+"
                            rf"{number}\s+{number}$", large, re.M)
            assert row, (rtt, route, large)
            if route != "sftp":
                assert float(row.group(1)) > 0 and float(row.group(3)) > 0, row.group(0)
    for rtt in ("0", "50"):
        section = out.stdout.split(f"x 4096 bytes, RTT {rtt} ms", 1)[1].split("##", 1)[0]
        for route in ("sftp get", "sftp put", "ftptrio --sftp-server RETR",
                      "ftptrio --sftp-server STOR", "ftptrio -L (FTP forwarding) RETR",
                      "ftptrio -L (FTP forwarding) STOR"):
            row = re.search(rf"^{re.escape(route)}\s+(\d+)\s", section, re.M)
            assert row and int(row.group(1)) == 10, (rtt, route, section)
