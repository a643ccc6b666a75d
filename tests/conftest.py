"""Shared fixtures: ``make_setup`` runs ftptrio between the in-process SSH server
and a scriptable hostile FTP server, and leak-checks every forwarder it made."""

from __future__ import annotations

import functools
from typing import AsyncIterator, Callable

import pytest
import trio
import trio_asyncio

import ftptrio
from ftp_fakes import HostileFTP, Setup, assert_no_leaks
from ftptrio.testing import inprocess_ssh_server


@pytest.fixture(autouse=True)
def restore_logging():
    """Tests that run the command line configure logging (ftptrio._cli.setup_logging:
    root handlers and levels, the protocol-lines logger): put it back after each test,
    so later tests' caplog sees what it expects whatever the order."""
    import logging

    root = logging.getLogger()
    names = ("ftptrio", "ftptrio._control.lines", "asyncssh", "trio_asyncio")
    saved = (root.level, list(root.handlers),
             {name: logging.getLogger(name).level for name in names})
    yield
    root.setLevel(saved[0])
    for handler in root.handlers[:]:
        if handler not in saved[1]:
            root.removeHandler(handler)
            handler.close()
    for handler in saved[1]:
        if handler not in root.handlers:
            root.addHandler(handler)
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
async def make_setup() -> AsyncIterator[Callable]:
    """make_setup(**config_overrides) -> Setup; leak-checked at the end of the test."""
    async with trio_asyncio.open_loop():
        async with trio.open_nursery() as nursery:
            async with inprocess_ssh_server() as ssh:
                ftp = HostileFTP()
                listeners = await nursery.start(functools.partial(trio.serve_tcp, ftp._handle, 0, host="127.0.0.1"))
                ftp.port = listeners[0].socket.getsockname()[1]
                made: list[Setup] = []

                async def make(**overrides: object) -> Setup:
                    config = ftptrio.Config(
                        ssh=ftptrio.SSHOptions(host=ssh.host, port=ssh.port,
                                               username=ssh.username,
                                               client_keys=(ssh.client_key_path,),
                                               known_hosts=ssh.known_hosts),
                        forwards=(ftptrio.ForwardSpec(ftp_host="127.0.0.1",
                                                      ftp_port=ftp.port),),
                        **overrides)
                    forwarder = await nursery.start(ftptrio.serve, config)
                    setup = Setup(ssh, ftp, forwarder, config)
                    made.append(setup)
                    return setup

                yield make
                for setup in made:
                    await assert_no_leaks(setup.forwarder)
                nursery.cancel_scope.cancel()
