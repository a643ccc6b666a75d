"""Which known_hosts files are read, as OpenSSH reads them, and that no
configuration turns host-key verification off (security round 3, point 1).

* ssh_config ``UserKnownHostsFile none`` means no *user* file, the global files
  still count (before: asyncssh read it as "do not verify": a full MITM);
* a configured file that does not exist is empty: no fallback to ~/.ssh/known_hosts;
* ``-o UserKnownHostsFile=none`` is "none", not a file named ./none;
* StrictHostKeyChecking=no accepts an unknown key, never a changed one;
* ssh_config ProxyJump hops are checked against the same files as the target.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # pragma: no cover - the backport
    from exceptiongroup import BaseExceptionGroup

import dataclasses
from pathlib import Path

import asyncssh
import pytest

import ftptrio

try:
    from .integration_helpers import pub, refused, with_ssh
except ImportError:  # run from this directory
    from integration_helpers import pub, refused, with_ssh  # type: ignore


def other_key_line(port: int) -> str:
    return f"[127.0.0.1]:{port} {pub(asyncssh.generate_private_key('ssh-ed25519'))}\n"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A HOME of the test's own (its ~/.ssh/known_hosts and ~/.ssh/config)."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.chdir(tmp_path)
    return path


def ssh_config(path: Path, ssh, *lines: str) -> Path:
    path.write_text("Host target\n    HostName 127.0.0.1\n"
                    f"    Port {ssh.port}\n    User {ssh.username}\n"
                    f"    IdentityFile {ssh.client_key_path}\n"
                    + "".join(f"    {line}\n" for line in lines))
    return path


def via_alias(forwarder_config: ftptrio.Config, config_file: Path, **changes) -> ftptrio.Config:
    fields: dict[str, object] = {"host": "target", "port": None, "username": None,
                                 "client_keys": None, "known_hosts": None,
                                 "config_files": (str(config_file),)}
    return with_ssh(forwarder_config, **{**fields, **changes})


async def test_user_known_hosts_none_still_checks_the_global_file(
        ssh_server, forwarder_config, tmp_path, home):
    """The man-in-the-middle of the report: UserKnownHostsFile none and a global file
    with a different key. OpenSSH refuses; so must ftptrio."""
    wrong = tmp_path / "global_known_hosts"
    wrong.write_text(other_key_line(ssh_server.port))
    config = via_alias(forwarder_config, ssh_config(
        tmp_path / "config", ssh_server, "UserKnownHostsFile none",
        f"GlobalKnownHostsFile {wrong}"))
    error = await refused(config)
    message = str(error)
    assert error.changed, message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
    assert f"{wrong}:1" in message, message
    assert not ssh_server.direct_requests


async def test_no_known_hosts_at_all_is_an_unknown_host(
        ssh_server, forwarder_config, tmp_path, home):
    config = via_alias(forwarder_config, ssh_config(
        tmp_path / "config", ssh_server, "UserKnownHostsFile none",
        "GlobalKnownHostsFile none"))
    error = await refused(config)
    message = str(error)
    assert not error.changed and "can't be established" in message, message
    assert not ssh_server.direct_requests


async def test_user_known_hosts_none_with_the_right_global_key_connects(
        ssh_server, forwarder_config, tmp_path, home):
    good = tmp_path / "global_known_hosts"
    good.write_text(f"[127.0.0.1]:{ssh_server.port} {pub(ssh_server.host_key)}\n")
    config = via_alias(forwarder_config, ssh_config(
        tmp_path / "config", ssh_server, "UserKnownHostsFile none",
        f"GlobalKnownHostsFile {good}"))
    async with ftptrio.open_forwarder(config):
        pass


async def test_a_missing_configured_file_does_not_fall_back_to_the_default(
        ssh_server, forwarder_config, tmp_path, home):
    (home / ".ssh" / "known_hosts").write_text(
        f"[127.0.0.1]:{ssh_server.port} {pub(ssh_server.host_key)}\n")
    typo = tmp_path / "known_hsots"
    error = await refused(with_ssh(forwarder_config, known_hosts=str(typo)))
    message = str(error)
    assert not error.changed and "can't be established" in message, message
    assert f"{typo} (not found)" in message, message
    # the default file alone is read when nothing is configured
    async with ftptrio.open_forwarder(with_ssh(forwarder_config, known_hosts=None)):
        pass


async def test_known_hosts_none_is_not_a_file_named_none(
        ssh_server, forwarder_config, tmp_path, home, caplog):
    config = with_ssh(forwarder_config, known_hosts="none",
                      strict_host_key_checking="accept-new")
    async with ftptrio.open_forwarder(config):
        pass
    assert not (tmp_path / "none").exists()
    assert not (home / ".ssh" / "known_hosts").exists()
    assert "for this run only" in caplog.text
    error = await refused(with_ssh(config, strict_host_key_checking="yes"))
    message = str(error)
    assert not error.changed and "can't be established" in message, message


def test_dash_o_user_known_hosts_none_reaches_the_options():
    from ftptrio._options import build_parser, config_from_args
    args = build_parser().parse_args(["-L", "2121:h:21", "-o", "UserKnownHostsFile=none",
                                      "-o", "GlobalKnownHostsFile=/g", "gw"])
    ssh = config_from_args(args).ssh
    assert (ssh.known_hosts, ssh.global_known_hosts) == ("none", "/g")


async def test_strict_no_accepts_an_unknown_key_and_records_it(
        ssh_server, forwarder_config, tmp_path, home):
    known = tmp_path / "known_hosts"
    config = with_ssh(forwarder_config, known_hosts=str(known), strict_host_key_checking="no")
    async with ftptrio.open_forwarder(config):
        pass
    assert known.read_text() == f"[127.0.0.1]:{ssh_server.port} {pub(ssh_server.host_key)}\n"


async def test_strict_no_refuses_a_changed_key(ssh_server, forwarder_config, tmp_path, home):
    known = tmp_path / "known_hosts"
    known.write_text(other_key_line(ssh_server.port))
    error = await refused(with_ssh(forwarder_config, known_hosts=str(known),
                                   strict_host_key_checking="no"))
    message = str(error)
    assert error.changed, message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
    assert "StrictHostKeyChecking=no" in message and "port forwarding" in message, message
    assert not ssh_server.direct_requests


async def test_ssh_config_proxy_jump_uses_the_given_known_hosts_file(
        ssh_server, forwarder_config, tmp_path, home):
    """The hop named by ssh_config's ProxyJump is checked against -o UserKnownHostsFile,
    not ~/.ssh/known_hosts (which here holds a wrong key for it)."""
    (home / ".ssh" / "known_hosts").write_text(other_key_line(ssh_server.port))
    config = via_alias(forwarder_config, ssh_config(
        tmp_path / "config", ssh_server,
        f"ProxyJump {ssh_server.username}@127.0.0.1:{ssh_server.port}"),
        known_hosts=ssh_server.known_hosts, client_keys=(ssh_server.client_key_path,))
    async with ftptrio.open_forwarder(config):
        pass
    assert ("127.0.0.1", ssh_server.port) in ssh_server.direct_requests  # through the hop
    assert len(ssh_server.connections) == 2


async def test_a_jump_host_refused_is_named_with_the_file_read(
        ssh_server, forwarder_config, tmp_path, home):
    wrong = tmp_path / "known_hosts"
    wrong.write_text(other_key_line(ssh_server.port))
    config = via_alias(forwarder_config, ssh_config(
        tmp_path / "config", ssh_server,
        f"ProxyJump {ssh_server.username}@127.0.0.1:{ssh_server.port}"),
        known_hosts=str(wrong))
    error = await refused(config)
    message = str(error)
    assert error.changed, message
    assert f"jump host 127.0.0.1:{ssh_server.port}" in message, message
    assert f"{wrong}:1" in message, message
    assert not ssh_server.direct_requests


async def test_tokens_in_known_hosts_paths_are_expanded(
        ssh_server, forwarder_config, tmp_path, home):
    """UserKnownHostsFile ~/kh/%k: the file OpenSSH reads (before: a literal '%k' file
    that did not exist, so a pinned host counted as unknown and accept-new took any key)."""
    (home / "kh").mkdir()
    (home / "kh" / "target").write_text(other_key_line(ssh_server.port))
    config = via_alias(forwarder_config, ssh_config(
        tmp_path / "config", ssh_server, "UserKnownHostsFile ~/kh/%n",
        "GlobalKnownHostsFile none"), strict_host_key_checking="accept-new")
    error = await refused(config)
    message = str(error)
    assert error.changed, message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
    assert f"{home}/kh/target:1" in message, message


async def test_an_unknown_token_is_a_configuration_error(forwarder_config, tmp_path, home):
    with pytest.raises(ftptrio.ConfigError, match="unknown token %Z"):
        try:
            async with ftptrio.open_forwarder(dataclasses.replace(
                    forwarder_config, ssh=dataclasses.replace(forwarder_config.ssh,
                                                              known_hosts="~/kh/%Z"))):
                pass
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None


async def test_dash_o_hostname_connects_to_that_host_and_checks_its_key(
        ssh_server, forwarder_config, tmp_path, home):
    """-o HostName=127.0.0.1 for a destination name that resolves nowhere: connects,
    verified against the known_hosts entry of 127.0.0.1 (as OpenSSH)."""
    config = with_ssh(forwarder_config, host="no-such-alias.invalid",
                      ssh_config_lines=(("HostName", "127.0.0.1"),))
    async with ftptrio.open_forwarder(config):
        pass
    wrong = tmp_path / "known_hosts"
    wrong.write_text(other_key_line(ssh_server.port))
    error = await refused(with_ssh(config, known_hosts=str(wrong)))
    message = str(error)
    assert error.changed, message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
