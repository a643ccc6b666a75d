"""_connect.lazy_keepalive against a stand-in for asyncssh's connection: it uses
asyncssh's private keepalive names only when every one of them is there."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from ftptrio._ssh._connect import lazy_keepalive


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> "FakeTimer":
        self.timers.append((self.now + delay, callback))
        return FakeTimer()


class FakeTimer:
    def cancel(self) -> None:
        pass


class OlderConnection:
    """asyncssh's private keepalive state without ``_cancel_keepalive_timer``."""

    def __init__(self) -> None:
        self._loop = FakeLoop()
        self._keepalive_interval = 10.0
        self._keepalive_timer: Any = None
        self._auth_complete = True
        self.checks = 0

    def _keepalive_timer_callback(self) -> None:  # asyncssh's check: counts, re-arms
        self.checks += 1

    def _reset_keepalive_timer(self) -> None:
        raise AssertionError("asyncssh's own reset, replaced by lazy_keepalive")


class FakeConnection(OlderConnection):
    """The private keepalive state of asyncssh's SSHConnection, as lazy_keepalive uses it."""

    def _cancel_keepalive_timer(self) -> None:
        self._keepalive_timer = None


def test_a_missing_private_name_leaves_asyncssh_alone():
    """asyncssh without _cancel_keepalive_timer: nothing is patched, nothing raises
    (before, the check skipped that name and the call failed with AttributeError
    after the connection's methods were already replaced)."""
    conn = OlderConnection()
    reset, callback = conn._reset_keepalive_timer, conn._keepalive_timer_callback
    lazy_keepalive(conn)  # type: ignore[arg-type]
    assert conn._reset_keepalive_timer == reset
    assert conn._keepalive_timer_callback == callback
    assert conn._loop.timers == []


def test_reads_rearm_lazily_and_a_silent_interval_gets_asyncssh_check():
    conn = FakeConnection()
    loop = conn._loop
    lazy_keepalive(conn)  # type: ignore[arg-type]
    assert len(loop.timers) == 1  # armed once, at the start
    for _ in range(1000):  # reads only note the time: no timer per read
        loop.now += 0.001
        conn._reset_keepalive_timer()
    assert len(loop.timers) == 1
    due, fired = loop.timers.pop()
    loop.now = due  # fires: data came 9 s ago, so re-armed for the rest, no check
    fired()
    assert conn.checks == 0
    (due, fired), = loop.timers
    assert due == pytest.approx(100.0 + 1.0 + 10.0)
    loop.timers.clear()
    loop.now = due  # silent for the whole interval: asyncssh's own check runs
    fired()
    assert conn.checks == 1
