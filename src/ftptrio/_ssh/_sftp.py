"""``SFTPFiles``: one SFTP session on the SSH server, as ``_seams.RemoteFiles``
(what the FTP server front end of ``--sftp-server`` uses).

Every request is an asyncssh SFTP client call made from trio. File bodies are
pipelined: ``read_file`` keeps up to ``max_requests`` reads of ``block_size`` in
flight (asyncio tasks, created from trio), and the trio side takes every block that
is already done in one step; ``write_file`` keeps up to ``max_requests`` writes in
flight and waits for the oldest acknowledgement beyond that (back-pressure). So one
transfer holds at most about ``max_requests * block_size`` bytes.

Paths are ``str``: names that are not UTF-8 on the server come as surrogate escapes
(``os.fsdecode``'s convention) and go back unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import posixpath
import stat
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar, cast

import asyncssh
import trio

from .._errors import SFTPUnavailable, TunnelError
from .._seams import RemoteFileError, RemoteFileErrorKind, RemoteFileInfo, WriteMode
from .._text import visible
from ._bridge import aio, reason, run_future
from ._relay import WINDOW, bound_receive_window
from ._streams import CLOSE_TIMEOUT

log = logging.getLogger(__name__)

T = TypeVar("T")

#: requests in flight per transfer, and their size (clamped to the server's limits:
#: OpenSSH's sftp-server reads and writes at most 255 KiB per request). 16 x 256 KiB
#: keeps a 50 ms round trip as fast as OpenSSH's sftp (64 x 32 KiB) with half the
#: requests; a transfer holds at most 4 MiB.
DEFAULT_MAX_REQUESTS = 16
DEFAULT_BLOCK_SIZE = 256 * 1024
#: the most bytes one step of read_file's iterator joins (blocks already done)
MAX_CHUNK = 1 << 20

#: SFTP status codes -> RemoteFileError kinds (others: "failure")
_KINDS: dict[int, RemoteFileErrorKind] = {
    asyncssh.FX_NO_SUCH_FILE: "not-found",
    asyncssh.FX_NO_SUCH_PATH: "not-found",
    asyncssh.FX_NOT_A_DIRECTORY: "not-found",
    asyncssh.FX_PERMISSION_DENIED: "permission",
    asyncssh.FX_WRITE_PROTECT: "permission",
    asyncssh.FX_CANNOT_DELETE: "permission",
    asyncssh.FX_FILE_ALREADY_EXISTS: "exists",
    asyncssh.FX_INVALID_FILENAME: "bad-name",
    asyncssh.FX_INVALID_PARAMETER: "bad-name",
    asyncssh.FX_LINK_LOOP: "bad-name",
    asyncssh.FX_NO_SPACE_ON_FILESYSTEM: "no-space",
    asyncssh.FX_QUOTA_EXCEEDED: "no-space",
    asyncssh.FX_OP_UNSUPPORTED: "unsupported",
    asyncssh.FX_CONNECTION_LOST: "lost",
    asyncssh.FX_NO_CONNECTION: "lost",
}
_DEFAULT_TEXT: dict[RemoteFileErrorKind, str] = {
    "not-found": "No such file or directory", "permission": "Permission denied",
    "exists": "File exists", "bad-name": "Invalid file name", "no-space": "No space left",
    "unsupported": "Operation not supported", "failure": "Failure",
    "lost": "SFTP session lost",
}
#: seconds an SFTP request may go unanswered before the session counts as lost (a
#: server hung on its disk: the FTP client gets 421, the session's SSH connection ends)
REQUEST_TIMEOUT = 300.0
#: the most entries one directory listing may have (each ~0.5 KiB held until sent)
MAX_LISTING_ENTRIES = 200_000
#: what a failed SFTP call raises (request errors, the channel or connection gone)
FILE_ERRORS = (asyncssh.Error, OSError, ValueError, trio.BrokenResourceError)


def file_error(exc: BaseException) -> RemoteFileError:
    """The RemoteFileError of a failed SFTP call, with the server's text made safe.
    OpenSSH's sftp-server (protocol 3) reports many errors as plain FX_FAILURE (mkdir
    of an existing directory, rmdir of one that is not empty): its text is kept."""
    kind: RemoteFileErrorKind
    if isinstance(exc, asyncssh.SFTPError):
        kind = _KINDS.get(exc.code, "failure")
        text = exc.reason
    elif isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
        kind, text = "lost", f"SFTP session closed: {exc}"  # asyncssh: "closed file"
    elif isinstance(exc, UnicodeError):
        kind, text = "bad-name", str(exc)
    else:  # ConnectionLost, DisconnectError, channel errors, a socket error
        kind, text = "lost", f"SFTP session lost: {reason(exc)}"
    return RemoteFileError(kind, visible(text) if text else _DEFAULT_TEXT[kind])


def _no_answer() -> RemoteFileError:
    return RemoteFileError("lost", f"the SFTP server did not answer in {REQUEST_TIMEOUT:g} s")


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    """One SFTP request from trio; its failure as RemoteFileError."""
    with trio.move_on_after(REQUEST_TIMEOUT):
        try:
            return await aio(fn)()
        except FILE_ERRORS as exc:
            raise file_error(exc) from exc
    raise _no_answer()


async def _wait_answer(task: asyncio.Future[T]) -> None:
    """Wait for a request in flight (raises RemoteFileError "lost" after
    REQUEST_TIMEOUT; its own failure is left in ``task``)."""
    with trio.move_on_after(REQUEST_TIMEOUT) as scope:
        waiting = asyncio.shield(task)
        # abandoned (cancelled from trio) after the task failed, the shield would
        # hold the failure with nobody to retrieve it (an error of a trio-asyncio loop)
        waiting.add_done_callback(_retrieve)
        await run_future(waiting)
    if scope.cancelled_caught:
        raise _no_answer()


def _retrieve(task: "asyncio.Future[Any]") -> None:
    """Done callback: an abandoned request's error is consumed (never logged by
    asyncio as "exception was never retrieved")."""
    if not task.cancelled():
        task.exception()


async def _abandon(tasks: list[asyncio.Task[object]], file: asyncssh.SFTPClientFile) -> None:
    """(asyncio) Let the requests still in flight end (their answers are dropped;
    at most ABANDON_WAIT, then they are cancelled), close.

    Not cancelled at once: a request whose answer (or the connection's loss) is in
    already would leave asyncssh's waiter with an exception nobody retrieves, which
    a trio-asyncio loop that is not ftptrio's own turns into an error of its whole
    nursery (seen with asyncssh 2.21 when the SSH connection dropped mid-read)."""
    if tasks:
        _done, late = await asyncio.wait(tasks, timeout=ABANDON_WAIT)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
    await _close_file(file)


#: how long abandoned requests may take to be answered before they are cancelled
ABANDON_WAIT = 3.0


async def _close_quietly(tasks: list[asyncio.Task[object]], file: asyncssh.SFTPClientFile,
                         ) -> None:
    """Abandon a transfer from trio: shielded, bounded, errors only logged."""
    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        scope.shield = True
        try:
            await aio(_abandon)(tasks, file)
        except Exception as exc:  # noqa: BLE001 - the session may be gone already
            log.debug("closing SFTP file: %r", exc)


def _session_gone(client: asyncssh.SFTPClient | asyncssh.SFTPClientFile) -> bool:
    """Whether the SFTP channel is closing. asyncssh before 2.22 raises OSError from
    a request sent then, leaving its waiter to get the connection's loss with nobody
    to retrieve it (an error of a trio-asyncio loop that is not ftptrio's own), so
    reads are not sent then; later versions skip such a send themselves."""
    writer = getattr(getattr(client, "_handler", None), "_writer", None)
    if writer is None:
        return True
    channel = getattr(writer, "channel", None)
    closing = getattr(channel, "is_closing", None)
    return bool(closing()) if callable(closing) else False


async def _open_with_stat(client: asyncssh.SFTPClient, path: str,
                          ) -> tuple[asyncssh.SFTPClientFile, asyncssh.SFTPAttrs]:
    """(asyncio) Open ``path`` for reading and stat it, both requests at once."""
    async def open_file() -> asyncssh.SFTPClientFile:
        # block_size=0: each read call is one request (the reader pipelines)
        file: asyncssh.SFTPClientFile = await client.open(path, asyncssh.FXF_READ,
                                                          encoding=None, block_size=0)
        return file

    loop = asyncio.get_event_loop()
    opening = loop.create_task(open_file())
    stating = loop.create_task(client.stat(path))
    try:
        await asyncio.wait((opening, stating))
    except BaseException:
        opening.cancel()
        stating.cancel()
        await asyncio.gather(opening, stating, return_exceptions=True)
        if opening.done() and not opening.cancelled() and opening.exception() is None:
            await opening.result().close()
        raise
    if opening.exception() is not None:
        stating.exception()  # (retrieved: the open's error is the one that counts)
        raise cast(BaseException, opening.exception())
    file = opening.result()
    if stating.exception() is not None:
        await file.close()
        raise cast(BaseException, stating.exception())
    return file, stating.result()


async def _read_block(file: asyncssh.SFTPClientFile, size: int, offset: int) -> bytes:
    """(asyncio) One read request (b"": at the end of the file)."""
    _check_session(file)
    return cast(bytes, await file.read(size, offset))


async def _write_block(file: asyncssh.SFTPClientFile, data: bytes, offset: int) -> None:
    """(asyncio) One write request."""
    _check_session(file)
    await file.write(data, offset)


async def _close_file(file: asyncssh.SFTPClientFile) -> None:
    """(asyncio) Close a handle, unless its session is closing (the handle went with
    it)."""
    if not _session_gone(file):
        await file.close()


def _check_session(file: asyncssh.SFTPClientFile) -> None:
    """Checked when a request task runs (it may run a loop turn after it was made):
    no request into a closing SFTP channel (see _session_gone)."""
    if _session_gone(file):
        raise RemoteFileError("lost", "the SFTP session closed")


class _BlockReader:
    """The async iterator of ``read_file``: pipelined reads, delivered in order."""

    def __init__(self, file: asyncssh.SFTPClientFile, info: RemoteFileInfo, offset: int,
                 block_size: int, max_requests: int,
                 gone: Callable[[], bool] = lambda: False) -> None:
        self._file = file
        #: the SFTP channel is closing: no new request (see _session_gone)
        self._gone = gone
        #: the file as a stat sent with the open reported it
        self.info = info
        self._block = block_size
        self._max = max_requests
        self._next = offset  # where the next request reads
        #: the file's size when opened: reads start at most at it (the one there finds
        #: the end, or that the file grew: then it is read on to its end); a short
        #: read before it is read again
        self._size: float = info.size if stat.S_ISREG(info.mode) else math.inf
        #: (offset, size, task) of the reads in flight, oldest first
        self._pending: deque[tuple[int, int, asyncio.Task[bytes]]] = deque()
        self._done = False
        #: requests sent, and the most in flight at once (for tests and benches)
        self.requests = 0
        self.most_in_flight = 0
        self._fill()  # in flight while the caller gets its data connection ready

    @property
    def finished(self) -> bool:
        """Read to the end, nothing in flight."""
        return self._done and not self._pending

    def _fill(self) -> None:
        loop = asyncio.get_event_loop()
        while not self._done and len(self._pending) < self._max and \
                self._next <= self._size and not self._gone():
            task = loop.create_task(_read_block(self._file, self._block, self._next))
            task.add_done_callback(_retrieve)
            self._pending.append((self._next, self._block, task))
            self._next += self._block
            self.requests += 1
        self.most_in_flight = max(self.most_in_flight, len(self._pending))

    def _drop_pending(self) -> None:
        """Forget the reads in flight (not cancelled, see _abandon: _retrieve takes
        their answers)."""
        self._pending.clear()

    async def _result(self, task: asyncio.Task[bytes]) -> bytes:
        try:
            if not task.done():
                await _wait_answer(task)
            return task.result()
        except FILE_ERRORS as exc:
            self._done = True
            self._drop_pending()
            raise file_error(exc) from exc
        except RemoteFileError:
            self._done = True
            self._drop_pending()
            raise

    def __aiter__(self) -> _BlockReader:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        self._fill()
        parts: list[bytes] = []
        total = 0
        while self._pending and total < MAX_CHUNK and (not parts or self._pending[0][2].done()):
            offset, size, task = self._pending.popleft()
            data = await self._result(task)
            if data:
                parts.append(data)
                total += len(data)
                if offset + len(data) > self._size:  # it grew: read on to its end
                    self._size = math.inf
            if len(data) < size:  # the end of the file, or a server that sent less
                self._short_read(offset + len(data), data)
                break
        self._fill()  # the window is full again while the caller handles the bytes
        if not parts:
            raise StopAsyncIteration
        return b"".join(parts)

    def _short_read(self, end: int, data: bytes) -> None:
        """A read returned less than asked, up to ``end``: the end of the file if
        nothing came (SFTP's EOF is at the offset asked) or ``end`` is at or past the
        file's size when opened; else a server that sends less than asked: the rest
        is read again from ``end`` on."""
        self._drop_pending()
        if data and end < self._size:
            self._next = end
        else:
            self._done = True

    def abandoned(self) -> list[asyncio.Task[object]]:
        tasks: list[asyncio.Task[object]] = [task for _o, _s, task in self._pending]
        self._pending.clear()
        self._done = True
        return tasks


class SFTPWriter:
    """``write_file``'s RemoteWriter: writes of ``block_size`` (the bytes given
    are joined up to it), up to ``max_requests`` in flight."""

    def __init__(self, file: asyncssh.SFTPClientFile, offset: int, block_size: int,
                 max_requests: int) -> None:
        self._file = file
        self._offset = offset
        self._block = block_size
        self._max = max_requests
        self._buffer = bytearray()
        self._pending: deque[asyncio.Task[None]] = deque()
        self._failed: RemoteFileError | None = None
        #: requests sent, and the most in flight at once (for tests and benches)
        self.requests = 0
        self.most_in_flight = 0

    async def write(self, data: bytes) -> None:
        self._check()
        self._buffer += data
        while len(self._buffer) >= self._block:
            chunk = bytes(self._buffer[:self._block])
            del self._buffer[:self._block]
            await self._send(chunk)
        await trio.lowlevel.checkpoint()

    def _check(self) -> None:
        """Raise the first failure; drop acknowledged writes from the front."""
        while self._failed is None and self._pending and self._pending[0].done():
            self._take(self._pending.popleft())
        if self._failed is not None:
            raise self._failed

    def _take(self, task: asyncio.Task[None]) -> None:
        try:
            task.result()
        except FILE_ERRORS as exc:
            self._failed = file_error(exc)
        except RemoteFileError as exc:
            self._failed = exc

    async def _send(self, chunk: bytes) -> None:
        while len(self._pending) >= self._max:
            await self._wait_oldest()
        self._check_session()
        task = asyncio.get_event_loop().create_task(_write_block(self._file, chunk,
                                                                 self._offset))
        task.add_done_callback(_retrieve)
        self._pending.append(task)
        self._offset += len(chunk)
        self.requests += 1
        self.most_in_flight = max(self.most_in_flight, len(self._pending))

    def _check_session(self) -> None:
        """No request into a closing SFTP channel (see _session_gone)."""
        if _session_gone(self._file):
            raise RemoteFileError("lost", "the SFTP session closed")

    async def _wait_oldest(self) -> None:
        task = self._pending[0]
        if not task.done():
            try:
                await _wait_answer(task)
            except FILE_ERRORS:
                pass  # taken below
            except RemoteFileError as exc:
                self._failed = exc
        self._check()

    async def finish(self) -> None:
        """Send what is buffered and the close right behind it (a server answers a
        handle's requests in order: one round trip for both), then take every
        acknowledgement; the first failure is raised."""
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            await self._send(chunk)
        self._check_session()
        closing = asyncio.get_event_loop().create_task(_close_file(self._file))
        closing.add_done_callback(_retrieve)
        try:
            while self._pending:
                await self._wait_oldest()
        finally:
            if not closing.done():
                await _wait_answer(closing)
        try:
            closing.result()
        except FILE_ERRORS as exc:
            raise file_error(exc) from exc

    def abandoned(self) -> list[asyncio.Task[object]]:
        tasks: list[asyncio.Task[object]] = list(self._pending)
        self._pending.clear()
        self._buffer.clear()
        return tasks


_OPEN_FLAGS: dict[WriteMode, int] = {
    "truncate": asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC,
    # the end is found with fstat; FXF_APPEND too, for a file growing meanwhile
    "append": asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_APPEND,
    "exclusive": asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL,
    "resume": asyncssh.FXF_WRITE | asyncssh.FXF_CREAT,
}


def _names_from_longname(longname: str) -> tuple[str, str, int] | None:
    """(owner, group, links) from a protocol-3 longname in ``ls -l`` form
    ("-rw-r--r--    1 user     group        1234 Jan  1 00:00 name"), else None."""
    fields = longname.split(None, 4)
    if len(fields) < 5 or len(fields[0]) < 10 or not fields[1].isdigit():
        return None
    return fields[2], fields[3], int(fields[1])


def file_info(name: str, attrs: asyncssh.SFTPAttrs, longname: str = "") -> RemoteFileInfo:
    """A RemoteFileInfo of SFTP attributes (owner and group names from the longname
    when the attributes carry only ids, as in protocol 3)."""
    mode = attrs.permissions or 0
    if not stat.S_IFMT(mode):
        if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            mode |= stat.S_IFDIR
        elif attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
            mode |= stat.S_IFREG
    owner = attrs.owner or ("" if attrs.uid is None else str(attrs.uid))
    group = attrs.group or ("" if attrs.gid is None else str(attrs.gid))
    nlink = attrs.nlink or 1
    parsed = _names_from_longname(longname) if longname else None
    if parsed is not None:
        if not attrs.owner:
            owner = parsed[0]
        if not attrs.group:
            group = parsed[1]
        if not attrs.nlink:
            nlink = parsed[2]
    return RemoteFileInfo(name=name, size=attrs.size or 0, mtime=int(attrs.mtime or 0),
                          mode=mode, nlink=nlink, owner=owner, group=group)


class SFTPFiles:
    """One SFTP session (``_seams.RemoteFiles``). Open with ``open_sftp_files(conn)``
    or ``Tunnel.open_sftp()``; every method raises ``RemoteFileError``."""

    def __init__(self, client: asyncssh.SFTPClient, *, max_requests: int,
                 block_size: int) -> None:
        if max_requests < 1 or block_size < 1:
            raise ValueError("max_requests and block_size must be positive")
        self._client = client
        self.max_requests = max_requests
        limits = client.limits
        #: bytes per read and write request (within the server's limits)
        self.read_size = min(block_size, limits.max_read_len or block_size)
        self.write_size = min(block_size, limits.max_write_len or block_size)
        #: False once the server refused posix-rename@openssh.com
        self._posix_rename = True
        self._closed = False
        #: closes sent for files read to their end, answers not yet taken
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def memory_bound(self) -> int:
        """The most bytes one transfer has in flight."""
        return self.max_requests * max(self.read_size, self.write_size)

    async def realpath(self, path: str) -> str:
        result: str = await _call(lambda: self._client.realpath(path))
        return result

    async def stat(self, path: str) -> RemoteFileInfo:
        attrs = await _call(lambda: self._client.stat(path))
        return file_info(posixpath.basename(path.rstrip("/")) or path, attrs)

    async def listdir(self, path: str) -> list[RemoteFileInfo]:
        """At most MAX_LISTING_ENTRIES entries (a listing is held whole to be sorted:
        a server sending names without end must not grow memory without bound)."""

        async def read() -> list[RemoteFileInfo]:
            infos: list[RemoteFileInfo] = []
            async for entry in self._client.scandir(path):
                if entry.filename in (".", ".."):
                    continue
                if len(infos) >= MAX_LISTING_ENTRIES:
                    raise RemoteFileError("failure", f"more than {MAX_LISTING_ENTRIES} "
                                                     "entries: not listed")
                infos.append(file_info(str(entry.filename), entry.attrs,
                                       str(entry.longname or "")))
            return infos

        infos = await _call(read)
        return sorted(infos, key=lambda info: info.name)

    async def remove(self, path: str) -> None:
        await _call(lambda: self._client.remove(path))

    async def mkdir(self, path: str) -> None:
        await _call(lambda: self._client.mkdir(path))

    async def rmdir(self, path: str) -> None:
        await _call(lambda: self._client.rmdir(path))

    async def rename(self, old: str, new: str) -> None:
        """posix-rename@openssh.com (replaces ``new``) where the server offers it,
        else plain SFTP rename (which fails if ``new`` exists)."""
        if self._posix_rename:
            try:
                await _call(lambda: self._client.posix_rename(old, new))
                return
            except RemoteFileError as exc:
                if exc.kind != "unsupported":
                    raise
                self._posix_rename = False
        await _call(lambda: self._client.rename(old, new))

    async def _open(self, path: str, flags: int) -> asyncssh.SFTPClientFile:
        # block_size=0: each read/write call is one request (this class pipelines)
        file: asyncssh.SFTPClientFile = await _call(
            lambda: self._client.open(path, flags, encoding=None, block_size=0))
        return file

    @asynccontextmanager
    async def read_file(self, path: str, offset: int = 0) -> AsyncIterator[_BlockReader]:
        """The open and a stat of ``path`` go out together (one round trip), the first
        reads (up to the file's size) as soon as it is open; a file read to its end is
        closed without waiting for the answer (the next command need not wait)."""
        file, attrs = await _call(lambda: _open_with_stat(self._client, path))
        reader = _BlockReader(file, file_info(posixpath.basename(path), attrs), offset,
                              self.read_size, self.max_requests,
                              lambda: _session_gone(self._client))
        finished = False
        try:
            yield reader
            finished = reader.finished
        finally:
            if finished:
                self._close_later(file)
            else:
                await _close_quietly(reader.abandoned(), file)

    def _close_later(self, file: asyncssh.SFTPClientFile) -> None:
        """Send the close now, take its answer later (aclose() waits for those left)."""
        if _session_gone(file):
            return
        task: asyncio.Task[None] = asyncio.get_event_loop().create_task(_close_file(file))
        task.add_done_callback(_retrieve)
        task.add_done_callback(self._closing.discard)
        self._closing.add(task)

    @asynccontextmanager
    async def write_file(self, path: str, mode: WriteMode = "truncate", offset: int = 0,
                         ) -> AsyncIterator[SFTPWriter]:
        file = await self._open(path, _OPEN_FLAGS[mode])
        writer: SFTPWriter | None = None
        try:
            if mode == "append":
                attrs = await _call(file.stat)
                offset = attrs.size or 0
            writer = SFTPWriter(file, offset, self.write_size, self.max_requests)
            yield writer
            await writer.finish()
        except BaseException:
            await _close_quietly(writer.abandoned() if writer is not None else [], file)
            raise

    async def aclose(self) -> None:
        """End the SFTP session and its channel (shielded, bounded)."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            if self._closing:
                await run_future(asyncio.gather(*self._closing, return_exceptions=True))
            self._client.exit()
            try:
                await aio(self._client.wait_closed)()
            except Exception as exc:  # noqa: BLE001 - the connection may be gone
                log.debug("closing SFTP session: %r", exc)


def _unavailable(exc: BaseException) -> SFTPUnavailable:
    return SFTPUnavailable(f"the SSH server offers no SFTP: {reason(exc)} (its sshd_config "
                           "needs a 'Subsystem sftp' line, e.g. 'Subsystem sftp "
                           "internal-sftp')")


#: the SFTP channel's SSH receive window: asyncssh's default (2 MiB, adjusted at half)
#: would hold reads below DEFAULT_MAX_REQUESTS x DEFAULT_BLOCK_SIZE in flight, and
#: bound a 50 ms link to ~20-40 MB/s
SFTP_WINDOW = WINDOW


async def _start_sftp_client(conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
    """conn.start_sftp_client() with a SFTP_WINDOW receive window adjusted early (as
    the data channels'); version 6 offered: the server picks (OpenSSH: 3), and 4 and
    later report more errors by code (FX_FILE_ALREADY_EXISTS) where 3 says FX_FAILURE.
    (asyncssh takes no window there: without the private names this asyncssh
    version keeps its default window.)"""
    loop = getattr(conn, "_loop", None)
    start = getattr(asyncssh.sftp, "start_sftp_client", None)
    try:  # (asyncssh 2.22 added utf8_decode_errors, from the connection's options)
        takes_decode_errors = start is not None and "utf8_decode_errors" in \
            inspect.signature(start).parameters
    except (TypeError, ValueError):
        start = None
    decode_errors = getattr(conn, "_utf8_decode_errors", None)
    if loop is None or start is None or (takes_decode_errors and decode_errors is None):
        return await conn.start_sftp_client(path_errors="surrogateescape", sftp_version=6)
    writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None,
                                                window=SFTP_WINDOW)
    bound_receive_window(cast("asyncssh.SSHTCPChannel[bytes]", writer.channel))
    head = (conn, loop, decode_errors) if takes_decode_errors else (conn, loop)
    client: asyncssh.SFTPClient = await start(*head, reader, writer, "utf-8",
                                              "surrogateescape", 6)
    return client


async def open_sftp_files(conn: asyncssh.SSHClientConnection, *,
                          max_requests: int = DEFAULT_MAX_REQUESTS,
                          block_size: int = DEFAULT_BLOCK_SIZE) -> SFTPFiles:
    """Start an SFTP session on ``conn``. SFTPUnavailable when the server refuses the
    session or its sftp subsystem, or does not speak SFTP there; TunnelError when the
    SSH connection fails meanwhile."""
    try:
        # version 6 offered: the server picks (OpenSSH: 3); 4 and later report more
        # errors by code (FX_FILE_ALREADY_EXISTS), where 3 says FX_FAILURE
        client = await aio(_start_sftp_client)(conn)
    except (asyncssh.ChannelOpenError, asyncssh.SFTPError) as exc:
        if conn.is_closed():
            raise TunnelError(f"SSH connection lost opening SFTP: {reason(exc)}") from exc
        raise _unavailable(exc) from exc
    except (asyncssh.Error, OSError) as exc:
        raise TunnelError(f"SSH connection failed opening SFTP: {reason(exc)}") from exc
    return SFTPFiles(client, max_requests=max_requests, block_size=block_size)
