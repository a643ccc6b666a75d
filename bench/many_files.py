#!/usr/bin/env python3
"""Many small files: one FTP session per route, one data channel per file.

Routes (real OpenSSH sshd and pyftpdlib on loopback):

  direct (EPSV)            ftplib-style client -> pyftpdlib, no SSH
  direct (EPRT)            same, active mode (reference for the active routes)
  ftptrio passive (EPSV)   client -> ftptrio -> SSH -> pyftpdlib
  ftptrio active (EPRT)    ftptrio asks sshd for a remote forward per transfer
  ftptrio active->passive  EPRT through ftptrio --active-mode passive

Each route logs in once, then downloads every file (fixed seed, --size bytes
each) over its own data channel: EPSV/EPRT (PASV/PORT with --legacy), RETR,
read to EOF, 226.  Reported: files/s per route, the ratio to direct (passive),
and the data-channel setup latency per file -- from sending EPSV/PASV (or
EPRT/PORT) to receiving the first data byte -- median and p99 in ms.

A ~40 ms stall per data channel (PERFORMANCE.md trap 1) shows as a setup
median near 40 ms and files/s far below direct.
"""

from __future__ import annotations

import argparse
import ftplib
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SEED = 4242
SUBDIR = "many"


def recv_all(sock: socket.socket, first: bytes, bufsize: int = 65536) -> int:
    n = len(first)
    while True:
        chunk = sock.recv(bufsize)
        if not chunk:
            return n
        n += len(chunk)


def run_route(port: int, names: list[str], size: int, mode: str, legacy: bool,
              timeout: float) -> tuple[float, list[float], list[str]]:
    """Download every file over its own data channel. Returns (elapsed, setup
    latencies in s, errors)."""
    ftp = ftplib.FTP(timeout=timeout)
    ftp.connect(C.HOST, port)
    ftp.login("ftptrio", "secret")
    ftp.voidcmd("TYPE I")
    ftp.cwd(SUBDIR)
    ftp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat: list[float] = []
    errors: list[str] = []
    t_start = time.perf_counter()
    try:
        for name in names:
            try:
                if mode == "passive":
                    t0 = time.perf_counter()
                    if legacy:
                        host, dport = ftplib.parse227(ftp.sendcmd("PASV"))
                    else:
                        host, dport = ftplib.parse229(ftp.sendcmd("EPSV"), ftp.sock.getpeername())
                    conn = socket.create_connection((C.HOST, dport), timeout=timeout)
                    resp = ftp.sendcmd(f"RETR {name}")
                    if resp[0] not in "12":
                        raise ftplib.error_reply(resp)
                    first = conn.recv(65536)
                    t1 = time.perf_counter()
                else:
                    lsock = socket.create_server((C.HOST, 0), backlog=4)
                    lsock.settimeout(timeout)
                    lport = lsock.getsockname()[1]
                    t0 = time.perf_counter()
                    if legacy:
                        ftp.voidcmd("PORT 127,0,0,1,%d,%d" % (lport >> 8, lport & 255))
                    else:
                        ftp.voidcmd(f"EPRT |1|{C.HOST}|{lport}|")
                    resp = ftp.sendcmd(f"RETR {name}")
                    if resp[0] not in "12":
                        lsock.close()
                        raise ftplib.error_reply(resp)
                    conn, _ = lsock.accept()
                    lsock.close()
                    conn.settimeout(timeout)
                    first = conn.recv(65536)
                    t1 = time.perf_counter()
                got = recv_all(conn, first)
                conn.close()
                ftp.voidresp()
                if got != size:
                    errors.append(f"{name}: {got} of {size} bytes")
                lat.append(t1 - t0)
            except (OSError, ftplib.Error, EOFError) as exc:
                errors.append(f"{name}: {exc!r}")
                if len(errors) > 20:
                    errors.append("too many errors, route aborted")
                    break
        elapsed = time.perf_counter() - t_start
    finally:
        try:
            ftp.quit()
        except (OSError, ftplib.Error, EOFError):
            ftp.close()
    return elapsed, lat, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000, help="number of files (default 1000)")
    ap.add_argument("--size", type=int, default=4096, help="bytes per file (default 4096)")
    ap.add_argument("--legacy", action="store_true",
                    help="use PASV/PORT instead of EPSV/EPRT")
    ap.add_argument("--timeout", type=float, default=30.0, help="socket timeout (default 30 s)")
    ap.add_argument("--quick", action="store_true", help="200 files (well under a minute)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = ap.parse_args()
    if args.quick:
        args.files = 200

    C.print_header("ftptrio many-small-files benchmark")
    pcmd, acmd = ("PASV", "PORT") if args.legacy else ("EPSV", "EPRT")
    print(f"{args.files} files x {args.size} bytes, random.Random({SEED}); one session per route, "
          f"one data channel per file ({pcmd}/{acmd}); client: ftplib primitives, TCP_NODELAY")
    t_start = time.monotonic()
    results = []
    errors_all: list[str] = []
    with C.test_bed("ftptrio-bench-many-", keep=args.keep) as bed:
        d = Path(bed.ftp.root) / SUBDIR
        d.mkdir()
        import random

        rng = random.Random(SEED)
        names = [f"f{i:05d}.bin" for i in range(args.files)]
        for name in names:
            (d / name).write_bytes(rng.randbytes(args.size))
        fx_default = bed.ftptrio(tag="ftptrio-default")
        fx_conv = bed.ftptrio(active_mode="passive", tag="ftptrio-conv")
        print(f"ftptrio cipher: {C.negotiated_cipher(bed.ssh)}; pids {fx_default.pid}, "
              f"{fx_conv.pid}", flush=True)
        routes = [
            (f"direct ({pcmd})", bed.ftp.port, "passive", None),
            (f"direct ({acmd})", bed.ftp.port, "active", None),
            (f"ftptrio passive ({pcmd})", fx_default.port, "passive", fx_default),
            (f"ftptrio active ({acmd})", fx_default.port, "active", fx_default),
            (f"ftptrio active->passive ({acmd})", fx_conv.port, "active", fx_conv),
        ]
        # warm-up: a few files per route (imports, first channel, caches)
        for name, port, mode, fx in routes:
            run_route(port, names[:5], args.size, mode, args.legacy, args.timeout)
        for name, port, mode, fx in routes:
            c0 = fx.cpu() if fx else None
            elapsed, lat, errs = run_route(port, names, args.size, mode, args.legacy, args.timeout)
            cpu = (fx.cpu() - c0) if fx else None
            ok = len(lat)
            results.append((name, ok, elapsed, lat, cpu))
            errors_all += [f"{name}: {e}" for e in errs]
            print(f"... {name}: {ok} files in {elapsed:.2f} s", flush=True)
        for fx in (fx_default, fx_conv):
            if not fx.alive():
                errors_all.append(f"ftptrio pid {fx.pid} exited with {fx.process.returncode}")
        logs = (fx_default.log() + fx_conv.log()).strip()

    mode_of = {r[0]: r[2] for r in routes}
    direct = results[0][1] / results[0][2]
    direct_active = results[1][1] / results[1][2]
    print()
    print("## Files/s and data-channel setup latency "
          f"({pcmd}/{acmd} sent -> first data byte received)")
    rows = []
    for name, ok, elapsed, lat, cpu in results:
        rate = ok / elapsed if elapsed else float("nan")
        same = direct_active if mode_of[name] == "active" else direct
        rows.append([name, ok, rate, C.ratio(rate, direct), C.ratio(rate, same),
                     C.median(lat) * 1000, C.percentile(lat, 99) * 1000, max(lat) * 1000 if lat else None,
                     sum(1 for x in lat if x > 0.030),
                     cpu * 1000 / ok if cpu is not None and ok else None])
    print(C.table(["route", "files", "files/s", "ratio vs direct", "vs direct same mode",
                   "setup median ms", "setup p99 ms", "max ms", "n > 30 ms", "ftptrio CPU ms/file"],
                  rows))
    print()
    print("goals: files/s >= 0.5 x direct; setup p99 < 5 ms through OpenSSH sshd")
    if logs:
        print("ftptrio stderr (last 2000 chars):\n" + logs[-2000:])
    print(f"errors: {len(errors_all)}")
    for e in errors_all[:50]:
        print("  " + e)
    print(f"load average at end: {os.getloadavg()[0]:.2f}; total wall time "
          f"{time.monotonic() - t_start:.0f} s")
    return 1 if errors_all else 0


if __name__ == "__main__":
    sys.exit(main())
