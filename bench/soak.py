"""Soak: minutes of mixed FTP traffic through one forwarder, with resource trends, and
the same traffic straight to the FTP server at the same time (the control route).

ftptrio runs in this process (``open_forwarder``) against a real OpenSSH sshd and
vsftpd (or pyftpdlib: ``--server``); curl clients in subprocesses make the traffic: small passive
downloads, large active downloads, passive uploads, slow readers (``--limit-rate``)
and clients cut off mid-transfer (``--max-time``), all at once; half-way through, the
SSH connection is dropped once (the sshd process serving ftptrio is killed) and
ftptrio reconnects. Every interval it prints RSS, open fds, trio tasks, sessions,
transfers, the clients of both routes and the temp filesystem's use; at the end one
table per route (client runs, failures by reason) and, for ftptrio, RSS, fds and
tasks before the first client and after the last one.

    python bench/soak.py --minutes 30
    python bench/soak.py --quick          # 2 minutes, a sample every 15 s
    python bench/soak.py --log /tmp/s/ftptrio.log   # debug log; failed clients' curl -v beside it

Control route (``--control``): the same client code, with the same mix of kinds and the
same number of workers, sends the same requests straight to the FTP server, so that a
failure on the ftptrio route that the direct route shares at the same time is the
machine's or the server's, not ftptrio's. Unpaced, the direct route runs about 8 times
as many sessions as the ftptrio route (8 minutes, measured: 30,656 vs 3,647): on 2
cores its curl and vsftpd processes would take the CPU the ftptrio route needs and
the comparison would measure starvation. So by default (``paced``) each direct worker
starts its n-th run only once its ftptrio twin (same kind, same index) has started its
n-th: both routes make the same requests at the same rate and moments, and the direct
route never adds more than the ftptrio route's own load. ``free`` lets it run unpaced
(same number of workers), ``off`` leaves it out. The final table gives the runs of each
kind per route (equal when paced); straight from vsftpd most "reset" clients fetch all
64 MiB within their 0.5 s and count as ok, not cut. A failure is printed with its route,
kind and curl's message, and counted per route by reason; ftptrio-route failures of
runs in flight at the SSH drop, or started within 15 s after it, are counted apart
("at SSH drop").

Temp files: the servers' files, logs and the uploads live in a temp dir on /dev/shm
(``--tmp-base`` to choose another place). Each upload is checked (size and content as
stored by the server) and deleted at once, failed or cut ones too; the temp dir is
removed at exit, also on Ctrl-C and SIGTERM. Before anything starts the bench checks
that the temp filesystem (and, for a tmpfs, the memory behind it) has room for what the
run needs, and refuses to start otherwise. Before this, every 4 MiB upload stayed
there: about 1,300 per 30 minutes per route, and the dirs of finished runs too.

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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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
UPLOAD_SIZE = 4 * MIB
KINDS = ("small", "active", "upload", "slow", "reset")
ROUTES = ("ftptrio", "direct")
#: temp space the server and sshd logs take per minute of run, both routes together
#: (vsftpd logs every command; measured about 2 MiB a minute with 2 workers per kind,
#: counted with a wide margin)
LOG_BYTES_PER_MINUTE = 8 * MIB
#: kept free beyond what the run needs
MARGIN = 256 * MIB
#: ftptrio-route failures of runs started this long after the SSH drop count as "at SSH drop"
DROP_WINDOW = 15.0


class Traffic:
    """Counts of one route's client runs: ok, failed (unexpectedly) and cut (on purpose)."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.ok = 0
        self.failed = 0
        self.cut = 0
        self.last_error = ""
        #: client runs per kind, and of them ok and cut
        self.runs_by_kind: dict[str, list[int]] = {kind: [0, 0, 0] for kind in KINDS}
        #: unexpected failures per reason ("kind: curl N message")
        self.failed_by_reason: dict[str, int] = {}
        #: where failed clients' curl -v output goes (--log)
        self.trace_dir: Path | None = None
        #: trio time of the SSH drop (ftptrio route only), to attribute failures to it
        self.drop_at: float | None = None

    @property
    def runs(self) -> int:
        return self.ok + self.failed + self.cut

    def fail(self, kind: str, reason: str, started: float, detail: str) -> None:
        if self.drop_at is not None and started <= self.drop_at + DROP_WINDOW \
                and trio.current_time() >= self.drop_at:
            reason = f"{reason} (at SSH drop)"
        key = f"{kind}: {reason}"
        self.failed += 1
        self.failed_by_reason[key] = self.failed_by_reason.get(key, 0) + 1
        self.last_error = f"{key}: {detail}"
        print(f"  client failed [{self.route}] {key}", flush=True)


def curl_reason(returncode: int, stderr: bytes) -> tuple[str, str]:
    """(reason, detail) of a failed curl run: its exit code and message, with the numbers
    taken out of the reason so that equal failures count together."""
    lines = [ln for ln in stderr.decode(errors="replace").splitlines()
             if ln.startswith("curl: (")]
    detail = lines[-1] if lines else stderr.decode(errors="replace").strip()[-200:]
    message = re.sub(r"^curl: \(\d+\) ", "", detail)
    message = re.sub(r"\d+", "N", message)[:120]
    return f"curl {returncode} {message}".strip(), detail


async def _curl(traffic: Traffic, kind: str, args: list[str], *, cut_expected: bool = False,
                ) -> bool:
    """One curl run; True if it succeeded."""
    verbose = ["-v"] if traffic.trace_dir else []
    started = trio.current_time()
    started_wall = time.time()
    result = await trio.run_process(["curl", "-sS", *verbose, "--connect-timeout", "10", *args],
                                    capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode == 0:
        return True
    if cut_expected and result.returncode == 28:  # curl: operation timed out (our cut)
        traffic.cut += 1
        traffic.runs_by_kind[kind][2] += 1
        return False
    reason, detail = curl_reason(result.returncode, result.stderr)
    traffic.fail(kind, reason, started, detail)
    if traffic.trace_dir:  # curl -v of the failed run, for the ftptrio log of that time
        trace = traffic.trace_dir / f"failed-{traffic.route}-{traffic.failed}-{kind}.txt"
        trace.write_bytes(f"started {time.strftime('%H:%M:%S', time.localtime(started_wall))}"
                          f".{int(started_wall % 1 * 1000):03d}\n".encode() + result.stderr)
        print(f"    curl -v: {trace}", flush=True)
    return False


def check_upload(path: Path, expected: bytes) -> str | None:
    """None if the server stored ``expected`` at ``path``, else what is wrong; the file
    is deleted either way (uploads would otherwise fill the temp filesystem)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "stored file missing"
    finally:
        path.unlink(missing_ok=True)
    if len(data) != len(expected):
        return f"stored {len(data)} bytes of {len(expected)}"
    if data != expected:
        return "stored content differs"
    return None


async def _worker(traffic: Traffic, url: str, kind: str, deadline: float, upload: Path,
                  upload_content: bytes, upload_dir: Path, upload_ftp_dir: str,
                  pace_out: trio.Semaphore | None, pace_in: trio.Semaphore | None,
                  ) -> None:
    """Runs of one kind of client until ``deadline``. ``pace_out`` is released at each
    run's start (an ftptrio worker), ``pace_in`` acquired before each (its direct twin)."""
    n = 0
    tag = f"{traffic.route}-{kind}-{id(trio.lowlevel.current_task()):x}"
    while trio.current_time() < deadline:
        if pace_in is not None:
            with trio.move_on_at(deadline):
                await pace_in.acquire()
            if trio.current_time() >= deadline:
                break
        if pace_out is not None:
            pace_out.release()
        n += 1
        traffic.runs_by_kind[kind][0] += 1
        ok = False
        started = trio.current_time()
        if kind == "small":
            ok = await _curl(traffic, kind, ["-o", "/dev/null", f"{url}/small.bin"])
        elif kind == "active":
            ok = await _curl(traffic, kind, ["-P", "-", "-o", "/dev/null", f"{url}/large.bin"])
        elif kind == "upload":
            name = f"up-{tag}-{n}.bin"
            ok = await _curl(traffic, kind, ["-T", str(upload), f"{url}/{upload_ftp_dir}/{name}"])
            problem = check_upload(upload_dir / name, upload_content)
            if ok and problem:
                traffic.fail(kind, problem, started, problem)
                ok = False
        elif kind == "slow":
            ok = await _curl(traffic, kind, ["--limit-rate", "4M", "--max-time", "6", "-o",
                                             "/dev/null", f"{url}/slow.bin"], cut_expected=True)
        elif kind == "reset":
            ok = await _curl(traffic, kind, ["--max-time", "0.5", "-o", "/dev/null",
                                             f"{url}/slow.bin"], cut_expected=True)
        if ok:
            traffic.ok += 1
            traffic.runs_by_kind[kind][1] += 1


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


# ------------------------------------------------------------------ temp space
def _fs_type(path: str) -> str:
    """File system type of the mount holding ``path`` (from /proc/mounts)."""
    best, fstype = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1].replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) \
                        and len(mount) > len(best):
                    best, fstype = mount, parts[2]
    except OSError:
        pass
    return fstype


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def space_needed(minutes: float, workers: int, control: bool) -> int:
    """Bytes of temp space the run needs: its fixed files (and the test files the
    server launcher writes), the uploads in flight (each deleted once checked), the
    logs, and a margin."""
    routes = 2 if control else 1
    server_files = sum(size for size, _seed in servers.DATA_FILES.values())
    return (sum(FILES.values()) + server_files + UPLOAD_SIZE + routes * workers * UPLOAD_SIZE
            + int(minutes * LOG_BYTES_PER_MINUTE) + MARGIN)


def room_problem(path: str, need: int) -> str | None:
    """None if the filesystem of ``path`` has ``need`` bytes free (and, for a tmpfs,
    as much memory available), else a message saying what is missing."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    size = st.f_blocks * st.f_frsize
    problems = []
    if free < need:
        problems.append(f"{free / MIB:,.0f} MiB free of {size / MIB:,.0f} MiB "
                        f"({100 * (size - free) / max(size, 1):.0f} % used)")
    fstype = _fs_type(os.path.realpath(path))
    if fstype == "tmpfs":
        available = _mem_available()
        if available < need:
            problems.append(f"tmpfs, and only {available / MIB:,.0f} MiB of memory available")
    if not problems:
        return None
    leftovers = []
    base = Path(path).parent
    try:
        for d in sorted(base.glob("soak*")):
            if d.is_dir() and str(d) != path:
                leftovers.append(str(d))
    except OSError:
        pass
    return (f"not enough room in {base} ({fstype}) for this run: it needs "
            f"{need / MIB:,.0f} MiB, and there is {'; '.join(problems)}. Free some space"
            + (f" (left by earlier soak runs: {', '.join(leftovers[:5])}"
               f"{' ...' if len(leftovers) > 5 else ''})" if leftovers else "")
            + ", or put the temp dir elsewhere with --tmp-base DIR.")


def _tmp_used(path: str) -> float:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize / MIB


def _du(path: str) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total / MIB


# ------------------------------------------------------------------ the run
def _snapshot(fwd: ftptrio.Forwarder) -> dict[str, float]:
    fds, socks = proc_fds(os.getpid())
    return {"rss": proc_status_kib(os.getpid()) / 1024, "fds": fds, "socks": socks,
            "tasks": trio_task_count(), "active": fwd.stats.sessions_active}


def report(traffics: dict[str, Traffic], fwd_sessions: int, resources: list[list[object]],
           drops: int, drop: bool, partial: bool) -> None:
    print()
    if partial:
        print("INTERRUPTED: partial figures")
    rows = []
    for route, traffic in traffics.items():
        rows.append([route, traffic.runs, fwd_sessions if route == "ftptrio" else "-",
                     traffic.ok, traffic.cut, traffic.failed])
    print(table(["route", "client runs", "ftptrio sessions", "ok", "cut", "failed"], rows))
    kinds = []
    for kind in KINDS:
        kinds.append([kind] + [f"{t.runs_by_kind[kind][0]} ({t.runs_by_kind[kind][1]} ok, "
                               f"{t.runs_by_kind[kind][2]} cut)" for t in traffics.values()])
    print(table(["client runs by kind", *traffics], kinds))
    for route, traffic in traffics.items():
        if traffic.failed_by_reason:
            print(f"{route} failures by reason:")
            for reason, count in sorted(traffic.failed_by_reason.items(), key=lambda kv: -kv[1]):
                print(f"  {count:5d}  {reason}")
        else:
            print(f"{route} failures by reason: none")
    if resources:
        print()
        print("ftptrio process (both routes' clients are driven from it too), before the first "
              "client and after the last:")
        print(table(["", "RSS MiB", "fds", "socks", "tasks", "sessions active"], resources))
    print(f"SSH drops: {int(drop)} ({drops} process(es))")
    sys.stdout.flush()


async def soak(minutes: float, interval: float, workers: int, log_file: str | None,
               drop: bool, server: str, control: str, tmp_base: str | None) -> int:
    if tmp_base:
        os.makedirs(tmp_base, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="soak", dir=tmp_base)
    else:
        tmp = bench_tmpdir("soak")
    need = space_needed(minutes, workers, control != "off")
    problem = room_problem(tmp, need)
    if problem:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"soak: {problem}", file=sys.stderr, flush=True)
        return 2
    print(f"temp dir {tmp} ({_fs_type(os.path.realpath(tmp))}; the run needs about "
          f"{need / MIB:,.0f} MiB; removed at exit)", flush=True)
    sshd = ftp = None
    traffics = {route: Traffic(route) for route in ROUTES if route == "ftptrio" or control != "off"}
    resources: list[list[object]] = []
    drops = 0
    fwd_sessions = 0
    finished = False
    peak_du = 0.0
    try:
        upload = Path(tmp) / "upload.bin"
        write_random_file(upload, UPLOAD_SIZE, seed=99)
        upload_content = upload.read_bytes()
        sshd = servers.start_openssh(os.path.join(tmp, "sshd"))
        if server == "vsftpd":
            ftp = servers.start_vsftpd(os.path.join(tmp, "ftp"), passive_count=400)
        else:
            ftp = servers.start_pyftpdlib(os.path.join(tmp, "ftp"), passive_count=400)
        for index, (name, size) in enumerate(FILES.items()):
            write_random_file(Path(ftp.root) / name, size, seed=index)
        upload_dir = Path(ftp.root) / ftp.upload_dir
        config = ftptrio.Config(
            ssh=ftptrio.SSHOptions(host=sshd.host, port=sshd.port, username=sshd.username,
                                   client_keys=(sshd.client_key,),
                                   known_hosts=sshd.known_hosts),
            forwards=(ftptrio.ForwardSpec(ftp_host=ftp.host, ftp_port=ftp.port),))
        async with ftptrio.open_forwarder(config) as fwd:
            host, port = fwd.addresses[0]
            user = f"{quote(ftp.user)}:{quote(ftp.password)}"
            urls = {"ftptrio": f"ftp://{user}@{host}:{port}",
                    "direct": f"ftp://{user}@{ftp.host}:{ftp.port}"}
            for traffic in traffics.values():
                if log_file:
                    traffic.trace_dir = Path(log_file).resolve().parent
            before = _snapshot(fwd)
            resources.append(["before", before["rss"], before["fds"], before["socks"],
                              before["tasks"], before["active"]])
            start = trio.current_time()
            deadline = start + minutes * 60
            rows: list[list[object]] = []
            try:
                async with trio.open_nursery() as nursery:
                    for index in range(workers):
                        for kind in KINDS:
                            pace = trio.Semaphore(0) if control == "paced" else None
                            for route, traffic in traffics.items():
                                nursery.start_soon(
                                    _worker, traffic, urls[route], kind, deadline, upload,
                                    upload_content, upload_dir, ftp.upload_dir,
                                    pace if route == "ftptrio" else None,
                                    pace if route == "direct" else None)
                    next_sample = start
                    dropped = False
                    while trio.current_time() < deadline:
                        if drop and not dropped and trio.current_time() - start >= minutes * 30:
                            traffics["ftptrio"].drop_at = trio.current_time()
                            drops = _drop_ssh(sshd)
                            dropped = True
                            print(f"  [{trio.current_time() - start:6.0f} s] dropped the SSH "
                                  f"connection ({drops} sshd process(es) killed)", flush=True)
                        if trio.current_time() >= next_sample:
                            snap = _snapshot(fwd)
                            peak_du = max(peak_du, _du(tmp))
                            row = [f"{trio.current_time() - start:.0f}", f"{snap['rss']:.1f}",
                                   snap["fds"], snap["socks"], snap["tasks"],
                                   fwd.stats.sessions, snap["active"], fwd.stats.transfers,
                                   fwd.stats.transfer_errors]
                            for traffic in traffics.values():
                                row += [traffic.ok, traffic.cut, traffic.failed]
                            row += [f"{_tmp_used(tmp):.0f}", f"{_du(tmp):.0f}"]
                            rows.append(row)
                            print("  " + "  ".join(str(c) for c in row), flush=True)
                            next_sample += interval
                        await trio.sleep(1)
                await trio.sleep(2)  # let the last sessions end
                after = _snapshot(fwd)
                resources.append(["after", after["rss"], after["fds"], after["socks"],
                                  after["tasks"], after["active"]])
                resources.append(["change", after["rss"] - before["rss"],
                                  after["fds"] - before["fds"], after["socks"] - before["socks"],
                                  after["tasks"] - before["tasks"],
                                  after["active"] - before["active"]])
                finished = True
            finally:
                fwd_sessions = fwd.stats.sessions
        headers = ["s", "RSS MiB", "fds", "socks", "tasks", "sessions", "active", "transfers",
                   "xfer errors"]
        for route in traffics:
            headers += [f"{route} ok", "cut", "failed"]
        headers += ["tmpfs used MiB", "temp dir MiB"]
        print()
        print(table(headers, rows))
        if len(rows) > 2:
            warm, last = rows[1], rows[-1]
            print(f"\ntrend after warm-up (t={warm[0]} s -> t={last[0]} s): RSS "
                  f"{float(last[1]) - float(warm[1]):+.1f} MiB, fds {int(last[2]) - int(warm[2]):+d}, "
                  f"tasks {int(last[4]) - int(warm[4]):+d}")
        print(f"temp dir at most {peak_du:.0f} MiB (fixed files "
              f"{(sum(FILES.values()) + UPLOAD_SIZE) / MIB:.0f} MiB)")
    finally:
        if not finished:  # cancelled (SIGTERM, Ctrl-C) or failed: what there is
            report(traffics, fwd_sessions, resources, drops, drop, partial=True)
        if ftp is not None:
            ftp.stop()
        if sshd is not None:
            sshd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"removed {tmp}", flush=True)
    report(traffics, fwd_sessions, resources, drops, drop, partial=False)
    return 0


async def stop_on_sigterm(run: Callable[..., Awaitable[int]], *args: object) -> int:
    """``run(*args)``, cancelled on SIGTERM (as on Ctrl-C) so that its ``finally`` stops
    the servers it started and removes its temp dir; 143 (128 + SIGTERM) then, as a
    shell reports it."""
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
    parser.add_argument("--workers", type=int, default=2, help="clients of each kind, per route")
    parser.add_argument("--quick", action="store_true", help="2 minutes, a sample every 15 s")
    parser.add_argument("--log", metavar="FILE",
                        help="ftptrio's debug log to FILE; failed clients' curl -v output "
                             "beside it")
    parser.add_argument("--server", choices=("vsftpd", "pyftpdlib"), default="vsftpd",
                        help="FTP server (default vsftpd: pyftpdlib 2.2 itself stalls under "
                             "this churn, see the module docstring)")
    parser.add_argument("--no-drop", action="store_true",
                        help="do not drop the SSH connection half-way")
    parser.add_argument("--control", choices=("paced", "free", "off"), default="paced",
                        help="the control route, the same clients straight to the FTP server: "
                             "paced (default) to the ftptrio route's rate, free (unpaced, "
                             "same number of workers), or off")
    parser.add_argument("--tmp-base", metavar="DIR",
                        help="where to make the temp dir (default /dev/shm, else the system's)")
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
                 + ("" if args.no_drop else ", one SSH drop half-way")
                 + ("" if args.control == "off" else
                    f"; control route straight to {args.server} ({args.control})"))
    columns = "s  RSS_MiB  fds  socks  tasks  sessions  active  transfers  xfer_errors  " \
              "ftptrio_ok  cut  failed"
    if args.control != "off":
        columns += "  direct_ok  cut  failed"
    print(f"  columns: {columns}  tmpfs_used_MiB  temp_dir_MiB")
    return trio.run(stop_on_sigterm, soak, args.minutes, args.interval, args.workers, args.log,
                    not args.no_drop, args.server, args.control, args.tmp_base)


if __name__ == "__main__":
    sys.exit(main())
