"""A password goes only to the host it is for (security round 3, point 3): with
``-J`` a password typed for the jump host was sent to the target too (and on a
reconnect the other way), and an embedder's ``SSHOptions.password`` went to every hop."""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # pragma: no cover - the backport
    from exceptiongroup import BaseExceptionGroup

import stat
from pathlib import Path

import pytest

import ftptrio
from ftptrio.testing import inprocess_ssh_server

BASTION_SECRET = "bastion-secret"
TARGET_SECRET = "target-secret"


def known_hosts_for(tmp_path: Path, *servers) -> str:
    path = tmp_path / "known_hosts"
    path.write_text("".join(Path(s.known_hosts).read_text() for s in servers))
    return str(path)


def askpass_by_user(tmp_path: Path) -> Path:
    """An SSH_ASKPASS program answering each host's prompt with its own password."""
    script = tmp_path / "askpass"
    script.write_text("#!/bin/sh\n"
                      f'case "$1" in *bastionuser@*) echo {BASTION_SECRET} ;; '
                      f"*) echo {TARGET_SECRET} ;; esac\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def config(bastion, target, known: str, **ssh) -> ftptrio.Config:
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(host="127.0.0.1", port=target.port, username=target.username,
                               known_hosts=known, connect_timeout=10.0, client_keys=(),
                               proxy_jump=f"{bastion.username}@127.0.0.1:{bastion.port}",
                               **ssh),
        forwards=(ftptrio.ForwardSpec(ftp_host="127.0.0.1", ftp_port=21),))


async def test_a_password_typed_for_the_jump_host_is_not_sent_to_the_target(
        aio_loop, tmp_path, monkeypatch):
    monkeypatch.setenv("SSH_ASKPASS", str(askpass_by_user(tmp_path)))
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    async with inprocess_ssh_server("bastionuser", password=BASTION_SECRET) as bastion, \
            inprocess_ssh_server("demo", password=TARGET_SECRET) as target:
        known = known_hosts_for(tmp_path, bastion, target)
        async with ftptrio.open_forwarder(config(bastion, target, known)):
            pass
    assert bastion.passwords_tried == [("bastionuser", BASTION_SECRET)]
    assert target.passwords_tried == [("demo", TARGET_SECRET)]


async def test_an_embedders_password_goes_to_the_final_host_only(aio_loop, tmp_path,
                                                                monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    async with inprocess_ssh_server("bastionuser", password=BASTION_SECRET) as bastion, \
            inprocess_ssh_server("demo", password=TARGET_SECRET) as target:
        known = known_hosts_for(tmp_path, bastion, target)
        with pytest.raises(ftptrio.AuthenticationError) as info:
            try:
                async with ftptrio.open_forwarder(config(bastion, target, known, batch_mode=True,
                                                         password=TARGET_SECRET)):
                    pass
            except BaseExceptionGroup as group:
                raise group.exceptions[0] from None
    assert "jump host" in str(info.value) and "Permission denied" in str(info.value), info.value
    assert all(password != TARGET_SECRET for _, password in bastion.passwords_tried)
    assert not target.passwords_tried

