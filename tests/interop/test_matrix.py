"""Interop matrix: real FTP clients x real FTP servers x data-connection modes,
through ftptrio (embedded with ``ftptrio.open_forwarder``) and a real OpenSSH sshd.

One test per (server, client, mode), so that a failure names its case:

* ``test_matrix``: every mode of every client; active modes use remote
  forwards (tcpip-forward) on an sshd that allows them.  ProFTPD is covered by
  curl only (``CURL_ONLY_SERVERS``), in its four modes, to keep runtime small.
* ``test_matrix_converted``: the active modes again with
  ``active_mode="passive"`` against an sshd with ``AllowTcpForwarding local``
  (remote forwards refused): ftptrio converts PORT/EPRT into PASV/EPSV.

Each case downloads, uploads (not wget), lists and resumes (REST), see
``clients.exercise``; one case per client also downloads the 64 MiB file.
Clients honour the address of a 227 reply (curl ``--no-ftp-skip-pasv-ip``,
lftp ``ftp:fix-pasv-address no``) so a wrong rewrite cannot go unnoticed.
"""

from __future__ import annotations

import pytest
import trio

import ftptrio
from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

#: limit for one case (several client runs; the 64 MiB download in some)
CASE_TIMEOUT = 300
SERVERS = ("vsftpd", "pyftpdlib")
#: servers exercised by curl only (all of curl's modes: EPSV, PASV, EPRT, PORT)
CURL_ONLY_SERVERS = ("proftpd",)
ACTIVE_MODES = ("EPRT", "PORT")
#: the one case per client that also downloads the 64 MiB file (both servers
#: and both directions of data connection covered between them)
BIG_CASES = {
    ("vsftpd", "curl", "EPSV"),
    ("pyftpdlib", "lftp", "PORT"),
    ("vsftpd", "wget", "PORT"),
    ("pyftpdlib", "ftplib", "PASV"),
}

def _servers_for(client: str) -> tuple[str, ...]:
    return SERVERS + CURL_ONLY_SERVERS if client == "curl" else SERVERS


CASES = [
    pytest.param(server, client, mode, id=f"{server}-{client}-{mode}")
    for client, cls in clients.CLIENTS.items()
    for mode in cls.modes
    for server in _servers_for(client)
]
CONVERTED_CASES = [
    pytest.param(server, client, mode, id=f"{server}-{client}-{mode}")
    for client, cls in clients.CLIENTS.items()
    for mode in cls.modes
    if mode in ACTIVE_MODES
    for server in _servers_for(client)
]
assert {(s, c, m) for s, c, m in BIG_CASES} <= {tuple(p.values) for p in CASES}
assert len({c for _s, c, _m in BIG_CASES}) == len(clients.CLIENTS)


def forwarder_config(sshd: servers.OpenSSHServer, ftp: servers.FTPServer, *,
                     listen_host: str = "127.0.0.1", **options) -> ftptrio.Config:
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(
            host=sshd.host,
            port=sshd.port,
            username=sshd.username,
            client_keys=(sshd.client_key,),
            known_hosts=sshd.known_hosts,
        ),
        forwards=(ftptrio.ForwardSpec(ftp_host=ftp.host, ftp_port=ftp.port, listen_host=listen_host),),
        **options,
    )


def _ftp_server(request, name: str) -> servers.FTPServer:
    return request.getfixturevalue("pyftpdlib_server" if name == "pyftpdlib" else name)


async def _run_case(sshd, ftp, client_name, mode, tmp_path, *, expected_data_mode, big,
                    **options) -> None:
    client = clients.CLIENTS[client_name](mode)
    with trio.fail_after(CASE_TIMEOUT):
        async with ftptrio.open_forwarder(forwarder_config(sshd, ftp, **options)) as fwd:
            host, port = fwd.addresses[0]
            await clients.exercise(client, clients.Target.for_server(ftp, host, port), ftp, tmp_path,
                                   big=big)
            stats = fwd.stats
    # ftptrio's own account: no data relayed in another mode than expected.
    # (Whether every transfer is counted is test_transfer_stats.py's business:
    # a client that closes the control connection right after 226, as wget
    # does, is not counted at all; that must not hide this client's interop.)
    assert set(stats.by_mode) <= {expected_data_mode}, (
        f"ftptrio relayed data as {stats.by_mode}, expected only {expected_data_mode!r}")
    assert stats.transfer_errors == 0, f"ftptrio counted {stats.transfer_errors} failed transfers"


@pytest.mark.parametrize("server, client, mode", CASES)
async def test_matrix(request, openssh, server, client, mode, tmp_path):
    ftp = _ftp_server(request, server)
    await _run_case(openssh, ftp, client, mode, tmp_path,
                    expected_data_mode="active" if mode in ACTIVE_MODES else "passive",
                    big=(server, client, mode) in BIG_CASES)


@pytest.mark.parametrize("server, client, mode", CONVERTED_CASES)
async def test_matrix_converted(request, openssh_local_only, server, client, mode, tmp_path):
    """Active client, ``active_mode="passive"``, sshd without remote forwarding."""
    ftp = _ftp_server(request, server)
    await _run_case(openssh_local_only, ftp, client, mode, tmp_path,
                    expected_data_mode="converted", big=False, active_mode="passive")
    # this sshd (used by the converted cases only) was never asked for a remote forward
    assert "rtype tcpip-forward" not in openssh_local_only.log()
