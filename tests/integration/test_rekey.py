"""Long transfers across SSH rekeying: keys are renegotiated every REKEY_BYTES
while large files go through ftptrio in both directions, in passive and active
mode; every byte arrives intact and the rekeys did happen. asyncssh counts the
bytes each side sends: the in-process server (rekey_bytes) rekeys during
downloads, ftptrio's SSH client (``RekeyLimit`` in an ssh_config file it is
given) during uploads."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest
import trio

from ftptrio.testing import inprocess_ssh_server
from ftptrio.testing.servers import sha256_bytes

try:
    from .integration_helpers import download, upload
except ImportError:
    from integration_helpers import download, upload  # type: ignore

REKEY_BYTES = 1024 * 1024
SIZE = 24 * 1024 * 1024


@pytest.fixture
async def ssh_server(aio_loop):
    """The in-process SSH server, rekeying every REKEY_BYTES (overrides conftest's)."""
    async with inprocess_ssh_server(rekey_bytes=REKEY_BYTES) as info:
        yield info


@pytest.fixture
def forwarder_config(forwarder_config, tmp_path):
    """conftest's config, with an ssh_config that makes ftptrio's client rekey too."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"RekeyLimit {REKEY_BYTES}\n")
    return dataclasses.replace(forwarder_config, ssh=dataclasses.replace(
        forwarder_config.ssh, config_files=(str(ssh_config),)))


def completed_rekeys(caplog: pytest.LogCaptureFixture) -> int:
    return sum(r.getMessage().endswith("Completed key exchange") for r in caplog.records
               if r.name.startswith("asyncssh"))


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
async def test_large_transfers_survive_frequent_rekeys(forwarder, inprocess_ftp, caplog, passive):
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    payload = os.urandom(SIZE)
    with open(os.path.join(inprocess_ftp.root, "down.bin"), "wb") as f:
        f.write(payload)
    addr = forwarder.addresses[0]
    before = completed_rekeys(caplog)
    with trio.fail_after(120):
        got = await trio.to_thread.run_sync(
            lambda: download(addr, inprocess_ftp, "down.bin", passive=passive))
    assert sha256_bytes(got) == sha256_bytes(payload)
    after_download = completed_rekeys(caplog)
    # both ends log each key exchange: SIZE / REKEY_BYTES rekeys, seen twice
    assert after_download - before >= SIZE // REKEY_BYTES, after_download - before
    with trio.fail_after(120):
        await trio.to_thread.run_sync(
            lambda: upload(addr, inprocess_ftp, "up.bin", payload, passive=passive))
    with open(os.path.join(inprocess_ftp.root, "up.bin"), "rb") as f:
        assert sha256_bytes(f.read()) == sha256_bytes(payload)
    assert completed_rekeys(caplog) - after_download >= SIZE // REKEY_BYTES
