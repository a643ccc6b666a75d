#!/usr/bin/env python3
"""Many concurrent FTP sessions through one ftptrio process (one SSH connection).

A real OpenSSH sshd and an FTP server on loopback: pyftpdlib (default; wide
passive range outside the ephemeral range, max_cons raised) or, with
--server vsftpd, vsftpd (anonymous login, max_clients/max_per_ip 0 = unlimited,
1000 passive ports; one forked process per session, so its stalls cannot be
an event-loop artefact of the FTP server).  For each mode (fresh ftptrio process
each):

  passive    EPSV through ftptrio
  active     EPRT through ftptrio (tcpip-forward on sshd per transfer)
  converted  EPRT through ftptrio --active-mode passive

--sessions clients (a minimal FTP client on trio sockets, all in this process)
connect and log in together; once all are logged in and idle, ftptrio's RSS is
read; then all download the 1 MiB test file (sha256 checked) at once, QUIT and
close.  Reported per mode and round: errors (printed; target 0), wall time of
the transfer phase, aggregate MB/s (10^6), ftptrio RSS idle before / with all
sessions idle-connected / peak / after all closed, memory per idle session in
KiB, ftptrio CPU seconds of the round, and sshd log counts (channel/forward
requests and failures).  ftptrio's open file descriptors (/proc/<pid>/fd, with
the socket count), thread count and RSS are also shown before the round, with
all sessions idle-connected and after all closed, so that a return to the
baseline (no leaked sockets or threads) is visible.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass, field

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

FILE = "one_mib.bin"


class Control:
    """FTP control connection: send commands, read (multi-line) replies."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _line(self) -> str:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line.decode("latin-1").rstrip("\r\n")
            data = await self.stream.receive_some(4096)
            if not data:
                raise EOFError("control connection closed")
            self.buf += data

    async def reply(self) -> tuple[str, str]:
        line = await self._line()
        code = line[:3]
        if line[3:4] == "-":
            while True:
                more = await self._line()
                if more[:3] == code and more[3:4] == " ":
                    break
        return code, line

    async def cmd(self, text: str | None, expect: str) -> str:
        if text is not None:
            await self.stream.send_all(text.encode("latin-1") + b"\r\n")
        code, line = await self.reply()
        if not code.startswith(expect):
            raise RuntimeError(f"{(text or 'greeting').split()[0]} -> {line!r}")
        return line


@dataclass
class Round:
    n: int
    logged_in: int = 0
    arrived: int = 0
    all_arrived: trio.Event = field(default_factory=trio.Event)
    go: trio.Event = field(default_factory=trio.Event)
    errors: list[str] = field(default_factory=list)
    bytes_ok: int = 0
    done: int = 0

    def arrive(self) -> None:
        self.arrived += 1
        if self.arrived == self.n:
            self.all_arrived.set()


async def session(i: int, port: int, mode: str, size: int, digest: str, rnd: Round,
                  timeout: float, user: str, password: str) -> None:
    phase = "connect"
    arrived = False
    ctl = None
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(C.HOST, port)
            ctl = Control(stream)
            phase = "login"
            await ctl.cmd(None, "220")
            line = await ctl.cmd(f"USER {user}", "")  # 331, or 230 (vsftpd anonymous)
            if line.startswith("331"):
                await ctl.cmd(f"PASS {password}", "230")
            elif not line.startswith("230"):
                raise RuntimeError(f"USER -> {line!r}")
            await ctl.cmd("TYPE I", "200")
            rnd.logged_in += 1
            rnd.arrive()
            arrived = True
            await rnd.go.wait()
            phase = "data setup"
            if mode == "passive":
                line = await ctl.cmd("EPSV", "229")
                m = re.search(r"\(\|\|\|(\d+)\|\)", line)
                if not m:
                    raise RuntimeError(f"bad 229: {line!r}")
                data = await trio.open_tcp_stream(C.HOST, int(m.group(1)))
                phase = "RETR"
                await ctl.cmd(f"RETR {FILE}", "1")
            else:
                lsock = trio.socket.socket()
                await lsock.bind((C.HOST, 0))
                lsock.listen(4)
                lport = lsock.getsockname()[1]
                await ctl.cmd(f"EPRT |1|{C.HOST}|{lport}|", "200")
                phase = "RETR"
                await ctl.cmd(f"RETR {FILE}", "1")
                phase = "accept"
                sock, _ = await lsock.accept()
                lsock.close()
                data = trio.SocketStream(sock)
            phase = "transfer"
            h = hashlib.sha256()
            got = 0
            async with data:
                while True:
                    chunk = await data.receive_some(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    got += len(chunk)
            phase = "226"
            await ctl.cmd(None, "226")
            if got != size or h.hexdigest() != digest:
                raise RuntimeError(f"got {got} of {size} bytes, sha256 "
                                   f"{'ok' if h.hexdigest() == digest else 'MISMATCH'}")
            phase = "QUIT"
            await ctl.cmd("QUIT", "221")
            rnd.bytes_ok += got
            rnd.done += 1
    except (Exception, trio.TooSlowError) as exc:  # count every failure
        rnd.errors.append(f"session {i} ({phase}): {exc!r}")
    finally:
        if not arrived:
            rnd.arrive()
        if ctl is not None:
            await ctl.stream.aclose()


def sshd_counts(text: str) -> dict[str, int]:
    low = text.lower()
    return {
        "direct-tcpip": low.count("server_request_direct_tcpip"),
        "tcpip-forward": low.count("rtype tcpip-forward"),
        "failures": sum(low.count(k) for k in ("open failed", "connect_to", "refused",
                                                "administratively prohibited", "no more sessions")),
    }


async def run_round(fx: C.Ftptrio, mode: str, n: int, size: int, digest: str,
                    timeout: float, settle: float, user: str, password: str) -> dict:
    rnd = Round(n)
    res: dict = {}
    await trio.sleep(settle)
    res["snap_before"] = fx.snapshot()
    res["rss_before"] = res["snap_before"]["rss"]
    async with trio.open_nursery() as nursery:
        t_login = time.perf_counter()
        for i in range(n):
            nursery.start_soon(session, i, fx.port, mode, size, digest, rnd, timeout,
                               user, password)
        with trio.move_on_after(timeout):
            await rnd.all_arrived.wait()
        res["login_s"] = time.perf_counter() - t_login
        res["logged_in"] = rnd.logged_in
        await trio.sleep(settle)
        res["snap_idle"] = fx.snapshot()
        res["rss_idle"] = res["snap_idle"]["rss"]
        c0 = fx.cpu()
        t0 = time.perf_counter()
        rnd.go.set()
    res["wall"] = time.perf_counter() - t0
    res["cpu"] = fx.cpu() - c0
    res["hwm"] = fx.hwm_kib()
    await trio.sleep(settle)
    res["snap_after"] = fx.snapshot()
    res["rss_after"] = res["snap_after"]["rss"]
    res["errors"] = rnd.errors
    res["done"] = rnd.done
    res["bytes"] = rnd.bytes_ok
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=200,
                    help="concurrent FTP sessions (default 200)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="connect/idle/transfer/close cycles per mode (default 1)")
    ap.add_argument("--modes", default="passive,active,converted",
                    help="comma list of passive, active, converted (default all three)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="per-session timeout in seconds (default 120)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait before each RSS reading (default 1)")
    ap.add_argument("--server", choices=C.SERVERS, default="pyftpdlib",
                    help="FTP server behind sshd (default pyftpdlib; vsftpd: anonymous login)")
    ap.add_argument("--quick", action="store_true", help="50 sessions (well under a minute)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = ap.parse_args()
    if args.quick:
        args.sessions = 50
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in ("passive", "active", "converted"):
            ap.error(f"unknown mode {m!r}")

    C.print_header("ftptrio concurrency benchmark")
    size, seed = C.servers.DATA_FILES[FILE]
    digest = C.servers.sha256_bytes(C.servers.random_bytes(size, seed))
    n = args.sessions
    print(f"FTP server: {args.server}")
    print(f"{n} concurrent sessions x {size} bytes ({FILE}, sha256 checked), "
          f"{args.rounds} round(s) per mode; client: trio sockets, one process")
    t_start = time.monotonic()
    rows = []
    mem_rows = []
    res_rows = []
    all_errors: list[str] = []
    extra_lines: list[str] = []
    with C.test_bed("ftptrio-bench-conc-", passive_count=1000, max_cons=4 * n + 512,
                    keep=args.keep, server=args.server) as bed:
        print(C.ftp_server_info(bed.ftp, 4 * n + 512))
        print(f"sshd effective: {C.sshd_limits(bed.ssh)} (MaxSessions counts shell/exec/"
              "subsystem sessions and MaxStartups unauthenticated connections, not "
              "direct-tcpip/forwarded-tcpip channels; see the sshd failure counts below)")
        sys.stdout.flush()
        for mode in modes:
            fx = bed.ftptrio(active_mode="passive" if mode == "converted" else None,
                             tag=f"ftptrio-{mode}")
            client_mode = "passive" if mode == "passive" else "active"
            print(f"[{mode}] ftptrio pid {fx.pid}, open files limit "
                  f"{C.open_files_limit(fx.pid)}, cipher {C.negotiated_cipher(bed.ssh)}; "
                  f"at start: {C.fmt_snapshot(fx.snapshot())}", flush=True)
            try:
                for r in range(args.rounds):
                    log0 = len(bed.ssh.log())
                    res = trio.run(run_round, fx, client_mode, n, size, digest, args.timeout,
                                   args.settle, bed.ftp.user, bed.ftp.password)
                    counts = sshd_counts(bed.ssh.log()[log0:])
                    errs = res["errors"]
                    all_errors += [f"[{mode} round {r + 1}] {e}" for e in errs]
                    label = f"{mode} r{r + 1}" if args.rounds > 1 else mode
                    rows.append([label, n, res["logged_in"], res["done"], len(errs),
                                 res["login_s"], res["wall"], res["bytes"] / res["wall"] / 1e6,
                                 res["cpu"], counts["direct-tcpip"], counts["tcpip-forward"],
                                 counts["failures"]])
                    per = (res["rss_idle"] - res["rss_before"]) / max(res["logged_in"], 1)
                    mem_rows.append([label, res["rss_before"], res["rss_idle"], per,
                                     res["hwm"], res["rss_after"]])
                    sb, si, sa = res["snap_before"], res["snap_idle"], res["snap_after"]
                    res_rows.append([label, sb["fds"], si["fds"], sa["fds"],
                                     sa["fds"] - sb["fds"], sb["socks"], si["socks"], sa["socks"],
                                     sb["threads"], si["threads"], sa["threads"],
                                     sb["rss"], sa["rss"], sa["rss"] - sb["rss"]])
                    print(f"... {label}: {res['done']}/{n} ok, {len(errs)} errors, "
                          f"{res['wall']:.2f} s", flush=True)
                if not fx.alive():
                    all_errors.append(f"[{mode}] ftptrio exited with {fx.process.returncode}")
                log = fx.log().strip()
                if log:
                    extra_lines.append(f"[{mode}] ftptrio stderr (last 1500 chars):\n{log[-1500:]}")
            finally:
                fx.stop()

    print()
    print("## Transfers (all sessions start together once all are logged in)")
    print(C.table(["mode", "sessions", "logged in", "ok", "errors", "login phase s",
                   "transfer wall s", "aggregate MB/s", "ftptrio CPU s", "sshd direct-tcpip",
                   "sshd tcpip-forward", "sshd failures"], rows))
    print()
    print("## ftptrio memory (KiB; VmRSS, peak = VmHWM since start)")
    print(C.table(["mode", "RSS idle before", f"RSS {n} idle sessions", "KiB per idle session",
                   "peak RSS", "RSS after close"], mem_rows))
    print()
    print(f"## ftptrio resources before / with {n} idle sessions / after all closed "
          f"(/proc/<pid>/fd, Threads, VmRSS KiB; readings {args.settle:g} s after each phase)")
    print(C.table(["mode", "fds before", "fds idle", "fds after", "fds delta", "sockets before",
                   "sockets idle", "sockets after", "threads before", "threads idle",
                   "threads after", "RSS before", "RSS after", "RSS delta"], res_rows))
    for line in extra_lines:
        print(line)
    print(f"errors: {len(all_errors)} (target 0)")
    for e in all_errors[:60]:
        print("  " + e)
    if len(all_errors) > 60:
        print(f"  ... {len(all_errors) - 60} more")
    print(f"FTP server: {args.server}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}; total wall time "
          f"{time.monotonic() - t_start:.0f} s")
    return 1 if all_errors else 0


if __name__ == "__main__":
    sys.exit(main())
