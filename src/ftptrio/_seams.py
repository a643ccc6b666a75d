"""The seams between the FTP layers and the SSH layer, as ``typing.Protocol``\\ s.

What a session (``_session``), its data plane (``_dataplane``) and the listeners of
remote tunnels (``_server``) use of the shared SSH connection. ``RemoteFiles`` is what the
FTP server front end (``_sftpfront``, ``--sftp-server``) uses of one SFTP session. The
SSH layer implements them (``_ssh``: ``Tunnel``, ``SSHDataRelay``, ``RemoteListener``,
``RemoteStreamListener``); ``ftptrio.testing.fake_tunnel`` fakes them for unit tests.
No I/O here, and no import of the SSH layer.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import AsyncContextManager, AsyncIterator, Callable, Literal, Protocol

import trio

#: a remote forward's filter of incoming connections: (originator host, port) -> accept
AcceptFilter = Callable[[str, int], bool]


@dataclass(slots=True)
class RelayResult:
    """What one data connection moved, each way, and how it ended."""

    to_ssh: int  # bytes read from the local socket and sent into SSH
    from_ssh: int  # bytes read from SSH and written to the local socket
    error: str | None = None


class DataRelay(Protocol):
    """An SSH channel of one data connection, relayed to a TCP socket once paired
    (``_ssh.SSHDataRelay``)."""

    @property
    def progress(self) -> tuple[int, ...]:
        """A value that changes whenever a byte moves, either way (polled: a
        stalled transfer is idle, a slow one is not)."""
        ...

    async def attach_socket(self, sock: trio.socket.SocketType) -> None:
        """Pair an accepted socket with the channel (the relay runs on its own)."""
        ...

    async def connect_socket(self, host: str, port: int) -> None:
        """Connect to host:port from here and pair that connection with the channel."""
        ...

    async def relay_socket(self, sock: trio.socket.SocketType) -> RelayResult:
        """Pair an accepted socket and relay until both ends closed."""
        ...

    async def wait(self) -> RelayResult:
        """Until both ends of a paired relay closed."""
        ...

    def snapshot(self, *, cancelled: bool = False) -> RelayResult:
        """What moved so far (``cancelled``: the wait for it was cut short)."""
        ...

    def close(self) -> None:
        """Abort the channel and its socket."""
        ...


class DataForward(Protocol):
    """A one-shot remote forward (tcpip-forward) on the SSH server for one data
    connection (``_ssh.RemoteListener``)."""

    @property
    def port(self) -> int:
        """The port the SSH server listens on."""
        ...

    def arm(self) -> None:
        """Accept the first connection allowed from now on (one opened ``armed=False``
        refuses every connection before)."""
        ...

    async def accept(self) -> tuple[DataRelay, str, int]:
        """The first connection: its relay and originator (host, port)."""
        ...

    async def aclose(self) -> None:
        """Cancel the forward."""
        ...


class ControlForward(Protocol):
    """A remote (-R) tunnel's listener on the SSH server, yielding every FTP
    client's control connection: ``async for stream, orig_host, orig_port in it``
    (``_ssh.RemoteStreamListener``)."""

    @property
    def host(self) -> str:
        """The address the SSH server listens on."""
        ...

    @property
    def port(self) -> int:
        """The port the SSH server listens on."""
        ...

    def __aiter__(self) -> ControlForward:
        ...

    async def __anext__(self) -> tuple[trio.abc.HalfCloseableStream, str, int]:
        ...

    async def wait_lost(self) -> None:
        """Return when the SSH connection under it closes (iteration then ends)."""
        ...

    async def aclose(self) -> None:
        """Cancel the forward; close connections not yet taken."""
        ...


class SessionTunnel(Protocol):
    """What one FTP session and its data plane ask of the shared SSH connection
    (``_ssh.Tunnel``). Each raises ``TunnelError`` when the SSH server refuses."""

    #: an ``open_data_relay`` was refused on this tunnel (for every session)
    data_opens_refused: bool

    async def open_stream(self, host: str, port: int, originator: tuple[str, int] = ("", 0),
                          ) -> trio.abc.HalfCloseableStream:
        """A direct-tcpip channel to host:port as a stream (FTP control);
        ``originator``: the FTP client, for the SSH server's logs."""
        ...

    async def open_data_relay(self, host: str, port: int,
                              originator: tuple[str, int] = ("", 0),
                              requested: Callable[[], None] | None = None) -> DataRelay:
        """A direct-tcpip channel to host:port for one data connection. ``requested``
        is called once the open request is written to the SSH connection (before the
        answer): what the session sends on the connection after it follows it."""
        ...

    async def listen_remote(self, host: str, port: int = 0,
                            accept_filter: AcceptFilter | None = None,
                            armed: bool = True) -> DataForward:
        """A one-shot remote forward on the SSH server (port 0: the server picks);
        ``armed=False``: refusing every connection until ``arm()``."""
        ...


# ---------------------------------------------------------------- SFTP (--sftp-server)

#: why a file operation failed, as the FTP front end maps it to a reply:
#: not-found/permission 550, exists 550 (553 for STOU), bad-name 553, no-space 452,
#: unsupported 502, failure 451, lost 421 (the SSH connection or SFTP session is gone)
RemoteFileErrorKind = Literal["not-found", "permission", "exists", "bad-name", "no-space",
                              "unsupported", "failure", "lost"]


class RemoteFileError(Exception):
    """An SFTP request failed; ``kind`` says how, ``str()`` is the server's text made
    safe for an FTP reply."""

    def __init__(self, kind: RemoteFileErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: RemoteFileErrorKind = kind


@dataclass(frozen=True, slots=True)
class RemoteFileInfo:
    """One file's attributes as the SSH server's SFTP reports them."""

    name: str  # the directory entry's name (for stat(): the path's last part)
    size: int
    mtime: int  # seconds since the epoch, UTC
    mode: int  # st_mode: file type and permission bits (0 when not reported)
    nlink: int = 1
    owner: str = ""  # user name, or the uid as text
    group: str = ""  # group name, or the gid as text

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


#: how write_file opens its file: "truncate" (STOR), "append" (APPE: writes go
#: after the current end), "exclusive" (STOU: fails with "exists" if it exists),
#: "resume" (REST + STOR: kept as it is, written from the offset on)
WriteMode = Literal["truncate", "append", "exclusive", "resume"]


class RemoteReader(Protocol):
    """A file being read with pipelined SFTP reads: ``async for chunk in reader``."""

    @property
    def info(self) -> RemoteFileInfo:
        """The file as it was when opened (a directory can be opened on some servers:
        ``info.is_dir`` tells)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        ...


class RemoteWriter(Protocol):
    """A file being written with pipelined SFTP writes."""

    async def write(self, data: bytes) -> None:
        """Queue ``data`` (returns once the bytes in flight are within the session's
        memory bound; raises RemoteFileError for an earlier write that failed)."""
        ...


class RemoteFiles(Protocol):
    """One SFTP session on the SSH server (``_ssh.SFTPFiles``; faked over a local
    directory by ``ftptrio.testing.fake_sftp``). Paths are the server's (absolute
    after ``realpath``); every method raises RemoteFileError."""

    async def realpath(self, path: str) -> str:
        """The canonical absolute path ("." is the login directory)."""
        ...

    async def stat(self, path: str) -> RemoteFileInfo:
        """Attributes of ``path``, symbolic links followed."""
        ...

    async def listdir(self, path: str) -> list[RemoteFileInfo]:
        """The entries of a directory, without "." and "..", sorted by name."""
        ...

    async def remove(self, path: str) -> None:
        ...

    async def mkdir(self, path: str) -> None:
        ...

    async def rmdir(self, path: str) -> None:
        ...

    async def rename(self, old: str, new: str) -> None:
        """Rename, replacing an existing ``new`` where the server can (POSIX rename)."""
        ...

    def read_file(self, path: str, offset: int = 0) -> AsyncContextManager[RemoteReader]:
        """The file's bytes from ``offset`` on, read with pipelined requests (at most
        the session's memory bound in flight), and its attributes. Leaving the
        context early cancels the outstanding reads and closes the file."""
        ...

    def write_file(self, path: str, mode: WriteMode = "truncate", offset: int = 0,
                   ) -> AsyncContextManager[RemoteWriter]:
        """Open ``path`` for writing; a normal exit waits for every write to be
        acknowledged and closes it (raising RemoteFileError if one failed), an exit
        by exception cancels what is in flight and closes it."""
        ...

    async def aclose(self) -> None:
        """End the SFTP session (its SSH channel)."""
        ...
