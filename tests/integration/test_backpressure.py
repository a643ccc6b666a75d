"""Back-pressure of the data relay: what it holds stays below the SSH window plus
the write buffers' high-water marks, whatever the speed difference.

Each test drives one relay (the way the data plane builds it for each data path)
between a fast sender and a slow reader paced by bytes, not by time
(``tests/slow_peers.py``), sampling ``relay.buffered`` before each chunk read.

Relay constructions (every data path uses one of them):

* ``direct-attach``: direct-tcpip channel + accepted local socket (-L passive, -R active)
* ``direct-connect``: direct-tcpip channel + connected local socket (active converted)
* ``forwarded``: forwarded-tcpip channel + connected local socket (-L active, -R passive)

Directions: ``to_local`` (data from the SSH side to a slow local reader: a slow
FTP client downloading, or a slow FTP server receiving on -R) and ``to_remote``
(a fast local sender, a slow reader behind the SSH server).
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import AsyncIterator

import pytest
import trio

from ftptrio._ssh import Tunnel
from slow_peers import (BOUND, WINDOW, Pace, build, flood, listener, pump_slow_reader, raw,
                        send_fast)

try:
    from .integration_helpers import ssh_options
except ImportError:  # run from this directory
    from integration_helpers import ssh_options  # type: ignore


@pytest.fixture
async def tunnel(ssh_server) -> AsyncIterator[Tunnel]:
    tun = Tunnel(ssh_options(ssh_server))
    try:
        await tun.connect()
        yield tun
    finally:
        await tun.aclose()


@pytest.mark.parametrize("kind", ["direct-attach", "direct-connect", "forwarded"])
@pytest.mark.parametrize("direction", ["to_local", "to_remote"])
async def test_relay_holds_at_most_window_plus_high_water(tunnel, kind, direction):
    relayed = await build(tunnel, kind)
    try:
        pace = await pump_slow_reader(relayed, direction)
    finally:
        relayed.close()
    # the reader waited for back-pressure many times: the relay paused and resumed
    assert len(pace.samples) > 100
    peak = max(pace.samples)
    assert peak <= BOUND, f"relay held {peak} bytes (bound {BOUND})"
    if direction == "to_local":
        # the window (not the payload) is what piles up in front of a slow reader
        assert peak >= WINDOW // 2, f"only {peak} bytes held: back-pressure not exercised"


async def test_control_stream_holds_at_most_window_plus_high_water(tunnel):
    """SSHStream (FTP control) read slowly while the far end sends fast: what it
    holds stays below its high-water mark plus the channel's window (asyncssh's
    default for control channels, 2 MiB)."""
    lst = await listener()
    stream = await tunnel.open_stream("127.0.0.1", lst.getsockname()[1])
    remote = raw((await lst.accept())[0])
    lst.close()
    payload = os.urandom(24 * 1024 * 1024)
    pace = Pace()
    digest = hashlib.sha256()
    received = 0
    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_fast, remote, payload, pace)
                while True:
                    await pace.wait_ahead(received)
                    pace.samples.append(stream.buffered)
                    data = await stream.receive_some(16 * 1024)
                    if not data:
                        break
                    digest.update(data)
                    received += len(data)
    finally:
        remote.close()
        await stream.aclose()
    assert digest.digest() == hashlib.sha256(payload).digest()
    assert max(pace.samples) <= 256 * 1024 + 2 * 1024 * 1024 + 64 * 1024, max(pace.samples)


async def test_channel_never_attached_holds_at_most_one_window(tunnel):
    """-L passive: the channel now opens while the 227 goes out, so a hostile server
    can send before (or without) the client ever connecting: the relay holds at
    most its SSH window, and the rest waits in the server's socket."""
    sent = [0]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, functools.partial(flood, sent=sent, seconds=10), 0,
            host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        relay = await tunnel.open_data_relay("127.0.0.1", port)
        try:
            await trio.sleep(1.0)
            assert sent[0] > WINDOW  # the server could send more than a window
            assert relay.buffered <= WINDOW, relay.buffered
        finally:
            relay.close()
            nursery.cancel_scope.cancel()
