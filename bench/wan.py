#!/usr/bin/env python3
"""Long fat network: throughput at 0, 10 and 50 ms RTT against ssh -L and sftp.

No netem here: a user-space TCP proxy (a subprocess, asyncio) sits in front of a
real OpenSSH sshd and delays each direction by RTT/2, with no bandwidth limit.
Each direction keeps a deque of (due time, bytes); one timer per direction writes
everything that is due in one go (a sleep per chunk would cap it at ~1 chunk per
ms). The proxy reads eagerly, so the TCP connections on either side of it see
loopback RTTs: only SSH's per-channel flow control (and the forwarders' own
buffering) sees the delay. A full outgoing buffer (32 MiB) pauses the other side.
The proxy listens on its own loopback address whose route uses cubic, not the
system's BBR, for every socket that talks to it (see _common.link_address: BBR on a
microsecond-RTT hop paces a bursty SSH channel at ~1.6 MB/s for hundreds of ms);
--bbr keeps the old behaviour.

Routes, all through the same proxy into the same sshd, aes128-gcm:

  ftptrio passive     curl (EPSV) -> ftptrio -> proxy -> sshd -> pyftpdlib (or vsftpd)
  ssh -L stream       a plain TCP stream through `ssh -N -L` (OpenSSH's 2 MiB window)
  sftp                `sftp -b` get / put (connection setup subtracted)

Times: curl's time_total - time_pretransfer (the data transfer, data-channel
setup included; login excluded), the stream's request to EOF, sftp's batch
wall time minus the median of three `pwd` batches at the same RTT.
Reported: MB/s (10^6 B/s, median of --repeat) and ftptrio / ssh -L, ftptrio / sftp.
``--compare-src DIR`` adds ftptrio from another source tree (e.g. a checkout of
main) as a second ftptrio route, side by side in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from throughput import _STREAM_SERVER, start_script, stream_download, stream_upload  # noqa: E402

AES = C.AES
SEED = 20261201


def curl_time(ftp: C.servers.FTPServer, port: int, direction: str, path: Path, size: int,
              url_prefix: str = "") -> float:
    """curl's transfer time of ``path`` (in the FTP root) down or up; ``url_prefix``: the
    FTP root seen from the login directory at ``port`` (e.g. "dir/")."""
    args = ["curl", "-s", "-S", "--max-time", "900", "--no-ftp-skip-pasv-ip"]
    fmt = "%{time_total} %{time_pretransfer} %{size_download} %{size_upload}"
    if direction == "down":
        args += ["-o", "/dev/null", "-w", fmt,
                 ftp.url(url_prefix + path.name, host=C.HOST, port=port)]
    else:
        args += ["-T", str(path), "-w", fmt,
                 ftp.url(f"{url_prefix}{ftp.upload_dir}/wan_up.bin", host=C.HOST, port=port)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1000)
    if out.returncode != 0:
        raise RuntimeError(f"curl {direction} failed ({out.returncode}): {out.stderr.strip()}")
    total, pre, down, up = out.stdout.split()
    n = int(float(down if direction == "down" else up))
    if n != size:
        raise RuntimeError(f"curl {direction}: {n} of {size} bytes")
    if direction == "up":
        dest = ftp.path(f"{ftp.upload_dir}/wan_up.bin")
        got = dest.stat().st_size
        dest.unlink()
        if got != size:
            raise RuntimeError(f"upload stored {got} of {size} bytes")
    return float(total) - float(pre)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128 * C.MIB, help="bytes (default 128 MiB)")
    ap.add_argument("--rtt", default="0,10,50", help="RTTs in ms, comma-separated")
    ap.add_argument("--repeat", type=int, default=2, help="repetitions; medians reported")
    ap.add_argument("--quick", action="store_true", help="32 MiB, RTT 0 and 50 ms, 1 repetition")
    ap.add_argument("--server", choices=C.SERVERS, default="pyftpdlib")
    ap.add_argument("--compare-src", metavar="DIR",
                    help="also run ftptrio from this source tree (its src/), side by side")
    ap.add_argument("--ftptrio-arg", action="append", default=[],
                    help="extra command-line argument for ftptrio (repeatable)")
    ap.add_argument("--no-sftp", action="store_true")
    ap.add_argument("--bbr", action="store_true",
                    help="keep the system's congestion control (BBR here) around the proxy: "
                         "the loopback pacing trap link_address describes")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.size, args.rtt, args.repeat = 32 * C.MIB, "0,50", 1
    size = args.size
    rtts = [float(x) for x in args.rtt.split(",")]

    C.print_header("ftptrio long-fat-network benchmark (delay proxy in front of sshd)")
    print(f"file {size} bytes ({size / C.MIB:.0f} MiB); RTTs {rtts} ms; repeat {args.repeat}; "
          f"cipher {AES} everywhere; FTP server {args.server}")
    t_start = time.monotonic()
    times: dict[tuple[float, str, str], list[float]] = {}
    errors: list[str] = []
    trees = C.ftptrio_trees(args.compare_src)
    names = [t[0] for t in trees] + ["ssh -L stream"] + ([] if args.no_sftp else ["sftp"])

    with C.test_bed("ftptrio-bench-wan-", keep=args.keep, server=args.server) as bed:
        ftp = bed.ftp
        data = Path(ftp.root) / "wan.bin"
        C.write_random_file(data, size, SEED)
        _sp, stream_port = start_script(bed, "stream_server", _STREAM_SERVER, str(data))
        link = C.link_address(bed, not args.bbr)
        print(f"delay proxy on {link} "
              f"({'cubic route' if link != C.HOST else 'system congestion control'})", flush=True)
        for rtt in rtts:
            ssh = C.delayed_ssh(bed, link, rtt)
            routes = []
            for name, src in trees:
                fx = C.start_ftptrio(ssh, ftp, bed.workdir, tag=f"wan{rtt:g}", src=src,
                                     extra=["-o", f"Ciphers={AES}", *args.ftptrio_arg])
                bed.stack.callback(fx.stop)
                routes.append((name, lambda d, p=fx.port: curl_time(ftp, p, d, data, size)))
            sshl, lport = C.start_ssh_forward(ssh, stream_port, bed.workdir, AES)
            bed.add(sshl)
            routes.append(("ssh -L stream", lambda d, p=lport: (
                stream_download(p, size) if d == "down" else stream_upload(p, data, size))))
            if not args.no_sftp:
                overhead = C.sftp_setup_time(bed.workdir, ssh)
                dest = Path(ftp.root) / ftp.upload_dir / "wan_sftp.bin"

                def sftp_route(d: str, ssh=ssh, overhead=overhead, dest=dest) -> float:
                    batch = (f'get "{data}" /dev/null\n' if d == "down"
                             else f'put "{data}" "{dest}"\n')
                    dt = C.sftp_time(bed.workdir, ssh, batch) - overhead
                    if d == "up":
                        got = dest.stat().st_size
                        dest.unlink()
                        if got != size:
                            raise RuntimeError(f"sftp put stored {got} of {size}")
                    return dt
                routes.append(("sftp", sftp_route))
                print(f"RTT {rtt:g} ms: sftp setup {overhead * 1000:.0f} ms subtracted", flush=True)
            for _rep in range(args.repeat):
                for name, fn in routes:
                    for d in ("down", "up"):
                        try:
                            times.setdefault((rtt, name, d), []).append(fn(d))
                        except Exception as exc:
                            errors.append(f"RTT {rtt:g} {name} {d}: {exc}")
                            print(f"ERROR RTT {rtt:g} {name} {d}: {exc}", flush=True)
            print(f"... RTT {rtt:g} ms done ({time.monotonic() - t_start:.0f} s)", flush=True)

    def mbps(rtt: float, name: str, d: str) -> float:
        v = times.get((rtt, name, d))
        return size / C.median(v) / 1e6 if v else float("nan")

    print()
    print("## MB/s (median)")
    rows = [[f"{rtt:g} ms"] + [mbps(rtt, n, d) for n in names for d in ("down", "up")]
            for rtt in rtts]
    print(C.table(["RTT"] + [f"{n} {d}" for n in names for d in ("down", "up")], rows))
    print()
    print("## Ratios (goal at 50 ms: down >= 3 vs both, up >= 1.0 vs both)")
    hdr = ["RTT", "route"]
    bases = ["ssh -L stream"] + ([] if args.no_sftp else ["sftp"])
    hdr += [f"/ {b} {d}" for b in bases for d in ("down", "up")]
    rows = []
    for rtt in rtts:
        for name, _src in trees:
            rows.append([f"{rtt:g} ms", name] + [C.ratio(mbps(rtt, name, d), mbps(rtt, b, d))
                                                 for b in bases for d in ("down", "up")])
    print(C.table(hdr, rows))
    print(f"errors: {len(errors)}")
    for e in errors:
        print("  " + e)
    print(f"total wall time {time.monotonic() - t_start:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
