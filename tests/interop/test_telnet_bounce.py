"""Telnet sequences and odd whitespace inside a command line must not smuggle a
command past ftptrio's checks, against real servers (ProFTPD, vsftpd) through a
real OpenSSH sshd.

ProFTPD strips Telnet IAC sequences anywhere in a line before parsing it, and
splits words on any whitespace: ``PO<IAC IP>RT`` and ``PORT<TAB>`` are PORT to
it.  Through SSH the FTP server sees the control connection coming from the SSH
host (127.0.0.1 here), so a PORT naming 127.0.0.1 passes its own anti-bounce
check: only ftptrio can refuse it, because only ftptrio knows the client's real
address.  The raw client here connects from 127.0.0.2 and points its PORT/EPRT
at a "victim" listener on 127.0.0.1: foreign to the client, so ftptrio must
answer 5xx, the victim must never be connected to, and the session must go on.

Also: ``AU<IAC IP>TH TLS`` must get ftptrio's own 534 refusal, and with ``-vv``
the argument of ``PA<IAC IP>SS`` must not appear in ftptrio's log.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import trio

import ftptrio
from ftp_fakes import FTPClient
from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

SERVERS = ("proftpd", "vsftpd")
#: the raw client's address, as ftptrio sees it
CLIENT_HOST = "127.0.0.2"
#: where the bounce points: the SSH/FTP host's loopback, foreign to the client
VICTIM_HOST = "127.0.0.1"
#: limit for one whole test
TEST_TIMEOUT = 60
#: limit for one reply
REPLY_TIMEOUT = 20
IAC_IP = b"\xff\xf4"
SECRET = "s3cret-telnet-pw"


def _port_arg(host: str, port: int) -> bytes:
    return f"{host.replace('.', ',')},{port >> 8},{port & 255}".encode()


#: name -> bounce line for a victim at (host, port)
BOUNCES = {
    "PO-IAC-IP-RT": lambda h, p: b"PO" + IAC_IP + b"RT " + _port_arg(h, p),
    "EP-IAC-IP-RT": lambda h, p: b"EP" + IAC_IP + b"RT " + f"|1|{h}|{p}|".encode(),
    "PORT-TAB": lambda h, p: b"PORT\t" + _port_arg(h, p),
    "IAC-IP-PORT": lambda h, p: IAC_IP + b"PORT " + _port_arg(h, p),
}


@dataclass
class Connection:
    peer: tuple[str, int]
    data: bytes = b""


class Victim:
    """A TCP listener on VICTIM_HOST (OS-picked port >= 1024) that records
    every connection made to it.

    ``serve()`` (run in the test's nursery) accepts at once, records the peer
    before anything else, reads to EOF and closes: ProFTPD waits for the
    peer's close (lingering close, up to ~10 s) before it answers 226.
    ``connections()`` also takes, without blocking, whatever is still in the
    kernel's accept queue.  A server connects for RETR before it answers
    150/226, so once the client has the final reply to RETR, a bounce that
    happened is on record: no waiting, no race.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((VICTIM_HOST, 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        assert self.port >= 1024
        self.seen: list[Connection] = []

    def _take(self) -> tuple[socket.socket, Connection] | None:
        try:
            conn, peer = self.sock.accept()
        except BlockingIOError:
            return None
        conn.setblocking(False)
        record = Connection(peer)
        self.seen.append(record)
        return conn, record

    async def serve(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                taken = self._take()
                if taken is None:
                    continue
                conn, record = taken
                with conn, trio.move_on_after(REPLY_TIMEOUT):
                    while True:
                        await trio.lowlevel.wait_readable(conn)
                        try:
                            chunk = conn.recv(65536)
                        except BlockingIOError:
                            continue
                        except OSError as exc:
                            record.data += f"<{errno.errorcode.get(exc.errno, exc)}>".encode()
                            break
                        if not chunk:
                            break
                        record.data += chunk
        finally:
            self.sock.close()

    def connections(self) -> list[Connection]:
        while (taken := self._take()) is not None:
            conn, record = taken
            with conn:
                try:
                    record.data = conn.recv(65536)
                except OSError:
                    pass
        return list(self.seen)


@pytest.fixture
async def victim(nursery):
    v = Victim()
    nursery.start_soon(v.serve)
    return v


async def connect_from(local_host: str, address: tuple[str, int]) -> trio.SocketStream:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.bind((local_host, 0))
        with trio.fail_after(REPLY_TIMEOUT):
            await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def open_session(address: tuple[str, int]) -> FTPClient:
    """A raw control connection from CLIENT_HOST (its transcript goes into the
    assertion messages), greeting read."""
    session = await FTPClient.connect(address, local_host=CLIENT_HOST, timeout=REPLY_TIMEOUT)
    greeting = await session.reply()
    assert greeting[0][:3] == b"220", session.transcript_text()
    return session


async def log_in(session: FTPClient, ftp: servers.FTPServer) -> None:
    reply = await session.command(f"USER {ftp.user}".encode())
    if reply[0][:3] == b"331":
        reply = await session.command(f"PASS {ftp.password}".encode())
    assert reply[0][:3] == b"230", session.transcript_text()


async def pasv_list(session: FTPClient) -> bytes:
    """A legitimate PASV + LIST through ftptrio; returns the listing."""
    reply = await session.command(b"PASV")
    assert reply[0][:3] == b"227", session.transcript_text()
    nums = [int(n) for n in re.search(rb"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", reply[0]).groups()]
    address = (".".join(map(str, nums[:4])), nums[4] * 256 + nums[5])
    data = await connect_from(CLIENT_HOST, address)
    chunks = []
    async with data:
        reply = await session.command(b"LIST")
        assert reply[0][:3] in (b"125", b"150"), session.transcript_text()
        with trio.fail_after(REPLY_TIMEOUT):
            while chunk := await data.receive_some(65536):
                chunks.append(chunk)
    reply = await session.reply()
    assert reply[0][:3] == b"226", session.transcript_text()
    return b"".join(chunks)


def _server_commands(ftp: servers.FTPServer) -> str:
    """The command lines of the FTP server's log, as the server parsed them
    (ProFTPD's "CMD ..." lines; vsftpd's FTP command lines)."""
    lines = [line for line in ftp.log().splitlines()
             if line.startswith("CMD ") or "FTP command:" in line]
    return "\n".join(lines[-12:])


@pytest.mark.parametrize("bounce", list(BOUNCES))
@pytest.mark.parametrize("server", SERVERS)
async def test_telnet_smuggled_bounce_is_refused(request, openssh, server, bounce, victim):
    ftp = clients.ftp_server(request, server)
    line = BOUNCES[bounce](VICTIM_HOST, victim.port)
    with trio.fail_after(TEST_TIMEOUT):
        async with ftptrio.open_forwarder(clients.forwarder_config(openssh, ftp)) as fwd:
            session = await open_session(fwd.addresses[0])
            async with session:
                await log_in(session, ftp)
                bounce_reply = await session.command(line)
                # RETR makes a server that accepted the PORT/EPRT connect to it
                await session.send(f"RETR {servers.TEXT_FILE_NAME}\r\n".encode())
                await session.final_reply()
                bounced = victim.connections()
                # the session still works afterwards
                listing = await pasv_list(session)
                quit_reply = await session.command(b"QUIT")
    bounced = victim.connections()
    context = (f"\n--- client transcript ---\n{session.transcript_text()}"
               f"\n--- victim {VICTIM_HOST}:{victim.port} got ---\n{bounced}"
               f"\n--- {ftp.name} commands as it parsed them ---\n{_server_commands(ftp)}")
    assert not bounced, f"{ftp.name} connected to the victim: FTP bounce through ftptrio{context}"
    assert bounce_reply[0][:1] == b"5", f"bounce line {line!r} was not refused with 5xx{context}"
    assert servers.TEXT_FILE_NAME.encode() in listing, context
    assert quit_reply[0][:3] == b"221", context


@pytest.mark.parametrize("server", SERVERS)
async def test_telnet_smuggled_auth_tls_is_refused_by_ftptrio(request, openssh, server):
    ftp = clients.ftp_server(request, server)
    with trio.fail_after(TEST_TIMEOUT):
        async with ftptrio.open_forwarder(clients.forwarder_config(openssh, ftp)) as fwd:
            session = await open_session(fwd.addresses[0])
            async with session:
                reply = await session.command(b"AU" + IAC_IP + b"TH TLS")
                assert reply[0][:3] != b"234", f"TLS negotiated behind ftptrio's back\n{session.transcript_text()}"
                assert reply[0][:3] == b"534", (
                    f"AU<IAC IP>TH TLS did not get ftptrio's 534 refusal\n{session.transcript_text()}"
                    f"\n--- {ftp.name} commands ---\n{_server_commands(ftp)}")
                await log_in(session, ftp)
                assert servers.TEXT_FILE_NAME.encode() in await pasv_list(session)


@dataclass
class CLIProcess:
    """``python -m ftptrio`` with its stderr (the log) collected line by line."""

    process: trio.Process
    lines: list[str] = field(default_factory=list)
    ready: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    address: tuple[str, int] | None = None

    async def drain(self) -> None:
        buffer = b""
        try:
            while chunk := await self.process.stderr.receive_some(65536):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    text = raw.decode("utf-8", "replace")
                    self.lines.append(text)
                    if m := re.search(r"ready: FTP clients connect to ([\d.]+):(\d+)", text):
                        self.address = (m.group(1), int(m.group(2)))
                        self.ready.set()
            if buffer:
                self.lines.append(buffer.decode("utf-8", "replace"))
        finally:
            self.done.set()
            self.ready.set()  # wake a waiter if ftptrio exits before it is ready

    def log(self) -> str:
        return "\n".join(self.lines)


@pytest.mark.parametrize("server", SERVERS)
async def test_telnet_smuggled_pass_is_not_logged_at_vv(request, openssh, server):
    ftp = clients.ftp_server(request, server)
    args = [sys.executable, "-m", "ftptrio", "-vv",
            "-L", f"127.0.0.1:0:{ftp.host}:{ftp.port}",
            "-p", str(openssh.port), "-i", openssh.client_key,
            "-o", f"UserKnownHostsFile={openssh.known_hosts}",
            f"{openssh.username}@{openssh.host}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = await trio.lowlevel.open_process(args, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE, env=env)
    cli = CLIProcess(process)
    try:
        with trio.fail_after(TEST_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cli.drain)
                await cli.ready.wait()
                assert cli.address is not None, f"ftptrio exited early:\n{cli.log()}"
                session = await open_session(cli.address)
                async with session:
                    reply = await session.command(f"USER {ftp.user}".encode())
                    assert reply[0][:3] in (b"230", b"331"), session.transcript_text()
                    await session.command(b"PA" + IAC_IP + b"SS " + SECRET.encode())
                    assert (await session.command(b"NOOP"))[0][:3] == b"200", session.transcript_text()
                    await session.command(b"QUIT")
                process.send_signal(subprocess.signal.SIGTERM)
                await process.wait()
                await cli.done.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(10) as scope:
                scope.shield = True
                await process.wait()
    log = cli.log()
    # -vv really traced the protocol lines, so the absence below means something
    assert "client> USER" in log, f"ftptrio -vv logged no protocol lines:\n{log[-3000:]}"
    leaked = [line for line in cli.lines if SECRET in line]
    assert not leaked, "the PASS argument is in ftptrio's -vv log:\n" + "\n".join(leaked)
