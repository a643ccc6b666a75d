#!/usr/bin/env python3
"""Many small files: one FTP session per route, one data channel per file.

Routes (real OpenSSH sshd and an FTP server on loopback: pyftpdlib by
default, vsftpd with --server vsftpd; --routes picks a subset by key):

  direct-passive  direct (EPSV)            ftplib-style client -> FTP server, no SSH
  direct-active   direct (EPRT)            same, active mode (reference for the active routes)
  passive         ftptrio passive (EPSV)   client -> ftptrio -> SSH -> FTP server
  active          ftptrio active (EPRT)    ftptrio asks sshd for a remote forward per transfer
  converted       ftptrio active->passive  EPRT through ftptrio --active-mode passive
  floor           asyncssh alone (trio-asyncio)  the SSH stack's floor: an asyncssh client
                  that is itself the FTP client (bench/_floor_client.py), no forwarder
  floor-asyncio   asyncssh alone (asyncio)       the same on a stock asyncio loop

Each ftptrio route's process holds one SSH connection for the whole run, so
``--routes passive`` with many files is a soak of that many sequential data
channels (direct-tcpip channels) over one SSH connection: ftptrio's open file
descriptors (/proc/<pid>/fd), thread count and RSS are reported at its start
and before / after each route, so leaks show as a difference.

Each route logs in once, then downloads every file (fixed seed, --size bytes
each) over its own data channel: EPSV/EPRT (PASV/PORT with --legacy), RETR,
read to EOF, 226.  Reported: files/s per route, the ratio to direct (passive),
and the data-channel setup latency per file -- from sending EPSV/PASV (or
EPRT/PORT) to receiving the first data byte -- median and p99 in ms.

A ~40 ms stall per data channel (docs/performance.md, trap 1) shows as a setup
median near 40 ms and files/s far below direct.

The floor routes bound a passive-mode forwarder built on asyncssh from below:
they do only the SSH side of each file (a channel for the control lines, a
direct-tcpip channel per file, RETR held until it is open, as ftptrio does) in
one process that is also the FTP client, with the same cipher as ftptrio and
the same TCP_QUICKACK fix, as asyncio code throughout (under trio-asyncio: one
aio_as_trio call, no trio task, no trio/asyncio crossing per file). A forwarder
adds the local sockets, its listener and checks, and (ftptrio, on trio) the
crossings between its trio tasks and asyncssh. The floor's CPU figure includes
its own FTP client (ftptrio's is the forwarder alone). --legacy makes it use
PASV; --timeout bounds each of its replies and reads.
"""

from __future__ import annotations

import argparse
import ftplib
import json
import os
import socket
import subprocess
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


ROUTE_KEYS = ("direct-passive", "direct-active", "passive", "active", "converted", "floor",
              "floor-asyncio")
#: floor route key -> the event loop bench/_floor_client.py runs asyncssh on
FLOOR_LOOPS = {"floor": "trio-asyncio", "floor-asyncio": "asyncio"}
FLOOR_CLIENT = Path(__file__).resolve().parent / "_floor_client.py"
WARMUP_FILES = 5


def run_floor(bed: C.Bed, loop: str, names: list[str], size: int, timeout: float,
              legacy: bool, ciphers: list[str]) -> tuple[float, list[float], list[str], float]:
    """The asyncssh-alone client over every file (``ciphers``: the one ftptrio
    negotiated, or ftptrio's preference order). Returns (elapsed, setup latencies in s,
    errors, its CPU s)."""
    ssh, ftp = bed.ssh, bed.ftp
    job = {"ssh": {"host": ssh.host, "port": ssh.port, "username": ssh.username,
                   "client_key": ssh.client_key, "known_hosts": ssh.known_hosts,
                   "ciphers": ciphers},
           "ftp": {"host": ftp.host, "port": ftp.port, "user": ftp.user,
                   "password": ftp.password},
           "subdir": SUBDIR, "names": names, "size": size, "warmup": WARMUP_FILES,
           "legacy": legacy, "timeout": timeout}
    what = f"floor client ({loop})"
    try:
        out = subprocess.run([sys.executable, str(FLOOR_CLIENT), "--loop", loop],
                             input=json.dumps(job), capture_output=True, text=True,
                             timeout=timeout * 4 + len(names))
    except subprocess.TimeoutExpired as exc:
        return 0.0, [], [f"{what}: no result after {exc.timeout:.0f} s {_tail(exc.stderr)}"], 0.0
    try:
        result = json.loads(out.stdout)
    except ValueError:
        return 0.0, [], [f"{what} exited with {out.returncode} {_tail(out.stderr)}"], 0.0
    print(f"{what}: cipher {result['cipher']}, loop {result['loop']}")
    return result["elapsed"], result["lat"], result["errors"], result["cpu"]


def _tail(stderr: str | bytes | None) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return (stderr or "").strip()[-2000:]


def floor_ciphers(negotiated: str | None) -> list[str]:
    """The cipher ftptrio negotiated in this run, else ftptrio's own preference order."""
    if negotiated and negotiated != "?":
        return [negotiated]
    from ftptrio._ssh._connect import _encryption_algs

    return _encryption_algs(None)


def run_route(port: int, names: list[str], size: int, mode: str, legacy: bool,
              timeout: float, user: str = "ftptrio",
              password: str = "secret") -> tuple[float, list[float], list[str]]:
    """Download every file over its own data channel. Returns (elapsed, setup
    latencies in s, errors)."""
    ftp = ftplib.FTP(timeout=timeout)
    ftp.connect(C.HOST, port)
    ftp.login(user, password)  # vsftpd anonymous: 230 after USER, ftplib skips PASS
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
    ap.add_argument("--server", choices=C.SERVERS, default="pyftpdlib",
                    help="FTP server behind sshd (default pyftpdlib; vsftpd: anonymous login)")
    ap.add_argument("--routes", default=",".join(ROUTE_KEYS),
                    help="comma list of " + ", ".join(ROUTE_KEYS) + " (default all)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait before each ftptrio resource reading (default 1)")
    ap.add_argument("--quick", action="store_true", help="200 files (well under a minute)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = ap.parse_args()
    if args.quick:
        args.files = 200
    keys = [k.strip() for k in args.routes.split(",") if k.strip()]
    for k in keys:
        if k not in ROUTE_KEYS:
            ap.error(f"unknown route {k!r} (choose from {', '.join(ROUTE_KEYS)})")
    keys = [k for k in ROUTE_KEYS if k in keys]  # fixed order, no duplicates

    C.print_header("ftptrio many-small-files benchmark")
    pcmd, acmd = ("PASV", "PORT") if args.legacy else ("EPSV", "EPRT")
    print(f"FTP server: {args.server}; routes: {', '.join(keys)}")
    print(f"{args.files} files x {args.size} bytes, random.Random({SEED}); one session per route, "
          f"one data channel per file ({pcmd}/{acmd}); client: ftplib primitives, TCP_NODELAY")
    t_start = time.monotonic()
    results = []
    errors_all: list[str] = []
    res_rows = []
    with C.test_bed("ftptrio-bench-many-", keep=args.keep, server=args.server) as bed:
        print(C.ftp_server_info(bed.ftp, 512))
        d = Path(bed.ftp.root) / SUBDIR
        d.mkdir()
        os.chmod(d, 0o755)
        import random

        rng = random.Random(SEED)
        names = [f"f{i:05d}.bin" for i in range(args.files)]
        for name in names:
            (d / name).write_bytes(rng.randbytes(args.size))
        fx_default = fx_conv = None
        if {"passive", "active"} & set(keys):
            fx_default = bed.ftptrio(tag="ftptrio-default")
        if "converted" in keys:
            fx_conv = bed.ftptrio(active_mode="passive", tag="ftptrio-conv")
        fxs = [fx for fx in (fx_default, fx_conv) if fx is not None]
        time.sleep(args.settle)
        at_start = {}
        for fx in fxs:
            at_start[fx.pid] = fx.snapshot()
            print(f"ftptrio pid {fx.pid} ({fx.mode}) at start: {C.fmt_snapshot(at_start[fx.pid])}")
        negotiated = C.negotiated_cipher(bed.ssh) if fxs else None
        if negotiated:
            print(f"ftptrio cipher: {negotiated}", flush=True)
        all_routes = {
            "direct-passive": (f"direct ({pcmd})", bed.ftp.port, "passive", None),
            "direct-active": (f"direct ({acmd})", bed.ftp.port, "active", None),
            "passive": (f"ftptrio passive ({pcmd})", fx_default and fx_default.port, "passive",
                        fx_default),
            "active": (f"ftptrio active ({acmd})", fx_default and fx_default.port, "active",
                       fx_default),
            "converted": (f"ftptrio active->passive ({acmd})", fx_conv and fx_conv.port, "active",
                          fx_conv),
            "floor": (f"asyncssh alone, {FLOOR_LOOPS['floor']} ({pcmd})", None, "floor", None),
            "floor-asyncio": (f"asyncssh alone, {FLOOR_LOOPS['floor-asyncio']} ({pcmd})", None,
                              "floor", None),
        }
        routes = [(*all_routes[k], k) for k in keys]
        user, password = bed.ftp.user, bed.ftp.password
        ciphers = floor_ciphers(negotiated)
        # warm-up: a few files per route (imports, first channel, caches); the floor
        # client warms up in its own process
        for name, port, mode, fx, key in routes:
            if mode != "floor":
                run_route(port, names[:WARMUP_FILES], args.size, mode, args.legacy,
                          args.timeout, user, password)
        for name, port, mode, fx, key in routes:
            if fx:
                time.sleep(args.settle)
                before = fx.snapshot()
            c0 = fx.cpu() if fx else None
            if mode == "floor":
                elapsed, lat, errs, cpu = run_floor(bed, FLOOR_LOOPS[key], names, args.size,
                                                    args.timeout, args.legacy, ciphers)
            else:
                elapsed, lat, errs = run_route(port, names, args.size, mode, args.legacy,
                                               args.timeout, user, password)
                cpu = (fx.cpu() - c0) if fx else None
            ok = len(lat)
            results.append((name, ok, elapsed, lat, cpu))
            errors_all += [f"{name}: {e}" for e in errs]
            print(f"... {name}: {ok} files in {elapsed:.2f} s", flush=True)
            if fx:
                time.sleep(args.settle)
                after = fx.snapshot()
                st = at_start[fx.pid]
                res_rows.append([name, fx.pid, st["fds"], before["fds"], after["fds"],
                                 after["fds"] - before["fds"], before["socks"], after["socks"],
                                 st["threads"], before["threads"], after["threads"],
                                 st["rss"], before["rss"], after["rss"], after["hwm"]])
        for fx in fxs:
            if not fx.alive():
                errors_all.append(f"ftptrio pid {fx.pid} exited with {fx.process.returncode}")
        logs = "".join(fx.log() for fx in fxs).strip()

    mode_of = {r[0]: r[2] for r in routes}
    by_name = {r[0]: r for r in results}

    def rate_of(name: str) -> float:
        r = by_name.get(name)
        return r[1] / r[2] if r and r[2] else float("nan")

    direct = rate_of(f"direct ({pcmd})")
    direct_active = rate_of(f"direct ({acmd})")
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
                   "setup median ms", "setup p99 ms", "max ms", "n > 30 ms",
                   "CPU ms/file (ftptrio or floor client)"],
                  rows))
    if res_rows:
        print()
        print("## ftptrio resources: at its start / before the route / after the route "
              f"(/proc/<pid>/fd, Threads, VmRSS and peak VmHWM in KiB; readings {args.settle:g} s "
              "after the last transfer)")
        print(C.table(["route", "pid", "fds at start", "fds before", "fds after", "fds delta",
                       "sockets before", "sockets after", "threads at start", "threads before",
                       "threads after", "RSS at start", "RSS before", "RSS after", "peak RSS"],
                      res_rows))
    print()
    print("goals (docs/performance.md): per-file time <= 2.5 x direct (files/s >= 0.4 x direct); setup p99 < 5 ms through OpenSSH sshd")
    for key in FLOOR_LOOPS:
        floor_rate = rate_of(all_routes[key][0])
        if floor_rate != floor_rate or direct != direct:  # NaN: not measured
            continue
        print(f"floor: asyncssh alone on {FLOOR_LOOPS[key]} takes {direct / floor_rate:.2f} x "
              f"direct ({pcmd}) per file: the SSH work per file with no forwarder, no trio "
              "task and no trio/asyncio crossing; a lower bound for a passive-mode forwarder "
              "on that loop that opens the data channel before it forwards RETR")
        for name, ok, elapsed, lat, cpu in results:
            if name.startswith("ftptrio") and mode_of[name] == "passive" and ok and elapsed:
                print(f"  {name}: {floor_rate / (ok / elapsed):.2f} x this floor's per-file time")
    if logs:
        print("ftptrio stderr (last 2000 chars):\n" + logs[-2000:])
    print(f"FTP server: {args.server}")
    print(f"errors: {len(errors_all)}")
    for e in errors_all[:50]:
        print("  " + e)
    print(f"load average at end: {os.getloadavg()[0]:.2f}; total wall time "
          f"{time.monotonic() - t_start:.0f} s")
    return 1 if errors_all else 0


if __name__ == "__main__":
    sys.exit(main())
