"""Check a built sdist and wheel of ftptrio against the source tree they came from.

    python tools/check_dist.py --source CLEAN_CLONE --sdist dist/ftptrio-X.tar.gz \\
        --wheel dist/ftptrio-X-cp311-....whl [--pure]

Run by .ci/check-dist after ``python -m build``. Fails (exit 1, one line per problem)
unless:

* the sdist holds every file git tracks (except CI plumbing), the license and the
  generated ``_rewrite.c``, and no compiled or cached files;
* the wheel holds every module of the package (subpackages included), ``py.typed``,
  ``_rewrite.pyi``, the pure-Python twin, the license, and the compiled extension
  (none with ``--pure``, whose wheel must be ``py3-none-any``), but no ``.pyx``/``.c``;
* both carry the same metadata: version = ``ftptrio.__version__`` from the source,
  ``License-Expression: MIT``, the license file, and a Python classifier for each
  version that requires-python admits.

Prints each archive's members with their sizes.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

#: tracked files that are not meant for the sdist
NOT_IN_SDIST = (".ci/", ".gitignore")
#: supported minor versions of Python 3 (requires-python ">=3.10,<3.14")
SUPPORTED = range(10, 14)


def source_version(source: Path) -> str:
    tree = ast.parse((source / "src/ftptrio/__init__.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    raise SystemExit("no __version__ = '...' in src/ftptrio/__init__.py")


def tracked(source: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(source), "ls-files"], check=True, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line]


def listing(title: str, sizes: dict[str, int]) -> None:
    print(f"{title}: {len(sizes)} files, {sum(sizes.values()):,} bytes unpacked")
    for name, size in sorted(sizes.items()):
        print(f"  {size:>10,}  {name}")


def check_metadata(label: str, text: str, version: str, problems: list[str]) -> None:
    meta = HeaderParser().parsestr(text)
    if meta["Version"] != version:
        problems.append(f"{label}: Version {meta['Version']!r}, source says {version!r}")
    if meta["License-Expression"] != "MIT":
        problems.append(f"{label}: License-Expression {meta['License-Expression']!r}")
    if meta["License"]:
        problems.append(f"{label}: deprecated License field {meta['License']!r}")
    if "LICENSE" not in (meta.get_all("License-File") or []):
        problems.append(f"{label}: no License-File: LICENSE")
    if meta["Requires-Python"] != "<3.14,>=3.10":
        problems.append(f"{label}: Requires-Python {meta['Requires-Python']!r}")
    classifiers = set(meta.get_all("Classifier") or [])
    for minor in SUPPORTED:
        if f"Programming Language :: Python :: 3.{minor}" not in classifiers:
            problems.append(f"{label}: no classifier for Python 3.{minor}")
    for needed in ("Typing :: Typed", "Framework :: Trio", "Operating System :: POSIX :: Linux"):
        if needed not in classifiers:
            problems.append(f"{label}: no classifier {needed!r}")


def check_sdist(path: Path, source: Path, version: str, problems: list[str]) -> None:
    root = f"ftptrio-{version}/"
    with tarfile.open(path) as tar:
        members = {m.name: m.size for m in tar.getmembers() if m.isfile()}
        pkg_info = tar.extractfile(root + "PKG-INFO")
        assert pkg_info is not None
        check_metadata("sdist PKG-INFO", pkg_info.read().decode(), version, problems)
    listing(f"sdist {path.name}", members)
    names = {name.removeprefix(root) for name in members}
    if not all(name.startswith(root) for name in members):
        problems.append(f"sdist: members outside {root}")
    wanted = [f for f in tracked(source) if not f.startswith(NOT_IN_SDIST)]
    wanted.append("src/ftptrio/_rewrite.c")  # generated, so the sdist builds without Cython
    for name in wanted:
        if name not in names:
            problems.append(f"sdist: missing {name}")
    for name in names:
        if name.endswith((".so", ".pyd", ".pyc")) or "__pycache__" in name:
            problems.append(f"sdist: build or cache file {name}")


def check_wheel(path: Path, source: Path, version: str, pure: bool, problems: list[str]) -> None:
    with zipfile.ZipFile(path) as whl:
        members = {i.filename: i.file_size for i in whl.infolist()}
        dist_info = f"ftptrio-{version}.dist-info/"
        check_metadata("wheel METADATA", whl.read(dist_info + "METADATA").decode(), version, problems)
        wheel_file = whl.read(dist_info + "WHEEL").decode()
    listing(f"wheel {path.name}", members)
    modules = [
        str(PurePosixPath(f).relative_to("src"))
        for f in tracked(source)
        if f.startswith("src/ftptrio/") and f.endswith(".py")
    ]
    wanted = [
        *modules,
        "ftptrio/py.typed",
        "ftptrio/_rewrite.pyi",
        "ftptrio/_rewrite_py.py",
        "ftptrio/_ssh/__init__.py",
        "ftptrio/testing/__init__.py",
        dist_info + "licenses/LICENSE",
        dist_info + "entry_points.txt",
    ]
    for name in wanted:
        if name not in members:
            problems.append(f"wheel: missing {name}")
    for name in members:
        if name.endswith((".c", ".pyx", ".pyc")) or "__pycache__" in name:
            problems.append(f"wheel: source or cache file {name}")
    compiled = [n for n in members if n.startswith("ftptrio/_rewrite.") and n.endswith((".so", ".pyd"))]
    if pure:
        if compiled:
            problems.append(f"wheel: --pure, yet compiled {compiled}")
        if "Tag: py3-none-any" not in wheel_file or not path.name.endswith("-py3-none-any.whl"):
            problems.append(f"wheel: --pure, yet not py3-none-any: {path.name}")
    elif len(compiled) != 1:
        problems.append(f"wheel: expected one compiled ftptrio._rewrite, found {compiled}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the clean clone built from")
    parser.add_argument("--sdist", type=Path)
    parser.add_argument("--wheel", type=Path)
    parser.add_argument("--pure", action="store_true", help="the wheel was built without extensions")
    args = parser.parse_args(argv)
    version = source_version(args.source)
    problems: list[str] = []
    if args.sdist:
        check_sdist(args.sdist, args.source, version, problems)
    if args.wheel:
        check_wheel(args.wheel, args.source, version, args.pure, problems)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if not problems:
        print(f"dist check ok: ftptrio {version}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
