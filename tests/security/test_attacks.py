"""Attacks by a hostile FTP server or client. Each test asserts what the client
saw and, from the SSH server's side, which destinations ftptrio asked for."""

from __future__ import annotations

import logging

import pytest
import trio

import ftptrio
from ftp_fakes import parse_227_port, pasv_reply, read_all, serve_data, wait_for_log


def CONTROL_ONLY(setup) -> list[tuple[str, int]]:
    """The start-up check's control connection and the session's: no data channel."""
    return [("127.0.0.1", setup.ftp.port)] * 2


@pytest.mark.parametrize("spoofed", ["10.0.0.1", "169.254.169.254", "192.168.1.1"])
async def test_spoofed_227_never_steers_ssh_elsewhere(make_setup, nursery, spoofed):
    setup = await make_setup()
    data_port = await serve_data(nursery, b"payload from the real FTP host")
    setup.ftp.replies[b"PASV"] = pasv_reply(spoofed, data_port)
    async with setup.client() as client:
        reply = await client.command(b"PASV")
        host, port = parse_227_port(reply[0])
        assert reply[0].startswith(b"227 ")
        assert host == "127.0.0.1" and port != data_port
        assert await read_all(host, port) == b"payload from the real FTP host"
    assert setup.destinations() == {"127.0.0.1"}
    assert ("127.0.0.1", data_port) in setup.ssh.direct_requests


async def test_trusted_227_address_must_be_allow_listed(make_setup, nursery):
    setup = await make_setup(trust_pasv_address=True, pasv_allowed_hosts=("10.9.9.9",))
    setup.ftp.replies[b"PASV"] = pasv_reply("10.0.0.1", 40000)
    async with setup.client() as client:
        reply = await client.command(b"PASV")
        assert reply[0].startswith(b"425 ") and b"not allowed" in reply[0]
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
    assert setup.destinations() == {"127.0.0.1"}


async def test_227_naming_a_privileged_port_on_the_ftp_host_is_refused(make_setup):
    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", 22)
    async with setup.client() as client:
        reply = await client.command(b"PASV")
        assert reply[0].startswith(b"425 ")
    assert ("127.0.0.1", 22) not in setup.ssh.direct_requests


async def test_unsolicited_227_is_withheld_and_not_forwarded(make_setup):
    setup = await make_setup()
    spoof = pasv_reply("10.0.0.1", 5000)
    setup.ftp.replies[b"NOOP"] = b"200 ok\r\n" + spoof
    async with setup.client() as client:
        assert (await client.command(b"NOOP"))[0] == b"200 ok"
        withheld = (await client.reply())[0]
        assert withheld.startswith(b"227 ftptrio: unsolicited passive reply withheld")
        assert b"5000" not in withheld and b"19,136" not in withheld
    assert setup.ssh.direct_requests == CONTROL_ONLY(setup)


async def test_227_inside_a_multiline_reply_is_text(make_setup):
    setup = await make_setup()
    body = b"211-status\r\n" + pasv_reply("10.0.0.1", 5000) + b"211 end\r\n"
    setup.ftp.replies[b"STAT"] = body
    setup.ftp.replies[b"PASV"] = body  # even as the "answer" to PASV
    as_text = body.replace(b"\r\n227", b"\r\n 227")  # text to every client's parser
    async with setup.client() as client:
        assert b"\r\n".join(await client.command(b"STAT")) + b"\r\n" == as_text
        assert b"\r\n".join(await client.command(b"PASV")) + b"\r\n" == as_text
    assert setup.ssh.direct_requests == CONTROL_ONLY(setup)


@pytest.mark.parametrize("bad", [
    b"227 Entering Passive Mode (127,0,0,256,100,1).\r\n",
    b"227 Entering Passive Mode (127,0,0,1,0,0).\r\n",
    b"227 Entering Passive Mode (127,0,0,1,100).\r\n",
    b"229 Entering Extended Passive Mode (|||0|)\r\n",
])
async def test_invalid_passive_reply_gives_425_and_session_continues(make_setup, bad):
    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = bad
    setup.ftp.replies[b"EPSV"] = bad
    async with setup.client() as client:
        verb = b"EPSV" if bad.startswith(b"229") else b"PASV"
        assert (await client.command(verb))[0].startswith(b"425 ")
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
    assert setup.ssh.direct_requests == CONTROL_ONLY(setup)


@pytest.mark.parametrize("bad", [b"200 " + b"x" * 10000 + b"\r\n", b"200 nul\x00byte\r\n",
                                 b"200 bare\rcr\r\n"])
async def test_broken_server_line_closes_session_cleanly(make_setup, bad):
    setup = await make_setup()
    setup.ftp.replies[b"NOOP"] = bad
    async with setup.client() as client:
        reply = await client.command(b"NOOP")
        assert reply[0].startswith(b"421 ")
        with pytest.raises(EOFError):
            await client.line()
    async with setup.client() as client:  # the listener still serves others
        assert (await client.command(b"SYST"))[0].startswith(b"200")


@pytest.mark.parametrize("command, code", [
    (b"PORT 10,1,2,3,200,1", b"500"),
    (b"PORT 127,0,0,2,200,1", b"500"),
    (b"EPRT |1|10.1.2.3|51201|", b"500"),
    (b"PORT 127,0,0,1,0,21", b"501"),
    (b"EPRT |1|127.0.0.1|80|", b"501"),
    (b"PORT 127,0,0,1,300,1", b"501"),
    (b"PORT 1,2,3", b"501"),
    (b"LPRT 4,4,127,0,0,1,2,200,1", b"502"),
    (b"LPSV", b"502"),
    (b"AUTH TLS", b"534"),
    (b"AUTH SSL", b"534"),
])
async def test_hostile_client_commands_are_answered_locally(make_setup, command, code):
    setup = await make_setup()
    async with setup.client() as client:
        assert (await client.command(command))[0][:3] == code
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
    verbs = [c.split(b" ")[0] for c in setup.ftp.commands]
    assert verbs == [b"NOOP"]  # the refused command never reached the server
    assert setup.ssh.forward_requests == []


async def test_passive_listener_is_one_shot(make_setup, nursery):
    setup = await make_setup()
    data_port = await serve_data(nursery, b"x" * 1000)
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", data_port)
    async with setup.client() as client:
        host, port = parse_227_port((await client.command(b"PASV"))[0])
        assert await read_all(host, port) == b"x" * 1000
        with pytest.raises(OSError):
            await read_all(host, port)


async def test_passive_listener_accepts_only_the_clients_address(make_setup, nursery):
    setup = await make_setup()
    data_port = await serve_data(nursery, b"secret data")
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", data_port)
    async with setup.client(local_host="127.0.0.1") as client:
        host, port = parse_227_port((await client.command(b"PASV"))[0])
        # a stranger on another loopback address gets nothing
        assert await read_all(host, port, local_host="127.0.0.2") == b""
        assert await read_all(host, port, local_host="127.0.0.1") == b"secret data"


async def test_passive_listener_closes_when_superseded_and_when_idle(make_setup, nursery,
                                                                     caplog):
    caplog.set_level(logging.INFO, logger="ftptrio")
    setup = await make_setup(data_idle_timeout=0.5)
    data_port = await serve_data(nursery, b"data")
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", data_port)
    async with setup.client() as client:
        first = parse_227_port((await client.command(b"PASV"))[0])
        second = parse_227_port((await client.command(b"PASV"))[0])
        # connecting to find out would use a listener still open: wait for its closing
        await wait_for_log(caplog, f"passive listener on port {first[1]} closed unused "
                                   "(superseded or session ended)")
        with pytest.raises(OSError):
            await read_all(*first)
        await wait_for_log(caplog, f"passive listener on port {second[1]} closed unused "
                                   "(timeout)")
        with pytest.raises(OSError):
            await read_all(*second)


async def test_passwords_never_logged(make_setup, caplog):
    caplog.set_level(logging.DEBUG)
    setup = await make_setup()
    async with setup.client() as client:
        await client.command(b"USER alice")
        await client.command(b"PASS s3cret-pw")
        await client.command(b"ACCT acct-s3cret")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "PASS ****" in text
    assert "s3cret" not in text


async def test_host_key_mismatch_refuses_to_connect(make_setup, tmp_path):
    setup = await make_setup()
    wrong = tmp_path / "known_hosts"
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    wrong.write_text(f"[127.0.0.1]:{setup.ssh.port} {other}")
    bad = ftptrio.Config(
        ssh=ftptrio.SSHOptions(host="127.0.0.1", port=setup.ssh.port,
                               username=setup.ssh.username,
                               client_keys=(setup.ssh.client_key_path,),
                               known_hosts=str(wrong)),
        forwards=setup.config.forwards)
    with pytest.raises(ftptrio.HostKeyError, match="REMOTE HOST IDENTIFICATION HAS CHANGED") \
            as info:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(ftptrio.serve, bad)
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
    assert info.value.changed


async def test_accept_new_trusts_first_use_then_pins_the_key(make_setup, tmp_path):
    setup = await make_setup()
    known = tmp_path / "known_hosts"

    def config(strict: str) -> ftptrio.Config:
        return ftptrio.Config(
            ssh=ftptrio.SSHOptions(host="127.0.0.1", port=setup.ssh.port,
                                   username=setup.ssh.username,
                                   client_keys=(setup.ssh.client_key_path,),
                                   known_hosts=str(known), strict_host_key_checking=strict),
            forwards=setup.config.forwards)

    async with ftptrio.open_forwarder(config("accept-new")):
        pass  # unknown host: accepted and remembered
    line = known.read_text()
    assert line.startswith(f"[127.0.0.1]:{setup.ssh.port} ssh-ed25519 ")
    assert line.split()[2] in setup.ssh.host_key.export_public_key().decode()
    async with ftptrio.open_forwarder(config("yes")):
        pass  # now pinned: strict checking passes
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known.write_text(f"[127.0.0.1]:{setup.ssh.port} {other}")
    with pytest.raises(ftptrio.HostKeyError, match="REMOTE HOST IDENTIFICATION HAS CHANGED") \
            as info:
        try:
            async with ftptrio.open_forwarder(config("accept-new")):
                pass
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
    assert info.value.changed
