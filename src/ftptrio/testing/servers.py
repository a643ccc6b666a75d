"""Start and stop real servers (OpenSSH sshd, vsftpd, ProFTPD, pyftpdlib) for interop tests
and benchmarks (``tests/interop``, ``bench/``).

Test helpers, not part of the public API: may change without notice.

Everything here is plain synchronous code.  Every server listens on 127.0.0.1
only, on an OS-picked free port, with its files in a caller-supplied temp dir,
and runs in its own process group so that ``stop()`` kills it together with
every session child it forked.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"

#: Passive port ranges are picked from here: outside the kernel's ephemeral
#: range (32768-60999 on Linux), so that outgoing connections never steal them.
PASSIVE_SEARCH_LOW = 20000
PASSIVE_SEARCH_HIGH = 32000

_SBIN_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]
)

#: Test data served by both FTP servers: name -> (size, seed).
DATA_FILES: dict[str, tuple[int, int]] = {
    "empty.bin": (0, 0),
    "one_mib.bin": (1 << 20, 1),
    "big.bin": (32 << 20, 2),
    # the interop matrix downloads this once per client
    "random_64mib.bin": (64 << 20, 3),
}
BIG_FILE_NAME = "random_64mib.bin"
TEXT_FILE_NAME = "with space.txt"
TEXT_FILE_CONTENT = b"a file whose name has a space\r\nline two\n"
UPLOAD_DIR = "upload"

_lock = threading.Lock()
_reserved_ports: set[int] = set()


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


#: Tools that are not installed on PATH.  ProFTPD conflicts with vsftpd as a
#: Debian package: ``.ci/install-proftpd`` unpacks it into /opt/proftpd, with a
#: wrapper that sets LD_LIBRARY_PATH; $FTPTRIO_PROFTPD overrides.
_UNPACKED_TOOLS: dict[str, tuple[str, str]] = {
    "proftpd": ("FTPTRIO_PROFTPD", "/opt/proftpd/bin/proftpd"),
}
_INSTALL_HINTS = {"proftpd": " (run .ci/install-proftpd)"}


def find_tool(name: str) -> str | None:
    """Path of an executable, also looking in the sbin directories (and, for
    ProFTPD, at $FTPTRIO_PROFTPD and /opt/proftpd/bin/proftpd first)."""
    if name in _UNPACKED_TOOLS:
        env_var, default = _UNPACKED_TOOLS[name]
        for candidate in (os.environ.get(env_var), default):
            if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return shutil.which(name, path=_SBIN_PATH)


def require_tool(name: str) -> str:
    """Return the tool's path; fail the test under CI, skip it elsewhere."""
    path = find_tool(name)
    if path is None:
        import pytest

        msg = f"required tool {name!r} is not installed{_INSTALL_HINTS.get(name, '')}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (bind to port 0, then close)."""
    with _lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port: int = s.getsockname()[1]
            if port not in _reserved_ports:
                _reserved_ports.add(port)
                return port
    raise RuntimeError("could not find a free port")


def _port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the FTP servers' passive listeners do (vsftpd, pyftpdlib): a port
        # whose old connections linger in TIME_WAIT is free for them.  Without
        # this, the hundreds of data connections of one interop run made
        # "no free range of 400 ports" likely in the next run.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_range(count: int, low: int = PASSIVE_SEARCH_LOW, high: int = PASSIVE_SEARCH_HIGH) -> range:
    """``count`` consecutive ports in [low, high) that are all free now.

    The start is random so that concurrent test runs on one machine rarely
    collide; ranges handed out by this process never overlap.
    """
    rng = random.Random()
    with _lock:
        for _ in range(200):
            start = rng.randrange(low, high - count)
            candidate = range(start, start + count)
            if any(p in _reserved_ports for p in candidate):
                continue
            if all(_port_is_free(p) for p in candidate):
                _reserved_ports.update(candidate)
                return candidate
    raise RuntimeError(f"no free range of {count} ports in {low}-{high}")


def wait_for_port(host: str, port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``host:port`` accepts a TCP connection.

    Raises TimeoutError, or RuntimeError at once if ``process`` exits first.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before {host}:{port} accepted")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout}s: {last_error}")
        time.sleep(0.05)


_WAIT_SCRIPT = r"""
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=1.0).close()
        sys.exit(0)
    except OSError as exc:
        if time.monotonic() >= deadline:
            sys.exit("%s:%d did not accept connections: %s" % (host, port, exc))
    time.sleep(0.05)
"""


def netns_prefix(netns: str | None) -> list[str]:
    """Command prefix that runs a program in network namespace ``netns``."""
    return [] if netns is None else [find_tool("ip") or "ip", "netns", "exec", netns]


def wait_for_port_in(netns: str | None, host: str, port: int, timeout: float = 10.0,
                     process: subprocess.Popen[bytes] | None = None) -> None:
    """``wait_for_port`` run inside network namespace ``netns`` (None: this one)."""
    if netns is None:
        wait_for_port(host, port, timeout=timeout, process=process)
        return
    waiter = subprocess.Popen(
        [*netns_prefix(netns), sys.executable, "-c", _WAIT_SCRIPT, host, str(port), str(timeout)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        while waiter.poll() is None:
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"process exited with code {process.returncode} before {host}:{port} accepted")
            time.sleep(0.05)
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.wait()
        err = waiter.stderr.read().decode(errors="replace") if waiter.stderr else ""
        if waiter.stderr:
            waiter.stderr.close()
    if waiter.returncode != 0:
        raise TimeoutError(f"in netns {netns}: {err.strip()}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _tail(path: str | os.PathLike[str], max_bytes: int = 4000) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return data[-max_bytes:].decode("utf-8", "replace")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Terminate the process and its process group (started with
    ``start_new_session=True``), then kill whatever is left after ``timeout``."""
    if process is None:
        return
    pgid: int | None
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        pgid = None
    # Only signal the group if it is the one this process leads (we made it).
    own_group = pgid == process.pid

    def _signal(sig: int) -> None:
        try:
            if own_group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            pass

    if process.poll() is None:
        _signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal(signal.SIGKILL)
            process.wait(timeout=timeout)
    if own_group:
        # Session children (sshd per-connection, vsftpd per-session) may
        # outlive the listener: kill the rest of the group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def populate_data_dir(root: Path, small_only: bool = False) -> None:
    """Create the standard test files (fixed seeds) and an upload dir; ``small_only``:
    only those up to 1 MiB."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (size, seed) in DATA_FILES.items():
        if small_only and size > 1 << 20:
            continue
        (root / name).write_bytes(random_bytes(size, seed))
    (root / TEXT_FILE_NAME).write_bytes(TEXT_FILE_CONTENT)
    (root / UPLOAD_DIR).mkdir(exist_ok=True)
    for p in root.iterdir():
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chmod(root, 0o755)


# --------------------------------------------------------------------------
# throwaway system users (password logins to sshd and vsftpd)
# --------------------------------------------------------------------------

#: the users of the SFTP tests: name -> password. Shell nologin: no shell anywhere.
SFTP_TEST_USERS: dict[str, str] = {
    "ftptrio-sftp": "ftptrio-Sftp-pw-1",
    "ftptrio-sftp-ro": "ftptrio-Sftp-pw-2",
}
#: in the home of a user made with ``readonly=True``: a root-owned directory the
#: user can list and read but not write, and a root-owned file the user cannot read
READONLY_DIR = "readonly"
READONLY_FILE = "kept.txt"
UNREADABLE_FILE = "unreadable.bin"
#: PAM service of vsftpd's local logins in the tests: Debian's ``vsftpd`` service
#: requires a shell listed in /etc/shells (pam_shells), the test users have none
PAM_SERVICE = "ftptrio-test-ftp"
_PAM_SERVICE_TEXT = """\
# written by ftptrio's tests (ftptrio.testing.servers): vsftpd's local logins of
# the throwaway test users (their shell is nologin, which pam_shells refuses)
auth     required pam_unix.so
account  required pam_unix.so
session  required pam_permit.so
"""


class SystemUserUnavailable(RuntimeError):
    """The test user could not be made (not root, or useradd/chpasswd failed)."""


@dataclass(frozen=True)
class SystemUser:
    """A local system user with a known password and its own home directory."""

    name: str
    password: str
    home: str
    uid: int
    gid: int

    def make_dir(self, tag: str) -> Path:
        """A fresh directory in the home, owned by the user (each test its own: the
        users are shared by every test, worker and run)."""
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=self.home))
        os.chmod(path, 0o755)
        os.chown(path, self.uid, self.gid)
        return path

    def give(self, path: str | os.PathLike[str]) -> None:
        """Make ``path`` and everything under it the user's."""
        os.chown(path, self.uid, self.gid)  # a file, or the top directory
        for top, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(top, name), self.uid, self.gid)


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure_system_user(name: str, *, readonly: bool = False) -> SystemUser:
    """Make the throwaway local user ``name`` (one of ``SFTP_TEST_USERS``) exist with
    its password, its home ``/home/NAME`` and shell nologin; ``readonly``: with
    READONLY_DIR and UNREADABLE_FILE in the home. Idempotent: an existing user is
    kept (its password set again), nothing is removed; concurrent callers (pytest
    workers, parallel runs) are serialized by a lock file. Needs root: raises
    SystemUserUnavailable otherwise or when useradd/chpasswd fail."""
    import fcntl
    import pwd
    import tempfile

    password = SFTP_TEST_USERS[name]
    if os.geteuid() != 0:
        raise SystemUserUnavailable(f"creating the test user {name!r} needs root")
    useradd, chpasswd = find_tool("useradd"), find_tool("chpasswd")
    if useradd is None or chpasswd is None:
        raise SystemUserUnavailable("useradd/chpasswd are not installed")
    home = Path("/home") / name
    with open(Path(tempfile.gettempdir()) / "ftptrio-test-users.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                home.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                nologin = find_tool("nologin") or "/usr/sbin/nologin"
                made = subprocess.run(
                    [useradd, "--create-home", "--home-dir", str(home), "--shell", nologin,
                     "--user-group", "--comment", "ftptrio test user (throwaway)", name],
                    capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
                if made.returncode != 0:
                    raise SystemUserUnavailable(
                        f"useradd {name} failed ({made.returncode}): {made.stderr.strip()}")
                pw = pwd.getpwnam(name)
            changed = subprocess.run([chpasswd], input=f"{name}:{password}\n",
                                     capture_output=True, text=True, timeout=60)
            if changed.returncode != 0:
                raise SystemUserUnavailable(
                    f"chpasswd {name} failed ({changed.returncode}): {changed.stderr.strip()}")
            home = Path(pw.pw_dir)
            home.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            os.chmod(home, 0o755)
            if readonly:
                kept = home / READONLY_DIR
                kept.mkdir(mode=0o755, exist_ok=True)
                os.chown(kept, 0, 0)
                os.chmod(kept, 0o755)
                _write_if_changed(kept / READONLY_FILE, "a file the user can read, not change\n",
                                  0o644)
                _write_if_changed(home / UNREADABLE_FILE, "only root reads this\n", 0o600)
            _write_if_changed(Path("/etc/pam.d") / PAM_SERVICE, _PAM_SERVICE_TEXT, 0o644)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return SystemUser(name, password, str(home), pw.pw_uid, pw.pw_gid)


# --------------------------------------------------------------------------
# OpenSSH sshd
# --------------------------------------------------------------------------


@dataclass
class OpenSSHServer:
    host: str
    port: int
    username: str
    client_key: str
    known_hosts: str
    log_path: str
    process: subprocess.Popen[bytes] = field(repr=False)
    config_path: str = ""
    host_public_key: str = ""

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def _ssh_keygen(path: Path) -> None:
    keygen = find_tool("ssh-keygen") or "ssh-keygen"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "ftptrio-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=30,
    )


def _openssh_version() -> tuple[int, int]:
    ssh = find_tool("ssh")
    if ssh is None:
        return (0, 0)
    try:
        out = subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def start_openssh(
    tmpdir: str | os.PathLike[str],
    extra_config: str | list[str] | tuple[str, ...] = (),
    timeout: float = 10.0,
    *,
    host: str = HOST,
    netns: str | None = None,
    sftp: bool = True,
    password_user: SystemUser | None = None,
) -> OpenSSHServer:
    """Start ``/usr/sbin/sshd -D -e`` on a free 127.0.0.1 port.

    ``sftp``: serve the sftp subsystem (``internal-sftp``); False: no Subsystem line,
    so sftp sessions are refused.

    ``password_user``: also accept password and keyboard-interactive logins (through
    PAM, ``UsePAM yes``: keyboard-interactive needs it) and log in as that user
    (``username``; the generated client key is accepted for every user).

    ``host``/``netns``: listen on another address, inside network namespace
    ``netns`` (run through ``ip netns exec``).

    ``extra_config`` lines are appended to sshd_config (e.g.
    ``"AllowTcpForwarding local"``).  sshd uses the first value it reads for
    most keywords, so conflicting extra lines replace the defaults here.
    """
    sshd = find_tool("sshd")
    if sshd is None:
        raise RuntimeError("sshd is not installed")
    sshd = os.path.abspath(sshd)  # sshd re-execs itself and needs an absolute path
    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    host_key = d / "ssh_host_ed25519_key"
    client_key = d / "id_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            _ssh_keygen(key)
    host_pub = (d / "ssh_host_ed25519_key.pub").read_text().split()
    host_public_key = f"{host_pub[0]} {host_pub[1]}"

    if isinstance(extra_config, str):
        extra_lines = extra_config.splitlines()
    else:
        extra_lines = list(extra_config)
    extra_keys = {line.split()[0].lower() for line in extra_lines if line.strip() and not line.lstrip().startswith("#")}

    last_error = ""
    for _attempt in range(3):
        port = free_port()
        defaults = [
            f"ListenAddress {host}",
            f"Port {port}",
            f"HostKey {host_key}",
            f"PidFile {d / 'sshd.pid'}",
            "StrictModes no",
            f"AuthorizedKeysFile {client_key}.pub",
            "PubkeyAuthentication yes",
            "AllowTcpForwarding yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin yes",
            "LogLevel DEBUG1",
            "PrintMotd no",
            "UseDNS no",
            "MaxStartups 100:30:200",
        ]
        if sftp:
            defaults.append("Subsystem sftp internal-sftp")
        if password_user is not None:
            password_lines = {line.split()[0].lower(): line for line in (
                "PasswordAuthentication yes", "KbdInteractiveAuthentication yes", "UsePAM yes")}
            defaults = [password_lines.get(line.split()[0].lower(), line) for line in defaults]
            # sshd reads AuthorizedKeysFile as the user, who cannot enter the temp dir:
            # root hands it the client key (key logins as that user: --sftp-login own)
            cat = shutil.which("cat") or "/bin/cat"
            defaults += [f"AuthorizedKeysCommand {cat} {client_key}.pub",
                         "AuthorizedKeysCommandUser root"]
        if _openssh_version() >= (9, 8):
            # Tests make many connections (some failing on purpose) from 127.0.0.1.
            defaults.append("PerSourcePenalties no")
        lines = [line for line in defaults if line.split()[0].lower() not in extra_keys]
        # Match blocks must come last in sshd_config.
        config_text = "\n".join(lines + extra_lines) + "\n"
        config_path = d / "sshd_config"
        config_path.write_text(config_text)
        log_path = d / "sshd.log"

        # Validate the config first: a clear error beats a timeout.
        check = subprocess.run([sshd, "-t", "-f", str(config_path)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejected its config:\n{check.stderr}\n--- config ---\n{config_text}")

        log = open(log_path, "ab")
        try:
            process = subprocess.Popen(
                [*netns_prefix(netns), sshd, "-D", "-e", "-f", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            wait_for_port_in(netns, host, port, timeout=timeout, process=process)
        except (TimeoutError, RuntimeError) as exc:
            stop_process(process)
            last_error = f"{exc}\n--- sshd log tail ({log_path}) ---\n{_tail(log_path)}"
            if "Address already in use" in last_error:
                continue  # lost a port race: try another port
            raise RuntimeError(f"sshd did not start: {last_error}") from None

        known_hosts = d / "known_hosts"
        known_hosts.write_text(f"[{host}]:{port} {host_public_key}\n")
        return OpenSSHServer(
            host=host,
            port=port,
            username=getpass.getuser() if password_user is None else password_user.name,
            client_key=str(client_key),
            known_hosts=str(known_hosts),
            log_path=str(log_path),
            process=process,
            config_path=str(config_path),
            host_public_key=host_public_key,
        )
    raise RuntimeError(f"sshd did not start: {last_error}")


# --------------------------------------------------------------------------
# FTP servers
# --------------------------------------------------------------------------


@dataclass
class FTPServer:
    host: str
    port: int
    user: str
    password: str
    #: data directory: the FTP root as seen by the logged-in user
    root: str
    process: subprocess.Popen[bytes] = field(repr=False)
    name: str = ""
    #: writable directory, relative to the FTP root ("upload")
    upload_dir: str = UPLOAD_DIR
    passive_ports: range = range(0)
    log_path: str = ""

    def path(self, ftp_path: str) -> Path:
        """Path on disk of a file given by its FTP path ("upload/x")."""
        return Path(self.root) / ftp_path.lstrip("/")

    def url(self, ftp_path: str, host: str | None = None, port: int | None = None) -> str:
        """ftp:// URL with credentials; host/port default to the server itself."""
        from urllib.parse import quote

        return (
            f"ftp://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host or self.host}:{port or self.port}/{quote(ftp_path.lstrip('/'))}"
        )

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        stop_process(self.process)


def _ensure_ftp_user() -> None:
    """vsftpd's anonymous sessions run as the system user ``ftp``
    (the Debian package creates it; make sure it exists anyway)."""
    try:
        subprocess.run(["id", "ftp"], check=True, capture_output=True, timeout=10)
    except subprocess.CalledProcessError:
        useradd = find_tool("useradd") or "useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/srv/ftp", "--shell", "/usr/sbin/nologin", "ftp"],
            check=True,
            capture_output=True,
            timeout=30,
        )


def self_signed_certificate(directory: str | os.PathLike[str], host: str = HOST) -> tuple[str, str]:
    """A self-signed certificate for ``host`` and its key, written as PEM files into
    ``directory`` (the ``cryptography`` package, an asyncssh dependency; no openssl
    command, no network). Returns (certificate path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return str(cert_path), str(key_path)


def _vsftpd_tls_lines(tls: str | None, cert: str, key: str, ssl_reuse: bool = True) -> str:
    """vsftpd.conf lines for FTPS: ``explicit`` (AUTH TLS required for logins and data)
    or ``implicit`` (TLS from the first byte); None: plain FTP."""
    if tls is None:
        return "ssl_enable=NO\n"
    assert tls in ("explicit", "implicit"), tls
    # the test logs in as anonymous (no PAM user): the anon_ lines force TLS on it as
    # the local_ lines would on local users. vsftpd 3.0.3's default ssl_ciphers
    # (DES-CBC3-SHA) is one OpenSSL 3 no longer offers. require_ssl_reuse stays at
    # its default (YES) unless ``ssl_reuse`` is False: curl and lftp reuse the control
    # connection's TLS session on data connections, Python's ftplib cannot.
    return textwrap.dedent(f"""\
        ssl_enable=YES
        allow_anon_ssl=YES
        force_anon_logins_ssl=YES
        force_anon_data_ssl=YES
        force_local_logins_ssl=YES
        force_local_data_ssl=YES
        ssl_tlsv1=YES
        ssl_sslv2=NO
        ssl_sslv3=NO
        ssl_ciphers=HIGH
        rsa_cert_file={cert}
        rsa_private_key_file={key}
        implicit_ssl={'YES' if tls == 'implicit' else 'NO'}
        require_ssl_reuse={'YES' if ssl_reuse else 'NO'}
        """)


def start_vsftpd(tmpdir: str | os.PathLike[str], timeout: float = 10.0, passive_count: int = 50, *,
                 host: str = HOST, port: int | None = None, netns: str | None = None,
                 tls: str | None = None, require_ssl_reuse: bool = True,
                 local_user: SystemUser | None = None) -> FTPServer:
    """Run vsftpd in the foreground with anonymous login.

    ``local_user`` (from ensure_system_user): that user logs in with its password
    instead (PAM service PAM_SERVICE; no anonymous login), into a fresh directory of
    its home with the small test files and ``upload/`` (all the user's, removed by
    ``stop()``), where it may also overwrite and delete.

    Login: user ``anonymous``, any password.  Anonymous avoids PAM and creating
    system users.  Uploads go to ``upload/`` (owned by ``ftp``); vsftpd does not
    let anonymous users overwrite or delete files, so upload fresh names.
    ``tls``: ``"explicit"`` (logins and data must use TLS after AUTH TLS) or
    ``"implicit"`` (TLS from the first byte), with a self-signed certificate for
    ``host`` written into tmpdir; ``require_ssl_reuse=False`` lets clients that
    cannot reuse the TLS session on data connections (Python's ftplib) in.
    """
    vsftpd = find_tool("vsftpd")
    if vsftpd is None:
        raise RuntimeError("vsftpd is not installed")
    _ensure_ftp_user()
    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)
    import pwd

    if local_user is None:
        root = d / "data"
        populate_data_dir(root)
        ftp_pw = pwd.getpwnam("ftp")
        os.chown(root / UPLOAD_DIR, ftp_pw.pw_uid, ftp_pw.pw_gid)
        os.chmod(root / UPLOAD_DIR, 0o755)
        login_lines = ["anonymous_enable=YES", "no_anon_password=YES", f"anon_root={root}",
                       "anon_upload_enable=YES", "anon_mkdir_write_enable=YES",
                       "anon_other_write_enable=NO", "anon_world_readable_only=NO",
                       "anon_umask=022", "local_enable=NO"]
    else:
        root = local_user.make_dir("vsftpd")
        populate_data_dir(root, small_only=True)
        local_user.give(root)
        login_lines = ["anonymous_enable=NO", "local_enable=YES", f"local_root={root}",
                       "local_umask=022", "chroot_local_user=NO",
                       f"pam_service_name={PAM_SERVICE}"]
    # vsftpd chroots anonymous sessions into anon_root and refuses a root
    # directory writable by the ftp user; it needs an empty secure_chroot_dir.
    secure_chroot = "/var/run/vsftpd/empty"
    os.makedirs(secure_chroot, mode=0o755, exist_ok=True)
    # The temp dir's parents may be 0700 root (pytest's): vsftpd chroots as root
    # before dropping privileges, so only the data dir itself must be readable.

    cert, key = self_signed_certificate(d / "tls", host) if tls else ("", "")
    tls_lines = _vsftpd_tls_lines(tls, cert, key, require_ssl_reuse)
    env = None
    if tls:
        # TLS 1.2 at most. Over TLS 1.3 the server sends session tickets after the
        # handshake; lftp and curl never read them on an upload's data connection, so
        # their close() finds unread data and resets the connection, and the upload's
        # last segments are lost: vsftpd answers "426 Failure reading network stream"
        # (with or without ftptrio: reproduced lftp -> vsftpd direct, 1 upload in 2-5).
        openssl_conf = d / "tls" / "openssl.cnf"
        openssl_conf.write_text("openssl_conf = openssl_init\n[openssl_init]\n"
                                "ssl_conf = ssl_sect\n[ssl_sect]\n"
                                "system_default = system_default_sect\n"
                                "[system_default_sect]\nMaxProtocol = TLSv1.2\n")
        env = {**os.environ, "OPENSSL_CONF": str(openssl_conf)}
    last_error = ""
    fixed_port = port
    for _attempt in range(3):
        port = fixed_port or free_port()
        pasv = free_port_range(passive_count)
        log_path = d / "vsftpd.log"
        xferlog = d / "xferlog"
        config = textwrap.dedent(
            f"""\
            listen=YES
            listen_ipv6=NO
            listen_address={host}
            listen_port={port}
            background=NO
            seccomp_sandbox=NO
            isolate=NO
            isolate_network=NO
            run_as_launching_user=NO
            write_enable=YES
            pasv_enable=YES
            pasv_min_port={pasv.start}
            pasv_max_port={pasv.stop - 1}
            pasv_promiscuous=NO
            port_enable=YES
            port_promiscuous=NO
            connect_from_port_20=NO
            secure_chroot_dir={secure_chroot}
            ftpd_banner=ftptrio test vsftpd
            dirmessage_enable=NO
            use_localtime=NO
            hide_ids=NO
            max_clients=0
            max_per_ip=0
            idle_session_timeout=300
            data_connection_timeout=120
            accept_timeout=60
            connect_timeout=60
            tcp_wrappers=NO
            xferlog_enable=YES
            xferlog_std_format=NO
            vsftpd_log_file={log_path}
            log_ftp_protocol=YES
            """
        ) + "".join(f"{line}\n" for line in login_lines) + tls_lines
        config_path = d / "vsftpd.conf"
        config_path.write_text(config)
        os.chmod(config_path, 0o600)  # vsftpd wants its config owned by root
        stderr_path = d / "vsftpd.stderr"
        out = open(stderr_path, "ab")
        try:
            process = subprocess.Popen(
                [*netns_prefix(netns), vsftpd, str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=env,
            )
        finally:
            out.close()
        try:
            wait_for_port_in(netns, host, port, timeout=timeout, process=process)
        except (TimeoutError, RuntimeError) as exc:
            stop_process(process)
            last_error = f"{exc}\n--- vsftpd output ---\n{_tail(stderr_path)}\n--- log ---\n{_tail(log_path)}"
            if "could not bind" in last_error or "Address already in use" in last_error:
                continue
            raise RuntimeError(f"vsftpd did not start: {last_error}") from None
        if local_user is not None:
            return LocalUserFTPServer(
                host=host, port=port, user=local_user.name, password=local_user.password,
                root=str(root), process=process, name="vsftpd", passive_ports=pasv,
                log_path=str(log_path))
        return FTPServer(
            host=host,
            port=port,
            user="anonymous",
            password="ftptrio@example.invalid",
            root=str(root),
            process=process,
            name="vsftpd",
            passive_ports=pasv,
            log_path=str(log_path),
        )
    if local_user is not None:
        shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"vsftpd did not start: {last_error}")


@dataclass
class LocalUserFTPServer(FTPServer):
    """An FTPServer whose data directory is in a test user's home (see start_vsftpd)."""

    def stop(self) -> None:
        try:
            stop_process(self.process)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class ProFTPDServer(FTPServer):
    """An FTPServer whose data root is a temp dir of its own (see start_proftpd)."""

    def stop(self) -> None:
        try:
            stop_process(self.process)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def proftpd_tls_module() -> str | None:
    """Path of ProFTPD's mod_tls.so (Debian's proftpd-mod-crypto, unpacked by
    .ci/install-proftpd next to the core), or None. $FTPTRIO_PROFTPD_MODULES names
    another module directory."""
    proftpd = find_tool("proftpd")
    if proftpd is None:
        return None
    for directory in (os.environ.get("FTPTRIO_PROFTPD_MODULES"),
                      str(Path(proftpd).resolve().parent.parent / "usr" / "lib" / "proftpd")):
        if directory and os.path.isfile(os.path.join(directory, "mod_tls.so")):
            return os.path.join(directory, "mod_tls.so")
    return None


def _proftpd_tls_lines(module: str, cert: str, key: str, log_dir: Path) -> str:
    """proftpd.conf lines loading mod_tls and requiring TLS (explicit FTPS) for the
    control and data channels; the EC certificate of self_signed_certificate. TLS 1.2:
    see start_vsftpd (clients reset an upload whose TLS 1.3 session tickets they never
    read)."""
    return textwrap.dedent(f"""\
        <IfModule mod_dso.c>
          ModulePath {os.path.dirname(module)}
          LoadModule mod_tls.c
        </IfModule>
        <IfModule mod_tls.c>
          TLSEngine on
          TLSRequired on
          TLSProtocol TLSv1.2
          TLSECCertificateFile {cert}
          TLSECCertificateKeyFile {key}
          TLSVerifyClient off
          TLSLog {log_dir / "tls.log"}
        </IfModule>
        """)


def start_proftpd(tmpdir: str | os.PathLike[str], timeout: float = 10.0, passive_count: int = 50, *,
                  host: str = HOST, tls: bool = False) -> FTPServer:
    """Run ProFTPD in the foreground (``proftpd -n``) with anonymous login.

    Login: user ``anonymous``, any password (the session runs as the system
    user ``ftp``, chrooted into the data dir).  Uploads go to ``upload/``
    (owned by ``ftp``).  No PAM, no DNS or ident lookups, no wtmp, no
    scoreboard/pid/log files outside ``tmpdir``; only the compiled-in modules.
    ``AllowForeignAddress off`` (the default, spelled out): ProFTPD refuses a
    PORT/EPRT naming another address than the control connection's peer.

    ``log()`` returns ProFTPD's system log and, interleaved, one line per
    command as ProFTPD parsed it (``CMD <command> <argument> -> <reply code>``).

    ``tls``: load mod_tls (``proftpd_tls_module``) and require TLS on the control and
    data channels (explicit FTPS, ``TLSRequired on``), with a self-signed certificate.
    """
    proftpd = find_tool("proftpd")
    if proftpd is None:
        raise RuntimeError("proftpd is not installed (run .ci/install-proftpd)")
    _ensure_ftp_user()
    import grp
    import pwd
    import tempfile

    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)
    # ProFTPD checks the anonymous root as the user ftp before it chroots, so
    # every parent must be traversable: pytest's temp dirs are 0700.  The data
    # lives in a dir of its own under the system temp dir, removed by stop().
    root = Path(tempfile.mkdtemp(prefix="ftptrio-proftpd-"))
    os.chmod(root, 0o755)
    populate_data_dir(root)
    ftp_pw = pwd.getpwnam("ftp")
    ftp_group = grp.getgrgid(ftp_pw.pw_gid).gr_name
    os.chown(root / UPLOAD_DIR, ftp_pw.pw_uid, ftp_pw.pw_gid)
    os.chmod(root / UPLOAD_DIR, 0o755)
    # The listener process drops to an unprivileged user after binding.
    try:
        pwd.getpwnam("nobody")
        server_user = "nobody"
    except KeyError:
        server_user = "ftp"
    try:
        grp.getgrnam("nogroup")
        server_group = "nogroup"
    except KeyError:
        server_group = ftp_group
    # ProFTPD refuses log files in a world-writable directory: give it its own.
    # With -n it writes its system log to stderr; the command log (ExtendedLog)
    # goes to the same file, so log() shows both in order.
    log_dir = d / "log"
    log_dir.mkdir(exist_ok=True)
    os.chmod(log_dir, 0o755)
    log_path = log_dir / "proftpd.log"
    module_dir = Path(proftpd).resolve().parent.parent / "usr" / "lib" / "proftpd"
    tls_lines = ""
    if tls:
        module = proftpd_tls_module()
        if module is None:
            raise RuntimeError("ProFTPD's mod_tls.so is not unpacked (run .ci/install-proftpd)")
        cert, key = self_signed_certificate(d / "tls", host)
        os.chmod(d / "tls", 0o755)
        tls_lines = _proftpd_tls_lines(module, cert, key, log_dir)

    last_error = ""
    for _attempt in range(3):
        port = free_port()
        pasv = free_port_range(passive_count)
        # SocketBindTight: listen on ``host`` only (it makes DefaultServer moot,
        # ProFTPD says so and ignores it, so DefaultServer is left out).
        config = textwrap.dedent(
            f"""\
            ServerType standalone
            ServerName "ftptrio test proftpd"
            ServerIdent on "ftptrio test proftpd"
            DefaultAddress {host}
            SocketBindTight on
            Port {port}
            UseIPv6 off
            User {server_user}
            Group {server_group}
            Umask 022
            UseReverseDNS off
            <IfModule mod_ident.c>
              IdentLookups off
            </IfModule>
            <IfModule mod_delay.c>
              DelayEngine off
            </IfModule>
            <IfModule mod_ctrls.c>
              ControlsEngine off
            </IfModule>
            <IfModule mod_auth_pam.c>
              AuthPAM off
            </IfModule>
            <IfModule mod_lang.c>
              LangEngine off
            </IfModule>
            <IfModule mod_dso.c>
              ModulePath {module_dir}
            </IfModule>
            AuthOrder mod_auth_unix.c
            WtmpLog off
            UseFtpUsers off
            RequireValidShell off
            AllowForeignAddress off
            PassivePorts {pasv.start} {pasv.stop - 1}
            ScoreboardFile {d / "proftpd.scoreboard"}
            PidFile {d / "proftpd.pid"}
            TransferLog {log_dir / "xferlog"}
            LogFormat commands "CMD %m %J -> %s"
            ExtendedLog {log_path} ALL commands
            TimeoutIdle 300
            TimeoutNoTransfer 300
            MaxInstances 200
            AllowOverwrite on
            <Anonymous {root}>
              User ftp
              Group {ftp_group}
              UserAlias anonymous ftp
              RequireValidShell off
              MaxClients 200
              <Directory {UPLOAD_DIR}>
                <Limit WRITE>
                  AllowAll
                </Limit>
              </Directory>
            </Anonymous>
            """
        ) + tls_lines
        config_path = d / "proftpd.conf"
        config_path.write_text(config)
        os.chmod(config_path, 0o644)
        check = subprocess.run([proftpd, "-t", "-c", str(config_path)], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"proftpd rejected its config:\n{check.stdout}{check.stderr}\n"
                               f"--- config ---\n{config}")
        stderr_path = log_path
        out = open(stderr_path, "ab")
        try:
            process = subprocess.Popen(
                [proftpd, "-n", "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        finally:
            out.close()
        try:
            wait_for_port(host, port, timeout=timeout, process=process)
        except (TimeoutError, RuntimeError) as exc:
            stop_process(process)
            last_error = f"{exc}\n--- proftpd log ---\n{_tail(log_path)}"
            if "Address already in use" in last_error:
                continue
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"proftpd did not start: {last_error}") from None
        return ProFTPDServer(
            host=host,
            port=port,
            user="anonymous",
            password="ftptrio@example.invalid",
            root=str(root),
            process=process,
            name="proftpd",
            passive_ports=pasv,
            log_path=str(log_path),
        )
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"proftpd did not start: {last_error}")


_PYFTPDLIB_SCRIPT = r"""
import logging, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer, ThreadedFTPServer

host, user, password, root, pasv_lo, pasv_hi, log_path = sys.argv[1:8]
listen_port = int(sys.argv[8]) if len(sys.argv) > 8 else 0
max_cons = int(sys.argv[9]) if len(sys.argv) > 9 else 512
read_limit = int(sys.argv[10]) if len(sys.argv) > 10 else 0
write_limit = int(sys.argv[11]) if len(sys.argv) > 11 else 0
threaded = len(sys.argv) > 12 and sys.argv[12] == "threaded"
logging.basicConfig(filename=log_path, level=logging.INFO,
                    format="%(asctime)s %(levelname)s %(message)s")
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, root, perm="elradfmwMT")


class Handler(FTPHandler):
    pass


Handler.authorizer = authorizer
Handler.passive_ports = range(int(pasv_lo), int(pasv_hi) + 1)
Handler.permit_foreign_addresses = False
Handler.banner = "ftptrio test pyftpdlib"
Handler.timeout = 300
if read_limit or write_limit:
    from pyftpdlib.handlers import ThrottledDTPHandler

    class Throttled(ThrottledDTPHandler):
        pass

    Throttled.read_limit = read_limit
    Throttled.write_limit = write_limit
    Handler.dtp_handler = Throttled
server = (ThreadedFTPServer if threaded else FTPServer)((host, listen_port), Handler)
server.max_cons = max_cons
server.max_cons_per_ip = 0
sys.stdout.write("PORT %d\n" % server.address[1])
sys.stdout.flush()
server.serve_forever(handle_exit=True)
"""


def start_pyftpdlib(tmpdir: str | os.PathLike[str], timeout: float = 15.0, passive_count: int = 400, *,
                    host: str = HOST, port: int = 0, netns: str | None = None,
                    max_cons: int = 512, passive_ports: range | None = None,
                    read_limit: int = 0, write_limit: int = 0,
                    threaded: bool = False) -> FTPServer:
    """Run pyftpdlib in a subprocess (user ``ftptrio``/``secret``, all perms).

    ``read_limit`` / ``write_limit``: bytes per second each data connection
    receives (uploads) / sends (downloads) at most (pyftpdlib's
    ThrottledDTPHandler): a slow FTP server. 0: no limit.

    ``max_cons``: pyftpdlib's limit on open sockets (control, data and passive
    listeners together) before it answers new control connections with 421.
    ``passive_ports``: use this range instead of picking ``passive_count`` free ports.
    ``threaded``: pyftpdlib's ThreadedFTPServer (an IOLoop per session). Its default
    single IOLoop sometimes never reads a new session's first command when the
    previous session's active data connection closes at the same moment (seen with
    wget in active mode: the new session's USER goes unanswered, with or without
    ftptrio in between; the threaded server never did): the interop tests use it.
    """
    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)
    root = d / "data"
    populate_data_dir(root)
    script = d / "pyftpdlib_server.py"
    script.write_text(_PYFTPDLIB_SCRIPT)
    pasv = passive_ports if passive_ports is not None else free_port_range(passive_count)
    log_path = d / "pyftpdlib.log"
    stderr_path = d / "pyftpdlib.stderr"
    user, password = "ftptrio", "secret"
    err = open(stderr_path, "ab")
    try:
        process = subprocess.Popen(
            [*netns_prefix(netns), sys.executable, str(script), host, user, password, str(root),
             str(pasv.start), str(pasv.stop - 1), str(log_path), str(port), str(max_cons),
             str(read_limit), str(write_limit), "threaded" if threaded else "async"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    finally:
        err.close()

    # Read "PORT n" with a timeout (readline would block forever on a hang).
    result: list[bytes] = []
    stdout = process.stdout
    assert stdout is not None  # stdout=subprocess.PIPE
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = result[0].decode(errors="replace") if result else ""
    m = re.match(r"PORT (\d+)", line)
    if not m:
        stop_process(process)
        raise RuntimeError(f"pyftpdlib did not start (got {line!r}):\n{_tail(stderr_path)}")
    port = int(m.group(1))
    try:
        wait_for_port_in(netns, host, port, timeout=timeout, process=process)
    except (TimeoutError, RuntimeError) as exc:
        stop_process(process)
        raise RuntimeError(f"pyftpdlib did not start: {exc}\n{_tail(stderr_path)}") from None
    return FTPServer(
        host=host,
        port=port,
        user=user,
        password=password,
        root=str(root),
        process=process,
        name="pyftpdlib",
        passive_ports=pasv,
        log_path=str(log_path),
    )
