"""One ``--sftp-server`` session: who logs in to SFTP (``--sftp-login``), where
(the SSH host, or per session ``USER user@host[:port]`` allowed by
``--allow-destination``), and the fallback to FTP forwarding (``--sftp-fallback``).

The FTP server itself is ``_sftpfront``; this module gives it its login callback.
``--sftp-login ftp``: each FTP login becomes the password / keyboard-interactive login
of an SSH connection of its own (keys and the agent are never offered for it), closed
with the session. ``--sftp-login own``: every session opens an SFTP channel on
ftptrio's own SSH connection, for the user that connection logged in as.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import trio

from ._access import (DestinationRule, LoginRefused, destination_allowed,
                      parse_destination_rules, split_proxy_user)
from ._config import Config, ForwardSpec
from ._control import SessionLog
from ._errors import AuthenticationError, HostKeyError, SFTPUnavailable, TunnelError
from ._gateway import read_greeting
from ._seams import RemoteFileError, RemoteFiles
from ._session import LoggedIn, Session, next_session_id, send_and_close
from ._sftpfront import (FrontSettings, Handover, LoginFailed, UseFtpForwarding,
                         serve_front_session)
from ._ssh import Tunnel
from ._stats import TransferStats
from ._text import visible

log = logging.getLogger(__name__)

#: the SSH port a ``USER user@host`` login without a port names
SSH_PORT = 22
#: how long the fallback FTP server may take to greet and to answer USER
FALLBACK_REPLY_TIMEOUT = 30.0
#: the FTP server of the fallback, as the SSH server reaches itself
FALLBACK_HOST = "localhost"


#: failed --sftp-server logins from one client address within FAILURE_WINDOW seconds
#: after which its new sessions get 421 until the window has passed (reconnecting
#: must not give unlimited tries: every try reaches the SSH server from ftptrio's own
#: address, where sshd's penalties or fail2ban would lock out every user)
MAX_FAILURES_PER_ADDRESS = 10
FAILURE_WINDOW = 600.0


class LoginFailures:
    """Failed logins per client address, across the sessions of one forwarder."""

    def __init__(self) -> None:
        self._times: dict[str, collections.deque[float]] = {}

    def _recent(self, address: str) -> collections.deque[float]:
        times = self._times.get(address, collections.deque())
        while times and times[0] < trio.current_time() - FAILURE_WINDOW:
            times.popleft()
        if not times:
            self._times.pop(address, None)
        return times

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= MAX_FAILURES_PER_ADDRESS

    def failed(self, address: str) -> None:
        times = self._recent(address)
        times.append(trio.current_time())
        self._times[address] = times

    def succeeded(self, address: str) -> None:
        self._times.pop(address, None)


class _Logins:
    """The login callback of one session, and the SSH connection it opened."""

    def __init__(self, config: Config, tunnel: Tunnel, session_log: SessionLog,
                 client: tuple[str, int], failures: LoginFailures) -> None:
        self.config = config
        self.client_host = client[0]
        client_addr = f"{client[0]}:{client[1]}"
        self.failures = failures
        self.shared = tunnel
        self._log = session_log
        self.client_addr = client_addr
        self.rules: tuple[DestinationRule, ...] = parse_destination_rules(
            config.allowed_destinations, default_port=SSH_PORT)
        #: the SSH connection this session's login made (``ftp`` logins), closed with it
        self.own_tunnel: Tunnel | None = None
        #: the tunnel a fallback session forwards FTP through
        self.fallback_tunnel: Tunnel | None = None
        self.user = ""
        #: the user name the SSH server was given (without a login's @host part)
        self.ssh_user = ""
        #: the SSH host (and port) the files are on, for the accounting
        self.destination = config.ssh.host

    async def login(self, user: str, password: str) -> RemoteFiles:
        self.user = user
        try:
            if self.config.sftp_login == "own":
                files = await self._own(user)
            else:
                files = await self._ftp(user, password)
        except LoginFailed:
            self.failures.failed(self.client_host)
            raise
        self.failures.succeeded(self.client_host)
        return files

    async def _own(self, user: str) -> RemoteFiles:
        if "@" in user:
            raise LoginFailed("--sftp-login own serves the SSH server ftptrio is logged in "
                              "to only")
        try:
            await self.shared.connect()
        except TunnelError as exc:
            raise RemoteFileError("lost", f"SSH connection down: {exc}") from None
        ssh_user = self.shared.username
        self.ssh_user = user
        if user != ssh_user:
            self._log.warning("sftp login from %s refused: FTP user %r is not the SSH user "
                              "%r (--sftp-login own)", self.client_addr, visible(user[:64]),
                              ssh_user)
            raise LoginFailed("Login incorrect.")
        return await self._open_sftp(self.shared)

    async def _ftp(self, user: str, password: str) -> RemoteFiles:
        host, port = self.config.ssh.host, self.config.ssh.port
        try:
            named = split_proxy_user(user.encode("utf-8", "surrogateescape"),
                                     default_port=SSH_PORT)
        except LoginRefused as exc:
            raise LoginFailed(str(exc)) from None
        if named is not None:
            name, host, port = named[0].decode("utf-8", "replace"), named[1], named[2]
            if not destination_allowed(self.rules, host, port):
                self._log.warning("sftp login from %s refused: destination %s:%d is not "
                                  "allowed (--allow-destination)", self.client_addr, host,
                                  port)
                raise LoginFailed(f"destination {host}:{port} is not allowed")
            user = name
        self.ssh_user = user
        self.destination = host if port in (None, SSH_PORT) else f"{host}:{port}"
        if not user or not password:
            raise LoginFailed("Login incorrect.")
        options = dataclasses.replace(
            self.config.ssh, host=host, port=port, username=user, password=password,
            client_keys=(), identity_agent="none", pubkey_auth=False, password_auth=True,
            kbdint_auth=True, batch_mode=True)
        tunnel = Tunnel(options, hop_options=self.config.ssh)  # hops: ftptrio's login
        self.own_tunnel = tunnel
        try:
            await tunnel.connect()
        except AuthenticationError:
            self._log.warning("sftp login from %s as %r to %s refused by the SSH server",
                              self.client_addr, visible(user[:64]), host)
            raise LoginFailed("Login incorrect.") from None
        except TunnelError as exc:
            hint = (" (FTP logins cannot ask about host keys: add it to known_hosts, e.g. "
                    "with ssh to that host once, or use -o StrictHostKeyChecking=accept-new)"
                    if isinstance(exc, HostKeyError) else "")
            self._log.warning("sftp login from %s as %r: SSH to %s failed: %s%s",
                              self.client_addr, visible(user[:64]), host, exc, hint)
            # the details are the operator's (the log), not a client's before login
            raise RemoteFileError("lost", "cannot reach the SSH server") from None
        self._log.info("sftp login from %s as %r to %s", self.client_addr,
                       visible(user[:64]), host)
        return await self._open_sftp(tunnel)

    async def _open_sftp(self, tunnel: Tunnel) -> RemoteFiles:
        try:
            return await tunnel.open_sftp()
        except SFTPUnavailable as exc:
            if self.config.sftp_fallback_port is None:
                self._log.warning("SSH server %s offers no SFTP (and no --sftp-fallback): "
                                  "%s", tunnel.options.host, exc)
                raise LoginFailed("the SSH server offers no SFTP") from None
            self._log.info("SSH server %s offers no SFTP: forwarding this session to its "
                           "FTP server on port %d (--sftp-fallback)", tunnel.options.host,
                           self.config.sftp_fallback_port)
            self.fallback_tunnel = tunnel
            raise UseFtpForwarding() from None
        except TunnelError as exc:
            raise RemoteFileError("lost", f"SSH connection down: {exc}") from None

    async def aclose(self) -> None:
        if self.own_tunnel is not None:
            with trio.CancelScope(shield=True):
                await self.own_tunnel.aclose()


def front_settings(config: Config) -> FrontSettings:
    """The FTP front end's settings from the Config."""
    return FrontSettings(max_line=config.max_line, idle_timeout=config.idle_session_timeout,
                         data_timeout=config.data_idle_timeout)


async def run_sftp_session(client: trio.SocketStream, forward: ForwardSpec, config: Config,
                           tunnel: Tunnel, stats: TransferStats,
                           failures: LoginFailures) -> None:
    """Serve one FTP client of an ``--sftp-server`` listener; closes ``client``.
    ``failures``: the forwarder's failed logins by client address."""
    session_id = next_session_id()
    session_log = SessionLog(log, {"session": session_id})
    peer = client.socket.getpeername()[:2]
    client_addr = f"{peer[0]}:{peer[1]}"
    if failures.blocked(peer[0]):
        session_log.warning("sftp client %s refused: %d failed logins from that address "
                            "in %.0f s", client_addr, MAX_FAILURES_PER_ADDRESS,
                            FAILURE_WINDOW)
        stats.refuse_session("login_failures")
        await send_and_close(client, "421 ftptrio: too many failed logins from your "
                                     "address; try again later.\r\n")
        return
    logins = _Logins(config, tunnel, session_log, (peer[0], peer[1]), failures)
    started = trio.current_time()
    stats.sessions += 1
    stats.sessions_active += 1
    session_log.info("sftp client %s", client_addr)
    handover: Handover | None = None
    try:

        def accounted(transfer: dict[str, object]) -> None:
            result, size = str(transfer.get("result")), transfer.get("bytes")
            moved = size if isinstance(size, int) else 0
            upload = transfer.get("direction") == "upload"
            stats.record(str(transfer.get("mode")), to_server=moved if upload else 0,
                         to_client=0 if upload else moved,
                         error=None if result in ("ok", "refused") else result,
                         refused=result == "refused")
            transfer["server"] = f"sftp://{logins.destination}"
            stats.transfer_accounted(transfer)

        handover = await serve_front_session(client, login=logins.login, log=session_log,
                                             settings=front_settings(config),
                                             on_transfer=accounted, session_id=session_id)
    finally:
        if handover is None:  # (its SSH connection first: idle means all closed)
            await logins.aclose()
            session_log.info("closed client=%s sftp seconds=%.1f", client_addr,
                             trio.current_time() - started)
        stats.sessions_active -= 1
    if handover is None:
        return
    stats.sessions -= 1  # counted again by the forwarding session
    try:
        assert logins.fallback_tunnel is not None
        await _forward_ftp(client, dataclasses.replace(
            handover, user=logins.ssh_user.encode("utf-8", "surrogateescape")),
            forward, config, logins.fallback_tunnel, stats, session_id, peer)
    finally:
        await logins.aclose()


async def _forward_ftp(client: trio.SocketStream, handover: Handover, forward: ForwardSpec,
                       config: Config, tunnel: Tunnel, stats: TransferStats,
                       session_id: int, peer: tuple[str, int]) -> None:
    """--sftp-fallback: log in to the FTP server on the SSH host with the user's USER
    (its greeting and the reply to USER are read here; the client had ours), then go
    on as a ``-L`` session, the client's PASS and what followed it first."""
    port = config.sftp_fallback_port
    assert port is not None
    session_log = SessionLog(log, {"session": session_id})
    fallback = dataclasses.replace(forward, sftp=False, ftp_host=FALLBACK_HOST, ftp_port=port)
    try:
        server = await tunnel.open_stream(FALLBACK_HOST, port, originator=(peer[0], peer[1]))
    except TunnelError as exc:
        await _refuse(client, f"FTP server on port {port} of the SSH host not reachable: "
                              f"{exc}", session_log)
        return
    try:
        code, text, _rest = await read_greeting(server, config.max_line,
                                                FALLBACK_REPLY_TIMEOUT)
        if not 200 <= code < 300:
            raise _NoLogin(f"the FTP server did not greet: {text}")
        await server.send_all(b"USER " + handover.user + b"\r\n")
        code, text, rest = await read_greeting(server, config.max_line,
                                               FALLBACK_REPLY_TIMEOUT)
        if code == 0:  # (text is no reply then: never pass it on)
            raise _NoLogin("the FTP server did not answer USER")
    except (_NoLogin, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        with trio.CancelScope(shield=True):
            await server.aclose()
        await _refuse(client, str(exc), session_log)
        return
    client_bytes = handover.rest
    if code == 331:  # the client's PASS goes on to the server, answered by it
        client_bytes = b"PASS " + handover.password + b"\r\n" + client_bytes
    else:  # logged in without a password, or refused: that answers the client's PASS
        try:
            await client.send_all(visible(text).encode("ascii", "replace") + b"\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            with trio.CancelScope(shield=True):
                await server.aclose()
            return
    logged_in = LoggedIn(server, client_bytes, rest,
                         handover.user.decode("utf-8", "replace"), session_id)
    await Session(client, fallback, config, tunnel, stats, peer=(peer[0], peer[1]),
                  logged_in=logged_in).run()


class _NoLogin(Exception):
    pass


async def _refuse(client: trio.SocketStream, reason: str, session_log: SessionLog) -> None:
    session_log.warning("sftp fallback: %s", reason)
    await send_and_close(client, f"421 ftptrio: {visible(reason)[:200]}\r\n")
