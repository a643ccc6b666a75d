"""Test doubles shared by the test suites: a scriptable hostile FTP server, a
raw FTP client, the Setup bundle and the leak check."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import AsyncIterator, Callable

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
    """A raw FTP client on a trio stream: send lines, read replies."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self, timeout: float = 10) -> bytes:
        with trio.fail_after(timeout):
            while b"\r\n" not in self.buffer:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(self.buffer)
                self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def reply(self, timeout: float = 10) -> list[bytes]:
        """One complete (possibly multi-line) reply."""
        lines = [await self.line(timeout)]
        code = lines[0][:3]
        if lines[0][3:4] == b"-":
            while not (lines[-1][:3] == code and lines[-1][3:4] == b" ") or len(lines) == 1:
                lines.append(await self.line(timeout))
        return lines

    async def command(self, text: bytes) -> list[bytes]:
        await self.stream.send_all(text + b"\r\n")
        return await self.reply()


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
        host, port = self.address
        sock = trio.socket.socket()
        if local_host:
            await sock.bind((local_host, 0))
        await sock.connect((host, port))
        stream = trio.SocketStream(sock)
        try:
            client = FTPClient(stream)
            assert (await client.reply())[0].startswith(b"220")
            yield client
        finally:
            await stream.aclose()

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
    conn = forwarder.tunnel.connection if forwarder.tunnel else None
    with trio.move_on_after(timeout):
        while True:
            state = _leak_state(forwarder, conn, await _session_tasks())
            if not any(state.values()):
                return
            await trio.sleep(0.05)
    pytest.fail(f"resources of ended sessions remain: {state}")


def _leak_state(forwarder: ftptrio.Forwarder, conn: object, tasks: list[str]) -> dict:
    # the SSH server's listeners of remote (-R) tunnels live as long as the forwarder
    control = {(r.host, r.port) for r in getattr(forwarder, "remote_listeners", [])}
    remote = list(getattr(conn, "_remote_listeners", {}).keys()) if conn else []
    return {
        "sessions_active": forwarder.stats.sessions_active,
        "tasks": tasks,
        "ssh_channels": list(getattr(conn, "_channels", {}).keys()) if conn else [],
        "remote_forwards": [key for key in remote if key not in control],
    }
