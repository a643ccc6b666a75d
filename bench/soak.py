"""Soak: minutes of mixed FTP traffic through one forwarder, with resource trends.

ftptrio runs in this process (``open_forwarder``) against a real OpenSSH sshd and
vsftpd (or pyftpdlib: ``--server``); curl clients in subprocesses make the traffic: small passive
downloads, large active downloads, passive uploads, slow readers (``--limit-rate``)
and clients cut off mid-transfer (``--max-time``), all at once; half-way through, the
SSH connection is dropped once (the sshd process serving ftptrio is killed) and
ftptrio reconnects. Every interval it prints RSS, open fds, trio tasks, sessions,
transfers and errors; at the end the trend (first vs last sample after warm-up).

    python bench/soak.py --minutes 30
    python bench/soak.py --quick          # 2 minutes, a sample every 15 s
    python bench/soak.py --log /tmp/s/ftptrio.log   # debug log; failed clients' curl -v beside it

pyftpdlib 2.2 is not the default: under this churn its event loop stops polling some of
its sockets (measured: its process idle in epoll_wait while a data connection it had
sent 8 MiB of 16 on sat with nothing queued, control commands sat unread in CLOSE-WAIT
connections, and a passive data connection sshd had opened carried nothing until
pyftpdlib's 30 s passive timeout closed it; 9 unexpected failures in 3 minutes). The
same run against vsftpd: 2,317 sessions, 0 failures.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import quote

import trio

import ftptrio
from _common import (MIB, bench_tmpdir, print_header, proc_fds, proc_status_kib, table,
                     write_random_file)
from ftptrio.testing import servers, trio_task_count

FILES = {"small.bin": 1024, "large.bin": 16 * MIB, "slow.bin": 64 * MIB}



class Traffic:
    """Counts of client runs: ok, failed (unexpectedly) and cut (on purpose)."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.cut = 0
        self.last_error = ""
        #: unexpected failures per kind of client
        self.failed_by_kind: dict[str, int] = {}
        #: where failed clients' curl -v output goes (--log)
        self.trace_dir: Path | None = None


async def _curl(traffic: Traffic, kind: str, args: list[str], *, cut_expected: bool = False,
                ) -> None:
    verbose = ["-v"] if traffic.trace_dir else []
    started = time.time()
    result = await trio.run_process(["curl", "-sS", *verbose, "--connect-timeout", "10", *args],
                                    capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode == 0:
        traffic.ok += 1
    elif cut_expected and result.returncode == 28:  # curl: operation timed out (our cut)
        traffic.cut += 1
    else:
        traffic.failed += 1
        traffic.failed_by_kind[kind] = traffic.failed_by_kind.get(kind, 0) + 1
        traffic.last_error = f"{kind}: curl {result.returncode}: {result.stderr.decode()[-200:]}"
        print(f"  client failed: {traffic.last_error.strip().splitlines()[-1]}", flush=True)
        if traffic.trace_dir:  # curl -v of the failed run, for the ftptrio log of that time
            trace = traffic.trace_dir / f"failed-{traffic.failed}-{kind}.txt"
            trace.write_bytes(f"started {time.strftime('%H:%M:%S', time.localtime(started))}"
                              f".{int(started % 1 * 1000):03d}\n".encode() + result.stderr)
            print(f"    curl -v: {trace}", flush=True)


async def _worker(traffic: Traffic, url: str, kind: str, deadline: float, upload: Path,
                  upload_dir: str) -> None:
    n = 0
    while trio.current_time() < deadline:
        n += 1
        if kind == "small":
            await _curl(traffic, kind, ["-o", "/dev/null", f"{url}/small.bin"])
        elif kind == "active":
            await _curl(traffic, kind, ["-P", "-", "-o", "/dev/null", f"{url}/large.bin"])
        elif kind == "upload":
            name = f"up-{id(trio.lowlevel.current_task())}-{n}.bin"
            await _curl(traffic, kind, ["-T", str(upload), f"{url}/{upload_dir}/{name}"])
        elif kind == "slow":
            await _curl(traffic, kind, ["--limit-rate", "4M", "--max-time", "6", "-o", "/dev/null",
                                  f"{url}/slow.bin"], cut_expected=True)
        elif kind == "reset":
            await _curl(traffic, kind, ["--max-time", "0.5", "-o", "/dev/null", f"{url}/slow.bin"],
                        cut_expected=True)


def _drop_ssh(sshd: servers.OpenSSHServer) -> int:
    """Kill the sshd processes serving connections (not the listener): the SSH
    connection drops as on a network failure."""
    out = subprocess.run(["pgrep", "-P", str(sshd.process.pid)], capture_output=True,
                         text=True, check=False).stdout.split()
    for pid in out:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(out)


async def soak(minutes: float, interval: float, workers: int, log_file: str | None,
               drop: bool, server: str) -> int:
    tmp = bench_tmpdir("soak")
    upload = Path(tmp) / "upload.bin"
    write_random_file(upload, 4 * MIB, seed=99)
    sshd = servers.start_openssh(tmp)
    if server == "vsftpd":
        ftp = servers.start_vsftpd(tmp, passive_count=400)
    else:
        ftp = servers.start_pyftpdlib(tmp, passive_count=400)
    for index, (name, size) in enumerate(FILES.items()):
        write_random_file(Path(ftp.root) / name, size, seed=index)
    try:
        config = ftptrio.Config(
            ssh=ftptrio.SSHOptions(host=sshd.host, port=sshd.port, username=sshd.username,
                                   client_keys=(sshd.client_key,),
                                   known_hosts=sshd.known_hosts),
            forwards=(ftptrio.ForwardSpec(ftp_host=ftp.host, ftp_port=ftp.port),))
        async with ftptrio.open_forwarder(config) as fwd:
            host, port = fwd.addresses[0]
            url = f"ftp://{quote(ftp.user)}:{quote(ftp.password)}@{host}:{port}"
            traffic = Traffic()
            if log_file:
                traffic.trace_dir = Path(log_file).resolve().parent
            start = trio.current_time()
            deadline = start + minutes * 60
            rows: list[list[object]] = []
            drops = 0
            async with trio.open_nursery() as nursery:
                for kind in ("small", "active", "upload", "slow", "reset") * workers:
                    nursery.start_soon(_worker, traffic, url, kind, deadline, upload,
                                       ftp.upload_dir)
                next_sample = start
                dropped = False
                while trio.current_time() < deadline:
                    if drop and not dropped and trio.current_time() - start >= minutes * 30:
                        drops = _drop_ssh(sshd)
                        dropped = True
                        print(f"  [{trio.current_time() - start:6.0f} s] dropped the SSH "
                              f"connection ({drops} sshd process(es) killed)", flush=True)
                    if trio.current_time() >= next_sample:
                        fds, socks = proc_fds(os.getpid())
                        row = [f"{trio.current_time() - start:.0f}",
                               f"{proc_status_kib(os.getpid()) / 1024:.1f}", fds, socks,
                               trio_task_count(), fwd.stats.sessions, fwd.stats.sessions_active,
                               fwd.stats.transfers, fwd.stats.transfer_errors,
                               traffic.ok, traffic.cut, traffic.failed]
                        rows.append(row)
                        print("  " + "  ".join(str(c) for c in row), flush=True)
                        next_sample += interval
                    await trio.sleep(1)
            await trio.sleep(2)  # let the last sessions end
            fds, socks = proc_fds(os.getpid())
            rows.append(["end", f"{proc_status_kib(os.getpid()) / 1024:.1f}", fds, socks,
                         trio_task_count(), fwd.stats.sessions, fwd.stats.sessions_active,
                         fwd.stats.transfers, fwd.stats.transfer_errors,
                         traffic.ok, traffic.cut, traffic.failed])
    finally:
        ftp.stop()
        sshd.stop()
    print()
    print(table(["s", "RSS MiB", "fds", "socks", "tasks", "sessions", "active", "transfers",
                 "xfer errors", "clients ok", "cut", "failed"], rows))
    warm = rows[1] if len(rows) > 2 else rows[0]
    last = rows[-2] if len(rows) > 2 else rows[-1]
    print(f"\ntrend after warm-up (t={warm[0]} s -> t={last[0]} s): RSS "
          f"{float(last[1]) - float(warm[1]):+.1f} MiB, fds {int(last[2]) - int(warm[2]):+d}, "
          f"tasks {int(last[4]) - int(warm[4]):+d}; unexpected client failures: "
          f"{traffic.failed} {traffic.failed_by_kind or ''}"
          + (f" (last: {traffic.last_error})" if traffic.failed else ""))
    print(f"SSH drops: {int(drop)} ({drops} process(es)); at the end: {rows[-1][6]} session(s) active, "
          f"{rows[-1][2]} fds, {rows[-1][4]} tasks")
    return 0


async def stop_on_sigterm(run: Callable[..., Awaitable[int]], *args: object) -> int:
    """``run(*args)``, cancelled on SIGTERM (as on Ctrl-C) so that its ``finally`` stops
    the servers it started; 143 (128 + SIGTERM) then, as a shell reports it."""
    result = 128 + signal.SIGTERM
    async with trio.open_nursery() as nursery:
        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    print("SIGTERM: stopping the clients, ftptrio and the servers", flush=True)
                    nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        result = await run(*args)
        nursery.cancel_scope.cancel()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per sample")
    parser.add_argument("--workers", type=int, default=2, help="clients of each kind")
    parser.add_argument("--quick", action="store_true", help="2 minutes, a sample every 15 s")
    parser.add_argument("--log", metavar="FILE",
                        help="ftptrio's debug log to FILE; failed clients' curl -v output "
                             "beside it")
    parser.add_argument("--server", choices=("vsftpd", "pyftpdlib"), default="vsftpd",
                        help="FTP server (default vsftpd: pyftpdlib 2.2 itself stalls under "
                             "this churn, see the module docstring)")
    parser.add_argument("--no-drop", action="store_true",
                        help="do not drop the SSH connection half-way")
    args = parser.parse_args()
    if args.log:
        handler = logging.FileHandler(args.log, mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("ftptrio").addHandler(handler)
        logging.getLogger("ftptrio").setLevel(logging.DEBUG)
    if args.quick:
        args.minutes, args.interval = 2.0, 15.0
    print_header(f"soak: {args.minutes:g} min of mixed traffic, {args.workers} client(s) "
                 f"of each kind against {args.server}"
                 + ("" if args.no_drop else ", one SSH drop half-way"))
    print("  columns: s  RSS_MiB  fds  socks  tasks  sessions  active  transfers  "
          "xfer_errors  clients_ok  cut  failed")
    return trio.run(stop_on_sigterm, soak, args.minutes, args.interval, args.workers, args.log,
                    not args.no_drop, args.server)


if __name__ == "__main__":
    sys.exit(main())
