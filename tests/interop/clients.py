"""Real FTP clients for the interop tests: curl, lftp, wget and Python ftplib.

Every client gets the same four operations (download, upload, listing, resume
of a partial download) and a *mode*, named after the command that negotiates
its data connections (``EPSV``, ``PASV``, ``EPRT``, ``PORT``).  Each operation
is a fresh client run (a fresh FTP session), with the client's own timeouts
set, and returns the client's transcript of the control dialogue so that a test
can check which commands were really sent (``assert_sent``).

External clients run with ``trio.run_process(..., capture_stdout=True,
capture_stderr=True, check=False)``; a non-zero exit fails the test with the
command line and the client's stderr.  ``netns`` runs them inside a network
namespace (``ip netns exec``).

``exercise()`` is the whole interop case used by the matrix, the netns and the
IPv6 tests; ``run_case()`` runs it through ftptrio embedded between a real sshd
and FTP server (``forwarder_config()``, the Config every interop test uses).
"""

from __future__ import annotations

import ftplib
import os
import re
import shlex
import uuid
from pathlib import Path, PurePosixPath
from typing import ClassVar
from urllib.parse import quote

import pytest
import trio

import ftptrio
from ftptrio.testing import servers

#: connect / idle timeout handed to every client (seconds)
CLIENT_TIMEOUT = 20
#: overall limit of one client run (curl --max-time; the 64 MiB file included)
CLIENT_MAX_TIME = 120
#: backstop around every client process, should its own timeouts not fire
PROCESS_DEADLINE = CLIENT_MAX_TIME + 30
#: local prefix kept before a resumed download (not a multiple of any buffer size)
RESUME_OFFSET = 300_001
RESUME_FILE = "one_mib.bin"
#: files every case downloads and checks
DOWNLOADS = ("one_mib.bin", servers.TEXT_FILE_NAME, "empty.bin")

_PROXY_VARS = {"ftp_proxy", "http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def client_env() -> dict[str, str]:
    """The environment of client processes: no proxies, C locale."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env["LC_ALL"] = "C"
    return env


class Target:
    """Where a client connects (ftptrio's listener) and how it logs in."""

    def __init__(self, host: str, port: int, user: str, password: str) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password

    @classmethod
    def for_server(cls, ftp: servers.FTPServer, host: str, port: int) -> "Target":
        return cls(host, port, ftp.user, ftp.password)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str, credentials: bool = True) -> str:
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@" if credentials else ""
        return f"ftp://{auth}{self.netloc}/{quote(path.lstrip('/'))}"


async def run_client(cmd: list[str], what: str, cwd: str | os.PathLike | None = None) -> tuple[str, str]:
    """Run one client process; fail the test with its stderr if it exits non-zero."""
    with trio.fail_after(PROCESS_DEADLINE):
        result = await trio.run_process(
            cmd, capture_stdout=True, capture_stderr=True, check=False, env=client_env(), cwd=cwd
        )
    out = result.stdout.decode(errors="replace")
    err = result.stderr.decode(errors="replace")
    if result.returncode != 0:
        pytest.fail(
            f"{what}: exited with {result.returncode}\ncommand: {shlex.join(cmd)}\n"
            f"--- stderr (tail) ---\n{err[-6000:]}\n--- stdout (tail) ---\n{out[-1500:]}",
            pytrace=False,
        )
    return out, err


class Client:
    """One FTP client program in one data-connection mode."""

    name: ClassVar[str]
    #: mode -> client-specific settings
    modes: ClassVar[dict[str, object]]
    #: ``None``, or why this client cannot upload (the matrix skips that step)
    no_upload_reason: ClassVar[str | None] = None
    #: how the client's transcript marks a command it sent
    sent_prefix: ClassVar[str] = "> "
    #: the tool that must be installed (``require_tool``)
    tool: ClassVar[str | None] = None

    def __init__(self, mode: str, netns: str | None = None) -> None:
        if mode not in self.modes:
            raise ValueError(f"{self.name} has no mode {mode!r}")
        self.mode = mode
        self.netns = netns
        self.path = servers.require_tool(self.tool) if self.tool else ""

    def command(self, *args: str) -> list[str]:
        return [*servers.netns_prefix(self.netns), self.path, *args]

    def sent(self, transcript: str, command: str) -> bool:
        """Did the client send ``command`` (e.g. ``"PASV"``, ``"REST 300001"``)?"""
        pattern = rf"(?m)^{re.escape(self.sent_prefix)}{re.escape(command)}\b"
        return re.search(pattern, transcript, flags=re.IGNORECASE) is not None

    def assert_sent(self, transcript: str, command: str, what: str) -> None:
        assert self.sent(transcript, command), (
            f"{self.name} {self.mode}: {what}: the client never sent {command!r}\n"
            f"--- transcript (tail) ---\n{transcript[-4000:]}"
        )

    async def download(self, target: Target, remote: str, local: Path) -> str:
        raise NotImplementedError

    async def upload(self, target: Target, local: Path, remote: str) -> str:
        raise NotImplementedError

    async def listing(self, target: Target, remote_dir: str, workdir: Path) -> tuple[str, str]:
        """(listing text, transcript)"""
        raise NotImplementedError

    async def resume(self, target: Target, remote: str, local: Path) -> str:
        """Complete a partial download: ``local`` exists, holds a prefix of
        ``remote`` and is named like it (wget derives the name from the URL)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- curl


class Curl(Client):
    name = "curl"
    tool = "curl"
    sent_prefix = "> "
    modes = {
        "EPSV": [],
        "PASV": ["--disable-epsv"],
        "EPRT": ["-P", "-"],
        "PORT": ["-P", "-", "--disable-eprt"],
    }

    def _base(self) -> list[str]:
        return self.command(
            "--silent", "--show-error",
            "--verbose",  # the control dialogue: transcript and failure message
            "--max-time", str(CLIENT_MAX_TIME),
            "--connect-timeout", str(CLIENT_TIMEOUT),
            "--noproxy", "*",
            "--no-ftp-skip-pasv-ip",  # honour the 227 address: a bad rewrite must show
            *self.modes[self.mode],  # type: ignore[misc]
        )

    async def _run(self, what: str, *args: str) -> tuple[str, str]:
        # curl 7.88 prints a harmless "sa_addr inet_ntop() failed with errno 97"
        # in active mode and may repeat it as the final error text; the verbose
        # dialogue above it shows what really went wrong.
        return await run_client([*self._base(), *args], f"curl {self.mode} {what}")

    async def download(self, target: Target, remote: str, local: Path) -> str:
        _out, err = await self._run(f"download {remote!r}", "--output", str(local), target.url(remote))
        if not local.exists():
            # curl creates no output file for a 0-byte download; the exit code was 0
            local.write_bytes(b"")
        return err

    async def upload(self, target: Target, local: Path, remote: str) -> str:
        return (await self._run(f"upload {remote!r}", "--upload-file", str(local), target.url(remote)))[1]

    async def listing(self, target: Target, remote_dir: str, workdir: Path) -> tuple[str, str]:
        path = remote_dir.strip("/")
        return await self._run("listing", target.url(path + "/" if path else ""))

    async def resume(self, target: Target, remote: str, local: Path) -> str:
        return (await self._run(f"resume {remote!r}", "-C", "-", "--output", str(local), target.url(remote)))[1]


# --------------------------------------------------------------------------- lftp


def _lftp_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Lftp(Client):
    name = "lftp"
    tool = "lftp"
    sent_prefix = "---> "
    modes = {
        # ftp:fix-pasv-address no: honour the 227 address, so a wrong rewrite shows
        "PASV": ["set ftp:passive-mode on", "set ftp:prefer-epsv no", "set ftp:fix-pasv-address no"],
        "EPSV": ["set ftp:passive-mode on", "set ftp:prefer-epsv yes"],
        "PORT": ["set ftp:passive-mode off", "set ftp:prefer-epsv no"],
    }

    async def _run(self, what: str, target: Target, *commands: str) -> tuple[str, str]:
        script = "; ".join([
            f"set net:timeout {CLIENT_TIMEOUT}",
            "set net:max-retries 1",
            "set net:reconnect-interval-base 1",
            "set cmd:fail-exit yes",
            "set xfer:clobber on",
            *self.modes[self.mode],  # type: ignore[misc]
            "debug 5",  # "---> COMMAND" lines (level 5): transcript and failure message
            f"open -u {_lftp_quote(target.user + ',' + target.password)} ftp://{target.netloc}",
            *commands,
        ])
        out, err = await run_client(self.command("-c", script), f"lftp {self.mode} {what}")
        return out, out + err  # lftp writes its debug output to stdout or stderr

    async def download(self, target: Target, remote: str, local: Path) -> str:
        return (await self._run(f"download {remote!r}", target,
                                f"get {_lftp_quote(remote)} -o {_lftp_quote(str(local))}"))[1]

    async def upload(self, target: Target, local: Path, remote: str) -> str:
        return (await self._run(f"upload {remote!r}", target,
                                f"put {_lftp_quote(str(local))} -o {_lftp_quote(remote)}"))[1]

    async def listing(self, target: Target, remote_dir: str, workdir: Path) -> tuple[str, str]:
        listing_file = workdir / f"lftp-listing-{uuid.uuid4().hex}.txt"
        # "ls > file" keeps the listing apart from the debug output
        _out, transcript = await self._run(
            "listing", target, f"ls {_lftp_quote(remote_dir or '.')} > {_lftp_quote(str(listing_file))}")
        return listing_file.read_text(errors="replace"), transcript

    async def resume(self, target: Target, remote: str, local: Path) -> str:
        return (await self._run(f"resume {remote!r}", target,
                                f"get -c {_lftp_quote(remote)} -o {_lftp_quote(str(local))}"))[1]


# --------------------------------------------------------------------------- wget


class Wget(Client):
    name = "wget"
    tool = "wget"
    sent_prefix = "--> "
    modes = {"PASV": [], "PORT": ["--no-passive-ftp"]}
    no_upload_reason = "wget cannot upload (it only retrieves)"

    def _base(self) -> list[str]:
        return self.command(
            "--debug",  # "--> COMMAND" lines: transcript and failure message
            "--tries=1",
            f"--timeout={CLIENT_TIMEOUT}",
            "--no-proxy",
            *self.modes[self.mode],  # type: ignore[misc]
        )

    async def _run(self, what: str, cwd: Path, *args: str) -> tuple[str, str]:
        out, err = await run_client([*self._base(), *args], f"wget {self.mode} {what}", cwd=cwd)
        return out, out + err

    async def download(self, target: Target, remote: str, local: Path) -> str:
        return (await self._run(f"download {remote!r}", local.parent, "-O", str(local), target.url(remote)))[1]

    async def listing(self, target: Target, remote_dir: str, workdir: Path) -> tuple[str, str]:
        page = workdir / f"wget-listing-{uuid.uuid4().hex}.html"
        path = remote_dir.strip("/")
        _out, transcript = await self._run("listing", workdir, "-O", str(page),
                                           target.url(path + "/" if path else ""))
        return page.read_text(errors="replace"), transcript

    async def resume(self, target: Target, remote: str, local: Path) -> str:
        assert local.name == PurePosixPath(remote).name, "wget -c names the file after the URL"
        return (await self._run(f"resume {remote!r}", local.parent, "-c", "-P", str(local.parent),
                                target.url(remote)))[1]


# --------------------------------------------------------------------------- ftplib


class _RecordingFTP(ftplib.FTP):
    """ftplib.FTP that keeps a transcript ("> " sent, "< " received)."""

    def __init__(self, transcript: list[str]) -> None:
        super().__init__(timeout=CLIENT_TIMEOUT)
        self.transcript = transcript

    def putline(self, line: str) -> None:
        shown = "PASS ****" if line[:5].upper() == "PASS " else line
        self.transcript.append(f"> {shown}")
        super().putline(line)

    def getline(self) -> str:
        line = super().getline()
        self.transcript.append(f"< {line}")
        return line


class Ftplib(Client):
    """Python's ftplib, in a worker thread (``trio.to_thread.run_sync``)."""

    name = "ftplib"
    tool = None
    sent_prefix = "> "
    modes = {"PASV": True, "PORT": False}  # set_pasv(...)

    def __init__(self, mode: str, netns: str | None = None) -> None:
        if netns is not None:
            raise ValueError("ftplib runs in this process and cannot enter a network namespace")
        super().__init__(mode, netns)

    async def _session(self, what: str, target: Target, action) -> str:
        transcript: list[str] = []

        def work() -> None:
            ftp = _RecordingFTP(transcript)
            try:
                ftp.connect(target.host, target.port)
                ftp.login(target.user, target.password)
                ftp.set_pasv(bool(self.modes[self.mode]))
                action(ftp)
                ftp.quit()
            finally:
                ftp.close()

        try:
            with trio.fail_after(PROCESS_DEADLINE):
                await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        except (OSError, EOFError, ftplib.Error, trio.TooSlowError) as exc:
            pytest.fail(f"ftplib {self.mode} {what}: {exc!r}\n--- transcript ---\n"
                        + "\n".join(transcript[-60:]), pytrace=False)
        return "\n".join(transcript)

    async def download(self, target: Target, remote: str, local: Path) -> str:
        def action(ftp: ftplib.FTP) -> None:
            with open(local, "wb") as f:
                ftp.retrbinary(f"RETR {remote}", f.write)

        return await self._session(f"download {remote!r}", target, action)

    async def upload(self, target: Target, local: Path, remote: str) -> str:
        def action(ftp: ftplib.FTP) -> None:
            with open(local, "rb") as f:
                ftp.storbinary(f"STOR {remote}", f)

        return await self._session(f"upload {remote!r}", target, action)

    async def listing(self, target: Target, remote_dir: str, workdir: Path) -> tuple[str, str]:
        lines: list[str] = []

        def action(ftp: ftplib.FTP) -> None:
            ftp.retrlines(f"LIST {remote_dir}" if remote_dir else "LIST", lines.append)

        transcript = await self._session("listing", target, action)
        return "\n".join(lines), transcript

    async def resume(self, target: Target, remote: str, local: Path) -> str:
        def action(ftp: ftplib.FTP) -> None:
            with open(local, "ab") as f:
                ftp.retrbinary(f"RETR {remote}", f.write, rest=f.tell())

        return await self._session(f"resume {remote!r}", target, action)


CLIENTS: dict[str, type[Client]] = {c.name: c for c in (Curl, Lftp, Wget, Ftplib)}


# --------------------------------------------------------------------------- one interop case


async def exercise(client: Client, target: Target, ftp: servers.FTPServer, workdir: Path, *,
                   big: bool = False, sent_mode: str | None = None, remote_dir: str = "") -> None:
    """Everything one interop case checks, against the files on the server's disk.

    Downloads (``DOWNLOADS``, plus the 64 MiB file if ``big``), a fresh 1 MiB
    upload (unless the client cannot upload), a directory listing and a resumed
    download (REST) of a pre-truncated local file, all sha256-verified.  Every
    transcript must show that the client sent ``sent_mode`` (default: the
    client's mode) to negotiate its data connections.  ``remote_dir``: where
    ``ftp.root`` is, seen from the login directory ("" : the login directory).
    """
    sent_mode = sent_mode or client.mode
    workdir.mkdir(parents=True, exist_ok=True)

    def remote_path(name: str) -> str:
        return f"{remote_dir}/{name}" if remote_dir else name

    names = [*DOWNLOADS, *([servers.BIG_FILE_NAME] if big else [])]
    for i, name in enumerate(names):
        local = workdir / f"down-{i}-{name}"
        transcript = await client.download(target, remote_path(name), local)
        client.assert_sent(transcript, sent_mode, f"download {name!r}")
        expected = ftp.path(name)
        assert local.exists(), f"{client.name} {client.mode}: {name!r} was not downloaded"
        assert local.stat().st_size == expected.stat().st_size, (
            f"{client.name} {client.mode}: {name!r}: {local.stat().st_size} bytes, "
            f"expected {expected.stat().st_size}\n--- transcript (tail) ---\n{transcript[-3000:]}")
        assert servers.sha256_file(local) == servers.sha256_file(expected), (
            f"{client.name} {client.mode}: {name!r}: sha256 differs")
        if name == servers.BIG_FILE_NAME:
            local.unlink()  # 64 MiB: do not keep it in pytest's temp dirs

    if client.no_upload_reason is None:
        src = workdir / "upload-source.bin"
        src.write_bytes(os.urandom(1 << 20))
        remote = f"{ftp.upload_dir}/{client.name}-{client.mode}-{uuid.uuid4().hex}.bin"
        transcript = await client.upload(target, src, remote_path(remote))
        client.assert_sent(transcript, sent_mode, "upload")
        on_disk = ftp.path(remote)
        assert on_disk.exists(), f"{client.name} {client.mode}: {remote} was not created on {ftp.name}"
        assert servers.sha256_file(on_disk) == servers.sha256_file(src), (
            f"{client.name} {client.mode}: uploaded {remote} differs on {ftp.name}'s disk "
            f"({on_disk.stat().st_size} bytes)\n--- transcript (tail) ---\n{transcript[-3000:]}")

    text, transcript = await client.listing(target, remote_dir, workdir)
    client.assert_sent(transcript, sent_mode, "listing")
    for name in ("one_mib.bin", "empty.bin", servers.UPLOAD_DIR):
        assert name in text, f"{client.name} {client.mode}: {name!r} missing from the listing:\n{text[:3000]}"

    resume_dir = workdir / "resume"
    resume_dir.mkdir(exist_ok=True)
    local = resume_dir / RESUME_FILE
    expected = ftp.path(RESUME_FILE)
    local.write_bytes(expected.read_bytes()[:RESUME_OFFSET])
    transcript = await client.resume(target, remote_path(RESUME_FILE), local)
    client.assert_sent(transcript, f"REST {RESUME_OFFSET}", "resume")
    client.assert_sent(transcript, sent_mode, "resume")
    assert local.stat().st_size == expected.stat().st_size, (
        f"{client.name} {client.mode}: resumed file has {local.stat().st_size} bytes, "
        f"expected {expected.stat().st_size}\n--- transcript (tail) ---\n{transcript[-3000:]}")
    assert servers.sha256_file(local) == servers.sha256_file(expected), (
        f"{client.name} {client.mode}: resumed file: sha256 differs")


# --------------------------------------------------------------------------- through ftptrio

#: the FTP servers of every client's cases (ProFTPD: curl only, in the matrix)
SERVERS = ("vsftpd", "pyftpdlib")
#: limit for one case (several client runs; the 64 MiB download in some)
CASE_TIMEOUT = 300


def forwarder_config(sshd: servers.OpenSSHServer, ftp: servers.FTPServer, *,
                     listen_host: str = "127.0.0.1", direction: str = "local",
                     **options) -> ftptrio.Config:
    """ftptrio forwarding to ``ftp`` through the real ``sshd`` (key login)."""
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(host=sshd.host, port=sshd.port, username=sshd.username,
                               client_keys=(sshd.client_key,), known_hosts=sshd.known_hosts),
        forwards=(ftptrio.ForwardSpec(ftp_host=ftp.host, ftp_port=ftp.port,
                                      listen_host=listen_host, direction=direction),),
        **options)


def ftp_server(request: pytest.FixtureRequest, name: str) -> servers.FTPServer:
    """The session fixture of FTP server ``name`` (vsftpd, proftpd, pyftpdlib)."""
    return request.getfixturevalue("pyftpdlib_server" if name == "pyftpdlib" else name)


async def run_case(sshd: servers.OpenSSHServer, ftp: servers.FTPServer, client_name: str,
                   mode: str, tmp_path: Path, *, expected_data_mode: str, big: bool,
                   **options) -> None:
    """``exercise`` one client through ftptrio; its data went only in the expected mode."""
    client = CLIENTS[client_name](mode)
    with trio.fail_after(CASE_TIMEOUT):
        async with ftptrio.open_forwarder(forwarder_config(sshd, ftp, **options)) as fwd:
            host, port = fwd.addresses[0]
            await exercise(client, Target.for_server(ftp, host, port), ftp, tmp_path, big=big)
            stats = fwd.stats
    # ftptrio's own account: no data relayed in another mode than expected.
    # (Whether every transfer is counted is test_transfer_stats.py's business:
    # a client that closes the control connection right after 226, as wget
    # does, is not counted at all; that must not hide this client's interop.)
    assert set(stats.by_mode) <= {expected_data_mode}, (
        f"ftptrio relayed data as {stats.by_mode}, expected only {expected_data_mode!r}")
    assert stats.transfer_errors == 0, f"ftptrio counted {stats.transfer_errors} failed transfers"
