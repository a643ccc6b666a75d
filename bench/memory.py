#!/usr/bin/env python3
"""Memory of ftptrio under slow peers: does a slow side slow the fast one down,
or does ftptrio hold the difference?

Through a real OpenSSH sshd on loopback, ftptrio (a subprocess, its VmRSS read
from /proc) forwards:

  slow readers   N curl downloads with ``--limit-rate RATE`` (slow FTP clients)
                 from vsftpd (or pyftpdlib) at full speed
  slow writers   N curl uploads at full speed into pyftpdlib throttled to RATE
                 per data connection (ThrottledDTPHandler: a slow FTP server)

  stalled        N sessions that start a RETR and never read it (a client that
                 stops reading), with ``--data-memory`` at --budget and without a
                 budget, side by side: the growth the budget saves

For each scenario: ftptrio's RSS after a warm-up transfer (the baseline), its
peak while the N transfers run for --seconds, the growth, the growth per slow
data channel next to the bound it should stay under (the relay's SSH window
plus its write-buffer high-water mark, + 2 MiB), and the goal for 4 slow
readers (<= 64 MiB in total).

``--compare-src DIR`` runs every scenario a second time, side by side in the
same run, with the ftptrio of another source tree (e.g. an export of an older
commit with its extension built): the before/after figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from ftptrio._ssh._relay import WINDOW, WRITE_HIGH_WATER  # noqa: E402

SEED = 20240614
BOUND_SLACK = 2 * C.MIB


def parse_rate(text: str) -> int:
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    return int(float(text.rstrip("kKmMgG")) * mult)


@contextlib.contextmanager
def ftptrio_from(src: str | None):
    """Start ftptrio subprocesses from ``src`` (None: this tree) inside the block."""
    old = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = src
    try:
        yield
    finally:
        if src is not None:
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old


def curl_args(timeout: float) -> list[str]:
    return ["curl", "-s", "-S", "--max-time", str(int(timeout)), "--no-ftp-skip-pasv-ip"]


def warm_baseline(fx, ftp) -> int:
    """One small download (every code path imported, the SSH session up), then
    ftptrio's RSS in KiB: the baseline."""
    warm = subprocess.run(curl_args(60) + ["-o", "/dev/null",
                                           ftp.url("one_mib.bin", C.HOST, fx.port)],
                          capture_output=True, text=True)
    if warm.returncode:
        raise RuntimeError(f"warm-up failed: {warm.stderr}\n{fx.log()[-2000:]}")
    time.sleep(0.5)  # let the warm-up's buffers be freed before the baseline
    return int(fx.rss_kib())


def peak_rss(fx, base: int, seconds: float) -> int:
    """ftptrio's highest RSS (KiB) sampled for ``seconds``."""
    peak = base
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if not fx.alive():
            raise RuntimeError(f"ftptrio died: {fx.log()[-2000:]}")
        peak = max(peak, fx.rss_kib())
        time.sleep(0.05)
    return int(peak)


def run_scenario(kind: str, n: int, rate: int, seconds: float, size: int, server: str,
                 src: str | None) -> dict:
    """One scenario; returns baseline/peak RSS (KiB) and the bytes moved."""
    workdir = C.bench_tmpdir(f"ftptrio-mem-{kind}-")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        ssh = C.servers.start_openssh(os.path.join(workdir, "sshd"))
        stack.callback(ssh.stop)
        ftpdir = os.path.join(workdir, "ftp")
        if kind == "readers" and server == "vsftpd":
            ftp = C.start_vsftpd_bench(ftpdir, passive_count=100)
        else:
            ftp = C.servers.start_pyftpdlib(
                ftpdir, passive_ports=C.servers.free_port_range(100),
                read_limit=rate if kind == "writers" else 0)
        stack.callback(ftp.stop)
        big = "memory-big.bin"
        # readers download it from the FTP root; writers upload it from here
        source = ftp.path(big) if kind == "readers" else Path(workdir) / big
        C.write_random_file(source, size, SEED)
        with ftptrio_from(src):
            fx = C.start_ftptrio(ssh, ftp, workdir)
        stack.callback(fx.stop)
        base = warm_baseline(fx, ftp)
        procs = []
        for i in range(n):
            if kind == "readers":
                args = curl_args(seconds + 60) + ["--limit-rate", str(rate), "-o", "/dev/null",
                                                  ftp.url(big, C.HOST, fx.port)]
            else:
                args = curl_args(seconds + 60) + ["-T", str(source),
                                                  ftp.url(f"upload/up{i}.bin", C.HOST, fx.port)]
            procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          start_new_session=True))
        for p in procs:
            stack.callback(C.stop, p)
        peak = peak_rss(fx, base, seconds)
        finished = sum(p.poll() is not None for p in procs)
        for p in procs:
            C.stop(p)
        return {"base": base, "peak": peak, "finished": finished}


def stalled_clients(port: int, ftp, big: str, n: int) -> list:
    """``n`` FTP clients that start a RETR of ``big`` and never read its data (the
    sessions of the security review's memory finding). Returns their sockets."""
    import ftplib
    import socket

    held = []
    for _ in range(n):
        client = ftplib.FTP()
        client.connect(C.HOST, port, timeout=60)
        client.login(ftp.user, ftp.password)
        client.voidcmd("TYPE I")
        data = socket.create_connection(client.makepasv(), timeout=60)
        client.putcmd(f"RETR {big}")
        held.append((client, data))
    return held


def run_stalled(n: int, seconds: float, size: int, budget: str) -> dict:
    """N sessions that never read a RETR, with ``--data-memory budget``: RSS growth."""
    workdir = C.bench_tmpdir("ftptrio-mem-stalled-")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        ssh = C.servers.start_openssh(os.path.join(workdir, "sshd"))
        stack.callback(ssh.stop)
        passive_ports = C.servers.free_port_range(4 * n + 20)
        ftp = C.servers.start_pyftpdlib(os.path.join(workdir, "ftp"), passive_ports=passive_ports)
        stack.callback(ftp.stop)
        big = "memory-big.bin"
        C.write_random_file(ftp.path(big), size, SEED)
        fx = C.start_ftptrio(ssh, ftp, workdir, extra=["--data-memory", budget,
                                                       "--max-sessions-per-client", str(n + 1)])
        stack.callback(fx.stop)
        base = warm_baseline(fx, ftp)
        held = stalled_clients(fx.port, ftp, big, n)
        for client, data in held:
            stack.callback(data.close)
            stack.callback(client.sock.close)
        return {"base": base, "peak": peak_rss(fx, base, seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--channels", type=int, default=4,
                    help="slow readers and slow writers (default 4 each)")
    ap.add_argument("--rate", default="5M", help="speed of the slow side (curl syntax)")
    ap.add_argument("--seconds", type=float, default=15.0, help="how long to watch")
    ap.add_argument("--size-mib", type=int, default=1024,
                    help="file size: larger than what the slow side takes in --seconds")
    ap.add_argument("--server", choices=C.SERVERS, default="vsftpd",
                    help="FTP server of the slow-reader scenario (slow writers: pyftpdlib)")
    ap.add_argument("--scenarios", default="readers,writers,stalled",
                    help="readers, writers, stalled (sessions that never read a RETR, with "
                         "--data-memory at --budget and at none, side by side)")
    ap.add_argument("--stalled", type=int, default=24,
                    help="sessions of the stalled scenario (default 24)")
    ap.add_argument("--budget", default="64M", help="--data-memory of the stalled scenario")
    ap.add_argument("--compare-src", metavar="DIR",
                    help="also run ftptrio from this source tree (the baseline)")
    ap.add_argument("--quick", action="store_true", help="5 s, 256 MiB files")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.size_mib = 5.0, 256
    rate = parse_rate(args.rate)
    C.print_header("ftptrio memory under slow peers")
    bound_mib = (WINDOW + WRITE_HIGH_WATER + BOUND_SLACK) / C.MIB
    print(f"relay SSH window {WINDOW / C.MIB:.0f} MiB, write high-water "
          f"{WRITE_HIGH_WATER / C.MIB:.0f} MiB; goal per slow channel <= window + 2 MiB "
          f"({(WINDOW + BOUND_SLACK) / C.MIB:.0f} MiB); 4 slow readers <= 64 MiB in total")
    print(f"{args.channels} slow channels at {rate / C.MIB:.1f} MiB/s for {args.seconds:.0f} s, "
          f"files of {args.size_mib} MiB; slow readers from {args.server}, slow writers "
          f"into pyftpdlib (ThrottledDTPHandler)")
    trees = [("this tree", None)]
    if args.compare_src:
        trees.append((f"{args.compare_src}", args.compare_src))
    rows = []
    kinds = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    if "stalled" in kinds:
        kinds.remove("stalled")
        stalled_rows = []
        for budget in (args.budget, "none"):
            r = run_stalled(args.stalled, min(args.seconds, 10.0), args.size_mib * C.MIB,
                            budget)
            growth = (r["peak"] - r["base"]) / 1024
            stalled_rows.append([f"--data-memory {budget}", r["base"] / 1024,
                                 r["peak"] / 1024, growth, growth / args.stalled])
            sys.stdout.flush()
        print(f"{args.stalled} sessions that never read a RETR (pyftpdlib), side by side:")
        print(C.table(["ftptrio", "base MiB", "peak MiB", "growth MiB", "per session MiB"],
                      stalled_rows))
        limited, unlimited = stalled_rows[0][3], stalled_rows[1][3]
        print(f"growth with --data-memory {args.budget}: {limited:.0f} MiB, without a budget: "
              f"{unlimited:.0f} MiB ({unlimited / max(limited, 1):.1f}x)")
    for kind in kinds:
        for label, src in trees:
            r = run_scenario(kind, args.channels, rate, args.seconds, args.size_mib * C.MIB,
                             args.server, src)
            growth = (r["peak"] - r["base"]) / 1024
            per = growth / args.channels
            rows.append([f"slow {kind}", label, r["base"] / 1024, r["peak"] / 1024, growth,
                         per, (WINDOW + BOUND_SLACK) / C.MIB,
                         "yes" if per <= (WINDOW + BOUND_SLACK) / C.MIB else "NO",
                         f"{r['finished']}/{args.channels}"])
            sys.stdout.flush()
    if rows:
        print(C.table(["scenario", "ftptrio", "base MiB", "peak MiB", "growth MiB",
                       "per channel MiB", "goal MiB", "within", "finished early"], rows))
    for row in rows:
        if row[0] == "slow readers" and args.channels == 4:
            print(f"4 slow readers ({row[1]}): growth {row[4]:.1f} MiB "
                  f"({'within' if row[4] <= 64 else 'OVER'} the 64 MiB goal)")
    if rows:
        print(f"(bound the relay enforces: window + high-water + one read = {bound_mib:.0f} "
              "MiB per channel at most)")


if __name__ == "__main__":
    main()
