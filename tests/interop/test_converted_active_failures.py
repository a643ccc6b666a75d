"""Active mode converted to passive (--active-mode passive) through real sshd, when
the client does not listen on the port its PORT named: the PORT gets ftptrio's 425,
before any transfer command could reach the server."""

from __future__ import annotations

import ftplib
import socket

import pytest
import trio

import ftptrio
from clients import forwarder_config


def unused_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def port_to_nothing(host: str, port: int, user: str, password: str) -> str:
    """Log in, then PORT to a port nothing listens on: its reply."""
    ftp = ftplib.FTP()
    ftp.connect(host, port, timeout=30)
    try:
        ftp.login(user, password)
        try:
            return ftp.sendcmd("PORT 127,0,0,1,%d,%d" % divmod(unused_port(), 256))
        except ftplib.error_temp as exc:
            return str(exc)
    finally:
        ftp.close()


@pytest.mark.parametrize("server", ["vsftpd", "proftpd", "pyftpdlib_server"])
async def test_port_to_a_client_that_does_not_listen_gets_425(openssh, server, request):
    """The PORT fails (425, with the reason), so the client sends no STOR or RETR for
    it: a file on the server cannot be emptied by an empty data connection, nor a RETR
    answered 226 with nothing delivered."""
    ftp = request.getfixturevalue(server)
    async with ftptrio.open_forwarder(forwarder_config(openssh, ftp,
                                                       active_mode="passive")) as fwd:
        host, port = fwd.addresses[0]
        reply = await trio.to_thread.run_sync(port_to_nothing, host, port, ftp.user,
                                              ftp.password)
        assert fwd.stats.transfers == 0
    assert reply.startswith("425 ftptrio: cannot open data connection: cannot connect to "
                            "your data port"), reply
