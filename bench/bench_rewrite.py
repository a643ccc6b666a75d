"""Benchmark the control-channel scanner: Cython extension vs pure-Python twin.

Builds a ~1 MB realistic control session (commands, multi-line replies, 227/229/PORT/EPRT
lines) with a fixed seed and splits it into the two directions of the control channel.

Main figure, "control-channel processing": the server stream goes through
``LineSplitter.feed_replies`` and the client stream through ``LineSplitter.feed_commands``
in 1460-byte chunks (one TCP MSS), and parse_227 / parse_229 / parse_port_arg /
parse_eprt_arg run on the lines that need them -- the per-chunk work of ftptrio._control.

Second table, the older per-line path on the interleaved transcript: ``feed`` then, per
line, parse_reply_code or split_command plus the matching parser, and ``feed`` alone.

Best of ROUNDS, time.perf_counter.

Run: python bench/bench_rewrite.py
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import time
from pathlib import Path
from types import ModuleType

from ftptrio._errors import BadDataAddress

SEED = 20240601
TARGET_BYTES = 1_000_000
CHUNK = 1460
ROUNDS = 7
COMMAND_RATE = 1000  # commands per second for the "% of one core" figure


def build_session(rng: random.Random) -> tuple[bytes, bytes, bytes, int]:
    """(interleaved transcript, server stream, client stream, number of commands).

    Command + reply exchanges until ~1 MB; the two streams are the same lines sorted
    by direction (a line starting with a 3-digit code or a space is a reply line).
    """
    parts: list[bytes] = []
    server: list[bytes] = []
    client: list[bytes] = []
    size = 0
    commands = 0

    def emit(*lines: bytes) -> None:
        nonlocal size
        for line in lines:
            parts.append(line)
            size += len(line)
            if line[:3].isdigit() or line[:1] == b" ":
                server.append(line)
            else:
                client.append(line)

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
    return b"".join(parts), b"".join(server), b"".join(client), commands


def build_transcript(rng: random.Random) -> tuple[bytes, int]:
    """(interleaved transcript, number of commands)."""
    transcript, _server, _client, commands = build_session(rng)
    return transcript, commands


def control_processing(impl: ModuleType, streams: tuple[list[bytes], list[bytes]]) -> int:
    """Both directions through the bulk methods; return the number of lines seen."""
    server_chunks, client_chunks = streams
    parse_227 = impl.parse_227
    parse_229 = impl.parse_229
    parse_port_arg = impl.parse_port_arg
    parse_eprt_arg = impl.parse_eprt_arg
    count = 0
    feed_replies = impl.LineSplitter().feed_replies
    for chunk in server_chunks:
        replies = feed_replies(chunk)
        count += len(replies)
        for line, code, _flags in replies:
            if code == 227:
                parse_227(line)
            elif code == 229:
                parse_229(line)
    feed_commands = impl.LineSplitter().feed_commands
    for chunk in client_chunks:
        commands = feed_commands(chunk)
        count += len(commands)
        for _line, verb, arg, _flags in commands:
            try:
                if verb == b"PORT":
                    parse_port_arg(arg)
                elif verb == b"EPRT":
                    parse_eprt_arg(arg)
            except BadDataAddress:
                pass
    return count


def bulk_only(impl: ModuleType, streams: tuple[list[bytes], list[bytes]]) -> int:
    """feed_replies / feed_commands alone (no parsers, no Python loop over the lines)."""
    server_chunks, client_chunks = streams
    feed_replies = impl.LineSplitter().feed_replies
    feed_commands = impl.LineSplitter().feed_commands
    return (sum(len(feed_replies(chunk)) for chunk in server_chunks)
            + sum(len(feed_commands(chunk)) for chunk in client_chunks))


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


def bench(func, impl: ModuleType, data) -> tuple[float, int]:
    best = float("inf")
    lines = 0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        lines = func(impl, data)
        best = min(best, time.perf_counter() - start)
    return best, lines


def chunked(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def main() -> int:
    global ROUNDS
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python-only", action="store_true",
                    help="measure the pure-Python twin alone when the extension is not built "
                         "(otherwise a missing extension is an error: no ratio to report)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"best of (default {ROUNDS})")
    args = ap.parse_args()
    ROUNDS = args.rounds
    rng = random.Random(SEED)
    transcript, server, client, commands = build_session(rng)
    chunks = chunked(transcript)
    streams = (chunked(server), chunked(client))
    import ftptrio
    from ftptrio import _scan

    # the ftptrio this interpreter imports: an installed package, or what PYTHONPATH names
    print(f"measured: ftptrio {ftptrio.__version__} from {Path(ftptrio.__file__).parent}; "
          f"_scan.IMPLEMENTATION = {_scan.IMPLEMENTATION}")
    impls: list[tuple[str, ModuleType]] = [("python", importlib.import_module("ftptrio._rewrite_py"))]
    try:
        impls.append(("cython", importlib.import_module("ftptrio._rewrite")))
    except ImportError as exc:
        print(f"cython extension: not importable ({exc})")
        if not args.python_only:
            print("no cython/python ratio to report: build the extension (pip install . with "
                  "a C compiler, or python setup.py build_ext --inplace for a source tree), "
                  "or pass --python-only", file=sys.stderr)
            return 2
    n_lines = transcript.count(b"\n")
    n_server, n_client = server.count(b"\n"), client.count(b"\n")
    print(f"session: {len(transcript):,} bytes, {n_lines:,} lines, {commands:,} commands; "
          f"server stream {len(server):,} bytes / {n_server:,} lines, "
          f"client stream {len(client):,} bytes / {n_client:,} lines; "
          f"{CHUNK}-byte chunks; best of {ROUNDS}")

    def table(title: str, func, data, size: int) -> dict[str, float]:
        print(title)
        results: dict[str, float] = {}
        for name, impl in impls:
            seconds, lines = bench(func, impl, data)
            results[name] = seconds
            print(f"  {name:>7}: {seconds * 1e3:8.2f} ms  {lines / seconds / 1e6:6.2f} M lines/s  "
                  f"{size / seconds / 1e6:7.1f} MB/s  {seconds / commands * 1e6:6.3f} us/command")
        if "cython" in results:
            print(f"  cython/python speed ratio: {results['python'] / results['cython']:.1f}x")
        return results

    print()
    print("== control-channel processing (bulk API) ==")
    main_results = table(
        "feed_replies (server) + feed_commands (client), parse 227/229/PORT/EPRT:",
        control_processing, streams, len(transcript))
    table("feed_replies + feed_commands alone:", bulk_only, streams, len(transcript))
    print(f"python twin at {COMMAND_RATE:,} commands/s (with their replies): "
          f"{main_results['python'] / commands * COMMAND_RATE * 100:.3f}% of one core")
    if "cython" in main_results:
        print(f"cython at {COMMAND_RATE:,} commands/s: "
              f"{main_results['cython'] / commands * COMMAND_RATE * 100:.4f}% of one core")

    print()
    print("== per-line API (feed, then parse_reply_code / split_command per line) ==")
    table("split + parse every line (reply code / command, 227/229/PORT/EPRT), interleaved:",
          run_once, chunks, len(transcript))
    table("LineSplitter.feed alone:", split_only, chunks, len(transcript))


    return 0


if __name__ == "__main__":
    sys.exit(main())
