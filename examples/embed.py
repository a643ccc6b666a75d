"""Embedding ftptrio in a trio application.

Run it standalone (in-process SSH and FTP servers, nothing to set up):

    python examples/embed.py --demo

or against real servers:

    python examples/embed.py --ssh-host sshhost --ssh-user alice \\
        --ssh-key ~/.ssh/id_ed25519 --ftp-host localhost --ftp-port 21 \\
        --ftp-user bob --ftp-password secret --file README.txt

It starts a forwarder, downloads one file with ftplib (in a worker thread, so
trio keeps running the forwarder meanwhile), prints the file's sha256 and the
forwarder's counters, and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ftplib
import hashlib
import io
import logging
import os
import sys

import trio
import trio_asyncio

import ftptrio


def download(host: str, port: int, user: str, password: str, name: str) -> bytes:
    """Plain blocking ftplib: the forwarder looks like any FTP server."""
    sink = io.BytesIO()
    with ftplib.FTP() as ftp:
        ftp.connect(host, port, timeout=30)
        ftp.login(user, password)
        ftp.set_pasv(True)  # PASV: ftptrio rewrites the 227 reply to its own listener
        ftp.retrbinary(f"RETR {name}", sink.write)
        ftp.quit()
    return sink.getvalue()


async def fetch_through(fwd: ftptrio.Forwarder, args: argparse.Namespace) -> None:
    host, port = fwd.addresses[0]  # one entry per ForwardSpec, in order
    print(f"forwarder listening on {host}:{port}")
    data = await trio.to_thread.run_sync(
        download, host, port, args.ftp_user, args.ftp_password, args.file)
    print(f"sha256 {hashlib.sha256(data).hexdigest()}  {args.file} ({len(data)} bytes)")
    # the counters are updated as each session winds down: wait for that first
    with trio.move_on_after(10):
        await fwd.wait_idle()
    s = fwd.stats
    print(f"stats: {s.sessions} session(s), {s.transfers} transfer(s) {s.by_mode}, "
          f"{s.bytes_to_client} bytes to clients, {s.transfer_errors} errors")


# Style 1: an async context manager. The forwarder runs for the block and is
# shut down (listeners closed, SSH connection closed) when the block ends.
# A failure to start (TunnelError, BindError, ConfigError: all FtptrioError) is
# raised by `async with` itself; an error raised in the block comes out as itself.
async def with_context_manager(config: ftptrio.Config, args: argparse.Namespace) -> None:
    async with ftptrio.open_forwarder(config) as fwd:
        await fetch_through(fwd, args)


# Style 2: inside a nursery you already have. nursery.start() returns once the
# SSH connection is up and the listeners are bound; cancel the nursery to stop.
# A failure to start is raised by nursery.start() itself. Let it leave the
# `async with` block and your nursery wraps it in an ExceptionGroup (as trio does
# with any error leaving a nursery), so it is caught inside and raised after.
async def with_nursery(config: ftptrio.Config, args: argparse.Namespace) -> None:
    failed: ftptrio.FtptrioError | None = None
    async with trio.open_nursery() as nursery:
        try:
            fwd = await nursery.start(ftptrio.serve, config)
        except ftptrio.FtptrioError as exc:
            failed = exc
        else:
            await fetch_through(fwd, args)
            nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed


def make_config(args: argparse.Namespace) -> ftptrio.Config:
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(
            host=args.ssh_host, port=args.ssh_port, username=args.ssh_user,
            client_keys=(args.ssh_key,) if args.ssh_key else None,
            known_hosts=args.known_hosts),  # None: ~/.ssh/known_hosts
        # listen_port=0 (the default): the OS picks a free local port
        forwards=(ftptrio.ForwardSpec(ftp_host=args.ftp_host, ftp_port=args.ftp_port),),
    )


async def main(args: argparse.Namespace) -> None:
    run = with_nursery if args.nursery else with_context_manager
    if not args.demo:
        await run(make_config(args), args)
        return
    # --demo: start the SSH and FTP servers ftptrio's own tests use
    # (ftptrio.testing: test helpers, not part of the public API). The SSH
    # server is asyncssh, so it needs a trio-asyncio loop; ftptrio notices the
    # loop is already open and shares it.
    from ftptrio.testing import inprocess_ssh_server, threaded_ftp_server

    async with trio_asyncio.open_loop(), inprocess_ssh_server() as ssh:
        with threaded_ftp_server() as ftp:
            args.file = "hello.bin"
            with open(os.path.join(ftp.root, args.file), "wb") as f:
                f.write(os.urandom(1024 * 1024))
            args.ssh_host, args.ssh_port, args.ssh_user = ssh.host, ssh.port, ssh.username
            args.ssh_key, args.known_hosts = ssh.client_key_path, ssh.known_hosts
            args.ftp_host, args.ftp_port = ftp.host, ftp.port
            args.ftp_user, args.ftp_password = ftp.user, ftp.password
            await run(make_config(args), args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", action="store_true",
                   help="start in-process SSH and FTP servers (ignores the options below)")
    p.add_argument("--nursery", action="store_true",
                   help="use nursery.start(ftptrio.serve, ...) instead of open_forwarder")
    p.add_argument("--ssh-host", default="localhost")
    p.add_argument("--ssh-port", type=int, default=None)
    p.add_argument("--ssh-user", default=None)
    p.add_argument("--ssh-key", default=None, help="private key file")
    p.add_argument("--known-hosts", default=None, help="known_hosts file")
    p.add_argument("--ftp-host", default="localhost", help="as the SSH server sees it")
    p.add_argument("--ftp-port", type=int, default=21)
    p.add_argument("--ftp-user", default="anonymous")
    p.add_argument("--ftp-password", default="anonymous@")
    p.add_argument("--file", default="README", help="file to download")
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)  # ftptrio logs under "ftptrio"
    try:
        trio.run(main, parse_args())
    except ftptrio.FtptrioError as exc:  # e.g. SSH connection or host key failure
        sys.exit(f"embed.py: {exc}")
