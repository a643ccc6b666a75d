"""SFTPFiles (ftptrio._ssh._sftp, the RemoteFiles of --sftp-server) against the
in-process asyncssh server's sftp subsystem: every method, the error kinds,
pipelined reads and writes, and early exits that leave nothing behind."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import pwd
from typing import Any, AsyncIterator

import asyncssh
import pytest
import trio
import trio_asyncio

import ftptrio
from ftp_fakes import asyncssh_table
from ftptrio._seams import RemoteFileError, RemoteFiles
from ftptrio._ssh import SFTPFiles, Tunnel, open_sftp_files
from ftptrio.testing import inprocess_ssh_server, trio_task_count

try:
    from .integration_helpers import ssh_options
except ImportError:
    from integration_helpers import ssh_options  # type: ignore

ME = pwd.getpwuid(os.getuid()).pw_name


class Probe(asyncssh.SFTPServer):
    """An SFTP server that refuses paths naming ``denied``, reports a full disk for
    ``full``, a bad name for ``bad:``, no support for mkdir of ``nomkdir``, and
    records how many requests its client had outstanding at each read and write."""

    client: Any = None  # the SFTP client handler under test
    outstanding: list[int] = []
    read_delay = 0.0
    write_delay = 0.0

    def map_path(self, path: bytes) -> bytes:
        if b"denied" in path:
            raise asyncssh.SFTPPermissionDenied("no access here")
        if b"bad:" in path:
            raise asyncssh.SFTPInvalidFilename("invalid name")
        return super().map_path(path)

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        if path.endswith(b"nomkdir"):
            raise asyncssh.SFTPOpUnsupported("mkdir not here")
        super().mkdir(path, attrs)

    async def stat(self, path: bytes) -> Any:
        if path.endswith(b"hang"):  # a server stuck on its disk: no answer
            await asyncio.sleep(3600)
        return super().stat(path)

    def _note(self) -> None:
        if Probe.client is not None:
            Probe.outstanding.append(len(asyncssh_table(Probe.client, "_requests")))

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        self._note()
        if Probe.read_delay:
            await asyncio.sleep(Probe.read_delay)
        return super().read(file_obj, offset, size)  # type: ignore[arg-type, return-value]

    async def write(self, file_obj: Any, offset: int, data: bytes) -> int:
        self._note()
        if Probe.write_delay:
            await asyncio.sleep(Probe.write_delay)
        if b"full" in getattr(file_obj, "name", b""):
            raise asyncssh.SFTPNoSpaceOnFilesystem("disk full")
        return super().write(file_obj, offset, data)  # type: ignore[no-any-return]


@dataclasses.dataclass
class Env:
    files: SFTPFiles
    root: str
    ssh: Any

    def path(self, name: str) -> str:
        return os.path.join(self.root, name.lstrip("/"))


@pytest.fixture(autouse=True)
def reset_probe():
    Probe.client, Probe.outstanding, Probe.read_delay, Probe.write_delay = None, [], 0.0, 0.0
    yield
    Probe.client = None


async def _env(tmp_path: Any, version: int, **opts: Any) -> AsyncIterator[Env]:
    root = tmp_path / "root"
    root.mkdir()
    async with inprocess_ssh_server(sftp_root=str(root), sftp_server_class=Probe,
                                    sftp_version=version) as ssh:
        tunnel = Tunnel(ssh_options(ssh))
        try:
            files = await tunnel.open_sftp(**opts)
            Probe.client = files._client._handler
            try:
                yield Env(files, str(root), ssh)
            finally:
                await files.aclose()
        finally:
            await tunnel.aclose()


@pytest.fixture
async def env(aio_loop, tmp_path) -> AsyncIterator[Env]:
    """An SFTP session on a protocol-3 server (as OpenSSH's)."""
    async for each in _env(tmp_path, 3, max_requests=8, block_size=64 * 1024):
        yield each


@pytest.fixture
async def env6(aio_loop, tmp_path) -> AsyncIterator[Env]:
    """An SFTP session on a protocol-6 server (errors by code, not FX_FAILURE)."""
    async for each in _env(tmp_path, 6):
        yield each


async def read_all(files: RemoteFiles, path: str, offset: int = 0) -> bytes:
    async with files.read_file(path, offset) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def kind_of(call: Any) -> tuple[str, str]:
    with pytest.raises(RemoteFileError) as info:
        await call
    return info.value.kind, str(info.value)


# ------------------------------------------------------------------ metadata

async def test_realpath_stat_listdir(env: Env) -> None:
    files: RemoteFiles = env.files  # the seam's type: SFTPFiles implements it
    assert await files.realpath(".") == "/"
    os.mkdir(env.path("sub"))
    with open(env.path("b.txt"), "wb") as f:
        f.write(b"x" * 1234)
    os.utime(env.path("b.txt"), (1_600_000_000, 1_600_000_000))
    with open(env.path("a.txt"), "wb") as f:
        f.write(b"hello")
    os.symlink("b.txt", env.path("link"))
    assert await files.realpath("/sub/../sub") == "/sub"

    info = await files.stat("/b.txt")
    assert (info.name, info.size, info.mtime, info.is_dir) == ("b.txt", 1234, 1_600_000_000, False)
    linked = await files.stat("/link")  # links followed
    assert (linked.name, linked.size, linked.is_dir) == ("link", 1234, False)
    assert (await files.stat("/sub")).is_dir

    entries = await files.listdir("/")
    assert [e.name for e in entries] == ["a.txt", "b.txt", "link", "sub"]
    by_name = {e.name: e for e in entries}
    assert by_name["a.txt"].size == 5 and by_name["sub"].is_dir
    assert by_name["b.txt"].mtime == 1_600_000_000
    assert (by_name["a.txt"].owner, by_name["a.txt"].group) == (ME, ME)  # from the longname
    assert by_name["sub"].nlink == 2


async def test_mkdir_rmdir_remove_rename(env: Env) -> None:
    files = env.files
    await files.mkdir("/d")
    assert os.path.isdir(env.path("d"))
    await files.rmdir("/d")
    assert not os.path.exists(env.path("d"))
    for name, body in (("old", b"old"), ("new", b"replaced")):
        with open(env.path(name), "wb") as f:
            f.write(body)
    await files.rename("/old", "/new")  # replaces, as POSIX rename
    assert open(env.path("new"), "rb").read() == b"old"
    assert not os.path.exists(env.path("old"))
    await files.remove("/new")
    assert os.listdir(env.root) == []


async def test_rename_falls_back_to_plain_rename(env: Env) -> None:
    env.files._client._handler._supports_posix_rename = False  # a server without it
    with open(env.path("a"), "wb") as f:
        f.write(b"a")
    await env.files.rename("/a", "/b")
    assert os.listdir(env.root) == ["b"]
    assert env.files._posix_rename is False


async def test_rename_replaces_on_protocol_6(env6: Env) -> None:
    for name in ("x", "y"):
        with open(env6.path(name), "wb") as f:
            f.write(name.encode())
    await env6.files.rename("/x", "/y")
    assert open(env6.path("y"), "rb").read() == b"x"


# ------------------------------------------------------------------ errors

async def test_error_kinds_protocol_3(env: Env) -> None:
    files = env.files
    os.mkdir(env.path("full"))
    with open(env.path("full/f"), "wb") as f:
        f.write(b"x")
    assert await kind_of(files.stat("/missing")) == ("not-found", "No such file or directory")
    assert (await kind_of(files.listdir("/nope")))[0] == "not-found"
    assert (await kind_of(files.remove("/missing")))[0] == "not-found"
    assert await kind_of(files.stat("/denied")) == ("permission", "no access here")
    assert (await kind_of(files.listdir("/denied-dir")))[0] == "permission"
    assert (await kind_of(files.mkdir("/bad:name")))[0] == "failure"  # v3: FX_FAILURE
    assert await kind_of(files.mkdir("/nomkdir")) == ("unsupported", "mkdir not here")
    # protocol 3 has no code for these: FX_FAILURE, with the server's text kept
    assert await kind_of(files.mkdir("/full")) == ("failure", "File exists")
    assert await kind_of(files.rmdir("/full")) == ("failure", "Directory not empty")
    # opening fails on entering (before an FTP server's 150)
    assert await kind_of(_enter(files.read_file("/denied"))) == ("permission", "no access here")


async def test_error_kinds_protocol_6(env6: Env) -> None:
    files = env6.files
    os.mkdir(env6.path("d"))
    assert await kind_of(files.mkdir("/d")) == ("exists", "File exists")
    with open(env6.path("f"), "wb") as f:
        f.write(b"x")
    async with trio.open_nursery():
        assert (await kind_of(_enter(files.write_file("/f", "exclusive"))))[0] == "exists"
    assert await kind_of(files.mkdir("/bad:name")) == ("bad-name", "invalid name")
    with pytest.raises(RemoteFileError) as info:
        async with files.write_file("/full-disk") as writer:
            await writer.write(b"x" * 100)
    assert (info.value.kind, str(info.value)) == ("no-space", "disk full")


async def _enter(manager: Any) -> None:
    async with manager:
        pass


async def test_server_text_is_made_safe(env: Env) -> None:
    class Rude(Exception):
        pass

    with pytest.raises(RemoteFileError) as info:
        await env.files.stat("/denied\x1b[31m")
    assert str(info.value) == "no access here"
    from ftptrio._ssh._sftp import file_error

    error = file_error(asyncssh.SFTPFailure("bad\r\n\x1b[2Jthing"))
    assert (error.kind, str(error)) == ("failure", "bad\\015\\012\\033[2Jthing")
    assert file_error(asyncssh.SFTPConnectionLost("gone")).kind == "lost"
    assert file_error(asyncssh.SFTPNoSuchPath("x")).kind == "not-found"
    assert file_error(asyncssh.SFTPWriteProtect("x")).kind == "permission"
    assert file_error(asyncssh.SFTPQuotaExceeded("x")).kind == "no-space"
    assert file_error(asyncssh.ConnectionLost("x")).kind == "lost"
    assert file_error(trio.BrokenResourceError()).kind == "lost"
    assert file_error(asyncssh.SFTPFailure("")).args == ("Failure",)


async def test_connection_lost_is_lost(env: Env) -> None:
    for conn in env.ssh.connections:
        conn.close()
    with trio.fail_after(10):
        while True:
            try:
                await env.files.stat("/")
            except RemoteFileError as exc:
                assert exc.kind == "lost"
                break
            await trio.sleep(0.01)


async def test_no_sftp_subsystem_is_sftp_unavailable(aio_loop) -> None:
    async with inprocess_ssh_server() as ssh:  # no sftp_root: sessions refused
        tunnel = Tunnel(ssh_options(ssh))
        try:
            with pytest.raises(ftptrio.SFTPUnavailable, match="Subsystem sftp"):
                await tunnel.open_sftp()
            assert tunnel.up  # the SSH connection itself is fine
        finally:
            await tunnel.aclose()


async def test_password_users_each_get_a_session(aio_loop, tmp_path) -> None:
    async with inprocess_ssh_server(sftp_root=str(tmp_path),
                                    passwords={"alice": "a-pw", "bob": "b-pw"}) as ssh:
        for user, password in (("alice", "a-pw"), ("bob", "b-pw")):
            conn = await trio_asyncio.aio_as_trio(asyncssh.connect)(
                ssh.host, ssh.port, username=user, password=password, client_keys=None,
                known_hosts=ssh.known_hosts)
            files = await open_sftp_files(conn)
            assert await files.realpath(".") == "/"
            await files.aclose()
            conn.close()
        with pytest.raises(asyncssh.PermissionDenied):
            await trio_asyncio.aio_as_trio(asyncssh.connect)(
                ssh.host, ssh.port, username="alice", password="b-pw", client_keys=None,
                known_hosts=ssh.known_hosts)
        assert ssh.sftp_sessions == ["alice", "bob"]
        assert ssh.passwords_tried[-1] == ("alice", "b-pw")


# ------------------------------------------------------------------ reading

async def test_read_whole_file_and_from_offsets(env: Env) -> None:
    data = os.urandom(300_000)  # not a multiple of the 64 KiB blocks
    with open(env.path("f"), "wb") as f:
        f.write(data)
    open(env.path("empty"), "wb").close()
    assert await read_all(env.files, "/f") == data
    for offset in (1, 65536, 65537, 299_999, 300_000, 400_000):
        assert await read_all(env.files, "/f", offset) == data[offset:]
    assert await read_all(env.files, "/empty") == b""
    assert (await kind_of(read_all(env.files, "/missing")))[0] == "not-found"


async def test_read_20_mib_pipelined(env: Env) -> None:
    data = os.urandom(20 << 20)
    with open(env.path("big"), "wb") as f:
        f.write(data)
    digest = hashlib.sha256()
    async with env.files.read_file("/big") as chunks:
        async for chunk in chunks:
            assert len(chunk) <= 1 << 20
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    # the server saw several requests outstanding at once, never more than allowed
    # (the reads, and at first the fstat asked alongside them)
    assert max(Probe.outstanding) >= 6
    assert max(Probe.outstanding) <= env.files.max_requests + 1


async def test_short_reads_are_read_again(env: Env) -> None:
    """A server that sends less than asked (not at the end) loses no bytes."""
    class Short(Probe):
        async def read(self, file_obj: object, offset: int, size: int) -> bytes:
            return (await super().read(file_obj, offset, size))[:1000]

    data = os.urandom(200_000)
    root = env.root
    with open(os.path.join(root, "s"), "wb") as f:
        f.write(data)
    async with inprocess_ssh_server(sftp_root=root, sftp_server_class=Short) as ssh:
        tunnel = Tunnel(ssh_options(ssh))
        for max_requests in (1, 4):
            files = await tunnel.open_sftp(max_requests=max_requests, block_size=32768)
            assert await read_all(files, "/s") == data
            assert await read_all(files, "/s", 150_000) == data[150_000:]
            await files.aclose()
        await tunnel.aclose()


async def test_leaving_a_read_early_cancels_and_closes(env: Env) -> None:
    with open(env.path("big"), "wb") as f:
        f.write(os.urandom(20 << 20))
    tasks_before = trio_task_count()
    loop = asyncio.get_event_loop()
    asyncio_before = len(asyncio.all_tasks(loop))
    async with env.files.read_file("/big") as chunks:
        first = await chunks.__anext__()
        assert first
    # every read answered or dropped, the handle closed: nothing outstanding
    assert asyncssh_table(Probe.client, "_requests") == {}
    assert trio_task_count() == tasks_before
    assert len(asyncio.all_tasks(loop)) == asyncio_before
    await env.files.stat("/big")  # the session goes on


async def test_cancelled_reader_leaves_nothing(env: Env) -> None:
    with open(env.path("big"), "wb") as f:
        f.write(os.urandom(4 << 20))
    Probe.read_delay = 0.05
    tasks_before = trio_task_count()
    got = 0
    with trio.move_on_after(0.3) as scope:
        async with env.files.read_file("/big") as chunks:
            async for chunk in chunks:
                got += len(chunk)
    assert scope.cancelled_caught and got < 4 << 20
    assert asyncssh_table(Probe.client, "_requests") == {}
    assert trio_task_count() == tasks_before
    Probe.read_delay = 0.0
    assert (await env.files.stat("/big")).size == 4 << 20


# ------------------------------------------------------------------ writing

def _read(env: Env, name: str) -> bytes:
    with open(env.path(name), "rb") as f:
        return f.read()


async def test_write_modes(env: Env) -> None:
    files = env.files
    with open(env.path("f"), "wb") as f:
        f.write(b"abcdefgh")
    async with files.write_file("/f") as writer:  # truncate
        await writer.write(b"12")
    assert _read(env, "f") == b"12"
    async with files.write_file("/f", "append") as writer:
        await writer.write(b"34")
        await writer.write(b"56")
    assert _read(env, "f") == b"123456"
    async with files.write_file("/f", "resume", 2) as writer:
        await writer.write(b"XY")
    assert _read(env, "f") == b"12XY56"
    async with files.write_file("/new", "exclusive") as writer:
        await writer.write(b"n")
    assert _read(env, "new") == b"n"
    # protocol 3 reports an existing file as FX_FAILURE ("exists" on protocol 6)
    assert await kind_of(_enter(files.write_file("/new", "exclusive"))) == (
        "failure", "File exists")
    async with files.write_file("/empty"):
        pass
    assert _read(env, "empty") == b""
    async with files.write_file("/appended-new", "append") as writer:
        await writer.write(b"a")
    assert _read(env, "appended-new") == b"a"
    assert (await kind_of(_enter(files.write_file("/denied")))) == (
        "permission", "no access here")
    assert (await kind_of(_enter(files.write_file("/no/such/dir"))))[0] == "not-found"


async def test_write_pipelined_with_back_pressure(env: Env) -> None:
    data = os.urandom(5 << 20)
    Probe.write_delay = 0.002  # acknowledgements slower than the writes come
    async with env.files.write_file("/big") as writer:
        for start in range(0, len(data), 10_000):  # small writes are joined
            await writer.write(data[start:start + 10_000])
    assert _read(env, "big") == data
    assert writer.requests == -(-len(data) // (64 * 1024))
    assert 6 <= writer.most_in_flight <= env.files.max_requests
    assert max(Probe.outstanding) >= 6
    assert asyncssh_table(Probe.client, "_requests") == {}


async def test_write_failure_is_raised_and_file_closed(env: Env) -> None:
    os.mkdir(env.path("full"))
    tasks_before = trio_task_count()
    with pytest.raises(RemoteFileError) as info:
        async with env.files.write_file("/full/f") as writer:
            for _ in range(100):
                await writer.write(b"x" * 65536)
    assert info.value.kind == "failure"  # v3: FX_FAILURE, text kept
    assert str(info.value) == "disk full"
    assert asyncssh_table(Probe.client, "_requests") == {}
    assert trio_task_count() == tasks_before


async def test_write_abandoned_by_exception_closes(env: Env) -> None:
    class Stop(Exception):
        pass

    with pytest.raises(Stop):
        async with env.files.write_file("/partial") as writer:
            await writer.write(b"y" * (300 * 1024))
            raise Stop
    assert asyncssh_table(Probe.client, "_requests") == {}
    os.remove(env.path("partial"))  # closed (and whatever reached it written)


async def test_a_server_that_stops_answering_is_lost_after_the_request_timeout(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ftptrio._ssh._sftp.REQUEST_TIMEOUT", 0.5)
    files = env.files
    with trio.fail_after(10):
        assert (await kind_of(files.stat("/hang")))[0] == "lost"
    with open(env.path("f"), "wb") as f:
        f.write(os.urandom(300 * 1024))
    Probe.read_delay = 3600
    with trio.fail_after(10):
        assert (await kind_of(read_all(files, "/f")))[0] == "lost"
    Probe.read_delay, Probe.write_delay = 0.0, 3600
    with trio.fail_after(10), pytest.raises(RemoteFileError) as info:
        async with files.write_file("/w") as writer:
            for _ in range(20):
                await writer.write(os.urandom(64 * 1024))
    assert info.value.kind == "lost"


async def test_listing_is_bounded(env: Env, monkeypatch) -> None:
    """A directory (or a server sending names without end) past
    MAX_LISTING_ENTRIES is refused instead of held whole in memory."""
    from ftptrio._ssh import _sftp

    for n in range(12):
        open(env.path(f"f{n:02}"), "wb").close()
    monkeypatch.setattr(_sftp, "MAX_LISTING_ENTRIES", 12)
    assert len(await env.files.listdir("/")) == 12
    monkeypatch.setattr(_sftp, "MAX_LISTING_ENTRIES", 11)
    kind, text = await kind_of(env.files.listdir("/"))
    assert kind == "failure" and "more than 11 entries" in text


async def test_small_files_cost_one_read_and_a_close_not_waited_for(env: Env) -> None:
    """The open and a stat go out together; reads start at most at the file's size
    (a file within one block: one read, whose short answer is the end); the close of
    a file read to its end is not waited for (aclose() takes its answer)."""
    with open(env.path("small"), "wb") as f:
        f.write(b"s" * 4096)
    with open(env.path("block"), "wb") as f:
        f.write(b"b" * (64 * 1024))  # exactly one block: a second read finds the end
    async with env.files.read_file("/small") as reader:
        assert reader.info.size == 4096 and not reader.info.is_dir
        assert b"".join([chunk async for chunk in reader]) == b"s" * 4096
    assert reader.requests == 1
    async with env.files.read_file("/block") as reader:
        assert len(b"".join([chunk async for chunk in reader])) == 64 * 1024
    assert reader.requests == 2
    await env.files.aclose()
    assert not env.files._closing
    assert asyncssh_table(Probe.client, "_requests") == {}

