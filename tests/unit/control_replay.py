"""Replaying transcripts through the sans-I/O control channel as the session pump
would (events answered deterministically), with DEBUG logging on but not captured:
shared by the control-channel fuzz tests and the multi-line reply tests."""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, Sequence

from ftptrio._control import (
    CLOSE,
    ActiveAccepted,
    ActiveRefused,
    ActiveRequest,
    ControlChannel,
    ConvertedActive,
    HoldForActiveData,
    PassiveOffer,
    QuitSent,
    TransferCommand,
    TransferReplied,
)


class _FormattingHandler(logging.Handler):
    """Formats every record (a bad log call must fail the test), keeps nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        record.getMessage()


@contextlib.contextmanager
def quiet_debug_logging():
    """DEBUG logging on (so every log call runs) without pytest's costly capture."""
    logger = logging.getLogger("ftptrio._control")
    handler = _FormattingHandler()
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


EVENT_COST = 64  # bytes an event counts for in the amplification bound


def run(steps, options, seed: int | None):
    """Replay; after every step drain both outboxes and answer the events as the
    session would (deterministically). Returns (to_client, to_server, bytes out)."""
    rng = random.Random(seed)
    ch = ControlChannel(**options)
    to_client: list[object] = []
    to_server: list[object] = []
    size = 0
    actives = 0
    for direction, data in steps:
        feed = ch.receive_client if direction == "c" else ch.receive_server
        if seed is None:
            feed(data)
        else:
            pos = 0
            while pos < len(data):
                n = rng.choice([1, 1, 2, 3, 7, 50, 600, len(data)])
                feed(data[pos:pos + n])
                pos += n
        for outbox, sink in ((ch.to_client, to_client), (ch.to_server, to_server)):
            while outbox:
                item = outbox.popleft()
                if isinstance(item, bytes):
                    size += len(item)
                    sink.append(item)
                    continue
                size += EVENT_COST
                sink.append(item)
                answer = b""
                if isinstance(item, (PassiveOffer, ConvertedActive)):
                    answer = ch.data_ready(item, "127.0.0.1", 40000)
                elif isinstance(item, ActiveRequest):
                    actives += 1
                    if actives % 2:
                        answer = ch.data_ready(item, "127.0.0.1", 40001)
                    else:
                        answer = ch.data_failed(item, "remote forward refused")
                elif isinstance(item, TransferCommand):
                    answer = item.line  # its data channel is ready
                else:
                    assert isinstance(item, (ActiveAccepted, ActiveRefused, HoldForActiveData,
                                             QuitSent, TransferReplied)) \
                        or item is CLOSE
                size += len(answer)
                sink.append(answer)
    return join(to_client), join(to_server), size, ch


def join(items: Sequence[object]) -> list[Any]:
    """Outbox items with consecutive bytes joined (and empty bytes dropped); Any: the
    tests inspect bytes and events alike."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, bytes):
            if not item:
                continue
            if out and isinstance(out[-1], bytes):
                out[-1] = out[-1] + item
                continue
        out.append(item)
    return out
