"""SSH authentication as OpenSSH's client does it.

* keys: the agent's first, then identity files (-i, IdentityFile, or the default
  ``~/.ssh/id_*``); an encrypted file is unlocked with a passphrase, unless the
  agent holds the same key (then the agent's copy signs, nothing is asked);
* password and keyboard-interactive (the server's name, instructions and prompts
  are shown, so one-time codes work), three tries each as with ssh's
  NumberOfPasswordPrompts;
* prompts go to the terminal (/dev/tty) when there is one, else through
  SSH_ASKPASS (honouring SSH_ASKPASS_REQUIRE and DISPLAY as ssh's readpass.c
  does); BatchMode=yes never prompts.
* every question, the host-key question of StrictHostKeyChecking=ask included
  (terminal only), runs in one prompt thread (``Authenticator._in_thread``): the
  connect deadline (ConnectTimeout) pauses while it waits for the user, and a
  cancelled question is woken and waited for.

What was unlocked stays in memory (the ``Authenticator`` of a Tunnel) for
reconnects; nothing is written anywhere. After the first successful login,
asking again is allowed only on a terminal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import subprocess
import sys
import threading
from typing import Any, Callable, Sequence

import asyncssh

from .._text import visible
from .._config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_COUNT_MAX, \
    DEFAULT_KEEPALIVE_INTERVAL, SSHOptions

log = logging.getLogger(__name__)

#: ssh's NumberOfPasswordPrompts default: tries per passphrase, password, kbdint
PROMPT_TRIES = 3
#: ssh's default identity files, in its order
DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk",
                      "id_xmss", "id_dsa")
TTY = "/dev/tty"
DEFAULT_ASKPASS = "/usr/bin/ssh-askpass"


def fingerprint(key: asyncssh.SSHKey | asyncssh.SSHKeyPair) -> str:
    """A key's fingerprint as OpenSSH shows it (``SHA256:...``); a key pair's (an
    agent's or a loaded identity's) from its public data, "?" when that is no plain
    public key (a certificate)."""
    if isinstance(key, asyncssh.SSHKeyPair):
        from asyncssh.public_key import decode_ssh_public_key

        try:
            key = decode_ssh_public_key(key.public_data)
        except (asyncssh.KeyImportError, ValueError):
            return "?"
    return str(key.get_fingerprint("sha256"))


# ---------------------------------------------------------------- prompting

def _run_into(done: concurrent.futures.Future[Any], fn: Callable[..., Any],
              args: tuple[Any, ...]) -> None:
    """Thread body: ``fn(*args)`` into ``done``."""
    if not done.set_running_or_notify_cancel():
        return
    try:
        done.set_result(fn(*args))
    except BaseException as exc:  # the awaiting side re-raises it
        done.set_exception(exc)


class Prompter:
    """Asks the user a question, as ssh's read_passphrase(): the terminal, else
    SSH_ASKPASS. Blocking: call it in a thread."""

    def __init__(self, batch_mode: bool) -> None:
        self.batch_mode = batch_mode
        #: after the first login, only a terminal may be asked (never askpass)
        self.terminal_only = False
        #: the running prompt's wake-up pipe (read end, write end): interrupt() writes
        #: a byte, the prompt reading the terminal then gives up
        self._wake: tuple[int, int] | None = None

    def open_wakeup(self) -> None:
        """A fresh wake-up pipe for the prompt about to run (an interrupt that comes
        before it reads the terminal still ends it)."""
        self.close_wakeup()
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._wake = (read_end, write_end)

    def close_wakeup(self) -> None:
        """Close the wake-up pipe once its prompt has ended."""
        wake, self._wake = self._wake, None
        if wake is not None:
            os.close(wake[0])
            os.close(wake[1])

    def interrupt(self) -> None:
        """End the prompt now running (Ctrl-C while asking): it returns None after
        restoring the terminal's echo, as ssh's read_passphrase does on a signal."""
        if self._wake is None:
            return
        try:
            os.write(self._wake[1], b"x")
        except BlockingIOError:  # already woken
            pass

    @staticmethod
    def has_terminal() -> bool:
        try:
            os.close(os.open(TTY, os.O_RDWR | os.O_NOCTTY))
        except OSError:
            return False
        return True

    def how(self) -> str | None:
        """"tty", "askpass" or None (no way to ask)."""
        if self.batch_mode:
            return None
        tty = self.has_terminal()
        if self.terminal_only:
            return "tty" if tty else None
        allow_askpass = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        use_askpass = False
        require = os.environ.get("SSH_ASKPASS_REQUIRE", "").lower()
        if require == "force":
            use_askpass = allow_askpass = True
        elif require == "prefer":
            use_askpass = allow_askpass
        elif require == "never":
            allow_askpass = False
        if not tty:
            use_askpass = True
        if use_askpass and allow_askpass and self._askpass_program():
            return "askpass"
        return "tty" if tty else None

    @staticmethod
    def _askpass_program() -> str | None:
        program = os.environ.get("SSH_ASKPASS") or DEFAULT_ASKPASS
        return program if os.path.exists(program) or os.sep not in program else None

    def why_not(self) -> str:
        """Why how() is None, for error messages."""
        if self.batch_mode:
            return "BatchMode is on"
        if self.terminal_only:
            return "no terminal to ask on (reconnecting)"
        if os.environ.get("SSH_ASKPASS_REQUIRE", "").lower() == "never":
            return "no terminal, and SSH_ASKPASS_REQUIRE=never forbids SSH_ASKPASS (run " \
                   "on a terminal, use a key or ssh-agent, or unset SSH_ASKPASS_REQUIRE)"
        if not self._askpass_program():
            return "no terminal, and no SSH_ASKPASS program (set SSH_ASKPASS to one, " \
                   "with DISPLAY or SSH_ASKPASS_REQUIRE=force)"
        return "no terminal, and SSH_ASKPASS is not usable (set it, with DISPLAY or " \
               "SSH_ASKPASS_REQUIRE=force)"

    def why_no_terminal_question(self) -> str | None:
        """Why a question for the terminal only cannot be asked (None: it can)."""
        if self.batch_mode:
            return "BatchMode forbids asking"
        if not self.has_terminal():
            return "there is no terminal to ask on"
        return None

    def ask_terminal(self, prompt: str) -> str | None:
        """A question answered on the terminal only, the answer shown as typed (the
        host-key question, as ssh's confirm()); None when BatchMode is on, there is
        no terminal, or the user gave up."""
        return None if self.batch_mode else self._tty(prompt, echo=True)

    def ask(self, prompt: str, echo: bool = False) -> str | None:
        """The answer, or None when nobody can be asked or the user gave up."""
        how = self.how()
        if how == "askpass":
            return self._askpass(prompt)
        if how == "tty":
            return self._tty(prompt, echo)
        return None

    def tell(self, text: str) -> None:
        """Show a server's message (banner, instructions) where prompts go."""
        if not text:
            return
        text = visible(text, newlines=True)
        if not text.endswith("\n"):
            text += "\n"
        if self.how() == "tty":
            try:
                fd = os.open(TTY, os.O_WRONLY | os.O_NOCTTY)
                try:
                    os.write(fd, text.encode("utf-8", "replace"))
                finally:
                    os.close(fd)
                return
            except OSError:
                pass
        sys.stderr.write(text)
        sys.stderr.flush()

    def _askpass(self, prompt: str) -> str | None:
        program = self._askpass_program()
        assert program is not None
        try:
            done = subprocess.run([program, prompt], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, check=False)
        except OSError as exc:
            log.warning("cannot run SSH_ASKPASS %s: %s", program, exc)
            return None
        if done.returncode != 0:
            return None
        return done.stdout.decode("utf-8", "replace").rstrip("\r\n")

    def _tty(self, prompt: str, echo: bool) -> str | None:
        import select
        import termios

        try:
            fd = os.open(TTY, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return None
        try:
            old = termios.tcgetattr(fd)
            if not echo:
                new = list(old)
                new[3] &= ~termios.ECHO
                termios.tcsetattr(fd, termios.TCSANOW, new)
            try:
                os.write(fd, prompt.encode("utf-8", "replace"))
                line = b""
                while not line.endswith(b"\n"):
                    wake = [self._wake[0]] if self._wake is not None else []
                    readable, _, _ = select.select([fd, *wake], [], [])
                    if wake and wake[0] in readable:  # interrupted: give up, echo restored
                        return None
                    chunk = os.read(fd, 1)
                    if not chunk:
                        if not line:
                            return None
                        break
                    line += chunk
            finally:
                if not echo:
                    termios.tcsetattr(fd, termios.TCSANOW, old)
                    os.write(fd, b"\n")
            return line.decode("utf-8", "replace").rstrip("\r\n")
        finally:
            os.close(fd)


# ---------------------------------------------------------------- settings

class Settings:
    """The options of one connection after ssh_config: command line and -o first,
    then ssh_config, then the defaults."""

    def __init__(self, options: SSHOptions, kwargs: dict[str, object]) -> None:
        probe_args: dict[str, object] = {"host": options.host, "client_keys": None,
                                         "config": ()}  # () = ~/.ssh/config, as connect()
        for key in ("port", "username", "config", "tunnel"):
            if key in kwargs:
                probe_args[key] = kwargs[key]
        probe = asyncssh.SSHClientConnectionOptions(**probe_args)
        config = probe.config
        self.host: str = probe.host or options.host
        self.username: str = probe.username
        self.port: int = probe.port
        #: an embedder's SSHOptions.password: given to the final host only (a hop's
        #: options carry none)
        self.given_password = options.password
        self.keepalive_interval = _first(options.keepalive_interval,
                                         config.get("ServerAliveInterval"),
                                         DEFAULT_KEEPALIVE_INTERVAL)
        self.keepalive_count_max = _first(options.keepalive_count_max,
                                          config.get("ServerAliveCountMax"),
                                          DEFAULT_KEEPALIVE_COUNT_MAX)
        self.connect_timeout = float(_first(options.connect_timeout,
                                            config.get("ConnectTimeout"),
                                            DEFAULT_CONNECT_TIMEOUT))
        self.identities_only = bool(_first(options.identities_only,
                                           config.get("IdentitiesOnly"), False))
        self.pubkey = bool(_first(options.pubkey_auth, config.get("PubkeyAuthentication"),
                                  True))
        self.password = bool(_first(options.password_auth,
                                    config.get("PasswordAuthentication"), True))
        self.kbdint = bool(_first(options.kbdint_auth,
                                  config.get("KbdInteractiveAuthentication"),
                                  config.get("ChallengeResponseAuthentication"), True))
        agent: object = options.identity_agent or config.get("IdentityAgent")
        if agent is None:
            agent = os.environ.get("SSH_AUTH_SOCK", "")
        self.agent_path = "" if str(agent).lower() == "none" else \
            os.path.expanduser(str(agent))
        files: Sequence[str]
        if options.client_keys is not None:
            files = options.client_keys
        else:
            configured = config.get("IdentityFile")
            if configured:
                files = [str(f) for f in configured]  # type: ignore[attr-defined]
            else:
                files = [os.path.join("~", ".ssh", name) for name in DEFAULT_IDENTITIES]
                files = [f for f in files if os.path.exists(os.path.expanduser(f))]
        self.identity_files = [os.path.expanduser(f) for f in files]
        self.explicit_identities = options.client_keys is not None or bool(
            config.get("IdentityFile"))


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


# ---------------------------------------------------------------- keys

class Authenticator:
    """Credentials of one Tunnel, kept in memory across reconnects."""

    def __init__(self, options: SSHOptions) -> None:
        self.options = options
        self.prompter = Prompter(options.batch_mode)
        #: identity file -> its unlocked private key
        self._keys: dict[str, asyncssh.SSHKey] = {}
        #: identity files not used, with the reason (named when login fails)
        self.notes: dict[str, str] = {}
        #: passwords typed at a prompt, by (user, host, port): each goes only to the
        #: host it was typed for (never to another ProxyJump hop)
        self._passwords: dict[tuple[str, str, int], str] = {}
        #: the given password (SSHOptions.password) answered a keyboard-interactive
        #: prompt already (a wrong one is not sent again)
        self._kbdint_given_tried = False
        #: notes for the failure message of the current attempt
        self.failure_notes: list[str] = []
        #: auth methods the server said can continue (for the failure message)
        self.server_methods: list[str] = []
        #: called around each prompt (the connect deadline pauses meanwhile)
        self.prompt_started: Callable[[], None] = lambda: None
        self.prompt_ended: Callable[[], None] = lambda: None

    def finished_login(self) -> None:
        """After the first login, prompts go to a terminal only (never SSH_ASKPASS)."""
        self.prompter.terminal_only = True

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking prompt in a thread. Cancelled (Ctrl-C): the prompt is woken
        and waited for, so the terminal gets its echo back and no thread is left
        reading it (the process could not exit before someone pressed Enter)."""
        self.prompt_started()
        # the pipe exists before the prompt starts: a Ctrl-C that comes before it
        # reads the terminal must still end it
        self.prompter.open_wakeup()
        done = concurrent.futures.Future[Any]()
        thread = threading.Thread(target=_run_into, args=(done, fn, args), daemon=True,
                                  name="ftptrio-prompt")
        thread.start()
        try:
            return await asyncio.wrap_future(done)
        except BaseException:
            self.prompter.interrupt()
            thread.join(timeout=5)
            raise
        finally:
            if not thread.is_alive():  # (an askpass program may outlive the join)
                self.prompter.close_wakeup()
            self.prompt_ended()

    async def ask_terminal(self, prompt: str) -> str | None:
        """Prompter.ask_terminal through the prompt thread every question uses (asyncio
        coroutine): ConnectTimeout pauses while it waits for the user, and a cancelled
        question is woken and waited for, so no thread goes on reading the terminal."""
        answer: str | None = await self._in_thread(self.prompter.ask_terminal, prompt)
        return answer

    async def agent_keys(self, settings: Settings) -> tuple[Any, list[Any]]:
        """(agent client or None, its keys)."""
        if not settings.agent_path or not settings.pubkey:
            return None, []
        try:
            agent = await asyncssh.connect_agent(settings.agent_path)
        except (OSError, asyncssh.Error) as exc:
            log.debug("ssh-agent at %s not usable: %s", settings.agent_path, exc)
            return None, []
        if agent is None:
            return None, []
        try:
            keys = list(await agent.get_keys())
        except (OSError, asyncssh.Error, ValueError) as exc:
            log.debug("ssh-agent at %s: cannot list keys: %s", settings.agent_path, exc)
            agent.close()
            return None, []
        return agent, keys

    async def key_list(self, settings: Settings, agent_keys: list[Any]) -> list[Any]:
        """The keys to offer, in order: the agent's (only those of identity files
        with IdentitiesOnly), then identity files, decrypted when needed."""
        if not settings.pubkey:
            return []
        offered: list[Any] = []
        file_pubs: dict[str, Any] = {}
        for path in settings.identity_files:
            pub = _read_public(path)
            if pub is not None:
                file_pubs[path] = pub
        for key in agent_keys:
            if settings.identities_only and not any(
                    pub.public_data == key.public_data for pub in file_pubs.values()):
                continue
            offered.append(key)
        for path in settings.identity_files:
            pub = file_pubs.get(path)
            if pub is not None and any(k.public_data == pub.public_data for k in agent_keys):
                log.debug("identity file %s: the agent holds this key; using the agent's "
                          "copy", path)
                continue
            key = await self._unlock(path, settings)
            if key is not None:
                offered.append(asyncssh.load_keypairs([key])[0])
        return offered

    async def _unlock(self, path: str, settings: Settings) -> asyncssh.SSHKey | None:
        if path in self._keys:
            return self._keys[path]
        if not os.path.exists(path):
            if settings.explicit_identities:
                log.warning("identity file %s not accessible: No such file or directory", path)
            return None
        key: asyncssh.SSHKey | None
        try:
            key = asyncssh.read_private_key(path)
        except asyncssh.KeyImportError as exc:
            if "assphrase" not in str(exc):
                log.warning("identity file %s: %s", path, exc)
                return None
            key = await self._ask_passphrase(path)
        except OSError as exc:
            log.warning("identity file %s not accessible: %s", path, exc.strerror or exc)
            return None
        if key is not None:
            log.debug("identity file %s type %s %s", path, key.get_algorithm(),
                      fingerprint(key))
            self._keys[path] = key
            self.notes.pop(path, None)
        return key

    async def _ask_passphrase(self, path: str) -> asyncssh.SSHKey | None:
        if self.prompter.how() is None:
            self.notes[path] = f"encrypted, no passphrase asked: {self.prompter.why_not()}"
            log.debug("identity file %s: %s", path, self.notes[path])
            return None
        prompt = f"Enter passphrase for key '{path}': "
        for _ in range(PROMPT_TRIES):
            passphrase = await self._in_thread(self.prompter.ask, prompt)
            if not passphrase:
                log.debug("no passphrase given for %s; trying the next key", path)
                self.notes[path] = "encrypted, no passphrase given"
                return None
            try:
                key: asyncssh.SSHKey = asyncssh.read_private_key(path, passphrase)
                return key
            except (asyncssh.KeyEncryptionError, asyncssh.KeyImportError) as exc:
                if "ncorrect passphrase" not in str(exc):  # e.g. bcrypt missing
                    self.notes[path] = f"cannot be decrypted: {exc}"
                    log.warning("identity file %s: %s", path, self.notes[path])
                    return None
                log.debug("bad passphrase given for %s, try again...", path)
        self.notes[path] = "encrypted, wrong passphrase"
        return None

    def client_factory(self, settings: Settings, keys: list[Any]) -> Callable[[], Any]:
        return lambda: _Client(self, settings, list(keys))

    # -------------------------------------------------------- password, kbdint

    async def password(self, settings: Settings, attempt: int) -> str | None:
        target = (settings.username, settings.host, settings.port)
        known = self._passwords.get(target, settings.given_password)
        if attempt == 0 and known is not None:
            return known
        if attempt >= PROMPT_TRIES:
            return None
        if self.prompter.how() is None:
            self.failure_notes.append(f"a password is needed: {self.prompter.why_not()}")
            return None
        if attempt:
            self.prompter.tell("Permission denied, please try again.")
        answer = await self._in_thread(
            self.prompter.ask, f"{settings.username}@{settings.host}'s password: ")
        if answer is None:
            return None
        self._passwords[target] = answer
        return str(answer)

    async def kbdint(self, settings: Settings, name: str, instructions: str,
                     prompts: Sequence[tuple[str, bool]]) -> list[str] | None:
        if not prompts:  # a message only
            self.prompter.tell("\n".join(filter(None, (name, instructions))))
            return []
        if (settings.given_password is not None and not self._kbdint_given_tried
                and len(prompts) == 1 and not prompts[0][1]):
            # a given password answers one hidden prompt once (PAM's "Password:"),
            # as asyncssh does for its password argument
            self._kbdint_given_tried = True
            return [settings.given_password]
        if self.prompter.how() is None:
            self.failure_notes.append(
                f"keyboard-interactive answers are needed: {self.prompter.why_not()}")
            return None
        self.prompter.tell("\n".join(filter(None, (name, instructions))))
        answers = []
        for text, echo in prompts:
            answer = await self._in_thread(
                self.prompter.ask, f"({settings.username}@{settings.host}) {visible(text)}",
                echo)
            if answer is None:
                return None
            answers.append(answer)
        return answers


def _read_public(path: str) -> Any:
    try:
        return asyncssh.read_public_key(path + ".pub")
    except (OSError, asyncssh.KeyImportError, ValueError):
        return None


class _Client(asyncssh.SSHClient):
    """asyncssh's client callbacks: keys one by one (logged as ssh -v does),
    password and keyboard-interactive through the Authenticator."""

    def __init__(self, auth: Authenticator, settings: Settings, keys: list[Any]) -> None:
        self._auth = auth
        self._settings = settings
        self._keys = keys
        self._conn: Any = None
        self._passwords = 0
        self._kbdints = 0
        self._methods_logged: tuple[str, ...] = ()

    def connection_made(self, conn: Any) -> None:
        self._conn = conn

    def _log_methods(self) -> None:
        if self._conn is None:
            return
        methods = tuple(self._conn.get_server_auth_methods())
        if methods and methods != self._methods_logged:
            self._methods_logged = methods
            self._auth.server_methods = list(methods)
            log.debug("authentications that can continue: %s", ",".join(methods))

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self._auth.prompter.tell(msg)

    def public_key_auth_requested(self) -> Any:
        self._log_methods()
        if not self._keys:
            return None
        key = self._keys.pop(0)
        source = "agent" if isinstance(key, asyncssh.SSHAgentKeyPair) else "file"
        comment = key.get_comment() or ""
        log.debug("offering public key: %s %s %s (%s)", comment, key.algorithm.decode(),
                  fingerprint(key), source)
        return [key]

    async def password_auth_requested(self) -> str | None:
        self._log_methods()
        if not self._settings.password:
            return None
        attempt, self._passwords = self._passwords, self._passwords + 1
        log.debug("trying password authentication (attempt %d)", attempt + 1)
        return await self._auth.password(self._settings, attempt)

    def kbdint_auth_requested(self) -> str | None:
        self._log_methods()
        if not self._settings.kbdint or self._kbdints >= PROMPT_TRIES:
            return None
        self._kbdints += 1
        log.debug("trying keyboard-interactive authentication (attempt %d)", self._kbdints)
        return ""

    async def kbdint_challenge_received(self, name: str, instructions: str, lang: str,
                                        prompts: Sequence[tuple[str, bool]],
                                        ) -> list[str] | None:
        return await self._auth.kbdint(self._settings, name, instructions, prompts)


def auth_kwargs(options: SSHOptions, settings: Settings) -> dict[str, object]:
    """asyncssh.connect arguments for authentication and the resolved options."""
    kwargs: dict[str, object] = {
        "client_keys": None,  # keys come one by one from _Client
        "agent_path": None,
        "ignore_encrypted": True,
        "public_key_auth": settings.pubkey,
        "password_auth": settings.password,
        "kbdint_auth": settings.kbdint,
        "keepalive_interval": settings.keepalive_interval or None,
        "keepalive_count_max": settings.keepalive_count_max,
        "connect_timeout": None,  # ftptrio's own deadline, paused while prompting
    }
    if options.preferred_auth is not None:
        kwargs["preferred_auth"] = list(options.preferred_auth)
    if options.compression is not None:
        kwargs["compression_algs"] = (["zlib@openssh.com", "zlib", "none"]
                                      if options.compression else ["none"])
    if options.address_family is not None:
        import socket

        kwargs["family"] = {"any": socket.AF_UNSPEC, "inet": socket.AF_INET,
                            "inet6": socket.AF_INET6}[options.address_family]
    return kwargs


def denied_message(where: str, auth: Authenticator, methods: str) -> str:
    """ssh's "Permission denied (publickey,password)." plus why keys or
    prompts could not be used."""
    text = f"{where}: Permission denied ({visible(methods)})."  # the server's words
    notes = [f"identity file {path}: {why}" for path, why in auth.notes.items()]
    notes += auth.failure_notes
    if notes:
        text += " " + "; ".join(dict.fromkeys(notes))
    return text
