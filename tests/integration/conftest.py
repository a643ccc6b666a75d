"""Fixtures for the integration tests: an in-process asyncssh server, a pyftpdlib
server in a thread, and ftptrio running between them, all on 127.0.0.1 with
OS-picked ports.

pytest-trio runs every async fixture as a task of the test's own trio run and
propagates context variables from fixtures to the test, so the trio-asyncio loop
opened by ``aio_loop`` is the one asyncssh (server and ftptrio's tunnel) uses.
Async fixtures are function-scoped (pytest-trio cannot share them across
trio runs); each costs a few milliseconds.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest
import trio_asyncio

if importlib.util.find_spec("ftptrio") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import ftptrio  # noqa: E402
from ftptrio.testing import inprocess_ssh_server, threaded_ftp_server  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_pyftpdlib():
    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    yield


@pytest.fixture
async def aio_loop():
    """A trio-asyncio loop wrapping the SSH server and the forwarder."""
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture
async def ssh_server(aio_loop):
    """The in-process SSH server (records direct-tcpip and tcpip-forward requests)."""
    async with inprocess_ssh_server() as info:
        yield info


@pytest.fixture
def inprocess_ftp(tmp_path):
    """pyftpdlib in a thread of this process, serving a fresh directory under tmp_path
    (the interop tests' ``real_ftp_server`` runs vsftpd, ProFTPD, pyftpdlib as processes)."""
    root = tmp_path / "ftproot"
    root.mkdir()
    with threaded_ftp_server(str(root)) as info:
        yield info


@pytest.fixture
def forwarder_config(ssh_server, inprocess_ftp) -> ftptrio.Config:
    """A Config forwarding a local OS-picked port to inprocess_ftp through ssh_server."""
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(host=ssh_server.host, port=ssh_server.port,
                               username=ssh_server.username,
                               client_keys=(ssh_server.client_key_path,),
                               known_hosts=ssh_server.known_hosts,
                               connect_timeout=10.0),
        forwards=(ftptrio.ForwardSpec(ftp_host=inprocess_ftp.host,
                                      ftp_port=inprocess_ftp.port),),
    )


@pytest.fixture
async def forwarder(forwarder_config):
    """ftptrio running with forwarder_config (default: remote-forward active mode)."""
    async with ftptrio.open_forwarder(forwarder_config) as fwd:
        yield fwd


@pytest.fixture
def ftp_commands(monkeypatch):
    """Every command line the FTP server received, as (verb, arg), in order."""
    from pyftpdlib.handlers import FTPHandler

    seen: list[tuple[str, str]] = []
    original = FTPHandler.pre_process_command

    def recording(self, line, cmd, arg):
        seen.append((cmd, arg))
        return original(self, line, cmd, arg)

    monkeypatch.setattr(FTPHandler, "pre_process_command", recording)
    return seen
