"""``python -m ftptrio demo``: real transfers through ftptrio with embedded servers.

Starts an in-process asyncssh SSH server and a pyftpdlib FTP server (the
``demo`` extra: ``pip install 'ftptrio[demo]'``) on free loopback ports, runs ftptrio
between them, and moves a file with ftplib in passive, active and converted active
mode (download and upload), then the same through ``--sftp-server`` from a second SSH
server's SFTP (password login), each verified by sha256.
"""

from __future__ import annotations

import argparse
import ftplib
import hashlib
import io
import os
import sys
import time
from typing import Callable, Sequence
from dataclasses import dataclass, replace

import trio

from ._config import Config, ForwardSpec, SSHOptions
from ._server import open_forwarder
from ._ssh import asyncio_loop
from .testing import inprocess_ssh_server, threaded_ftp_server


@dataclass
class DemoResult:
    mode: str
    direction: str
    nbytes: int
    seconds: float
    ok: bool
    detail: str = ""


def _transfer(host: str, port: int, user: str, password: str, passive: bool,
              direction: str, payload: bytes, name: str, moved: list[int]) -> DemoResult:
    """One ftplib transfer; ``moved[0]`` counts bytes as they go (for progress)."""
    start = time.perf_counter()

    def count(chunk: bytes) -> None:
        moved[0] += len(chunk)

    try:
        with ftplib.FTP() as ftp:
            ftp.connect(host, port, timeout=60)
            ftp.login(user, password)
            ftp.set_pasv(passive)
            if direction == "download":
                sink = io.BytesIO()

                def write(chunk: bytes) -> None:
                    sink.write(chunk)
                    count(chunk)

                ftp.retrbinary(f"RETR {name}", write, blocksize=256 * 1024)
                got = sink.getvalue()
            else:
                ftp.storbinary(f"STOR {os.path.basename(name)}", io.BytesIO(payload),
                               blocksize=256 * 1024, callback=count)
            ftp.quit()
        if direction == "upload":  # name is the server-side path: check what arrived
            with open(name, "rb") as f:
                got = f.read()
    except (OSError, ftplib.Error, EOFError) as exc:
        return DemoResult("", direction, 0, time.perf_counter() - start, False, repr(exc))
    seconds = time.perf_counter() - start
    ok = hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    return DemoResult("", direction, len(got), seconds, ok,
                      "" if ok else "sha256 mismatch")


async def run_demo(size: int = 16 * 1024 * 1024,
                   out: Callable[[str], object] = print) -> bool:
    """Run the demo; returns True when every transfer verified."""
    payload = os.urandom(size)
    results: list[DemoResult] = []
    async with asyncio_loop():
        async with inprocess_ssh_server() as ssh:
            with threaded_ftp_server() as ftp:
                with open(os.path.join(ftp.root, "demo.bin"), "wb") as f:
                    f.write(payload)
                base = Config(
                    ssh=SSHOptions(host=ssh.host, port=ssh.port, username=ssh.username,
                                   client_keys=(ssh.client_key_path,),
                                   known_hosts=ssh.known_hosts),
                    forwards=(ForwardSpec(ftp_host=ftp.host, ftp_port=ftp.port),),
                )
                out(f"ftptrio demo: SSH server 127.0.0.1:{ssh.port}, "
                    f"FTP server 127.0.0.1:{ftp.port}, file {size / 2**20:.0f} MiB")
                cases = [
                    ("passive", base, True),
                    ("active", base, False),
                    ("active->passive", replace(base, active_mode="passive"), False),
                ]
                for mode, config, passive in cases:
                    await _run_case(mode, config, passive, ftp.user, ftp.password,
                                    ftp.root, payload, results, out)
                # --sftp-server: the same files served from the SSH server's SFTP, the
                # FTP login being the user's own SSH login (no FTP server involved)
                async with inprocess_ssh_server(passwords={SFTP_USER: SFTP_PASSWORD},
                                                sftp_root=ftp.root) as sftp_host:
                    sftp_config = replace(
                        base, ssh=replace(base.ssh, port=sftp_host.port,
                                          known_hosts=sftp_host.known_hosts),
                        forwards=(ForwardSpec(ftp_host="", sftp=True),))
                    await _run_case("sftp-server", sftp_config, True, SFTP_USER,
                                    SFTP_PASSWORD, ftp.root, payload, results, out)
    ok = all(r.ok for r in results)
    total = sum(r.nbytes for r in results)
    out(f"{'ALL TRANSFERS VERIFIED' if ok else 'SOME TRANSFERS FAILED'}: "
        f"{sum(r.ok for r in results)}/{len(results)} ok, {total / 1e6:.1f} MB moved")
    return ok


#: the --sftp-server case's FTP login, which is its SSH login
SFTP_USER, SFTP_PASSWORD = "alice", "demo-password"


async def _run_case(mode: str, config: Config, passive: bool, user: str, password: str,
                    root: str, payload: bytes, results: list[DemoResult],
                    out: Callable[[str], object]) -> None:
    """A download and an upload through one forwarder."""
    size = len(payload)
    async with open_forwarder(config) as fwd:
        host, port = fwd.addresses[0]
        for direction in ("download", "upload"):
            name = ("demo.bin" if direction == "download" else
                    os.path.join(root, f"up-{mode.replace('->', '-to-')}.bin"))
            moved = [0]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_show_progress, mode, direction, moved, size, out)
                result = await trio.to_thread.run_sync(
                    _transfer, host, port, user, password, passive, direction, payload,
                    name, moved)
                nursery.cancel_scope.cancel()
            result.mode = mode
            results.append(result)
            out(_format(result))


async def _show_progress(mode: str, direction: str, moved: list[int], size: int,
                         out: Callable[[str], object]) -> None:
    """A live line on a terminal; plain lines (every 2 s) otherwise."""
    live = out is print and sys.stdout.isatty()
    interval = 0.1 if live else 2.0
    try:
        while True:
            await trio.sleep(interval)
            line = (f"  {mode:<16} {direction:<9} {moved[0] / max(size, 1):6.1%} "
                    f"{moved[0]:>11,} bytes")
            if live:
                sys.stdout.write("\r" + line)
                sys.stdout.flush()
            else:
                out(line)
    finally:
        if live:
            sys.stdout.write("\r" + " " * 60 + "\r")


def _format(r: DemoResult) -> str:
    rate = r.nbytes / r.seconds / 1e6 if r.seconds else 0.0
    status = "OK (sha256 verified)" if r.ok else f"FAILED {r.detail}"
    return (f"  {r.mode:<16} {r.direction:<9} {r.nbytes:>11,} bytes "
            f"{r.seconds:6.2f} s {rate:8.1f} MB/s  {status}")


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(
        prog="ftptrio demo",
        description="Self-contained demonstration: an in-process SSH server and FTP server "
                    "on loopback, and real transfers through the forwarder in passive, "
                    "active and active-converted-to-passive modes, and through "
                    "--sftp-server (FTP served from SFTP), each verified by sha256.")
    parser.add_argument("--size", type=int, default=16, metavar="MIB",
                        help="size of the file moved each way, in MiB (16)")
    args = parser.parse_args(list(argv))
    if args.size < 0:
        parser.error("--size must not be negative")
    try:
        import pyftpdlib  # noqa: F401 - the demo's FTP server (the "demo" extra)
    except ImportError:
        print("ftptrio demo: its FTP server, pyftpdlib, is not installed (an optional "
              "dependency): pip install 'ftptrio[demo]' (from a source checkout: "
              "pip install '.[demo]')", file=sys.stderr)
        return 1
    return 0 if trio.run(run_demo, args.size * 1024 * 1024) else 1
