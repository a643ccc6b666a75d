"""A client that pipelines active transfers: ``PORT a, RETR x, PORT b, RETR y`` in one
write, through a real OpenSSH sshd to vsftpd and ProFTPD. ftptrio sets up b's remote
forward when it reads PORT b, before the server has connected to a's: a's must stay
until the server accepted PORT b, and every file must arrive whole, each on its own
data connection, with the replies in order."""

from __future__ import annotations

import pytest
import trio

import ftptrio
from ftp_fakes import FTPClient
from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

SERVERS = ("vsftpd", "proftpd")
FILES = ("one_mib.bin", servers.TEXT_FILE_NAME, "one_mib.bin")
TIMEOUT = 30


@pytest.mark.parametrize("server", SERVERS)
async def test_pipelined_port_retr_pairs_all_arrive(request, openssh, server):
    ftp: servers.FTPServer = request.getfixturevalue(server)
    expected = [ftp.path(name).read_bytes() for name in FILES]
    with trio.fail_after(TIMEOUT):
        async with ftptrio.open_forwarder(clients.forwarder_config(openssh, ftp)) as fwd, \
                trio.open_nursery() as nursery:
            client = await FTPClient.connect(fwd.addresses[0], timeout=TIMEOUT)
            async with client:
                await client.login(ftp)
                assert (await client.cmd("TYPE I")).startswith("200")
                listeners = []
                for _ in FILES:
                    sock = trio.socket.socket()
                    await sock.bind(("127.0.0.1", 0))
                    sock.listen(1)
                    listeners.append(sock)
                received: list[bytes | None] = [None] * len(FILES)

                async def accept(index: int) -> None:
                    conn, _ = await listeners[index].accept()
                    chunks = []
                    with conn:
                        while chunk := await conn.recv(65536):
                            chunks.append(chunk)
                    received[index] = b"".join(chunks)

                for index in range(len(FILES)):
                    nursery.start_soon(accept, index)
                burst = b""
                for sock, name in zip(listeners, FILES):
                    port = sock.getsockname()[1]
                    burst += f"PORT 127,0,0,1,{port >> 8},{port & 255}\r\n".encode()
                    burst += f"RETR {name}\r\n".encode()
                await client.send(burst)
                codes = []
                for _ in FILES:
                    codes.append((await client.final_reply())[-1][:3])  # 200 PORT
                    codes.append((await client.reply())[-1][:3])        # 150
                    codes.append((await client.reply())[-1][:3])        # 226
                assert codes == [b"200", b"150", b"226"] * len(FILES), client.transcript_text()
                assert (await client.cmd("QUIT")).startswith("221")
            with trio.fail_after(10):
                while None in received:
                    await trio.sleep(0.01)
            for sock in listeners:
                sock.close()
    for index, (got, want) in enumerate(zip(received, expected)):
        assert got == want, f"file {index} ({FILES[index]}): {len(got or b'')} of {len(want)} bytes"
