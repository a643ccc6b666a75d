"""Bad input is a one-line usage error (exit 2) that says what to do, before anything
connects (first contact, round 2, point 4)."""

from __future__ import annotations

import contextlib

import pytest

from ftptrio._cli import main


@pytest.mark.parametrize("argv, expected", [
    (["-L", "2121:127.0.0.1:21", "-o", "Ciphers=aes999-ctr", "gw"],
     "Ciphers: unsupported algorithm 'aes999-ctr'"),
    (["-L", "2121:127.0.0.1:21", "-o", "Ciphers=aes128-ctr,nope", "gw"],
     "Ciphers: unsupported algorithm 'nope'"),
    (["-L", "2121:127.0.0.1:21", "-o", "KexAlgorithms=curve25519-sha256,kex-nope", "gw"],
     "KexAlgorithms: unsupported algorithm 'kex-nope'"),
    (["-L", "2121:127.0.0.1:21", "-o", "MACs=hmac-nope", "gw"],
     "MACs: unsupported algorithm 'hmac-nope'"),
    (["-L", "2121:127.0.0.1:21", "-o", "HostKeyAlgorithms=ssh-nope", "gw"],
     "HostKeyAlgorithms: unsupported algorithm 'ssh-nope'"),
    (["-L", "2121:127.0.0.1:21", "--data-timout", "5", "gw"],
     "unknown option --data-timout; did you mean --data-timeout?"),
    (["-L", "2121:127.0.0.1:21", "--data-timeout=-1", "gw"],
     "--data-timeout (data_idle_timeout) must be a positive number"),
    (["-L", "::1:23230:127.0.0.1:21", "gw"], "an IPv6 address goes in brackets"),
    (["-L", "2121:127.0.0.1:21", "root@host:2222"], "use -p 2222 root@host or ssh://root@host:2222"),
    (["-L", "2121:127.0.0.1:21", "-F", "/nonexistent/ssh_config", "gw"],
     "Can't open user config file /nonexistent/ssh_config"),
    (["-L", "2121:127.0.0.1:21", "-o", "Ciphr=aes128-ctr", "gw"],
     "unsupported -o option 'Ciphr'; did you mean Ciphers?"),
    (["-L", "2121:127.0.0.1:21", "-o", "ExitOnForwardFailure=maybe", "gw"],
     "ExitOnForwardFailure must be yes or no (got 'maybe')"),
    (["-L", "2121:127.0.0.1:21", "-o", "BatchMode=1", "gw"],
     "BatchMode must be yes or no (got '1')"),
    (["-L", "2121:127.0.0.1:21", "-o", "StrictHostKeyChecking=sometimes", "gw"],
     "StrictHostKeyChecking must be yes, accept-new, ask or no (got 'sometimes')"),
    (["-L", "2121:127.0.0.1:21", "--active-mode", "pasv", "gw"],
     "argument --active-mode: invalid choice: 'pasv'"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, expected):
    with contextlib.suppress(SystemExit):  # argparse's own errors exit 2 themselves
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("ftptrio: "), err
    assert expected in err, err


def test_bracketed_ipv6_forward_still_parses():
    from ftptrio._options import parse_forward
    spec = parse_forward("[::1]:23230:127.0.0.1:21")
    assert (spec.listen_host, spec.listen_port) == ("::1", 23230)


def test_algorithm_options_reach_asyncssh():
    from ftptrio._options import build_parser, config_from_args
    from ftptrio._ssh._connect import _algorithm_kwargs

    ssh = config_from_args(build_parser().parse_args(
        ["-L", "2121:h:21", "-o", "KexAlgorithms=curve25519-sha256", "-o",
         "MACs=hmac-sha2-256", "-o", "HostKeyAlgorithms=ssh-ed25519",
         "-o", "HostKeyAlias=ftpgw", "gw"])).ssh
    assert _algorithm_kwargs(ssh) == {"kex_algs": ["curve25519-sha256"],
                                      "mac_algs": ["hmac-sha2-256"],
                                      "server_host_key_algs": ["ssh-ed25519"]}
    assert ssh.host_key_alias == "ftpgw"


def test_askpass_require_never_hint_does_not_mention_display(monkeypatch):
    from ftptrio._ssh._auth import Prompter

    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "never")
    text = Prompter(batch_mode=False).why_not()
    assert "SSH_ASKPASS_REQUIRE=never" in text and "DISPLAY" not in text


def test_identity_agent_and_challenge_response_options():
    from ftptrio._options import build_parser, config_from_args

    ssh = config_from_args(build_parser().parse_args(
        ["-L", "2121:h:21", "-o", "IdentityAgent=none", "-o",
         "ChallengeResponseAuthentication=no", "gw"])).ssh
    assert ssh.identity_agent == "none" and ssh.kbdint_auth is False


def test_other_ssh_config_keys_reach_asyncssh_before_the_files(tmp_path):
    """-o HostName (and every other ssh_config key asyncssh reads) works as in OpenSSH:
    before the ssh_config files (the first value wins), for the destination only."""
    import asyncssh

    from ftptrio._options import build_parser, config_from_args
    from ftptrio._ssh._sshconfig import ssh_config_paths

    config = tmp_path / "config"
    config.write_text("Host gw\n    HostName from-the-file.invalid\n    Port 2200\n")
    ssh = config_from_args(build_parser().parse_args(
        ["-L", "2121:h:21", "-F", str(config), "-o", "HostName=127.0.0.9",
         "-o", "RekeyLimit=1G", "gw"])).ssh
    assert ssh.ssh_config_lines == (("HostName", "127.0.0.9"), ("RekeyLimit", "1G"))
    paths = list(ssh_config_paths(ssh))
    assert paths[-1] == str(config)
    resolved = asyncssh.SSHClientConnectionOptions(host="gw", config=paths)
    assert resolved.host == "127.0.0.9" and resolved.port == 2200


def test_an_ssh_config_value_cannot_add_a_line():
    from ftptrio._errors import ConfigError
    from ftptrio._options import ssh_config_lines

    with pytest.raises(ConfigError, match="one line"):
        ssh_config_lines({"hostname": "a\nProxyCommand evil"})


def test_the_dash_o_file_is_private_and_made_again_when_removed(tmp_path):
    import os
    import shutil
    import stat as stat_module

    from ftptrio._options import build_parser, config_from_args
    from ftptrio._ssh._sshconfig import ssh_config_paths

    ssh = config_from_args(build_parser().parse_args(
        ["-L", "2121:h:21", "-F", os.devnull, "-o", "HostName=127.0.0.9", "gw"])).ssh
    first = list(ssh_config_paths(ssh))[0]
    directory = os.path.dirname(first)
    assert stat_module.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat_module.S_IMODE(os.stat(first).st_mode) == 0o600
    shutil.rmtree(directory)  # a tmp cleaner: another user could now take the name
    os.makedirs(directory, mode=0o755)
    (tmp_path / "evil").write_text("ProxyCommand sh -c id\n")
    second = list(ssh_config_paths(ssh))[0]
    assert os.path.dirname(second) != directory  # a new private directory, not theirs
    assert open(second).read() == "HostName 127.0.0.9\n"
    os.rmdir(directory)


def test_dash_o_proxy_command_comes_before_an_ssh_config_proxy_jump(tmp_path):
    from ftptrio._options import build_parser, config_from_args
    from ftptrio._ssh._connect import _config_proxy_jump

    config = tmp_path / "config"
    config.write_text("Host prod\n    ProxyJump bastion.invalid\n")
    args = ["-L", "2121:h:21", "-F", str(config), "prod"]
    assert _config_proxy_jump(config_from_args(build_parser().parse_args(args)).ssh) == \
        "bastion.invalid"
    ssh = config_from_args(build_parser().parse_args(
        ["-o", "ProxyCommand=nc %h %p", *args])).ssh
    assert _config_proxy_jump(ssh) is None
