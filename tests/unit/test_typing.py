"""mypy --strict (python_version 3.10) is clean for the whole package and the unit tests
(pyproject.toml's [tool.mypy]: test functions may be unannotated, their bodies are
checked); with CI set, a missing mypy fails instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_mypy_strict_is_clean(tmp_path):
    if not os.environ.get("CI"):
        pytest.importorskip("mypy", reason="mypy is not installed")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
