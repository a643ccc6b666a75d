"""ftptrio: FTP forwarding over SSH for trio.

Embedding::

    async with ftptrio.open_forwarder(config) as fwd:
        host, port = fwd.addresses[0]

or ``forwarder = await nursery.start(ftptrio.serve, config)``.
"""

from ._config import Config as Config
from ._config import ForwardSpec as ForwardSpec
from ._config import SSHOptions as SSHOptions
from ._stats import TransferStats as TransferStats
from ._errors import AuthenticationError as AuthenticationError
from ._errors import BindError as BindError
from ._errors import ChannelRefused as ChannelRefused
from ._errors import ConfigError as ConfigError
from ._errors import ConnectTimeout as ConnectTimeout
from ._errors import FtptrioError as FtptrioError
from ._errors import HostKeyError as HostKeyError
from ._errors import RemoteForwardRefused as RemoteForwardRefused
from ._errors import SFTPUnavailable as SFTPUnavailable
from ._errors import TunnelError as TunnelError
from ._scan import IMPLEMENTATION as IMPLEMENTATION
from ._server import Forwarder as Forwarder
from ._server import open_forwarder as open_forwarder
from ._server import serve as serve

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION",
    "AuthenticationError",
    "BindError",
    "ChannelRefused",
    "Config",
    "ConfigError",
    "ConnectTimeout",
    "Forwarder",
    "ForwardSpec",
    "FtptrioError",
    "HostKeyError",
    "RemoteForwardRefused",
    "SFTPUnavailable",
    "SSHOptions",
    "TransferStats",
    "TunnelError",
    "__version__",
    "open_forwarder",
    "serve",
]
