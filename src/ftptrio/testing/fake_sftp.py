"""A fake SFTP session over a local directory, for tests of the FTP front end
(``ftptrio._sftpfront``): no SSH server.

**Not part of the public API: may change without notice** (as the rest of
``ftptrio.testing``).

``LocalFiles(root, home="/")`` implements ``ftptrio._seams.RemoteFiles``: the server's
paths are absolute paths under ``root`` (``/`` is ``root``; a path cannot leave it),
``"."`` is ``home``. It behaves as OpenSSH's sftp-server does where the seam says how:
``realpath`` resolves ``..`` and symbolic links and fails for a missing path, ``stat``
follows links, ``listdir`` reports the links themselves (lstat) sorted by name without
``.`` and ``..``, ``rename`` replaces an existing target, ``write_file`` in
"exclusive" mode fails with "exists", "resume" keeps the file and writes from the
offset, "append" after its end. Errors are ``RemoteFileError`` of the kinds the
seam names (ENOENT not-found, EACCES permission, EEXIST exists, ENOSPC no-space,
ENAMETOOLONG or a NUL bad-name, others failure).

For tests: ``chunk_size`` (bytes per read), ``read_delay`` (seconds before each
chunk: a slow server), ``fail[operation] = RemoteFileError(...)`` (raised by the next
call of that operation: "realpath", "stat", "listdir", "remove", "mkdir", "rmdir",
"rename", "open_read", "read", "open_write", "write"), and what happened: ``open_reads`` /
``open_writes`` (contexts not yet left), ``reads_cancelled`` / ``writes_cancelled``
(left by an exception), ``closed``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import grp
import pwd
from typing import IO, AsyncIterator, Callable

import trio

from .._seams import (RemoteFileError, RemoteFileErrorKind, RemoteFileInfo, RemoteReader,
                      WriteMode)

_KINDS: dict[int, RemoteFileErrorKind] = {
    errno.ENOENT: "not-found", errno.ENOTDIR: "not-found", errno.EACCES: "permission",
    errno.EPERM: "permission", errno.EROFS: "permission", errno.EEXIST: "exists",
    errno.ENOSPC: "no-space", errno.EDQUOT: "no-space", errno.ENAMETOOLONG: "bad-name",
    errno.EINVAL: "bad-name"}


def _error(exc: OSError) -> RemoteFileError:
    kind = _KINDS.get(exc.errno or 0, "failure")
    return RemoteFileError(kind, exc.strerror or str(exc))


def _name_of(uid: int, lookup: str) -> str:
    try:
        return pwd.getpwuid(uid).pw_name if lookup == "user" else grp.getgrgid(uid).gr_name
    except KeyError:
        return str(uid)


class _Reader:
    """read_file's reader: the file's attributes and its chunks."""

    def __init__(self, info: RemoteFileInfo, chunks: AsyncIterator[bytes]) -> None:
        self.info = info
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks


class _Writer:
    def __init__(self, fd: int, files: LocalFiles) -> None:
        self._fd, self._files = fd, files

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self._files._check("write")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise _error(exc) from None
        self._files.bytes_written += len(data)


class LocalFiles:
    """``RemoteFiles`` over the directory ``root``."""

    def __init__(self, root: str | os.PathLike[str], home: str = "/", *,
                 chunk_size: int = 32768, read_delay: float = 0.0) -> None:
        self.root = os.path.realpath(root)
        self.home = home
        self.chunk_size = chunk_size
        self.read_delay = read_delay
        self.fail: dict[str, RemoteFileError] = {}
        self.open_reads = 0
        self.open_writes = 0
        self.reads_cancelled = 0
        self.writes_cancelled = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.closed = False
        #: every call made: (operation, path)
        self.calls: list[tuple[str, str]] = []

    # -- helpers

    def _check(self, operation: str, path: str = "") -> None:
        if path:
            self.calls.append((operation, path))
        if self.closed:
            raise RemoteFileError("lost", "SFTP session closed")
        failure = self.fail.pop(operation, None)
        if failure is not None:
            raise failure

    def _local(self, path: str) -> str:
        if "\0" in path:
            raise RemoteFileError("bad-name", "file name contains NUL")
        absolute = posixpath.normpath(posixpath.join(self.home, path))
        return os.path.join(self.root, absolute.lstrip("/"))

    def _server_path(self, local: str) -> str:
        relative = os.path.relpath(local, self.root)
        if relative == ".":
            return "/"
        if relative.startswith(".."):
            raise RemoteFileError("permission", "outside the served directory")
        return "/" + relative.replace(os.sep, "/")

    def _info(self, name: str, result: os.stat_result) -> RemoteFileInfo:
        return RemoteFileInfo(name=name, size=result.st_size, mtime=int(result.st_mtime),
                              mode=result.st_mode, nlink=result.st_nlink,
                              owner=_name_of(result.st_uid, "user"),
                              group=_name_of(result.st_gid, "group"))

    # -- RemoteFiles

    async def realpath(self, path: str) -> str:
        await trio.lowlevel.checkpoint()
        self._check("realpath", path)
        local = self._local(path)
        real = os.path.realpath(local)
        if not os.path.lexists(real):
            raise RemoteFileError("not-found", "No such file")
        return self._server_path(real)

    async def stat(self, path: str) -> RemoteFileInfo:
        await trio.lowlevel.checkpoint()
        self._check("stat", path)
        try:
            result = os.stat(self._local(path))
        except OSError as exc:
            raise _error(exc) from None
        return self._info(posixpath.basename(path.rstrip("/")) or "/", result)

    async def listdir(self, path: str) -> list[RemoteFileInfo]:
        await trio.lowlevel.checkpoint()
        self._check("listdir", path)
        local = self._local(path)
        try:
            names = sorted(os.listdir(local))
            return [self._info(name, os.lstat(os.path.join(local, name))) for name in names]
        except OSError as exc:
            raise _error(exc) from None

    async def remove(self, path: str) -> None:
        await self._call("remove", path, os.unlink)

    async def mkdir(self, path: str) -> None:
        await self._call("mkdir", path, os.mkdir)

    async def rmdir(self, path: str) -> None:
        await self._call("rmdir", path, os.rmdir)

    async def _call(self, operation: str, path: str, function: Callable[[str], None]) -> None:
        await trio.lowlevel.checkpoint()
        self._check(operation, path)
        local = self._local(path)
        try:
            function(local)
        except OSError as exc:
            raise _error(exc) from None

    async def rename(self, old: str, new: str) -> None:
        await trio.lowlevel.checkpoint()
        self._check("rename", old)
        try:
            os.replace(self._local(old), self._local(new))
        except OSError as exc:
            raise _error(exc) from None

    @contextlib.asynccontextmanager
    async def read_file(self, path: str, offset: int = 0) -> AsyncIterator[RemoteReader]:
        await trio.lowlevel.checkpoint()
        self._check("open_read", path)
        try:
            handle = open(self._local(path), "rb")
        except OSError as exc:
            raise _error(exc) from None
        if os.path.isdir(self._local(path)):  # pragma: no cover (open() raises EISDIR)
            handle.close()
            raise RemoteFileError("failure", "is a directory")
        self.open_reads += 1
        try:
            handle.seek(offset)
            yield _Reader(self._info(os.path.basename(path), os.stat(handle.fileno())),
                          self._chunks(handle))
        except BaseException:
            self.reads_cancelled += 1
            raise
        finally:
            handle.close()
            self.open_reads -= 1

    async def _chunks(self, handle: IO[bytes]) -> AsyncIterator[bytes]:
        while True:
            if self.read_delay:
                await trio.sleep(self.read_delay)
            else:
                await trio.lowlevel.checkpoint()
            self._check("read")
            chunk = handle.read(self.chunk_size)
            if not chunk:
                return
            self.bytes_read += len(chunk)
            yield chunk

    @contextlib.asynccontextmanager
    async def write_file(self, path: str, mode: WriteMode = "truncate", offset: int = 0,
                         ) -> AsyncIterator[_Writer]:
        await trio.lowlevel.checkpoint()
        self._check("open_write", path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        flags |= {"truncate": os.O_TRUNC, "append": os.O_APPEND, "exclusive": os.O_EXCL,
                  "resume": 0}[mode]
        try:
            fd = os.open(self._local(path), flags, 0o644)
        except OSError as exc:
            raise _error(exc) from None
        self.open_writes += 1
        try:
            if mode == "resume":
                os.lseek(fd, offset, os.SEEK_SET)
            yield _Writer(fd, self)
        except BaseException:
            self.writes_cancelled += 1
            raise
        finally:
            os.close(fd)
            self.open_writes -= 1

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self.closed = True


__all__ = ["LocalFiles"]
