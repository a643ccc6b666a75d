"""``-R`` on the command line and ``--config FILE`` (TOML): parsing, per-tunnel
options, precedence and one-line errors (exit 2) for bad files."""

from __future__ import annotations

import textwrap

import pytest

from ftptrio._cli import build_parser, main
from ftptrio._options import config_from_args, parse_forward
from ftptrio._config import ForwardSpec
from ftptrio._configfile import GLOBAL_KEYS, load_config
from ftptrio._errors import ConfigError



# main() configures logging: undo it after each test (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("restore_logging")


def write(tmp_path, text: str) -> str:
    path = tmp_path / "tunnels.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


EXAMPLE = """\
    host = "alice@sshhost"
    port = 2222
    identity = ["~/.ssh/id_ed25519", "~/.ssh/id_rsa"]
    options = { UserKnownHostsFile = "/tmp/kh", ServerAliveInterval = 5 }
    active_address = "10.0.0.1"
    remote_reply_address = "192.0.2.1"
    trust_pasv_address = "10.0.0.7"
    data_timeout = 30
    grace = 3
    stats = true

    [[tunnel]]
    local = "2121:localhost:21"
    active_mode = "passive"
    gateway = true

    [[tunnel]]
    remote = "ftp/0.0.0.0:2122:ftp.lan:21"
    auth_tls = "passthrough"
    reply_address = "10.9.9.9"
"""


def test_example_file(tmp_path):
    config, args = load_config(write(tmp_path, EXAMPLE))
    ssh = config.ssh
    assert (ssh.host, ssh.port, ssh.username) == ("sshhost", 2222, "alice")
    assert ssh.client_keys == ("~/.ssh/id_ed25519", "~/.ssh/id_rsa")
    assert ssh.known_hosts == "/tmp/kh" and ssh.keepalive_interval == 5
    assert config.active_address == "10.0.0.1"
    assert config.remote_reply_address == "192.0.2.1"
    assert config.pasv_allowed_hosts == ("10.0.0.7",) and config.trust_pasv_address
    assert config.data_idle_timeout == 30 and args.grace == 3 and args.stats
    local, remote = config.forwards
    assert local == ForwardSpec(ftp_host="localhost", ftp_port=21, listen_port=2121,
                                active_mode="passive", gateway=True)
    assert remote == ForwardSpec(ftp_host="ftp.lan", ftp_port=21, listen_host="0.0.0.0",
                                 listen_port=2122, direction="remote",
                                 auth_tls="passthrough", reply_address="10.9.9.9")
    # per-tunnel overrides apply to that tunnel only
    assert local.effective(config).active_mode == "passive"
    assert local.effective(config).data_bind_host == "0.0.0.0"
    assert remote.effective(config).auth_tls == "passthrough"
    assert config.auth_tls == "refuse" and config.data_bind_host == "127.0.0.1"
    assert remote.remote_reply_host(config) == "10.9.9.9"


def test_command_line_adds_to_and_overrides_the_file(tmp_path):
    path = write(tmp_path, EXAMPLE)
    config, _ = load_config(path, ["--config", path, "-p", "22", "-L", "3000:h:21",
                                   "-o", "UserKnownHostsFile=/other", "bob@gw"])
    assert config.ssh.port == 22 and config.ssh.host == "gw"
    assert config.ssh.username == "bob" and config.ssh.known_hosts == "/other"
    assert [f.listen_port for f in config.forwards] == [2121, 2122, 3000]


def test_host_alias_and_remote_only(tmp_path):
    config, _ = load_config(write(tmp_path, """\
        host = "myalias"
        ssh_config = "./ssh_config"
        [[tunnel]]
        remote = "2121:127.0.0.1:21"
    """))
    assert config.ssh.host == "myalias" and config.ssh.config_files == ("./ssh_config",)
    (fwd,) = config.forwards
    assert fwd.direction == "remote" and fwd.listen_host == "127.0.0.1"
    assert fwd.remote_reply_host(config) == "127.0.0.1"


def test_every_file_key_has_a_command_line_twin():
    flags = {a for action in build_parser()._actions for a in action.option_strings}
    for key, (flag, _kind) in GLOBAL_KEYS.items():
        assert flag == "destination" or flag in flags, key


@pytest.mark.parametrize("text, message", [
    ("host = ", "not valid TOML"),
    ('host = "h"\nbogus = 1', "unknown key 'bogus'"),
    ('host = "h"\nport = "22"', "port must be an integer"),
    ('host = "h"\nport = true', "port must be an integer"),
    ('host = "h"\nport = 70000\n[[tunnel]]\nlocal = "1:h:21"', "SSH port"),
    ('host = "h"\nauth_tls = "maybe"', "auth_tls: argument --auth-tls: invalid choice"),
    ('host = "h"\nactive_mode = "x"', "active_mode: argument --active-mode: invalid choice"),
    ('host = "h"\ngateway = "yes"', "gateway must be true or false"),
    ('host = "h"\ndata_timeout = -1\n[[tunnel]]\nlocal = "1:h:21"', "--data-timeout (data_idle_timeout) must be a positive number"),
    ('host = "h"\nactive_address = "nohost"\n[[tunnel]]\nlocal = "1:h:21"', "active_address must be an IP address"),
    ('host = "h"\nremote_reply_address = "::1"\n[[tunnel]]\nlocal = "1:h:21"', "must be an IPv4 address"),
    ('host = "h"\noptions = { ForwardX11 = "yes" }\n[[tunnel]]\nlocal = "1:h:21"', "unsupported -o option"),
    ('host = "h"', "missing -L"),
    ('[[tunnel]]\nlocal = "1:h:21"', "missing host"),
    ('host = "h"\ntunnel = 3', "array of tables"),
    ('host = "h"\n[[tunnel]]\nlocal = "1:h:21"\nremote = "2:h:21"', "exactly one of"),
    ('host = "h"\n[[tunnel]]\nactive_mode = "passive"', "exactly one of"),
    ('host = "h"\n[[tunnel]]\nlocal = "nonsense"', "tunnel 1: bad -L 'nonsense'"),
    ('host = "h"\n[[tunnel]]\nremote = "x:h:21"', "bad -R 'x:h:21': ports must be numbers"),
    ('host = "h"\n[[tunnel]]\nlocal = "1:h:99999"', "FTP port"),
    ('host = "h"\n[[tunnel]]\nlocal = "1:h:21"\nspeed = 3', "unknown key 'speed'"),
    ('host = "h"\n[[tunnel]]\nlocal = "1:h:21"\nauth_tls = "x"', "AUTH TLS policy"),
    ('host = "h"\n[[tunnel]]\nlocal = "1:h:21"\ngateway = 1', "gateway must be true"),
    ('host = "h"\n[[tunnel]]\nlocal = "1:h:21"\nreply_address = "1.2.3.4"', "remote (-R)"),
    ('host = "h"\n[[tunnel]]\nremote = "1:h:21"\nreply_address = "bad"', "IP address"),
    ('host = "h"\n[[tunnel]]\nremote = "1:h:21"\nactive_mode = "passive"',
     "only available for local"),
    ('host = "h"\nactive_mode = "passive"\n[[tunnel]]\nremote = "1:h:21"',
     "only available for local"),
])
def test_bad_files(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


@pytest.mark.parametrize("text", ["host = ", 'host = "h"\nport = "x"',
                                  'host = "h"\n[[tunnel]]\nremote = "1:h:21"\nauth_tls = 3'])
def test_main_bad_file_is_one_line_exit_2(tmp_path, capsys, text):
    path = write(tmp_path, text)
    assert main(["--config", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ftptrio: {path}: ") and "\n" not in err and "Traceback" not in err


def test_main_missing_file(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read" in err and "\n" not in err


# ----------------------------------------------------------------- -R on the CLI
@pytest.mark.parametrize("spec, expected", [
    ("ftp/2121:localhost:21", ("127.0.0.1", 2121, "localhost", 21)),
    ("2121:ftp.lan:2100", ("127.0.0.1", 2121, "ftp.lan", 2100)),
    ("ftp/*:2121:h:21", ("0.0.0.0", 2121, "h", 21)),
    ("ftp/[::1]:2121:h:21", ("::1", 2121, "h", 21)),
])
def test_parse_remote_forward(spec, expected):
    fwd = parse_forward(spec, "remote")
    assert fwd.direction == "remote"
    assert (fwd.listen_host, fwd.listen_port, fwd.ftp_host, fwd.ftp_port) == expected


def test_cli_mixes_local_and_remote():
    args = build_parser().parse_args(["-L", "2121:h:21", "-R", "ftp/2122:g:21", "-R",
                                      "2123:k:21", "--remote-reply-address", "10.1.1.1",
                                      "gw"])
    config = config_from_args(args)
    assert [f.direction for f in config.forwards] == ["local", "remote", "remote"]
    assert config.remote_reply_address == "10.1.1.1"
    assert config.forwards[1].remote_reply_host(config) == "10.1.1.1"


def test_cli_remote_only_is_enough():
    config = config_from_args(build_parser().parse_args(["-R", "ftp/2122:g:21", "gw"]))
    assert config.forwards[0].direction == "remote"


def test_remote_reply_default_for_wildcard_listen():
    config = config_from_args(build_parser().parse_args(["-R", "ftp/0.0.0.0:2122:g:21", "gw"]))
    assert config.forwards[0].remote_reply_host(config) == "127.0.0.1"
    config = config_from_args(build_parser().parse_args(["-R", "ftp/10.2.3.4:2122:g:21", "gw"]))
    assert config.forwards[0].remote_reply_host(config) == "10.2.3.4"


@pytest.mark.parametrize("argv", [
    ["-R", "bad", "gw"],
    ["-R", "ftp/2121:h:21", "--remote-reply-address", "nohost", "gw"],
    ["-R", "ftp/2121:h:21", "--active-mode", "passive", "gw"],
])
def test_main_bad_remote_option_is_one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ftptrio: ") and "\n" not in err


def test_readme_example_file_is_valid(tmp_path):
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    config, _ = load_config(write(tmp_path, block))
    assert [(f.direction, f.proxy) for f in config.forwards] == [
        ("local", False), ("local", False), ("local", True), ("remote", False)]
    assert config.forwards[1].passive_ports == (40000, 40100)
    assert config.forwards[1].effective(config).auth_tls == "passthrough"
    assert config.forwards[2].effective(config).read_only is True
    assert config.forwards[3].reply_address == "10.0.0.1"
    assert config.allowed_destinations == ("10.0.0.0/24", "*.ftp.lan:2100-2199")
    assert config.metrics_listen == ("127.0.0.1", 9464)
    assert config.xferlog == "/var/log/ftptrio/xferlog"


def test_file_options_read_flags_as_ssh_config_does(tmp_path, caplog):
    """-o flags in a file: true/false as well as yes/no, in any case (round 2, point 4)."""
    caplog.set_level("DEBUG")
    path = write(tmp_path, """\
        host = "gw"
        options = { ExitOnForwardFailure = "true", BatchMode = "TRUE", Compression = "False" }
        [[tunnel]]
        local = "2121:h:21"
    """)
    config, _ = load_config(path)
    assert config.exit_on_forward_failure is True and config.ssh.batch_mode is True
    assert config.ssh.compression is False
    path = write(tmp_path, """\
        host = "gw"
        options = { ExitOnForwardFailure = "false" }
        [[tunnel]]
        local = "2121:h:21"
    """)
    config, _ = load_config(path)
    assert config.exit_on_forward_failure is False
    assert caplog.records == []


def test_file_option_flag_of_another_value_is_a_usage_error(tmp_path, capsys):
    path = write(tmp_path, """\
        host = "gw"
        options = { ExitOnForwardFailure = "sometimes" }
        [[tunnel]]
        local = "2121:h:21"
    """)
    assert main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert "ExitOnForwardFailure must be yes or no (got 'sometimes')" in err, err
