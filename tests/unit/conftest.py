"""Shared fixtures for unit tests: the ``rewrite`` fixture runs a test on both scanners."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

if importlib.util.find_spec("ftptrio") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))


def extension_required() -> bool:
    """CI (or FTPTRIO_REQUIRE_EXTENSIONS) turns a missing Cython extension into a failure."""
    return bool(os.environ.get("CI") or os.environ.get("FTPTRIO_REQUIRE_EXTENSIONS"))


def load_rewrite(name: str) -> ModuleType:
    """Import one implementation: ``"python"`` or ``"cython"`` (fail/skip if not built)."""
    if name == "python":
        return importlib.import_module("ftptrio._rewrite_py")
    try:
        return importlib.import_module("ftptrio._rewrite")
    except ImportError as exc:
        message = f"Cython extension ftptrio._rewrite not built: {exc}"
        if extension_required():
            pytest.fail(message + " (CI / FTPTRIO_REQUIRE_EXTENSIONS is set)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session", params=["python", "cython"], ids=["python", "cython"])
def rewrite(request: pytest.FixtureRequest) -> ModuleType:
    """The rewriter module under test, once per implementation."""
    return load_rewrite(request.param)


@pytest.fixture(scope="session")
def both_rewrites() -> tuple[ModuleType, ModuleType]:
    """(python, cython) pair for differential tests."""
    return load_rewrite("python"), load_rewrite("cython")


@pytest.fixture
def restore_logging():
    """main() configures logging; undo it so other tests see the usual setup."""
    names = ["", "ftptrio", "ftptrio._control", "ftptrio._control.lines", "asyncssh",
             "trio_asyncio"]
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.level, list(lg.handlers)) for lg in loggers]
    yield
    for lg, (level, handlers) in zip(loggers, saved):
        lg.setLevel(level)
        lg.handlers[:] = handlers
