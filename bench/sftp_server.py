#!/usr/bin/env python3
"""FTP served from SFTP (--sftp-server) against OpenSSH sftp and FTP forwarding, same run.

One real OpenSSH sshd (password and key logins, ``Subsystem sftp internal-sftp``) and a
vsftpd on its loopback, where a throwaway local user (servers.ensure_system_user, needs
root) logs in with its password; at each RTT, wan.py's delay proxy (bench/_common.py,
start_proxy; its own loopback address with a cubic route unless --bbr) sits in front of
sshd. The same files, in a directory of that user's home, go three ways (--routes picks
a subset by key):

  sftp-server  FTP client -> ftptrio --sftp-server -> proxy -> sshd's SFTP (no FTP server
               involved); --login ftp (default): the FTP login is the SSH password login
               of the session's own SSH connection; --login own: ftptrio's key login
  sftp         OpenSSH `sftp -b` with the key (its session set-up subtracted): the reference
  forward      FTP forwarding through ftptrio (-L) -> proxy -> sshd -> vsftpd

Large files (--size, default 200 MiB): curl downloads to /dev/null and uploads, timed as
in wan.py (time_total - time_pretransfer: login and directory changes excluded; sftp: the
batch's wall time minus the median of three `pwd` batches at the same RTT). MB/s is the
median of --repeat.
Many small files (--files x --file-size, default 200 x 4 KiB): wan_files.py's lean client
in one FTP session (per file EPSV and RETR or STOR, each reply awaited), against one
`sftp -b` session that gets (then puts) the same files; ms per file and round trips per
file (ms / RTT).

Reported per RTT: MB/s down and up and the ratio to sftp; ms per file and the ratio of
time per file to sftp's. Goals (issue 28): large files at 50 ms >= 1.0 x sftp, small files
<= 1.0 x sftp's time per file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from wan import curl_time  # noqa: E402
from wan_files import FILES_DIR, Row, lean_route, per_rtt_table, sftp_routes, write_files  # noqa: E402

SEED = 20261206
BIG_NAME = "sftp_server_big.bin"
ROUTE_KEYS = ("sftp-server", "sftp", "forward")
LABELS = {"sftp-server": "ftptrio --sftp-server", "sftp": "sftp",
          "forward": "ftptrio -L (FTP forwarding)"}
TEST_USER = "ftptrio-sftp"


@dataclasses.dataclass
class SFTPServerProcess:
    """ftptrio --sftp-server as a subprocess, listening on ``port``."""

    process: subprocess.Popen
    port: int
    log_path: str

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""


def start_sftp_server(bed: C.Bed, ssh: C.servers.OpenSSHServer, login: str,
                      extra: list[str], tag: str) -> SFTPServerProcess:
    """``python -m ftptrio --sftp-server 127.0.0.1:PORT`` towards ``ssh`` (a free PORT,
    three tries), stopped with the bed; ``login``: its --sftp-login."""
    last = ""
    for _attempt in range(3):
        port = C.servers.free_port()
        args = [sys.executable, "-m", "ftptrio", "--sftp-server", f"{C.HOST}:{port}",
                "--sftp-login", login, "-p", str(ssh.port),
                "-o", f"UserKnownHostsFile={ssh.known_hosts}", "-o", f"Ciphers={C.AES}",
                os.environ.get("FTPTRIO_BENCH_VERBOSITY", "-q"), *extra]
        if login == "own":
            args += ["-i", ssh.client_key, f"{ssh.username}@{ssh.host}"]
        else:
            args.append(ssh.host)
        log_path = os.path.join(bed.workdir, f"{tag}-{port}.log")
        with open(log_path, "ab") as log:
            proc = bed.add(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=log, start_new_session=True))
        server = SFTPServerProcess(proc, port, log_path)
        try:
            C.servers.wait_for_port(C.HOST, port, timeout=30, process=proc)
            return server
        except (TimeoutError, RuntimeError) as exc:
            C.stop(proc)
            last = f"{exc}\n{server.log()[-3000:]}"
            if "in use" not in last:
                break
    raise RuntimeError(f"ftptrio --sftp-server did not start: {last}")


def above_setup(seconds: float) -> float:
    """An sftp time minus its session set-up, or NaN (shown as "-") when the set-up's
    own variation swallowed it (small --quick transfers on a LAN)."""
    return seconds if seconds > 0 else float("nan")


@contextlib.contextmanager
def sftp_bed(keep: bool) -> Iterator[C.Bed]:
    """sshd with password logins for the test user, and vsftpd where that user logs in
    (its data directory in the user's home); everything stopped on exit."""
    user = C.servers.ensure_system_user(TEST_USER)
    workdir = C.bench_tmpdir("ftptrio-bench-sftp-server-")
    with contextlib.ExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, workdir, True)
        ssh = C.servers.start_openssh(os.path.join(workdir, "sshd"), password_user=user)
        stack.callback(ssh.stop)
        ftp = C.servers.start_vsftpd(os.path.join(workdir, "ftp"), local_user=user,
                                     passive_count=400)
        stack.callback(ftp.stop)
        yield C.Bed(workdir, ssh, ftp, stack, "vsftpd")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=200 * C.MIB,
                    help="bytes of the large file (default 200 MiB)")
    ap.add_argument("--files", type=int, default=200, help="small files (default 200)")
    ap.add_argument("--file-size", type=int, default=4096,
                    help="bytes per small file (default 4096)")
    ap.add_argument("--rtt", default="0,50", help="RTTs in ms, comma-separated (default 0,50)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="repetitions of the large-file transfers; medians reported")
    ap.add_argument("--routes", default=",".join(ROUTE_KEYS),
                    help="comma list of " + ", ".join(ROUTE_KEYS) + " (default all)")
    ap.add_argument("--login", choices=("ftp", "own"), default="ftp",
                    help="--sftp-login of the sftp-server route (default ftp)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 8 MiB, 10 small files, 1 repetition, RTT 0 and 50 ms")
    ap.add_argument("--ftptrio-arg", action="append", default=[],
                    help="extra command-line argument for both ftptrio routes (repeatable)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="the lean client's socket timeout (default 60 s)")
    ap.add_argument("--bbr", action="store_true",
                    help="keep the system's congestion control around the proxy (see wan.py)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = ap.parse_args()
    if args.quick:
        args.size, args.files, args.repeat, args.rtt = 8 * C.MIB, 10, 1, "0,50"
    keys = [k.strip() for k in args.routes.split(",") if k.strip()]
    for k in keys:
        if k not in ROUTE_KEYS:
            ap.error(f"unknown route {k!r} (choose from {', '.join(ROUTE_KEYS)})")
    if args.files < 1 or args.size < 1 or args.repeat < 1:
        ap.error("--files, --size and --repeat must be at least 1")
    keys = [k for k in ROUTE_KEYS if k in keys]
    rtts = [float(x) for x in args.rtt.split(",")]

    C.print_header("FTP served from SFTP (--sftp-server) against sftp and FTP forwarding "
                   "(delay proxy in front of sshd)")
    print(f"large file {args.size} bytes ({args.size / C.MIB:.0f} MiB) x {args.repeat}; "
          f"{args.files} small files x {args.file_size} bytes; RTTs {rtts} ms; routes "
          f"{', '.join(keys)}; --sftp-login {args.login}; cipher {C.AES} everywhere; "
          f"FTP server of the forward route: vsftpd", flush=True)
    t_start = time.monotonic()
    errors: list[str] = []
    times: dict[tuple[float, str, str], list[float]] = {}
    small: list[tuple[float, list[Row]]] = []
    with sftp_bed(args.keep) as bed:
        ftp = bed.ftp
        user = C.servers.ensure_system_user(TEST_USER)
        root = Path(ftp.root)
        big = root / BIG_NAME
        C.write_random_file(big, args.size, SEED)
        payloads = write_files(root / FILES_DIR, args.files, args.file_size,
                               random.Random(SEED))
        local = Path(bed.workdir) / "local"
        write_files(local, args.files, args.file_size, random.Random(SEED))
        user.give(root)
        names = sorted(payloads)
        # the FTP root (vsftpd's local_root) as seen from the SFTP login directory (home)
        from_home = os.path.relpath(root, user.home)
        link = C.link_address(bed, not args.bbr)
        print(f"files in {root}; delay proxy on {link} "
              f"({'cubic route' if link != C.HOST else 'system congestion control'})",
              flush=True)

        for rtt in rtts:
            ssh = C.delayed_ssh(bed, link, rtt)
            # route -> (large-file timer, small-files runner)
            routes: dict[str, tuple[Callable[[str], float], Callable[[], list[Row]]]] = {}
            if "sftp-server" in keys:
                srv = start_sftp_server(bed, ssh, args.login, args.ftptrio_arg, f"sftp{rtt:g}")
                view = ftp if args.login == "ftp" else dataclasses.replace(
                    ftp, user=ssh.username, password="ignored")

                def server_small(port: int = srv.port, view: C.servers.FTPServer = view,
                                 ) -> list[Row]:
                    retr, stor, errs = lean_route(port, view, names, payloads, "EPSV",
                                                  "srv-", args.timeout, cwd=from_home)
                    errors.extend(f"RTT {rtt:g} sftp-server: {e}" for e in errs)
                    return [Row(f"{LABELS['sftp-server']} RETR", len(names), retr, "sftp get"),
                            Row(f"{LABELS['sftp-server']} STOR", len(names), stor, "sftp put")]
                routes["sftp-server"] = (
                    lambda d, p=srv.port, v=view: curl_time(v, p, d, big, args.size,
                                                            url_prefix=from_home + "/"),
                    server_small)
            if "sftp" in keys:
                overhead = C.sftp_setup_time(bed.workdir, ssh)
                print(f"RTT {rtt:g} ms: sftp set-up {overhead * 1000:.0f} ms subtracted",
                      flush=True)
                dest = root / ftp.upload_dir / "sftp_big.bin"

                def sftp_large(d: str, ssh: C.servers.OpenSSHServer = ssh,
                               overhead: float = overhead, dest: Path = dest) -> float:
                    batch = f'get "{big}" /dev/null\n' if d == "down" else f'put "{big}" "{dest}"\n'
                    dt = C.sftp_time(bed.workdir, ssh, batch) - overhead
                    if d == "up":
                        got = dest.stat().st_size
                        dest.unlink()
                        if got != args.size:
                            raise RuntimeError(f"sftp put stored {got} of {args.size} bytes")
                    return above_setup(dt)

                def sftp_small(ssh: C.servers.OpenSSHServer = ssh) -> list[Row]:
                    get_s, put_s, errs = sftp_routes(bed.workdir, ssh, ftp, names, payloads, local)
                    errors.extend(f"RTT {rtt:g} sftp: {e}" for e in errs)
                    return [Row("sftp get", len(names), above_setup(get_s), None),
                            Row("sftp put", len(names), above_setup(put_s), None)]
                routes["sftp"] = (sftp_large, sftp_small)
            if "forward" in keys:
                fx = C.start_ftptrio(ssh, ftp, bed.workdir, tag=f"forward{rtt:g}",
                                     extra=["-o", f"Ciphers={C.AES}", *args.ftptrio_arg])
                bed.stack.callback(fx.stop)

                def forward_small(port: int = fx.port) -> list[Row]:
                    retr, stor, errs = lean_route(port, ftp, names, payloads, "EPSV", "fwd-",
                                                  args.timeout)
                    errors.extend(f"RTT {rtt:g} forward: {e}" for e in errs)
                    return [Row(f"{LABELS['forward']} RETR", len(names), retr, "sftp get"),
                            Row(f"{LABELS['forward']} STOR", len(names), stor, "sftp put")]
                routes["forward"] = (
                    lambda d, p=fx.port: curl_time(ftp, p, d, big, args.size), forward_small)

            def measure(what: str, run: Callable[[], None]) -> None:
                try:
                    run()
                except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                    errors.append(f"RTT {rtt:g} {what}: {exc!r}")
                    print(f"ERROR RTT {rtt:g} {what}: {exc!r}", flush=True)

            for _rep in range(args.repeat):
                for key, (large, _small) in routes.items():
                    for d in ("down", "up"):
                        measure(f"{key} large {d}", lambda key=key, large=large, d=d:
                                times.setdefault((rtt, key, d), []).append(large(d)))
            rows: list[Row] = []
            # sftp first: the other rows are compared with it
            for key in sorted(routes, key=lambda k: k != "sftp"):
                measure(f"{key} small files",
                        lambda key=key: rows.extend(routes[key][1]()))
            small.append((rtt, rows))
            print(f"... RTT {rtt:g} ms done ({time.monotonic() - t_start:.0f} s)", flush=True)

    def mbps(rtt: float, key: str, d: str) -> float:
        v = times.get((rtt, key, d))
        return args.size / C.median(v) / 1e6 if v else float("nan")

    print()
    print(f"## Large file ({args.size / C.MIB:.0f} MiB), MB/s (median of {args.repeat}) "
          "and x sftp")
    table = []
    for rtt in rtts:
        for key in keys:
            table.append([f"{rtt:g} ms", LABELS[key]] + [
                v for d in ("down", "up")
                for v in (mbps(rtt, key, d), C.ratio(mbps(rtt, key, d), mbps(rtt, "sftp", d)))])
    print(C.table(["RTT", "route", "down MB/s", "x sftp", "up MB/s", "x sftp"], table))
    for rtt, rows in small:
        print()
        print(f"## {args.files} small files x {args.file_size} bytes, RTT {rtt:g} ms")
        print(per_rtt_table(rtt, rows))
    print()
    print("Goals: large files at 50 ms >= 1.0 x sftp (down and up); small files <= 1.0 x "
          "sftp's time per file (x sftp time). sftp \"-\": its time minus its session set-up "
          "was not above zero (too little to measure)")
    print(f"errors: {len(errors)}")
    for e in errors[:50]:
        print("  " + e)
    print(f"total wall time {time.monotonic() - t_start:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
