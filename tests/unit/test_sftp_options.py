"""--sftp-server, --sftp-login and --sftp-fallback: parsing, the loopback rule of
``own`` logins, the TOML twins, and when start-up makes an SSH connection."""

from __future__ import annotations

import pytest

from ftptrio import ConfigError
from ftptrio._access import parse_destination_rules, destination_allowed, split_proxy_user
from ftptrio._configfile import load_config
from ftptrio._options import build_parser, config_from_args, parse_sftp_listen
from ftptrio._server import _needs_ssh_at_start


def config(*argv: str):
    return config_from_args(build_parser(raise_errors=True).parse_args([*argv, "sshhost"]))


def test_sftp_server_listens_on_loopback_unless_told():
    spec = parse_sftp_listen("2121")
    assert (spec.listen_host, spec.listen_port, spec.sftp, spec.proxy) == \
        ("127.0.0.1", 2121, True, False)
    assert parse_sftp_listen("[::1]:0").listen_host == "::1"
    assert parse_sftp_listen("2121", gateway=True).listen_host == "0.0.0.0"
    with pytest.raises(ConfigError, match="--sftp-server"):
        parse_sftp_listen("ftp.lan")


def test_sftp_server_alone_is_a_whole_configuration_with_ftp_logins_by_default():
    cfg = config("--sftp-server", "0")
    assert [f.sftp for f in cfg.forwards] == [True]
    assert cfg.sftp_login == "ftp" and cfg.sftp_fallback_port is None


@pytest.mark.parametrize("bind", ["0.0.0.0:2121", "10.1.2.3:2121", "[::]:2121"])
def test_own_logins_only_on_a_loopback_listener(bind):
    with pytest.raises(ConfigError, match="loopback"):
        config("--sftp-server", bind, "--sftp-login", "own")
    with pytest.raises(ConfigError, match="loopback"):
        config("-g", "--sftp-server", "2121", "--sftp-login", "own")


def test_own_logins_on_loopback_are_accepted():
    for bind in ("2121", "127.0.0.2:2121", "[::1]:2121"):
        assert config("--sftp-server", bind, "--sftp-login", "own").sftp_login == "own"


def test_sftp_fallback_names_the_ftp_port_on_the_ssh_host():
    assert config("--sftp-server", "0", "--sftp-fallback", "ftp").sftp_fallback_port == 21
    assert config("--sftp-server", "0", "--sftp-fallback",
                  "ftp:2121").sftp_fallback_port == 2121
    for bad in ("sftp", "ftp:", "ftp:x", "ftp:70000"):
        with pytest.raises(ConfigError, match="--sftp-fallback"):
            config("--sftp-server", "0", "--sftp-fallback", bad)


def test_bad_sftp_login_is_a_usage_error():
    with pytest.raises(ConfigError):
        config("--sftp-server", "0", "--sftp-login", "root")


def test_start_up_connects_only_when_someone_needs_ftptrios_own_login():
    assert not _needs_ssh_at_start(config("--sftp-server", "0"))
    assert _needs_ssh_at_start(config("--sftp-server", "0", "--sftp-login", "own"))
    assert _needs_ssh_at_start(config("--sftp-server", "0", "-L", "0:localhost:21"))
    assert _needs_ssh_at_start(config("--ftp-proxy", "0", "--allow-destination", "x"))


def test_sftp_destinations_default_to_the_ssh_port():
    rules = parse_destination_rules(["10.0.0.0/8", "*.lan:2222"], default_port=22)
    assert destination_allowed(rules, "10.1.1.1", 22)
    assert not destination_allowed(rules, "10.1.1.1", 21)
    assert destination_allowed(rules, "a.lan", 2222)
    assert split_proxy_user(b"alice@10.1.1.1", default_port=22) == (b"alice", "10.1.1.1", 22)
    assert split_proxy_user(b"alice@10.1.1.1:2200", default_port=22) == \
        (b"alice", "10.1.1.1", 2200)
    # the FTP proxy keeps port 21
    assert split_proxy_user(b"alice@10.1.1.1") == (b"alice", "10.1.1.1", 21)


def test_toml_twins(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('host = "sshhost"\nsftp_login = "own"\nsftp_fallback = "ftp:2121"\n'
                    '[[tunnel]]\nsftp_server = "2122"\n'
                    '[[tunnel]]\nlocal = "2121:localhost:21"\n')
    cfg, _args = load_config(str(path), ["--config", str(path)])
    assert [(f.sftp, f.listen_port) for f in cfg.forwards] == [(True, 2122), (False, 2121)]
    assert cfg.sftp_login == "own" and cfg.sftp_fallback_port == 2121
    path.write_text('host = "sshhost"\n[[tunnel]]\nsftp_server = "2122"\n'
                    'ftp_proxy = "2100"\n')
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(str(path), ["--config", str(path)])
