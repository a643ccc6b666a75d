"""Security round 3, lows: peers' escape sequences never reach a terminal, a log or
an FTP client raw; -E creates its log 0600; address options are checked when parsed;
HashKnownHosts writes hashed names."""

from __future__ import annotations

import logging
import stat
from typing import Any

import asyncssh
import pytest

from ftptrio._cli import VisibleFormatter, main
from ftptrio._control import _ascii
from ftptrio._ssh._auth import Prompter
from ftptrio._ssh._bridge import reason
from ftptrio._ssh._hostkeys import Check, hashed_pattern, record_first_use
from ftptrio._text import visible

HOSTILE = "\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\x1b[2J\r\x1b[2KEnter passphrase:\x9b1m\u202e"


def test_visible_escapes_every_control_character_as_openssh_does():
    shown = visible(HOSTILE)
    assert not any(ch in shown for ch in "\x1b\x07\r\x9b\u202e")
    assert shown.startswith("\\033]0;owned\\007\\033]52;c;ZXZpbA==\\007\\033[2J\\015\\033[2K")
    assert "\\233" in shown and "\\u202e" in shown
    assert visible("line one\nline two\ttab", newlines=True) == "line one\nline two\ttab"
    assert visible("a\nb") == "a\\012b"
    assert visible("plain text, ünïcode") == "plain text, ünïcode"


def test_banner_and_instructions_are_shown_escaped(capsys, monkeypatch):
    monkeypatch.setattr(Prompter, "how", lambda self: None)  # no terminal: stderr
    Prompter(batch_mode=False).tell(f"Welcome\n{HOSTILE}")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and err.startswith("Welcome\n\\033]0;")


def test_refusal_reasons_and_ftp_replies_are_one_escaped_line():
    exc = asyncssh.ChannelOpenError(2, "nope\r\n227 Entering Passive Mode (127,0,0,1,1,2)\x1b[2J")
    text = reason(exc)
    assert "\r" not in text and "\n" not in text and "\x1b" not in text
    reply = _ascii(f"425 ftptrio: cannot open data connection: {text}")
    assert reply.count(b"\n") == 0 and b"\r" not in reply and b"\x1b" not in reply


def test_text_log_lines_are_escaped():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "server said %s", (HOSTILE,),
                               None)
    line = VisibleFormatter("%(message)s").format(record)
    assert "\x1b" not in line and "\x07" not in line and line.startswith("server said \\033")


def test_log_file_is_created_private(tmp_path):
    """-E creates its file 0600 whatever the umask (run in a subprocess: setup_logging
    configures the process's logging)."""
    import subprocess
    import sys

    path = tmp_path / "ftptrio.log"
    code = ("import logging, os; os.umask(0o022); from ftptrio._cli import setup_logging; "
            f"setup_logging(1, False, log_file={str(path)!r}); "
            "logging.getLogger('ftptrio').info('hello')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "hello" in path.read_text()


@pytest.mark.parametrize("argv, option", [
    (["--remote-listen-address", "somehost"], "--remote-listen-address"),
    (["--active-address", "somehost"], "--active-address"),
])
def test_address_options_are_usage_errors(capsys, argv, option):
    assert main(["-L", "2121:h:21", *argv, "gw"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftptrio: ") and option in err and err.count("\n") == 1, err


def test_remote_listen_address_localhost_is_loopback():
    from ftptrio._options import build_parser, config_from_args
    args = build_parser().parse_args(["-L", "2121:h:21", "--remote-listen-address",
                                      "localhost", "gw"])
    assert config_from_args(args).remote_listen_host == "127.0.0.1"


def test_hash_known_hosts_writes_hashed_names_that_match(tmp_path):
    key = asyncssh.import_public_key(
        asyncssh.generate_private_key("ssh-ed25519").export_public_key())
    path = tmp_path / "known_hosts"
    check = Check(None, host="127.0.0.1", addr="127.0.0.1", port=2222, key=key)
    assert record_first_use(str(path), "[127.0.0.1]:2222", key, check, hashed=True)
    text = path.read_text()
    assert text.startswith("|1|") and "127.0.0.1" not in text
    trusted = asyncssh.match_known_hosts(str(path), "127.0.0.1", "127.0.0.1", 2222)[0]
    assert key in trusted
    assert hashed_pattern("h") != hashed_pattern("h")  # a fresh salt each time


def test_hash_known_hosts_from_ssh_config_and_dash_o(tmp_path):
    from ftptrio._options import build_parser, config_from_args
    from ftptrio._ssh._hostkeys import known_hosts_files
    config = tmp_path / "config"
    config.write_text("Host h\n    HashKnownHosts yes\n")
    assert known_hosts_files("h", None, [str(config)], None).hashed
    assert not known_hosts_files("other", None, [str(config)], None).hashed
    args = build_parser().parse_args(["-L", "2121:h:21", "-o", "HashKnownHosts=yes", "gw"])
    assert config_from_args(args).ssh.hash_known_hosts is True


def test_pid_file_is_never_written_through_a_planted_symlink(tmp_path):
    import os

    from ftptrio._cli import remove_pid_file, write_pid_file

    victim = tmp_path / "victim.conf"
    victim.write_text("keep\n")
    pid_file = tmp_path / "ftptrio.pid"
    for name in (f"ftptrio.pid.{os.getpid()}.tmp", "ftptrio.pid.tmp"):
        (tmp_path / name).symlink_to(victim)  # the old, predictable temporary names
    write_pid_file(str(pid_file))
    assert victim.read_text() == "keep\n"
    assert not pid_file.is_symlink() and pid_file.read_text() == f"{os.getpid()}\n"
    remove_pid_file(str(pid_file))
    assert not pid_file.exists()
    pid_file.symlink_to(victim)  # someone replaced it: left alone
    remove_pid_file(str(pid_file))
    assert pid_file.is_symlink() and victim.exists()


def test_sessions_per_client_count_an_ipv6_client_by_its_slash_64():
    from ftptrio._server import _client_host

    no_stream: Any = None  # not read when the peer is given
    assert _client_host(no_stream, ("2001:db8:1:2:aaaa::1", 1)) == "2001:db8:1:2::/64"
    assert _client_host(no_stream, ("2001:db8:1:2:bbbb::9", 1)) == "2001:db8:1:2::/64"
    assert _client_host(no_stream, ("::ffff:10.0.0.1", 1)) == "10.0.0.1"
    assert _client_host(no_stream, ("10.0.0.1", 1)) == "10.0.0.1"
