#!/usr/bin/env python3
"""The small-file floor of the SSH stack: an asyncssh client that is itself the FTP
client, with no forwarder, no local sockets and no rewriting (run by many_files.py).

It logs in over a direct-tcpip channel to the FTP server and downloads every file
over its own direct-tcpip data channel (EPSV, open, RETR, read to EOF, 226): the
SSH part of what ftptrio does per file and nothing else. ``--loop trio-asyncio``
runs asyncssh as ftptrio does (trio-asyncio); ``--loop asyncio`` on a stock asyncio
loop (this process then never imports trio, trio-asyncio or ftptrio). Each read from
the SSH server is acknowledged at once (TCP_QUICKACK), as ftptrio does, or OpenSSH's
sshd stalls every data channel by ~40 ms (PERFORMANCE.md, trap 1).

Input: one JSON object on stdin (ssh: host, port, username, client_key, known_hosts,
cipher or null; ftp: host, port, user, password; subdir, names, size; warmup: how many
of the names to download first, untimed).
Output: one JSON object on stdout: elapsed s, setup latencies s (EPSV sent -> first
data byte), errors, CPU s of this process during the downloads.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
from typing import Any

import asyncssh

EPSV_PORT = re.compile(rb"\(\|\|\|(\d+)\|\)")


def acknowledge_at_once(conn: asyncssh.SSHClientConnection) -> None:
    """TCP_QUICKACK after every small read from the SSH server (what ftptrio's
    ``_ssh._connect._ack_immediately`` does; repeated here so that the stock-asyncio
    run imports nothing of ftptrio)."""
    sock = conn.get_extra_info("socket")
    receive = conn.data_received

    def data_received(data: bytes, datatype: Any = None) -> None:
        receive(data, datatype)
        if len(data) < 16384:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    conn.data_received = data_received  # type: ignore[method-assign]


async def reply(reader: asyncssh.SSHReader[bytes]) -> bytes:
    """The last line of the next FTP reply."""
    while True:
        line = await reader.readline()
        if not line:
            raise EOFError("control channel closed")
        if len(line) >= 4 and line[3:4] == b" ":
            return line


async def expect(reader: asyncssh.SSHReader[bytes], codes: str) -> bytes:
    line = await reply(reader)
    if line[:1].decode() not in codes:
        raise RuntimeError(f"unexpected reply {line!r}")
    return line


async def download_all(job: dict[str, Any]) -> dict[str, Any]:
    ssh, ftp = job["ssh"], job["ftp"]
    conn = await asyncssh.connect(ssh["host"], port=ssh["port"], username=ssh["username"],
                                  client_keys=[ssh["client_key"]],
                                  known_hosts=ssh["known_hosts"], config=None,
                                  **({"encryption_algs": [ssh["cipher"]]} if ssh["cipher"] else {}))
    acknowledge_at_once(conn)
    lat: list[float] = []
    errors: list[str] = []
    async with conn:
        r, w = await conn.open_connection(ftp["host"], ftp["port"])
        await expect(r, "2")
        w.write(f"USER {ftp['user']}\r\n".encode())
        if (await expect(r, "23")).startswith(b"3"):
            w.write(f"PASS {ftp['password']}\r\n".encode())
            await expect(r, "2")
        for command in ("TYPE I", f"CWD {job['subdir']}"):
            w.write(command.encode() + b"\r\n")
            await expect(r, "2")
        async def fetch_each(names: list[str]) -> None:
            for name in names:
                try:
                    t0 = time.perf_counter()
                    w.write(b"EPSV\r\n")
                    found = EPSV_PORT.search(await expect(r, "2"))
                    if not found:
                        raise RuntimeError("229 reply without a port")
                    dr, dw = await conn.open_connection(ftp["host"], int(found.group(1)))
                    w.write(f"RETR {name}\r\n".encode())
                    await expect(r, "1")
                    got = len(await dr.read(65536))
                    t1 = time.perf_counter()
                    while chunk := await dr.read(65536):
                        got += len(chunk)
                    dw.close()
                    await expect(r, "2")
                    if got != job["size"]:
                        errors.append(f"{name}: {got} of {job['size']} bytes")
                    lat.append(t1 - t0)
                except (OSError, asyncssh.Error, RuntimeError, EOFError) as exc:
                    errors.append(f"{name}: {exc!r}")
                    if len(errors) > 20:
                        break

        await fetch_each(job["names"][:job.get("warmup", 0)])  # as the other routes warm up
        lat.clear()
        c0, t_start = time.process_time(), time.perf_counter()
        await fetch_each(job["names"])
        elapsed, cpu = time.perf_counter() - t_start, time.process_time() - c0
        w.write(b"QUIT\r\n")
    return {"elapsed": elapsed, "lat": lat, "errors": errors, "cpu": cpu}


def main() -> int:
    loop_kind = sys.argv[sys.argv.index("--loop") + 1] if "--loop" in sys.argv else "asyncio"
    job = json.load(sys.stdin)
    if loop_kind == "asyncio":
        result = asyncio.run(download_all(job))
    elif loop_kind == "trio-asyncio":
        import trio
        import trio_asyncio

        async def under_trio() -> dict[str, Any]:
            async with trio_asyncio.open_loop():
                result: dict[str, Any] = await trio_asyncio.aio_as_trio(download_all)(job)
                return result

        result = trio.run(under_trio)
    else:
        sys.exit(f"unknown --loop {loop_kind!r} (asyncio or trio-asyncio)")
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
