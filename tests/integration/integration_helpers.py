"""Client-side helpers for the integration tests (blocking ftplib; the raw trio
client is ``ftp_fakes.FTPClient``), options for the in-process SSH server, plus
polling and leak-inspection utilities. (sha256 helpers: ``ftptrio.testing.servers``.)"""

from __future__ import annotations

import dataclasses
import ftplib
import io
import os
import socket
import sys
from typing import Any

if sys.version_info < (3, 11):  # pragma: no cover - the backport
    from exceptiongroup import BaseExceptionGroup

import pytest
import trio

import ftptrio
from ftp_fakes import asyncssh_table, wait_until  # noqa: F401 (wait_until re-exported)
from ftptrio.testing import FTP_PASSIVE_PORTS

CLIENT_TIMEOUT = 30.0
BLOCK = 256 * 1024


# ----------------------------------------------------------------- SSH options, host keys
def ssh_options(ssh: Any, **changes: Any) -> ftptrio.SSHOptions:
    """SSHOptions for the in-process SSH server ``ssh`` (key login, its known_hosts)."""
    return ftptrio.SSHOptions(host=ssh.host, port=ssh.port, username=ssh.username,
                              client_keys=(ssh.client_key_path,), known_hosts=ssh.known_hosts,
                              connect_timeout=10.0, **changes)


def with_ssh(config: ftptrio.Config, **changes: Any) -> ftptrio.Config:
    """``config`` with these SSHOptions fields changed."""
    return dataclasses.replace(config, ssh=dataclasses.replace(config.ssh, **changes))


def pub(key: Any) -> str:
    """An asyncssh key's public half, as a known_hosts line ends."""
    return key.export_public_key().decode().strip()


async def refused(config: ftptrio.Config) -> ftptrio.HostKeyError:
    """The HostKeyError of a forwarder that must not start."""
    with pytest.raises(ftptrio.HostKeyError) as info:
        try:
            async with ftptrio.open_forwarder(config):
                pass
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
    return info.value


def write_random(path: str | os.PathLike, size: int) -> bytes:
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


# ----------------------------------------------------------------- ftplib (threads)
def login(addr: tuple[str, int], ftp_info: Any) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect(addr[0], addr[1], timeout=CLIENT_TIMEOUT)
    ftp.login(ftp_info.user, ftp_info.password)
    return ftp


def download(addr: tuple[str, int], ftp_info: Any, name: str, *, passive: bool = True,
             rest: int | None = None) -> bytes:
    sink = io.BytesIO()
    with login(addr, ftp_info) as ftp:
        ftp.set_pasv(passive)
        ftp.retrbinary(f"RETR {name}", sink.write, blocksize=BLOCK, rest=rest)
        ftp.quit()
    return sink.getvalue()


def upload(addr: tuple[str, int], ftp_info: Any, name: str, payload: bytes, *,
           passive: bool = True) -> None:
    with login(addr, ftp_info) as ftp:
        ftp.set_pasv(passive)
        ftp.storbinary(f"STOR {name}", io.BytesIO(payload), blocksize=BLOCK)
        ftp.quit()


def listing(addr: tuple[str, int], ftp_info: Any, *, passive: bool = True
            ) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    with login(addr, ftp_info) as ftp:
        ftp.set_pasv(passive)
        ftp.retrlines("LIST", lines.append)
        names = ftp.nlst()
        ftp.quit()
    return lines, names


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(BLOCK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def epsv_download(addr: tuple[str, int], ftp_info: Any, name: str) -> tuple[str, bytes]:
    """RETR over EPSV sent by hand (ftplib only uses EPSV on IPv6)."""
    with login(addr, ftp_info) as ftp:
        ftp.voidcmd("TYPE I")
        reply = ftp.sendcmd("EPSV")
        assert reply.startswith("229"), reply
        port = ftplib.parse229(reply, ftp.sock.getpeername())[1]
        with socket.create_connection((addr[0], port), timeout=CLIENT_TIMEOUT) as data:
            start = ftp.sendcmd(f"RETR {name}")
            assert start.startswith("1"), start
            payload = _recv_all(data)
        ftp.voidresp()
        ftp.quit()
    return reply, payload


def eprt_download(addr: tuple[str, int], ftp_info: Any, name: str) -> tuple[str, bytes]:
    """RETR over EPRT |1|127.0.0.1|port| naming our own listening socket."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(CLIENT_TIMEOUT)
        port = listener.getsockname()[1]
        with login(addr, ftp_info) as ftp:
            ftp.voidcmd("TYPE I")
            reply = ftp.sendcmd(f"EPRT |1|127.0.0.1|{port}|")
            assert reply.startswith("200"), reply
            start = ftp.sendcmd(f"RETR {name}")
            assert start.startswith("1"), start
            conn, _peer = listener.accept()
            with conn:
                conn.settimeout(CLIENT_TIMEOUT)
                payload = _recv_all(conn)
            ftp.voidresp()
            ftp.quit()
    return reply, payload


async def wait_closed(stream: trio.SocketStream, timeout: float) -> bytes:
    """Read until EOF/reset; fails if the peer does not close within timeout."""
    got = b""
    with trio.fail_after(timeout):
        while True:
            try:
                data = await stream.receive_some(BLOCK)
            except trio.BrokenResourceError:  # reset counts as closed
                return got
            if not data:
                return got
            got += data


async def connect_refused(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing accepts on host:port."""
    try:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return True
    await stream.aclose()
    return False


# ------------------------------------------------------------------ leak inspection
# asyncssh has no public accessor for these: asyncssh_table reads its private
# tables and fails loudly if one is missing.
def open_channels(conn: Any) -> list[Any]:
    """SSH channels asyncssh still tracks on one connection."""
    if conn is None:
        return []
    return list(asyncssh_table(conn, "_channels").values())


def remote_listeners(conn: Any) -> list[Any]:
    """Remote (tcpip-forward) listeners a client connection still holds: their
    (host, port) keys."""
    if conn is None:
        return []
    return list(asyncssh_table(conn, "_remote_listeners"))


def server_listeners(conn: Any) -> list[Any]:
    """Listeners an SSH server connection still holds for tcpip-forward."""
    return list(asyncssh_table(conn, "_local_listeners").values())


def server_channels(ssh_info: Any) -> list[Any]:
    chans: list[Any] = []
    for conn in ssh_info.connections:
        chans.extend(open_channels(conn))
    return chans


def assert_direct_requests_only_ftp(ssh_info: Any, ftp_info: Any) -> None:
    """Every direct-tcpip named the FTP host and its control or passive ports."""
    assert ssh_info.direct_requests, "no direct-tcpip request at all"
    for host, port in ssh_info.direct_requests:
        assert host == ftp_info.host == "127.0.0.1", ssh_info.direct_requests
        assert port == ftp_info.port or port in FTP_PASSIVE_PORTS, ssh_info.direct_requests
