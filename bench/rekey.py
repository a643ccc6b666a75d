#!/usr/bin/env python3
"""One multi-GiB transfer each way through ftptrio while OpenSSH's sshd rekeys
often (``RekeyLimit`` in its sshd_config), sha256-checked, next to the same
transfers through an sshd with its default rekey limit (same run).

Printed: MB/s per direction, the number of key exchanges sshd logged
(``SSH2_MSG_KEXINIT sent``), whether the bytes are identical, and the ratio of
the rekeying run's speed to the default run's.
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

SEED = 20240615


def kexinits(ssh: C.servers.OpenSSHServer) -> int:
    return ssh.log().count("SSH2_MSG_KEXINIT sent")


def run(size: int, rekey_limit: str | None) -> dict:
    workdir = C.bench_tmpdir("ftptrio-rekey-")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        extra = [f"RekeyLimit {rekey_limit}"] if rekey_limit else []
        ssh = C.servers.start_openssh(os.path.join(workdir, "sshd"), extra_config=extra)
        stack.callback(ssh.stop)
        ftp = C.servers.start_pyftpdlib(os.path.join(workdir, "ftp"),
                                        passive_ports=C.servers.free_port_range(50))
        stack.callback(ftp.stop)
        source = ftp.path("rekey.bin")
        C.write_random_file(source, size, SEED)
        want = C.servers.sha256_file(source)
        fx = C.start_ftptrio(ssh, ftp, workdir)
        stack.callback(fx.stop)
        result: dict = {}
        base = ["curl", "-s", "-S", "--max-time", "3600", "--no-ftp-skip-pasv-ip"]
        local = Path(workdir) / "downloaded.bin"
        k0 = kexinits(ssh)
        t0 = time.monotonic()
        subprocess.run(base + ["-o", str(local), ftp.url("rekey.bin", C.HOST, fx.port)],
                       check=True)
        result["down"] = size / (time.monotonic() - t0) / 1e6
        result["down_ok"] = C.servers.sha256_file(local) == want
        k1 = kexinits(ssh)
        t0 = time.monotonic()
        subprocess.run(base + ["-T", str(local), ftp.url("upload/rekey.bin", C.HOST, fx.port)],
                       check=True)
        result["up"] = size / (time.monotonic() - t0) / 1e6
        result["up_ok"] = C.servers.sha256_file(ftp.path("upload/rekey.bin")) == want
        k2 = kexinits(ssh)
        result["kex_down"], result["kex_up"] = k1 - k0, k2 - k1
        if not fx.alive():
            raise RuntimeError(f"ftptrio died: {fx.log()[-2000:]}")
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--rekey-limit", default="16M", help="sshd_config RekeyLimit (data)")
    ap.add_argument("--quick", action="store_true", help="256 MiB")
    args = ap.parse_args()
    if args.quick:
        args.size_mib = 256
    C.print_header("ftptrio across SSH rekeying (OpenSSH sshd RekeyLimit)")
    size = args.size_mib * C.MIB
    print(f"one {args.size_mib} MiB file down and up with curl through ftptrio (passive)")
    rows = []
    runs = {}
    for label, limit in ((f"RekeyLimit {args.rekey_limit}", args.rekey_limit),
                         ("sshd default", None)):
        r = runs[label] = run(size, limit)
        rows.append([label, r["down"], r["kex_down"], "yes" if r["down_ok"] else "NO",
                     r["up"], r["kex_up"], "yes" if r["up_ok"] else "NO"])
    print(C.table(["sshd", "down MB/s", "kex down", "sha256 ok", "up MB/s", "kex up",
                   "sha256 ok"], rows))
    a, b = runs[rows[0][0]], runs[rows[1][0]]
    print(f"rekeying / default: down {C.ratio(a['down'], b['down']):.2f}x, "
          f"up {C.ratio(a['up'], b['up']):.2f}x")
    if not all(r["down_ok"] and r["up_ok"] for r in runs.values()):
        sys.exit("bytes differ")


if __name__ == "__main__":
    main()
