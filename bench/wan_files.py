#!/usr/bin/env python3
"""Many small files across a long link: ms and round trips per file at 0, 10 and 50 ms RTT.

The link is wan.py's: the delay proxy (bench/_common.py, start_proxy) in front of a
real OpenSSH sshd, RTT/2 each way, on its own loopback address with a cubic route
(--bbr keeps the system's congestion control). Every route goes through that proxy
into that sshd with aes128-gcm, to pyftpdlib (or vsftpd) behind it. Routes (--routes
picks a subset by key):

  passive    ftptrio passive            the lean client: per file EPSV, RETR (then STOR)
  active     ftptrio active             the lean client with EPRT; ftptrio asks sshd for
                                        a remote forward per transfer (its default
                                        --active-mode remote-forward)
  converted  ftptrio active->passive    the lean client with EPRT, ftptrio run with
                                        --active-mode passive (EPSV upstream)
  curl       ftptrio curl               one curl command, many ftp:// URLs on one
                                        control connection (curl's own per-file
                                        commands: EPSV, SIZE, RETR; EPSV, STOR)
  mirror     ftptrio lftp mirror        `lftp -c "mirror --parallel=8"` of --mirror-files
                                        files (8 sessions, passive)
  sftp       sftp                       `sftp -b`: one batch session that gets (then
                                        puts) the same files; the reference

The lean client logs in, sends TYPE I, downloads one file untimed, then times --files
downloads (RETR rows) and --files uploads (STOR rows) over a fresh data connection
each, sending per file only EPSV (or EPRT) and RETR/STOR and waiting for each reply:
the FTP exchange itself is 2 round trips per file; whatever is above 2 is the
forwarder's. curl gets an extra first URL, untimed; its time is the sum of curl's
time_total of the others. sftp and lftp are timed by wall clock, minus their session
set-up at the same RTT (the median of three sessions that only log in: an sftp `pwd`
batch, an lftp `quote NOOP`); lftp's timed part includes the logins of its extra
parallel sessions and the directory listing, as a mirror does.

Reported per RTT: ms per file, round trips per file (ms per file / RTT; "-" at 0 ms)
and the ratio of time per file to sftp's (RETR rows, curl RETR and the mirror against
sftp get; STOR rows against sftp put), then files/s and the ratio of files/s to sftp.
For the mirror, ms per file is its wall time over its file count with 8 in flight.

sshd sends with Nagle on, so each small segment it sends for a file (the 150 reply,
the file's last bytes, the channel EOF and close, the 226) can wait for the ACK of
the one before. On a real link that ACK comes from the client one RTT later; through
the proxy it comes from the proxy's socket after the delayed-ACK timer, about 40 ms
at every RTT (a RETR through ftptrio at RTT 0 costs ~50 ms instead of ~2 ms).
--quick-ack makes the proxy acknowledge sshd's segments at once (TCP_QUICKACK, as
ftptrio's own SSH socket does): exact at RTT 0, optimistic above it. The default
(delayed ACKs, as wan.py) is close to a real link at 50 ms.
``--compare-src DIR`` adds every ftptrio route again with ftptrio from another source
tree (its src/), interleaved route by route with this one, in the same run.
"""

from __future__ import annotations

import argparse
import ftplib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SEED = 20270127
FILES_DIR = "files"
MIRROR_DIR = "mirror"
ROUTE_KEYS = ("passive", "active", "converted", "curl", "mirror", "sftp")
#: the lean client's data-connection command and the ftptrio --active-mode per lean route
LEAN_ROUTES = {"passive": ("EPSV", None), "active": ("EPRT", None),
               "converted": ("EPRT", "passive")}
LABELS = {"passive": "passive (EPSV)", "active": "active (EPRT)",
          "converted": "active->passive (EPRT)"}
MAX_ERRORS = 20


@dataclass
class Row:
    """One measured route at one RTT: ``files`` transfers in ``seconds``; ``reference``
    is the sftp row it is compared with (None: it is one)."""

    name: str
    files: int
    seconds: float
    reference: str | None


# ------------------------------------------------------------------ the lean client
class LeanClient:
    """One FTP session on a plain socket that sends per file only EPSV (or EPRT) and
    RETR or STOR, and waits for every reply."""

    def __init__(self, port: int, user: str, password: str, timeout: float) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((C.HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lines = self.sock.makefile("rb")
        self.reply("2")
        if self.command(f"USER {user}", "23").startswith("3"):
            self.command(f"PASS {password}", "2")
        self.command("TYPE I", "2")

    def reply(self, codes: str) -> str:
        """The next reply's last line (multi-line replies read to their end); an error
        unless its first digit is in ``codes``."""
        line = self.lines.readline().decode("latin-1")
        if line[3:4] == "-":
            end = line[:3] + " "
            while not line.startswith(end):
                line = self.lines.readline().decode("latin-1")
                if not line:
                    break
        if not line or line[:1] not in codes:
            raise ftplib.error_reply(line.strip() or "control connection closed")
        return line

    def command(self, text: str, codes: str) -> str:
        self.sock.sendall(text.encode("latin-1") + b"\r\n")
        return self.reply(codes)

    def transfer(self, verb: str, path: str, data_command: str, payload: bytes = b"") -> int:
        """``verb`` (RETR or STOR) of ``path`` over a new data connection opened with
        ``data_command`` (EPSV or EPRT); bytes received (RETR) or sent (STOR)."""
        listener = None
        if data_command == "EPRT":
            listener = socket.create_server((C.HOST, 0), backlog=1)
            listener.settimeout(self.timeout)
            self.command(f"EPRT |1|{C.HOST}|{listener.getsockname()[1]}|", "2")
        else:
            _host, port = ftplib.parse229(self.command("EPSV", "2").strip(), (C.HOST, 0))
            data = socket.create_connection((C.HOST, port), timeout=self.timeout)
        try:
            self.command(f"{verb} {path}", "1")
            if listener is not None:
                data, _ = listener.accept()
                data.settimeout(self.timeout)
            with data:
                if verb == "STOR":
                    data.sendall(payload)
                    count = len(payload)
                else:
                    count = 0
                    while chunk := data.recv(65536):
                        count += len(chunk)
        finally:
            if listener is not None:
                listener.close()
        self.reply("2")
        return count

    def close(self) -> None:
        try:
            self.command("QUIT", "2")
        except (OSError, ftplib.Error):
            pass
        self.sock.close()


def lean_route(port: int, ftp: C.servers.FTPServer, names: list[str], payloads: dict[str, bytes],
               data_command: str, upload_prefix: str, timeout: float, cwd: str = "",
               ) -> tuple[float, float, list[str]]:
    """The lean client over ``names``: (s for the RETRs, s for the STORs, errors).
    ``cwd``: first change to this directory (the FTP root as seen from the login
    directory at ``port``)."""
    errors: list[str] = []
    client = LeanClient(port, ftp.user, ftp.password, timeout)
    try:
        if cwd:
            client.command(f"CWD {cwd}", "2")
        client.transfer("RETR", f"{FILES_DIR}/{names[0]}", data_command)  # warm-up, untimed
        times = []
        for verb in ("RETR", "STOR"):
            t0 = time.perf_counter()
            for name in names:
                if len(errors) > MAX_ERRORS:
                    break
                path = (f"{FILES_DIR}/{name}" if verb == "RETR"
                        else f"{ftp.upload_dir}/{upload_prefix}{name}")
                try:
                    count = client.transfer(verb, path, data_command, payloads[name])
                    if count != len(payloads[name]):
                        errors.append(f"{verb} {name}: {count} of {len(payloads[name])} bytes")
                except (OSError, ftplib.Error) as exc:
                    errors.append(f"{verb} {name}: {exc!r}")
            times.append(time.perf_counter() - t0)
    finally:
        client.close()
    errors += check_uploads(ftp, names, payloads, upload_prefix)
    return times[0], times[1], errors


def check_uploads(ftp: C.servers.FTPServer, names: list[str], payloads: dict[str, bytes],
                  prefix: str) -> list[str]:
    """Compare the uploaded copies with the originals and delete them."""
    errors = []
    for name in names:
        stored = ftp.path(f"{ftp.upload_dir}/{prefix}{name}")
        try:
            if stored.read_bytes() != payloads[name]:
                errors.append(f"STOR {name}: stored content differs")
            stored.unlink()
        except OSError as exc:
            errors.append(f"STOR {name}: {exc}")
    return errors


# ------------------------------------------------------------------ curl, lftp, sftp
def curl_route(port: int, ftp: C.servers.FTPServer, names: list[str], payloads: dict[str, bytes],
               local: Path, upload_prefix: str) -> tuple[float, float, list[str]]:
    """One curl command per direction with every file's URL (plus an untimed first
    one), reusing its control connection: (s for the downloads, s for the uploads,
    errors)."""
    errors: list[str] = []
    results = []
    for verb in ("RETR", "STOR"):
        args = ["curl", "-s", "-S", "--max-time", "900", "--no-ftp-skip-pasv-ip",
                "-w", "%{time_total} %{size_download} %{size_upload}\\n"]
        for n, name in enumerate([names[0], *names]):
            if verb == "RETR":
                args += ["-o", "/dev/null", ftp.url(f"{FILES_DIR}/{name}", host=C.HOST, port=port)]
            else:
                target = f"{ftp.upload_dir}/{upload_prefix}{'warmup-' if n == 0 else ''}{name}"
                args += ["-T", str(local / name), ftp.url(target, host=C.HOST, port=port)]
        out = subprocess.run(args, capture_output=True, text=True, timeout=1000)
        lines = out.stdout.split()
        if out.returncode != 0 or len(lines) != 3 * (len(names) + 1):
            errors.append(f"curl {verb} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
            results.append(float("nan"))
            continue
        fields = [lines[i:i + 3] for i in range(0, len(lines), 3)]
        for (_total, down, up), name in zip(fields[1:], names):
            count = int(float(down if verb == "RETR" else up))
            if count != len(payloads[name]):
                errors.append(f"curl {verb} {name}: {count} of {len(payloads[name])} bytes")
        results.append(sum(float(f[0]) for f in fields[1:]))
    if results[1] == results[1]:
        ftp.path(f"{ftp.upload_dir}/{upload_prefix}warmup-{names[0]}").unlink(missing_ok=True)
        errors += check_uploads(ftp, names, payloads, upload_prefix)
    return results[0], results[1], errors


def lftp_script(ftp: C.servers.FTPServer, port: int, command: str) -> list[str]:
    settings = ("set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 60; "
                "set cmd:fail-exit yes; set xfer:clobber yes")
    return ["lftp", "-c", f"{settings}; open -u {ftp.user},{ftp.password} -p {port} {C.HOST}; "
            f"{command}"]


def lftp_time(ftp: C.servers.FTPServer, port: int, command: str) -> float:
    """Wall time of one ``lftp -c`` run of ``command`` (log-in included)."""
    t0 = time.perf_counter()
    out = subprocess.run(lftp_script(ftp, port, command), capture_output=True, text=True,
                         timeout=1000, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"lftp {command!r} failed ({out.returncode}): "
                           f"{out.stderr.strip()[-500:]}")
    return elapsed


def mirror_route(port: int, ftp: C.servers.FTPServer, count: int, size: int,
                 local: Path) -> tuple[float, list[str]]:
    """``mirror --parallel=8`` of MIRROR_DIR into ``local`` minus an lftp session's set-up:
    (s, errors)."""
    setup = C.median([lftp_time(ftp, port, "quote NOOP") for _ in range(3)])
    shutil.rmtree(local, ignore_errors=True)
    elapsed = lftp_time(ftp, port, f"mirror --parallel=8 {MIRROR_DIR} {local}") - setup
    got = [p.stat().st_size for p in local.iterdir()] if local.is_dir() else []
    errors = []
    if len(got) != count or any(n != size for n in got):
        errors.append(f"lftp mirror: {len(got)} files of {count}, "
                      f"{sum(1 for n in got if n != size)} of the wrong size")
    shutil.rmtree(local, ignore_errors=True)
    return elapsed, errors


def sftp_routes(workdir: str, ssh: C.servers.OpenSSHServer, ftp: C.servers.FTPServer,
                names: list[str], payloads: dict[str, bytes], local: Path,
                ) -> tuple[float, float, list[str]]:
    """One ``sftp -b`` session that gets every file, one that puts them: (s, s, errors),
    each minus an sftp session's set-up."""
    setup = C.sftp_setup_time(workdir, ssh)
    source = Path(ftp.root) / FILES_DIR
    get = "".join(f'get "{source / name}" /dev/null\n' for name in names)
    upload = Path(ftp.root) / ftp.upload_dir
    put = "".join(f'put "{local / name}" "{upload / ("sftp-" + name)}"\n' for name in names)
    get_s = C.sftp_time(workdir, ssh, get) - setup
    put_s = C.sftp_time(workdir, ssh, put) - setup
    return get_s, put_s, check_uploads(ftp, names, payloads, "sftp-")


# ------------------------------------------------------------------ the run
def write_files(directory: Path, count: int, size: int, rng: random.Random) -> dict[str, bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    files = {f"f{i:05d}.bin": rng.randbytes(size) for i in range(count)}
    for name, data in files.items():
        (directory / name).write_bytes(data)
        os.chmod(directory / name, 0o644)
    return files


def per_rtt_table(rtt: float, rows: list[Row]) -> str:
    by_name = {r.name: r for r in rows}
    out = []
    for r in rows:
        ms = r.seconds * 1000 / r.files if r.files else float("nan")
        ref = by_name.get(r.reference or r.name)
        ref_ms = ref.seconds * 1000 / ref.files if ref and ref.files else float("nan")
        fps = r.files / r.seconds if r.seconds > 0 else float("nan")
        out.append([r.name, r.files, ms, ms / rtt if rtt else None, C.ratio(ms, ref_ms), fps,
                    C.ratio(ref_ms, ms), (r.reference or "-").removeprefix("sftp ")])
    return C.table(["route", "files", "ms per file", "round trips per file", "x sftp time",
                    "files/s", "x sftp files/s", "vs sftp"], out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtt", default="0,10,50", help="RTTs in ms, comma-separated (default 0,10,50)")
    ap.add_argument("--files", type=int, default=60,
                    help="files per lean, curl and sftp route (default 60)")
    ap.add_argument("--mirror-files", type=int, default=500,
                    help="files in the lftp mirror (default 500)")
    ap.add_argument("--size", type=int, default=4096, help="bytes per file (default 4096)")
    ap.add_argument("--routes", default=",".join(ROUTE_KEYS),
                    help="comma list of " + ", ".join(ROUTE_KEYS) + " (default all)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 3 files, 12 in the mirror, RTT 0 and 10 ms")
    ap.add_argument("--server", choices=C.SERVERS, default="pyftpdlib")
    ap.add_argument("--compare-src", metavar="DIR",
                    help="also run every ftptrio route with ftptrio from this source tree "
                         "(its src/), side by side")
    ap.add_argument("--ftptrio-arg", action="append", default=[],
                    help="extra command-line argument for ftptrio (repeatable)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="the lean client's socket timeout (default 30 s)")
    ap.add_argument("--bbr", action="store_true",
                    help="keep the system's congestion control around the proxy (see wan.py)")
    ap.add_argument("--quick-ack", action="store_true",
                    help="the proxy acknowledges sshd's segments at once (see above)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = ap.parse_args()
    if args.quick:
        args.files, args.mirror_files, args.rtt = 3, 12, "0,10"
    keys = [k.strip() for k in args.routes.split(",") if k.strip()]
    for k in keys:
        if k not in ROUTE_KEYS:
            ap.error(f"unknown route {k!r} (choose from {', '.join(ROUTE_KEYS)})")
    if args.files < 1 or args.mirror_files < 1:
        ap.error("--files and --mirror-files must be at least 1")
    keys = [k for k in ROUTE_KEYS if k in keys]
    rtts = [float(x) for x in args.rtt.split(",")]
    trees = C.ftptrio_trees(args.compare_src)

    C.print_header("ftptrio many-small-files benchmark across a long link "
                   "(delay proxy in front of sshd)")
    for name, src in trees[1:]:
        print(f"{name}: {C.measured_ftptrio({**os.environ, 'PYTHONPATH': src or ''})}")
    print(f"{args.files} files x {args.size} bytes per route ({args.mirror_files} in the mirror); "
          f"RTTs {rtts} ms; routes {', '.join(keys)}; cipher {C.AES} everywhere; "
          f"FTP server {args.server}")
    t_start = time.monotonic()
    errors: list[str] = []
    tables: list[tuple[float, list[Row]]] = []
    with C.test_bed("ftptrio-bench-wan-files-", keep=args.keep, server=args.server) as bed:
        ftp = bed.ftp
        rng = random.Random(SEED)
        payloads = write_files(Path(ftp.root) / FILES_DIR, args.files, args.size, rng)
        local = Path(bed.workdir) / "local"
        write_files(local, args.files, args.size, random.Random(SEED))
        if "mirror" in keys:
            write_files(Path(ftp.root) / MIRROR_DIR, args.mirror_files, args.size, rng)
        names = sorted(payloads)
        link = C.link_address(bed, not args.bbr)
        print(f"delay proxy on {link} "
              f"({'cubic route' if link != C.HOST else 'system congestion control'}; "
              f"{'quick' if args.quick_ack else 'delayed'} ACKs to sshd)", flush=True)

        for rtt in rtts:
            ssh = C.delayed_ssh(bed, link, rtt, args.quick_ack)
            rows: list[Row] = []

            def measure(what: str, run: Callable[[], None]) -> None:
                try:
                    run()
                except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                    errors.append(f"RTT {rtt:g} {what}: {exc!r}")
                    print(f"ERROR RTT {rtt:g} {what}: {exc!r}", flush=True)

            if "sftp" in keys:
                def sftp_run() -> None:
                    get_s, put_s, errs = sftp_routes(bed.workdir, ssh, ftp, names, payloads, local)
                    errors.extend(f"RTT {rtt:g} sftp: {e}" for e in errs)
                    rows.extend([Row("sftp get", len(names), get_s, None),
                                 Row("sftp put", len(names), put_s, None)])
                measure("sftp", sftp_run)
            # one ftptrio per tree and --active-mode, started before any of them is timed
            ports: dict[tuple[str, str | None], int] = {}
            for tree, src in trees:
                modes = {LEAN_ROUTES[k][1] for k in keys if k in LEAN_ROUTES}
                if {"curl", "mirror"} & set(keys):
                    modes.add(None)
                for mode in sorted(modes, key=str):
                    fx = C.start_ftptrio(ssh, ftp, bed.workdir, active_mode=mode, src=src,
                                         tag=f"wanfiles{rtt:g}",
                                         extra=["-o", f"Ciphers={C.AES}", *args.ftptrio_arg])
                    bed.stack.callback(fx.stop)
                    ports[(tree, mode)] = fx.port
            for key in keys:
                for n, (tree, _src) in enumerate(trees):
                    prefix = f"{key}{n}-"
                    if key in LEAN_ROUTES:
                        command, mode = LEAN_ROUTES[key]

                        def lean_run(tree: str = tree, key: str = key, command: str = command,
                                     port: int = ports[(tree, mode)], prefix: str = prefix) -> None:
                            retr, stor, errs = lean_route(port, ftp, names, payloads, command,
                                                          prefix, args.timeout)
                            errors.extend(f"RTT {rtt:g} {tree} {key}: {e}" for e in errs)
                            rows.extend([
                                Row(f"{tree} {LABELS[key]} RETR", len(names), retr, "sftp get"),
                                Row(f"{tree} {LABELS[key]} STOR", len(names), stor, "sftp put")])
                        measure(f"{tree} {key}", lean_run)
                    elif key == "curl":
                        def curl_run(tree: str = tree, port: int = ports[(tree, None)],
                                     prefix: str = prefix) -> None:
                            retr, stor, errs = curl_route(port, ftp, names, payloads, local,
                                                          prefix)
                            errors.extend(f"RTT {rtt:g} {tree} curl: {e}" for e in errs)
                            rows.extend([Row(f"{tree} curl, one connection, RETR", len(names),
                                             retr, "sftp get"),
                                         Row(f"{tree} curl, one connection, STOR", len(names),
                                             stor, "sftp put")])
                        measure(f"{tree} curl", curl_run)
                    elif key == "mirror":
                        def mirror_run(tree: str = tree, port: int = ports[(tree, None)]) -> None:
                            elapsed, errs = mirror_route(port, ftp, args.mirror_files, args.size,
                                                         Path(bed.workdir) / "mirrored")
                            errors.extend(f"RTT {rtt:g} {tree} mirror: {e}" for e in errs)
                            rows.append(Row(f"{tree} lftp mirror --parallel=8",
                                            args.mirror_files, elapsed, "sftp get"))
                        measure(f"{tree} mirror", mirror_run)
            tables.append((rtt, rows))
            print(f"... RTT {rtt:g} ms done ({time.monotonic() - t_start:.0f} s)", flush=True)

    for rtt, rows in tables:
        print()
        print(f"## RTT {rtt:g} ms")
        print(per_rtt_table(rtt, rows))
    print()
    print("round trips per file = ms per file / RTT; the lean client's FTP exchange needs 2. "
          "Goals: <= 2.2 round trips per file in every mode, <= 0.4 x sftp's time per file, "
          "lftp mirror --parallel=8 >= 5 x sftp's files/s")
    print(f"errors: {len(errors)}")
    for e in errors[:50]:
        print("  " + e)
    print(f"total wall time {time.monotonic() - t_start:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
