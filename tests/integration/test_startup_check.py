"""Start-up that tells the truth (first contact, round 2, point 7): before ready,
ftptrio opens one control connection to each -L tunnel's FTP server through SSH and
reads its greeting; a forward that cannot work is an error line at start (and with
ExitOnForwardFailure the end of start-up), not a surprise for the first client."""

from __future__ import annotations

import dataclasses
import functools
import logging

import pytest
import trio

import ftptrio


async def test_reachable_ftp_server_is_logged_with_its_greeting(forwarder_config, inprocess_ftp,
                                                                 caplog):
    caplog.set_level(logging.INFO, logger="ftptrio")
    async with ftptrio.open_forwarder(forwarder_config):
        pass
    assert (f"FTP server {inprocess_ftp.host}:{inprocess_ftp.port} reachable (220"
            in caplog.text), caplog.text


async def test_forbidden_forwarding_is_an_error_at_start(ssh_server, forwarder_config, caplog):
    ssh_server.allow_direct = False
    async with ftptrio.open_forwarder(forwarder_config):
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "not reachable through the SSH server" in errors[0].getMessage(), \
        caplog.text


async def test_forbidden_forwarding_with_exit_on_forward_failure_ends_start_up(
        ssh_server, forwarder_config):
    ssh_server.allow_direct = False
    config = dataclasses.replace(forwarder_config, exit_on_forward_failure=True)
    # the error is of the kind that happened (an embedder branches on the class)
    with pytest.raises(ftptrio.ChannelRefused, match="ExitOnForwardFailure=yes") as info:
        async with ftptrio.open_forwarder(config):
            pass
    assert info.value.code == ftptrio.ChannelRefused.ADMINISTRATIVELY_PROHIBITED
    assert info.value.reason, info.value


async def test_a_server_that_is_not_ftp_is_reported(forwarder_config, ssh_server, nursery,
                                                     caplog):
    async def not_ftp(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n")
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, not_ftp, 0,
                                                      host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    config = dataclasses.replace(forwarder_config, forwards=(
        dataclasses.replace(forwarder_config.forwards[0], ftp_port=port),))
    async with ftptrio.open_forwarder(config):
        pass
    assert f"FTP server 127.0.0.1:{port} not reachable" in caplog.text
    assert "it answered 'SSH-2.0-OpenSSH_9.2'" in caplog.text


async def test_the_check_can_be_turned_off_for_embedders(ssh_server, forwarder_config):
    config = dataclasses.replace(forwarder_config, check_ftp_servers=False)
    async with ftptrio.open_forwarder(config):
        pass
    assert not ssh_server.direct_requests


async def test_localhost_ftp_host_and_a_loopback_227_is_not_warned_about(
        forwarder_config, inprocess_ftp, caplog):
    """-L 2121:localhost:21 (the README's own example): the server's 227 names
    127.0.0.1, the same host; no 'ignored' warning on every session."""
    import os

    from integration_helpers import write_random, download

    write_random(os.path.join(inprocess_ftp.root, "one.bin"), 65536)
    config = dataclasses.replace(forwarder_config, forwards=(
        dataclasses.replace(forwarder_config.forwards[0], ftp_host="localhost"),))
    async with ftptrio.open_forwarder(config) as fwd:
        await trio.to_thread.run_sync(download, fwd.addresses[0], inprocess_ftp, "one.bin")
    assert "227 names" not in caplog.text, caplog.text


async def test_the_ftp_client_is_named_as_the_direct_tcpip_originator(
        forwarder_config, inprocess_ftp, ssh_server):
    """sshd logs "originator 127.0.0.1 port N", not "originator  port 0"."""
    from ftp_fakes import FTPClient, wait_until

    async with ftptrio.open_forwarder(forwarder_config) as fwd:
        client = await FTPClient.connect(fwd.addresses[0])
        await client.login(inprocess_ftp)
        local_port = client.stream.socket.getsockname()[1]
        await client.cmd("PASV")  # its data channel opens after the reply went out
        await wait_until(lambda: len(ssh_server.direct_originators) >= 3, 10)
        await client.aclose()
    # [0] is the start-up check (no client); then the session's control channel and
    # its passive data channel (opened before the client connects: port 0)
    assert ssh_server.direct_originators[1] == ("127.0.0.1", local_port)
    assert ssh_server.direct_originators[2] == ("127.0.0.1", 0)
