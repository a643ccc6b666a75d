"""Control-channel policy through the real forwarder, with a raw trio client."""

from __future__ import annotations

import pytest
import trio

from ftp_fakes import FTPClient


@pytest.fixture
async def client(forwarder, inprocess_ftp):
    raw = await FTPClient.connect(forwarder.addresses[0])
    await raw.login(inprocess_ftp)
    try:
        yield raw
    finally:
        await raw.aclose()


def verbs(ftp_commands):
    return [verb for verb, _arg in ftp_commands]


async def test_auth_tls_refused_with_534(client, ftp_commands):
    reply = await client.cmd("AUTH TLS")
    assert reply.startswith("534 "), reply
    # still plaintext and usable afterwards; the server never saw AUTH
    assert (await client.cmd("NOOP")).startswith("200")
    assert "AUTH" not in verbs(ftp_commands)
    assert verbs(ftp_commands)[-1] == "NOOP"


async def test_auth_ssl_refused_with_534(client, ftp_commands):
    assert (await client.cmd("AUTH SSL")).startswith("534 ")
    assert (await client.cmd("PWD")).startswith("257")
    assert "AUTH" not in verbs(ftp_commands)


async def test_lpsv_answered_502(client, ftp_commands):
    reply = await client.cmd("LPSV")
    assert reply.startswith("502 "), reply
    assert (await client.cmd("NOOP")).startswith("200")
    assert "LPSV" not in verbs(ftp_commands)


async def test_lprt_answered_502(client, ftp_commands):
    reply = await client.cmd("LPRT 4,4,127,0,0,1,2,4,1")
    assert reply.startswith("502 "), reply
    assert "LPRT" not in verbs(ftp_commands)


async def test_port_to_foreign_address_refused(client, ftp_commands, ssh_server):
    reply = await client.cmd("PORT 10,1,2,3,78,32")
    assert reply.startswith("500 "), reply
    # the next reply pairs with the next command: nothing was forwarded
    assert (await client.cmd("NOOP")).startswith("200")
    assert "PORT" not in verbs(ftp_commands)
    assert ssh_server.forward_requests == []


async def test_eprt_to_foreign_address_refused(client, ftp_commands, ssh_server):
    reply = await client.cmd("EPRT |1|10.1.2.3|20000|")
    assert reply.startswith("500 "), reply
    assert (await client.cmd("NOOP")).startswith("200")
    assert "EPRT" not in verbs(ftp_commands)
    assert ssh_server.forward_requests == []


async def test_port_to_port_21_refused(client, ftp_commands, ssh_server):
    reply = await client.cmd("PORT 127,0,0,1,0,21")
    assert reply.startswith("501 "), reply
    assert (await client.cmd("NOOP")).startswith("200")
    assert "PORT" not in verbs(ftp_commands)
    assert ssh_server.forward_requests == []


async def test_malformed_port_refused(client, ftp_commands):
    reply = await client.cmd("PORT 127,0,0,1,300")
    assert reply.startswith("501 "), reply
    assert "PORT" not in verbs(ftp_commands)


async def test_pipelined_commands_answered_in_order(client, ftp_commands):
    await client.send(b"NOOP\r\nNOOP\r\nPWD\r\n")
    replies = [await client.text_reply() for _ in range(3)]
    assert replies[0].startswith("200"), replies
    assert replies[1].startswith("200"), replies
    assert replies[2].startswith('257 "/"'), replies
    assert verbs(ftp_commands)[-3:] == ["NOOP", "NOOP", "PWD"]


async def test_pipelined_local_and_forwarded_replies_keep_order(client, ftp_commands):
    # locally answered commands interleaved with forwarded ones, one write
    await client.send(b"NOOP\r\nLPSV\r\nPWD\r\nAUTH TLS\r\nPORT 10,1,2,3,4,5\r\nNOOP\r\n")
    codes = [(await client.text_reply())[:3] for _ in range(6)]
    assert codes == ["200", "502", "257", "534", "500", "200"]
    assert verbs(ftp_commands)[-3:] == ["NOOP", "PWD", "NOOP"]


async def test_pipelined_commands_split_bytewise(client):
    for byte in b"NOOP\r\nPWD\r\n":
        await client.send(bytes([byte]))
        # the behaviour under test: a checkpoint between bytes lets ftptrio read
        # each byte on its own (nothing is awaited here)
        await trio.sleep(0)
    assert (await client.text_reply()).startswith("200")
    assert (await client.text_reply()).startswith("257")


async def test_quit_closes_the_connection(client, forwarder):
    assert (await client.cmd("QUIT")).startswith("221")
    with trio.fail_after(5):
        assert await client.stream.receive_some(100) == b""
