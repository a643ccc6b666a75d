"""The benches measure the ftptrio the interpreter imports (an installed package, or
what PYTHONPATH names), never a source tree they put first on sys.path themselves, and
say which one they measured."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import ftptrio
from ftptrio import _scan

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_bench_puts_the_source_tree_on_sys_path() -> None:
    for script in sorted(BENCH.glob("*.py")):
        text = script.read_text()
        for line in text.splitlines():
            if "sys.path.insert" in line:
                # only the bench directory itself (for its _common helpers)
                assert "dirname(os.path.abspath(__file__))" in line, (script.name, line)


def test_bench_rewrite_reports_what_it_measured(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(BENCH / "bench_rewrite.py"), "--rounds", "1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(ftptrio.__file__).parents[1])})
    package_dir = str(Path(ftptrio.__file__).parent)
    try:
        importlib.import_module("ftptrio._rewrite")
        built = True
    except ImportError:
        built = False
    if built:
        assert out.returncode == 0, out.stderr
        assert f"from {package_dir};" in out.stdout
        ratios = re.findall(r"cython/python speed ratio: ([0-9.]+)x", out.stdout)
        assert len(ratios) == 4 and all(float(r) > 1 for r in ratios), out.stdout
    else:  # no extension: an error, not a silent python-only report
        assert out.returncode == 2, out.stdout
        assert "no cython/python ratio" in out.stderr


def test_bench_header_names_the_measured_package() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import _common  # type: ignore[import-not-found]  # (from bench/, inserted above)
    finally:
        sys.path.remove(str(BENCH))
    text = _common.measured_ftptrio()
    assert str(Path(ftptrio.__file__).parent) in text
    assert text.endswith(f"scanner {_scan.IMPLEMENTATION}")
