"""Tests of the pipeline benchmark (benchmarks/pipeline.py and its _pipeline_* helpers): the
instruments (peak RSS of a process tree, dask task counter, call timer, stage names), option
checks, and a smoke run of the whole command at tiny sizes (real subprocesses, real
LocalClusters; slow) whose report must hold every section with finite numbers."""

from __future__ import annotations

import json
import math
import multiprocessing
import re
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from benchmarks import pipeline
from benchmarks._pipeline_measure import CallTimer, PeakRSS, TaskTimer, stage_of, tree_rss
from benchmarks._pipeline_report import SECTIONS


def _hold(n_bytes: int, seconds: float) -> None:
    block = np.ones(n_bytes // 8)
    time.sleep(seconds)
    del block


def test_peak_rss_counts_child_processes():
    base = tree_rss(multiprocessing.current_process().pid)
    ctx = multiprocessing.get_context("spawn")
    with PeakRSS(interval=0.02) as m:
        p = ctx.Process(target=_hold, args=(200 * 2**20, 1.5))
        p.start()
        p.join()
    assert p.exitcode == 0
    # the child's 200 MiB (plus its interpreter) show in the peak of the tree, not in our own RSS
    assert m.peak - base >= 200 * 2**20
    assert m.samples > 5


def test_peak_rss_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="PeakRSS interval got 0"):
        PeakRSS(interval=0)


def test_task_timer_counts_graph_tasks_and_names():
    x = da.ones((40, 40), chunks=10)  # 16 chunks
    with TaskTimer().threaded() as t:
        (x + 1).sum().compute()
    assert t.n_graphs == 1
    assert t.n_tasks >= 16 + 1  # one (fused ones + add) task per chunk, plus the reduction
    assert any(n >= 16 for n in t.count_by_name.values())  # one task per chunk of some layer
    assert all(v >= 0 for v in t.by_name.values())


def test_task_timer_sees_concurrent_computes_in_threads():
    from concurrent.futures import ThreadPoolExecutor

    arrays = [da.ones((40, 40), chunks=10) * i for i in range(6)]
    with TaskTimer().threaded() as t:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda a: a.sum().compute(), arrays))
        arrays[0].sum().compute()  # and a compute after them
    assert t.n_graphs == 7


def test_call_timer_wraps_and_restores():
    import benchmarks._pipeline_handwritten as hw

    original = hw.run
    ct = CallTimer({"hand": "benchmarks._pipeline_handwritten:run"})
    with ct.active():
        assert hw.run is not original
        with pytest.raises(Exception):
            hw.run(["/nonexistent/item.json"], ("blue",), Path("/tmp/none"))
    assert hw.run is original
    assert ct.calls["hand"] == 1 and ct.seconds["hand"] >= 0


@pytest.mark.parametrize("name, stage", [("read-red", "read"), ("read", "read"), ("getitem-store-map", "write"),
                                         ("store-map", "write"), ("_block1", "masks"), ("label", "objects"),
                                         ("mean_chunk", "other")])
def test_stage_of(name, stage):
    assert stage_of(name) == stage


@pytest.mark.parametrize("argv, message", [(["--dates", "1"], "--dates got 1"), (["--sizes", "8192"], "--sizes got \\[8192\\]"),
                                           (["--sizes", "100"], "--sizes got \\[100\\]"), (["--chunk", "10"], "--chunk got 10")])
def test_bad_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        pipeline.parse(argv)
    assert re.search(message, capsys.readouterr().err)


def test_8192_needs_its_flag():
    assert pipeline.parse(["--sizes", "8192", "--allow-8192", "--no-cluster"]).sizes == [8192]


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", text)]


@pytest.mark.slow
def test_quick_run_writes_every_section_with_finite_numbers(tmp_path):
    assert pipeline.main(["--quick", "--results-dir", str(tmp_path)]) == 0
    md = (tmp_path / "pipeline-quick.md").read_text()
    for s in SECTIONS:
        assert s in md, s
    assert "nan" not in md.lower() and "inf " not in md.lower()
    for png in ("pipeline-quick-throughput.png", "pipeline-quick-memory.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads((tmp_path / "pipeline-quick.json").read_text())
    runs = {(r["phase"], r["size"]) for r in out["runs"]}
    assert runs == {(p, s) for p in ("floor", "full", "hand") for s in (192, 256)} | {("cluster-1", 192), ("cluster-2", 192)}
    for r in out["runs"]:
        assert r["total_s"] > 0 and math.isfinite(r["total_s"])
        assert r["peak_rss_bytes"] > 50 * 2**20  # at least an interpreter with numpy
    for r in out["summary"]["rows"]:
        assert 0 < r["ratio"] < 1.5 and r["floor_s"] < r["full_s"] + 1.0
        assert all(math.isfinite(v) and v > 0 for v in r["mpx_per_s"].values())
    full = [r for r in out["runs"] if r["phase"] == "full"]
    assert all(r["n_tasks"] > 0 and r["stages_s"]["analyse"] > 0 for r in full)
    assert all(r["change_states"] for r in full)
    # the same scenes: every run of a size saw all dates
    assert all(r["dates"] == 2 for r in out["runs"] if "dates" in r and r["phase"] in ("floor", "full", "hand"))
