"""Shared helpers for the ftptrio end-to-end benchmarks (throughput, many_files,
concurrency).

Everything runs on loopback: a real OpenSSH sshd and an FTP server (pyftpdlib
by default, or vsftpd with anonymous login) started with the launchers of
``ftptrio.testing.servers`` (shared with the interop tests), and ftptrio as a
subprocess through its command line, so that its CPU time (utime+stime from
/proc/<pid>/stat) and RSS (VmRSS from /proc/<pid>/status) can be measured from
outside.  Every process started here is stopped in ``finally`` blocks.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ftptrio.testing import servers

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
GIB = 1 << 30


# ------------------------------------------------------------------ header/output
def measured_ftptrio(env: dict[str, str] | None = None) -> str:
    """The ftptrio a ``python -m ftptrio`` subprocess imports (with ``env``, default
    this environment): version, path and scanner implementation. Benches measure
    that one (an installed package, or a tree given by PYTHONPATH), not ``src/``."""
    probe = ("import ftptrio, os; print(ftptrio.__version__, "
             "os.path.dirname(ftptrio.__file__), ftptrio.IMPLEMENTATION)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, cwd=tempfile.gettempdir(), timeout=60,
                         stdin=subprocess.DEVNULL)
    if out.returncode:
        return f"ftptrio does not import: {out.stderr.strip().splitlines()[-1:]}"
    version, path, implementation = out.stdout.split()
    return f"ftptrio {version} from {path}, scanner {implementation}"


def print_header(title: str) -> None:
    import ftptrio

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    print(f"# {title}")
    print(f"measured: {measured_ftptrio()}")
    print(f"cores: os.cpu_count() = {os.cpu_count()}, usable (affinity) = {affinity}")
    versions = [f"python {platform.python_version()}", f"ftptrio {ftptrio.__version__}"]
    for mod in ("trio", "trio_asyncio", "asyncssh", "pyftpdlib"):
        try:
            m = __import__(mod)
            versions.append(f"{mod} {getattr(m, '__version__', getattr(m, '__ver__', '?'))}")
        except ImportError:
            versions.append(f"{mod} missing")
    ssh = shutil.which("ssh")
    if ssh:
        out = subprocess.run([ssh, "-V"], capture_output=True, text=True).stderr.strip()
        versions.append(out.split(",")[0])
    vsftpd = servers.find_tool("vsftpd")
    if vsftpd:  # vsftpd -v writes its version to fd 0
        try:
            out = subprocess.run(f"'{vsftpd}' -v 0>&1", shell=True, capture_output=True,
                                 text=True, timeout=10).stdout.strip()
            versions.append(out.replace("version ", "") or "vsftpd ?")
        except (OSError, subprocess.TimeoutExpired):
            versions.append("vsftpd ?")
    print("versions: " + ", ".join(versions))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain-text table; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = []
        for i, c in enumerate(row):
            numeric = n > 0 and i > 0
            parts.append(c.rjust(widths[i]) if numeric else c.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        if c != c:  # nan
            return "-"
        if abs(c) >= 100:
            return f"{c:.0f}"
        if abs(c) >= 10:
            return f"{c:.1f}"
        return f"{c:.2f}"
    return str(c)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 1000 samples = 990th smallest)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-pct * len(s) // 100)) - 1))
    return s[k]


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


# ------------------------------------------------------------------ /proc
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_status_kib(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def proc_fds(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) from /proc/<pid>/fd."""
    total = sockets = 0
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, name))
        except OSError:  # closed between listdir and readlink
            continue
        total += 1
        if target.startswith("socket:"):
            sockets += 1
    return total, sockets


def proc_threads(pid: int) -> int:
    return proc_status_kib(pid, "Threads")


def open_files_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return line.split()[3]
    return "?"


# ------------------------------------------------------------------ data files
def write_random_file(path: Path, size: int, seed: int, chunk: int = 8 * MIB) -> None:
    """``size`` pseudo-random bytes from ``random.Random(seed)`` (fixed content)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(rng.randbytes(n))
            left -= n
    os.chmod(path, 0o644)


def bench_tmpdir(prefix: str) -> str:
    """A temp dir on tmpfs (/dev/shm) when available, so disk I/O stays out."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


# ------------------------------------------------------------------ processes
def stop(proc: subprocess.Popen | None) -> None:
    servers.stop_process(proc)


@dataclass
class Ftptrio:
    """ftptrio running as a subprocess via ``python -m ftptrio``."""

    process: subprocess.Popen
    port: int
    mode: str
    log_path: str
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int:
        return proc_status_kib(self.pid, "VmHWM")

    def fds(self) -> tuple[int, int]:
        """(open fds, of which sockets)."""
        return proc_fds(self.pid)

    def threads(self) -> int:
        return proc_threads(self.pid)

    def snapshot(self) -> dict:
        """fds, sockets, threads, RSS and peak RSS (KiB) right now."""
        fds, socks = self.fds()
        return {"fds": fds, "socks": socks, "threads": self.threads(),
                "rss": self.rss_kib(), "hwm": self.hwm_kib()}

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        stop(self.process)


def start_ftptrio(ssh: "servers.OpenSSHServer", ftp: "servers.FTPServer", workdir: str,
                  *, active_mode: str | None = None, extra: Sequence[str] = (),
                  tag: str = "ftptrio", src: str | None = None) -> Ftptrio:
    """Start ftptrio on a free local port forwarding to ``ftp`` through ``ssh``
    and wait until it accepts connections; with ``src``, the ftptrio of that
    directory (its PYTHONPATH) rather than the one this interpreter imports."""
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    last = ""
    for _attempt in range(3):
        port = servers.free_port()
        args = [sys.executable, "-m", "ftptrio",
                "-L", f"{HOST}:{port}:{ftp.host}:{ftp.port}",
                "-p", str(ssh.port), "-i", ssh.client_key,
                "-o", f"UserKnownHostsFile={ssh.known_hosts}", os.environ.get("FTPTRIO_BENCH_VERBOSITY", "-q")]
        if active_mode:
            args += ["--active-mode", active_mode]
        args += list(extra)
        args.append(f"{ssh.username}@{ssh.host}")
        log_path = os.path.join(workdir, f"{tag}-{port}.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, env=env)
        fx = Ftptrio(proc, port, active_mode or "remote-forward", log_path, args)
        try:
            servers.wait_for_port(HOST, port, timeout=30, process=proc)
            return fx
        except (TimeoutError, RuntimeError) as exc:
            fx.stop()
            last = f"{exc}\n{fx.log()[-3000:]}"
            if "cannot listen" in last or "in use" in last:
                continue
            break
    raise RuntimeError(f"ftptrio did not start: {last}")


def ssh_base_args(ssh: "servers.OpenSSHServer", cipher: str | None = None) -> list[str]:
    args = ["-F", "/dev/null", "-p", str(ssh.port), "-i", ssh.client_key,
            "-o", f"UserKnownHostsFile={ssh.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
    if cipher:
        args += ["-c", cipher]
    return args


def _start_ssh_forwards(ssh: "servers.OpenSSHServer", workdir: str, listen_host: str,
                        forwards: Callable[[int], list[tuple[int, str, int]]], what: str,
                        cipher: str | None = None) -> tuple[subprocess.Popen, int]:
    """One ``ssh -N`` with the ``-L`` forwards ``forwards(port)`` gives for a free
    ``port`` on ``listen_host`` (OpenSSH cannot listen on port 0): (listen port,
    destination host, destination port) each. Returns the process once every
    forward listens, and ``port``; three tries."""
    last = ""
    for _attempt in range(3):
        port = servers.free_port(listen_host)
        wanted = forwards(port)
        args = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes"]
        for listen_port, dest_host, dest_port in wanted:
            args += ["-L", f"{listen_host}:{listen_port}:{dest_host}:{dest_port}"]
        args += [*ssh_base_args(ssh, cipher), f"{ssh.username}@{ssh.host}"]
        log_path = os.path.join(workdir, f"ssh-L-{what.replace(' ', '-')}-{port}.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        try:
            for listen_port, _host, _port in wanted:
                servers.wait_for_port(listen_host, listen_port, timeout=30, process=proc)
            return proc, port
        except (TimeoutError, RuntimeError) as exc:
            stop(proc)
            last = f"{exc}: {Path(log_path).read_text(errors='replace')[-2000:]}"
    raise RuntimeError(f"ssh -L {what} did not start: {last}")


def start_ssh_forward(ssh: "servers.OpenSSHServer", dest_port: int, workdir: str,
                      cipher: str | None = None) -> tuple[subprocess.Popen, int]:
    """``ssh -N -L 127.0.0.1:PORT:127.0.0.1:dest_port``."""
    return _start_ssh_forwards(ssh, workdir, HOST, lambda port: [(port, HOST, dest_port)],
                               "stream", cipher)


def start_ssh_ftp_forward(ssh: "servers.OpenSSHServer", ftp: "servers.FTPServer", workdir: str,
                          listen_host: str, cipher: str | None = None,
                          ) -> tuple[subprocess.Popen, int]:
    """FTP through ``ssh -L`` the way users do it by hand: one ``ssh -N`` with a
    forward for the control port and one for each port of the FTP server's
    (small, fixed) passive range, all on ``listen_host`` (another loopback
    address than the server's, so that the passive ports keep their numbers).
    Returns the process and the forwarded control port."""
    return _start_ssh_forwards(
        ssh, workdir, listen_host,
        lambda port: [(port, ftp.host, ftp.port)] + [(p, ftp.host, p) for p in ftp.passive_ports],
        "per passive port", cipher)


def negotiated_cipher(ssh: "servers.OpenSSHServer") -> str:
    """Cipher of the most recent SSH connection, from sshd's DEBUG1 log."""
    cipher = "?"
    for line in ssh.log().splitlines():
        if "kex: client->server cipher:" in line:
            cipher = line.split("cipher:")[1].split()[0]
    return cipher


def sshd_limits(ssh: "servers.OpenSSHServer") -> str:
    """Effective MaxSessions / MaxStartups of the test sshd (``sshd -T``)."""
    sshd = servers.find_tool("sshd") or "sshd"
    out = subprocess.run([sshd, "-T", "-f", ssh.config_path, "-C",
                          f"user={ssh.username},host=localhost,addr={HOST}"],
                         capture_output=True, text=True, timeout=30).stdout
    keep = [ln for ln in out.splitlines()
            if ln.split(" ")[0] in ("maxsessions", "maxstartups", "allowtcpforwarding")]
    return ", ".join(keep)


def fmt_snapshot(snap: dict) -> str:
    return (f"fds {snap['fds']} ({snap['socks']} sockets), threads {snap['threads']}, "
            f"RSS {snap['rss']} KiB")


SERVERS = ("pyftpdlib", "vsftpd")


def _config_value(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.split("=", 1)[0].strip() == key:
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "?"


def start_vsftpd_bench(tmpdir: str, passive_count: int = 1000) -> "servers.FTPServer":
    """vsftpd via servers.start_vsftpd (anonymous login, user ``anonymous``).

    Its config already has ``max_clients=0`` and ``max_per_ip=0`` (0 = no
    limit), so nothing needs raising for 200+ sessions from 127.0.0.1; only the
    passive range is widened (default there is 50 ports).  The limits are
    checked here so that a future change in servers.py shows up at once.
    """
    ftp = servers.start_vsftpd(tmpdir, passive_count=passive_count)
    conf = os.path.join(tmpdir, "vsftpd.conf")
    for key in ("max_clients", "max_per_ip"):
        if _config_value(conf, key) != "0":
            ftp.stop()
            raise RuntimeError(f"vsftpd {key}={_config_value(conf, key)} in {conf}: "
                               "the bench expects 0 (unlimited)")
    return ftp


def ftp_server_info(ftp: "servers.FTPServer", max_cons: int | None = None) -> str:
    pr = ftp.passive_ports
    text = f"{ftp.name} on {ftp.host}:{ftp.port}, passive ports {pr.start}-{pr.stop - 1} ({len(pr)})"
    if ftp.name == "vsftpd":
        conf = os.path.join(os.path.dirname(ftp.root), "vsftpd.conf")
        text += (f", login {ftp.user} (anonymous), max_clients={_config_value(conf, 'max_clients')}"
                 f" max_per_ip={_config_value(conf, 'max_per_ip')} (0 = unlimited), "
                 f"one forked process pair per session")
    elif max_cons is not None:
        text += f", max_cons {max_cons}, max_cons_per_ip 0"
    return text


@dataclass
class Bed:
    """A test bed: sshd + an FTP server (pyftpdlib or vsftpd) in one temp dir."""

    workdir: str
    ssh: "servers.OpenSSHServer"
    ftp: "servers.FTPServer"
    stack: contextlib.ExitStack
    server: str = "pyftpdlib"

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.stack.callback(stop, proc)
        return proc

    def ftptrio(self, active_mode: str | None = None, **kw) -> Ftptrio:
        fx = start_ftptrio(self.ssh, self.ftp, self.workdir, active_mode=active_mode, **kw)
        self.stack.callback(fx.stop)
        return fx


@contextlib.contextmanager
def test_bed(prefix: str, *, passive_count: int = 400, max_cons: int = 512,
             keep: bool = False, server: str = "pyftpdlib") -> Iterator[Bed]:
    """Start sshd and the FTP server (``server``: pyftpdlib or vsftpd) on
    loopback; stop everything (and remove the temp dir unless ``keep``) on exit."""
    if server not in SERVERS:
        raise ValueError(f"unknown FTP server {server!r}")
    workdir = bench_tmpdir(prefix)
    with contextlib.ExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, workdir, True)
        ssh = servers.start_openssh(os.path.join(workdir, "sshd"))
        stack.callback(ssh.stop)
        if server == "vsftpd":
            ftp = start_vsftpd_bench(os.path.join(workdir, "ftp"), passive_count=passive_count)
        else:
            passive_ports = servers.free_port_range(passive_count)
            ftp = servers.start_pyftpdlib(os.path.join(workdir, "ftp"), max_cons=max_cons,
                                          passive_ports=passive_ports)
        stack.callback(ftp.stop)
        yield Bed(workdir, ssh, ftp, stack, server)


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def connect(port: int, timeout: float = 30.0) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


# ------------------------------------------------------------------ a long link (delay proxy)
#: the cipher of every route in the long-link benches (wan.py, wan_files.py)
AES = "aes128-gcm@openssh.com"

_DELAY_PROXY = r'''
import asyncio, collections, socket, sys
target_port, delay, host = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
quick_ack = sys.argv[4:5] == ["quick-ack"]
HIGH = 32 << 20

def plain_tcp(sock):
    """No Nagle, and cubic rather than the system's default congestion control (see
    link_address in bench/_common.py): the proxy's own sockets model a link, not a paced sender."""
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
    def ready(self):
        """The other side is connected (a client's bytes can arrive before that: Python
        3.10's pause_reading() in connection_made does not stop the first read)."""
        return self.out is not None and self.out.transport is not None
    def push(self, data):
        if delay <= 0 and not self.q and self.ready():
            self.out.transport.write(data); return
        self.q.append((self.loop.time() + delay, data))
        if self.timer is None and self.ready():
            self.timer = self.loop.call_at(self.q[0][0], self.flush)
    def push_end(self, close):
        if close: self.close = True
        else: self.eof = True
        if not self.ready():
            return  # start() finishes it once connected
        if not self.q and self.timer is None:
            self.finish()
        elif self.timer is None:
            self.timer = self.loop.call_at(self.loop.time() + delay, self.flush)
    def start(self):
        """The other side is now connected: send what arrived before."""
        if self.q:
            self.timer = self.loop.call_at(self.q[0][0], self.flush)
        elif self.eof or self.close:
            self.finish()
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
    #: acknowledge every read at once (the half that talks to sshd, with quick-ack)
    quick_ack = False
    def data_received(self, data):
        self.dir.push(data)
        if self.quick_ack:
            self.transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
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
        server.quick_ack = quick_ack
        server.peer, self.peer = self, server
        self.dir.out, server.dir.out = server, self
        try:
            await loop.create_connection(lambda: server, "127.0.0.1", target_port,
                                         local_addr=(host, 0))
        except OSError:
            self.transport.close(); return
        self.dir.start()
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


def link_address(bed: Bed, fix: bool) -> str:
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
        return HOST
    route = ["local", f"{LINK_ADDRESS}/32", "dev", "lo", "table", "local"]
    try:
        subprocess.run(["ip", "route", "replace", *route, "congctl", "cubic"], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"WARNING: no cubic route for the delay proxy ({exc}); using {HOST} with "
              f"the system's congestion control", flush=True)
        return HOST
    bed.stack.callback(subprocess.run, ["ip", "route", "del", *route], capture_output=True,
                       timeout=30)
    return LINK_ADDRESS


def start_script(bed: Bed, name: str, source: str, *args: str,
                 host: str = HOST) -> tuple[subprocess.Popen, int]:
    """Run a helper script (``source``) that prints 'PORT n' once it listens on
    ``host``; the process and that port."""
    script = Path(bed.workdir) / f"{name}.py"
    script.write_text(source)
    err = open(Path(bed.workdir) / f"{name}.stderr", "ab")
    proc = bed.add(subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                                    stderr=err, stdin=subprocess.DEVNULL, start_new_session=True))
    err.close()
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        raise RuntimeError(f"{name} did not start: {line!r} "
                           f"{(Path(bed.workdir) / f'{name}.stderr').read_text()[-2000:]}")
    port = int(line.split()[1])
    servers.wait_for_port(host, port, timeout=30, process=proc)
    return proc, port


def start_proxy(bed: Bed, name: str, host: str, *args: str,
                quick_ack: bool = False) -> tuple[subprocess.Popen, int]:
    """The delay proxy, listening on ``host``; args: the target port and the one-way
    delay in s. ``quick_ack``: see delayed_ssh."""
    return start_script(bed, name, _DELAY_PROXY, *args, host,
                        *(["quick-ack"] if quick_ack else []), host=host)


def sftp_time(workdir: str, ssh: "servers.OpenSSHServer", batch: str,
              cipher: str | None = AES) -> float:
    """Wall time of one ``sftp -b`` session running ``batch`` (set-up included)."""
    bf = Path(workdir) / "wan-sftp.batch"
    bf.write_text(batch)
    args = ["sftp", "-q", "-b", str(bf), *ssh_base_args(ssh, cipher)]
    args[args.index("-p")] = "-P"
    args.append(f"{ssh.username}@{ssh.host}")
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, timeout=1000)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"sftp failed: {out.stderr.strip()} {out.stdout.strip()}")
    return dt


def sftp_setup_time(workdir: str, ssh: "servers.OpenSSHServer", cipher: str | None = AES) -> float:
    """An sftp session's set-up and teardown: the median of three ``pwd`` batches (what
    the benches subtract from an ``sftp -b`` transfer's wall time)."""
    return median([sftp_time(workdir, ssh, "pwd\n", cipher) for _ in range(3)])


def delayed_ssh(bed: Bed, link: str, rtt_ms: float,
                quick_ack: bool = False) -> "servers.OpenSSHServer":
    """A delay proxy for ``rtt_ms`` on ``link`` in front of the bed's sshd (stopped with
    the bed), and that sshd as seen through it (host, port and a known_hosts file).

    The proxy's socket to sshd is what acknowledges sshd's segments, at once or after
    the kernel's delayed-ACK timer (up to 40 ms). sshd sends with Nagle on, so a small
    segment (a reply, a channel EOF or close) waits for the ACK of the one before: on
    a real link that ACK comes from the client after one RTT; through this proxy it
    comes after the delayed-ACK timer (about 40 ms at every RTT), or at once with
    ``quick_ack`` (TCP_QUICKACK after every read, as ftptrio's own SSH socket does)."""
    _proxy, port = start_proxy(bed, f"proxy{rtt_ms:g}", link, str(bed.ssh.port),
                               str(rtt_ms / 2000), quick_ack=quick_ack)
    known_hosts = Path(bed.workdir) / f"known_hosts_{port}"
    known_hosts.write_text(f"[{link}]:{port} {bed.ssh.host_public_key.strip()}\n")
    return replace(bed.ssh, host=link, port=port, known_hosts=str(known_hosts))


def ftptrio_trees(compare_src: str | None) -> list[tuple[str, str | None]]:
    """The ftptrio routes of a ``--compare-src`` bench: (name, PYTHONPATH for
    start_ftptrio's ``src``), the ftptrio this interpreter imports first, then
    ``compare_src``'s src/ as "ftptrio[its directory name]"."""
    trees: list[tuple[str, str | None]] = [("ftptrio", None)]
    if compare_src:
        top = os.path.abspath(compare_src)
        trees.append((f"ftptrio[{os.path.basename(top)}]", os.path.join(top, "src")))
    return trees
