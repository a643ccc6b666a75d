"""SFTPFiles (the RemoteFiles of --sftp-server) against OpenSSH's sshd with
``Subsystem sftp internal-sftp`` (protocol 3, its limits), and against an sshd
without an sftp subsystem."""

from __future__ import annotations

import hashlib
import os
import pwd

import pytest
import trio_asyncio

import ftptrio
from ftptrio._seams import RemoteFileError
from ftptrio._ssh import Tunnel


def _options(server) -> ftptrio.SSHOptions:
    return ftptrio.SSHOptions(host=server.host, port=server.port, username=server.username,
                              client_keys=(server.client_key,),
                              known_hosts=server.known_hosts, connect_timeout=10.0)


async def test_sftp_files_on_openssh(openssh, tmp_path):
    data = os.urandom((6 << 20) + 12345)
    root = tmp_path / "files"
    root.mkdir()
    (root / "existing").write_bytes(b"old")
    async with trio_asyncio.open_loop():
        tunnel = Tunnel(_options(openssh))
        try:
            files = await tunnel.open_sftp()
            assert files.read_size == 261120  # OpenSSH's limits@openssh.com
            assert await files.realpath(".") == os.path.expanduser("~" + openssh.username)
            base = str(root)
            async with files.write_file(f"{base}/big") as writer:
                for start in range(0, len(data), 100_000):
                    await writer.write(data[start:start + 100_000])
            assert hashlib.sha256((root / "big").read_bytes()).digest() == \
                hashlib.sha256(data).digest()
            async with files.read_file(f"{base}/big", 1000) as chunks:
                got = b"".join([chunk async for chunk in chunks])
            assert got == data[1000:]

            await files.mkdir(f"{base}/dir")
            with pytest.raises(RemoteFileError) as info:  # protocol 3: FX_FAILURE
                await files.mkdir(f"{base}/dir")
            assert (info.value.kind, str(info.value)) == ("failure", "Failure")
            with pytest.raises(RemoteFileError) as info:
                await files.stat(f"{base}/missing")
            assert info.value.kind == "not-found"

            entries = await files.listdir(base)
            assert [e.name for e in entries] == ["big", "dir", "existing"]
            me = pwd.getpwuid(os.getuid()).pw_name
            assert all(e.owner == me for e in entries)
            assert entries[0].size == len(data) and entries[1].is_dir

            await files.rename(f"{base}/big", f"{base}/existing")  # posix-rename: replaces
            assert (root / "existing").stat().st_size == len(data)
            async with files.write_file(f"{base}/existing", "append") as writer:
                await writer.write(b"tail")
            assert (root / "existing").read_bytes()[-4:] == b"tail"
            await files.remove(f"{base}/existing")
            await files.rmdir(f"{base}/dir")
            assert os.listdir(root) == []
            await files.aclose()
        finally:
            await tunnel.aclose()


async def test_sshd_without_sftp_subsystem(openssh_no_sftp):
    async with trio_asyncio.open_loop():
        tunnel = Tunnel(_options(openssh_no_sftp))
        try:
            with pytest.raises(ftptrio.SFTPUnavailable, match="Subsystem sftp"):
                await tunnel.open_sftp()
        finally:
            await tunnel.aclose()
