"""The FTP server front end of --sftp-server (``ftptrio._sftpfront``): dialogues over a
loopback control connection, served from ``ftptrio.testing.fake_sftp.LocalFiles``."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

import pytest
import trio

from ftptrio._seams import RemoteFileError, RemoteFileInfo, RemoteFiles, RemoteReader
from ftptrio._sftpfront import (FEATURES, CrlfToLf, FrontSettings, Handover, LoginFailed,
                                UseFtpForwarding, ls_line, mlst_facts, serve_front_session,
                                to_crlf)
from ftptrio._xferlog import xferlog_line
from ftptrio.testing.fake_sftp import LocalFiles

from session_streams import loopback_pair  # type: ignore[import-not-found]

LOG = logging.LoggerAdapter(logging.getLogger("ftptrio.test.sftpfront"), {})
PASSWORD = "secret"


class Control:
    """The client's end of the control connection: commands out, whole replies in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def reply(self, timeout: float = 10) -> str:
        with trio.fail_after(timeout):
            while True:
                found = _split_reply(self.buffer)
                if found is not None:
                    text, self.buffer = found
                    return text
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(self.buffer)
                self.buffer += data

    async def send(self, line: str | bytes) -> None:
        raw = line.encode() if isinstance(line, str) else line
        await self.stream.send_all(raw + b"\r\n")

    async def cmd(self, line: str | bytes) -> str:
        await self.send(line)
        return await self.reply()

    async def closed(self, timeout: float = 10) -> bytes:
        """What arrives until the server closes the connection."""
        rest = self.buffer
        with trio.fail_after(timeout):
            while data := await self.stream.receive_some(65536):
                rest += data
        return rest


def _split_reply(buffer: bytes) -> tuple[str, bytes] | None:
    end, code = 0, None
    while (eol := buffer.find(b"\r\n", end)) >= 0:
        line = buffer[end:eol]
        end = eol + 2
        if code is None:
            code = line[:3]
        if line[:3] == code and line[3:4] == b" ":
            return buffer[:end].decode("utf-8", "surrogateescape"), buffer[end:]
    return None


@dataclass
class Front:
    control: Control
    files: LocalFiles
    root: str
    transfers: list[dict[str, object]] = field(default_factory=list)
    result: list[Handover | None] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    server_end: trio.SocketStream | None = None

    async def login(self, type_: str = "I") -> None:
        assert (await self.control.reply()).startswith("220 ")
        assert (await self.control.cmd("USER alice")).startswith("331 ")
        assert (await self.control.cmd(f"PASS {PASSWORD}")).startswith("230 ")
        assert (await self.control.cmd(f"TYPE {type_}")).startswith("200 ")


@contextlib.asynccontextmanager
async def front_session(root: str, settings: FrontSettings | None = None,
                        files: LocalFiles | None = None, login: object = None,
                        ) -> AsyncIterator[Front]:
    client, server_end = await loopback_pair()
    files = files if files is not None else LocalFiles(root)
    front = Front(Control(client), files, root, server_end=server_end)

    async def check_password(user: str, password: str) -> RemoteFiles:
        if password != PASSWORD:
            raise LoginFailed("Login incorrect.")
        return files

    async def serve() -> None:
        front.result.append(await serve_front_session(
            server_end, login=login or check_password, log=LOG,  # type: ignore[arg-type]
            settings=settings or FrontSettings(failed_login_delay=0.05, data_timeout=5),
            on_transfer=front.transfers.append, session_id=7))
        front.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        try:
            yield front
            await client.aclose()  # the session ends when its client goes
            with trio.fail_after(10):
                await front.done.wait()
        finally:  # (no checkpoint here: a Cancelled would replace a failed assertion)
            nursery.cancel_scope.cancel()
    await client.aclose()


@pytest.fixture
def root(tmp_path):
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "hello.txt").write_bytes(b"line one\nline two\r\nthree\n")
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 1000)
    return str(tmp_path)


_PASV = re.compile(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")


async def passive(control: Control, epsv: bool = False) -> trio.SocketStream:
    if epsv:
        reply = await control.cmd("EPSV")
        assert reply.startswith("229 "), reply
        port = int(re.search(r"\(\|\|\|(\d+)\|\)", reply).group(1))  # type: ignore[union-attr]
        return await trio.open_tcp_stream("127.0.0.1", port)
    reply = await control.cmd("PASV")
    assert reply.startswith("227 "), reply
    n = [int(x) for x in _PASV.search(reply).groups()]  # type: ignore[union-attr]
    assert n[:4] == [127, 0, 0, 1]
    return await trio.open_tcp_stream("127.0.0.1", n[4] * 256 + n[5])


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def retrieve(control: Control, command: str, epsv: bool = False) -> tuple[str, bytes, str]:
    data = await passive(control, epsv)
    first = await control.cmd(command)
    assert first.startswith("150 "), first
    content = await read_all(data)
    await data.aclose()
    return first, content, await control.reply()


async def store(control: Control, command: str, content: bytes, piece: int = 0) -> tuple[str, str]:
    data = await passive(control)
    first = await control.cmd(command)
    assert first.startswith("150 "), first
    if piece:
        for i in range(0, len(content), piece):
            await data.send_all(content[i:i + piece])
    else:
        await data.send_all(content)
    await data.aclose()
    return first, await control.reply()


# ---------------------------------------------------------------- formats

def test_ascii_conversions_give_the_same_bytes_for_every_split():
    text = b"a\nb\r\nc\r\rd\n\n\r\ne\r"
    expected_down = b"a\r\nb\r\nc\r\rd\r\n\r\n\r\ne\r"
    for split in range(len(text) + 1):
        parts = [text[:split], text[split:]]
        after_cr, out = False, b""
        for part in parts:
            out += to_crlf(part, after_cr)
            after_cr = part.endswith(b"\r") if part else after_cr
        assert out == expected_down, split
    upload = b"a\r\nb\r\nc\rd\r\r\ne\r"
    for size in range(1, 5):
        converter = CrlfToLf()
        out = b"".join(converter.feed(upload[i:i + size]) for i in range(0, len(upload), size))
        assert out + converter.end() == b"a\nb\nc\rd\r\ne\r", size


def test_ls_line_is_what_ftp_clients_parse():
    now = time.time()
    recent = RemoteFileInfo("notes.txt", 1234, int(now) - 86400, stat.S_IFREG | 0o644, 1,
                            "alice", "staff")
    line = ls_line(recent, now)
    assert re.fullmatch(r"-rw-r--r--    1 alice    staff            1234 [A-Z][a-z]{2} \d\d "
                        r"\d\d:\d\d notes\.txt", line), line
    old = RemoteFileInfo("old", 5, 0, stat.S_IFDIR | 0o755, 2, "0", "0")
    assert ls_line(old, now) == ("drwxr-xr-x    2 0        0                   5 Jan 01  1970 old")
    assert "\n" not in ls_line(RemoteFileInfo("a\nb", 1, 0, 0), now)


def test_mlst_facts():
    info = RemoteFileInfo("x", 10, 86400, stat.S_IFREG | 0o640)
    assert mlst_facts(info) == "type=file;size=10;modify=19700102000000;perm=radfw;UNIX.mode=0640;"
    folder = RemoteFileInfo("d", 0, 0, stat.S_IFDIR | 0o555)
    assert mlst_facts(folder, ("type", "perm")) == "type=dir;perm=el;"


# ---------------------------------------------------------------- dialogue

async def test_login_and_simple_commands(root):
    async with front_session(root) as front:
        control = front.control
        assert (await control.reply()).startswith("220 ")
        assert (await control.cmd("PWD")).startswith("530 ")
        assert (await control.cmd("PASS x")).startswith("503 ")
        assert (await control.cmd("SYST")) == "215 UNIX Type: L8\r\n"
        feat = await control.cmd("FEAT")
        assert feat.startswith("211-") and feat.endswith("211 End\r\n")
        assert [line.strip() for line in feat.splitlines()[1:-1]] == list(FEATURES)
        assert (await control.cmd("OPTS UTF8 ON")).startswith("200 ")
        assert (await control.cmd("user alice")).startswith("331 ")
        assert (await control.cmd("pass secret")).startswith("230 ")
        assert (await control.cmd("USER bob")).startswith("530 ")
        assert (await control.cmd("PWD")) == '257 "/" is the current directory\r\n'
        assert (await control.cmd("XPWD")).startswith('257 "/"')
        for line, code in [("TYPE I", "200"), ("TYPE A", "200"), ("TYPE A N", "200"),
                           ("TYPE L 8", "200"), ("TYPE E", "504"), ("TYPE", "501"),
                           ("MODE S", "200"), ("MODE B", "504"), ("STRU F", "200"),
                           ("STRU R", "504"), ("NOOP", "200"), ("ALLO 100", "202"),
                           ("ABOR", "225"), ("XYZZY", "502"), ("LPRT 1", "502"),
                           ("AUTH TLS", "502"), ("REST x", "501"), ("REST 10", "350"),
                           ("OPTS MLST type;size;", "200"), ("OPTS FOO", "501"),
                           ("RNTO x", "503"), ("CWD", "501")]:
            reply = await control.cmd(line)
            assert reply.startswith(code + " "), (line, reply)
        stat_reply = await control.cmd("STAT")
        assert stat_reply.startswith("211-") and "Logged in as alice" in stat_reply
        assert (await control.cmd("STAT x")).startswith("504 ")
        help_reply = await control.cmd("HELP")
        assert help_reply.startswith("214-") and "RETR" in help_reply
        assert (await control.cmd("QUIT")) == "221 Goodbye.\r\n"
        assert await control.closed() == b""
    assert front.result == [None] and front.files.closed


async def test_wrong_password_gets_530_after_the_delay_then_421(root):
    settings = FrontSettings(failed_login_delay=0.3, max_login_failures=2)
    async with front_session(root, settings) as front:
        control = front.control
        await control.reply()
        await control.cmd("USER alice")
        started = trio.current_time()
        assert (await control.cmd("PASS wrong")) == "530 Login incorrect.\r\n"
        assert trio.current_time() - started >= 0.3
        assert (await control.cmd("PASS secret")).startswith("503 ")  # USER again first
        await control.cmd("USER alice")
        await control.send("PASS wrong2")
        assert await control.closed() == (b"530 Login incorrect.\r\n421 Too many failed logins; "
                                          b"closing control connection.\r\n")
    assert front.result == [None]


async def test_directories_and_file_commands(root):
    async with front_session(root) as front:
        control = front.control
        await front.login()
        assert (await control.cmd("CWD pub")).startswith("250 ")
        assert (await control.cmd("PWD")).startswith('257 "/pub"')
        assert (await control.cmd("CWD hello.txt")).startswith("550 ")
        assert (await control.cmd("CWD /nowhere")).startswith("550 ")
        assert (await control.cmd("SIZE hello.txt")) == "213 25\r\n"
        assert (await control.cmd("SIZE /pub")).startswith("550 ")
        os.utime(os.path.join(root, "pub", "hello.txt"), (0, 86400 * 365))
        assert (await control.cmd("MDTM hello.txt")) == "213 19710101000000\r\n"
        assert (await control.cmd("SIZE missing")).startswith("550 ")
        assert (await control.cmd('MKD a"b')) == '257 "/pub/a""b" created\r\n'
        assert (await control.cmd('CWD a"b')).startswith("250 ")
        assert (await control.cmd("PWD")) == '257 "/pub/a""b" is the current directory\r\n'
        assert (await control.cmd("CDUP")).startswith("250 ")
        assert (await control.cmd("XCUP")).startswith("250 ")
        assert (await control.cmd("CDUP")).startswith("250 ")  # stays at /
        assert (await control.cmd("PWD")).startswith('257 "/"')
        assert (await control.cmd("XMKD pub")).startswith("550 ")
        assert (await control.cmd('RMD pub/a"b')).startswith("250 ")
        assert (await control.cmd("XRMD pub")).startswith("550 ")  # not empty
        assert (await control.cmd("RNFR nothing")).startswith("550 ")
        assert (await control.cmd("RNTO x")).startswith("503 ")
        assert (await control.cmd("RNFR pub/hello.txt")).startswith("350 ")
        assert (await control.cmd("RNTO data.bin")).startswith("250 ")  # replaces
        assert open(os.path.join(root, "data.bin"), "rb").read().startswith(b"line one")
        assert (await control.cmd("DELE data.bin")).startswith("250 ")
        assert (await control.cmd("DELE data.bin")).startswith("550 ")
        assert (await control.cmd("DELE pub")).startswith("550 ")
        mlst = await control.cmd("MLST pub")
        assert mlst.startswith("250-") and " type=dir;" in mlst and mlst.endswith("250 End\r\n")
        assert (await control.cmd(b"DELE a\x00b")).startswith("553 ")
        assert (await control.cmd(b"NOOP\x00")).startswith("500 ")


async def test_binary_and_ascii_retrieve_with_rest(root):
    async with front_session(root) as front:
        control = front.control
        await front.login()
        await control.cmd("TYPE I")
        first, content, last = await retrieve(control, "RETR data.bin")
        assert content == bytes(range(256)) * 1000 and last.startswith("226 ")
        assert "(256000 bytes)" in first
        assert (await control.cmd("REST 255990")).startswith("350 ")
        _, content, _ = await retrieve(control, "RETR data.bin", epsv=True)
        assert content == bytes(range(246, 256))
        _, content, _ = await retrieve(control, "RETR data.bin")  # REST was used up
        assert len(content) == 256000
        await control.cmd("TYPE A")
        _, content, _ = await retrieve(control, "RETR pub/hello.txt")
        assert content == b"line one\r\nline two\r\nthree\r\n"
    assert front.files.open_reads == 0
    kinds = [(t["command"], t["direction"], t["result"], t["type"]) for t in front.transfers]
    assert kinds[:4] == [("RETR data.bin", "download", "ok", "I"),
                         ("RETR data.bin", "download", "ok", "I"),
                         ("RETR data.bin", "download", "ok", "I"),
                         ("RETR pub/hello.txt", "download", "ok", "A")]
    first_transfer = front.transfers[0]
    assert first_transfer["bytes"] == 256000 and first_transfer["user"] == "alice"
    assert first_transfer["mode"] == "passive" and first_transfer["session"] == 7
    line = xferlog_line(first_transfer)
    assert line is not None and line.endswith(" 256000 data.bin b _ o r alice ftp 0 * c")


async def test_retrieve_of_a_directory_or_missing_file_is_refused(root):
    async with front_session(root) as front:
        control = front.control
        await front.login()
        data = await passive(control)
        assert (await control.cmd("RETR pub")).startswith("550 ")
        assert (await control.cmd("RETR data.bin")).startswith("425 ")  # PASV used up
        await data.aclose()
        data = await passive(control)
        assert (await control.cmd("RETR missing")).startswith("550 ")
        await data.aclose()
    assert [t["result"] for t in front.transfers] == ["refused"] * 3
    assert [t["reply"] for t in front.transfers] == [550, 425, 550]


async def test_store_append_unique_and_resume(root):
    payload = os.urandom(300_000)
    async with front_session(root) as front:
        control = front.control
        await front.login()
        await control.cmd("TYPE I")
        _, last = await store(control, "STOR up.bin", payload)
        assert last.startswith("226 ")
        assert open(os.path.join(root, "up.bin"), "rb").read() == payload
        _, last = await store(control, "APPE up.bin", b"tail")
        assert open(os.path.join(root, "up.bin"), "rb").read() == payload + b"tail"
        assert (await control.cmd("REST 100000")).startswith("350 ")
        _, last = await store(control, "STOR up.bin", payload[100_000:200_000])
        assert open(os.path.join(root, "up.bin"), "rb").read() == payload + b"tail"
        first, last = await store(control, "STOU up.bin", b"unique")
        assert first == "150 FILE: up.bin.1\r\n" and "up.bin.1" in last
        first, _ = await store(control, "STOU", b"x")
        assert first == "150 FILE: ftp.upload\r\n"
        await control.cmd("TYPE A")
        text = b"one\r\ntwo\r\n\r\nthree\rfour\r\n"
        _, last = await store(control, "STOR text.txt", text, piece=1)
        assert open(os.path.join(root, "text.txt"), "rb").read() == b"one\ntwo\n\nthree\rfour\n"
    assert open(os.path.join(root, "up.bin.1"), "rb").read() == b"unique"
    assert front.files.open_writes == 0 and front.files.writes_cancelled == 0
    assert [t["direction"] for t in front.transfers] == ["upload"] * 6
    assert xferlog_line(front.transfers[1]) is not None


async def test_listings(root):
    async with front_session(root) as front:
        control = front.control
        await front.login()
        _, listing, last = await retrieve(control, "LIST")
        lines = listing.decode().split("\r\n")
        assert lines[-1] == "" and last.startswith("226 ")
        assert lines[0].startswith("-rw-r--r--") and lines[0].endswith(" data.bin")
        assert lines[1].startswith("d") and lines[1].endswith(" pub")
        _, same, _ = await retrieve(control, "LIST -la")
        assert same == listing
        _, one, _ = await retrieve(control, "LIST -l pub/hello.txt")
        assert one.decode().count("\r\n") == 1 and one.decode().endswith(" hello.txt\r\n")
        assert one.decode().split()[4] == "25"
        _, names, _ = await retrieve(control, "NLST")
        assert names == b"data.bin\r\npub\r\n"
        _, names, _ = await retrieve(control, "NLST pub")
        assert names == b"hello.txt\r\n"
        _, facts, _ = await retrieve(control, "MLSD")
        assert facts.decode().splitlines() == [
            f"type=file;size=256000;modify={_modify(root, 'data.bin')};perm=radfw;"
            "UNIX.mode=0644; data.bin",
            f"type=dir;size={os.stat(os.path.join(root, 'pub')).st_size};"
            f"modify={_modify(root, 'pub')};perm=elcdfmp;UNIX.mode=0755; pub"]
        data = await passive(control)
        assert (await control.cmd("MLSD pub/hello.txt")).startswith("501 ")
        await data.aclose()
        data = await passive(control)
        assert (await control.cmd("LIST nowhere")).startswith("550 ")
        await data.aclose()


def _modify(root: str, name: str) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(int(os.stat(os.path.join(root, name)).st_mtime)))


async def test_passive_listener_refuses_other_addresses_and_waits_for_the_client(root, caplog):
    caplog.set_level(logging.WARNING)
    async with front_session(root) as front:
        control = front.control
        await front.login()
        reply = await control.cmd("PASV")
        n = [int(x) for x in _PASV.search(reply).groups()]  # type: ignore[union-attr]
        port = n[4] * 256 + n[5]
        intruder = trio.socket.socket()
        await intruder.bind(("127.0.0.2", 0))
        await intruder.connect(("127.0.0.1", port))
        with trio.fail_after(5):
            assert await intruder.recv(10) == b""  # closed at once
        intruder.close()
        data = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await control.cmd("RETR pub/hello.txt")).startswith("150 ")
        assert await read_all(data) == b"line one\nline two\r\nthree\n"
        assert (await control.reply()).startswith("226 ")
        await data.aclose()
        # a newer PASV replaces an unused one
        first = await control.cmd("EPSV")
        old_port = int(re.search(r"\|(\d+)\|", first).group(1))  # type: ignore[union-attr]
        data = await passive(control, epsv=True)
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", old_port)
        assert (await control.cmd("NLST")).startswith("150 ")
        assert await read_all(data) == b"data.bin\r\npub\r\n"
        assert (await control.reply()).startswith("226 ")
    assert any("refused data connection from 127.0.0.2" in r.getMessage() for r in caplog.records)


async def test_active_mode_and_bounce_refusals(root, caplog):
    caplog.set_level(logging.WARNING)
    async with front_session(root) as front:
        control = front.control
        await front.login()
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        assert (await control.cmd("PORT 10,1,2,3,4,1")).startswith("500 ")
        assert (await control.cmd("PORT 127,0,0,1,0,21")).startswith("500 ")
        assert (await control.cmd("PORT 127,0,0,1,300,1")).startswith("501 ")
        assert (await control.cmd("EPRT |1|10.0.0.1|5000|")).startswith("500 ")
        assert (await control.cmd("EPRT |3|x|5000|")).startswith("522 ")
        assert (await control.cmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}")).startswith("200 ")
        await control.send("RETR data.bin")
        data = await listener.accept()
        assert (await control.reply()).startswith("150 ")
        assert len(await read_all(data)) == 256000
        assert (await control.reply()).startswith("226 ")
        assert (await control.cmd(f"EPRT |1|127.0.0.1|{port}|")).startswith("200 ")
        await control.send("NLST pub")
        data = await listener.accept()
        assert await read_all(data) == b"hello.txt\r\n"
        assert (await control.reply()).startswith("150 ")
        assert (await control.reply()).startswith("226 ")
        await listener.aclose()
        assert (await control.cmd("EPSV ALL")).startswith("200 ")
        assert (await control.cmd("PASV")).startswith("501 ")
        assert (await control.cmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}")).startswith("501 ")
        assert (await control.cmd("EPSV 2")).startswith("522 ")
        assert (await control.cmd("RETR data.bin")).startswith("425 ")
    assert front.transfers[0]["mode"] == "active"
    assert sum("refused PORT" in r.getMessage() for r in caplog.records) == 2


async def test_abor_during_retrieve_cancels_the_sftp_read(root):
    files = LocalFiles(root, chunk_size=1000, read_delay=0.01)
    async with front_session(root, files=files) as front:
        control = front.control
        await front.login()
        data = await passive(control)
        assert (await control.cmd("RETR data.bin")).startswith("150 ")
        assert await data.receive_some(100)
        assert files.open_reads == 1
        stat_reply = await control.cmd("STAT")
        assert stat_reply.startswith("213 Status: ")
        assert (await control.cmd("NOOP")) == "200 NOOP ok.\r\n"
        await control.send(b"\xff\xf4\xff\xf2ABOR")  # IAC IP IAC DM ABOR, as ftp(1)
        assert (await control.reply()).startswith("426 ")
        assert (await control.reply()).startswith("226 ")
        assert files.open_reads == 0 and files.reads_cancelled == 1
        await data.aclose()
        assert (await control.cmd("PWD")).startswith("257 ")
    assert front.transfers[0]["result"] == "error (aborted)"


async def test_dropped_data_connection_cancels_the_transfer(root):
    files = LocalFiles(root, chunk_size=1000, read_delay=0.005)
    async with front_session(root, files=files) as front:
        control = front.control
        await front.login()
        data = await passive(control)
        assert (await control.cmd("RETR data.bin")).startswith("150 ")
        await data.receive_some(100)
        data.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER,
                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await data.aclose()  # reset
        assert (await control.reply()).startswith("426 ")
        assert files.reads_cancelled == 1 and files.open_reads == 0
        # an upload cut by a reset
        data = await passive(control)
        assert (await control.cmd("STOR cut.bin")).startswith("150 ")
        await data.send_all(b"x" * 5000)
        await trio.sleep(0.05)
        data.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER,
                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await data.aclose()
        assert (await control.reply()).startswith("426 ")
        assert files.writes_cancelled == 1 and files.open_writes == 0
    assert [str(t["result"]).startswith("error (data connection lost") for t in front.transfers] \
        == [True, True]


async def test_quit_during_a_transfer_waits_for_it_and_later_commands_are_pipelined(root):
    files = LocalFiles(root, chunk_size=10_000, read_delay=0.01)
    async with front_session(root, files=files) as front:
        control = front.control
        await front.login()
        data = await passive(control)
        await control.send("TYPE I\r\nRETR data.bin\r\nPWD\r\nQUIT")
        assert (await control.reply()).startswith("200 ")
        assert (await control.reply()).startswith("150 ")
        assert len(await read_all(data)) == 256000
        rest = await control.closed()
        assert rest.startswith(b"226 ")
        assert rest.split(b"\r\n")[1:] == [b'257 "/" is the current directory', b"221 Goodbye.", b""]


async def _replies_of(root: str, stream: bytes, piece: int) -> bytes:
    async with front_session(root) as front:
        for i in range(0, len(stream), piece or len(stream)):
            await front.control.stream.send_all(stream[i:i + (piece or len(stream))])
        return await front.control.closed()


async def test_a_pipelined_stream_gives_the_same_replies_however_it_is_split(root):
    stream = (b"USER alice\r\nPASS secret\r\nSYST\r\nTYPE I\r\nCWD pub\r\nPWD\r\nSIZE hello.txt\r\n"
              b"MKD new\r\nRNFR new\r\nRNTO newer\r\nRMD newer\r\nCDUP\r\nnoop\nREST 5\r\n"
              b"MLST pub/hello.txt\r\nFEAT\r\nBOGUS\r\nQUIT\r\n")
    whole = await _replies_of(root, stream, 0)
    assert whole.count(b"\r\n") > 20 and whole.endswith(b"221 Goodbye.\r\n")
    assert await _replies_of(root, stream, 1) == whole
    assert await _replies_of(root, stream, 7) == whole


async def test_sftp_errors_map_to_replies_and_a_lost_session_ends_with_421(root):
    files = LocalFiles(root)
    async with front_session(root, files=files) as front:
        control = front.control
        await front.login()
        for operation, kind, command, code in [
                ("mkdir", "no-space", "MKD x", "452"), ("mkdir", "bad-name", "MKD x", "553"),
                ("mkdir", "permission", "MKD x", "550"), ("remove", "failure", "DELE x", "550"),
                ("stat", "unsupported", "SIZE x", "502"), ("mkdir", "exists", "MKD x", "550")]:
            files.fail[operation] = RemoteFileError(kind, "server says\r\n500 no")  # type: ignore[arg-type]
            reply = await control.cmd(command)
            assert reply.startswith(code + " ") and reply.count("\r\n") == 1, reply
            assert "server says\\015\\012500 no" in reply
        files.fail["open_write"] = RemoteFileError("no-space", "quota")
        data = await passive(control)
        assert (await control.cmd("STOR y")).startswith("452 ")
        await data.aclose()
        data = await passive(control)
        files.fail["read"] = RemoteFileError("failure", "read error")
        assert (await control.cmd("RETR data.bin")).startswith("150 ")
        assert (await control.reply()).startswith("451 ")
        await data.aclose()
        files.fail["stat"] = RemoteFileError("lost", "SSH connection lost")
        await control.send("SIZE data.bin")
        assert (await control.closed()).startswith(b"421 SFTP session lost")
    assert files.closed and files.open_reads == 0 and front.result == [None]


async def test_login_can_hand_the_client_to_ftp_forwarding(root):
    async def fallback(user: str, password: str) -> RemoteFiles:
        raise UseFtpForwarding()

    async with front_session(root, login=fallback) as front:
        await front.control.reply()
        await front.control.stream.send_all(b"USER bob\r\nPASS p\xe4ss\r\nTYPE I\r\nPW")
        with trio.fail_after(5):
            await front.done.wait()
        assert front.result == [Handover(b"bob", b"p\xe4ss", b"TYPE I\r\nPW")]
        assert front.server_end is not None
        await front.server_end.send_all(b"still open\r\n")
        assert (await front.control.reply()) == "331 Please specify the password.\r\n"


async def test_timeouts_and_long_lines(root):
    settings = FrontSettings(login_timeout=0.3, idle_timeout=0.3, max_line=100)
    async with front_session(root, settings) as front:
        await front.control.reply()
        assert (await front.control.closed()).startswith(b"421 Timeout (login)")
    async with front_session(root, settings) as front:
        await front.login()
        assert (await front.control.closed()).startswith(b"421 Timeout (idle)")
    async with front_session(root, settings) as front:
        await front.control.reply()
        await front.control.send(b"NOOP\r\nUSER " + b"x" * 200)
        assert await front.control.closed() == (b"200 NOOP ok.\r\n"
                                                b"500 Command line too long; closing.\r\n")


async def test_hashes_of_a_larger_binary_transfer_both_ways(root):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with front_session(root) as front:
        control = front.control
        await front.login()
        await control.cmd("TYPE I")
        await store(control, "STOR big.bin", payload)
        _, content, _ = await retrieve(control, "RETR big.bin")
    assert hashlib.sha256(content).digest() == hashlib.sha256(payload).digest()


async def test_a_stalled_data_connection_fails_its_transfer(root):
    settings = FrontSettings(stall_timeout=0.3, data_timeout=5)
    async with front_session(root, settings) as front:
        control = front.control
        await front.login()
        data = await passive(control)
        assert (await control.cmd("STOR stalled.bin")).startswith("150 ")
        await data.send_all(b"some")
        assert (await control.reply()) == ("426 Connection closed; transfer aborted (data "
                                           "connection stalled).\r\n")
        await data.aclose()
        assert front.files.writes_cancelled == 1 and front.files.open_writes == 0
    assert front.transfers[0]["result"] == "error (data connection stalled)"
    assert front.transfers[0]["bytes"] == 4


async def test_the_client_closing_during_a_transfer_ends_the_session(root):
    files = LocalFiles(root, chunk_size=1000, read_delay=0.01)
    async with front_session(root, files=files) as front:
        control = front.control
        await front.login()
        data = await passive(control)
        assert (await control.cmd("RETR data.bin")).startswith("150 ")
        assert await data.receive_some(100)
        await control.stream.aclose()
        with trio.fail_after(5):
            await front.done.wait()
        await data.aclose()
    assert files.closed and files.open_reads == 0 and files.reads_cancelled == 1
    assert front.transfers[0]["result"] == "error (session ended)"
    assert front.transfers[0]["reply"] is None


async def test_a_transfer_without_port_or_pasv_leaves_the_file_alone(root):
    async with front_session(root) as front:
        control = front.control
        await front.login()
        assert (await control.cmd("STOR data.bin")).startswith("425 Use PORT or PASV")
        assert (await control.cmd("RETR data.bin")).startswith("425 ")
        assert (await control.cmd("LIST")).startswith("425 ")
        assert front.files.open_writes == 0
    with open(os.path.join(root, "data.bin"), "rb") as f:
        assert f.read() == bytes(range(256)) * 1000
    assert [t["result"] for t in front.transfers] == ["refused"] * 3


async def test_stou_tries_the_next_name_when_protocol_3_says_only_failure(root):
    with open(os.path.join(root, "ftp.upload"), "wb") as f:
        f.write(b"old")
    async with front_session(root) as front:
        control = front.control
        await front.login()
        # OpenSSH's sftp-server (protocol 3) answers an exclusive open of an existing
        # file with FX_FAILURE, not FX_FILE_ALREADY_EXISTS
        front.files.fail["open_write"] = RemoteFileError("failure", "Failure")
        first, last = await store(control, "STOU", b"new")
        assert first == "150 FILE: ftp.upload.1\r\n", first
        assert last.startswith("226 "), last
        front.files.fail["open_write"] = RemoteFileError("failure", "Failure")
        data = await passive(control)
        assert (await control.cmd("STOU fresh")).startswith("451 ")  # not there: a failure
        await data.aclose()
    with open(os.path.join(root, "ftp.upload"), "rb") as f:
        assert f.read() == b"old"
    with open(os.path.join(root, "ftp.upload.1"), "rb") as f:
        assert f.read() == b"new"


async def test_a_client_that_reads_no_replies_is_still_closed_at_the_login_timeout(root):
    settings = FrontSettings(login_timeout=0.5, failed_login_delay=0.05)
    async with front_session(root, settings) as front:
        sock = front.control.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert front.server_end is not None
        front.server_end.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with trio.move_on_after(3):  # the replies pile up until ftptrio's sends block
            for _ in range(2000):
                await front.control.send("HELP")
        with trio.fail_after(5):
            await front.done.wait()
    assert front.result == [None]


async def test_commands_kept_coming_do_not_outlast_the_login_timeout(root):
    settings = FrontSettings(login_timeout=0.5)
    async with front_session(root, settings) as front:
        control = front.control
        await control.reply()
        batch = b"NOOP\r\n" * 50
        ended = False
        with trio.move_on_after(4):
            while not ended:
                await control.stream.send_all(batch)
                for _ in range(50):
                    reply = await control.reply()
                    if reply.startswith("421 "):
                        ended = True
                        break
                    with contextlib.suppress(trio.BrokenResourceError):  # (the 421 came)
                        await control.stream.send_all(b"NOOP\r\n")  # one per reply
        assert ended


class _FarFuture(LocalFiles):
    """A server that reports times no platform's gmtime takes (SFTP v4+ has 64 bits)."""

    @staticmethod
    def _far(info: RemoteFileInfo) -> RemoteFileInfo:
        return RemoteFileInfo(info.name, info.size, 2 ** 62, info.mode, info.nlink,
                              info.owner, info.group)

    async def stat(self, path: str) -> RemoteFileInfo:
        return self._far(await super().stat(path))

    async def listdir(self, path: str) -> list[RemoteFileInfo]:
        return [self._far(info) for info in await super().listdir(path)]


async def test_times_out_of_range_do_not_crash_the_session(root):
    async with front_session(root, files=_FarFuture(root)) as front:
        control = front.control
        await front.login()
        assert (await control.cmd("MDTM data.bin")).startswith("213 ")
        assert (await control.cmd("MLST data.bin")).startswith("250-")
        for command in ("LIST", "MLSD"):
            _first, listing, last = await retrieve(control, command)
            assert b"data.bin" in listing and last.startswith("226 "), (listing, last)
        assert (await control.cmd("NOOP")).startswith("200 ")


async def test_rnto_must_follow_rnfr_at_once(root):
    async with front_session(root) as front:
        control = front.control
        await front.login()
        assert (await control.cmd("RNFR data.bin")).startswith("350 ")
        assert (await control.cmd("NOOP")).startswith("200 ")
        assert (await control.cmd("RNTO moved.bin")).startswith("503 ")
    assert os.path.exists(os.path.join(root, "data.bin"))
    assert not os.path.exists(os.path.join(root, "moved.bin"))


class _SlowClose(LocalFiles):
    """Closing a file read takes a shielded round trip (as SFTPFiles' close)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.closing = trio.Event()

    @contextlib.asynccontextmanager
    async def read_file(self, path: str, offset: int = 0) -> AsyncIterator[RemoteReader]:
        async with super().read_file(path, offset) as chunks:
            yield chunks
        self.closing.set()
        with trio.CancelScope(shield=True):
            await trio.sleep(0.5)


async def test_abor_while_the_file_closes_is_answered(root):
    files = _SlowClose(root)
    async with front_session(root, files=files) as front:
        control = front.control
        await front.login()
        data = await passive(control)
        assert (await control.cmd("RETR data.bin")).startswith("150 ")
        await read_all(data)
        await files.closing.wait()
        await control.send("ABOR")
        replies = [await control.reply(), await control.reply()]
        assert [r[:4] for r in replies] in (["226 ", "225 "], ["426 ", "226 "]), replies
        assert (await control.cmd("NOOP")).startswith("200 ")


async def test_store_onto_a_directory_is_a_permanent_refusal(root):
    """SFTP 3 (OpenSSH) answers opening a directory for writing with FX_FAILURE; the
    client gets 553 (as vsftpd), not a 451 it would retry."""
    async with front_session(root) as front:
        control = front.control
        await front.login()
        data = await passive(control)
        reply = await control.cmd("STOR pub")
        assert reply.startswith("553 ") and "directory" in reply, reply
        await data.aclose()
    assert os.path.isdir(os.path.join(root, "pub"))
