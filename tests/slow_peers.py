"""Slow peers for back-pressure tests: a fast sender and a reader paced by bytes.

The reader takes its next chunk only when the sender is SPEEDUP times ahead of
it, or stuck (the whole chain full), or done. A relay that buffers instead of
slowing the sender lets it run ahead and holds the difference; a bounded one
blocks it. The reader samples ``relay.buffered`` before each chunk. Nothing
sleeps: the reader waits for the sender's state to change.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field

import trio

from ftptrio._ssh import SSHDataRelay, Tunnel
from ftptrio._ssh._relay import MAX_PKTSIZE, WINDOW, WRITE_HIGH_WATER

PAYLOAD = 40 * 1024 * 1024
#: window + write high-water, plus one socket read (asyncio reads up to 256 KiB)
#: and one SSH packet
BOUND = WINDOW + WRITE_HIGH_WATER + 256 * 1024 + MAX_PKTSIZE
TIMEOUT = 120
#: the sender is this many times faster than the slow reader (while it can send)
SPEEDUP = 4



@dataclass
class Pace:
    """The sender's progress, shared with the reader."""

    sent: int = 0
    blocked: bool = False
    done: bool = False
    samples: list[int] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_ahead(self, received: int) -> None:
        """Until the sender is stuck, done, or SPEEDUP times ahead of the reader."""
        while not (self.blocked or self.done or self.sent >= SPEEDUP * received):
            await self._changed.wait()


def raw(sock: trio.socket.SocketType) -> socket.socket:
    """A non-blocking stdlib socket taking over a trio socket's descriptor."""
    s = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    s.setblocking(False)
    return s


async def send_fast(sock: socket.socket, payload: bytes, pace: Pace) -> None:
    view = memoryview(payload)
    while pace.sent < len(payload):
        try:
            n = sock.send(view[pace.sent:pace.sent + 256 * 1024])
        except BlockingIOError:
            pace.blocked = True
            pace.notify()
            await trio.lowlevel.wait_writable(sock)
            pace.blocked = False
            continue
        pace.sent += n
        pace.notify()
        await trio.lowlevel.checkpoint()
    sock.shutdown(socket.SHUT_WR)
    pace.done = True
    pace.notify()


async def read_slowly(sock: socket.socket, pace: Pace, relay: SSHDataRelay) -> bytes:
    """Read SPEEDUP times slower than the sender, or whenever it is stuck (or done);
    sample what the relay holds before each chunk."""
    digest = hashlib.sha256()
    received = 0
    while True:
        await pace.wait_ahead(received)
        pace.samples.append(relay.buffered)
        try:
            data = sock.recv(64 * 1024)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not data:
            return digest.digest()
        digest.update(data)
        received += len(data)
        await trio.lowlevel.checkpoint()


#: the far ends' kernel receive buffers: small, so that a slow reader's kernel does
#: not absorb the backlog (loopback autotuning would take several MiB)
RCVBUF = 64 * 1024


async def flood(stream: trio.SocketStream, sent: list[int] | None = None,
                seconds: float = 20) -> None:
    """A server that sends as fast as it can (for ``seconds``) to a client that may
    never read; ``sent[0]`` counts the bytes its socket took."""
    chunk = b"x" * 65536
    try:
        with trio.move_on_after(seconds):
            while True:
                await stream.send_all(chunk)
                if sent is not None:
                    sent[0] += len(chunk)
    except trio.BrokenResourceError:
        pass


async def listener() -> trio.socket.SocketType:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    await sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


async def connect(port: int) -> socket.socket:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    await sock.connect(("127.0.0.1", port))
    return raw(sock)


class Relayed:
    """One relay with a raw socket at each far end: ``local`` (what ftptrio's relay
    socket talks to) and ``remote`` (behind the SSH server)."""

    def __init__(self, relay: SSHDataRelay, local: socket.socket, remote: socket.socket,
                 ) -> None:
        self.relay, self.local, self.remote = relay, local, remote

    def close(self) -> None:
        self.relay.close()
        self.local.close()
        self.remote.close()


async def build(tunnel: Tunnel, kind: str) -> Relayed:
    if kind == "forwarded":
        forward = await tunnel.listen_remote("127.0.0.1", 0)
        try:
            remote = await connect(forward.port)
            relay, _host, _port = await forward.accept()
        finally:
            await forward.aclose()
        lst = await listener()
        await relay.connect_socket("127.0.0.1", lst.getsockname()[1])
        local = raw((await lst.accept())[0])
        lst.close()
        return Relayed(relay, local, remote)
    lst = await listener()
    relay = await tunnel.open_data_relay("127.0.0.1", lst.getsockname()[1])
    remote = raw((await lst.accept())[0])
    lst.close()
    if kind == "direct-attach":
        lst = await listener()
        local = await connect(lst.getsockname()[1])
        await relay.attach_socket((await lst.accept())[0])
        lst.close()
    else:
        lst = await listener()
        await relay.connect_socket("127.0.0.1", lst.getsockname()[1])
        local = raw((await lst.accept())[0])
        lst.close()
    return Relayed(relay, local, remote)


async def pump_slow_reader(relayed: Relayed, direction: str, size: int = PAYLOAD) -> Pace:
    """Send ``size`` random bytes fast one way, read them slowly; check them."""
    payload = os.urandom(size)
    sender, reader = ((relayed.remote, relayed.local) if direction == "to_local"
                      else (relayed.local, relayed.remote))
    pace = Pace()
    got: list[bytes] = []

    async def read() -> None:
        got.append(await read_slowly(reader, pace, relayed.relay))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_fast, sender, payload, pace)
            nursery.start_soon(read)
    assert got == [hashlib.sha256(payload).digest()], "relayed bytes differ"
    return pace
