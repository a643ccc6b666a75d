"""Fixtures that run real servers (OpenSSH sshd, vsftpd, ProFTPD, pyftpdlib) on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

from ftptrio.testing import servers


@pytest.fixture(scope="session")
def openssh(tmp_path_factory):
    """A real OpenSSH sshd with key auth and TCP forwarding allowed."""
    servers.require_tool("sshd")
    servers.require_tool("ssh-keygen")
    server = servers.start_openssh(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vsftpd(tmp_path_factory):
    """vsftpd, anonymous login, uploads allowed into upload/."""
    servers.require_tool("vsftpd")
    server = servers.start_vsftpd(tmp_path_factory.mktemp("vsftpd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pyftpdlib_server(tmp_path_factory):
    """pyftpdlib in a subprocess, user/password with all permissions."""
    # threaded: see start_pyftpdlib (pyftpdlib's single IOLoop loses a command at times)
    server = servers.start_pyftpdlib(tmp_path_factory.mktemp("pyftpdlib"), threaded=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["vsftpd", "proftpd", "pyftpdlib"])
def real_ftp_server(request):
    """Each real FTP server in turn, each its own process (vsftpd, ProFTPD, pyftpdlib)."""
    name = "pyftpdlib_server" if request.param == "pyftpdlib" else request.param
    return request.getfixturevalue(name)


@pytest.fixture(scope="session")
def openssh_local_only(tmp_path_factory):
    """A second sshd that allows local (direct-tcpip) forwarding only: remote
    forwards (tcpip-forward) are refused, as for ``--active-mode passive``."""
    servers.require_tool("sshd")
    servers.require_tool("ssh-keygen")
    server = servers.start_openssh(tmp_path_factory.mktemp("sshd-local"),
                                   extra_config=["AllowTcpForwarding local"])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def proftpd(tmp_path_factory):
    """ProFTPD (unpacked by .ci/install-proftpd), anonymous login, uploads
    allowed into upload/."""
    servers.require_tool("proftpd")
    server = servers.start_proftpd(tmp_path_factory.mktemp("proftpd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openssh_no_sftp(tmp_path_factory):
    """An sshd without a ``Subsystem sftp`` line: SFTP sessions are refused."""
    servers.require_tool("sshd")
    servers.require_tool("ssh-keygen")
    server = servers.start_openssh(tmp_path_factory.mktemp("sshd-nosftp"), sftp=False)
    try:
        yield server
    finally:
        server.stop()


def system_user(name: str, readonly: bool = False) -> servers.SystemUser:
    """A throwaway local user with a password (servers.ensure_system_user): fails the
    test under CI when it cannot be made, skips it elsewhere."""
    try:
        return servers.ensure_system_user(name, readonly=readonly)
    except servers.SystemUserUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot make the test user: {exc}", pytrace=False)
        pytest.skip(f"cannot make the test user: {exc}")


@pytest.fixture(scope="session")
def sftp_user() -> servers.SystemUser:
    """The local user of the SFTP tests, password servers.SFTP_TEST_USERS[name]."""
    return system_user("ftptrio-sftp")


@pytest.fixture(scope="session")
def sftp_readonly_user() -> servers.SystemUser:
    """A second local user whose home holds servers.READONLY_DIR (readable, not
    writable) and servers.UNREADABLE_FILE (not readable)."""
    return system_user("ftptrio-sftp-ro", readonly=True)


@pytest.fixture(scope="session")
def openssh_sftp(tmp_path_factory, sftp_user):
    """A real OpenSSH sshd with ``Subsystem sftp internal-sftp`` that also accepts
    password and keyboard-interactive logins; ``username`` is sftp_user's (any local
    user can log in with its password, and the generated client key works for all)."""
    servers.require_tool("sshd")
    servers.require_tool("ssh-keygen")
    server = servers.start_openssh(tmp_path_factory.mktemp("sshd-sftp"), password_user=sftp_user)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openssh_no_sftp_passwords(tmp_path_factory, sftp_user):
    """As openssh_sftp, but without any ``Subsystem`` line: no SFTP."""
    servers.require_tool("sshd")
    servers.require_tool("ssh-keygen")
    server = servers.start_openssh(tmp_path_factory.mktemp("sshd-nosftp-pw"),
                                   password_user=sftp_user, sftp=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vsftpd_local(tmp_path_factory, sftp_user):
    """vsftpd on 127.0.0.1 where sftp_user logs in with its password (PAM), into a
    fresh directory of its home (``root``) with the small test files and upload/."""
    servers.require_tool("vsftpd")
    server = servers.start_vsftpd(tmp_path_factory.mktemp("vsftpd-local"), local_user=sftp_user)
    try:
        yield server
    finally:
        server.stop()
