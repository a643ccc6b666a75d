"""Back-pressure through a real OpenSSH sshd: a slow local reader of a fast
download (a slow FTP client) and a fast local sender to a slow reader behind
sshd (an upload to a slow FTP server). The relay holds at most the SSH window
plus the write buffers' high-water marks; bytes arrive intact."""

from __future__ import annotations

from typing import AsyncIterator

import pytest
import trio_asyncio

import ftptrio
from ftptrio._ssh import Tunnel
from slow_peers import BOUND, WINDOW, build, pump_slow_reader


@pytest.fixture
async def sshd_tunnel(openssh) -> AsyncIterator[Tunnel]:
    async with trio_asyncio.open_loop():
        tun = Tunnel(ftptrio.SSHOptions(
            host=openssh.host, port=openssh.port, username=openssh.username,
            client_keys=(openssh.client_key,), known_hosts=openssh.known_hosts,
            connect_timeout=10.0))
        try:
            await tun.connect()
            yield tun
        finally:
            await tun.aclose()


@pytest.mark.parametrize("kind", ["direct-attach", "forwarded"])
@pytest.mark.parametrize("direction", ["to_local", "to_remote"])
async def test_relay_through_sshd_holds_at_most_window_plus_high_water(sshd_tunnel, kind,
                                                                       direction):
    relayed = await build(sshd_tunnel, kind)
    try:
        pace = await pump_slow_reader(relayed, direction, 64 * 1024 * 1024)
    finally:
        relayed.close()
    assert len(pace.samples) > 100
    peak = max(pace.samples)
    assert peak <= BOUND, f"relay held {peak} bytes (bound {BOUND})"
    if direction == "to_local":
        assert peak >= WINDOW // 4, f"only {peak} bytes held: back-pressure not exercised"
