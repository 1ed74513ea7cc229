"""Tests of the scale-out benchmark (benchmarks/scaleout.py): its helpers (peak RSS from
/proc/self/status, speed-up, the first dates of a series, the report) and a smoke run of the
whole command at a tiny size on real LocalClusters (slow)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import scaleout

STATUS = "Name:\tpython\nVmPeak:\t 2000000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t   99999 kB\n"


def test_vm_hwm_reads_the_peak_not_the_current_rss():
    assert scaleout.vm_hwm_bytes(STATUS) == 123456 * 1024
    assert scaleout.vm_hwm_bytes("Name:\tpython\n") == -1
    with pytest.raises(ValueError, match="VmHWM got unit 'MB'"):
        scaleout.vm_hwm_bytes("VmHWM:\t 12 MB\n")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_vm_hwm_of_this_process_grows_with_a_big_allocation():
    import numpy as np

    before = scaleout.vm_hwm_bytes()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
    after = scaleout.vm_hwm_bytes()
    assert before > 0 and after >= before and after >= block.nbytes


def test_speedup_and_its_validation():
    assert scaleout.speedup(10.0, 4.0) == pytest.approx(2.5)
    for bad in ((0.0, 1.0), (1.0, -2.0), (math.nan, 1.0)):
        with pytest.raises(ValueError, match="expected positive seconds"):
            scaleout.speedup(*bad)


def test_first_dates_limits_a_series():
    from sitewatch.synthetic import SyntheticSpec, generate_series

    series = generate_series(SyntheticSpec(width=192, height=192, n_dates=12, seed=1))
    first = scaleout.FirstDates(series, 3)
    assert len(first) == 3 and first.grid == series.grid
    assert first.scene(2).scene_id == series.scene(2).scene_id
    with pytest.raises(IndexError):
        first.scene(3)
    with pytest.raises(ValueError, match="dates got 13"):
        scaleout.FirstDates(series, 13)


def _run(workers: int, total: float, cloud=(0.1, None)) -> dict:
    return {"config": scaleout.Config(workers).label, "workers": workers, "threads_per_worker": 1, "ingest_s": total / 4,
            "analyse_s": 3 * total / 4, "total_s": total, "warmup_s": 1.0, "peak_rss_per_worker_bytes": [2**30] * workers,
            "load_before": 0.1, "load_after": 0.2, "cloud_fractions": list(cloud), "objects": 3, "scenes": 2}


def test_report_states_target_and_whether_results_agree():
    out, md = scaleout.report(4096, 8, 512, "8GB", [_run(1, 100.0), _run(2, 50.0)])
    assert out["speedup"] == pytest.approx(2.0) and out["target_met"] and out["identical_results"]
    assert "= 2.00x** (target >= 1.7x): met" in md and "1.00 GiB, 1.00 GiB" in md
    out, md = scaleout.report(4096, 8, 512, "8GB", [_run(1, 100.0), _run(2, 80.0, cloud=(0.2, None))], warmup=False)
    assert not out["target_met"] and not out["identical_results"]
    assert "1.25x** (target >= 1.7x): NOT met" in md and "identical in both configurations (cloud fractions, change objects): NO" in md
    assert "no warm-up" in md


def test_default_chunk_is_the_site_default():
    from sitewatch.config import SiteConfig

    assert scaleout.SITE_CHUNK == SiteConfig.model_fields["chunk_size"].default


def test_thread_cpu_names_the_main_thread():
    cpu = scaleout.thread_cpu_seconds()
    if Path("/proc/self/task").exists():
        assert cpu["MainThread"] >= 0 and sum(cpu.values()) <= scaleout.cpu_seconds() + 0.05
    else:
        assert cpu == {}


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit, match="--dates got 1"):
        scaleout.main(["--dates", "1"])
    with pytest.raises(SystemExit, match="--size got 64"):
        scaleout.main(["--size", "64"])


@pytest.mark.slow
def test_smoke_run_on_a_real_two_worker_cluster(tmp_path):
    """One configuration of the benchmark at 192 px, 2 dates, no warm-up, on a real 2-process
    LocalCluster: the work runs there (the cube is analysed), every worker reports its peak RSS,
    and the library result matches a run on dask's local scheduler. (The whole command, both
    clusters, is ``python -m benchmarks.scaleout --size 192 --dates 2 --chunk 128 --no-warmup``.)"""
    from sitewatch.io import cube as cube_io

    site = scaleout.write_site(str(tmp_path / "site"), 192, 2)
    r = scaleout.run_config(scaleout.Config(2), str(tmp_path), site, None, 128, "2GB")
    assert r["workers"] == 2 and len(r["peak_rss_per_worker_bytes"]) == 2
    assert all(50 * 2**20 < b < 2 * 2**30 for b in r["peak_rss_per_worker_bytes"])
    assert r["total_s"] == pytest.approx(r["ingest_s"] + r["analyse_s"]) and r["worker_cpu_s"] > 0
    assert r["tasks"] > r["graphs"] > 0 and 0 < r["client_main_cpu_s"] <= r["client_cpu_s"] + 0.05
    slots = cube_io.slots(str(tmp_path / "cube-w2t1.zarr"))
    assert len(slots) == 2 and all(s.ingested and s.analysed for s in slots)
    local = scaleout.monitor_work(str(tmp_path / "local.zarr"), site[0].grid, site[1], 128)
    assert (local["cloud_fractions"], local["objects"]) == (r["cloud_fractions"], r["objects"])
