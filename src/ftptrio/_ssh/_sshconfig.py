"""The ssh_config files asyncssh reads for a connection, with the ``-o`` options
ftptrio does not model itself (HostName, BindAddress, RekeyLimit, ...) in front.

OpenSSH gives a command-line ``-o`` precedence over every configuration file, and
in ssh_config the first value of a key wins. So those options are written, as
top-level lines, into a private temporary file that asyncssh reads first: every
ssh_config key asyncssh understands works with ``-o`` as it does in a file.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
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


#: the private directory (0700) the -o file lives in; made again if it is gone
_private_dir: str | None = None


def _lines_file(lines: tuple[tuple[str, str], ...]) -> str:
    """``lines`` as an ssh_config file, written again for each connection attempt into
    a private directory (0700, owned by this process's user) made with mkdtemp: no
    other user can put a file of their own in its place, even after a cleaner such as
    systemd-tmpfiles removed it (the directory is then made anew). Removed at exit."""
    global _private_dir
    directory = _private_dir
    if directory is None or not _is_private_dir(directory):
        directory = _private_dir = tempfile.mkdtemp(prefix="ftptrio-ssh-options-")
        atexit.register(shutil.rmtree, directory, True)
    path = os.path.join(directory, "ssh_config")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "w") as f:
        for key, value in lines:
            f.write(f"{key} {value}\n")
    return path


def _is_private_dir(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and stat.S_IMODE(info.st_mode) == 0o700)


__all__ = ["ssh_config_paths"]
