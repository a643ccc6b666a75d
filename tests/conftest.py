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
