"""The trio-asyncio loop under the SSH layer, and asyncio error handling.

asyncssh runs on asyncio; ftptrio runs on trio. ``asyncio_loop()`` opens a
trio-asyncio loop for the block, or uses the one an embedding application
already opened. ``aio()`` and ``run_future()`` cross the bridge from trio.

Error handling is scoped to ftptrio's own callbacks: every asyncio protocol
and asyncssh session callback that ftptrio defines catches its own errors
(``guard_callback``), and the sockets ftptrio hands to asyncio tolerate a
peer that is already gone when asyncio shuts down their sending half
(``_relay.RelaySocket``). An embedding application's loop and its exception handler
are left untouched. Only a loop that ftptrio opens itself (nobody else runs
on it) gets an exception handler: under trio-asyncio an error that reaches
the loop's default handler would otherwise end the process, where stock
asyncio only logs it (docs/performance.md, trap 3).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, ParamSpec, TypeVar, cast

import asyncssh
import trio_asyncio

from .._text import visible

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: what asyncssh raises when a request or channel fails (not all derive from asyncssh.Error)
SSH_ERRORS = (asyncssh.Error, asyncssh.ChannelOpenError, asyncssh.ChannelListenError, OSError)
#: errors of a peer that is already gone: expected while tearing down
TEARDOWN_ERRNOS = frozenset({errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET, errno.EBADF})


def reason(exc: BaseException) -> str:
    """The most readable text of an SSH or socket error."""
    return visible(getattr(exc, "reason", None) or str(exc) or type(exc).__name__)


#: RFC 4254 channel-open failure codes, named as OpenSSH's client names them
OPEN_FAILURES = {1: "administratively prohibited", 2: "connect failed",
                 3: "unknown channel type", 4: "resource shortage"}
ADMINISTRATIVELY_PROHIBITED = 1


def refusal(exc: BaseException) -> str:
    """The SSH server's reason for refusing a channel, with its failure code's name
    ("administratively prohibited: open failed", as OpenSSH's ssh prints it)."""
    text = reason(exc)
    name = OPEN_FAILURES.get(getattr(exc, "code", None) or 0) \
        if isinstance(exc, asyncssh.ChannelOpenError) else None
    if name is None or text == name:
        return text
    return f"{name}: {text}" if text else name


def is_prohibited(exc: BaseException) -> bool:
    """Whether the SSH server's policy refused a channel (not the destination)."""
    return isinstance(exc, asyncssh.ChannelOpenError) and exc.code == ADMINISTRATIVELY_PROHIBITED


def aio(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Call an asyncio coroutine function from trio (one bridge crossing)."""
    wrapped: Callable[P, Awaitable[T]] = trio_asyncio.aio_as_trio(fn)
    return wrapped


async def run_future(future: asyncio.Future[T]) -> T:
    """Wait from trio for an asyncio future."""
    result: T = await trio_asyncio.run_aio_future(future)
    return result


def has_asyncio_loop() -> bool:
    """Whether this trio task already runs under a trio-asyncio loop."""
    try:
        return trio_asyncio.current_loop.get() is not None
    except LookupError:
        return False


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    """Run the block with a trio-asyncio loop: the caller's if it has one (left
    exactly as it is), else a new one that ftptrio owns (and logs errors of)."""
    if has_asyncio_loop():
        yield
        return
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_loop_error)
        yield


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Exception handler of a loop ftptrio opened itself: log, as stock asyncio does,
    instead of ending the process (trio-asyncio's default)."""
    exc = context.get("exception")
    log.warning("asyncio: %s", context.get("message") or "error in event loop",
                exc_info=(type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException)
                else None)


def is_teardown_error(exc: BaseException) -> bool:
    """An error of a peer or channel that is already closing (expected, benign)."""
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, asyncssh.Error)):
        return True
    return isinstance(exc, OSError) and exc.errno in TEARDOWN_ERRNOS


def guard_callback(method: F) -> F:
    """Decorate a protocol/session callback that ftptrio defines: an error never
    escapes into asyncio (where trio-asyncio would end the process) or asyncssh
    (where it would close the whole SSH connection). Teardown errors are logged
    at DEBUG, anything else at WARNING with its traceback; ``on_error(exc)`` of
    the callback's object, if any, then cleans up, and the callback returns
    None (for ``eof_received``: close)."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any) -> Any:
        try:
            return method(self, *args)
        except Exception as exc:  # noqa: BLE001 - see docstring
            report_callback_error(self, method.__name__, exc)
            return None

    return cast(F, guarded)


def report_callback_error(owner: object, callback: str, exc: Exception) -> None:
    """Log an error caught in one of ftptrio's callbacks and let its owner clean up."""
    where = f"{type(owner).__name__}.{callback}"
    if is_teardown_error(exc):
        log.debug("%s: %r (peer already gone)", where, exc)
    else:
        log.warning("%s failed: %r", where, exc, exc_info=exc)
    on_error = getattr(owner, "on_error", None)
    if on_error is not None:
        try:
            on_error(exc)
        except Exception as again:  # noqa: BLE001 - never escape a callback
            log.warning("%s: cleanup after %r failed: %r", where, exc, again)
