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
system's BBR, for every socket that talks to it (see link_address: BBR on a
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
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from throughput import _STREAM_SERVER, start_script, stream_download, stream_upload  # noqa: E402

AES = "aes128-gcm@openssh.com"
SEED = 20261201

_DELAY_PROXY = r'''
import asyncio, collections, socket, sys
target_port, delay, host = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
HIGH = 32 << 20

def plain_tcp(sock):
    """No Nagle, and cubic rather than the system's default congestion control (see
    link_address in wan.py): the proxy's own sockets model a link, not a paced sender."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
    except OSError:
        pass

class Delay:
    """One direction: what arrives is written to `out` `delay` seconds later."""
    def __init__(self, loop):
        self.loop, self.q, self.timer, self.out = loop, collections.deque(), None, None
        self.eof = self.close = False
    def push(self, data):
        if delay <= 0:
            self.out.transport.write(data); return
        self.q.append((self.loop.time() + delay, data))
        if self.timer is None:
            self.timer = self.loop.call_at(self.q[0][0], self.flush)
    def push_end(self, close):
        if close: self.close = True
        else: self.eof = True
        if delay <= 0 or (not self.q and self.timer is None):
            self.finish()
        elif self.timer is None:
            self.timer = self.loop.call_at(self.loop.time() + delay, self.flush)
    def flush(self):
        self.timer = None
        now = self.loop.time() + 0.0002
        q, parts = self.q, []
        while q and q[0][0] <= now:
            parts.append(q.popleft()[1])
        t = self.out.transport
        if parts and not t.is_closing():
            t.write(b"".join(parts))
        if q:
            self.timer = self.loop.call_at(q[0][0], self.flush)
        elif self.eof or self.close:
            self.timer = self.loop.call_at(self.loop.time() + delay, self.finish)
    def finish(self):
        self.timer = None
        if self.q:
            return self.flush()
        t = self.out.transport
        if t is None or t.is_closing():
            return
        if self.close: t.close()
        elif self.eof and t.can_write_eof(): t.write_eof()

class Half(asyncio.Protocol):
    def __init__(self, loop):
        self.transport, self.peer, self.dir = None, None, Delay(loop)
    def connection_made(self, t):
        self.transport = t
        plain_tcp(t.get_extra_info("socket"))
        t.set_write_buffer_limits(HIGH, HIGH // 4)
    def data_received(self, data): self.dir.push(data)
    def eof_received(self): self.dir.push_end(False); return True
    def connection_lost(self, exc): self.dir.push_end(True)
    def pause_writing(self): self.peer.transport.pause_reading()
    def resume_writing(self): self.peer.transport.resume_reading()

class Client(Half):
    def connection_made(self, t):
        super().connection_made(t)
        t.pause_reading()
        asyncio.get_running_loop().create_task(self.connect())
    async def connect(self):
        loop = asyncio.get_running_loop()
        server = Half(loop)
        server.peer, self.peer = self, server
        self.dir.out, server.dir.out = server, self
        try:
            await loop.create_connection(lambda: server, "127.0.0.1", target_port,
                                         local_addr=(host, 0))
        except OSError:
            self.transport.close(); return
        self.transport.resume_reading()

async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Client(loop), host, 0, backlog=128)
    print("PORT", srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


#: the delay proxy's address, with its own loopback route (see link_address)
LINK_ADDRESS = "127.0.50.50"


def link_address(bed: C.Bed, fix: bool) -> str:
    """The address the delay proxy listens on and connects to sshd from.

    This machine's default congestion control is BBR. Every TCP hop around the
    proxy is a loopback hop (microsecond RTT) carrying the bursts of a
    window-limited SSH channel, and there BBR falls into a trap: a lone paced
    segment waits for the receiver's delayed ACK (40 ms), BBR takes that as the
    bandwidth and paces at it. Measured through the 50 ms proxy with a bare
    asyncssh client and an 8 MiB window: sshd's socket paced at 12.8 Mbit/s
    (`ss -ti`: bbr bw 12.9 Mbps, 2.3 MB not sent) for hundreds of ms, the channel
    averaged 46-54 MB/s instead of ~150. A real 50 ms link does not do this (the
    RTT is 50 ms, not microseconds), so the link is modelled without it: a /32
    route for this address with `congctl cubic` makes every socket that talks to
    the proxy (sshd's, ftptrio's, ssh's, sftp's) use cubic, for every route
    alike. Needs root and iproute2; otherwise (or with --bbr) 127.0.0.1 as before.
    The hops on the "server host" (FTP server or stream server -> sshd) and on the
    client host (ftptrio -> curl) keep the system's congestion control, as they
    would in a deployment: with a 16 MiB data-channel window the FTP server's
    socket to sshd falls into the same trap on loopback (paced at 8-47 MB/s,
    ftptrio's LAN download 65 instead of ~200 MB/s), which is why the default
    window stays 8 MiB.
    """
    if not fix:
        return C.HOST
    route = ["local", f"{LINK_ADDRESS}/32", "dev", "lo", "table", "local"]
    try:
        subprocess.run(["ip", "route", "replace", *route, "congctl", "cubic"], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"WARNING: no cubic route for the delay proxy ({exc}); using {C.HOST} with "
              f"the system's congestion control", flush=True)
        return C.HOST
    bed.stack.callback(subprocess.run, ["ip", "route", "del", *route], capture_output=True,
                       timeout=30)
    return LINK_ADDRESS


def start_proxy(bed: C.Bed, name: str, host: str, *args: str) -> tuple[subprocess.Popen, int]:
    """The delay proxy (like throughput.start_script, listening on ``host``)."""
    script = Path(bed.workdir) / f"{name}.py"
    script.write_text(_DELAY_PROXY)
    err = open(Path(bed.workdir) / f"{name}.stderr", "ab")
    proc = bed.add(subprocess.Popen([sys.executable, str(script), *args, host],
                                    stdout=subprocess.PIPE, stderr=err,
                                    stdin=subprocess.DEVNULL, start_new_session=True))
    err.close()
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        raise RuntimeError(f"{name} did not start: {line!r} "
                           f"{(Path(bed.workdir) / f'{name}.stderr').read_text()[-2000:]}")
    port = int(line.split()[1])
    C.servers.wait_for_port(host, port, timeout=30, process=proc)
    return proc, port


def curl_time(ftp: C.servers.FTPServer, port: int, direction: str, path: Path, size: int) -> float:
    args = ["curl", "-s", "-S", "--max-time", "900", "--no-ftp-skip-pasv-ip"]
    fmt = "%{time_total} %{time_pretransfer} %{size_download} %{size_upload}"
    if direction == "down":
        args += ["-o", "/dev/null", "-w", fmt, ftp.url(path.name, host=C.HOST, port=port)]
    else:
        args += ["-T", str(path), "-w", fmt,
                 ftp.url(f"{ftp.upload_dir}/wan_up.bin", host=C.HOST, port=port)]
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


def sftp_time(workdir: str, ssh: C.servers.OpenSSHServer, batch: str) -> float:
    bf = Path(workdir) / "wan-sftp.batch"
    bf.write_text(batch)
    args = ["sftp", "-q", "-b", str(bf), *C.ssh_base_args(ssh, AES)]
    args[args.index("-p")] = "-P"
    args.append(f"{ssh.username}@{ssh.host}")
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, timeout=1000)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"sftp failed: {out.stderr.strip()} {out.stdout.strip()}")
    return dt


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
    trees = [("ftptrio", None)]
    if args.compare_src:
        trees.append((f"ftptrio[{os.path.basename(os.path.abspath(args.compare_src))}]",
                      os.path.join(os.path.abspath(args.compare_src), "src")))
    names = [t[0] for t in trees] + ["ssh -L stream"] + ([] if args.no_sftp else ["sftp"])

    with C.test_bed("ftptrio-bench-wan-", keep=args.keep, server=args.server) as bed:
        ftp = bed.ftp
        data = Path(ftp.root) / "wan.bin"
        C.write_random_file(data, size, SEED)
        _sp, stream_port = start_script(bed, "stream_server", _STREAM_SERVER, str(data))
        link = link_address(bed, not args.bbr)
        print(f"delay proxy on {link} "
              f"({'cubic route' if link != C.HOST else 'system congestion control'})", flush=True)
        for rtt in rtts:
            proxy, pport = start_proxy(bed, f"proxy{rtt:g}", link, str(bed.ssh.port),
                                       str(rtt / 2000))
            kh = Path(bed.workdir) / f"known_hosts_{pport}"
            kh.write_text(f"[{link}]:{pport} {bed.ssh.host_public_key.strip()}\n")
            ssh = dataclasses.replace(bed.ssh, host=link, port=pport, known_hosts=str(kh))
            routes = []
            for name, src in trees:
                saved = os.environ.get("PYTHONPATH")
                if src:
                    os.environ["PYTHONPATH"] = src
                try:
                    fx = C.start_ftptrio(ssh, ftp, bed.workdir, tag=f"wan{rtt:g}",
                                         extra=["-o", f"Ciphers={AES}", *args.ftptrio_arg])
                finally:
                    if saved is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = saved
                bed.stack.callback(fx.stop)
                routes.append((name, lambda d, p=fx.port: curl_time(ftp, p, d, data, size)))
            sshl, lport = C.start_ssh_forward(ssh, stream_port, bed.workdir, AES)
            bed.add(sshl)
            routes.append(("ssh -L stream", lambda d, p=lport: (
                stream_download(p, size) if d == "down" else stream_upload(p, data, size))))
            if not args.no_sftp:
                overhead = C.median([sftp_time(bed.workdir, ssh, "pwd\n") for _ in range(3)])
                dest = Path(ftp.root) / ftp.upload_dir / "wan_sftp.bin"

                def sftp_route(d: str, ssh=ssh, overhead=overhead, dest=dest) -> float:
                    batch = (f'get "{data}" /dev/null\n' if d == "down"
                             else f'put "{data}" "{dest}"\n')
                    dt = sftp_time(bed.workdir, ssh, batch) - overhead
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
            bed.stack.callback(C.stop, proxy)

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
