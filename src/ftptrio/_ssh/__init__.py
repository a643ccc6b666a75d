"""The SSH layer: the only code in ftptrio that imports asyncssh or trio_asyncio.

* ``_connect``: ``Tunnel``, the shared SSH connection (connect through jump hosts
  and ssh_config, keepalive, reconnect); it opens streams, relays and listeners.
* ``_auth``: authentication as OpenSSH's client does it (agent, identity files and
  passphrases, password and keyboard-interactive prompts, BatchMode).
* ``_hostkeys``: host-key trust (known_hosts files as OpenSSH reads them,
  StrictHostKeyChecking, keys pinned for reconnects).
* ``_sshconfig``: the ssh_config files asyncssh reads, ftptrio's ``-o`` options first.
* ``_relay``: ``SSHDataRelay``, an SSH channel relayed to a TCP socket entirely
  inside asyncio (data never crosses the trio/asyncio bridge per chunk).
* ``_streams``: ``SSHStream`` (a trio stream over an SSH channel) and the remote
  (tcpip-forward) listeners ``RemoteListener`` and ``RemoteStreamListener``.
* ``_sftp``: ``SFTPFiles``, one SFTP session with pipelined reads and writes
  (``_seams.RemoteFiles``, for ``--sftp-server``).
* ``_bridge``: the trio-asyncio loop and error handling scoped to ftptrio's own
  callbacks and sockets.
* ``_testserver``: the in-process asyncssh server behind ``ftptrio.testing``.
"""

import warnings as _warnings


def _hide_asyncssh_crypto_deprecations() -> None:
    """asyncssh (2.24) names cryptography's deprecated DSA classes at import and
    in its key code; cryptography >= 51 warns for each (CryptographyDeprecationWarning,
    five lines at import). ftptrio users can do nothing about them, so exactly that
    category is ignored for warnings raised *in asyncssh's modules*; the same
    warning from any other module (an embedding application's own code) still shows.
    Runs before anything below imports asyncssh."""
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # pragma: no cover - cryptography is an asyncssh dependency
        return
    _warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                             module=r"asyncssh(\.|$)")


_hide_asyncssh_crypto_deprecations()

from ._bridge import asyncio_loop as asyncio_loop  # noqa: E402
from ._connect import Tunnel as Tunnel
from ._connect import set_debug_level as set_debug_level
from ._relay import SSHDataRelay as SSHDataRelay
from ._relay import relayed_connection as relayed_connection
from ._sftp import SFTPFiles as SFTPFiles
from ._sftp import open_sftp_files as open_sftp_files
from ._streams import RemoteListener as RemoteListener
from ._streams import RemoteStreamListener as RemoteStreamListener
from ._streams import SSHStream as SSHStream

__all__ = [
    "RemoteListener",
    "RemoteStreamListener",
    "SFTPFiles",
    "SSHDataRelay",
    "SSHStream",
    "Tunnel",
    "asyncio_loop",
    "open_sftp_files",
    "relayed_connection",
    "set_debug_level",
]
