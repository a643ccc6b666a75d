"""The passive data channel opens after its 227 went out (in the background, while
the client already connects): early server data, pipelined transfer commands,
refused and slow channel opens (raw client, scripted FTP server)."""

from __future__ import annotations

import pytest
import trio

from ftp_fakes import parse_227_port, pasv_reply, read_all, serve_data, wait_until


async def test_server_data_eof_and_close_before_the_client_connects(make_setup, nursery):
    """The server's data port sends everything and closes as soon as sshd connects
    (now before the client is even told to connect): no byte lost."""
    setup = await make_setup()
    payload = bytes(range(256)) * 2048  # 512 KiB, more than one SSH packet
    data_port = await serve_data(nursery, payload)
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", data_port)
    setup.ftp.replies[b"RETR"] = b"150 here\r\n226 done\r\n"
    async with setup.client() as client:
        host, port = parse_227_port((await client.command(b"PASV"))[0])
        await wait_until(lambda: ("127.0.0.1", data_port) in setup.ssh.direct_requests)
        await trio.sleep(0.5)  # data, EOF and close reach ftptrio before the client
        await client.send(b"RETR f\r\n")
        assert await read_all(host, port) == payload
        assert (await client.reply())[0].startswith(b"150")
        assert (await client.reply())[0].startswith(b"226")


async def test_pipelined_commands_keep_their_order_when_the_open_is_refused(make_setup):
    """PASV answered, then RETR + NOOP + RETR + QUIT pipelined while the channel
    open is refused (nothing listens on the data port): each command gets exactly
    one reply, in order. RETR a follows the open request at once, so its 425 is
    ftptrio's (the refusal came first) or the FTP server's (as a real one answers
    when no data connection comes); RETR b's channel was used, so it goes to the
    server."""
    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", 1999)  # > 1023, nothing there
    setup.ftp.replies[b"RETR"] = b"425 Can't open data connection.\r\n"
    async with setup.client() as client:
        assert (await client.command(b"PASV"))[0].startswith(b"227")
        await client.send(b"RETR a\r\nNOOP\r\nRETR b\r\nQUIT\r\n")
        codes = [(await client.reply())[0][:3] for _ in range(4)]
        assert codes == [b"425", b"200", b"425", b"221"], client.transcript_text()
        with pytest.raises(EOFError):
            await client.line(timeout=5)
    assert b"RETR b" in setup.ftp.commands


async def test_refused_direct_tcpip_gives_a_clear_425_and_the_session_goes_on(
        make_setup, nursery, caplog):
    setup = await make_setup()
    data_port = await serve_data(nursery, b"after the refusal")
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", data_port)
    setup.ftp.replies[b"RETR"] = b"150 here\r\n226 done\r\n"
    async with setup.client() as client:
        setup.ssh.allow_direct = False  # data channels only: the control one is open
        # the first transfer command follows its channel's open request at once: the
        # FTP server answers it (no data connection comes), unless the refusal was in
        setup.ftp.replies[b"RETR"] = b"425 Can't open data connection.\r\n"
        await client.command(b"PASV")
        assert (await client.command(b"RETR e"))[0].startswith(b"425 ")
        await wait_until(lambda: "could not open data connection" in caplog.text)
        # from then on, the session waits for the SSH server's answer: ftptrio's 425
        # says why, and the command never reaches the server
        setup.ftp.replies[b"RETR"] = b"150 here\r\n226 done\r\n"
        host, port = parse_227_port((await client.command(b"PASV"))[0])
        early = trio.socket.socket()  # the client connects at once, as clients do
        with early:
            try:
                await early.connect((host, port))
            except OSError:
                pass  # the refusal came first
            reply = await client.command(b"RETR f")
            assert reply[0].startswith(b"425 "), reply
            assert b"SSH server could not open data connection" in reply[0], reply
            with trio.fail_after(5):  # the early connection is not left hanging
                try:
                    assert await early.recv(10) == b""
                except OSError:
                    pass
        assert b"RETR f" not in setup.ftp.commands
        setup.ssh.allow_direct = True
        host, port = parse_227_port((await client.command(b"PASV"))[0])
        await client.send(b"RETR f\r\n")
        assert await read_all(host, port) == b"after the refusal"
        assert (await client.reply())[0].startswith(b"150")
        assert (await client.reply())[0].startswith(b"226")


@pytest.fixture
def slow_data_opens(monkeypatch):
    """The SSH server takes ``delay[0]`` seconds to open a direct-tcpip channel to
    any port but the FTP control port (as sshd connecting to a host that drops SYNs)."""
    import asyncio

    from ftptrio._ssh import _testserver

    real = _testserver.relayed_connection
    delay = [1.0]
    control_ports: set[int] = set()

    async def slow(host: str, port: int):
        if port not in control_ports:
            await asyncio.sleep(delay[0])
        return await real(host, port)

    monkeypatch.setattr(_testserver, "relayed_connection", slow)
    return delay, control_ports


async def test_session_ends_while_the_channel_opens_leaves_nothing_open(
        make_setup, nursery, slow_data_opens):
    delay, control_ports = slow_data_opens
    setup = await make_setup()
    control_ports.add(setup.ftp.port)
    data_port = await serve_data(nursery, b"never read")
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", data_port)
    async with setup.client() as client:
        host, port = parse_227_port((await client.command(b"PASV"))[0])
        assert (await client.command(b"QUIT"))[0].startswith(b"221")
    with pytest.raises(OSError):  # the listener closed with the session
        await read_all(host, port)
    await trio.sleep(delay[0] + 0.5)  # the open completes after the session ended
    # make_setup's leak check: no channel left open on the SSH connection


async def test_channel_open_slower_than_the_data_timeout_closes_the_listener_in_time(
        make_setup, nursery, slow_data_opens):
    """The SSH server's answer to the open takes longer than data_idle_timeout: the
    transfer command went with the open request and the FTP server answers it (here
    at once; a real one when no data connection came), the client's listener is gone
    after the timeout, and the late channel is closed once it opens."""
    delay, control_ports = slow_data_opens
    delay[0] = 2.0
    setup = await make_setup(data_idle_timeout=0.5)
    control_ports.add(setup.ftp.port)
    data_port = await serve_data(nursery, b"late")
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", data_port)
    setup.ftp.replies[b"RETR"] = b"425 Can't open data connection.\r\n"
    async with setup.client() as client:
        host, port = parse_227_port((await client.command(b"PASV"))[0])
        reply = await client.command(b"RETR f")
        assert reply[0].startswith(b"425 "), reply
        await trio.sleep(0.7)
        with pytest.raises(OSError):
            await read_all(host, port)
        assert (await client.command(b"NOOP"))[0].startswith(b"200")
        await trio.sleep(delay[0])  # the late open's channel is closed (leak check)


async def test_fully_pipelined_pasv_retr_abor_quit_get_one_reply_each_in_order(
        make_setup):
    """PASV, RETR, ABOR, QUIT in one write while the data channel open is refused:
    the RETR was sent before its 227 came back, so it goes to the server (whose
    answer the client gets); every command has exactly one final reply, in order."""
    setup = await make_setup()
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", 1999)  # nothing listens
    setup.ftp.replies[b"RETR"] = b"425 no data connection\r\n"
    setup.ftp.replies[b"ABOR"] = b"225 no transfer\r\n"
    async with setup.client() as client:
        await client.send(b"PASV\r\nRETR a\r\nABOR\r\nQUIT\r\n")
        codes = [(await client.reply())[0][:3] for _ in range(4)]
        assert codes == [b"227", b"425", b"225", b"221"], client.transcript_text()
        with pytest.raises(EOFError):
            await client.line(timeout=5)
    assert setup.ftp.commands[-4:] == [b"PASV", b"RETR a", b"ABOR", b"QUIT"]


async def test_pipelined_pasv_flood_opens_at_most_one_channel_at_a_time(
        make_setup, nursery, slow_data_opens, monkeypatch):
    """200 PASVs in one write: each 227 supersedes the one before, and a superseded
    offer's channel need not be opened at all. Opens run one at a time per session
    (as before the 227 went out first): not 200 direct-tcpip opens (each an sshd
    connect to the FTP host) in flight at once."""
    from ftptrio._ssh import _testserver

    delay, control_ports = slow_data_opens
    delay[0] = 0.2
    in_flight = [0, 0]  # now, most
    slow = _testserver.relayed_connection

    async def counted(host: str, port: int):
        if port in control_ports:
            return await slow(host, port)
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        try:
            return await slow(host, port)
        finally:
            in_flight[0] -= 1

    monkeypatch.setattr(_testserver, "relayed_connection", counted)
    setup = await make_setup()
    control_ports.add(setup.ftp.port)
    data_port = await serve_data(nursery, b"last")
    setup.ftp.replies[b"PASV"] = pasv_reply("127.0.0.1", data_port)
    setup.ftp.replies[b"RETR"] = b"150 here\r\n226 done\r\n"
    async with setup.client() as client:
        await client.send(b"PASV\r\n" * 200)
        for _ in range(200):
            reply = await client.reply()
            assert reply[0].startswith(b"227 "), reply
        host, port = parse_227_port(reply[0])
        await client.send(b"RETR f\r\n")
        assert await read_all(host, port) == b"last"
        assert (await client.reply())[0].startswith(b"150")
        assert (await client.reply())[0].startswith(b"226")
    assert in_flight[1] <= 2, in_flight
