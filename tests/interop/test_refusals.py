"""A real OpenSSH sshd refusing forwards: its reason ("administratively
prohibited") and the likely fix reach the FTP client's 421/425 and the log."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import trio

import ftptrio
from ftp_fakes import FTPClient, wait_until
from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

PROHIBITED = "administratively prohibited: open failed"


@pytest.fixture
def start_sshd(tmp_path):
    started: list[servers.OpenSSHServer] = []

    def start(*lines: str) -> servers.OpenSSHServer:
        servers.require_tool("sshd")
        servers.require_tool("ssh-keygen")
        # sshd keeps the first value of a keyword: the refusing line goes first
        server = servers.start_openssh(tmp_path / f"sshd{len(started)}", extra_config=list(lines))
        started.append(server)
        assert open(server.config_path).read().find(lines[0]) >= 0
        return server

    yield start
    for server in started:
        server.stop()


async def open_control(forwarder) -> FTPClient:
    return await FTPClient.connect(forwarder.addresses[0], timeout=20)


async def test_control_channel_refused_by_sshd_gives_421_with_reason(
        start_sshd, pyftpdlib_server, caplog):
    sshd = start_sshd("AllowTcpForwarding no")
    caplog.set_level(logging.WARNING)
    async with ftptrio.open_forwarder(clients.forwarder_config(sshd, pyftpdlib_server)) as fwd:
        control = await open_control(fwd)
        reply = await control.text_reply()
        await control.aclose()
    assert reply.startswith("421 ftptrio: cannot reach the FTP server through SSH: SSH server "
                            f"could not connect to 127.0.0.1:{pyftpdlib_server.port}: "
                            f"{PROHIBITED}"), reply
    assert "AllowTcpForwarding" in reply and "PermitOpen" in reply, reply
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert PROHIBITED in log and "AllowTcpForwarding" in log, log


async def test_passive_data_refused_by_sshd_gives_425_with_reason(
        start_sshd, pyftpdlib_server, caplog):
    """PermitOpen lets the control connection through, not the data port."""
    sshd = start_sshd(f"PermitOpen 127.0.0.1:{pyftpdlib_server.port}")
    caplog.set_level(logging.WARNING)
    async with ftptrio.open_forwarder(clients.forwarder_config(sshd, pyftpdlib_server)) as fwd:
        control = await open_control(fwd)
        await control.login(pyftpdlib_server)
        # the 227 goes out before the SSH channel opens; a transfer command follows the
        # open request at once, so the first refusal on the SSH connection reaches
        # the client as the FTP server's own answer (after its data timeout)...
        assert (await control.cmd("PASV")).startswith("227 ")
        await wait_until(lambda: fwd._tunnel.data_opens_refused)
        # ...and from then on, transfer commands wait for the SSH server's answer: the
        # refusal is ftptrio's 425, with the reason, at once
        assert (await control.cmd("PASV")).startswith("227 ")
        reply = await control.cmd("LIST")
        assert (await control.cmd("NOOP")).startswith("200")  # the session goes on
        await control.aclose()
    assert reply.startswith("425 ftptrio: cannot open data connection: SSH server could not "
                            "open data connection to 127.0.0.1:"), reply
    assert PROHIBITED in reply and "PermitOpen" in reply, reply
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert PROHIBITED in log, log


async def test_active_data_refused_by_sshd_gives_425_suggesting_passive_conversion(
        start_sshd, pyftpdlib_server, caplog):
    sshd = start_sshd("AllowTcpForwarding local")  # no tcpip-forward
    caplog.set_level(logging.WARNING)
    async with ftptrio.open_forwarder(clients.forwarder_config(sshd, pyftpdlib_server)) as fwd:
        control = await open_control(fwd)
        await control.login(pyftpdlib_server)
        reply = await control.cmd("PORT 127,0,0,1,200,10")
        await control.aclose()
    assert reply.startswith("425 ftptrio: cannot open data connection: SSH server refused "
                            "remote forward on 127.0.0.1:0"), reply
    assert "AllowTcpForwarding" in reply and "--active-mode passive" in reply, reply
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "--active-mode passive" in log, log


async def test_exit_on_forward_failure_stops_at_start(start_sshd, pyftpdlib_server):
    sshd = start_sshd("AllowTcpForwarding no")
    config = dataclasses.replace(clients.forwarder_config(sshd, pyftpdlib_server),
                                 exit_on_forward_failure=True)
    with pytest.RaisesGroup(ftptrio.TunnelError, flatten_subgroups=True,
                            allow_unwrapped=True) as info:
        async with ftptrio.open_forwarder(config):
            pass
    error = info.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    message = str(error)
    assert PROHIBITED in message and "ExitOnForwardFailure" in message, message
    # sshd's refusal, of its own kind, with its reason code
    assert isinstance(error, ftptrio.ChannelRefused), repr(error)
    assert error.code == ftptrio.ChannelRefused.ADMINISTRATIVELY_PROHIBITED, error
