"""IPv6 clients: ftptrio listens on [::1], curl connects to ftp://[::1]:PORT/.

curl speaks EPSV and EPRT (``-P -``: EPRT |2|::1|port|) over IPv6; ftptrio
opens IPv6 passive listeners for IPv6 clients and relays active data to the
client's IPv6 listener.  The FTP servers and sshd stay on 127.0.0.1 (ftptrio
translates EPRT |2| into a command the IPv4 server side understands).
"""

from __future__ import annotations

import os
import socket

import pytest

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

MODES = ("EPSV", "EPRT")


@pytest.fixture(scope="module")
def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        msg = f"IPv6 loopback [::1] is not available: {exc}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@pytest.mark.parametrize("server, client, mode", [
    pytest.param(server, "curl", mode, id=f"{server}-curl-{mode}") for mode in MODES for server in clients.SERVERS
])
async def test_ipv6(request, ipv6_loopback, openssh, server, client, mode, tmp_path):
    ftp = clients.ftp_server(request, server)
    assert client in clients.CLIENTS
    await clients.run_case(openssh, ftp, client, mode, tmp_path, listen_host="::1",
                           expected_data_mode="active" if mode == "EPRT" else "passive", big=False)
