"""The errors ftptrio raises on purpose, one class per kind a caller handles differently.

======================  ==========================================  =================
class                   raised when                                 ``ftptrio`` exits
======================  ==========================================  =================
ConfigError             an option, argument or config file is bad   2 (usage)
TunnelError             the SSH connection, a channel or a forward  3 (SSH)
                        failed (connect, authentication, host key)
HostKeyError            (a TunnelError) the SSH server's host key   3
                        is not trusted
AuthenticationError     (a TunnelError) the login was denied        3
ConnectTimeout          (a TunnelError) ConnectTimeout expired      3
ChannelRefused          (a TunnelError) the SSH server refused a    3
                        channel to the FTP server (``code``)
RemoteForwardRefused    (a TunnelError) the SSH server refused a    3
                        remote forward (tcpip-forward)
SFTPUnavailable         (a TunnelError) the SSH server has no SFTP  3
                        (--sftp-server)
BindError               a local listener could not be bound         4 (bind)
FtptrioError            base of all of the above                    1
======================  ==========================================  =================

The TunnelError subclasses (HostKeyError, AuthenticationError, ConnectTimeout,
ChannelRefused, RemoteForwardRefused, SFTPUnavailable) are the kinds an embedding application may
handle apart; every other SSH failure (connection refused, host name not resolved,
network unreachable, the connection lost, a ProxyJump chain that cannot be
followed, the reconnect back-off) is a TunnelError itself. ``except TunnelError``
catches them all.

All of these are public (``ftptrio.*``). ProtocolError and its subclasses
LineTooLong and BadDataAddress are not: they come from the private control-line
scanner (a control line over the length limit; a 227/229 reply or PORT/EPRT
command naming an invalid address), and the control channel handles both itself
(a 500 reply, a refused or logged line), so no public call raises them.
"""

from __future__ import annotations

from typing import Any, Sequence


class FtptrioError(Exception):
    """Base class of every error ftptrio raises on purpose."""


class ConfigError(FtptrioError):
    """An option, a command-line argument or a config file value is invalid."""


class TunnelError(FtptrioError):
    """The SSH connection or one of its channels/forwards failed.

    Raised itself when the SSH server cannot be reached (connection refused, host
    name not resolved, network or host unreachable, the connection lost), when a
    ProxyJump chain cannot be followed, when a connection given to ftptrio
    (``Config.ssh_connection``) is closed, and during the reconnect back-off after a
    failed attempt (``__cause__``: that attempt's error); the subclasses below for
    the kinds a caller may want to handle apart."""


class HostKeyError(TunnelError):
    """The SSH server's host key is not trusted (StrictHostKeyChecking): unknown
    (no known_hosts entry for the host; with ``ask``, nobody could be asked or the
    answer was no), changed (it differs from the host's known_hosts entries or from
    the key accepted on first use earlier in the run: possibly a man-in-the-middle),
    or not verifiable (e.g. revoked).

    ``changed``: True for a changed key. ``fingerprint``: the SHA256 fingerprint of
    the key the server presented ("" when not known).
    """

    changed: bool
    fingerprint: str

    def __init__(self, message: str, *, changed: bool = False, fingerprint: str = "") -> None:
        super().__init__(message)
        self.changed = changed
        self.fingerprint = fingerprint


class AuthenticationError(TunnelError):
    """The SSH server denied the login (ssh's "Permission denied"): every
    authentication method it offered failed or could not be tried (a password was
    needed and nobody could be asked: BatchMode, no terminal and no SSH_ASKPASS)."""


class ConnectTimeout(TunnelError):
    """ConnectTimeout expired before the SSH connection (TCP connect, key exchange,
    login) was up. The time a question waits for the user (passphrase, password,
    host key) does not count."""


class ChannelRefused(TunnelError):
    """The SSH server refused to open a direct-tcpip channel (a control or data
    connection to the FTP server).

    ``code``: the SSH reason code (RFC 4254, 5.1): 1 administratively prohibited
    (the SSH server's policy: AllowTcpForwarding, PermitOpen), 2 connect failed
    (the SSH server could not reach the FTP server), 3 unknown channel type,
    4 resource shortage. ``reason``: the SSH server's own text. (The start-up check
    of ExitOnForwardFailure=yes raises one too, its message naming the forward.)
    """

    ADMINISTRATIVELY_PROHIBITED = 1
    CONNECT_FAILED = 2

    code: int
    reason: str

    def __init__(self, message: str, *, code: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class RemoteForwardRefused(TunnelError):
    """The SSH server refused a remote forward (tcpip-forward: a -R tunnel's
    listener, an active-mode data connection with remote-forward, a passive one of a
    -R tunnel). A sibling of ChannelRefused, not a subclass: SSH's answer to a refused
    forward request carries neither a reason code nor a text (RFC 4254, 4)."""


class SFTPUnavailable(TunnelError):
    """The SSH server offers no SFTP session (``--sftp-server``): it refused the
    session channel or its ``sftp`` subsystem (OpenSSH's sshd without a ``Subsystem
    sftp`` line in its sshd_config), or what it started there does not speak SFTP."""


class BindError(FtptrioError, OSError):
    """A local listener could not be bound (address in use, not available, no
    permission). Also an OSError with the failed bind's ``errno``; ``str()`` is
    the one-line message (``cannot listen on HOST:PORT: reason``)."""

    @classmethod
    def of(cls, host: str, port: int, exc: OSError) -> BindError:
        """The BindError of ``exc``, raised binding ``host:port``."""
        where = f"[{host}]" if ":" in host else host
        return cls(exc.errno, f"cannot listen on {where}:{port}: {exc.strerror or exc}")

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class ProtocolError(FtptrioError):
    """Base class of the control-protocol errors (LineTooLong, BadDataAddress);
    never raised itself: catch it to handle both."""


class LineTooLong(ProtocolError):
    """A control-channel line exceeded the line-length limit.

    ``lines``: the complete lines that arrived before the overlong one in the
    same read (in the form of the call that raised: bytes or parsed tuples).
    """

    lines: list[Any]

    def __init__(self, message: str, lines: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.lines = list(lines)


class BadDataAddress(ProtocolError):
    """A 227/229 reply or PORT/EPRT command named an invalid address or port."""
