"""Unit tests of the shared option grammar (``ftptrio._options``): destinations,
jump hosts and -o keys. -L/-R specs: test_cli.py and test_configfile.py."""

from __future__ import annotations

import pytest

from ftptrio._options import (Destination, build_parser, config_from_args,
                              parse_destination, parse_jump_hosts, parse_ssh_options)
from ftptrio._errors import ConfigError


def ssh(*argv: str):
    return config_from_args(build_parser().parse_args(["-L", "2121:h:21", *argv])).ssh


@pytest.mark.parametrize("text, expected", [
    ("gw", Destination("gw")),
    ("alice@gw", Destination("gw", "alice")),
    ("alice@corp@gw", Destination("gw", "alice@corp")),
    ("@gw", Destination("gw")),
    ("ssh://gw", Destination("gw")),
    ("SSH://gw/", Destination("gw")),
    ("ssh://alice@gw", Destination("gw", "alice")),
    ("ssh://alice@gw:2222", Destination("gw", "alice", 2222)),
    ("ssh://gw:2222", Destination("gw", None, 2222)),
    ("ssh://al%40ice@gw", Destination("gw", "al@ice")),
    ("ssh://[::1]:2222", Destination("::1", None, 2222)),
    ("ssh://bob@[2001:db8::1]", Destination("2001:db8::1", "bob")),
])
def test_parse_destination(text, expected):
    assert parse_destination(text) == expected


@pytest.mark.parametrize("text", [
    "ssh://gw:abc", "ssh://gw/path", "ssh://a@b@gw", "ssh://[::1", "ssh://gw:22:33",
])
def test_parse_destination_rejects(text):
    with pytest.raises(ConfigError, match="bad destination"):
        parse_destination(text)


def test_uri_destination_in_config():
    cfg = ssh("ssh://alice@gw:2222")
    assert (cfg.host, cfg.username, cfg.port) == ("gw", "alice", 2222)


def test_uri_precedence_as_for_plain_destinations():
    # -p and -l win over the URI; the URI wins over -o Port / -o User
    cfg = ssh("-p", "22", "-l", "bob", "ssh://alice@gw:2222")
    assert (cfg.username, cfg.port) == ("bob", 22)
    cfg = ssh("-o", "Port=2300", "-o", "User=carol", "ssh://alice@gw:2222")
    assert (cfg.username, cfg.port) == ("alice", 2222)
    cfg = ssh("-o", "Port=2300", "-o", "User=carol", "ssh://gw")
    assert (cfg.username, cfg.port) == ("carol", 2300)


@pytest.mark.parametrize("argv", [["ssh://gw:0"], ["ssh://gw:70000"], ["ssh://"],
                                  ["ssh://alice@"]])
def test_bad_uri_ports_and_hosts_are_config_errors(argv):
    with pytest.raises(ConfigError):
        ssh(*argv)


def test_parse_jump_hosts():
    assert parse_jump_hosts("j1,bob@j2:2222,[::1]:22,carol@[2001:db8::2]") == [
        Destination("j1"), Destination("j2", "bob", 2222), Destination("::1", None, 22),
        Destination("2001:db8::2", "carol")]


@pytest.mark.parametrize("text", ["j1:abc", "bob@", "j1:0", "j1:70000", ":22"])
def test_bad_jump_hosts_are_config_errors(text):
    with pytest.raises(ConfigError, match="bad jump host"):
        parse_jump_hosts(text)
    with pytest.raises(ConfigError, match="bad jump host"):
        ssh("-J", text, "gw")
    with pytest.raises(ConfigError, match="bad jump host"):
        ssh("-o", f"ProxyJump={text}", "gw")


def test_parse_ssh_options():
    assert parse_ssh_options(["Port=22", "port 23", " User = bob"]) == {
        "port": "22", "user": "bob"}
    with pytest.raises(ConfigError, match="unsupported -o option 'compression'"):
        parse_ssh_options(["Compression=yes"])
