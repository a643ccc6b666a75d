"""README.md's "API reference" section is tools/api_reference.py's output, as it
is now: a field, docstring or ``#:`` comment changed without running
``python tools/api_reference.py --write`` fails here, and so does a public field of
Config, SSHOptions, ForwardSpec or Forwarder added without a ``#:`` comment."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ftptrio

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "api_reference.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("api_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return load_tool()


def test_readme_section_is_the_scripts_output(tool):
    committed = tool.section_in((REPO / "README.md").read_text())
    assert committed is not None, "README.md has no generated API reference section"
    assert committed == tool.generate(), (
        "README.md's API reference is stale: run python tools/api_reference.py --write")


def test_script_prints_the_section():
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == load_tool().generate()
    assert result.stdout.splitlines()[1] == "## API reference"


@pytest.mark.parametrize("cls", [ftptrio.Config, ftptrio.SSHOptions, ftptrio.ForwardSpec])
def test_every_public_field_is_in_the_reference_with_its_text(tool, cls):
    section = tool.generate()
    part = section.split(f"### `{cls.__name__}`\n", 1)[1].split("\n### ", 1)[0]
    entries = {}
    for line in part.splitlines():
        match = re.match(r"- `(\w+): [^`]+`(?: \(required\)| = `[^`]*`): (\S.*)$", line)
        if match:
            entries[match[1]] = match[2]
    public = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    assert list(entries) == public


def test_forwarder_is_sealed_and_documented_member_by_member(tool):
    """Forwarder's public surface is read-only properties and methods, typed with
    public types only (not ftptrio's own Tunnel and listeners), each in the reference."""
    cls = ftptrio.Forwarder
    assert not dataclasses.is_dataclass(cls)
    members = {name: member for name, member in vars(cls).items()
               if not name.startswith("_")}
    assert set(members) == {"addresses", "stats", "ports", "stop_accepting", "wait_idle",
                            "reopen_logs"}
    section = tool.generate().split("### `Forwarder`\n", 1)[1].split("\n### ", 1)[0]
    public_types = set(ftptrio.__all__) | {"list", "tuple", "str", "int", "None"}
    for name, member in members.items():
        if isinstance(member, property):
            assert member.fset is None, name
            kind = member.fget.__annotations__["return"]
            assert set(re.findall(r"\w+", kind)) <= public_types, (name, kind)
            assert f"- `{name}: {kind}` (property): " in section
        else:
            annotations = [str(a) for a in member.__annotations__.values()]
            assert set(re.findall(r"\w+", " ".join(annotations))) <= public_types, name
            assert re.search(rf"- `(await )?{name}\(", section), name


def test_a_field_without_a_comment_is_an_error(tool):
    source = '''from __future__ import annotations
from dataclasses import dataclass
from typing import Literal
Mode = Literal["a", "b"]

@dataclass
class Example:
    """An example."""

    #: documented, over
    #: two lines
    documented: int = 1
    # a plain comment does not count
    undocumented: Mode = "a"
'''
    assert tool.field_comments(source, "Example") == {
        "documented": "documented, over two lines", "undocumented": ""}
    assert tool.type_aliases(source) == {"Mode": "Literal['a', 'b']"}
    namespace: dict[str, object] = {}
    exec(compile(source, "<example>", "exec"), namespace)
    missing: list[str] = []
    lines = tool.document_dataclass(namespace["Example"], source, missing)
    assert missing == ["Example.undocumented (no #: comment)"]
    assert "- `documented: int` = `1`: documented, over two lines" in lines
    assert "- `undocumented: Literal['a', 'b']` = `'a'`: " in lines
