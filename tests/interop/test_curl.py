"""curl through ftptrio and a real OpenSSH sshd to real FTP servers.

Every data-channel negotiation curl can use: EPSV (default), PASV, EPRT, PORT.
``--no-ftp-skip-pasv-ip`` makes curl honour the address in 227, so a wrong
rewrite of that address cannot go unnoticed.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import trio

import ftptrio

try:
    from . import servers
except ImportError:  # pragma: no cover
    import servers  # type: ignore[no-redef]

CURL_MAX_TIME = 60
#: overall limit for one test case (4 transfers, one of them 32 MiB)
CASE_TIMEOUT = 240

MODES = {
    "EPSV": [],
    "PASV": ["--disable-epsv"],
    "EPRT": ["-P", "-"],
    "PORT": ["-P", "-", "--disable-eprt"],
}


@pytest.fixture(scope="module")
def curl():
    return servers.require_tool("curl")


def _config(sshd: servers.OpenSSHServer, ftp: servers.FTPServer) -> ftptrio.Config:
    return ftptrio.Config(
        ssh=ftptrio.SSHOptions(
            host="127.0.0.1",
            port=sshd.port,
            username=sshd.username,
            client_keys=(sshd.client_key,),
            known_hosts=sshd.known_hosts,
        ),
        forwards=(ftptrio.ForwardSpec(ftp_host="127.0.0.1", ftp_port=ftp.port),),
    )


async def _curl(curl: str, mode: str, *args: str) -> None:
    cmd = [
        curl,
        "--silent",
        "--show-error",
        "--verbose",  # the control dialogue goes into the failure message
        "--max-time",
        str(CURL_MAX_TIME),
        "--connect-timeout",
        "20",
        "--no-ftp-skip-pasv-ip",
        *MODES[mode],
        *args,
    ]
    result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        # curl 7.88 prints a harmless "sa_addr inet_ntop() failed with errno 97"
        # in active mode and may repeat it as the final error text; the
        # verbose dialogue above it shows what really went wrong.
        dialogue = result.stderr.decode(errors="replace")[-4000:]
        pytest.fail(
            f"curl exited with {result.returncode} in {mode} mode\ncommand: {' '.join(cmd)}\n{dialogue}",
            pytrace=False,
        )


@pytest.mark.parametrize("mode", list(MODES))
async def test_curl_through_forwarder(curl, openssh, ftp_server, mode, tmp_path):
    ftp = ftp_server
    with trio.fail_after(CASE_TIMEOUT):
        async with ftptrio.open_forwarder(_config(openssh, ftp)) as fwd:
            host, port = fwd.addresses[0]

            # Downloads: compare with the file on the server's disk.
            for name in ("one_mib.bin", "big.bin", "empty.bin"):
                out = tmp_path / f"down-{name}"
                await _curl(curl, mode, "--output", str(out), ftp.url(name, host=host, port=port))
                expected = servers.sha256_file(ftp.path(name))
                if not out.exists() and os.path.getsize(ftp.path(name)) == 0:
                    out.write_bytes(b"")  # some curl versions create no file for 0 bytes
                assert out.stat().st_size == os.path.getsize(ftp.path(name)), name
                assert servers.sha256_file(out) == expected, name

            # Upload: a fresh 1 MiB random file, checked on the server's disk.
            src = tmp_path / "upload.bin"
            src.write_bytes(os.urandom(1 << 20))
            target = f"{ftp.upload_dir}/curl-{mode}-{uuid.uuid4().hex}.bin"
            await _curl(curl, mode, "--upload-file", str(src), ftp.url(target, host=host, port=port))
            on_disk = Path(ftp.path(target))
            assert on_disk.exists(), f"{target} was not created on {ftp.name}"
            assert servers.sha256_file(on_disk) == servers.sha256_file(src)
