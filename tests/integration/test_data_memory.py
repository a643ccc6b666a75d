"""--data-memory (security round 3, lows): the SSH receive windows of all data
channels together hold at most the budget. A channel holds at most its window while
its local side does not read (a client that never reads a RETR), so 256 sessions x
an 8 MiB window were ~2 GiB; past the budget new channels get smaller windows
(down to 256 KiB) and windows do not grow. Every way a channel ends gives its share
back."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import AsyncIterator

import pytest
import trio

import ftptrio
from ftptrio._ssh import Tunnel
from ftptrio._ssh._relay import MIN_BUDGET_WINDOW, WINDOW, WindowBudget
from ftp_fakes import wait_until
from slow_peers import flood

try:
    from .integration_helpers import ssh_options
except ImportError:  # run from this directory
    from integration_helpers import ssh_options  # type: ignore

MIB = 1024 * 1024
BUDGET = 20 * MIB


@pytest.fixture
async def tunnel(ssh_server) -> AsyncIterator[Tunnel]:
    tun = Tunnel(ssh_options(ssh_server, data_memory=BUDGET))
    try:
        await tun.connect()
        yield tun
    finally:
        await tun.aclose()


def test_budget_arithmetic():
    budget = WindowBudget(20 * MIB)
    shares = [budget.reserve(8 * MIB) for _ in range(4)]
    assert [s.window for s in shares] == [8 * MIB, 8 * MIB, 4 * MIB, MIN_BUDGET_WINDOW]
    assert not shares[0].grow_to(16 * MIB)  # growth stays within the budget
    shares[1].release()
    shares[1].release()  # once only
    assert not shares[0].grow_to(16 * MIB)  # 8 + 4 + 0.25 MiB in use: 8 more do not fit
    shares[2].release()
    assert shares[0].grow_to(16 * MIB) and budget.used == 16 * MIB + MIN_BUDGET_WINDOW
    shares[0].shrink_to(8 * MIB)
    for share in shares:
        share.release()
    assert budget.used == 0
    unlimited = WindowBudget(None)
    assert unlimited.reserve(8 * MIB).window == 8 * MIB and unlimited.reserve(8 * MIB).grow_to(
        1 << 30)


async def test_channels_that_nobody_reads_hold_at_most_the_budget(tunnel):
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, flood, 0,
                                                          host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        relays = [await tunnel.open_data_relay("127.0.0.1", port) for _ in range(5)]
        try:
            # 8 + 8 + 4 MiB, then the smallest window for the two past the budget
            assert tunnel.budget.used == BUDGET + 2 * MIN_BUDGET_WINDOW
            await trio.sleep(1.5)  # every channel fills what its window allows
            held = sum(relay.buffered for relay in relays)
            assert held <= BUDGET + 2 * MIN_BUDGET_WINDOW, held
            assert held > 2 * WINDOW  # the flood did fill the windows it was given
        finally:
            for relay in relays:
                relay.close()
            nursery.cancel_scope.cancel()
    await wait_until(lambda: tunnel.budget.used == 0, 10)


async def test_an_unused_remote_forward_and_a_refused_open_give_their_share_back(
        tunnel, ssh_server):
    forward = await tunnel.listen_remote("127.0.0.1", 0)
    assert tunnel.budget.used == WINDOW
    await forward.aclose()
    assert tunnel.budget.used == 0
    ssh_server.allow_direct = False
    with pytest.raises(ftptrio.ChannelRefused):
        await tunnel.open_data_relay("127.0.0.1", 9)
    assert tunnel.budget.used == 0


async def test_forwards_requested_ahead_take_their_share_only_when_armed(tunnel):
    """--active-forward-ahead: a disarmed forward holds no data, so it takes no share of
    the budget (64 sessions, each with a forward waiting for its next PORT, leave the
    budget whole); arming takes the share, and the channel's window starts at it."""
    ahead = [await tunnel.listen_remote("127.0.0.1", 0, armed=False) for _ in range(64)]
    try:
        assert tunnel.budget.used == 0
        for forward in ahead[:3]:
            forward.arm()
        # 8 + 8 MiB, then what is left of the 20 MiB budget
        assert tunnel.budget.used == BUDGET
        assert [getattr(f._listener, "_window") for f in ahead[:3]] == [WINDOW, WINDOW,
                                                                       BUDGET - 2 * WINDOW]
        assert getattr(ahead[3]._listener, "_window") == MIN_BUDGET_WINDOW  # until armed
    finally:
        for forward in ahead:
            await forward.aclose()
    assert tunnel.budget.used == 0


async def test_sessions_that_never_read_a_retr_stay_within_the_budget(
        forwarder_config, inprocess_ftp):
    """Through whole FTP sessions: PASV + RETR of a large file, the data connection
    opened but never read; the forwarder's windows stay within --data-memory, and all
    of it comes back when the sessions end."""
    from ftp_fakes import FTPClient

    (Path(inprocess_ftp.root) / "big.bin").write_bytes(b"\0" * (40 * MIB))
    config = dataclasses.replace(forwarder_config, ssh=dataclasses.replace(
        forwarder_config.ssh, data_memory=BUDGET))
    async with ftptrio.open_forwarder(config) as fwd:
        clients, data = [], []
        for _ in range(4):
            client = await FTPClient.connect(fwd.addresses[0])
            await client.login(inprocess_ftp)
            await client.cmd("TYPE I")
            reply = await client.cmd("PASV")
            numbers = reply.split("(")[1].split(")")[0].split(",")
            port = int(numbers[4]) * 256 + int(numbers[5])
            data.append(await trio.open_tcp_stream("127.0.0.1", port))
            await client.send("RETR big.bin\r\n")
            clients.append(client)
        await trio.sleep(1.5)
        # within the budget, plus the smallest window for each channel past it
        assert fwd._tunnel.budget.used <= BUDGET + 4 * MIN_BUDGET_WINDOW, fwd._tunnel.budget.used
        for stream in data:
            await stream.aclose()
        for client in clients:
            await client.aclose()
        await wait_until(lambda: fwd.stats.sessions_active == 0, 10)
        await wait_until(lambda: fwd._tunnel.budget.used == 0, 10)
