"""Session limits, timeouts, addresses and accounting through the real forwarder
(in-process SSH server, pyftpdlib)."""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest
import trio

import ftptrio
from ftp_fakes import FTPClient

try:
    from .integration_helpers import download, wait_until, write_random
except ImportError:
    from integration_helpers import download, wait_until, write_random  # type: ignore


def with_options(config: ftptrio.Config, **changes: object) -> ftptrio.Config:
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


async def test_clients_over_max_sessions_get_421(forwarder_config, inprocess_ftp):
    async with ftptrio.open_forwarder(with_options(forwarder_config, max_sessions=1)) as fwd:
        first = await FTPClient.connect(fwd.addresses[0])
        await first.login(inprocess_ftp)
        second = await FTPClient.connect(fwd.addresses[0])
        reply = await second.text_reply()
        assert reply.startswith("421 ") and "too many sessions (1)" in reply, reply
        await second.aclose()
        assert (await first.cmd("NOOP")).startswith("200")  # the first one goes on
        await first.aclose()
        await wait_until(lambda: fwd.stats.sessions_active == 0)
        third = await FTPClient.connect(fwd.addresses[0])
        assert (await third.text_reply()).startswith("220")
        await third.aclose()


async def test_idle_session_is_closed_with_421(forwarder_config, inprocess_ftp):
    config = with_options(forwarder_config, idle_session_timeout=0.3)
    async with ftptrio.open_forwarder(config) as fwd:
        client = await FTPClient.connect(fwd.addresses[0])
        await client.login(inprocess_ftp)
        reply = await client.text_reply(timeout=10)
        assert reply.startswith("421 ") and "idle" in reply, reply
        with trio.fail_after(10):
            assert await client.stream.receive_some(100) == b""
        await client.aclose()
        await wait_until(lambda: fwd.stats.sessions_active == 0)


async def test_sessions_are_not_closed_for_idleness_by_default(forwarder, inprocess_ftp):
    assert forwarder.stats.sessions == 0
    config_default = ftptrio.Config(ssh=ftptrio.SSHOptions(host="x"),
                                    forwards=(ftptrio.ForwardSpec(ftp_host="h"),))
    assert config_default.idle_session_timeout is None


async def test_transfer_log_line_names_the_file(forwarder, inprocess_ftp, caplog):
    caplog.set_level(logging.INFO, logger="ftptrio")
    write_random(f"{inprocess_ftp.root}/report 1.bin", 2000)
    data = await trio.to_thread.run_sync(download, forwarder.addresses[0], inprocess_ftp,
                                         "report 1.bin")
    assert len(data) == 2000
    await wait_until(lambda: forwarder.stats.transfers == 1)
    lines = [r.getMessage() for r in caplog.records if "transfer client=" in r.getMessage()]
    assert len(lines) == 1
    assert "command='RETR report 1.bin'" in lines[0] and "bytes=2000" in lines[0]
    assert re.search(r"rate=(n/a|\d+\.\dMB/s)", lines[0])


async def test_lan_client_gets_data_listener_on_the_address_it_reached(
        forwarder_config, inprocess_ftp):
    """-g / a non-loopback listener: the 227 names the address the client's control
    connection arrived on (here 127.0.0.2), and the data listener is bound there."""
    spec = dataclasses.replace(forwarder_config.forwards[0], listen_host="0.0.0.0")
    config = with_options(forwarder_config, forwards=(spec,))
    write_random(f"{inprocess_ftp.root}/lan.bin", 5000)
    async with ftptrio.open_forwarder(config) as fwd:
        port = fwd.addresses[0][1]
        client = await FTPClient.connect(("127.0.0.2", port))
        await client.login(inprocess_ftp)
        assert (await client.cmd("TYPE I")).startswith("200")
        reply = await client.cmd("PASV")
        numbers = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", reply)
        assert numbers is not None, reply
        assert ".".join(numbers.groups()[:4]) == "127.0.0.2", reply
        data_port = int(numbers.group(5)) * 256 + int(numbers.group(6))
        data_stream = await trio.open_tcp_stream("127.0.0.2", data_port)
        await client.send("RETR lan.bin\r\n")
        received = b""
        with trio.fail_after(10):
            while chunk := await data_stream.receive_some(65536):
                received += chunk
        assert len(received) == 5000
        assert (await client.text_reply())[:3] in ("125", "150")
        assert (await client.text_reply()).startswith("226")
        await data_stream.aclose()
        await client.aclose()


async def test_pasv_from_an_ipv6_client_gets_425_pointing_to_epsv(forwarder_config, inprocess_ftp):
    spec = dataclasses.replace(forwarder_config.forwards[0], listen_host="::1")
    config = with_options(forwarder_config, forwards=(spec,))
    async with ftptrio.open_forwarder(config) as fwd:
        client = await FTPClient.connect(("::1", fwd.addresses[0][1]))
        await client.login(inprocess_ftp)
        reply = await client.cmd("PASV")
        assert reply.startswith("425 ") and "EPSV" in reply, reply
        assert (await client.cmd("EPSV")).startswith("229 ")
        await client.aclose()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0])
def test_timeouts_must_be_finite_and_positive(bad):
    config = ftptrio.Config(ssh=ftptrio.SSHOptions(host="x"),
                            forwards=(ftptrio.ForwardSpec(ftp_host="h"),))
    for field in ("data_idle_timeout", "data_drain_timeout", "active_hold_timeout",
                  "idle_session_timeout"):
        with pytest.raises(ftptrio.ConfigError, match="positive number of seconds"):
            with_options(config, **{field: bad})


async def test_one_client_address_cannot_take_every_session(forwarder_config, inprocess_ftp,
                                                            caplog):
    """--max-sessions-per-client: the third session from 127.0.0.1 gets 421; a client
    from another address (127.0.0.2) is still served."""
    config = with_options(forwarder_config, max_sessions_per_client=2)
    async with ftptrio.open_forwarder(config) as fwd:
        first = await FTPClient.connect(fwd.addresses[0])
        second = await FTPClient.connect(fwd.addresses[0])
        for client in (first, second):
            assert (await client.text_reply()).startswith("220")
        third = await FTPClient.connect(fwd.addresses[0])
        reply = await third.text_reply()
        assert reply.startswith("421 ") and "from your address (2)" in reply, reply
        await third.aclose()
        other = await FTPClient.connect(fwd.addresses[0], local_host="127.0.0.2")
        assert (await other.text_reply()).startswith("220")
        await other.aclose()
        await first.aclose()
        await wait_until(lambda: fwd.stats.sessions_active == 1)
        again = await FTPClient.connect(fwd.addresses[0])
        assert (await again.text_reply()).startswith("220")
        for client in (second, again):
            await client.aclose()
        await wait_until(lambda: fwd.stats.sessions_active == 0)
        assert not fwd._per_client  # nothing counted once every session ended
    assert "refused an FTP client from 127.0.0.1" in caplog.text


async def test_a_host_name_ftp_host_is_warned_about_for_passive_too(forwarder_config, caplog):
    config = dataclasses.replace(forwarder_config, active_mode="passive", forwards=(
        dataclasses.replace(forwarder_config.forwards[0], ftp_host="localhost"),
        dataclasses.replace(forwarder_config.forwards[0], ftp_host="ftp.invalid")))
    async with ftptrio.open_forwarder(config):
        pass
    assert "FTP host ftp.invalid is a name: the SSH server resolves it again" in caplog.text
    assert "FTP host localhost is a name" not in caplog.text
