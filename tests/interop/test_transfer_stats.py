"""ftptrio's transfer counters (``Forwarder.stats``) with real clients.

Every completed data transfer must be counted (and logged), also when the
client closes its control connection right after the 226 reply without QUIT,
as wget does.  curl sends QUIT and waits for 221 first.
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

DOWNLOADS = 3


@pytest.mark.parametrize("client_name", ["curl", "wget"])
async def test_every_download_is_counted(openssh, pyftpdlib_server, client_name, tmp_path):
    ftp = pyftpdlib_server
    client = clients.CLIENTS[client_name]("PASV")
    size = ftp.path("one_mib.bin").stat().st_size
    with trio.fail_after(120):
        async with ftptrio.open_forwarder(clients.forwarder_config(openssh, ftp)) as fwd:
            host, port = fwd.addresses[0]
            target = clients.Target.for_server(ftp, host, port)
            for i in range(DOWNLOADS):
                local = tmp_path / f"down-{i}.bin"
                await client.download(target, "one_mib.bin", local)
                assert servers.sha256_file(local) == servers.sha256_file(ftp.path("one_mib.bin"))
            # A client is done once it has the 226 (wget closes right then, curl after
            # 221); ftptrio's session may still be finishing the data relay, which
            # records the transfer: read the counters once every session has ended.
            with trio.fail_after(10):
                await fwd.wait_idle()
            stats = fwd.stats
            assert stats.sessions_active == 0, stats
            assert stats.sessions == DOWNLOADS
            assert (stats.transfers, stats.by_mode.get("passive", 0)) == (DOWNLOADS, DOWNLOADS), (
                f"{client_name}: {DOWNLOADS} complete downloads, ftptrio counted {stats}")
            assert stats.bytes_to_client == DOWNLOADS * size, stats
