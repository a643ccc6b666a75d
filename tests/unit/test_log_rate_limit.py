"""Per-session rate limit of repeated log messages (security round 3, lows: 300 KB of
``\\r\\r\\n`` from a client made 7.9 MB of WARNING lines, one per bad line).

The first LOG_BURST messages of a kind are logged as they are; the rest are counted
and summed up in one "suppressed N similar warnings" line when the window has passed
or the session ends. The session tests run the real pump (``ftptrio._session``) on
in-memory streams, with both scanners (``FTPTRIO_NO_EXTENSIONS``)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from ftptrio._config import Config, ForwardSpec, SSHOptions
from ftptrio._control import LOG_BURST, LOG_WINDOW, LogLimiter, SessionLog
from ftptrio._session import Session
from ftptrio._stats import TransferStats
from ftptrio.testing.fake_tunnel import FakeTunnel

FLOOD_BYTES = 300_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited_log(clock: Clock, session: int | None = 7) -> SessionLog:
    return SessionLog(logging.getLogger("ftptrio._control"), {"session": session},
                      LogLimiter(clock=clock))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


# ------------------------------------------------------------------ the limiter
def test_first_messages_are_logged_as_they_are_then_counted_and_summed_up(caplog):
    caplog.set_level(logging.INFO, logger="ftptrio")
    log = limited_log(Clock())
    for number in range(12):
        log.warning("client sent %r, not a command word (3-4 letters); answered 500", str(number))
    assert messages(caplog) == [
        f"session 7: client sent '{number}', not a command word (3-4 letters); answered 500"
        for number in range(LOG_BURST)]
    assert log.limiter is not None and log.limiter.suppressing == 1
    log.limiter.flush()  # the session ends
    summary = caplog.records[-1]
    assert summary.levelno == logging.WARNING
    assert summary.getMessage() == (
        "session 7: suppressed 7 similar warnings (like: client sent '0', not a command "
        "word (3-4 letters); answered 500)")
    log.limiter.flush()  # told once
    assert len(caplog.records) == LOG_BURST + 1


def test_summary_comes_when_the_window_has_passed_and_messages_are_logged_again(caplog):
    caplog.set_level(logging.INFO, logger="ftptrio")
    clock = Clock()
    log = limited_log(clock)
    assert log.limiter is not None
    for _ in range(LOG_BURST + 3):
        log.warning("FTP server sent a line that is not a reply; passed on as text: %s", "xx")
    clock.now += LOG_WINDOW - 1
    log.limiter.flush_expired()
    assert len(caplog.records) == LOG_BURST  # the window has not passed yet
    clock.now += 1
    log.limiter.flush_expired()  # the session calls this on control traffic
    assert messages(caplog)[-1] == ("session 7: suppressed 3 similar warnings (like: FTP "
                                    "server sent a line that is not a reply; passed on as "
                                    "text: xx)")
    caplog.clear()
    for _ in range(LOG_BURST + 1):  # a new window: logged again, then counted
        log.warning("FTP server sent a line that is not a reply; passed on as text: %s", "yy")
    assert len(caplog.records) == LOG_BURST
    clock.now += LOG_WINDOW
    log.info("refused AUTH %s: control stays plaintext inside the SSH tunnel", "TLS")
    # another kind's message also tells what the passed window suppressed (first)
    assert messages(caplog)[-2:] == [
        "session 7: suppressed 1 similar warnings (like: FTP server sent a line that is "
        "not a reply; passed on as text: yy)",
        "session 7: refused AUTH TLS: control stays plaintext inside the SSH tunnel"]


def test_kinds_levels_and_loggers_are_counted_apart_and_debug_never_limited(caplog):
    caplog.set_level(logging.DEBUG, logger="ftptrio")
    limiter = LogLimiter(clock=Clock())
    control = SessionLog(logging.getLogger("ftptrio._control"), {"session": 3}, limiter)
    data = SessionLog(logging.getLogger("ftptrio._dataplane"), {"session": 3}, limiter)
    for _ in range(LOG_BURST):
        control.warning("kind one %s", 1)
        control.warning("kind two %s", 2)
        control.info("kind one %s", 1)
        data.warning("kind one %s", 1)
    for _ in range(50):
        control.debug("client> %s", "NOOP")
    assert len(caplog.records) == 4 * LOG_BURST + 50
    assert limiter.suppressing == 0
    control.info("kind one %s", 1)
    limiter.flush()
    assert messages(caplog)[-1] == "session 3: suppressed 1 similar info messages (like: " \
                                   "kind one 1)"


def test_summary_of_a_message_without_arguments_keeps_its_percent_signs(caplog):
    caplog.set_level(logging.INFO, logger="ftptrio")
    log = limited_log(Clock(), session=None)
    for _ in range(LOG_BURST + 2):
        log.warning("100% junk")
    assert log.limiter is not None
    log.limiter.flush()
    assert messages(caplog)[-1] == "suppressed 2 similar warnings (like: 100% junk)"


# ----------------------------------------------------------- through a session
async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    try:
        while data := await stream.receive_some(1 << 20):
            into += data
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def wait_for(buffer: bytearray, marker: bytes) -> None:
    with trio.fail_after(60):
        while marker not in buffer[-200:]:
            await trio.sleep(0.01)


@pytest.mark.parametrize("side, line, kind, suppressed", [
    ("client", b"\r\r\n", "client sent a command with a bare CR; answered 500",
     FLOOD_BYTES // 3 - LOG_BURST),
    ("client", b"1\r\n", "client sent '1', not a command word (3-4 letters); answered 500",
     FLOOD_BYTES // 3 - LOG_BURST),
    ("server", b"xx\r\n", "FTP server sent a line that is not a reply; passed on as text: "
     "xx\\x0d\\x0a", FLOOD_BYTES // 4 - LOG_BURST),
    # a bare CR from the server closes the session at the first line
    ("server", b"\r\r\n", "closing session: 421 ftptrio: FTP server sent an invalid "
     "control line (bare CR)", 0),
], ids=["client-bare-cr", "client-not-a-command", "server-not-a-reply", "server-bare-cr"])
async def test_300_kb_of_bad_lines_make_a_handful_of_log_lines(caplog, side, line, kind,
                                                                suppressed):
    caplog.set_level(logging.INFO, logger="ftptrio")
    client, session_client = trio.testing.memory_stream_pair()
    session_server, server = trio.testing.memory_stream_pair()
    spec = ForwardSpec(ftp_host="127.0.0.1", ftp_port=21)
    config = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,))
    session = Session(session_client, spec, config,
                      FakeTunnel(session_server),
                      TransferStats(), peer=("127.0.0.1", 40000))
    to_client, to_server = bytearray(), bytearray()
    flood = line * (FLOOD_BYTES // len(line))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        nursery.start_soon(drain, client, to_client)
        nursery.start_soon(drain, server, to_server)
        await server.send_all(b"220 hello\r\n")
        await wait_for(to_client, b"220 hello\r\n")
        if side == "client":
            await client.send_all(flood + b"NOOP\r\n")
            await wait_for(to_server, b"NOOP\r\n")  # every line before it was read
            await server.send_all(b"200 end\r\n")
            await wait_for(to_client, b"200 end\r\n")
            assert to_client.count(b"\r\n500 ") == FLOOD_BYTES // len(line)  # all answered
            await client.aclose()
        else:
            await client.send_all(b"NOOP\r\n")
            await wait_for(to_server, b"NOOP\r\n")
            await server.send_all(flood + b"200 end\r\n")
            if suppressed:
                await wait_for(to_client, b"200 end\r\n")
                await client.aclose()
            else:
                await wait_for(to_client, b"(bare CR)\r\n")  # and the session ends
    assert session.stats.sessions_active == 0
    records = caplog.records
    assert len(records) < 50, [r.getMessage() for r in records[:60]]
    bad = [r for r in records if r.levelno == logging.WARNING and kind in r.getMessage()]
    assert bad and bad[0].getMessage() == f"session {session.id}: {kind}"
    summaries = [r.getMessage() for r in records if "suppressed" in r.getMessage()]
    if suppressed:
        assert len(bad) == LOG_BURST + 1, [r.getMessage() for r in bad]
        assert summaries == [f"session {session.id}: suppressed {suppressed} similar "
                             f"warnings (like: {kind})"]
    else:
        assert len(bad) == 1 and summaries == []
    # the summary comes before the session's last line
    assert "closed client=" in records[-1].getMessage()
