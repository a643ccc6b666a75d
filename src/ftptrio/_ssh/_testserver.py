"""An in-process asyncssh SSH server for tests, the demo, benches and examples.

Use it through ``ftptrio.testing`` (test helpers, not part of the public API);
it lives here because only the SSH layer imports asyncssh and trio_asyncio.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import asyncssh
import trio
import trio_asyncio

from ._relay import relayed_connection


@dataclass
class SSHServerInfo:
    """A running in-process SSH server: where it listens, how to log in, and
    what it was asked for."""

    host: str
    port: int
    username: str
    client_key: Any  # asyncssh.SSHKey
    host_key: Any
    known_hosts: str  # path of a known_hosts file naming this server
    client_key_path: str = ""  # the client key as an OpenSSH private key file
    #: (host, port) of every direct-tcpip the server was asked for
    direct_requests: list[tuple[str, int]] = field(default_factory=list)
    #: (originator host, port) of every direct-tcpip request, in order
    direct_originators: list[tuple[str, int]] = field(default_factory=list)
    #: (host, port) of every tcpip-forward the server was asked for
    forward_requests: list[tuple[str, int]] = field(default_factory=list)
    #: False: direct-tcpip refused as OpenSSH's sshd refuses it with AllowTcpForwarding
    #: no ("administratively prohibited: open failed")
    allow_direct: bool = True
    #: False: tcpip-forward requests refused
    allow_remote_forward: bool = True
    connections: list[Any] = field(default_factory=list)
    acceptor: Any = None  # asyncssh.SSHAcceptor

    def change_host_key(self, key: Any = None) -> Any:
        """Serve new connections with another host key (a changed host key, as
        after a reinstall or under a man-in-the-middle); drop the current ones
        so that clients reconnect. Returns the new key."""
        self.host_key = key or asyncssh.generate_private_key("ssh-ed25519")
        self.acceptor.update(server_host_keys=[self.host_key])
        for conn in self.connections:
            conn.close()
        return self.host_key
    #: password / keyboard-interactive logins (None: public keys only)
    password: str | None = None
    #: keyboard-interactive: (name, instructions, [(prompt, echo, expected answer)])
    kbdint: tuple[str, str, list[tuple[str, bool, str]]] | None = None
    #: every keyboard-interactive answer list the server received
    kbdint_answers: list[list[str]] = field(default_factory=list)
    #: every (username, password) the server was sent
    passwords_tried: list[tuple[str, str]] = field(default_factory=list)
    #: more password logins: user -> password (each user may log in with its own)
    passwords: dict[str, str] = field(default_factory=dict)
    #: the directory the sftp subsystem serves as "/" (None: no sftp subsystem)
    sftp_root: str | None = None
    #: the user of every SFTP session started, in order
    sftp_sessions: list[str] = field(default_factory=list)


def _make_server_class(info: SSHServerInfo) -> type[asyncssh.SSHServer]:
    class _Server(asyncssh.SSHServer):
        def connection_made(self, conn: Any) -> None:
            info.connections.append(conn)

        def connection_lost(self, exc: Exception | None) -> None:
            pass

        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return info.password is None and info.kbdint is None

        def password_auth_supported(self) -> bool:
            return info.password is not None or bool(info.passwords)

        def validate_password(self, username: str, password: str) -> bool:
            info.passwords_tried.append((username, password))
            if username in info.passwords:
                return password == info.passwords[username]
            return (username == info.username and info.password is not None
                    and password == info.password)

        def kbdint_auth_supported(self) -> bool:
            return info.kbdint is not None

        def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
            assert info.kbdint is not None
            name, instructions, prompts = info.kbdint
            return name, instructions, "", [(text, echo) for text, echo, _ in prompts]

        def validate_kbdint_response(self, username: str, responses: Any) -> bool:
            assert info.kbdint is not None
            info.kbdint_answers.append(list(responses))
            return username == info.username and list(responses) == [
                answer for _, _, answer in info.kbdint[2]]

        def validate_public_key(self, username: str, key: Any) -> bool:
            return bool(username == info.username and key.public_data ==
                        info.client_key.public_data)

        def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                                 orig_port: int) -> Any:
            info.direct_requests.append((dest_host, dest_port))
            info.direct_originators.append((orig_host, orig_port))
            if not info.allow_direct:
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                                "open failed")
            return relayed_connection(dest_host, dest_port)

        def server_requested(self, listen_host: str, listen_port: int) -> bool:
            info.forward_requests.append((listen_host, listen_port))
            return info.allow_remote_forward

    return _Server


def _sftp_factory(info: SSHServerInfo, root: str,
                  server_class: type[asyncssh.SFTPServer] | None) -> Any:
    """asyncssh's sftp_factory: ``server_class`` (asyncssh.SFTPServer by default)
    serving ``root`` as "/", each session's user recorded."""
    cls = server_class or asyncssh.SFTPServer

    def factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        info.sftp_sessions.append(str(chan.get_extra_info("username")))
        return cls(chan, chroot=os.fsencode(root))

    return factory


@contextlib.asynccontextmanager
async def inprocess_ssh_server(
        username: str = "demo", *, password: str | None = None,
        kbdint: tuple[str, str, list[tuple[str, bool, str]]] | None = None,
        rekey_bytes: int | None = None, rekey_seconds: float | None = None,
        passwords: dict[str, str] | None = None, sftp_root: str | None = None,
        sftp_server_class: type[asyncssh.SFTPServer] | None = None,
        sftp_version: int = 3,
) -> AsyncIterator[SSHServerInfo]:
    """Run an asyncssh server on 127.0.0.1:<free port>. Needs a trio-asyncio loop.

    By default it accepts only its client key. With ``password`` it accepts only
    that password; with ``kbdint`` = (name, instructions, [(prompt, echo,
    expected answer), ...]) only keyboard-interactive with those answers.
    ``passwords`` (user -> password): those password logins too (the client key
    still works for ``username``). ``rekey_bytes`` / ``rekey_seconds``: renegotiate
    keys that often (asyncssh's defaults otherwise), to test long transfers across
    rekeying. ``sftp_root``: serve an sftp subsystem with that directory as "/"
    (``sftp_server_class``: an asyncssh.SFTPServer subclass to serve it with, e.g.
    one that refuses some requests; ``sftp_version``: the highest SFTP protocol
    version it speaks, 3 as OpenSSH's); without it the server refuses SFTP sessions,
    as a server without an sftp subsystem does."""
    options: dict[str, Any] = {}
    if rekey_bytes is not None:
        options["rekey_bytes"] = rekey_bytes
    if rekey_seconds is not None:
        options["rekey_seconds"] = rekey_seconds
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    with tempfile.TemporaryDirectory(prefix="ftptrio-ssh-") as tmp:
        info = SSHServerInfo("127.0.0.1", 0, username, client_key, host_key,
                             os.path.join(tmp, "known_hosts"), password=password,
                             kbdint=kbdint, passwords=dict(passwords or {}),
                             sftp_root=sftp_root)
        if sftp_root is not None:
            options["sftp_factory"] = _sftp_factory(info, sftp_root, sftp_server_class)
            options["sftp_version"] = sftp_version
        acceptor = await trio_asyncio.aio_as_trio(asyncssh.listen)(
            "127.0.0.1", 0, server_host_keys=[host_key],
            server_factory=_make_server_class(info), allow_scp=False, **options)
        info.acceptor = acceptor
        try:
            info.port = acceptor.sockets[0].getsockname()[1]
            info.client_key_path = os.path.join(tmp, "id_ed25519")
            client_key.write_private_key(info.client_key_path)
            with open(info.known_hosts, "w") as f:
                f.write(f"[127.0.0.1]:{info.port} "
                        f"{host_key.export_public_key().decode().strip()}\n")
            yield info
        finally:
            with trio.CancelScope(shield=True):
                acceptor.close()
                for conn in info.connections:
                    conn.close()
                with trio.move_on_after(5):
                    await trio_asyncio.aio_as_trio(acceptor.wait_closed)()
