"""benchmarks.timing.interleaved_median_seconds: which calls it times."""

from __future__ import annotations

import time

import pytest

from benchmarks.timing import interleaved_median_seconds


def test_calls_per_turn_times_only_the_last_call_of_each_turn():
    calls = {"a": 0, "b": 0}

    def contender(name):
        def call():
            calls[name] += 1
            if calls[name] % 3 != 0:  # the first two calls of every turn of three are slow
                time.sleep(0.03)
        return call

    secs = interleaved_median_seconds({"a": contender("a"), "b": contender("b")}, warmup=0, repeats=4,
                                      calls_per_turn=3)
    assert calls == {"a": 12, "b": 12}
    assert secs["a"] < 0.015 and secs["b"] < 0.015


def test_one_call_per_turn_times_every_call():
    slow_first = {"n": 0}

    def call():
        slow_first["n"] += 1
        time.sleep(0.03 if slow_first["n"] % 2 else 0.0)

    secs = interleaved_median_seconds({"x": call}, warmup=0, repeats=3)
    assert slow_first["n"] == 3 and secs["x"] >= 0.025  # calls 1 and 3 of 3 are slow


def test_calls_per_turn_must_be_positive():
    with pytest.raises(ValueError, match="calls_per_turn"):
        interleaved_median_seconds({"x": lambda: None}, calls_per_turn=0)
