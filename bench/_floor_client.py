#!/usr/bin/env python3
"""The small-file floor of the SSH stack: an asyncssh client that is itself the FTP
client, with no forwarder, no local sockets and no rewriting (run by many_files.py).

It logs in over a direct-tcpip channel to the FTP server and downloads every file
over its own direct-tcpip data channel (EPSV, open, RETR, read to EOF, 226): the
SSH part of what ftptrio does per file and nothing else. ``--loop trio-asyncio``
runs asyncssh as ftptrio does (trio-asyncio); ``--loop asyncio`` on a stock asyncio
loop (this process then never imports trio, trio-asyncio or ftptrio). Each read from
the SSH server is acknowledged at once (TCP_QUICKACK), as ftptrio does, or OpenSSH's
sshd stalls every data channel by ~40 ms (docs/performance.md, trap 1).

Under trio-asyncio the whole loop runs as asyncio code in one ``aio_as_trio`` call:
no trio tasks and no trio/asyncio crossings per file, which ftptrio (trio for the
control connection, asyncio for SSH) cannot avoid. It holds RETR until the data
channel is open, as ftptrio does. So it bounds a forwarder on this stack from below;
it is not a forwarder.

Input: one JSON object on stdin (ssh: host, port, username, client_key, known_hosts,
ciphers (preference list); ftp: host, port, user, password; subdir, names, size;
legacy: PASV instead of EPSV; timeout: s per reply or read; warmup: how many of the
names to download first, untimed).
Output: one JSON object on stdout: elapsed s, setup latencies s (EPSV/PASV sent ->
first data byte), errors (a failure outside a file's download is the only error),
CPU s of this process during the downloads, the cipher used and the loop's class.
"""

from __future__ import annotations

import asyncio
import ftplib
import json
import socket
import sys
import time
import warnings
from typing import Any

try:  # as ftptrio._ssh does: asyncssh's import names cryptography's deprecated DSA classes
    from cryptography.utils import CryptographyDeprecationWarning
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                            module=r"asyncssh(\.|$)")
except ImportError:
    pass

import asyncssh  # noqa: E402

MAX_ERRORS = 20


def data_port(reply_line: bytes, legacy: bool, ftp_host: str) -> int:
    """The port of a 227 (``legacy``) or 229 reply, parsed as many_files' ftplib client
    parses it."""
    text = reply_line.decode("latin-1").rstrip("\r\n")
    if legacy:
        return ftplib.parse227(text)[1]
    return ftplib.parse229(text, (ftp_host, 0))[1]


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


async def reply(reader: asyncssh.SSHReader[bytes], timeout: float) -> bytes:
    """The last line of the next FTP reply."""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise EOFError("control channel closed")
        if len(line) >= 4 and line[3:4] == b" ":
            return line


async def download_all(job: dict[str, Any]) -> dict[str, Any]:
    ssh, ftp, timeout, legacy = job["ssh"], job["ftp"], job["timeout"], job["legacy"]

    async def expect(codes: str) -> bytes:
        line = await reply(r, timeout)
        if line[:1].decode() not in codes:
            raise RuntimeError(f"unexpected reply {line!r}")
        return line

    conn = await asyncssh.connect(ssh["host"], port=ssh["port"], username=ssh["username"],
                                  client_keys=[ssh["client_key"]],
                                  known_hosts=ssh["known_hosts"], config=None,
                                  encryption_algs=ssh["ciphers"], connect_timeout=timeout)
    acknowledge_at_once(conn)
    cipher = conn.get_extra_info("send_cipher")
    lat: list[float] = []
    errors: list[str] = []
    async with conn:
        r, w = await conn.open_connection(ftp["host"], ftp["port"])
        await expect("2")
        w.write(f"USER {ftp['user']}\r\n".encode())
        if (await expect("23")).startswith(b"3"):
            w.write(f"PASS {ftp['password']}\r\n".encode())
            await expect("2")
        for command in ("TYPE I", f"CWD {job['subdir']}"):
            w.write(command.encode() + b"\r\n")
            await expect("2")

        async def fetch(name: str) -> None:
            t0 = time.perf_counter()
            w.write(b"PASV\r\n" if legacy else b"EPSV\r\n")
            port = data_port(await expect("2"), legacy, ftp["host"])
            dr, dw = await conn.open_connection(ftp["host"], port)
            try:
                w.write(f"RETR {name}\r\n".encode())
                await expect("1")
                got = len(await asyncio.wait_for(dr.read(65536), timeout))
                t1 = time.perf_counter()
                while chunk := await asyncio.wait_for(dr.read(65536), timeout):
                    got += len(chunk)
            finally:
                dw.close()
            await expect("2")
            if got != job["size"]:
                errors.append(f"{name}: {got} of {job['size']} bytes")
            lat.append(t1 - t0)

        async def fetch_each(names: list[str]) -> None:
            for name in names:
                try:
                    await fetch(name)
                except (OSError, asyncssh.Error, ftplib.Error, RuntimeError, EOFError,
                        asyncio.TimeoutError) as exc:
                    errors.append(f"{name}: {exc!r}")
                    if len(errors) > MAX_ERRORS:
                        errors.append("too many errors, route aborted")
                        return

        await fetch_each(job["names"][:job.get("warmup", 0)])  # as the other routes warm up
        lat.clear()
        errors.clear()
        c0, t_start = time.process_time(), time.perf_counter()
        await fetch_each(job["names"])
        elapsed, cpu = time.perf_counter() - t_start, time.process_time() - c0
        w.write(b"QUIT\r\n")
    return {"elapsed": elapsed, "lat": lat, "errors": errors, "cpu": cpu, "cipher": cipher,
            "loop": loop_name()}


def loop_name() -> str:
    """The running event loop's class, and whether trio is loaded in this process."""
    loop = type(asyncio.get_running_loop())
    return f"{loop.__module__}.{loop.__qualname__}" + (
        " (trio loaded)" if "trio" in sys.modules else " (trio not loaded)")


async def download_or_report(job: dict[str, Any]) -> dict[str, Any]:
    """``download_all``, or its failure (connect, login, ...) as the only error."""
    try:
        return await download_all(job)
    except Exception as exc:  # noqa: BLE001 - reported to the bench, not raised
        return {"elapsed": 0.0, "lat": [], "errors": [f"floor client: {exc!r}"], "cpu": 0.0,
                "cipher": None, "loop": loop_name()}


def main() -> int:
    loop_kind = sys.argv[sys.argv.index("--loop") + 1] if "--loop" in sys.argv else "asyncio"
    job = json.load(sys.stdin)
    if loop_kind == "asyncio":
        result = asyncio.run(download_or_report(job))
    elif loop_kind == "trio-asyncio":
        import trio
        import trio_asyncio

        async def under_trio() -> dict[str, Any]:
            async with trio_asyncio.open_loop():
                result: dict[str, Any] = await trio_asyncio.aio_as_trio(download_or_report)(job)
                return result

        result = trio.run(under_trio)
    else:
        sys.exit(f"unknown --loop {loop_kind!r} (asyncio or trio-asyncio)")
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
