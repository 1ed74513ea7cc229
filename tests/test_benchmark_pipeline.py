"""Tests of the pipeline benchmark (benchmarks/pipeline.py and its _pipeline_* helpers): the
instruments (peak RSS of a process tree, dask task counter, call timer, stage names), option
checks, and a smoke run of the whole command at tiny sizes (real subprocesses, real
LocalClusters; slow) whose report must hold every section with finite numbers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from benchmarks import pipeline
from benchmarks._pipeline_measure import OUTSIDE_CALLS, CallTimer, PeakRSS, TaskTimer, peak_growth, stage_of, tree_rss
from benchmarks._pipeline_report import SECTIONS


def test_peak_rss_counts_child_processes():
    import os
    import subprocess
    import sys

    base = tree_rss(os.getpid())
    hold = "import numpy as np, time; b = np.ones(200 * 2**20 // 8); time.sleep(1.0)"
    with PeakRSS(interval=0.02) as m:
        p = subprocess.run([sys.executable, "-c", hold])
    assert p.returncode == 0
    # the child's 200 MiB (plus its interpreter) show in the peak of the tree, not in our own RSS
    assert m.peak - base >= 200 * 2**20
    assert m.samples > 5
    levels = [v for _, v in m.rises]
    assert levels and levels == sorted(set(levels)) and levels[-1] == m.peak  # each rise above the last


def test_peak_growth_goes_to_the_innermost_call_running():
    spans = [(0.0, 10.0, "outer"), (2.0, 4.0, "inner"), (6.0, 7.0, "other")]
    rises = [(1.0, 150), (3.0, 400), (3.5, 380), (6.5, 500), (12.0, 600)]
    # from 100: outer +50, inner +250, (380 is no rise above 400), other +100, outside +100
    assert peak_growth(rises, 100, spans) == {"outer": 50, "inner": 250, "other": 100, OUTSIDE_CALLS: 100}
    assert peak_growth([], 100, spans) == {}


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
    assert [label for _, _, label in ct.spans] == ["hand"] and ct.spans[0][0] <= ct.spans[0][1]


def test_call_timer_wraps_a_method_on_its_class_and_restores_it():
    from sitewatch.io import scratch

    original = scratch.Scratch.__dict__["__call__"]
    ct = CallTimer({"hold": "sitewatch.io.scratch:Scratch.__call__"})
    with ct.active():
        assert scratch.Scratch.__dict__["__call__"] is not original
        with pytest.raises(ValueError, match="expected a new identifier"):
            scratch.Scratch("/tmp/none/_scratch")(None, "not a name")
    assert scratch.Scratch.__dict__["__call__"] is original
    assert ct.calls["hold"] == 1


@pytest.mark.parametrize("name, stage", [("read-red", "read"), ("read", "read"), ("scratch-masks-cloud-1f2e", "read"), ("getitem-store-map", "write"),
                                         ("store-map", "write"), ("_block1", "masks"), ("label", "objects"),
                                         ("mean_chunk", "other")])
def test_stage_of(name, stage):
    assert stage_of(name) == stage


@pytest.mark.parametrize("argv, message", [(["--dates", "1"], "--dates got 1"), (["--sizes", "8192"], "--sizes got \\[8192\\]"),
                                           (["--streamed-sizes", "8192"], "--streamed-sizes got \\[8192\\]"),
                                           (["--sizes", "100"], "--sizes got \\[100\\]"), (["--chunk", "10"], "--chunk got 10"),
                                           (["--strip-px", "10"], "--strip-px got 10")])
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
    # without the LocalCluster runs (about 60 s more on 2 shared cores: cluster start-up and
    # teardown); test_cluster_phase_measures_every_process runs one of them
    assert pipeline.main(["--quick", "--no-cluster", "--streamed-sizes", "320", "--strip-px", "128",
                          "--results-dir", str(tmp_path)]) == 0
    md = (tmp_path / "pipeline-quick.md").read_text()
    for s in SECTIONS:
        assert s in md, s
    assert not re.search(r"\b(nan|inf)\b", md, re.IGNORECASE)
    for png in ("pipeline-quick-throughput.png", "pipeline-quick-memory.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads((tmp_path / "pipeline-quick.json").read_text())
    runs = {(r["phase"], r["size"]) for r in out["runs"]}
    assert runs == {(p, s) for p in ("floor", "full", "full-streamed", "hand") for s in (192, 256)} | {("floor", 320), ("full-streamed", 320)}
    assert "Not run (--no-cluster)." in md
    for r in out["runs"]:
        assert r["total_s"] > 0 and math.isfinite(r["total_s"])
        assert r["peak_rss_bytes"] > 50 * 2**20  # at least an interpreter with numpy
    for r in out["summary"]["rows"]:
        # the ratio is the report's arithmetic on its own timings; how fast either ran is the
        # benchmark's finding, not something a unit test on a shared machine can hold it to
        total = {run["phase"]: run["total_s"] for run in out["runs"] if run["size"] == r["size"]}
        assert (r["floor_s"], r["full_s"]) == (total["floor"], total["full"])
        assert r["ratio"] == pytest.approx(total["floor"] / total["full"])
        assert all(math.isfinite(v) and v > 0 for v in r["mpx_per_s"].values())
    full = [r for r in out["runs"] if r["phase"] == "full"]
    assert all(r["n_tasks"] > 0 and r["stages_s"]["analyse"] > 0 for r in full)
    assert all(r["change_states"] for r in full)
    # every rise of the peak goes to one call (or to "outside"): together they are the peak's growth
    assert all(sum(r["peak_growth_bytes"].values()) == r["peak_rss_bytes"] - r["start_rss_bytes"] for r in full)
    # the same scenes: every run of a size saw all dates
    assert all(r["dates"] == 2 for r in out["runs"] if "dates" in r and r["phase"] in ("floor", "full", "full-streamed", "hand"))
    # the streamed run wrote its whole-site arrays to the scratch store and found what the full run found
    streamed = {r["size"]: r for r in out["runs"] if r["phase"] == "full-streamed"}
    for r in full:
        st = streamed[r["size"]]
        assert st["call_n"].get(next(k for k in st["call_n"] if k.startswith("scratch")), 0) > 0
        assert (st["objects"], st["change_states"]) == (r["objects"], r["change_states"])
    # the streamed growth spans every streamed size (--sizes and --streamed-sizes), with its goal row
    assert "Growth of the streamed peak from 192^2 to 320^2 px" in md and "| 320^2 px |" in md
    assert "| streamed peak RSS growth |" in md and "strips of about 128^2 px" in md
    assert "--streamed-sizes 320" in md and "--strip-px 128" in md and "in strips of about 128^2 px (`--strip-px`)" in md


def test_profile_summary_counts_busy_samples_by_cost(tmp_path):
    from benchmarks._pipeline_profile import markdown, summarise

    raw = tmp_path / "p.txt"
    raw.write_text(
        "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:89) 400\n"  # idle pool worker
        "Thread._bootstrap (threading.py:1002);_read_located (/x/sitewatch/io/scenes.py:330);"
        "warp_block (/x/sitewatch/io/scenes.py:292) 80\n"
        "Thread._bootstrap (threading.py:1002);write_batch (zarr/core/codec_pipeline.py:1);"
        "NDBuffer.all_equal (zarr/core/buffer/core.py:544);array_equal (numpy/_core/numeric.py:2610) 40\n")
    s = summarise(raw, rate=40)
    assert s["sampled_thread_s"] == pytest.approx(13.0) and s["busy_thread_s"] == pytest.approx(3.0)
    costs = dict(s["by_cost"])
    assert costs["COG read and warp (scenes.warp_block)"] == pytest.approx(2.0)
    assert costs["zarr empty-chunk check on write (NDBuffer.all_equal)"] == pytest.approx(1.0)
    assert s["by_leaf"][0] == ("warp_block (sitewatch/io/scenes.py:292)", pytest.approx(2.0))
    run = {"size": 256, "dates": 2, "total_s": 4.0, "stages_s": {"ingest": 1.0, "analyse": 2.5, "alerts": 0.5}}
    text = "\n".join(markdown(s, run))
    assert "| COG read and warp (scenes.warp_block) | 2.0 | 67% |" in text
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="got no samples"):
        summarise(empty)


def test_profile_size_must_be_one_of_the_sizes(capsys):
    with pytest.raises(SystemExit):
        pipeline.parse(["--sizes", "1024", "--profile", "2048"])
    assert "--profile got 2048" in capsys.readouterr().err


@pytest.mark.slow
def test_cluster_phase_measures_every_process(tmp_path):
    from benchmarks._pipeline_phases import run_phase

    pipeline.write_sites(tmp_path, [192], 2, None)
    r = run_phase("cluster-1", tmp_path / "site-192", None, tmp_path / "work", 128)
    assert r["workers"] == 1 and r["size"] == 192 and r["scenes"] == 2 and r["total_s"] > 0
    # the sampled tree (this process, the nanny, the worker) holds more than the worker alone
    assert r["peak_rss_bytes"] > max(r["peak_rss_per_worker_bytes"]) > 0


def test_unknown_phase_is_refused(tmp_path):
    from benchmarks._pipeline_phases import run_phase

    with pytest.raises(ValueError, match="phase got 'fast'"):
        run_phase("fast", tmp_path, None, tmp_path / "w", 128)
