"""Benchmark the control-channel scanner: Cython extension vs pure-Python twin.

Builds a ~1 MB realistic control transcript (commands, multi-line replies, 227/229/PORT/EPRT
lines), feeds it to LineSplitter in 1460-byte chunks (one TCP MSS) and, for every line,
runs parse_reply_code or split_command plus the matching data-address parser, like
ftptrio._control does. Best of 5, time.perf_counter, fixed seed.

Run: python bench/bench_rewrite.py
"""

from __future__ import annotations

import importlib
import random
import sys
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ftptrio._errors import BadDataAddress  # noqa: E402

SEED = 20240601
TARGET_BYTES = 1_000_000
CHUNK = 1460
ROUNDS = 5
COMMAND_RATE = 1000  # commands per second for the "% of one core" figure


def build_transcript(rng: random.Random) -> tuple[bytes, int]:
    """(transcript, number of commands): command + reply exchanges until ~1 MB."""
    parts: list[bytes] = []
    size = 0
    commands = 0

    def emit(*lines: bytes) -> None:
        nonlocal size
        for line in lines:
            parts.append(line)
            size += len(line)

    emit(b"220-Welcome to the benchmark FTP server\r\n", b"220 Ready.\r\n")
    while size < TARGET_BYTES:
        commands += 1
        kind = rng.random()
        h = [rng.randrange(256) for _ in range(4)]
        port = rng.randrange(1024, 65536)
        if kind < 0.15:
            emit(rng.choice([b"PASV\r\n", b"pasv\r\n"]))
            text = rng.choice([
                b"227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).\r\n",
                b"227 Entering passive mode (%d,%d,%d,%d,%d,%d).\r\n",
                b"227 =%d,%d,%d,%d,%d,%d\r\n",
            ])
            emit(text % (*h, port >> 8, port & 255))
        elif kind < 0.30:
            emit(b"EPSV\r\n", b"229 Entering Extended Passive Mode (|||%d|)\r\n" % port)
        elif kind < 0.40:
            emit(b"PORT %d,%d,%d,%d,%d,%d\r\n" % (*h, port >> 8, port & 255),
                 b"200 PORT command successful. Consider using PASV.\r\n")
        elif kind < 0.50:
            if rng.random() < 0.5:
                emit(b"EPRT |1|%d.%d.%d.%d|%d|\r\n" % (*h, port))
            else:
                emit(b"EPRT |2|fd00::%x:%x|%d|\r\n" % (h[0], h[1], port))
            emit(b"200 EPRT command successful.\r\n")
        elif kind < 0.65:
            name = b"file-%06d.dat" % rng.randrange(10**6)
            emit(b"RETR " + name + b"\r\n", b"150 Opening BINARY mode data connection for "
                 + name + b" (%d bytes).\r\n" % rng.randrange(10**9),
                 b"226 Transfer complete.\r\n")
        elif kind < 0.75:
            emit(b"FEAT\r\n", b"211-Features:\r\n", b" EPRT\r\n", b" EPSV\r\n", b" MDTM\r\n",
                 b" PASV\r\n", b" REST STREAM\r\n", b" SIZE\r\n", b" TVFS\r\n", b" UTF8\r\n",
                 b"211 End\r\n")
        elif kind < 0.85:
            emit(b"CWD /pub/dir%d\r\n" % rng.randrange(1000),
                 b"250 Directory successfully changed.\r\n")
        elif kind < 0.95:
            emit(b"TYPE I\r\n", b"200 Switching to Binary mode.\r\n")
        else:
            emit(b"NOOP\r\n", b"200 NOOP ok.\r\n")
    emit(b"QUIT\r\n", b"221 Goodbye.\r\n")
    return b"".join(parts), commands


def run_once(impl: ModuleType, chunks: list[bytes]) -> int:
    """Process the whole transcript; return the number of lines seen."""
    splitter = impl.LineSplitter()
    parse_reply_code = impl.parse_reply_code
    split_command = impl.split_command
    parse_227 = impl.parse_227
    parse_229 = impl.parse_229
    parse_port_arg = impl.parse_port_arg
    parse_eprt_arg = impl.parse_eprt_arg
    count = 0
    for chunk in chunks:
        for line in splitter.feed(chunk):
            count += 1
            reply = parse_reply_code(line)
            if reply is not None:
                code = reply[0]
                if code == 227:
                    parse_227(line)
                elif code == 229:
                    parse_229(line)
                continue
            verb, arg = split_command(line)
            try:
                if verb == b"PORT":
                    parse_port_arg(arg)
                elif verb == b"EPRT":
                    parse_eprt_arg(arg)
            except BadDataAddress:
                pass
    return count


def split_only(impl: ModuleType, chunks: list[bytes]) -> int:
    splitter = impl.LineSplitter()
    return sum(len(splitter.feed(chunk)) for chunk in chunks)


def bench(func, impl: ModuleType, chunks: list[bytes]) -> tuple[float, int]:
    best = float("inf")
    lines = 0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        lines = func(impl, chunks)
        best = min(best, time.perf_counter() - start)
    return best, lines


def main() -> None:
    rng = random.Random(SEED)
    transcript, commands = build_transcript(rng)
    chunks = [transcript[i:i + CHUNK] for i in range(0, len(transcript), CHUNK)]
    impls: list[tuple[str, ModuleType]] = [("python", importlib.import_module("ftptrio._rewrite_py"))]
    try:
        impls.append(("cython", importlib.import_module("ftptrio._rewrite")))
    except ImportError as exc:
        print(f"cython: not available ({exc})")
    from ftptrio import _scan

    print(f"ftptrio._scan.IMPLEMENTATION = {_scan.IMPLEMENTATION}")
    n_lines = transcript.count(b"\n")
    print(f"transcript: {len(transcript):,} bytes, {n_lines:,} lines, "
          f"{commands:,} commands, {len(chunks):,} chunks of {CHUNK} bytes; best of {ROUNDS}")
    results: dict[str, float] = {}
    split_results: dict[str, float] = {}
    print("split + parse every line (reply code / command, 227/229/PORT/EPRT):")
    for name, impl in impls:
        seconds, lines = bench(run_once, impl, chunks)
        results[name] = seconds
        print(f"  {name:>7}: {seconds * 1e3:8.2f} ms  {lines / seconds / 1e6:6.2f} M lines/s  "
              f"{len(transcript) / seconds / 1e6:7.1f} MB/s  "
              f"{seconds / commands * 1e6:6.3f} us/command")
    print("LineSplitter alone:")
    for name, impl in impls:
        seconds, lines = bench(split_only, impl, chunks)
        split_results[name] = seconds
        print(f"  {name:>7}: {seconds * 1e3:8.2f} ms  {lines / seconds / 1e6:6.2f} M lines/s  "
              f"{len(transcript) / seconds / 1e6:7.1f} MB/s")
    if "cython" in results:
        print(f"cython/python speed ratio: {results['python'] / results['cython']:.1f}x "
              f"(split + parse), {split_results['python'] / split_results['cython']:.1f}x "
              "(split alone)")
    per_command = results["python"] / commands
    print(f"python twin at {COMMAND_RATE:,} commands/s (with their replies): "
          f"{per_command * COMMAND_RATE * 100:.3f}% of one core")
    if "cython" in results:
        print(f"cython at {COMMAND_RATE:,} commands/s: "
              f"{results['cython'] / commands * COMMAND_RATE * 100:.4f}% of one core")


if __name__ == "__main__":
    main()
