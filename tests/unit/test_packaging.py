"""Packaging facts that live in several files and must agree: the supported Python
versions (requires-python, classifiers, README, CI's Python check, tools/check_dist.py),
the one version (ftptrio.__version__, the metadata's dynamic version, CHANGELOG.md), the
license, and the README's two set-up commands. The built sdist and wheels themselves are
checked by .ci/check-dist."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (tomli is a dependency there)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
README = (REPO / "README.md").read_text()


def supported_minors() -> list[int]:
    """The Python 3 minor versions requires-python admits (it has the form >=3.A,<3.B)."""
    match = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", PROJECT["requires-python"].replace(" ", ""))
    assert match, f"requires-python not of the form >=3.A,<3.B: {PROJECT['requires-python']}"
    return list(range(int(match[1]), int(match[2])))


def source_version() -> str:
    tree = ast.parse((REPO / "src/ftptrio/__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            "__version__"
        ]:
            assert isinstance(node.value, ast.Constant), "__version__ must be a literal"
            return str(node.value.value)
    raise AssertionError("no __version__ in src/ftptrio/__init__.py")


def section(title: str) -> str:
    """The README text under '## title' up to the next '## ' heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match[1]


def test_readme_setup_commands_are_exactly_these_two():
    blocks = re.findall(r"^```sh\n(.*?)^```", section("Try it"), re.M | re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert commands == [
        "python -m pip install '.[demo]' && python -m ftptrio demo",
        "python -m pip install -e '.[test]' && python -m pytest",
    ]


def test_python_classifiers_match_requires_python():
    minors = supported_minors()
    assert minors == [10, 11, 12, 13]  # 3.14: trio-asyncio does not import there yet
    listed = sorted(
        int(c.rsplit(".", 1)[1])
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert listed == minors


def test_readme_install_section_names_the_supported_versions_and_the_upstream_issue():
    install = section("Install")
    names = [f"3.{m}" for m in supported_minors()]
    assert f"**{', '.join(names[:-1])} and {names[-1]}**" in install
    assert f"requires-python = \"{PROJECT['requires-python']}\"" in install
    assert "Failing to import on Python >= 3.14" in install
    assert "https://github.com/python-trio/trio-asyncio/issues/160" in install


def test_ci_python_check_and_dist_check_agree_with_requires_python():
    minors = supported_minors()
    ci = (REPO / ".ci/run").read_text()
    assert f"(3, {minors[0]}) <= sys.version_info[:2] < (3, {minors[-1] + 1})" in ci
    check_dist = (REPO / "tools/check_dist.py").read_text()
    assert f"SUPPORTED = range({minors[0]}, {minors[-1] + 1})" in check_dist
    assert f"\"<3.{minors[-1] + 1},>=3.{minors[0]}\"" in check_dist


def test_one_version_source():
    assert "version" not in PROJECT
    assert "version" in PROJECT["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "ftptrio.__version__"}
    version = source_version()
    first = re.search(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert first and first[1] == version, "CHANGELOG.md's first heading must name __version__"


def test_license_is_spdx_with_the_file():
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert "MIT License" in (REPO / "LICENSE").read_text()
    requires = PYPROJECT["build-system"]["requires"]
    assert "setuptools>=77" in requires  # SPDX license expressions need setuptools 77


def test_wheel_data_excludes_extension_sources():
    setuptools_cfg = PYPROJECT["tool"]["setuptools"]
    assert setuptools_cfg["include-package-data"] is False
    data = setuptools_cfg["package-data"]["ftptrio"]
    assert "py.typed" in data and "*.pyi" in data
    assert not [p for p in data if p.endswith((".pyx", ".c"))]


def test_prometheus_client_is_the_metrics_extra_and_the_tests_have_it():
    """--metrics imports prometheus_client only when used: the "metrics" extra, with
    the same floor in the test extra (CI runs the tests with the lowest releases)."""
    extras = PROJECT["optional-dependencies"]
    in_ = [r for r in PROJECT["dependencies"] if r.startswith("prometheus_client")]
    assert not in_
    assert extras["metrics"] == ["prometheus_client>=0.6.0"]
    assert extras["metrics"][0] in extras["test"]


def test_pyftpdlib_is_an_extra_of_the_demo_and_the_tests_only():
    """The forwarder never imports pyftpdlib: it is the "demo" extra (the demo names
    it when missing), and the "test" extra lists it with the same floor."""
    def pyftpdlib_in(requirements: list[str]) -> list[str]:
        return [r for r in requirements if re.match(r"pyftpdlib\b", r)]

    assert not pyftpdlib_in(PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    assert pyftpdlib_in(extras["demo"]) == extras["demo"] != []
    assert pyftpdlib_in(extras["test"]) == extras["demo"]
