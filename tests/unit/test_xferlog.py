"""--xferlog (``ftptrio._xferlog``): the xferlog(5) line of a transfer, field by field,
and the file (0600, reopened for logrotate)."""

from __future__ import annotations

import os
import stat
import time

import pytest

from ftptrio import ConfigError
from ftptrio._xferlog import XferLog, xferlog_line

NOW = time.mktime((2025, 1, 6, 9, 5, 1, 0, 0, -1))


def transfer(**changes):
    fields = {"session": 3, "client": "10.1.2.3", "mode": "passive", "direction": "download",
              "command": "RETR pub/one two.bin", "bytes": 1048576, "seconds": 1.6,
              "result": "ok", "reply": 226, "user": "alice", "type": "I",
              "server": "10.0.0.5:21"}
    fields.update(changes)
    return fields


def words_of(line: str | None) -> list[str]:
    assert line is not None
    return line.split()


def test_line_has_the_fourteen_fields_of_xferlog5():
    words = words_of(xferlog_line(transfer(), NOW))
    assert len(words) == 18  # current-time is 5 words ("Mon Jan  6 09:05:01 2025")
    assert words[:5] == time.ctime(NOW).split()
    assert words[5:] == ["2", "10.1.2.3", "1048576", "pub/one_two.bin", "b", "_", "o", "r",
                         "alice", "ftp", "0", "*", "c"]


@pytest.mark.parametrize("changes, expected", [
    ({"command": "STOR up.bin", "type": "A"}, {9: "a", 11: "i"}),
    ({"command": "APPE x", "result": "error (reset)"}, {11: "i", 17: "i"}),
    ({"user": "anonymous", "seconds": 0.01}, {5: "1", 12: "a", 13: "anonymous"}),
    ({"command": "RETR a\\x0db\x1bc"}, {8: "a\\x5cx0db\\x1bc"}),
    ({"user": None}, {13: "-"}),
])
def test_fields_follow_the_transfer(changes, expected):
    words = words_of(xferlog_line(transfer(**changes), NOW))
    assert len(words) == 18
    for index, value in expected.items():
        assert words[index] == value, (index, words)


@pytest.mark.parametrize("changes", [{"command": "LIST"}, {"command": "NLST x"},
                                     {"result": "refused"}])
def test_listings_and_refusals_are_not_file_transfers(changes):
    assert xferlog_line(transfer(**changes), NOW) is None


def test_file_is_0600_appended_and_reopened_after_logrotate(tmp_path):
    path = tmp_path / "xferlog"
    xferlog = XferLog(str(path))
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        xferlog.write(transfer())
        xferlog.write(transfer(command="LIST"))
        os.rename(path, tmp_path / "xferlog.1")  # logrotate
        xferlog.write(transfer(command="STOR b"))
        xferlog.reopen()
        xferlog.write(transfer(command="STOR c"))
    finally:
        xferlog.close()
    rotated = (tmp_path / "xferlog.1").read_text().splitlines()
    assert [line.split()[8] for line in rotated] == ["pub/one_two.bin", "b"]
    assert [line.split()[8] for line in path.read_text().splitlines()] == ["c"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unwritable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--xferlog"):
        XferLog(str(tmp_path / "missing" / "xferlog"))


def test_an_existing_file_is_made_0600_and_a_symlink_is_refused(tmp_path):
    """The file holds user names and paths: an existing one loses its group/other
    bits, and a symlink planted where the log goes is not followed."""
    path = tmp_path / "xferlog"
    path.write_text("")
    os.chmod(path, 0o644)
    XferLog(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    target = tmp_path / "elsewhere"
    link = tmp_path / "linked"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="--xferlog"):
        XferLog(str(link))
    assert not target.exists()
