"""``python -m ftptrio --sftp-server``: unchanged FTP clients served from the SFTP of a
real OpenSSH sshd (``Subsystem sftp internal-sftp``, password logins of a throwaway
local user). curl (EPSV, PASV, active), lftp (mirror both ways, cls), wget and every
command of ftplib move files checked by sha256; permissions are the SSH server's
(550); a wrong password is 530; ``--sftp-login own`` only on loopback and only for the
SSH user; an SSH connection dropped mid-transfer breaks that session only; an SSH server
without SFTP falls back to FTP forwarding (``--sftp-fallback``).

Each FTP session's files are in a fresh directory of the user's home (the FTP login
directory is the SFTP one, the home): ``remote_dir`` below is that directory's name.
"""

from __future__ import annotations

import datetime
import ftplib
import io
import os
import posixpath
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
import trio

from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

CASE_TIMEOUT = 60
READY = re.compile(r"ready: FTP clients connect to ([\d.]+):(\d+)")
#: a file whose modification time MDTM must report
MDTM_TIME = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------- ftptrio --sftp-server
@dataclass
class Front:
    """``python -m ftptrio -v --sftp-server 127.0.0.1:0 ...`` as a subprocess."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sockets(self) -> int:
        """Open sockets of the ftptrio process."""
        count = 0
        for fd in os.listdir(f"/proc/{self.process.pid}/fd"):
            try:
                count += os.readlink(f"/proc/{self.process.pid}/fd/{fd}").startswith("socket:")
            except OSError:
                pass
        return count

    def stop(self) -> int | None:
        """SIGTERM (then SIGKILL), the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                servers.stop_process(self.process)
                return None
        return self.process.returncode


def ftptrio_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ftptrio", *args]


def ftptrio_env() -> dict[str, str]:
    """This test run's ftptrio (its sys.path) in the subprocess."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def start_front(workdir: Path, sshd: servers.OpenSSHServer, *extra: str,
                destination: str | None = None, known_hosts: str | None = None) -> Front:
    """ftptrio --sftp-server on an OS-picked 127.0.0.1 port towards ``sshd`` (its
    address as the destination unless given), once it logs that it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"ftptrio-sftp-{uuid.uuid4().hex[:8]}.log"
    args = ftptrio_command("-v", "--sftp-server", "127.0.0.1:0", "-p", str(sshd.port),
                           "-o", f"UserKnownHostsFile={known_hosts or sshd.known_hosts}",
                           *extra, destination or sshd.host)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   env=ftptrio_env(), start_new_session=True)
    front = Front(process, "", 0, log_path)
    deadline = time.monotonic() + 30
    while not (found := READY.search(front.log())):
        if process.poll() is not None or time.monotonic() > deadline:
            front.stop()
            raise AssertionError(f"ftptrio --sftp-server did not start "
                                 f"({process.returncode}):\n{front.log()[-3000:]}")
        time.sleep(0.05)
    front.host, front.port = found.group(1), int(found.group(2))
    return front


@pytest.fixture(scope="module")
def front(openssh_sftp, tmp_path_factory) -> Iterator[Front]:
    """ftptrio --sftp-server with the default --sftp-login ftp, for the tests of this
    module that need nothing else; it must exit 0 on SIGTERM at the end."""
    front = start_front(tmp_path_factory.mktemp("sftp-front"), openssh_sftp)
    try:
        yield front
    finally:
        code = front.stop()
    assert code == 0, front.log()[-3000:]


@dataclass
class Files:
    """A fresh directory of a user's home with the small test files, as an FTPServer
    (``root``: that directory, for clients.exercise) behind a Front."""

    ftp: servers.FTPServer
    remote_dir: str

    @property
    def root(self) -> Path:
        return Path(self.ftp.root)

    def target(self) -> clients.Target:
        return clients.Target(self.ftp.host, self.ftp.port, self.ftp.user, self.ftp.password)


@pytest.fixture
def make_files() -> Iterator[Callable[[Front, servers.SystemUser], Files]]:
    made: list[Path] = []

    def make(front: Front, user: servers.SystemUser) -> Files:
        directory = user.make_dir("sftp-test")
        made.append(directory)
        servers.populate_data_dir(directory, small_only=True)
        user.give(directory)
        ftp = servers.FTPServer(host=front.host, port=front.port, user=user.name,
                                password=user.password, root=str(directory),
                                process=front.process, name="ftptrio --sftp-server")
        return Files(ftp, directory.name)

    yield make
    for directory in made:
        shutil.rmtree(directory, ignore_errors=True)


def user_processes(sshd: servers.OpenSSHServer, uid: int) -> list[int]:
    """The sshd processes running as ``uid`` (of each SSH connection: the unprivileged
    child and its internal-sftp): descendants of the listener (each connection's sshd
    makes a session of its own: not in the listener's process group) owned by ``uid``."""
    parent: dict[int, int] = {}
    owner: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        uid_line = re.search(r"^Uid:\s+(\d+)", status, re.M)
        parent[int(entry)] = int(stat[1])
        owner[int(entry)] = int(uid_line.group(1)) if uid_line else -1

    def descends(pid: int) -> bool:
        for _ in range(16):
            pid = parent.get(pid, 0)
            if pid == sshd.process.pid:
                return True
            if pid <= 1:
                return False
        return False

    return [pid for pid in parent if owner[pid] == uid and descends(pid)]


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def login(front: Front, user: str, password: str) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=clients.CLIENT_TIMEOUT)
    ftp.connect(front.host, front.port)
    try:
        ftp.login(user, password)
    except BaseException:
        ftp.close()
        raise
    return ftp


def in_thread(fn: Callable[[], object]):
    """Run blocking client code in a worker thread, with the case's time limit."""
    async def run() -> object:
        with trio.fail_after(CASE_TIMEOUT):
            return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)
    return run()


# ---------------------------------------------------------------- clients
@pytest.mark.parametrize("mode", ["EPSV", "PASV", "EPRT"])
async def test_curl(front, sftp_user, make_files, mode, tmp_path):
    """curl: downloads, an upload (-T), a listing and a resumed download (-C -); passive
    with EPSV, with PASV (--disable-epsv), active with -P -."""
    files = make_files(front, sftp_user)
    with trio.fail_after(CASE_TIMEOUT):
        await clients.exercise(clients.Curl(mode), files.target(), files.ftp, tmp_path,
                               remote_dir=files.remote_dir)


async def test_curl_large_file_and_resumed_upload(front, sftp_user, make_files, tmp_path):
    """48 MiB down and up (the pipelined SFTP reads and writes, many blocks of each),
    and an upload resumed with -C - (SIZE, then APPE of the rest)."""
    files = make_files(front, sftp_user)
    target = files.target()
    curl = clients.Curl("EPSV")
    big = tmp_path / "large.bin"
    big.write_bytes(os.urandom(48 << 20) + b"tail")
    (files.root / "large.bin").write_bytes(big.read_bytes())
    sftp_user.give(files.root / "large.bin")
    with trio.fail_after(CASE_TIMEOUT):
        down = tmp_path / "down.bin"
        await curl.download(target, f"{files.remote_dir}/large.bin", down)
        assert servers.sha256_file(down) == servers.sha256_file(big)
        await curl.upload(target, big, f"{files.remote_dir}/upload/large-up.bin")
        assert servers.sha256_file(files.root / "upload" / "large-up.bin") == \
            servers.sha256_file(big)
        partial = files.root / "upload" / "resumed.bin"
        partial.write_bytes(big.read_bytes()[:5_000_003])
        sftp_user.give(partial)
        _out, transcript = await curl._run(
            "resumed upload", "-C", "-", "--upload-file", str(big),
            target.url(f"{files.remote_dir}/upload/resumed.bin"))
    curl.assert_sent(transcript, "APPE", "resumed upload")
    assert servers.sha256_file(partial) == servers.sha256_file(big)


async def test_lftp_mirror_both_ways_and_cls(front, sftp_user, make_files, tmp_path):
    files = make_files(front, sftp_user)
    lftp = clients.Lftp("EPSV")
    target = files.target()
    with trio.fail_after(2 * CASE_TIMEOUT):
        await clients.exercise(lftp, target, files.ftp, tmp_path / "exercise",
                               remote_dir=files.remote_dir)
        # mirror down: the whole directory, sub-directory included
        down = tmp_path / "mirrored"
        await lftp._run("mirror", target, f"mirror --parallel=4 {files.remote_dir} {down}")
        for path in files.root.rglob("*"):
            if path.is_file():
                copy = down / path.relative_to(files.root)
                assert servers.sha256_file(copy) == servers.sha256_file(path), path
        # mirror up (-R): a new tree with a sub-directory
        source = tmp_path / "source"
        (source / "sub").mkdir(parents=True)
        for n, size in enumerate((0, 1, 70_000, 1 << 20)):
            (source / ("sub" if n % 2 else "") / f"m{n}.bin").write_bytes(os.urandom(size))
        await lftp._run("mirror -R", target,
                        f"mirror -R {source} {files.remote_dir}/mirrored-up")
        uploaded = files.root / "mirrored-up"
        for path in source.rglob("*"):
            if path.is_file():
                copy = uploaded / path.relative_to(source)
                assert servers.sha256_file(copy) == servers.sha256_file(path), path
        listing = tmp_path / "cls.txt"  # apart from lftp's debug output
        await lftp._run("cls", target, f"cls -l {files.remote_dir}/ > {listing}")
    out = listing.read_text()
    names = {line.split(None, 8)[-1].rstrip("/").rsplit("/", 1)[-1]
             for line in out.splitlines() if line.strip()}
    assert {"one_mib.bin", "empty.bin", "upload", "mirrored-up"} <= names, out
    # cls -l: mode and size from the MLSD facts (no owner: UNIX.owner is not among them)
    assert re.search(r"^-[rwx-]{9}\s.*\s1048576\s.*/one_mib\.bin$", out, re.M), out


async def test_wget_download_and_raw_listing(front, sftp_user, make_files, tmp_path):
    files = make_files(front, sftp_user)
    wget = clients.Wget("PASV")
    target = files.target()
    with trio.fail_after(CASE_TIMEOUT):
        await clients.exercise(wget, target, files.ftp, tmp_path / "exercise",
                               remote_dir=files.remote_dir)
        # --no-remove-listing keeps the LIST output wget parsed (.listing)
        page = tmp_path / "index.html"
        await wget._run("listing", tmp_path, "--no-remove-listing", "-O", str(page),
                        target.url(files.remote_dir + "/"))
    raw = (tmp_path / ".listing").read_text()
    assert re.search(r"^-[rwx-]{9}\s+\d+\s+\S+\s+\S+\s+1048576\s+\w{3}\s+\d+\s+[\d:]+\s+"
                     r"one_mib\.bin\r?$", raw, re.M), raw
    assert re.search(r"^d[rwx-]{9}\s.*\supload\r?$", raw, re.M), raw
    # wget understood it: the index names the files with their sizes
    html = page.read_text(errors="replace")
    assert re.search(r">one_mib\.bin</a>\s+\(1048576 bytes\)", html), html[:2000]


if shutil.which("tnftp"):  # may be absent (not a Debian default): then not tested
    async def test_tnftp(front, sftp_user, make_files, tmp_path):
        files = make_files(front, sftp_user)
        target = files.target()
        local = tmp_path / "one.bin"
        script = (f"open {target.host} {target.port}\nuser {target.user} {target.password}\n"
                  f"binary\ncd {files.remote_dir}\nget one_mib.bin {local}\n"
                  f"put {local} upload/tnftp.bin\nls\nquit\n")
        with trio.fail_after(CASE_TIMEOUT):
            result = await trio.run_process(["tnftp", "-n", "-p"], stdin=script.encode(),
                                            capture_stdout=True, capture_stderr=True,
                                            check=False, env=clients.client_env())
        out = result.stdout.decode(errors="replace")
        assert result.returncode == 0, out + result.stderr.decode(errors="replace")
        assert servers.sha256_file(local) == servers.sha256_file(files.root / "one_mib.bin")
        assert servers.sha256_file(files.root / "upload" / "tnftp.bin") == \
            servers.sha256_file(local)
        assert "with space.txt" in out


# ---------------------------------------------------------------- every command (ftplib)
def _epsv_data(ftp: ftplib.FTP, command: str) -> bytes:
    """``command`` over a data connection opened with EPSV (ftplib sends PASV on
    IPv4); everything the server sent on it."""
    reply = ftp.sendcmd("EPSV")
    port = int(reply.rsplit("|", 2)[-2])  # 229 Entering Extended Passive Mode (|||port|)
    with socket.create_connection((ftp.host, port), timeout=clients.CLIENT_TIMEOUT) as data:
        assert ftp.sendcmd(command)[:3] in ("125", "150")
        chunks = []
        while chunk := data.recv(65536):
            chunks.append(chunk)
    assert ftp.voidresp().startswith("226")
    return b"".join(chunks)


def _eprt_data(ftp: ftplib.FTP, command: str) -> bytes:
    """``command`` over an active data connection announced with EPRT."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(clients.CLIENT_TIMEOUT)
        assert ftp.sendeprt("127.0.0.1", listener.getsockname()[1]).startswith("200")
        assert ftp.sendcmd(command)[:3] in ("125", "150")
        data, _ = listener.accept()
    with data:
        chunks = []
        while chunk := data.recv(65536):
            chunks.append(chunk)
    assert ftp.voidresp().startswith("226")
    return b"".join(chunks)


def _every_command(ftp: ftplib.FTP, files: Files, user: servers.SystemUser) -> None:
    """Every command on a logged-in session whose login directory has ``files``."""
    root, rel = files.root, files.remote_dir
    one_mib = (root / "one_mib.bin").read_bytes()
    big = os.urandom(8 << 20)
    (root / "big.bin").write_bytes(big)
    user.give(root / "big.bin")
    stamp = MDTM_TIME.timestamp()
    os.utime(root / "one_mib.bin", (stamp, stamp))

    assert ftp.sendcmd("SYST").startswith("215 ")
    feat = ftp.sendcmd("FEAT")
    assert feat.startswith("211")
    for feature in ("UTF8", "MLST", "SIZE", "MDTM", "REST STREAM", "EPSV"):
        assert re.search(rf"^ {feature}\b", feat, re.M), (feature, feat)
    assert ftp.sendcmd("OPTS UTF8 ON").startswith("200")
    home = ftp.pwd()
    assert ftp.cwd(rel).startswith("250")
    assert ftp.pwd() == posixpath.join(home, rel)
    assert ftp.sendcmd("CDUP")[:3] in ("200", "250")
    assert ftp.pwd() == home
    ftp.cwd(rel)
    for command in ("TYPE A", "TYPE I", "MODE S", "STRU F", "NOOP"):
        assert ftp.sendcmd(command).startswith("200"), command

    # the four ways to a data connection, each carrying a RETR
    ftp.set_pasv(True)  # PASV
    got = bytearray()
    ftp.retrbinary("RETR one_mib.bin", got.extend)
    assert bytes(got) == one_mib
    assert _epsv_data(ftp, "RETR one_mib.bin") == one_mib
    ftp.set_pasv(False)  # PORT
    got = bytearray()
    ftp.retrbinary("RETR one_mib.bin", got.extend)
    assert bytes(got) == one_mib
    assert _eprt_data(ftp, "RETR big.bin") == big
    ftp.set_pasv(True)

    # listings
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    assert any(re.match(r"-[rwx-]{9}\s+\d+\s+\S+\s+\S+\s+1048576\s.*one_mib\.bin$", line)
               for line in lines), lines
    assert any(line.startswith("d") and line.endswith(" upload") for line in lines), lines
    assert set(ftp.nlst()) >= {"one_mib.bin", "empty.bin", "with space.txt", "upload"}
    facts = dict(ftp.mlsd(facts=["type", "size", "modify"]))
    assert facts["one_mib.bin"]["type"] == "file", facts
    assert facts["one_mib.bin"]["size"] == "1048576", facts
    assert facts["one_mib.bin"]["modify"].startswith("20200102030405"), facts
    assert facts["upload"]["type"] == "dir", facts
    mlst = ftp.sendcmd("MLST one_mib.bin")
    assert mlst.startswith("250") and re.search(r"size=1048576;", mlst, re.I), mlst
    ftp.voidcmd("TYPE I")  # retrlines (LIST, MLSD) left TYPE A
    assert ftp.size("one_mib.bin") == len(one_mib)
    assert ftp.sendcmd("MDTM one_mib.bin") == "213 20200102030405"

    # uploads: STOR, APPE, STOU, and REST for a download
    payload = os.urandom(300_001)
    ftp.storbinary("STOR upload/stored.bin", io.BytesIO(payload))
    assert (root / "upload" / "stored.bin").read_bytes() == payload
    ftp.storbinary("APPE upload/stored.bin", io.BytesIO(b"appended"))
    assert (root / "upload" / "stored.bin").read_bytes() == payload + b"appended"
    before = set(os.listdir(root / "upload"))
    ftp.cwd("upload")
    conn, _size = ftp.ntransfercmd("STOU")
    with conn:
        conn.sendall(b"unique")
    assert ftp.voidresp().startswith("226")
    ftp.cwd("..")
    new = set(os.listdir(root / "upload")) - before
    assert len(new) == 1 and (root / "upload" / new.pop()).read_bytes() == b"unique"
    got = bytearray()
    ftp.retrbinary("RETR one_mib.bin", got.extend, rest=300_001)
    assert bytes(got) == one_mib[300_001:]

    # ASCII mode converts line ends: CRLF -> LF on the way in, LF -> CRLF out
    ftp.storlines("STOR upload/text.txt", io.BytesIO(b"line one\r\nline two\r\n"))
    assert (root / "upload" / "text.txt").read_bytes() == b"line one\nline two\n"
    ftp.sendcmd("TYPE A")
    assert _epsv_data(ftp, "RETR upload/text.txt") == b"line one\r\nline two\r\n"
    ftp.sendcmd("TYPE I")

    # the namespace: MKD, RNFR/RNTO, DELE, RMD
    assert ftp.mkd("made") in ("made", posixpath.join(home, rel, "made"))
    assert (root / "made").is_dir()
    ftp.rename("upload/stored.bin", "made/renamed.bin")
    assert (root / "made" / "renamed.bin").read_bytes() == payload + b"appended"
    assert not (root / "upload" / "stored.bin").exists()
    assert ftp.delete("made/renamed.bin").startswith("250")
    assert ftp.rmd("made").startswith("250")
    assert not (root / "made").exists()

    # ABOR during a download: the transfer stops, the session goes on
    conn, _size = ftp.ntransfercmd("RETR big.bin")
    assert conn.recv(65536)
    reply = ftp.abort()
    conn.close()
    if reply.startswith("426"):  # the aborted transfer's reply, then ABOR's own
        assert ftp.getresp()[:3] in ("225", "226")
    else:
        assert reply[:3] in ("225", "226"), reply
    assert ftp.voidcmd("NOOP").startswith("200")
    got = bytearray()
    ftp.retrbinary("RETR empty.bin", got.extend)
    assert got == b""
    assert ftp.quit().startswith("221")


async def test_ftplib_every_command(front, sftp_user, make_files):
    files = make_files(front, sftp_user)

    def session() -> None:
        ftp = ftplib.FTP(timeout=clients.CLIENT_TIMEOUT)
        try:
            assert ftp.connect(front.host, front.port).startswith("220")
            assert ftp.sendcmd(f"USER {sftp_user.name}").startswith("331")
            assert ftp.sendcmd(f"PASS {sftp_user.password}").startswith("230")
            # the login directory is the SFTP one: the user's home
            assert ftp.pwd() == sftp_user.home
            _every_command(ftp, files, sftp_user)
        finally:
            ftp.close()

    await in_thread(session)


# ---------------------------------------------------------------- refusals
async def test_data_connections_are_the_clients_own(front, sftp_user, make_files):
    """PORT/EPRT naming another address than the client's are refused; a connection to
    the passive port from another address is closed without data; the client's own
    data connection then carries the file."""
    files = make_files(front, sftp_user)

    def session() -> tuple[list[str], bytes, bytes]:
        ftp = login(front, sftp_user.name, sftp_user.password)
        try:
            refused = []
            for command in ("PORT 127,0,0,2,117,48", "EPRT |1|127.0.0.2|30000|",
                            "PORT 127,0,0,1,0,21"):
                try:
                    refused.append(ftp.sendcmd(command))
                except ftplib.error_perm as exc:
                    refused.append(str(exc))
            ftp.voidcmd("TYPE I")
            port = int(ftp.sendcmd("EPSV").rsplit("|", 2)[-2])
            with socket.socket() as foreign:
                foreign.settimeout(clients.CLIENT_TIMEOUT)
                foreign.bind(("127.0.0.2", 0))
                foreign.connect((front.host, port))
                foreign_got = foreign.recv(100)  # closed at once: b""
            with socket.create_connection((front.host, port),
                                          timeout=clients.CLIENT_TIMEOUT) as data:
                assert ftp.sendcmd(f"RETR {files.remote_dir}/one_mib.bin")[:3] in ("125", "150")
                chunks = []
                while chunk := data.recv(65536):
                    chunks.append(chunk)
            assert ftp.voidresp().startswith("226")
            ftp.quit()
            return refused, foreign_got, b"".join(chunks)
        finally:
            ftp.close()

    refused, foreign_got, got = await in_thread(session)
    assert [reply[:1] for reply in refused] == ["5"] * 3, refused
    assert foreign_got == b""
    assert got == (files.root / "one_mib.bin").read_bytes()
    assert "not the client's address" in front.log()


async def test_permission_errors_are_550(front, sftp_readonly_user):
    user = sftp_readonly_user
    ro = f"{servers.READONLY_DIR}/{servers.READONLY_FILE}"

    def session() -> list[str]:
        replies = []
        ftp = login(front, user.name, user.password)
        try:
            for action in (lambda: ftp.storbinary(f"STOR {servers.READONLY_DIR}/new.bin",
                                                  io.BytesIO(b"x")),
                           lambda: ftp.retrbinary(f"RETR {servers.UNREADABLE_FILE}",
                                                  lambda _b: None),
                           lambda: ftp.delete(ro),
                           lambda: ftp.mkd(f"{servers.READONLY_DIR}/newdir"),
                           lambda: ftp.rename(ro, f"{servers.READONLY_DIR}/moved.txt"),
                           lambda: ftp.retrbinary("RETR no-such-file.bin", lambda _b: None),
                           lambda: ftp.cwd("no-such-dir")):
                try:
                    action()
                except ftplib.error_perm as exc:
                    replies.append(str(exc)[:3])
                else:
                    replies.append("accepted")
            # still usable after the refusals
            got = bytearray()
            ftp.retrbinary(f"RETR {ro}", got.extend)
            assert got.startswith(b"a file")
            ftp.quit()
        finally:
            ftp.close()
        return replies

    assert await in_thread(session) == ["550"] * 7
    assert sorted(os.listdir(Path(user.home) / servers.READONLY_DIR)) == [servers.READONLY_FILE]


async def test_store_onto_a_directory_is_a_permanent_error(front, sftp_user, make_files):
    """STOR naming a directory: a 5xx (vsftpd: 553 Could not create file), not 451, which
    clients take as transient and retry. OpenSSH's SFTP (version 3) answers the open
    with the generic SSH_FX_FAILURE; the directory is there to be seen with a stat."""
    files = make_files(front, sftp_user)

    def session() -> str:
        ftp = login(front, sftp_user.name, sftp_user.password)
        try:
            try:
                ftp.storbinary(f"STOR {files.remote_dir}/upload", io.BytesIO(b"x"))
            except ftplib.Error as exc:
                return str(exc)
            return "accepted"
        finally:
            ftp.close()

    reply = await in_thread(session)
    assert reply[:3] in ("550", "553"), reply
    assert (files.root / "upload").is_dir()


async def test_wrong_password_is_530(front, sftp_user):
    def session() -> tuple[str, str]:
        ftp = ftplib.FTP(timeout=clients.CLIENT_TIMEOUT)
        try:
            ftp.connect(front.host, front.port)
            try:
                ftp.login(sftp_user.name, "not-the-password")
            except ftplib.error_perm as exc:
                refused = str(exc)
            else:
                raise AssertionError("a wrong password logged in")
        finally:
            ftp.close()
        ftp = login(front, sftp_user.name, sftp_user.password)
        try:
            return refused, ftp.pwd()
        finally:
            ftp.close()

    refused, pwd = await in_thread(session)
    assert refused.startswith("530"), refused
    assert pwd == sftp_user.home


def test_own_login_needs_a_loopback_listener(openssh_sftp):
    result = subprocess.run(
        ftptrio_command("--sftp-server", "0.0.0.0:0", "--sftp-login", "own",
                        "-p", str(openssh_sftp.port), "-i", openssh_sftp.client_key,
                        "-o", f"UserKnownHostsFile={openssh_sftp.known_hosts}",
                        f"{openssh_sftp.username}@{openssh_sftp.host}"),
        capture_output=True, text=True, timeout=60, env=ftptrio_env(),
        stdin=subprocess.DEVNULL)
    assert result.returncode == 2, (result.returncode, result.stderr)
    # ftptrio's usage errors: "ftptrio: <what is wrong>", exit status 2
    assert result.stderr.startswith("ftptrio: ") and "loopback" in result.stderr, result.stderr


async def test_own_login_serves_only_the_ssh_user(openssh_sftp, sftp_user, make_files,
                                                  tmp_path):
    front = await trio.to_thread.run_sync(
        lambda: start_front(tmp_path, openssh_sftp, "--sftp-login", "own",
                            "-i", openssh_sftp.client_key,
                            destination=f"{sftp_user.name}@{openssh_sftp.host}"))
    try:
        files = make_files(front, sftp_user)

        def sessions() -> str:
            ftp = login(front, sftp_user.name, "the password is ignored")
            try:
                got = bytearray()
                ftp.retrbinary(f"RETR {files.remote_dir}/one_mib.bin", got.extend)
                assert bytes(got) == (files.root / "one_mib.bin").read_bytes()
                ftp.quit()
            finally:
                ftp.close()
            try:
                login(front, "someone-else", "x").close()
            except ftplib.error_perm as exc:
                return str(exc)
            raise AssertionError("another user than the SSH user logged in")

        assert (await in_thread(sessions)).startswith("530")
    finally:
        assert front.stop() == 0, front.log()[-3000:]


# ---------------------------------------------------------------- long links
async def test_sftp_channel_window_covers_the_pipelined_reads(front, openssh_sftp, sftp_user,
                                                             make_files):
    """The SFTP channel's receive window holds what a transfer keeps in flight, twice
    (asyncssh adjusts the window once half of it is consumed). With asyncssh's default
    2 MiB window the 16 x 256 KiB pipelined reads wait for window adjusts: at 50 ms RTT
    (bench/sftp_server.py) a download ran at 19.8 MB/s, 0.56x OpenSSH sftp (35.5); a
    bare asyncssh SFTP client at 50 ms read 18.6 MB/s with a 2 MiB window, 35.6 with
    8 MiB, 62.4 with 16 MiB and 32 x 256 KiB in flight. sshd logs each channel's window
    at LogLevel DEBUG1 ("server_input_channel_open: ctype session ... win N")."""
    from ftptrio._ssh._sftp import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_REQUESTS

    files = make_files(front, sftp_user)
    log_start = len(openssh_sftp.log())

    def session() -> None:
        ftp = login(front, sftp_user.name, sftp_user.password)
        try:
            ftp.retrbinary(f"RETR {files.remote_dir}/one_mib.bin", lambda _b: None)
            ftp.quit()
        finally:
            ftp.close()

    await in_thread(session)
    windows = [int(w) for w in re.findall(r"ctype session rchan \d+ win (\d+)",
                                          openssh_sftp.log()[log_start:])]
    assert windows, openssh_sftp.log()[log_start:][-2000:]
    in_flight = DEFAULT_MAX_REQUESTS * DEFAULT_BLOCK_SIZE
    assert min(windows) >= 2 * in_flight, (
        f"SFTP channel window {min(windows)} bytes: less than twice the {in_flight} bytes "
        f"of pipelined reads in flight")


# ---------------------------------------------------------------- stalled, dropped, aborted
def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_stalled_dropped_and_aborted_transfers(front, sftp_user, make_files):
    """A client that stops reading a 128 MiB download holds ftptrio's memory to a bound
    (back-pressure into the pipelined SFTP reads); dropping that data connection is a 426
    and the session goes on; ABOR during an upload is 426 then 226."""
    files = make_files(front, sftp_user)
    (files.root / "big.bin").write_bytes(os.urandom(128 << 20))
    sftp_user.give(files.root / "big.bin")

    def session() -> tuple[int, str, str, str]:
        ftp = login(front, sftp_user.name, sftp_user.password)
        try:
            ftp.voidcmd("TYPE I")
            before = _rss_kib(front.process.pid)
            conn, _size = ftp.ntransfercmd(f"RETR {files.remote_dir}/big.bin")
            assert conn.recv(1000)
            time.sleep(2)  # the stalled reader: whatever ftptrio buffers, it holds now
            grown = _rss_kib(front.process.pid) - before
            conn.close()
            try:
                dropped = ftp.getresp()
            except ftplib.error_temp as exc:
                dropped = str(exc)
            assert ftp.voidcmd("NOOP").startswith("200")
            conn, _size = ftp.ntransfercmd(f"STOR {files.remote_dir}/upload/aborted.bin")
            conn.sendall(os.urandom(4 << 20))
            aborted = ftp.abort()
            conn.close()
            after_abort = ftp.getresp() if aborted.startswith("426") else aborted
            assert ftp.voidcmd("NOOP").startswith("200")
            ftp.quit()
            return grown, dropped, aborted, after_abort
        finally:
            ftp.close()

    grown, dropped, aborted, after_abort = await in_thread(session)
    assert grown < 48 << 10, f"ftptrio grew by {grown} KiB for one stalled download"
    assert dropped.startswith("426"), dropped
    assert aborted[:3] in ("426", "225", "226") and after_abort[:3] in ("225", "226"), \
        (aborted, after_abort)


# ---------------------------------------------------------------- SSH lost mid-transfer
async def test_ssh_dropped_mid_transfer(front, openssh_sftp, sftp_user, make_files):
    """Killing the sshd process that serves the session's SFTP during a download: the
    client gets 421 or a broken transfer, ftptrio logs it and serves the next session,
    and nothing is left over (sshd session processes, ftptrio's sockets)."""
    files = make_files(front, sftp_user)
    big = os.urandom(32 << 20)
    (files.root / "big.bin").write_bytes(big)
    sftp_user.give(files.root / "big.bin")
    assert wait_until(lambda: not user_processes(openssh_sftp, sftp_user.uid))
    idle_sockets = front.sockets()
    log_before = len(front.log())

    def dropped() -> tuple[int, str]:
        ftp = login(front, sftp_user.name, sftp_user.password)
        try:
            ftp.voidcmd("TYPE I")
            conn, _size = ftp.ntransfercmd(f"RETR {files.remote_dir}/big.bin")
            received = len(conn.recv(65536))
            # the transfer stalls on this client's full buffers: drop its SSH connection
            victims = user_processes(openssh_sftp, sftp_user.uid)
            assert victims, "no sshd session process of the user"
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            try:
                while chunk := conn.recv(1 << 20):
                    received += len(chunk)
            except OSError:
                pass
            conn.close()
            try:
                reply = ftp.getresp()
            except (ftplib.Error, EOFError, OSError) as exc:
                reply = str(exc)
            return received, reply
        finally:
            ftp.close()

    received, reply = await in_thread(dropped)
    assert received < len(big) or reply[:3] in ("421", "426", "451"), (received, reply)
    assert reply[:3] in ("421", "426", "451"), reply

    def next_session() -> bytes:
        ftp = login(front, sftp_user.name, sftp_user.password)
        try:
            got = bytearray()
            ftp.retrbinary(f"RETR {files.remote_dir}/one_mib.bin", got.extend)
            ftp.quit()
            return bytes(got)
        finally:
            ftp.close()

    assert await in_thread(next_session) == (files.root / "one_mib.bin").read_bytes()
    new_log = front.log()[log_before:]
    assert re.search(r"lost|closed|disconnect|reset", new_log, re.I), new_log
    assert front.process.poll() is None
    assert await trio.to_thread.run_sync(
        wait_until, lambda: not user_processes(openssh_sftp, sftp_user.uid)), \
        "sshd session processes left over"
    assert await trio.to_thread.run_sync(
        wait_until, lambda: front.sockets() <= idle_sockets), \
        f"ftptrio holds {front.sockets()} sockets, {idle_sockets} when idle"


# ---------------------------------------------------------------- fallback, destinations
async def test_fallback_to_ftp_forwarding(openssh_no_sftp_passwords, vsftpd_local, sftp_user,
                                          tmp_path):
    """An SSH server without SFTP: with --sftp-fallback ftp:PORT the session is
    forwarded to the FTP server on the SSH host, logged; without it, 530."""
    fallback = await trio.to_thread.run_sync(
        lambda: start_front(tmp_path, openssh_no_sftp_passwords,
                            "--sftp-fallback", f"ftp:{vsftpd_local.port}"))
    plain = await trio.to_thread.run_sync(lambda: start_front(tmp_path, openssh_no_sftp_passwords))
    try:
        payload = os.urandom(400_000)
        name = f"{vsftpd_local.upload_dir}/fallback-{uuid.uuid4().hex}.bin"

        def sessions() -> str:
            ftp = login(fallback, sftp_user.name, sftp_user.password)
            try:
                got = bytearray()
                ftp.retrbinary("RETR one_mib.bin", got.extend)
                assert bytes(got) == vsftpd_local.path("one_mib.bin").read_bytes()
                ftp.storbinary(f"STOR {name}", io.BytesIO(payload))
                assert "one_mib.bin" in ftp.nlst()
                ftp.quit()
            finally:
                ftp.close()
            try:
                login(plain, sftp_user.name, sftp_user.password).close()
            except ftplib.error_perm as exc:
                return str(exc)
            raise AssertionError("logged in to an SSH server without SFTP, no fallback")

        assert (await in_thread(sessions)).startswith("530")
        assert vsftpd_local.path(name).read_bytes() == payload
        assert "--sftp-fallback" in fallback.log(), fallback.log()[-3000:]
        assert f"USER {sftp_user.name}" in vsftpd_local.log()
    finally:
        assert fallback.stop() == 0, fallback.log()[-3000:]
        assert plain.stop() == 0, plain.log()[-3000:]


async def test_per_session_destination(openssh_sftp, openssh_no_sftp_passwords, sftp_user,
                                       make_files, tmp_path):
    """USER user@host:port names the SSH server of the session, if --allow-destination
    allows it; another one gets 530."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(Path(openssh_sftp.known_hosts).read_text()
                           + Path(openssh_no_sftp_passwords.known_hosts).read_text())
    front = await trio.to_thread.run_sync(lambda: start_front(
        tmp_path, openssh_no_sftp_passwords, "--allow-destination",
        f"{openssh_sftp.host}:{openssh_sftp.port}", known_hosts=str(known_hosts)))
    try:
        files = make_files(front, sftp_user)
        other = servers.free_port()

        def sessions() -> str:
            ftp = login(front, f"{sftp_user.name}@{openssh_sftp.host}:{openssh_sftp.port}",
                        sftp_user.password)
            try:
                got = bytearray()
                ftp.retrbinary(f"RETR {files.remote_dir}/one_mib.bin", got.extend)
                assert bytes(got) == (files.root / "one_mib.bin").read_bytes()
                ftp.quit()
            finally:
                ftp.close()
            try:
                login(front, f"{sftp_user.name}@{openssh_sftp.host}:{other}",
                      sftp_user.password).close()
            except ftplib.error_perm as exc:
                return str(exc)
            raise AssertionError("a destination outside --allow-destination was served")

        assert (await in_thread(sessions)).startswith("530")
    finally:
        assert front.stop() == 0, front.log()[-3000:]
