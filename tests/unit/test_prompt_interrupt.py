"""Ctrl-C at a prompt (Authenticator._in_thread, Prompter._tty): no pty-less CI
needed, the prompt reads a pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
import termios
import threading
import time

import pytest

from ftptrio._config import SSHOptions
from ftptrio._ssh import _auth


def test_ctrl_c_just_before_the_prompt_reads_the_terminal_is_not_lost(monkeypatch):
    """Cancelled while the prompt thread has not opened the terminal yet: the
    wake-up must still end that prompt (it was drained by the prompt itself, so
    the thread went on reading the terminal with echo off, and the cancelled
    caller waited the full join timeout)."""
    master, slave = os.openpty()
    try:
        monkeypatch.setattr(_auth, "TTY", os.ttyname(slave))
        auth = _auth.Authenticator(SSHOptions(host="sshhost"))

        def slow_ask(prompt: str) -> str | None:
            time.sleep(0.3)  # the thread is not reading the terminal yet
            return auth.prompter._tty(prompt, False)

        async def main() -> float:
            task = asyncio.ensure_future(auth._in_thread(slow_ask, "passphrase: "))
            await asyncio.sleep(0.05)
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - started

        assert asyncio.run(main()) < 2
        assert not any(t.name == "ftptrio-prompt" for t in threading.enumerate())
        assert termios.tcgetattr(slave)[3] & termios.ECHO  # echo as before
    finally:
        os.close(master)
        os.close(slave)


def test_each_prompt_closes_its_wake_up_pipe(monkeypatch):
    """The wake-up pipe lives as long as its prompt: a process that creates many
    tunnels (an embedding application) does not collect two descriptors per tunnel."""
    auth = _auth.Authenticator(SSHOptions(host="sshhost"))
    before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        for _ in range(20):
            assert await auth._in_thread(lambda: "answer") == "answer"

    asyncio.run(main())
    assert auth.prompter._wake is None
    assert len(os.listdir("/proc/self/fd")) <= before
