"""Exception hierarchy. Everything ftptrio raises on purpose derives from FtptrioError."""

from __future__ import annotations


class FtptrioError(Exception):
    """Base class of every error ftptrio raises on purpose."""


class ProtocolError(FtptrioError):
    """The FTP control channel broke the protocol (either peer)."""


class LineTooLong(ProtocolError):
    """A control-channel line exceeded the line-length limit."""


class BadDataAddress(ProtocolError):
    """A 227/229 reply or PORT/EPRT command named an invalid address or port."""


class TunnelError(FtptrioError):
    """The SSH connection or one of its channels/forwards failed."""


class ConfigError(FtptrioError):
    """An option has an invalid value."""
