"""The errors ftptrio raises on purpose, one class per kind a caller handles differently.

==================  ==========================================  ==================
class               raised when                                 ``ftptrio`` exits
==================  ==========================================  ==================
ConfigError         an option, argument or config file is bad   2 (usage)
TunnelError         the SSH connection, a channel or a forward  3 (SSH)
                    failed (connect, authentication, host key)
BindError           a local listener could not be bound         4 (bind)
ProtocolError       (base of LineTooLong and BadDataAddress;    1
                    never raised itself)
FtptrioError        base of all of the above                    1
==================  ==========================================  ==================

LineTooLong and BadDataAddress come from the control-line scanner (a control
line over the length limit; a 227/229 reply or PORT/EPRT command naming an
invalid address); the forwarder handles both itself (a 500 reply, a refused
or logged line), so ``serve()`` callers never see them. They are public, with
their base ProtocolError, for code that drives the scanner directly.
"""

from __future__ import annotations

from typing import Any, Sequence


class FtptrioError(Exception):
    """Base class of every error ftptrio raises on purpose."""


class ConfigError(FtptrioError):
    """An option, a command-line argument or a config file value is invalid."""


class TunnelError(FtptrioError):
    """The SSH connection or one of its channels/forwards failed."""


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
