"""Test doubles shared by the test suites: a scriptable hostile FTP server (and its
passive replies and data ports), a raw FTP client, a tunnel to an in-memory FTP
server, the Setup bundle and the leak check."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import re
from typing import Any, AsyncIterator, Callable

import pytest
import trio

import ftptrio
from ftptrio.testing import SSHServerInfo

@dataclasses.dataclass
class HostileFTP:
    """A small trio FTP server whose replies the test scripts."""

    port: int = 0
    #: command verb -> reply bytes (may be several lines, or anything at all)
    replies: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    greeting: bytes = b"220 hostile ftp\r\n"
    commands: list[bytes] = dataclasses.field(default_factory=list)
    #: verb -> async handler(line, stream) that answers the command itself
    handlers: dict[bytes, Callable] = dataclasses.field(default_factory=dict)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            await stream.send_all(self.greeting)
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    line = line.rstrip(b"\r")
                    self.commands.append(line)
                    verb = line.split(b" ", 1)[0].upper()
                    if verb == b"QUIT":
                        await stream.send_all(b"221 bye\r\n")
                        return
                    if verb in self.handlers:
                        await self.handlers[verb](line, stream)
                    else:
                        await stream.send_all(self.replies.get(verb, b"200 ok\r\n"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away, or a handler closed the connection on purpose


class FTPClient:
    """A raw FTP control client on a trio stream (no ftplib), for tests that need
    the exact bytes on the wire.

    Replies come either as raw lines (``reply()``, ``command(bytes)``: a list of
    lines without CRLF) or as text (``text_reply()``, ``cmd(str)``: every line with
    its CRLF, decoded as latin-1). Everything sent and received is kept in
    ``transcript`` for assertion messages (``transcript_text()``). ``timeout``
    bounds every reply (and the connect) unless a call gives its own.
    """

    def __init__(self, stream: trio.SocketStream, timeout: float = 10) -> None:
        self.stream = stream
        self.timeout = timeout
        self.buffer = b""
        self.transcript: list[str] = []

    @classmethod
    async def connect(cls, address: tuple[str, int], *, local_host: str | None = None,
                      timeout: float = 10) -> "FTPClient":
        """Connect to ``address`` (from ``local_host`` if given) within ``timeout``,
        which also bounds each reply; the greeting is left unread."""
        family = trio.socket.AF_INET6 if ":" in address[0] else trio.socket.AF_INET
        sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        try:
            if local_host:
                await sock.bind((local_host, 0))
            with trio.fail_after(timeout):
                await sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return cls(trio.SocketStream(sock), timeout)

    async def __aenter__(self) -> "FTPClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.stream.aclose()

    # ------------------------------------------------------------ raw lines
    async def line(self, timeout: float | None = None) -> bytes:
        """One line, without its CRLF; EOFError if the connection closes first."""
        with trio.fail_after(self.timeout if timeout is None else timeout):
            while b"\r\n" not in self.buffer:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(f"control connection closed; pending {self.buffer!r}")
                self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        self.transcript.append(f"< {line.decode('latin-1')}")
        return line

    async def reply(self, timeout: float | None = None) -> list[bytes]:
        """One complete (possibly multi-line) reply, as its lines."""
        with trio.fail_after(self.timeout if timeout is None else timeout):
            lines = [await self.line(math.inf)]
            code = lines[0][:3]
            if lines[0][3:4] == b"-":
                while not (lines[-1][:3] == code and lines[-1][3:4] == b" ") or len(lines) == 1:
                    lines.append(await self.line(math.inf))
        return lines

    async def final_reply(self, timeout: float | None = None) -> list[bytes]:
        """Replies until one that is not preliminary (1xx)."""
        while True:
            lines = await self.reply(timeout)
            if lines[0][:1] != b"1":
                return lines

    async def send(self, data: bytes | str) -> None:
        """Send ``data`` as it is (no CRLF added)."""
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.transcript.append(f"> {data!r}")
        await self.stream.send_all(data)

    async def command(self, line: bytes, timeout: float | None = None) -> list[bytes]:
        """Send one command line (CRLF added) and read its reply's lines."""
        await self.send(line + b"\r\n")
        return await self.reply(timeout)

    # ----------------------------------------------------------------- text
    async def text_reply(self, timeout: float | None = None) -> str:
        """One complete reply as text, every line with its CRLF."""
        lines = await self.reply(timeout)
        return b"".join(line + b"\r\n" for line in lines).decode("latin-1")

    async def cmd(self, line: str, timeout: float | None = None) -> str:
        """Send one command line (CRLF added) and read its reply as text."""
        await self.send(line + "\r\n")
        return await self.text_reply(timeout)

    # -------------------------------------------------------------- helpers
    async def login(self, ftp_info: Any) -> None:
        """Read the greeting, then USER (and PASS when asked for one) of
        ``ftp_info.user``/``ftp_info.password``."""
        greeting = await self.text_reply()
        assert greeting.startswith("220"), self.transcript_text()
        r = await self.cmd(f"USER {ftp_info.user}")
        if r.startswith("331"):
            r = await self.cmd(f"PASS {ftp_info.password}")
        assert r.startswith("230"), self.transcript_text()

    async def pasv(self) -> int:
        """PASV; the 227 must name 127.0.0.1. Returns the data port."""
        r = await self.cmd("PASV")
        assert r.startswith("227"), r
        nums = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", r)
        assert nums is not None, r
        assert ".".join(nums.groups()[:4]) == "127.0.0.1", r
        return int(nums.group(5)) * 256 + int(nums.group(6))

    def transcript_text(self, last: int = 40) -> str:
        return "\n".join(self.transcript[-last:])


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
                     what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.02)
    assert predicate(), f"timed out after {timeout} s waiting for {what}"


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str,
                       timeout: float = 5.0) -> logging.LogRecord:
    """The first captured log record whose message contains ``text``, waiting for it
    at most ``timeout`` seconds (the logger's level must let it through)."""
    def find() -> logging.LogRecord | None:
        return next((r for r in caplog.records if text in r.getMessage()), None)

    await wait_until(find, timeout, f"a log line with {text!r}")
    record = find()
    assert record is not None
    return record


def pasv_reply(host: str, port: int) -> bytes:
    """A 227 reply naming ``host:port``, for ``HostileFTP.replies[b"PASV"]``."""
    h = host.replace(".", ",")
    return f"227 Entering Passive Mode ({h},{port >> 8},{port & 255}).\r\n".encode()


def parse_227_port(line: bytes) -> tuple[str, int]:
    """The host and port a 227 reply names."""
    found = re.search(rb"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", line)
    assert found is not None, line
    nums = [int(n) for n in found.groups()]
    return ".".join(map(str, nums[:4])), nums[4] * 256 + nums[5]


async def serve_data(nursery: trio.Nursery, payload: bytes) -> int:
    """A data port on the 'FTP host' that sends payload to whoever connects."""

    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(payload)
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0,
                                                      host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def read_all(host: str, port: int, local_host: str | None = None) -> bytes:
    """Connect to ``host:port`` (from ``local_host`` if given) and read until EOF."""
    sock = trio.socket.socket()
    if local_host:
        await sock.bind((local_host, 0))
    await sock.connect((host, port))
    stream = trio.SocketStream(sock)
    chunks = []
    with trio.fail_after(10):
        while data := await stream.receive_some(65536):
            chunks.append(data)
    await stream.aclose()
    return b"".join(chunks)




@dataclasses.dataclass
class Setup:
    ssh: SSHServerInfo
    ftp: HostileFTP
    forwarder: ftptrio.Forwarder
    config: ftptrio.Config

    @property
    def address(self) -> tuple[str, int]:
        return self.forwarder.addresses[0]

    @contextlib.asynccontextmanager
    async def client(self, local_host: str | None = None) -> AsyncIterator[FTPClient]:
        async with await FTPClient.connect(self.address, local_host=local_host) as client:
            assert (await client.reply())[0].startswith(b"220")
            yield client

    def destinations(self) -> set[str]:
        """Every host the SSH server was asked to connect to."""
        return {host for host, _port in self.ssh.direct_requests}


async def _session_tasks() -> list[str]:
    """Names of live trio tasks that belong to an ftptrio session."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        if "ftptrio._session" in task.name or "ftptrio._dataplane" in task.name:
            names.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return names


async def assert_no_leaks(forwarder: ftptrio.Forwarder, timeout: float = 10) -> None:
    """After sessions end: no session task, SSH channel, remote forward or session."""
    conn = forwarder._tunnel.connection if forwarder._tunnel else None
    with trio.move_on_after(timeout):
        while True:
            state = _leak_state(forwarder, conn, await _session_tasks())
            if not any(state.values()):
                return
            await trio.sleep(0.05)
    pytest.fail(f"resources of ended sessions remain: {state}")


def asyncssh_table(conn: object, name: str) -> dict:
    """The private table ``name`` of an asyncssh connection (``_channels``,
    ``_remote_listeners``, ``_local_listeners``).

    asyncssh (2.24) has no public accessor for a connection's open channels or
    listeners, so the leak checks read its private dicts. If asyncssh renames
    one, this fails loudly: a default would make every leak check pass.
    """
    table = getattr(conn, name, None)
    if not isinstance(table, dict):
        import asyncssh

        pytest.fail(f"{type(conn).__name__}.{name} is {table!r}, not asyncssh's table: "
                    f"asyncssh {asyncssh.__version__} changed its internals, so the leak "
                    f"checks cannot see its channels/listeners; update "
                    f"tests/ftp_fakes.asyncssh_table", pytrace=False)
    return table


def _leak_state(forwarder: ftptrio.Forwarder, conn: object, tasks: list[str]) -> dict:
    # the SSH server's listeners of remote (-R) tunnels live as long as the forwarder
    control = {(r.host, r.port) for r in forwarder._remote_listeners}
    remote = list(asyncssh_table(conn, "_remote_listeners")) if conn else []
    return {
        "sessions_active": forwarder.stats.sessions_active,
        "tasks": tasks,
        "ssh_channels": list(asyncssh_table(conn, "_channels")) if conn else [],
        "remote_forwards": [key for key in remote if key not in control],
    }
