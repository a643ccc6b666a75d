"""``--xferlog FILE``: one xferlog(5) line per file transfer, the format wu-ftpd,
vsftpd (``xferlog_std_format``) and ProFTPD write and log tools parse::

    current-time transfer-time remote-host file-size filename transfer-type
    special-action-flag direction access-mode username service-name
    authentication-method authenticated-user-id completion-status

``Mon Jan  6 12:00:01 2025 2 10.1.2.3 1048576 pub/x.bin b _ o r alice ftp 0 * c``.
ftptrio knows the file name as the client wrote it (not the server's absolute path);
spaces in names are written as ``_`` and other unprintable bytes as ``\\xNN``, so
every line has the 14 fields (18 words). The file is created 0600, appended to, and
reopened by ``reopen()`` (SIGHUP: logrotate). Writes are small appends from the trio
thread, as the logging module's are.
"""

from __future__ import annotations

import logging
import os
import time
from typing import IO, Mapping

from ._errors import ConfigError

log = logging.getLogger(__name__)

#: transfer commands that move a file, and their xferlog direction
FILE_COMMANDS = {"RETR": "o", "STOR": "i", "STOU": "i", "APPE": "i"}
#: user names xferlog marks as anonymous (access mode "a")
ANONYMOUS_USERS = frozenset(("anonymous", "ftp"))


def _field(text: str) -> str:
    """One space-free xferlog field (never empty)."""
    return "".join("_" if ch.isspace() else ch if ch.isprintable() and ch != "\\"
                   else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else ch
                   for ch in text) or "-"


def xferlog_line(transfer: Mapping[str, object], now: float | None = None) -> str | None:
    """The xferlog line of one transfer (``DataPlane``'s transfer fields with the
    session's ``user``, ``type`` and ``server``); None for what xferlog does not
    log (listings, transfers refused before any data moved)."""
    command = str(transfer.get("command", ""))
    verb, _, path = command.partition(" ")
    direction = FILE_COMMANDS.get(verb.upper())
    if direction is None or transfer.get("result") == "refused":
        return None
    user = str(transfer.get("user") or "-")
    seconds = float(transfer.get("seconds", 0.0))  # type: ignore[arg-type]
    anonymous = user.lower() in ANONYMOUS_USERS
    return " ".join((
        time.ctime(time.time() if now is None else now),
        str(max(1, round(seconds))),
        _field(str(transfer.get("client", "-"))),
        str(int(transfer.get("bytes", 0))),  # type: ignore[call-overload]
        _field(path),
        "a" if transfer.get("type") == "A" else "b",
        "_",
        direction,
        "a" if anonymous else "r",
        _field(user),
        "ftp",
        "0",
        "*",
        "c" if transfer.get("result") == "ok" else "i",
    ))


class XferLog:
    """The ``--xferlog`` file: opened at start (ConfigError if it cannot be)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._failed = False
        self.reopen(startup=True)

    def reopen(self, *, startup: bool = False) -> None:
        """(Re)open the file (after logrotate moved it away): a new one is 0600."""
        old, self._file = self._file, None
        if old is not None:
            old.close()
        try:
            # never through a symlink; an existing file is made 0600 too (user names, paths)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)
        except OSError as exc:
            if startup:
                raise ConfigError(f"--xferlog {self.path}: cannot open: "
                                  f"{exc.strerror or exc}") from None
            log.error("--xferlog %s: cannot reopen: %s", self.path, exc.strerror or exc)
            return
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
        self._failed = False

    def write(self, transfer: Mapping[str, object]) -> None:
        line = xferlog_line(transfer)
        if line is None or self._file is None:
            return
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as exc:
            if not self._failed:  # once until the next reopen
                self._failed = True
                log.error("--xferlog %s: cannot write: %s", self.path, exc.strerror or exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
