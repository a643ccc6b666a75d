"""The ssh_config files asyncssh reads for a connection, with the ``-o`` options
ftptrio does not model itself (HostName, BindAddress, RekeyLimit, ...) in front.

OpenSSH gives a command-line ``-o`` precedence over every configuration file, and
in ssh_config the first value of a key wins. So those options are written, as
top-level lines, into a private temporary file that asyncssh reads first: every
ssh_config key asyncssh understands works with ``-o`` as it does in a file.
"""

from __future__ import annotations

import atexit
import functools
import os
import tempfile

from .._config import SSHOptions

#: asyncssh's default when no -F is given
DEFAULT_CONFIG = os.path.join("~", ".ssh", "config")


def ssh_config_paths(options: SSHOptions) -> list[str] | tuple[()]:
    """asyncssh's ``config=`` argument: the -o lines first, then -F's file (or
    ~/.ssh/config when it exists); ``()`` (asyncssh's default) when there is neither."""
    files = list(options.config_files or ())
    if not options.ssh_config_lines:
        return files or ()
    if not files:
        default = os.path.expanduser(DEFAULT_CONFIG)
        files = [default] if os.access(default, os.R_OK) else []
    return [_lines_file(options.ssh_config_lines), *files]


@functools.lru_cache(maxsize=16)
def _lines_file(lines: tuple[tuple[str, str], ...]) -> str:
    """A private (0600) temporary ssh_config holding ``lines``; removed at exit."""
    fd, path = tempfile.mkstemp(prefix="ftptrio-ssh-options-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        for key, value in lines:
            f.write(f"{key} {value}\n")
    atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["ssh_config_paths"]
