"""Tests of the CPU probe the benchmarks run before each measurement (benchmarks/_cpu_probe.py):
it runs for real, in this process and in two spawned processes at once."""

from __future__ import annotations

import pytest

from benchmarks import _cpu_probe


def test_probe_times_the_workload_alone_and_in_two_processes():
    p = _cpu_probe.probe(rounds=2)
    assert p["single_s"] > 0 and len(p["pair_s"]) == 2 and all(t > 0 for t in p["pair_s"])
    # two processes share at most the machine's cores; on any machine they get some share of one at least
    assert 0.2 < p["cores"] <= 2.5
    line = _cpu_probe.describe(p)
    assert line.startswith(f"{p['single_s']:.2f} s alone, ") and line.endswith(f"({p['cores']:.2f} cores)")


def test_more_rounds_take_longer():
    assert _cpu_probe.work(rounds=8) > _cpu_probe.work(rounds=1)


def test_bad_rounds_are_refused():
    with pytest.raises(ValueError, match="rounds=0"):
        _cpu_probe.probe(rounds=0)
