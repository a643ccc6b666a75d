#!/usr/bin/env python3
"""What TLS costs end to end: FTPS through ftptrio against plain FTP through ftptrio.

In one run, on loopback, a real OpenSSH sshd and two vsftpd servers on 127.0.0.2
with the same kind of fixed passive range: one plain, one requiring TLS for logins
and data (explicit FTPS, AUTH TLS, a self-signed certificate). curl (EPSV) and
lftp each download and upload one file over each route:

  direct FTP / direct FTPS     curl -> vsftpd, no SSH (for scale)
  ftptrio FTP                  curl -> ftptrio -> SSH -> vsftpd (229 rewritten)
  ftptrio FTPS                 curl --ssl-reqd -> ftptrio --auth-tls passthrough
                               --passive-ports -> SSH -> vsftpd (TLS relayed opaque,
                               data through the passive range)

on the LAN (sshd on loopback) and through the 50 ms delay proxy of _common
(delayed_ssh: an RTT of --rtt ms between ftptrio and sshd, on its own cubic route
where root allows). Reported: MB/s (10^6 B/s; curl's time_total, login included,
median of --repeat), and the FTPS/FTP ratio through ftptrio per direction and
link. Figures only: nothing here is a pass/fail goal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (MIB, Bed, bench_tmpdir, delayed_ssh, link_address, median,  # noqa: E402
                     print_header, ratio, start_ftptrio, table, write_random_file)

from ftptrio.testing import servers  # noqa: E402

FTP_HOST = "127.0.0.2"
PASSIVE_COUNT = 50
FILE_NAME = "ftps-bench.bin"
#: the clients every route is measured with (each login included in its time)
CLIENTS = ("curl", "lftp")


def curl(url: str, tls: bool, *args: str) -> float:
    """One curl run; its time_total in seconds."""
    cmd = ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "600",
           "--write-out", "%{time_total}", *(["--ssl-reqd", "--insecure"] if tls else []),
           *args, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=700)
    if out.returncode != 0:
        raise RuntimeError(f"curl failed ({out.returncode}): {out.stderr.strip()}\n{cmd}")
    return float(out.stdout.strip().splitlines()[-1])


def lftp(host: str, port: int, ftp: servers.FTPServer, tls: bool, command: str) -> float:
    """One lftp run of ``command`` after logging in; its wall time in seconds (login
    included, as curl's time_total)."""
    settings = ("set ftp:ssl-force true; set ftp:ssl-protect-data true; "
                "set ssl:verify-certificate no" if tls else "set ftp:ssl-allow false")
    script = (f"{settings}; set net:max-retries 1; set xfer:clobber on; "
              f"open -u {ftp.user},x ftp://{host}:{port}; {command}")
    t0 = time.perf_counter()
    out = subprocess.run(["lftp", "-c", script], capture_output=True, text=True, timeout=700)
    if out.returncode != 0:
        raise RuntimeError(f"lftp failed ({out.returncode}): {out.stderr.strip()}\n{script}")
    return time.perf_counter() - t0


def measure(host: str, port: int, ftp: servers.FTPServer, tls: bool, size: int,
            workdir: str, client: str = "curl") -> tuple[float, float]:
    """(download MB/s, upload MB/s) of one file through host:port with ``client``."""
    base = f"ftp://{ftp.user}:x@{host}:{port}"
    local = Path(workdir) / f"down-{uuid.uuid4().hex}"
    upload_name = f"up-{uuid.uuid4().hex}"
    if client == "lftp":
        down = lftp(host, port, ftp, tls, f"get {FILE_NAME} -o {local}")
    else:
        down = curl(f"{base}/{FILE_NAME}", tls, "--output", str(local))
    if local.stat().st_size != size:
        raise RuntimeError(f"short download: {local.stat().st_size} of {size} bytes")
    local.unlink()
    if client == "lftp":
        up = lftp(host, port, ftp, tls,
                  f"put {Path(workdir) / FILE_NAME} -o {ftp.upload_dir}/{upload_name}")
    else:
        up = curl(f"{base}/{ftp.upload_dir}/{upload_name}", tls,
                  "--upload-file", str(Path(workdir) / FILE_NAME))
    return size / down / 1e6, size / up / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64, help="LAN file size (64)")
    parser.add_argument("--wan-size-mib", type=int, default=16,
                        help="file size through the delay proxy (16)")
    parser.add_argument("--rtt", type=float, default=50.0, help="delay proxy RTT in ms (50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per route (3)")
    parser.add_argument("--bbr", action="store_true",
                        help="keep the system's congestion control on the delay link")
    parser.add_argument("--quick", action="store_true",
                        help="small files, one run each (a smoke test of the bench)")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.wan_size_mib, args.repeat = 4, 2, 1
    print_header("FTPS through ftptrio against plain FTP through ftptrio")

    workdir = bench_tmpdir("ftps-bench")
    with contextlib.ExitStack() as stack:
        stack.callback(__import__("shutil").rmtree, workdir, True)
        ssh = servers.start_openssh(os.path.join(workdir, "sshd"))
        stack.callback(ssh.stop)
        plain = servers.start_vsftpd(os.path.join(workdir, "plain"), host=FTP_HOST,
                                     passive_count=PASSIVE_COUNT)
        stack.callback(plain.stop)
        tls = servers.start_vsftpd(os.path.join(workdir, "tls"), host=FTP_HOST,
                                   passive_count=PASSIVE_COUNT, tls="explicit")
        stack.callback(tls.stop)
        bed = Bed(workdir, ssh, plain, stack, "vsftpd")
        link = link_address(bed, not args.bbr)
        wan_ssh = delayed_ssh(bed, link, args.rtt)
        print(f"servers: vsftpd on {FTP_HOST} (plain, and TLS: ssl_enable, logins and data "
              f"forced to TLS, require_ssl_reuse); curl EPSV; delay link {link}, RTT "
              f"{args.rtt:g} ms\n", flush=True)

        results: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        for link_name, route_ssh, size_mib in (("LAN", ssh, args.size_mib),
                                               (f"{args.rtt:g} ms", wan_ssh,
                                                args.wan_size_mib)):
            size = size_mib * MIB
            for ftp in (plain, tls):
                write_random_file(Path(ftp.root) / FILE_NAME, size, seed=25)
                os.chmod(Path(ftp.root) / FILE_NAME, 0o644)
            write_random_file(Path(workdir) / FILE_NAME, size, seed=26)
            routes = []
            if link_name == "LAN":
                routes += [("direct FTP", plain, False, None),
                           ("direct FTPS", tls, True, None)]
            for name, ftp, is_tls in (("ftptrio FTP", plain, False),
                                      ("ftptrio FTPS", tls, True)):
                extra = []
                if is_tls:
                    ports = ftp.passive_ports
                    extra = ["--auth-tls", "passthrough", "--passive-ports",
                             f"{ports.start}-{ports.stop - 1}", "-o", "Ciphers=aes128-gcm@openssh.com"]
                else:
                    extra = ["-o", "Ciphers=aes128-gcm@openssh.com"]
                fx = start_ftptrio(route_ssh, ftp, workdir, extra=extra, tag=name.replace(" ", "-"))
                stack.callback(fx.stop)
                routes.append((name, ftp, is_tls, fx))
            for _rep in range(args.repeat):
                for name, ftp, is_tls, fx in routes:
                    host, port = (ftp.host, ftp.port) if fx is None else ("127.0.0.1", fx.port)
                    for client in CLIENTS:
                        down, up = measure(host, port, ftp, is_tls, size, workdir, client)
                        got = results.setdefault((link_name, f"{name}, {client}"), ([], []))
                        got[0].append(down)
                        got[1].append(up)
            for _name, _ftp, _tls, fx in routes:
                if fx is not None:
                    fx.stop()

        rows = []
        for (link_name, name), (downs, ups) in results.items():
            rows.append([link_name, name, f"{median(downs):.1f}", f"{median(ups):.1f}"])
        print(table(["link", "route", "download MB/s", "upload MB/s"], rows))
        print()
        for link_name in ("LAN", f"{args.rtt:g} ms"):
            for client in CLIENTS:
                ftp_d, ftp_u = (median(v) for v in results[(link_name, f"ftptrio FTP, {client}")])
                tls_d, tls_u = (median(v) for v in results[(link_name, f"ftptrio FTPS, {client}")])
                print(f"FTPS/FTP through ftptrio, {link_name}, {client}: download "
                      f"{ratio(tls_d, ftp_d):.2f}x, upload {ratio(tls_u, ftp_u):.2f}x")
        print("(curl starts its data connection's TLS handshake as soon as it connects, and "
              "vsftpd answers that handshake only at RETR/STOR; meanwhile curl read the "
              "replies to TYPE and SIZE 0.2 s and 1.0 s after sending them in a traced run "
              "at 50 ms (curl --trace-time), about 1.2 s per transfer; lftp shows no such wait)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
