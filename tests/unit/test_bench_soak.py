"""bench/soak.py at small scale: both routes (ftptrio and the direct control) run and are
reported, uploads are checked and deleted, the temp dir goes at exit (also on SIGTERM),
and a run that would not fit in the temp filesystem is refused before it starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

import ftptrio
from ftptrio.testing import servers

BENCH = Path(__file__).resolve().parents[2] / "bench"
ENV = {**os.environ, "PYTHONPATH": str(Path(ftptrio.__file__).parents[1])}


def _soak() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import soak  # type: ignore[import-not-found]  # (from bench/, inserted above)
    finally:
        sys.path.remove(str(BENCH))
    module: ModuleType = soak
    return module


def _need_tools() -> None:
    """The soak runs real servers: a missing tool fails the test under CI (as every
    test that needs real servers), elsewhere it skips with the reason."""
    for tool in ("sshd", "vsftpd", "curl"):
        if not (servers.find_tool(tool) or shutil.which(tool)):
            servers.require_tool(tool)  # fails under CI, skips with the reason elsewhere
    if os.geteuid() != 0:
        reason = "vsftpd's anonymous uploads need root (chown to ftp)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def test_a_run_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    soak = _soak()
    assert soak.room_problem(str(tmp_path), 1) is None
    message = soak.room_problem(str(tmp_path), 1 << 60)
    assert message and "not enough room" in message and "--tmp-base" in message
    # more minutes, more workers and the control route need more room
    assert soak.space_needed(30, 2, True) > soak.space_needed(30, 2, False) \
        > soak.space_needed(30, 1, False) > soak.space_needed(1, 1, False)


def test_uploads_are_checked_and_deleted(tmp_path: Path) -> None:
    soak = _soak()
    stored = tmp_path / "up.bin"
    stored.write_bytes(b"x" * 10)
    assert soak.check_upload(stored, b"x" * 10) is None and not stored.exists()
    stored.write_bytes(b"x" * 9)
    assert soak.check_upload(stored, b"x" * 10) == "stored 9 bytes of 10" and not stored.exists()
    stored.write_bytes(b"y" * 10)
    assert soak.check_upload(stored, b"x" * 10) == "stored content differs"
    assert soak.check_upload(stored, b"x") == "stored file missing"


def test_failure_reasons_count_together() -> None:
    soak = _soak()
    first = soak.curl_reason(28, b"* x\ncurl: (28) Connection timed out after 10001 milliseconds\n")
    second = soak.curl_reason(28, b"curl: (28) Connection timed out after 10002 milliseconds\n")
    assert first[0] == second[0] == "curl 28 Connection timed out after N milliseconds"
    assert first[1] == "curl: (28) Connection timed out after 10001 milliseconds"


def test_soak_small_scale_reports_both_routes(tmp_path: Path) -> None:
    _need_tools()
    base = tmp_path / "tmp"
    out = subprocess.run([sys.executable, str(BENCH / "soak.py"), "--minutes", "0.25",
                          "--interval", "5", "--workers", "1", "--tmp-base", str(base)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300, env=ENV)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "dropped the SSH connection" in text
    for route in ("ftptrio", "direct"):
        assert f"{route} failures by reason:" in text
        row = next(ln for ln in text.splitlines() if ln.startswith(route + " "))
        assert int(row.split()[1]) > 0, row  # client runs
    assert "client runs by kind" in text
    assert "before" in text and "after" in text and "change" in text
    assert list(base.iterdir()) == []  # temp dir (servers, logs, uploads) removed


def test_soak_removes_its_temp_dir_on_sigterm(tmp_path: Path) -> None:
    _need_tools()
    base = tmp_path / "tmp"
    log = tmp_path / "out.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(BENCH / "soak.py"), "--minutes", "5",
                                 "--interval", "2", "--workers", "1", "--no-drop",
                                 "--tmp-base", str(base)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            lines = log.read_text().splitlines()
            if sum(1 for ln in lines if ln.startswith("  ") and ln.split()[0].isdigit()) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "INTERRUPTED: partial figures" in text and "direct failures by reason" in text
    assert list(base.iterdir()) == []
