#!/usr/bin/env python3
"""Print the interop matrix as a Markdown table, from real test results.

    python tools/interop_table.py                 # runs the interop tests first
    python tools/interop_table.py results.xml     # reads an existing JUnit XML

Without an argument it runs ``python -m pytest tests/interop -q -rA
--junitxml=...`` from the repository root (pytest's own output goes to
stderr, so stdout is only the table).  Rows are setup x client x mode,
columns the FTP servers; a cell is the result of the test named
``test_<setup>[<server>-<client>-<mode>]``.  Every other interop test is
counted below the table.  Exit status: 0 if nothing failed, 1 otherwise
(2 if there were no results at all).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: test function -> (order, setup label)
SETUPS: dict[str, tuple[int, str]] = {
    "test_matrix": (0, "OpenSSH sshd"),
    "test_matrix_converted": (1, "sshd `AllowTcpForwarding local`, `--active-mode passive`"),
    "test_ipv6": (2, "IPv6 client, ftptrio on `[::1]`"),
    "test_netns": (3, "3 network namespaces, ftptrio CLI"),
    "test_remote_tunnel_curl": (4, "`-R` remote tunnel, client on the SSH host's side"),
}
CONVERTED = {"PORT": "PORT → PASV", "EPRT": "EPRT → EPSV"}
SERVER_ORDER = ["vsftpd", "pyftpdlib", "proftpd"]
CLIENT_ORDER = ["curl", "lftp", "wget", "ftplib"]
MODE_ORDER = ["EPSV", "PASV", "EPRT", "PORT"]
MARK = {"passed": "✅", "failed": "❌", "skipped": "skipped"}
CASE_NAME = re.compile(r"^(?P<func>test_\w+)\[(?P<server>[^-\]]+)-(?P<client>[^-\]]+)-(?P<mode>[^\]]+)\]$")
#: remote-tunnel cases are parametrized by server and mode only (the client is curl)
REMOTE_NAME = re.compile(r"^(?P<func>test_remote_tunnel_curl)\[(?P<a>[^-\]]+)-(?P<b>[^\]]+)\]$")


def _case(name: str) -> tuple[str, str, str, str] | None:
    """(function, server, client, mode) of a matrix-style test name, else None."""
    m = CASE_NAME.match(name)
    if m:
        return m["func"], m["server"], m["client"], m["mode"]
    m = REMOTE_NAME.match(name)
    if m:
        server, mode = (m["a"], m["b"]) if m["a"] in SERVER_ORDER else (m["b"], m["a"])
        return m["func"], server, "curl", mode
    return None


@dataclass
class Result:
    classname: str
    name: str
    outcome: str  # passed | failed | skipped
    time: float
    message: str


def read_junit(path: str | os.PathLike) -> tuple[list[Result], float]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total_time = sum(float(s.get("time", 0) or 0) for s in suites)
    results = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message", "") or (child.text or "")[:200]
                break
            if child.tag == "skipped":
                outcome, message = "skipped", child.get("message", "")
        results.append(Result(case.get("classname", ""), case.get("name", ""), outcome,
                              float(case.get("time", 0) or 0), message))
    return results, total_time


def run_pytest(xml_path: str) -> int:
    cmd = [sys.executable, "-m", "pytest", "tests/interop", "-q", "-rA", f"--junitxml={xml_path}"]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr, stderr=sys.stderr).returncode


def _order(value: str, order: list[str]) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def render(results: list[Result], total_time: float) -> tuple[str, bool]:
    cells: dict[tuple[str, str, str], dict[str, str]] = {}
    servers: set[str] = set()
    matrix, other = Counter(), Counter()
    failed_cases: list[str] = []
    for r in results:
        case = _case(r.name)
        if case and case[0] in SETUPS:
            func, server, client, mode = case
            key = (func, client, mode)
            cells.setdefault(key, {})[server] = r.outcome
            servers.add(server)
            matrix[r.outcome] += 1
        else:
            other[r.outcome] += 1
        if r.outcome == "failed":
            failed_cases.append(f"{r.classname}::{r.name}")

    server_cols = sorted(servers, key=lambda s: _order(s, SERVER_ORDER))
    lines = [
        "| Setup | Client | Mode | " + " | ".join(server_cols) + " |",
        "| --- | --- | --- | " + " | ".join(":---:" for _ in server_cols) + " |",
    ]
    for func, client, mode in sorted(
        cells, key=lambda k: (SETUPS[k[0]][0], _order(k[1], CLIENT_ORDER), _order(k[2], MODE_ORDER))
    ):
        shown_mode = CONVERTED.get(mode, mode) if func == "test_matrix_converted" else mode
        row = cells[(func, client, mode)]
        marks = [MARK.get(row[s], row[s]) if s in row else "—" for s in server_cols]
        lines.append(f"| {SETUPS[func][1]} | {client} | {shown_mode} | " + " | ".join(marks) + " |")

    def summary(counter: Counter) -> str:
        total = sum(counter.values())
        return f"{total} ({counter['passed']} passed, {counter['failed']} failed, {counter['skipped']} skipped)"

    lines += [
        "",
        f"Matrix cases: {summary(matrix)}; other interop tests: {summary(other)}; "
        f"run time {total_time:.0f} s.",
    ]
    if failed_cases:
        lines += ["", "Failed:", *(f"- `{name}`" for name in failed_cases)]
    return "\n".join(lines), not failed_cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit_xml", nargs="?", help="read this JUnit XML instead of running pytest")
    args = parser.parse_args(argv)
    if args.junit_xml:
        results, total_time = read_junit(args.junit_xml)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            xml_path = os.path.join(tmp, "interop.xml")
            rc = run_pytest(xml_path)
            if not os.path.exists(xml_path):
                print(f"pytest exited with {rc} and wrote no results", file=sys.stderr)
                return 2
            results, total_time = read_junit(xml_path)
    if not results:
        print("no test results", file=sys.stderr)
        return 2
    table, ok = render(results, total_time)
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
