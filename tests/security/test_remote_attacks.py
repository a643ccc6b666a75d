"""Remote (-R) tunnels against a hostile FTP server or client: a 227 naming
another host cannot steer data there (SSRF), foreign/low PORTs are refused
locally, and the one-shot passive forward on the SSH server takes one connection
and only from the control client's address."""

from __future__ import annotations

import functools

import trio
import trio_asyncio

import ftptrio
from ftp_fakes import FTPClient, HostileFTP, assert_no_leaks, pasv_reply
from ftptrio import _dataplane as dc
from ftptrio.testing import inprocess_ssh_server


async def _run(test) -> None:
    async with trio_asyncio.open_loop():
        async with trio.open_nursery() as nursery:
            async with inprocess_ssh_server() as ssh:
                ftp = HostileFTP()
                listeners = await nursery.start(
                    functools.partial(trio.serve_tcp, ftp._handle, 0, host="127.0.0.1"))
                ftp.port = listeners[0].socket.getsockname()[1]
                config = ftptrio.Config(
                    ssh=ftptrio.SSHOptions(host=ssh.host, port=ssh.port, username=ssh.username,
                                           client_keys=(ssh.client_key_path,),
                                           known_hosts=ssh.known_hosts),
                    forwards=(ftptrio.ForwardSpec(ftp_host="127.0.0.1", ftp_port=ftp.port,
                                                  direction="remote"),))
                async with ftptrio.open_forwarder(config) as fwd:
                    client = await FTPClient.connect(fwd.addresses[0])
                    assert (await client.reply())[0].startswith(b"220")
                    await test(nursery, ssh, ftp, fwd, client)
                    await client.aclose()
                    await assert_no_leaks(fwd)
                nursery.cancel_scope.cancel()


async def test_hostile_227_cannot_steer_remote_passive_data():
    got: list[str] = []

    async def test(nursery, ssh, ftp, fwd, client):
        async def data(stream):
            got.append("connected")
            await stream.send_all(b"secret-free payload")
            await stream.aclose()

        listeners = await nursery.start(functools.partial(trio.serve_tcp, data, 0,
                                                          host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        ftp.replies[b"PASV"] = pasv_reply("10.66.66.66", port)  # somewhere else entirely
        reply = (await client.command(b"PASV"))[0]
        assert reply.startswith(b"227") and b"127,0,0,1" in reply
        nums = [int(n) for n in reply.split(b"(")[1].split(b")")[0].split(b",")]
        data_port = nums[4] * 256 + nums[5]
        assert data_port != port  # the client connects to the SSH server's forward
        stream = await trio.open_tcp_stream("127.0.0.1", data_port)
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
        await stream.aclose()
        assert received == b"secret-free payload" and got == ["connected"]
        # nothing was ever asked to connect to the address in the 227
        assert all(host != "10.66.66.66" for host, _p in ssh.direct_requests)

    await _run(test)


async def test_foreign_and_low_port_refused_locally():
    async def test(nursery, ssh, ftp, fwd, client):
        assert (await client.command(b"PORT 10,1,2,3,100,100"))[0].startswith(b"500")
        assert (await client.command(b"EPRT |1|10.1.2.3|30000|"))[0].startswith(b"500")
        assert (await client.command(b"PORT 127,0,0,1,0,21"))[0].startswith(b"501")
        assert not any(c.upper().startswith((b"PORT", b"EPRT")) for c in ftp.commands)
        assert ssh.direct_requests == []

    await _run(test)


async def test_remote_active_port_rewritten_to_local_listener():
    async def test(nursery, ssh, ftp, fwd, client):
        assert (await client.command(b"PORT 127,0,0,1,117,48"))[0].startswith(b"200")
        sent = ftp.commands[-1]
        assert sent.startswith(b"PORT 127,0,0,1,") and sent != b"PORT 127,0,0,1,117,48"

    await _run(test)


def test_remote_passive_forward_accepts_only_the_client():
    accept = dc.client_only("127.0.0.1")
    assert accept("127.0.0.1", 40000)
    assert accept("::ffff:127.0.0.1", 40000)
    assert not accept("10.0.0.9", 40000)
