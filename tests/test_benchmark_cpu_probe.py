"""Tests of the CPU probe the benchmarks run before each measurement (benchmarks/_cpu_probe.py):
it runs for real, in this process and in two spawned processes at once."""

from __future__ import annotations

import time

import pytest

from benchmarks import _cpu_probe


def test_probe_times_the_workload_alone_and_in_two_processes():
    p = _cpu_probe.probe(rounds=2, stream_rounds=5, stream_n=2**22)
    assert p["single_s"] > 0 and len(p["pair_s"]) == 2 and all(t > 0 for t in p["pair_s"])
    assert p["stream_single_s"] > 0 and len(p["stream_pair_s"]) == 2 and all(t > 0 for t in p["stream_pair_s"])
    # two processes share at most the machine's cores; on any machine they get some share of one at least.
    # The stream's rounds here take milliseconds, and the run alone is timed in this process while the
    # suite's other workers run: it was once slowed enough to give 3.08 (2026-12-07), so a loose bound
    assert 0.2 < p["cores"] <= 2.5 and 0.2 < p["stream_cores"] <= 4.0
    line = _cpu_probe.describe(p)
    assert line.startswith(f"{p['single_s']:.2f} s alone, ") and f"({p['cores']:.2f} cores); stream " in line
    assert line.endswith(f"({p['stream_cores']:.2f}x)")
    old = {k: p[k] for k in ("single_s", "pair_s", "cores")}  # a probe recorded before the stream workload
    assert _cpu_probe.describe(old).endswith(f"({p['cores']:.2f} cores)")


def test_stream_computes_a_times_b_plus_c():
    arrays = _cpu_probe.stream_arrays(1000)
    assert _cpu_probe.stream(arrays, rounds=1) > 0
    a, b, c, out = arrays
    assert out.dtype == "float32"
    assert out.tolist() == (a * b + c).tolist()


def test_more_rounds_take_longer():
    assert _cpu_probe.work(rounds=8) > _cpu_probe.work(rounds=1)


def test_bad_rounds_are_refused():
    with pytest.raises(ValueError, match="rounds=0"):
        _cpu_probe.probe(rounds=0)
    with pytest.raises(ValueError, match="stream_rounds=0"):
        _cpu_probe.probe(stream_rounds=0)


@pytest.mark.parametrize("kind", ["stream", "sort"])
def test_co_runner_works_beside_the_block_and_stops_after(kind):
    with _cpu_probe.co_runner(kind, n=2**16) as info:
        time.sleep(3.0)  # the neighbour's start (spawn, numpy import) then rounds of its workload
        assert "rounds" not in info
    assert info["kind"] == kind and info["rounds"] > 0


def test_co_runner_refuses_an_unknown_workload():
    with pytest.raises(ValueError, match="co-runner got 'disk'"):
        with _cpu_probe.co_runner("disk"):
            pass
