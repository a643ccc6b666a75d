"""The documentation matches the repository: DESIGN.md's module map names every module
of the package (and nothing that is gone), and no tracked file cites a document that
is not in the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "ftptrio"

#: a line of the map: an optional two-space indent (a file inside the last directory
#: line), then one or more names separated by " / ", then two spaces or the line end;
#: lines indented further continue the description above
_MAP_ENTRY = re.compile(r"^( {0,2})(\S+(?: / \S+)*)(?:  |$)")


def module_map(design: str) -> set[str]:
    """The paths (relative to src/ftptrio) that DESIGN.md's module map names: the
    first code block, directories as ``dir/``."""
    block = design.split("```\n", 2)[1]
    paths: set[str] = set()
    directory = ""
    for line in block.splitlines():
        entry = _MAP_ENTRY.match(line)
        if entry is None:
            continue
        indent, names = entry.groups()
        if not indent:
            directory = ""
        for name in names.split(" / "):
            paths.add(directory + name)
            if not indent and name.endswith("/"):
                directory = name
    return paths


def package_modules() -> set[str]:
    """Every module's source file under src/ftptrio, relative to it."""
    return {p.relative_to(PACKAGE).as_posix()
            for pattern in ("*.py", "*.pyx") for p in PACKAGE.rglob(pattern)}


def test_module_map_parser():
    design = ("x\n```\na.py / b.py   one\n                 more text\n"
              "pkg/           a package\n  __init__.py  its surface\n  c.py         c\n"
              "d.py           d\n```\nlater\n```\nnot.py  the map\n```\n")
    assert module_map(design) == {"a.py", "b.py", "pkg/", "pkg/__init__.py", "pkg/c.py",
                                  "d.py"}


def test_design_module_map_names_every_module():
    listed = module_map((ROOT / "DESIGN.md").read_text())
    modules = package_modules()
    assert "_ssh/_auth.py" in modules  # the walk sees subpackages
    missing = sorted(modules - listed)
    assert not missing, f"modules missing from DESIGN.md's module map: {missing}"
    gone = sorted(p for p in listed if not (PACKAGE / p).exists())
    assert not gone, f"DESIGN.md's module map names what is not in src/ftptrio: {gone}"


#: documents kept outside the repository while ftptrio was written; a citation of one
#: is fine only when the repository has a file of that name
_OUTSIDE_DOC = re.compile(r"\.\./shared\b|\b(?:PERFORMANCE|PROTOCOL|TESTING)\.md\b",
                          re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    """The repository's text files: ``git ls-files``, or in an unpacked sdist (no
    .git) every file but build output."""
    git = shutil.which("git")
    if git is not None and (ROOT / ".git").exists():
        names = subprocess.run([git, "ls-files", "-z"], cwd=ROOT, capture_output=True,
                               check=True).stdout.decode().split("\0")
        paths = [ROOT / name for name in names if name]
    else:
        skip = {".git", "build", "dist", "__pycache__"}
        paths = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)
                 and not any(part.endswith(".egg-info") for part in p.parts)]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:8192]]


def outside_citations(path: Path, root: Path, repository_files: set[str]) -> list[str]:
    """``file:line: text`` for every citation in ``path`` of a document that does not
    resolve to a file of the repository (``docs/performance.md`` does), read as written
    from the repository's top or from the citing file's directory."""
    found = []
    here = path.parent.relative_to(root)
    lines = path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        for match in _OUTSIDE_DOC.finditer(line):
            start = match.start()  # take in the directories written before the name
            while start and re.match(r"[\w./-]", line[start - 1]):
                start -= 1
            written = line[start:match.end()]
            resolves = ".." not in written.split("/") and any(
                candidate in repository_files
                for candidate in (written.lstrip("./"), (here / written).as_posix()))
            if not resolves:
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_outside_citations_are_found(tmp_path):
    md, shared = ".md", "shared"  # spelled apart, so that this file cites nothing itself
    (tmp_path / "docs").mkdir()
    cites = tmp_path / "docs" / "cites.py"
    cites.write_text(f"# see docs/performance{md}, trap 1\n"
                     f"# see performance{md} (beside this file)\n"
                     f"# see PERFORMANCE{md}, trap 1\n"
                     f"# the rules in ../{shared}/DESIGN{md}\n"
                     f"# per protocol{md}\n"
                     f"# TESTING{md}\n")
    assert outside_citations(cites, tmp_path, {f"docs/performance{md}"}) == [
        f"docs/cites.py:3: # see PERFORMANCE{md}, trap 1",
        f"docs/cites.py:4: # the rules in ../{shared}/DESIGN{md}",
        f"docs/cites.py:5: # per protocol{md}",
        f"docs/cites.py:6: # TESTING{md}",
    ]


def test_no_file_cites_a_document_outside_the_repository():
    files = tracked_text_files()
    repository_files = {p.relative_to(ROOT).as_posix() for p in files}
    assert "DESIGN.md" in repository_files
    found = [hit for path in files for hit in outside_citations(path, ROOT, repository_files)]
    assert not found, "citations of documents not in the repository:\n" + "\n".join(found)
