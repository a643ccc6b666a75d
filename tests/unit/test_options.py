"""Unit tests of the shared option grammar (``ftptrio._options``): destinations,
jump hosts and -o keys. -L/-R specs: test_cli.py and test_configfile.py."""

from __future__ import annotations

import dataclasses
import re

import pytest

from ftptrio._config import Destination, parse_jump_hosts
from ftptrio._options import build_parser, config_from_args, parse_destination, parse_ssh_options
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
    with pytest.raises(ConfigError, match="unsupported -o option 'ForwardX11'") as info:
        parse_ssh_options(["ForwardX11=yes"])
    # the message lists every supported key, spelled as in ssh_config
    for name in ("BatchMode", "PasswordAuthentication", "KbdInteractiveAuthentication",
                 "PreferredAuthentications", "IdentitiesOnly", "Compression", "LogLevel",
                 "ExitOnForwardFailure", "PubkeyAuthentication", "AddressFamily"):
        assert name in str(info.value)


# ------------------------------------------------- addresses, limits and timeouts (issue 15.4, 14.7, 18.6)

def _config(argv):
    from ftptrio._options import build_parser, config_from_args
    return config_from_args(build_parser(raise_errors=True).parse_args(argv))


def test_g_binds_local_tunnels_without_a_bind_address_on_every_address():
    config = _config(["-g", "-L", "2121:ftp:21", "-L", "127.0.0.1:2122:ftp:21", "h"])
    assert [f.listen_host for f in config.forwards] == ["0.0.0.0", "127.0.0.1"]
    assert config.data_bind_host == "0.0.0.0"
    assert _config(["-L", "2121:ftp:21", "h"]).forwards[0].listen_host == "127.0.0.1"


def test_active_address_alone_moves_the_remote_forward_where_the_ftp_server_reaches_it():
    assert _config(["-L", "2121:ftp:21", "--active-address", "10.0.0.1", "h"]
                   ).remote_listen_host == "10.0.0.1"
    assert _config(["-L", "2121:ftp:21", "--active-address", "10.0.0.1",
                    "--remote-listen-address", "0.0.0.0", "h"]).remote_listen_host == "0.0.0.0"
    assert _config(["-L", "2121:ftp:21", "h"]).remote_listen_host == "127.0.0.1"


def test_timeout_and_limit_options_reach_the_config():
    config = _config(["-L", "2121:ftp:21", "--drain-timeout", "2", "--active-hold-timeout",
                      "3", "--idle-timeout", "600", "--max-sessions", "5", "h"])
    assert (config.data_drain_timeout, config.active_hold_timeout,
            config.idle_session_timeout, config.max_sessions) == (2.0, 3.0, 600.0, 5)
    assert _config(["-L", "2121:ftp:21", "h"]).idle_session_timeout is None


@pytest.mark.parametrize("argv", [
    ["--data-timeout", "nan"], ["--idle-timeout", "inf"], ["--drain-timeout", "-1"],
    ["--grace", "nan"], ["--max-sessions", "0"],
    ["--trust-pasv-address", "ftp.example"], ["--trust-pasv-address", "10.0.0.0/33"]])
def test_bad_numbers_and_addresses_are_usage_errors(argv):
    with pytest.raises(ConfigError):
        _config(["-L", "2121:ftp:21", *argv, "h"])


def test_trusted_passive_addresses_may_be_networks():
    from ftptrio._config import address_allowed
    config = _config(["-L", "2121:ftp:21", "--trust-pasv-address", "10.0.0.0/24",
                      "--trust-pasv-address", "192.168.1.7", "h"])
    assert address_allowed("10.0.0.99", config.pasv_allowed_hosts)
    assert address_allowed("::ffff:10.0.0.5", config.pasv_allowed_hosts)
    assert address_allowed("192.168.1.7", config.pasv_allowed_hosts)
    assert not address_allowed("10.0.1.1", config.pasv_allowed_hosts)
    assert not address_allowed("ftp.example", config.pasv_allowed_hosts)


def test_demo_help(capsys):
    from ftptrio._cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "ftptrio demo" in capsys.readouterr().out


def test_demo_without_pyftpdlib_names_the_extra(capsys, monkeypatch):
    """pyftpdlib is the "demo" extra: without it the demo says how to install it
    and exits 1 before starting anything."""
    import sys

    from ftptrio._cli import main
    monkeypatch.setitem(sys.modules, "pyftpdlib", None)  # import pyftpdlib fails
    assert main(["demo", "--size", "0"]) == 1
    err = capsys.readouterr().err
    assert "pyftpdlib" in err and "pip install 'ftptrio[demo]'" in err


def test_threaded_ftp_server_without_pyftpdlib_names_the_extra(monkeypatch):
    import sys

    from ftptrio.testing import threaded_ftp_server
    monkeypatch.setitem(sys.modules, "pyftpdlib.authorizers", None)
    with pytest.raises(ImportError, match=r"pip install 'ftptrio\[demo\]'"):
        with threaded_ftp_server():
            pass


def test_ssh_options_repr_hides_the_password():
    from ftptrio._config import SSHOptions
    options = SSHOptions(host="h", username="u", password="hunter2")
    assert "hunter2" not in repr(options) and "u" in repr(options)


def test_max_window_takes_sizes_with_suffixes():
    from ftptrio._config import DEFAULT_MAX_WINDOW
    assert _config(["-L", "2121:ftp:21", "h"]).ssh.max_window == DEFAULT_MAX_WINDOW == 8 << 20
    assert _config(["-L", "2121:ftp:21", "--max-window", "16M", "h"]).ssh.max_window == 16 << 20
    assert _config(["-L", "2121:ftp:21", "--max-window", "1g", "h"]).ssh.max_window == 1 << 30
    assert _config(["-L", "2121:ftp:21", "--max-window", "262144", "h"]).ssh.max_window == 262144


@pytest.mark.parametrize("size", ["1K", "2G", "lots", "-1M", "0"])
def test_max_window_out_of_range_or_malformed_is_a_usage_error(size):
    with pytest.raises((ConfigError, SystemExit)):
        _config(["-L", "2121:ftp:21", "--max-window", size, "h"])


# ------------------------------------------------- one definition per vocabulary and default (round 2, point 4)

#: the -o flags read as yes/no
FLAGS = ("BatchMode", "ExitOnForwardFailure", "IdentitiesOnly", "PubkeyAuthentication",
         "PasswordAuthentication", "KbdInteractiveAuthentication",
         "ChallengeResponseAuthentication", "Compression", "HashKnownHosts")


def _flag(config, name):
    ssh = config.ssh
    return {"BatchMode": ssh.batch_mode, "ExitOnForwardFailure": config.exit_on_forward_failure,
            "IdentitiesOnly": ssh.identities_only, "PubkeyAuthentication": ssh.pubkey_auth,
            "PasswordAuthentication": ssh.password_auth,
            "KbdInteractiveAuthentication": ssh.kbdint_auth,
            "ChallengeResponseAuthentication": ssh.kbdint_auth,
            "Compression": ssh.compression, "HashKnownHosts": ssh.hash_known_hosts}[name]


@pytest.mark.parametrize("name", FLAGS)
@pytest.mark.parametrize("value, expected", [("yes", True), ("true", True), ("TRUE", True),
                                             ("Yes", True), ("no", False), ("false", False),
                                             ("False", False), ("NO", False)])
def test_every_flag_reads_what_ssh_config_reads(name, value, expected):
    """OpenSSH's readconf.c multistate_flag: yes, no, true, false in any case."""
    assert _flag(_config(["-L", "2121:ftp:21", "-o", f"{name}={value}", "h"]), name) is expected


@pytest.mark.parametrize("name", FLAGS)
@pytest.mark.parametrize("value", ["maybe", "1", "on", ""])
def test_every_flag_refuses_other_values_alike(name, value):
    with pytest.raises(ConfigError, match=f"bad option value: {name} must be yes or no"):
        _config(["-L", "2121:ftp:21", "-o", f"{name}={value}", "h"])


def test_exit_on_forward_failure_false_says_nothing_contradictory(caplog):
    """It used to log "ftptrio always exits ..." and then fail as a usage error."""
    caplog.set_level("DEBUG")
    assert _config(["-L", "2121:ftp:21", "-o", "ExitOnForwardFailure=false", "h"]
                   ).exit_on_forward_failure is False
    assert _config(["-L", "2121:ftp:21", "-o", "ExitOnForwardFailure=no", "h"]
                   ).exit_on_forward_failure is False
    assert caplog.records == []


@pytest.mark.parametrize("value, expected", [("yes", "yes"), ("TRUE", "yes"), ("off", "no"),
                                             ("false", "no"), ("Accept-New", "accept-new"),
                                             ("ask", "ask")])
def test_strict_host_key_checking_reads_ssh_config_spellings(value, expected):
    config = _config(["-L", "2121:ftp:21", "-o", f"StrictHostKeyChecking={value}", "h"])
    assert config.ssh.strict_host_key_checking == expected


@pytest.mark.parametrize("option, message", [
    ("StrictHostKeyChecking=sometimes",
     "StrictHostKeyChecking must be yes, accept-new, ask or no (got 'sometimes')"),
    ("AddressFamily=inet5", "AddressFamily must be any, inet or inet6 (got 'inet5')"),
])
def test_vocabulary_errors_name_every_choice(option, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(["-L", "2121:ftp:21", "-o", option, "h"])


def test_choices_come_from_the_literal_types():
    from typing import get_args

    from ftptrio._control import ActiveMode, AuthTLSPolicy

    actions = {a.dest: a for a in build_parser()._actions}
    assert tuple(actions["active_mode"].choices or ()) == get_args(ActiveMode)
    assert tuple(actions["auth_tls"].choices or ()) == get_args(AuthTLSPolicy)


def test_unset_options_are_none_and_config_supplies_the_defaults():
    """argparse defaults nothing that Config defaults: an option not given is None."""
    from ftptrio._config import Config, SSHOptions, default_of
    from ftptrio._options import CONFIG_OPTIONS

    args = build_parser().parse_args(["-L", "2121:ftp:21", "h"])
    assert all(getattr(args, name) is None for name in CONFIG_OPTIONS)
    assert args.max_window is None and args.data_memory is None
    config = config_from_args(args)
    for name in (*CONFIG_OPTIONS, "exit_on_forward_failure", "data_bind_host"):
        assert getattr(config, name) == default_of(name), name
    for name in ("max_window", "data_memory", "strict_host_key_checking", "batch_mode"):
        assert getattr(config.ssh, name) == default_of(name, SSHOptions), name
    assert default_of("data_idle_timeout") == {
        f.name: f.default for f in dataclasses.fields(Config)}["data_idle_timeout"]


def test_data_memory_none_still_means_no_limit():
    assert _config(["-L", "2121:ftp:21", "--data-memory", "none", "h"]).ssh.data_memory is None


def test_help_shows_the_defaults_of_config(monkeypatch):
    """Every option that sets a Config or SSHOptions field with a default says that
    default in --help, read back through the option's own type."""
    from dataclasses import MISSING

    from ftptrio._config import Config, SSHOptions, default_of

    monkeypatch.setenv("COLUMNS", "1000")  # one line per option's help
    parser = build_parser()
    text = parser.format_help()
    fields = {**{f.name: (SSHOptions, f) for f in dataclasses.fields(SSHOptions)},
              **{f.name: (Config, f) for f in dataclasses.fields(Config)}}
    checked = set()
    for action in parser._actions:
        owner, field = fields.get(action.dest, (None, None))
        if owner is None or field is None or field.default is MISSING:
            continue  # -L's forwards: no default
        default = default_of(action.dest, owner)
        if default is None or isinstance(default, bool):
            continue  # no value to show (None: explained in words; flags)
        found = re.search(rf"^  {re.escape(action.option_strings[0])}\b.*?(?=^  -|\Z)", text,
                          flags=re.M | re.S)
        assert found, action.dest
        entry = found.group(0)
        shown = re.search(r"default:? ([^\s;,)]+)", entry)
        assert shown, entry
        read = action.type if callable(action.type) else str
        assert read(shown.group(1)) == default, (action.dest, shown.group(1))
        checked.add(action.dest)
    assert checked == {"active_mode", "active_address", "active_forward_ahead", "auth_tls",
                       "data_idle_timeout",
                       "data_drain_timeout", "active_hold_timeout", "max_sessions",
                       "max_sessions_per_client", "max_window", "data_memory",
                       "sftp_login"}


def test_one_list_of_dash_o_keys():
    from ftptrio._options import SSH_OPTIONS

    assert all(key == name.lower() for key, name in SSH_OPTIONS.items())
    assert len(SSH_OPTIONS) == 28


@pytest.mark.parametrize("option, what", [("ConnectTimeout=abc", "ConnectTimeout must be a number"),
                                          ("Port=x", "Port must be an integer"),
                                          ("ServerAliveCountMax=1.5",
                                           "ServerAliveCountMax must be an integer"),
                                          ("ServerAliveInterval=soon",
                                           "ServerAliveInterval must be a number")])
def test_a_bad_number_names_its_option(option, what):
    with pytest.raises(ConfigError, match=what):
        _config(["-L", "2121:ftp:21", "-o", option, "h"])
