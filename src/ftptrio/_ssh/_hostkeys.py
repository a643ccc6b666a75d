"""Host-key trust: OpenSSH's StrictHostKeyChecking (yes, accept-new, ask) on
top of asyncssh's own known_hosts verification.

asyncssh checks the server's key against known_hosts itself, under the host
name it verifies (``HostKeyAlias`` if ssh_config sets one, else the host), the
peer address and the port, with every known_hosts file and marker
(@revoked, @cert-authority). Only when the key is not trusted that way does it
ask the client's ``validate_host_public_key`` hook. ftptrio's trust on first
use lives in that hook and asks asyncssh's ``match_known_hosts`` with exactly
the arguments the verification used whether the host has *any* entry: only a
host without one is "unknown" (accepted with accept-new, asked about with
ask); a host with entries but not this key has a changed key and is refused.

Which files are read follows OpenSSH, never asyncssh's shortcuts: the user files
are ``-o UserKnownHostsFile`` (``none``: no user file), else ssh_config's
UserKnownHostsFile, else ``~/.ssh/known_hosts`` and ``~/.ssh/known_hosts2``; the
global files are ssh_config's GlobalKnownHostsFile, else
``/etc/ssh/ssh_known_hosts{,2}``. Files that do not exist are read as empty: a
configured file that is missing never falls back to the default one. Host keys
are always verified (asyncssh's "no verification" is never asked for, whatever
the configuration): StrictHostKeyChecking=no accepts and records an *unknown* key
as OpenSSH does, but a *changed* key is refused in every mode (OpenSSH disables
port forwarding then, and forwarding is all ftptrio does).

A key accepted on first use is pinned in memory for the life of the Tunnel
(reconnects must present the same key even if known_hosts could not be
written, e.g. /dev/null), then appended to the first known_hosts file:
newline-terminated, O_APPEND|O_NOFOLLOW, a created directory 0700, and read
back to confirm the entry matches.
"""

from __future__ import annotations

import base64
import dataclasses
import getpass
import hashlib
import hmac
import logging
import os
import re
import socket
import stat
from typing import Callable, Literal, Sequence

import asyncssh
import trio

from .._config import SSHOptions, StrictHostKeyChecking
from .._errors import ConfigError, HostKeyError
from ._auth import Authenticator, fingerprint
from ._bridge import aio
from ._sshconfig import ssh_config_paths

log = logging.getLogger(__name__)

# asyncssh's ssh_config parser ignores HashKnownHosts: read it as OpenSSH's yes/no
_client_config = asyncssh.config.SSHClientConfig
_client_config._handlers.setdefault(
    "hashknownhosts", ("HashKnownHosts", asyncssh.config.SSHConfig._set_bool))

Mode = StrictHostKeyChecking
Verdict = Literal["unknown", "changed", "changed-since-first-use", "accepted", "pinned", "error"]

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
#: OpenSSH's defaults of UserKnownHostsFile and GlobalKnownHostsFile
DEFAULT_USER_FILES = (DEFAULT_KNOWN_HOSTS, "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_FILES = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
#: known_hosts data that trusts no key (asyncssh reads b"" as "use the default file")
NO_TRUSTED_KEYS = b"# no known_hosts file exists\n"


def key_type(key: asyncssh.SSHKey) -> str:
    """OpenSSH's name of a key type in messages: ED25519, ECDSA, RSA, ..."""
    alg = key.get_algorithm()
    if alg.startswith("ecdsa-"):
        return "ECDSA"
    if alg.startswith("sk-"):
        return "ED25519-SK" if "ed25519" in alg else "ECDSA-SK"
    return alg.removeprefix("ssh-").split("@")[0].upper()


def host_pattern(host: str, port: int | None) -> str:
    """The known_hosts name of a host, as OpenSSH writes it."""
    return host if port in (None, 22) else f"[{host}]:{port}"


@dataclasses.dataclass
class Check:
    """What the hook saw and decided during one connection attempt."""

    known_hosts: object
    #: ssh_config HostKeyAlias: known_hosts names the host by it, without a port
    alias: str | None = None
    verdict: Verdict | None = None
    host: str = ""
    addr: str = ""
    port: int | None = None
    key: asyncssh.SSHKey | None = None
    pinned: asyncssh.SSHKey | None = None
    error: str = ""

    @property
    def pattern(self) -> str:
        return self.host if self.host == self.alias else host_pattern(self.host, self.port)


class HostKeyPolicy:
    """StrictHostKeyChecking for one Tunnel, with the keys it accepted on first use."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self._pins: dict[tuple[str, int | None], asyncssh.SSHKey] = {}

    def pin(self, host: str, port: int | None, key: asyncssh.SSHKey) -> None:
        self._pins[(host, _port(port))] = key

    def decide(self, check: Check, host: str, addr: str, port: int | None,
               key: asyncssh.SSHKey) -> bool:
        """The hook's answer for a key that known_hosts does not trust."""
        check.host, check.addr, check.port, check.key = host, addr, _port(port), key
        if has_entries(check.known_hosts, host, addr, port):
            check.verdict = "changed"
            return False
        pinned = self._pins.get((host, _port(port)))
        if pinned is not None:
            if pinned.public_data == key.public_data:
                check.verdict = "pinned"
                return True
            check.verdict, check.pinned = "changed-since-first-use", pinned
            return False
        if self.mode in ("accept-new", "no"):
            self.pin(host, port, key)
            check.verdict = "accepted"
            return True
        check.verdict = "unknown"
        return False

    def client_factory(self, check: Check, base: Callable[[], asyncssh.SSHClient] | None = None
                       ) -> Callable[[], asyncssh.SSHClient]:
        """A client factory whose clients decide host keys by this policy; ``base``
        makes the client (with the authentication callbacks), else a plain one."""
        policy = self

        def validate(host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            try:
                return policy.decide(check, host, addr, port, key)
            except Exception as exc:  # noqa: BLE001 - refuse, never crash asyncssh
                check.verdict, check.error = "error", str(exc) or type(exc).__name__
                log.warning("host key check failed: %s", check.error)
                return False

        def factory() -> asyncssh.SSHClient:
            client = base() if base is not None else asyncssh.SSHClient()
            client.validate_host_public_key = validate  # type: ignore[method-assign]
            return client

        return factory


def _port(port: int | None) -> int | None:
    return None if port in (None, 22) else port


def has_entries(known_hosts: object, host: str, addr: str, port: int | None) -> bool:
    """Whether known_hosts has any entry (key, @cert-authority, @revoked, X.509)
    for the host, matched exactly as asyncssh's verification matches it."""
    if known_hosts is None:
        return False
    return any(asyncssh.match_known_hosts(known_hosts, host, addr, _port(port)))  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class KnownHostsFiles:
    """The known_hosts files of one host, as OpenSSH chooses them."""

    user: tuple[str, ...]
    global_: tuple[str, ...]
    #: ssh_config's HostKeyAlias for the host
    alias: str | None = None
    #: HashKnownHosts: first-use entries written hashed (|1|salt|hash), as OpenSSH does
    hashed: bool = False

    @property
    def files(self) -> tuple[str, ...]:
        return self.user + self.global_

    @property
    def record_to(self) -> str | None:
        """Where keys accepted on first use are written (the first user file)."""
        return self.user[0] if self.user else None

    def present(self) -> list[str]:
        return [f for f in self.files if os.path.isfile(f)]

    def describe(self) -> str:
        """The files by name, for messages: the ones that do not exist marked."""
        if not self.files:
            return "no known_hosts file (UserKnownHostsFile and GlobalKnownHostsFile none)"
        return ", ".join(f if os.path.isfile(f) else f"{f} (not found)" for f in self.files)


def expand_tokens(path: str, tokens: dict[str, str]) -> str:
    """ssh_config(5) TOKENS (``%h``, ``%k``, ``%d``, ...) and ``${VAR}`` in a
    known_hosts path, as OpenSSH expands them; ``~`` too. An unknown token or an
    unset variable is a ConfigError (OpenSSH refuses them as well)."""
    def env(match: re.Match[str]) -> str:
        if match.group(1) not in os.environ:
            raise ConfigError(f"known_hosts path {path!r}: environment variable "
                              f"{match.group(1)} is not set")
        return os.environ[match.group(1)]

    def token(match: re.Match[str]) -> str:
        if match.group(1) not in tokens:
            raise ConfigError(f"known_hosts path {path!r}: unknown token %{match.group(1)}")
        return tokens[match.group(1)]

    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", env, path)
    return os.path.expanduser(re.sub(r"%(.)", token, text))


def _file_list(value: object, default: Sequence[str],
               tokens: dict[str, str]) -> tuple[str, ...]:
    """An ssh_config file-list value: missing -> default; [] (``none``) -> none."""
    if value is None or value == ():
        chosen: Sequence[str] = default
    elif isinstance(value, str):
        chosen = [] if value.lower() == "none" else [value]
    else:
        chosen = [str(f) for f in value]  # type: ignore[attr-defined]
    return tuple(expand_tokens(f, tokens) for f in chosen)


def known_hosts_files(host: str, port: int | None, config_files: Sequence[str] | None,
                      known_hosts: str | None, global_known_hosts: str | None = None,
                      hash_known_hosts: bool | None = None,
                      host_key_alias: str | None = None) -> KnownHostsFiles:
    """The user and global known_hosts files for ``host``: the command line's
    (``known_hosts``: a path, or ``none``), else ssh_config's, else OpenSSH's defaults."""
    # config=() as asyncssh.connect passes it: ~/.ssh/config when no file is given
    kwargs: dict[str, object] = {"host": host,
                                 "config": list(config_files) if config_files else ()}
    if port is not None:
        kwargs["port"] = port
    if host_key_alias is not None:
        kwargs["host_key_alias"] = host_key_alias
    probe = asyncssh.SSHClientConnectionOptions(**kwargs)
    config = probe.config
    tokens = {"%": "%", "d": os.path.expanduser("~"), "u": getpass.getuser(),
              "h": str(probe.host), "n": host, "p": str(probe.port), "r": str(probe.username),
              "k": str(probe.host_key_alias or host), "i": str(os.getuid()),
              "l": socket.gethostname(), "L": socket.gethostname().split(".")[0]}
    user = _file_list(known_hosts if known_hosts is not None
                      else config.get("UserKnownHostsFile"), DEFAULT_USER_FILES, tokens)
    global_ = _file_list(global_known_hosts if global_known_hosts is not None
                         else config.get("GlobalKnownHostsFile"), DEFAULT_GLOBAL_FILES, tokens)
    hashed = hash_known_hosts if hash_known_hosts is not None else \
        bool(config.get("HashKnownHosts", False))
    return KnownHostsFiles(user, global_, probe.host_key_alias, hashed)


def resolved_known_hosts(host: str, port: int | None, config_files: Sequence[str] | None,
                         known_hosts: str | None, global_known_hosts: str | None = None,
                         hash_known_hosts: bool | None = None,
                         host_key_alias: str | None = None,
                         ) -> tuple[object, KnownHostsFiles]:
    """What asyncssh's connection checks (``known_hosts=``: the files that exist, or
    NO_TRUSTED_KEYS; never None, which turns verification off, nor an empty value,
    which asyncssh replaces by ~/.ssh/known_hosts) and the files by name."""
    found = known_hosts_files(host, port, config_files, known_hosts, global_known_hosts,
                              hash_known_hosts, host_key_alias)
    return (found.present() or NO_TRUSTED_KEYS), found


def matching_lines(files: Sequence[str], host: str, addr: str,
                   port: int | None) -> list[tuple[str, int]]:
    """(file, line number) of every known_hosts entry for the host."""
    found = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                if any(asyncssh.match_known_hosts(text.encode(), host, addr, _port(port))):
                    found.append((path, number))
            except (ValueError, asyncssh.KeyImportError):
                continue
    return found


# ----------------------------------------------------------------- messages

def unknown_host_message(check: Check, where: str, files: KnownHostsFiles, *,
                         not_asked: str = "") -> str:
    """``not_asked``: why StrictHostKeyChecking=ask could not ask (e.g. "there is no
    terminal to ask on")."""
    assert check.key is not None
    first = (f"Host key verification failed for {where}: the authenticity of host "
             f"'{check.pattern}' can't be established"
             + (f" and {not_asked}" if not_asked else "") + ".\n")
    return (first
            + f"{key_type(check.key)} key fingerprint is {fingerprint(check.key)}.\n"
            + f"No entry for it in {files.describe()}. Compare the fingerprint with the "
              "one the SSH server's administrator gives you (ssh-keygen -lf on the "
              "server's host key), then add the key to "
            + (files.record_to or "a known_hosts file") + ", or connect once with "
              "-o StrictHostKeyChecking=ask (on a terminal) or "
              "-o StrictHostKeyChecking=accept-new.")


def changed_host_message(check: Check, where: str, known: KnownHostsFiles,
                         mode: Mode = "yes") -> str:
    assert check.key is not None
    bar = "@" * 59
    if check.verdict == "changed-since-first-use":
        offending = []
        summary = "the key accepted on first use in this run"
    else:
        offending = matching_lines(known.files, check.host, check.addr, check.port)
        summary = (", ".join(f"{path}:{number}" for path, number in offending)
                   or known.describe())
    lines = [f"host key of {where} ('{check.pattern}') has CHANGED: it does not match "
             f"{summary}; refusing to connect",
             bar,
             "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
             bar,
             "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
             "Someone could be eavesdropping on you right now (man-in-the-middle attack)!",
             "It is also possible that a host key has just been changed.",
             f"The fingerprint for the {key_type(check.key)} key sent by the remote host "
             f"{where} is",
             f"{fingerprint(check.key)}.",
             "Please contact your system administrator."]
    if check.verdict == "changed-since-first-use" and check.pinned is not None:
        lines.append(f"This run accepted a different {key_type(check.pinned)} key "
                     f"({fingerprint(check.pinned)}) for '{check.pattern}' on first use.")
    else:
        lines.append(f"Add correct host key in {known.record_to or known.files[0]} "
                     "to get rid of this message.")
        for path, number in offending:
            lines.append(f"Offending key for '{check.pattern}' in {path}:{number}")
        if not offending:
            lines.append(f"Known entries for '{check.pattern}' in {known.describe()}")
    if mode == "no":
        lines.append("StrictHostKeyChecking=no accepts unknown keys, never changed ones: "
                     "OpenSSH disables port forwarding for a host whose key changed, and "
                     "forwarding is all ftptrio does.")
    else:
        lines.append(f"Host key for {check.pattern} has changed and you have requested "
                     "strict checking.")
    lines.append("Host key verification failed.")
    return "\n".join(lines)


# ----------------------------------------------------------------- recording

def hashed_pattern(pattern: str) -> str:
    """OpenSSH's hashed known_hosts name: ``|1|base64(salt)|base64(HMAC-SHA1(salt, name))``."""
    salt = os.urandom(20)
    digest = hmac.new(salt, pattern.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def record_first_use(path: str, pattern: str, key: asyncssh.SSHKey,
                     check: Check, hashed: bool = False) -> bool:
    """Append ``pattern key`` to known_hosts (the name hashed with HashKnownHosts);
    True if reading it back confirms it."""
    name = hashed_pattern(pattern) if hashed else pattern
    line = f"{name} {key.export_public_key().decode().strip()}\n"
    try:
        _make_private_dirs(os.path.dirname(path) or ".")
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.warning("cannot record the host key of %s in %s: %s%s", pattern, path,
                    exc.strerror or exc,
                    " (a symbolic link: not followed)" if _is_symlink(path) else "")
        return False
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
            line = "\n" + line  # the last line was not terminated
        os.write(fd, line.encode())
    except OSError as exc:
        log.warning("cannot record the host key of %s in %s: %s", pattern, path,
                    exc.strerror or exc)
        return False
    finally:
        os.close(fd)
    try:
        confirmed = key in asyncssh.match_known_hosts(path, check.host, check.addr,
                                                      check.port)[0]
    except (OSError, ValueError, asyncssh.KeyImportError):
        confirmed = False
    if not confirmed:
        log.warning("the host key of %s could not be confirmed in %s; it is kept in "
                    "memory for reconnects of this run only", pattern, path)
    return confirmed


def _is_symlink(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _make_private_dirs(directory: str) -> None:
    """Create ``directory`` and missing parents with mode 0700 (as ssh does for ~/.ssh)."""
    if os.path.isdir(directory):
        return
    parent = os.path.dirname(os.path.abspath(directory))
    if parent != directory:
        _make_private_dirs(parent)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass


# ----------------------------------------------------------------- asking

async def ask_user(auth: Authenticator, check: Check) -> bool:
    """StrictHostKeyChecking=ask: OpenSSH's question, on the terminal only, through the
    Authenticator's prompt path (as passwords: ConnectTimeout pauses meanwhile, and a
    cancelled question leaves no thread reading the terminal). False: the answer was
    no, or none came (end of input)."""
    assert check.key is not None
    expected = fingerprint(check.key)
    prompt = (f"The authenticity of host '{check.pattern} ({check.addr})' can't be "
              "established.\n"
              f"{key_type(check.key)} key fingerprint is {expected}.\n"
              "This key is not known by any other names.\n"
              "Are you sure you want to continue connecting (yes/no/[fingerprint])? ")
    while True:
        answer = await aio(auth.ask_terminal)(prompt)
        if answer is None:
            return False
        answer = answer.strip()
        if answer.lower() == "yes" or answer == expected:
            return True
        if answer.lower() == "no":
            return False
        prompt = "Please type 'yes', 'no' or the fingerprint: "


def permanently_added(pattern: str, key: asyncssh.SSHKey, recorded: bool) -> str:
    if recorded:
        return (f"Warning: Permanently added '{pattern}' ({key_type(key)}) to the list "
                "of known hosts.")
    return (f"Warning: accepted '{pattern}' ({key_type(key)}) for this run only "
            "(it could not be added to the list of known hosts).")


# ----------------------------------------------------------------- connecting

async def connect_verified(options: SSHOptions, kwargs: dict[str, object],
                           policy: HostKeyPolicy, where: str, auth: Authenticator,
                           ) -> asyncssh.SSHClientConnection:
    """asyncssh.connect with ``policy``'s host-key checking (every mode verifies:
    see the module's doc); HostKeyError with OpenSSH's messages when the key is
    refused. StrictHostKeyChecking=ask asks through ``auth`` (see ask_user)."""
    known_hosts, files = await trio.to_thread.run_sync(
        resolved_known_hosts, options.host, options.port, ssh_config_paths(options) or None,
        options.known_hosts, options.global_known_hosts, options.hash_known_hosts,
        options.host_key_alias)
    for attempt in range(2):  # a second time after the user said yes (ask)
        check = Check(known_hosts, files.alias)
        try:
            conn = await aio(asyncssh.connect)(
                options.host, **{**kwargs, "known_hosts": known_hosts,
                                 "client_factory": policy.client_factory(
                                     check, kwargs.get("client_factory"))})  # type: ignore[arg-type]
        except asyncssh.HostKeyNotVerifiable as exc:
            if check.verdict in ("changed", "changed-since-first-use"):
                raise _refused(changed_host_message(check, where, files, policy.mode), check,
                               changed=True) from exc
            if check.verdict != "unknown":
                raise _refused(f"{where}: host key not verified ({exc.reason}); check "
                               f"the known_hosts files ({files.describe()})", check) from exc
            if policy.mode != "ask" or attempt:
                raise _refused(unknown_host_message(check, where, files), check) from exc
            not_asked = auth.prompter.why_no_terminal_question()
            if not_asked is not None:
                raise _refused(unknown_host_message(check, where, files, not_asked=not_asked),
                               check) from exc
            if not await ask_user(auth, check):
                raise _refused(f"Host key verification failed for {where}: "
                               "the host key was not accepted.", check) from exc
            assert check.key is not None
            policy.pin(check.host, check.port, check.key)
            _remember(files, check)
            continue
        if check.verdict == "accepted":
            _remember(files, check)
        return conn
    raise AssertionError("unreachable")


def _refused(message: str, check: Check, *, changed: bool = False) -> HostKeyError:
    return HostKeyError(message, changed=changed,
                        fingerprint=fingerprint(check.key) if check.key is not None else "")


def _remember(files: KnownHostsFiles, check: Check) -> None:
    assert check.key is not None
    path = files.record_to
    recorded = (record_first_use(path, check.pattern, check.key, check, files.hashed)
                if path is not None else False)
    log.warning("%s", permanently_added(check.pattern, check.key, recorded))


__all__ = ["connect_verified", "Check", "HostKeyPolicy", "KnownHostsFiles", "Mode", "ask_user", "changed_host_message",
           "fingerprint", "has_entries", "host_pattern", "key_type",
           "known_hosts_files", "permanently_added", "record_first_use", "resolved_known_hosts",
           "unknown_host_message"]
