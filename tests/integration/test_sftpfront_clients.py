"""Real FTP clients against the --sftp-server front end (``ftptrio._sftpfront``) on a
loopback listener, its files served by ``ftptrio.testing.fake_sftp.LocalFiles``:
Python's ftplib (every command), curl and lftp (subprocesses). Every transfer is
checked by sha256; listings are parsed by each client."""

from __future__ import annotations

import contextlib
import ftplib
import io
import logging
import os
import re
import shlex
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest
import trio

from ftptrio._seams import RemoteFiles
from ftptrio._sftpfront import FrontSettings, LoginFailed, serve_front_session
from ftptrio.testing import servers
from ftptrio.testing.fake_sftp import LocalFiles

LOG = logging.LoggerAdapter(logging.getLogger("ftptrio.test.sftpfront"), {})
USER, PASSWORD = "alice", "s3cret"
BIG = 5 * 1024 * 1024
TEXT = b"first line\nsecond line\n\nlast line without end"
TEXT_CRLF = TEXT.replace(b"\n", b"\r\n")
DEADLINE = 90


@dataclass
class FrontServer:
    host: str
    port: int
    root: Path
    transfers: list[dict[str, object]] = field(default_factory=list)
    sessions: list[LocalFiles] = field(default_factory=list)

    def url(self, path: str = "", credentials: bool = True) -> str:
        auth = f"{USER}:{PASSWORD}@" if credentials else ""
        return f"ftp://{auth}{self.host}:{self.port}/{path}"


@contextlib.asynccontextmanager
async def front_server(root: Path, settings: FrontSettings | None = None,
                       make_files: Callable[[], LocalFiles] | None = None,
                       ) -> AsyncIterator[FrontServer]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server = FrontServer("127.0.0.1", listeners[0].socket.getsockname()[1], root)

    async def login(user: str, password: str) -> RemoteFiles:
        if (user, password) != (USER, PASSWORD):
            raise LoginFailed("Login incorrect.")
        files = make_files() if make_files else LocalFiles(root)
        server.sessions.append(files)
        return files

    async def handle(stream: trio.SocketStream) -> None:
        await serve_front_session(stream, login=login, log=LOG,
                                  settings=settings or FrontSettings(failed_login_delay=0.2,
                                                                     data_timeout=10),
                                  on_transfer=server.transfers.append)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        yield server
        nursery.cancel_scope.cancel()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "served"
    (served / "pub" / "deep").mkdir(parents=True)
    (served / "big.bin").write_bytes(servers.random_bytes(BIG, seed=28))
    (served / "text.txt").write_bytes(TEXT)
    (served / "pub" / "one.txt").write_bytes(b"one\n")
    (served / "pub" / "deep" / "two.bin").write_bytes(servers.random_bytes(70_000, seed=2))
    return served


def sha(path: Path) -> str:
    return servers.sha256_file(path)


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in {"ftp_proxy", "http_proxy", "https_proxy", "all_proxy", "no_proxy"}}
    env["LC_ALL"] = "C"
    env["HOME"] = env.get("HOME", "/tmp")
    return env


async def run(cmd: list[str], cwd: Path | None = None) -> str:
    with trio.fail_after(DEADLINE):
        result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                        check=False, env=client_env(), cwd=cwd)
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"{shlex.join(cmd)} exited {result.returncode}:\n{out[-4000:]}"
    return out


# ---------------------------------------------------------------- ftplib

def _ftplib_session(server: FrontServer, work: Path) -> dict[str, object]:
    """Every command through ftplib; what it saw, for the test to check."""
    seen: dict[str, object] = {}
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=30)
    seen["welcome"] = ftp.getwelcome()
    started = time.monotonic()
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.login(USER, "wrong")
    seen["failed_login_seconds"] = time.monotonic() - started
    seen["login"] = ftp.login(USER, PASSWORD)
    seen["syst"] = ftp.sendcmd("SYST")
    seen["feat"] = ftp.sendcmd("FEAT")
    seen["opts"] = ftp.sendcmd("OPTS UTF8 ON")
    seen["help"] = ftp.sendcmd("HELP")
    seen["stat"] = ftp.sendcmd("STAT")
    for command in ("NOOP", "MODE S", "STRU F", "ALLO 100", "TYPE A N", "TYPE L 8"):
        ftp.voidcmd(command)
    seen["pwd"] = ftp.pwd()
    seen["mkd"] = ftp.mkd("made")
    ftp.cwd("made")
    seen["pwd_made"] = ftp.sendcmd("XPWD")
    ftp.voidcmd("CDUP")
    ftp.voidcmd("XCWD pub")
    ftp.voidcmd("XCUP")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.cwd("text.txt")
    seen["xmkd"] = ftp.sendcmd("XMKD made2")
    ftp.voidcmd("XRMD made2")
    ftp.rmd("made")
    seen["size"] = ftp.size("big.bin")
    seen["mdtm"] = ftp.sendcmd("MDTM big.bin")
    seen["mlst"] = ftp.sendcmd("MLST big.bin")
    seen["mlsd"] = sorted((name, facts["type"], facts.get("size")) for name, facts in ftp.mlsd()
                          if facts["type"] in ("file", "dir"))
    seen["nlst"] = ftp.nlst()
    lines: list[str] = []
    ftp.dir(lines.append)
    seen["dir"] = lines
    # binary both ways, 5 MiB
    with open(work / "big.down", "wb") as out:
        ftp.retrbinary("RETR big.bin", out.write)
    with open(work / "big.down", "rb") as source:
        ftp.storbinary("STOR big.up", source)
    # resume both ways
    with open(work / "big.resumed", "wb") as out:
        out.write((server.root / "big.bin").read_bytes()[:1_000_003])
    with open(work / "big.resumed", "ab") as out:
        ftp.retrbinary("RETR big.bin", out.write, rest=1_000_003)
    (server.root / "partial.bin").write_bytes((server.root / "big.bin").read_bytes()[:2_000_001])
    with open(server.root / "big.bin", "rb") as source:
        source.seek(2_000_001)
        ftp.storbinary("STOR partial.bin", source, rest=2_000_001)
    # ASCII both ways
    text_lines: list[str] = []
    ftp.retrlines("RETR text.txt", text_lines.append)
    seen["text_lines"] = text_lines
    raw: list[bytes] = []
    ftp.voidcmd("TYPE A")
    with ftp.transfercmd("RETR text.txt") as conn:
        while chunk := conn.recv(7):  # small reads: the conversion across chunks
            raw.append(chunk)
    ftp.voidresp()
    seen["text_raw"] = b"".join(raw)
    ftp.storlines("STOR lines.txt", io.BytesIO(TEXT))
    # APPE, STOU, DELE, RNFR/RNTO
    ftp.storbinary("APPE lines.txt", io.BytesIO(b"+appended"))
    responses: list[str] = []
    getresp = ftp.getresp

    def recording() -> str:
        reply = getresp()
        responses.append(reply)
        return reply
    ftp.getresp = recording  # type: ignore[method-assign]
    ftp.storbinary("STOU", io.BytesIO(b"unique one"))
    ftp.storbinary("STOU", io.BytesIO(b"unique two"))
    ftp.getresp = getresp  # type: ignore[method-assign]
    seen["stou_replies"] = [r for r in responses if r.startswith(("150", "226"))]
    seen["big_up_sha"] = sha(server.root / "big.up")
    seen["rename"] = ftp.rename("big.up", "big.renamed")
    seen["delete"] = ftp.delete("big.renamed")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.delete("big.renamed")
    # active mode
    ftp.set_pasv(False)
    with open(work / "big.active", "wb") as out:
        ftp.retrbinary("RETR big.bin", out.write)
    ftp.set_pasv(True)
    # a foreign PORT and a privileged port are refused
    with pytest.raises(ftplib.error_perm, match="^500"):
        ftp.sendcmd("PORT 192,0,2,1,200,10")
    with pytest.raises(ftplib.error_perm, match="^500"):
        ftp.sendcmd("PORT 127,0,0,1,0,80")
    with pytest.raises(ftplib.error_perm, match="^502"):
        ftp.sendcmd("SITE CHMOD 777 x")
    seen["quit"] = ftp.quit()
    return seen


async def test_ftplib_every_command(root: Path, tmp_path: Path) -> None:
    async with front_server(root) as server:
        seen = await trio.to_thread.run_sync(_ftplib_session, server, tmp_path)
    big = root / "big.bin"
    assert str(seen["welcome"]).startswith("220 ")
    assert float(seen["failed_login_seconds"]) >= 0.2  # type: ignore[arg-type]
    assert str(seen["login"]).startswith("230 ")
    assert seen["syst"] == "215 UNIX Type: L8"
    assert "MLST type*;size*;modify*;perm*;unix.mode*;" in str(seen["feat"])
    assert str(seen["opts"]).startswith("200 ") and str(seen["help"]).startswith("214")
    assert str(seen["stat"]).startswith("211")
    assert seen["pwd"] == "/" and seen["mkd"] == "/made"
    assert str(seen["pwd_made"]).startswith('257 "/made"')
    assert str(seen["xmkd"]).startswith('257 "/made2"')
    assert seen["size"] == BIG
    assert re.fullmatch(r"213 \d{14}", str(seen["mdtm"]))
    assert f"type=file;size={BIG};" in str(seen["mlst"])
    mlsd = seen["mlsd"]
    assert isinstance(mlsd, list) and [entry[:2] for entry in mlsd] == [
        ("big.bin", "file"), ("pub", "dir"), ("text.txt", "file")]
    assert mlsd[0][2] == str(BIG) and mlsd[2][2] == str(len(TEXT))
    assert seen["nlst"] == ["big.bin", "pub", "text.txt"]
    listing = seen["dir"]
    assert isinstance(listing, list) and len(listing) == 3
    assert listing[0].split()[4] == str(BIG) and listing[0].endswith(" big.bin")
    assert sha(tmp_path / "big.down") == sha(big) == seen["big_up_sha"]
    assert sha(tmp_path / "big.resumed") == sha(big)
    assert sha(root / "partial.bin") == sha(big)
    assert seen["text_lines"] == TEXT.decode().split("\n")
    assert seen["text_raw"] == TEXT_CRLF
    assert (root / "lines.txt").read_bytes() == TEXT + b"\n+appended"  # storlines ends lines
    assert seen["stou_replies"] == ["150 FILE: ftp.upload", "226 Transfer complete; stored as "
                                    "ftp.upload.", "150 FILE: ftp.upload.1",
                                    "226 Transfer complete; stored as ftp.upload.1."]
    assert (root / "ftp.upload").read_bytes() == b"unique one"
    assert (root / "ftp.upload.1").read_bytes() == b"unique two"
    assert not (root / "big.renamed").exists() and not (root / "big.up").exists()
    assert sha(tmp_path / "big.active") == sha(big)
    assert str(seen["quit"]).startswith("221")
    assert all(files.closed and files.open_reads == files.open_writes == 0
               for files in server.sessions)
    done = {(t["command"], t["result"]) for t in server.transfers}
    assert ("RETR big.bin", "ok") in done and ("STOR big.up", "ok") in done


def _abort_and_drop(server: FrontServer) -> dict[str, object]:
    seen: dict[str, object] = {}
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=30)
    ftp.login(USER, PASSWORD)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    seen["first_bytes"] = len(conn.recv(4096))
    seen["abort"] = ftp.abort()  # IAC IP, IAC DM (urgent) ABOR: 426 for the RETR ...
    seen["after_abort"] = ftp.getresp()  # ... and 226 for the ABOR
    conn.close()
    seen["pwd"] = ftp.pwd()
    conn = ftp.transfercmd("RETR big.bin")
    conn.recv(4096)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # a reset
    with pytest.raises(ftplib.error_temp, match="^426"):
        ftp.voidresp()
    seen["noop"] = ftp.voidcmd("NOOP")
    ftp.quit()
    return seen


async def test_ftplib_abort_and_a_dropped_data_connection(root: Path) -> None:
    def slow_files() -> LocalFiles:
        return LocalFiles(root, chunk_size=16384, read_delay=0.01)

    async with front_server(root, make_files=slow_files) as server:
        seen = await trio.to_thread.run_sync(_abort_and_drop, server)
    assert seen["first_bytes"]
    assert str(seen["abort"]).startswith("426 ")
    assert str(seen["after_abort"]).startswith("226 ")
    assert seen["pwd"] == "/" and str(seen["noop"]).startswith("200")
    (files,) = server.sessions
    assert files.reads_cancelled == 2 and files.open_reads == 0 and files.closed
    assert [t["result"] for t in server.transfers][:1] == ["error (aborted)"]
    assert str(server.transfers[1]["result"]).startswith("error (data connection lost")


def _wrong_passwords(server: FrontServer) -> list[str]:
    replies = []
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        stream = sock.makefile("rb")
        replies.append(stream.readline().decode())
        for attempt in range(3):
            sock.sendall(b"USER alice\r\nPASS nope\r\n")
            replies.append(stream.readline().decode())
            replies.append(stream.readline().decode())
        replies.append(stream.readline().decode())
        replies.append(stream.read().decode())
    return replies


async def test_wrong_password_530_after_the_delay_and_421_after_three(root: Path) -> None:
    settings = FrontSettings(failed_login_delay=0.25)
    async with front_server(root, settings) as server:
        started = trio.current_time()
        replies = await trio.to_thread.run_sync(_wrong_passwords, server)
        elapsed = trio.current_time() - started
    assert replies[0].startswith("220 ")
    assert replies[1:7] == ["331 Please specify the password.\r\n", "530 Login incorrect.\r\n"] * 3
    assert replies[7].startswith("421 ") and replies[8] == ""
    assert elapsed >= 0.75
    assert server.sessions == []


# ---------------------------------------------------------------- curl

async def test_curl_downloads_uploads_resumes_and_lists(root: Path, tmp_path: Path) -> None:
    curl = servers.require_tool("curl")
    base = [curl, "-sS", "--max-time", "60", "--connect-timeout", "10"]
    big = root / "big.bin"
    async with front_server(root) as server:
        for name, mode in [("epsv", []), ("pasv", ["--disable-epsv"]),
                           ("eprt", ["-P", "127.0.0.1"]),
                           ("port", ["-P", "127.0.0.1", "--disable-eprt"])]:
            out = tmp_path / f"curl-{name}.bin"
            await run([*base, *mode, "-o", str(out), server.url("big.bin")])
            assert sha(out) == sha(big), name
        upload = tmp_path / "curl-epsv.bin"
        await run([*base, "-T", str(upload), server.url("pub/deep/up.bin")])
        assert sha(root / "pub" / "deep" / "up.bin") == sha(big)
        # resumed download: a partial local file, -C -
        partial = tmp_path / "partial.bin"
        partial.write_bytes(big.read_bytes()[:1_234_567])
        await run([*base, "-C", "-", "-o", str(partial), server.url("big.bin")])
        assert sha(partial) == sha(big)
        # resumed upload: a partial remote file (curl: SIZE, then APPE)
        (root / "half.bin").write_bytes(big.read_bytes()[:3_000_000])
        await run([*base, "-C", "-", "-T", str(big), server.url("half.bin")])
        assert sha(root / "half.bin") == sha(big)
        # ASCII download (TYPE A: CRLF on the wire, curl makes it LF again) and upload
        text_out = tmp_path / "text.out"
        await run([*base, "-B", "-o", str(text_out), server.url("text.txt")])
        assert text_out.read_bytes() == TEXT
        ascii_download = server.transfers[-1]
        assert ascii_download["command"] == "RETR text.txt" and ascii_download["type"] == "A"
        assert ascii_download["bytes"] == len(TEXT_CRLF)
        lf_file = tmp_path / "lf.txt"  # curl -B sends every LF as CRLF
        lf_file.write_bytes(TEXT)
        await run([*base, "-B", "-T", str(lf_file), server.url("ascii-up.txt")])
        assert (root / "ascii-up.txt").read_bytes() == TEXT
        assert server.transfers[-1]["bytes"] == len(TEXT_CRLF)
        # listings
        listing = await run([*base, server.url("pub/")])
        assert re.search(r"(?m)^d\S+ +\d+ \S+ +\S+ +\d+ \w{3} \d\d [\d:]{4,5} deep\r?$", listing)
        assert re.search(r"(?m)^-rw\S+ +1 .* 4 \w{3} \d\d [\d:]{4,5} one\.txt\r?$", listing)
        names = await run([*base, "--list-only", server.url("pub/")])
        assert names.split() == ["deep", "one.txt"]
        # quote commands and a missing file
        await run([*base, "-Q", "MKD quoted", "-Q", "RNFR quoted", "-Q", "RNTO renamed",
                   "--list-only", server.url()])
        assert (root / "renamed").is_dir()
        with trio.fail_after(DEADLINE):
            missing = await trio.run_process([*base, "-o", "/dev/null", server.url("nothing")],
                                             capture_stdout=True, capture_stderr=True,
                                             check=False, env=client_env())
        assert missing.returncode == 78  # CURLE_REMOTE_FILE_NOT_FOUND (550)
    assert all(files.closed for files in server.sessions)
    ok = [t for t in server.transfers if t["result"] == "ok"]
    assert {t["mode"] for t in ok} == {"passive", "active"}


# ---------------------------------------------------------------- lftp

async def test_lftp_get_put_mirror_and_listings(root: Path, tmp_path: Path) -> None:
    lftp = servers.require_tool("lftp")
    local = tmp_path / "local"
    (local / "tree" / "sub").mkdir(parents=True)
    (local / "tree" / "a.bin").write_bytes(servers.random_bytes(200_000, seed=3))
    (local / "tree" / "sub" / "b.txt").write_bytes(b"bee\n")
    async with front_server(root) as server:
        for settings in (["set ftp:passive-mode on", "set ftp:prefer-epsv no"],
                         ["set ftp:passive-mode on", "set ftp:prefer-epsv yes"],
                         ["set ftp:passive-mode off"]):
            script = "; ".join([
                "set net:timeout 20", "set net:max-retries 1", "set cmd:fail-exit yes",
                "set xfer:clobber on", "set ftp:ssl-allow no", *settings,
                f"open -u {USER},{PASSWORD} ftp://{server.host}:{server.port}",
                f"get big.bin -o {local}/big.bin",
                f"put {local}/big.bin -o uploaded.bin",
                f"mirror pub {local}/mirrored",
                f"mirror -R {local}/tree tree",
                f"cls -l --sort=name > {local}/cls.txt",
                f"ls > {local}/ls.txt",
                "rm uploaded.bin",
                "rm -r tree",
            ])
            await run([lftp, "-c", script], cwd=tmp_path)
            assert sha(local / "big.bin") == sha(root / "big.bin")
            assert sha(local / "mirrored" / "deep" / "two.bin") == sha(root / "pub" / "deep" / "two.bin")
            assert (local / "mirrored" / "one.txt").read_bytes() == b"one\n"
            assert not (root / "uploaded.bin").exists() and not (root / "tree").exists()
            cls = (local / "cls.txt").read_text()
            assert re.search(rf"(?m)^-\S+ +.*{BIG} .* big\.bin$", cls), cls
            assert re.search(r"(?m)^d\S+ .* pub/?$", cls), cls
            ls = (local / "ls.txt").read_text()
            assert re.search(rf"(?m)^-rw\S+ +1 .* {BIG} \w{{3}} \d\d [\d:]{{4,5}} big\.bin$", ls), ls
        # lftp's put of the mirror tree: check what arrived, once more and kept
        script = "; ".join([
            "set net:timeout 20", "set net:max-retries 1", "set cmd:fail-exit yes",
            "set ftp:ssl-allow no",
            f"open -u {USER},{PASSWORD} ftp://{server.host}:{server.port}",
            f"mirror -R {local}/tree tree"])
        await run([lftp, "-c", script], cwd=tmp_path)
    assert sha(root / "tree" / "a.bin") == sha(local / "tree" / "a.bin")
    assert (root / "tree" / "sub" / "b.txt").read_bytes() == b"bee\n"
    assert all(files.closed and files.open_writes == 0 for files in server.sessions)
