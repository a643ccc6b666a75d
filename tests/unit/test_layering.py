"""Import structure of the ftptrio package, read from the source (AST): no import
cycles between its modules (imports inside functions count too), and the
modules that must stay free of I/O libraries import none."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "ftptrio"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


#: module name -> source (the Cython module's .pyx counts: its import lines are read)
MODULES = {_module_name(p): p for p in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyx")]}


def _source(path: Path) -> str:
    text = path.read_text()
    if path.suffix == ".pyx":  # Python import lines only (no cimport, no Cython syntax)
        text = "\n".join(line for line in text.splitlines()
                         if re.match(r"(from\s+\S+\s+)?import\s", line))
    return text


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level:
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([target] if target else []))
    return target or ""


def imports_of(module: str) -> set[str]:
    """Every module (ftptrio's or third-party top-level) that ``module`` imports."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(_source(path), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:  # "from . import _options": a submodule
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return found


def internal_graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        ancestors = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
        deps = set()
        for name in imports_of(module):
            deps.add(name)
            # importing a.b.c runs a and a.b first (already running for our ancestors)
            parts = name.split(".")
            deps.update(".".join(parts[:i]) for i in range(1, len(parts))
                        if ".".join(parts[:i]) not in ancestors)
        graph[module] = {d for d in deps if d in MODULES and d != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for dep in sorted(graph[node]):
            if colour[dep] == GREY:
                return stack[stack.index(dep):] + [dep]
            if colour[dep] == WHITE and (cycle := visit(dep)):
                return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_is_seen():
    for name in ("ftptrio", "ftptrio._cli", "ftptrio._options", "ftptrio._configfile",
                 "ftptrio._stats", "ftptrio._rewrite", "ftptrio.testing",
                 "ftptrio.testing.servers", "ftptrio._ssh._testserver", "ftptrio._seams",
                 "ftptrio.testing.fake_tunnel", "ftptrio._sftpfront",
                 "ftptrio.testing.fake_sftp"):
        assert name in MODULES


def test_no_import_cycles():
    assert find_cycle(internal_graph()) is None


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_configfile_does_not_import_cli():
    assert "ftptrio._cli" not in imports_of("ftptrio._configfile")


@pytest.mark.parametrize("module", ["ftptrio._options", "ftptrio._configfile",
                                    "ftptrio._config", "ftptrio._errors", "ftptrio._stats",
                                    "ftptrio._text", "ftptrio._access"])
def test_pure_modules_import_no_io_library(module):
    tops = {name.split(".")[0] for name in imports_of(module)}
    assert not tops & {"trio", "asyncssh", "trio_asyncio", "socket", "asyncio"}


def test_testing_helpers_reach_asyncssh_only_through_the_ssh_layer():
    for module in ("ftptrio.testing", "ftptrio.testing.servers", "ftptrio._demo"):
        tops = {name.split(".")[0] for name in imports_of(module)}
        assert "asyncssh" not in tops, module
    assert "ftptrio._ssh._testserver" in imports_of("ftptrio.testing")


def test_benches_and_examples_do_not_import_tests():
    for path in [*(SRC.parent / "bench").glob("*.py"), *(SRC.parent / "examples").glob("*.py")]:
        text = path.read_text()
        assert "tests/interop" not in text and '"interop"' not in text, path


TESTS = SRC.parent / "tests"


def imports_of_test_file(path: Path) -> set[str]:
    """The top-level names of every module a test file imports (``from . import x``
    and ``from .x import y`` count as x)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                found.add(node.module.split(".")[0])
            elif node.level:  # from . import a, b
                found.update(alias.name for alias in node.names)
    return found


def test_no_test_file_imports_another():
    """What tests share lives in helper modules (tests/ftp_fakes.py, tests/slow_peers.py,
    tests/integration/integration_helpers.py, tests/interop/clients.py,
    tests/unit/control_replay.py, ftptrio.testing): a test file run on its own, or
    deselected, never runs another's module-level code or fixtures."""
    test_files = sorted(TESTS.rglob("test_*.py"))
    assert len(test_files) > 50
    offenders = {f"{path.relative_to(TESTS)} imports {name}"
                 for path in test_files
                 for name in imports_of_test_file(path) if name.startswith("test_")}
    assert not offenders, sorted(offenders)


def test_test_import_check_sees_one(tmp_path):
    path = tmp_path / "test_x.py"
    path.write_text("try:\n    from .test_a import f\nexcept ImportError:\n"
                    "    from test_a import f\nimport test_b.c\nfrom . import test_c, helpers\n"
                    "from ftp_fakes import wait_until\n")
    assert {n for n in imports_of_test_file(path) if n.startswith("test_")} == {
        "test_a", "test_b", "test_c"}


@pytest.mark.parametrize("module", ["ftptrio._session", "ftptrio._dataplane",
                                    "ftptrio._seams", "ftptrio.testing.fake_tunnel"])
def test_sessions_reach_the_ssh_layer_only_through_the_seams(module):
    """The session and its data plane use SSH through ``_seams``' Protocols (so a fake
    tunnel can stand in); the seams themselves import no ftptrio module but _errors."""
    internal = {name for name in imports_of(module) if name.startswith("ftptrio.")}
    assert not {name for name in internal
                if name == "ftptrio._ssh" or name.startswith("ftptrio._ssh.")}, module
    if module == "ftptrio._seams":
        assert internal <= {"ftptrio._errors"}, internal


def test_only_the_ssh_layer_imports_asyncssh_or_trio_asyncio():
    for module in MODULES:
        if module == "ftptrio._ssh" or module.startswith("ftptrio._ssh."):
            continue
        tops = {name.split(".")[0] for name in imports_of(module)}
        assert not tops & {"asyncssh", "trio_asyncio"}, module


@pytest.mark.parametrize("module", ["ftptrio._sftpfront", "ftptrio.testing.fake_sftp"])
def test_the_sftp_front_end_reaches_sftp_only_through_the_seams(module):
    """The FTP front end of --sftp-server and its fake backend use SFTP through
    ``_seams.RemoteFiles`` only: no SSH layer, no asyncssh (a fake can stand in)."""
    tops = {name.split(".")[0] for name in imports_of(module)}
    assert not tops & {"asyncssh", "trio_asyncio", "asyncio"}, module
    internal = {name for name in imports_of(module) if name.startswith("ftptrio.")}
    assert not {name for name in internal
                if name == "ftptrio._ssh" or name.startswith("ftptrio._ssh.")}, internal
    assert not internal & {"ftptrio._session", "ftptrio._dataplane", "ftptrio._control",
                           "ftptrio._server"}, internal


@pytest.mark.parametrize("module", ["ftptrio._control", "ftptrio._rewrite_py",
                                    "ftptrio._rewrite", "ftptrio._scan", "ftptrio._netaddr"])
def test_protocol_core_imports_no_trio_and_no_io(module):
    tops = {name.split(".")[0] for name in imports_of(module)}
    assert not tops & {"trio", "asyncssh", "trio_asyncio", "socket", "asyncio"}, module
    internal = {name for name in imports_of(module) if name.startswith("ftptrio.")}
    assert internal <= {"ftptrio._scan", "ftptrio._errors", "ftptrio._netaddr",
                        "ftptrio._rewrite", "ftptrio._rewrite_py", "ftptrio._text"}, internal


def test_layering_check_sees_a_violation(monkeypatch):
    """The check is not vacuous: a protocol-core module importing trio is caught."""
    fake = SRC / "ftptrio" / "_control.py"
    monkeypatch.setattr(Path, "read_text", lambda self: "import trio\n" if self == fake
                        else Path.read_bytes(self).decode())
    tops = {name.split(".")[0] for name in imports_of("ftptrio._control")}
    assert "trio" in tops
