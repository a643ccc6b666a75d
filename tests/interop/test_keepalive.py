"""Keepalive (ServerAliveInterval / ServerAliveCountMax) through a real OpenSSH
sshd: ftptrio re-arms asyncssh's keepalive timer lazily (not on every read), so
it must still notice a server that stops answering, and must not send keepalive
requests while data flows."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time

import trio
import trio_asyncio

import ftptrio
from ftptrio._ssh import Tunnel
from ftptrio.testing import servers

INTERVAL = 0.5
COUNT_MAX = 2


def _session_processes(sshd: servers.OpenSSHServer) -> list[int]:
    """sshd's per-connection processes (children of the listener and theirs)."""
    out = subprocess.run(["pgrep", "-P", str(sshd.process.pid)], capture_output=True,
                         text=True, check=False).stdout.split()
    pids = [int(p) for p in out]
    for pid in list(pids):
        more = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                              check=False).stdout.split()
        pids += [int(p) for p in more]
    return pids


async def _busy_echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def test_keepalive_quiet_while_busy_and_detects_a_frozen_server(tmp_path):
    servers.require_tool("sshd")
    sshd = servers.start_openssh(tmp_path)
    frozen: list[int] = []
    try:
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, _busy_echo, 0,
                                                              host="127.0.0.1"))
            echo_port = listeners[0].socket.getsockname()[1]
            tun = Tunnel(ftptrio.SSHOptions(
                host=sshd.host, port=sshd.port, username=sshd.username,
                client_keys=(sshd.client_key,), known_hosts=sshd.known_hosts,
                connect_timeout=10.0, keepalive_interval=INTERVAL,
                keepalive_count_max=COUNT_MAX))
            try:
                conn = await tun.connect()
                # busy for 4 intervals: traffic all the time, so no keepalive is due
                stream = await tun.open_stream("127.0.0.1", echo_port)
                requests = 0
                original = conn._make_keepalive_request

                async def counting() -> None:
                    nonlocal requests
                    requests += 1
                    await original()

                conn._make_keepalive_request = counting
                # keepalive timers armed while busy: a few per interval, not one per read
                armed = 0
                loop = conn._loop
                call_later = loop.call_later

                def counting_call_later(delay, callback, *args, **kwargs):
                    nonlocal armed
                    if getattr(callback, "__name__", "") in ("fired",
                                                             "_keepalive_timer_callback"):
                        armed += 1
                    return call_later(delay, callback, *args, **kwargs)

                loop.call_later = counting_call_later
                rounds = 0
                deadline = time.monotonic() + 4 * INTERVAL
                while time.monotonic() < deadline:
                    await stream.send_all(b"x" * 4096)
                    await stream.receive_some(65536)
                    await trio.sleep(0.02)
                    rounds += 1
                del loop.call_later
                assert requests == 0, f"{requests} keepalive requests while busy"
                assert rounds >= 20 and armed <= 12, (rounds, armed)
                await stream.aclose()

                # idle: keepalives are answered, the connection stays
                await trio.sleep(3 * INTERVAL)
                assert requests >= 1
                assert not conn.is_closed()

                # frozen server: lost after about (COUNT_MAX + 1) intervals
                frozen = _session_processes(sshd)
                assert frozen, "no sshd session process found"
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                # (the count runs from the last reply, before the freeze)
                with trio.fail_after(10 * INTERVAL * (COUNT_MAX + 1)):
                    await trio_asyncio.aio_as_trio(conn.wait_closed)()
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
                await tun.aclose()
                nursery.cancel_scope.cancel()
    finally:
        sshd.stop()
