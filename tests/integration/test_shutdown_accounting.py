"""A transfer cut by shutdown (the forwarder cancelled, as when --grace runs out)
is accounted honestly: one transfer, counted as an error, with the bytes it moved
so far in the totals, and logged as aborted."""

from __future__ import annotations

import logging
import os

import trio

import ftptrio

from ftp_fakes import FTPClient

SIZE = 32 * 1024 * 1024


async def test_transfer_cut_by_shutdown_counts_partial_bytes_as_error(forwarder_config,
                                                                      inprocess_ftp, caplog):
    caplog.set_level(logging.INFO, logger="ftptrio")
    with open(os.path.join(inprocess_ftp.root, "big.bin"), "wb") as f:
        f.write(os.urandom(SIZE))
    got = 0
    with trio.fail_after(60):
        async with ftptrio.open_forwarder(forwarder_config) as fwd:
            ftp = await FTPClient.connect(fwd.addresses[0])
            await ftp.login(inprocess_ftp)
            assert (await ftp.cmd("TYPE I")).startswith("200")
            data = await trio.open_tcp_stream("127.0.0.1", await ftp.pasv())
            await ftp.send("RETR big.bin\r\n")
            assert (await ftp.text_reply())[:3] in ("125", "150")
            while got < 2 * 1024 * 1024:  # the transfer is under way...
                got += len(await data.receive_some(65536))
            stats = fwd.stats
            # ...when the forwarder is cancelled: the block ends
        await data.aclose()
        await ftp.aclose()
    assert stats.transfers == 1, stats
    assert stats.transfer_errors == 1, stats
    assert got <= stats.bytes_to_client < SIZE, stats
    assert stats.bytes_to_server == 0, stats
    records = [r for r in caplog.records if getattr(r, "transfer", None)]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].transfer["result"] == "aborted"
    assert records[0].transfer["bytes"] == stats.bytes_to_client
    assert "result=error (aborted)" in records[0].getMessage()
