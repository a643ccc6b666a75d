"""The data channels' receive-window growth policy (_relay._WindowGrowth), with a
fake clock: it doubles while the local side keeps up and each doubling pays
off, goes back and stays when a doubling does not make the channel faster, and
never grows past max_window or while a pause held data back."""

from __future__ import annotations

import pytest

from ftptrio._ssh import _relay
from ftptrio._ssh._relay import GROWTH_GAIN, _WindowGrowth

MIB = 1 << 20


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(_relay.time, "monotonic", lambda: now[0])
    return now


def periods(growth, clock, window, seconds_for):
    """Run adjusts; seconds_for(window) is how long half a window takes."""
    seen = []
    for _ in range(40):
        clock[0] += seconds_for(window)
        window = growth.adjust_due(window, window // 4)
        seen.append(window)
    return seen


def test_window_limited_channel_grows_to_the_cap(clock):
    # window-limited: half a window per 50 ms round trip, whatever the window
    growth = _WindowGrowth(8 * MIB, 64 * MIB)
    seen = periods(growth, clock, 8 * MIB, lambda w: 0.05)
    assert seen[-1] == 64 * MIB and max(seen) == 64 * MIB


def test_channel_not_limited_by_the_window_goes_back_and_stays(clock):
    # a fixed rate (100 MB/s): a larger window does not help
    growth = _WindowGrowth(8 * MIB, 64 * MIB)
    seen = periods(growth, clock, 8 * MIB, lambda w: (w / 4) / 100e6)
    assert 16 * MIB in seen  # tried once
    assert seen[-1] == 8 * MIB and not growth.active


def test_small_gain_is_not_enough(clock):
    growth = _WindowGrowth(8 * MIB, 64 * MIB)
    rate = {8 * MIB: 50e6, 16 * MIB: 50e6 * (GROWTH_GAIN - 0.05)}
    seen = periods(growth, clock, 8 * MIB, lambda w: (w / 4) / rate.get(w, 50e6))
    assert seen[-1] == 8 * MIB


def test_no_growth_while_a_pause_held_data_back(clock):
    growth = _WindowGrowth(8 * MIB, 64 * MIB)
    window = 8 * MIB
    for _ in range(12):
        clock[0] += 0.05
        growth.throttled = True
        window = growth.adjust_due(window, window // 4)
    assert window == 8 * MIB


def test_no_growth_without_room():
    assert not _WindowGrowth(8 * MIB, 8 * MIB).active
    assert not _WindowGrowth(8 * MIB, 4 * MIB).active
