"""One long FTP session: thousands of transfers leave no per-transfer state behind
(issue 14.5): flat memory, file descriptors and trio task counts."""

from __future__ import annotations

import ftplib
import gc
import os

import trio

from ftptrio.testing import trio_task_count

try:
    from .integration_helpers import CLIENT_TIMEOUT, wait_until, write_random
except ImportError:
    from integration_helpers import CLIENT_TIMEOUT, wait_until, write_random  # type: ignore

#: transfers in the session (.ci/run sets FTPTRIO_LONG_SESSION_TRANSFERS=10000)
TRANSFERS = int(os.environ.get("FTPTRIO_LONG_SESSION_TRANSFERS", "2000"))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")



async def test_thousands_of_active_transfers_in_one_session_leave_nothing_behind(
        forwarder, inprocess_ftp):
    write_random(os.path.join(inprocess_ftp.root, "tiny.bin"), 64)
    ftp = ftplib.FTP()
    await trio.to_thread.run_sync(lambda: ftp.connect(*forwarder.addresses[0],
                                                      timeout=CLIENT_TIMEOUT))
    await trio.to_thread.run_sync(ftp.login, inprocess_ftp.user, inprocess_ftp.password)
    ftp.set_pasv(False)

    def transfers(count: int) -> None:
        for _ in range(count):
            chunks: list[bytes] = []
            ftp.retrbinary("RETR tiny.bin", chunks.append)
            assert b"".join(chunks) and len(b"".join(chunks)) == 64

    samples = []
    done = 0
    for batch in (TRANSFERS // 10,) * 10:
        await trio.to_thread.run_sync(transfers, batch)
        done += batch
        await wait_until(lambda: forwarder.stats.transfers == done, 10, "transfers counted")
        gc.collect()
        samples.append((_open_fds(), trio_task_count(), _rss_kib()))
    await trio.to_thread.run_sync(ftp.quit)
    assert forwarder.stats.transfers == TRANSFERS and forwarder.stats.transfer_errors == 0
    # after the first batch, the counts stay flat: nothing piles up per transfer
    first_fds, first_tasks, first_rss = samples[0]
    for fds, tasks, rss in samples[1:]:
        assert fds <= first_fds + 4, samples
        assert tasks <= first_tasks + 4, samples
        assert rss <= first_rss + 16 * 1024, samples  # KiB: no growth per transfer
