"""Honest transfer accounting (first contact, round 2, point 5): a transfer is ok only
when its data connection carried it and the server's final reply is 2xx; a transfer
command the server refuses (RETR of a missing file: 550) is counted as refused, not as
a transfer; a data connection no transfer command used (curl's SIZE -> 550 path) is not
a transfer at all. --stats, the JSON log fields and TransferStats agree."""

from __future__ import annotations

import dataclasses
import ftplib
import logging
import socket

import pytest
import trio

import ftptrio

try:
    from .integration_helpers import wait_until
except ImportError:  # run from this directory
    from integration_helpers import wait_until  # type: ignore


def transfer_records(caplog) -> list[dict]:
    return [r.transfer for r in caplog.records if hasattr(r, "transfer")]


def ftplib_session(addr, ftp, passive: bool, action) -> None:
    client = ftplib.FTP()
    client.connect(addr[0], addr[1], timeout=20)
    try:
        client.login(ftp.user, ftp.password)
        client.set_pasv(passive)
        action(client)
    finally:
        client.quit()


@pytest.mark.parametrize("mode", ["passive", "active"])
async def test_retr_of_a_missing_file_is_refused_not_a_transfer(forwarder_config, inprocess_ftp,
                                                                 caplog, mode):
    caplog.set_level(logging.INFO, logger="ftptrio")

    def missing(client: ftplib.FTP) -> None:
        with pytest.raises(ftplib.error_perm, match="550"):
            client.retrbinary("RETR missing.bin", lambda _data: None)
        client.retrlines("LIST", lambda _line: None)  # a real transfer after it

    async with ftptrio.open_forwarder(forwarder_config) as fwd:
        await trio.to_thread.run_sync(ftplib_session, fwd.addresses[0], inprocess_ftp,
                                      mode == "passive", missing)
        await wait_until(lambda: fwd.stats.transfers_refused == 1 and fwd.stats.transfers == 1)
        stats = fwd.stats
    assert stats.transfer_errors == 0
    records = transfer_records(caplog)
    refused = [r for r in records if r["command"] == "RETR missing.bin"]
    assert len(refused) == 1 and refused[0]["result"] == "refused" and refused[0]["reply"] == 550
    assert [r["result"] for r in records if r["command"] == "LIST"] == ["ok"]
    assert "result=refused (550)" in caplog.text


async def test_a_data_connection_without_a_transfer_command_is_not_counted(
        forwarder_config, inprocess_ftp, caplog):
    """curl: EPSV, connect, SIZE -> 550, close: no transfer, no command=''."""
    from ftp_fakes import FTPClient

    caplog.set_level(logging.INFO, logger="ftptrio")
    async with ftptrio.open_forwarder(forwarder_config) as fwd:
        client = await FTPClient.connect(fwd.addresses[0])
        await client.login(inprocess_ftp)
        reply = await client.cmd("EPSV")
        port = int(reply.split("|||")[1].split("|")[0])
        data = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await client.cmd("SIZE missing.bin")).startswith("550")
        await data.aclose()
        await client.cmd("QUIT")
        await client.aclose()
        await wait_until(lambda: fwd.stats.sessions_active == 0)
        stats = fwd.stats
    assert (stats.transfers, stats.transfers_refused, stats.transfer_errors) == (0, 0, 0)
    assert "command=''" not in caplog.text and not transfer_records(caplog)


def test_stats_line_names_refused_transfers():
    from ftptrio._cli import format_stats, stats_dict

    stats = ftptrio.TransferStats()
    stats.record("passive", to_server=0, to_client=10, error=None)
    stats.record("passive", to_server=0, to_client=0, refused=True)
    assert "1 transfers (passive 1), 1 refused, 0 transfer errors" in format_stats(stats)
    assert stats_dict(stats)["transfers_refused"] == 1
