"""Floods through a real OpenSSH sshd and vsftpd (issue 18, points 2 and 3): a client
that never reads ftptrio's own replies cannot grow its memory, and a client sending
hundreds of valid PORT commands cannot leave hundreds of listeners on the SSH server."""

from __future__ import annotations

import subprocess

import trio

import ftptrio
from ftp_fakes import FTPClient
from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

REPLY_TIMEOUT = 20


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _sshd_listeners(sshd: servers.OpenSSHServer) -> int:
    """TCP listening sockets of sshd's session processes (remote forwards), not the
    daemon's own port."""
    servers.require_tool("ss")
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    children = subprocess.run(["pgrep", "-P", str(sshd.process.pid)], capture_output=True,
                              text=True, check=False, timeout=30).stdout.split()
    # privilege separation: the session process may be a grandchild
    for child in list(children):
        children += subprocess.run(["pgrep", "-P", child], capture_output=True, text=True,
                                   check=False, timeout=30).stdout.split()
    pids = {f"pid={pid}," for pid in children}
    return sum(1 for line in out.splitlines() if any(pid in line for pid in pids))


async def _login(client: FTPClient, ftp: servers.FTPServer) -> None:
    greeting = await client.reply(timeout=REPLY_TIMEOUT)
    assert greeting[0][:3] == b"220", greeting
    reply = await client.command(f"USER {ftp.user}".encode())
    if reply[0][:3] == b"331":
        reply = await client.command(f"PASS {ftp.password}".encode())
    assert reply[0][:3] == b"230", reply


async def test_port_flood_leaves_at_most_one_remote_forward(openssh, vsftpd):
    async with ftptrio.open_forwarder(clients.forwarder_config(openssh, vsftpd)) as fwd:
        client = FTPClient(await trio.open_tcp_stream(*fwd.addresses[0]))
        await _login(client, vsftpd)
        before = _sshd_listeners(openssh)
        for index in range(300):
            port = 40000 + index
            reply = await client.command(f"PORT 127,0,0,1,{port >> 8},{port & 255}".encode())
            assert reply[0][:3] == b"200", reply
        # each PORT superseded the unused one before: only the last forward waits
        # (cancel-tcpip-forward of the one before may still be on its way)
        with trio.move_on_after(REPLY_TIMEOUT):
            while _sshd_listeners(openssh) - before != 1:
                await trio.sleep(0.1)
        assert _sshd_listeners(openssh) - before == 1
        await client.command(b"QUIT")
        await client.stream.aclose()


async def test_client_that_never_reads_cannot_grow_memory(openssh, vsftpd):
    """12 MB of LPRT (answered 502 by ftptrio itself) from a client that reads nothing:
    ftptrio stops reading once its replies pile up, so the client's writes stall."""
    async with ftptrio.open_forwarder(clients.forwarder_config(openssh, vsftpd)) as fwd:
        stream = await trio.open_tcp_stream(*fwd.addresses[0])
        rss_before = _rss_kib()
        block = b"LPRT 4,4,127,0,0,1,2,4,1\r\n" * 4096
        sent = 0
        with trio.move_on_after(10):
            while sent < 12_000_000:
                await stream.send_all(block)
                sent += len(block)
        assert sent < 12_000_000, "ftptrio kept reading from a client that never reads"
        # kernel socket buffers hold some; ftptrio's own queues are bounded
        assert _rss_kib() - rss_before < 64 * 1024
        await stream.aclose()
        with trio.fail_after(REPLY_TIMEOUT):
            while fwd.stats.sessions_active:
                await trio.sleep(0.05)
