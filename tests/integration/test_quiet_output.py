"""No command prints a Python warning: the commands a new user runs first, in a
subprocess with Python's default warning filters (as a user runs them), against whatever releases this
environment installed (CI runs this file in a fresh virtualenv with the newest
releases and in one with the declared lowest versions, .ci/run).

asyncssh names cryptography's deprecated DSA classes when imported; cryptography
>= 51 warns for each. ftptrio hides exactly that category for asyncssh's own
modules, and an embedding application's warnings of the same category still show.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftptrio.testing.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONWARNINGS", "SSH_AUTH_SOCK", "DISPLAY", "SSH_ASKPASS")}
    return subprocess.run([sys.executable, *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO,
                          stdin=subprocess.DEVNULL)


def assert_no_warning(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if "Warning" in line or "warn(" in line]
    assert not lines, stderr


@pytest.mark.parametrize("argv, code", [
    (["--version"], 0),
    (["--help"], 0),
    (["-L", "bad", "gw"], 2),  # a usage error
])
def test_first_commands_print_no_warning(argv, code):
    done = run("-m", "ftptrio", *argv)
    assert done.returncode == code, done.stderr
    assert_no_warning(done.stderr)


def test_ssh_error_prints_one_line_and_no_warning():
    port = free_port()  # nothing listens there
    done = run("-m", "ftptrio", "-L", "0:127.0.0.1:21", "-p", str(port),
               "-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "127.0.0.1")
    assert done.returncode == 3, done.stderr
    assert_no_warning(done.stderr)
    assert done.stderr.startswith("ftptrio: ") and done.stderr.count("\n") == 1, done.stderr


def test_demo_prints_no_warning():
    done = run("-m", "ftptrio", "demo", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_no_warning(done.stderr)
    assert_no_warning(done.stdout)


def test_embedding_application_keeps_its_own_crypto_warnings():
    """The filter is scoped to asyncssh's modules: the same category raised by the
    application that imported ftptrio still reaches it."""
    done = run("-c", "import warnings, ftptrio, asyncssh\n"
                     "from cryptography.utils import CryptographyDeprecationWarning\n"
                     "warnings.warn('app warning', CryptographyDeprecationWarning)\n")
    assert done.returncode == 0, done.stderr
    assert "CryptographyDeprecationWarning: app warning" in done.stderr
    assert "DSA" not in done.stderr
