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

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

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
    return clients.SERVERS + CURL_ONLY_SERVERS if client == "curl" else clients.SERVERS


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


@pytest.mark.parametrize("server, client, mode", CASES)
async def test_matrix(request, openssh, server, client, mode, tmp_path):
    ftp = clients.ftp_server(request, server)
    await clients.run_case(openssh, ftp, client, mode, tmp_path,
                           expected_data_mode="active" if mode in ACTIVE_MODES else "passive",
                           big=(server, client, mode) in BIG_CASES)


@pytest.mark.parametrize("server, client, mode", CONVERTED_CASES)
async def test_matrix_converted(request, openssh_local_only, server, client, mode, tmp_path):
    """Active client, ``active_mode="passive"``, sshd without remote forwarding."""
    ftp = clients.ftp_server(request, server)
    await clients.run_case(openssh_local_only, ftp, client, mode, tmp_path,
                           expected_data_mode="converted", big=False, active_mode="passive")
    # this sshd (used by the converted cases only) was never asked for a remote forward
    assert "rtype tcpip-forward" not in openssh_local_only.log()
