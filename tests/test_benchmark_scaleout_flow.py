"""Tests of the scale-out benchmark through the monitor flow (benchmarks/scaleout_flow.py): the
digest both configurations must agree on, the report, argument checks, and one configuration
run for real (the session's Prefect server, a 2-process LocalCluster reached by address)."""

from __future__ import annotations

import os

import pytest

from benchmarks import scaleout_flow
from benchmarks.scaleout import Config


def _summary(cloud=(0.0, 0.25), detections=(0, 2), alerts=("a1",)):
    return {"scenes_analysed": [{"scene_id": f"S{i}", "cloud_fraction": c, "n_detections": n, "change_state": "computed"}
                                for i, (c, n) in enumerate(zip(cloud, detections))],
            "new_alert_ids": list(alerts), "scenes_rejected": []}


def test_digest_tells_runs_apart_by_cloud_detections_and_alerts():
    base = scaleout_flow.digest(_summary())
    assert base == scaleout_flow.digest(_summary(cloud=(0.0, 0.2500000001)))  # rounding noise only
    assert base != scaleout_flow.digest(_summary(cloud=(0.0, 0.3)))
    assert base != scaleout_flow.digest(_summary(detections=(0, 3)))
    assert base != scaleout_flow.digest(_summary(alerts=()))
    assert scaleout_flow.digest(_summary(cloud=(float("nan"), 0.25)))["scenes"][0][1] is None


def _run(workers, total, summary=None):
    return {"config": Config(workers).label, "workers": workers, "threads_per_worker": 1, "total_s": total, "warmup_s": 1.0,
            "worker_cpu_s": 10.0, "client_cpu_s": 2.0, "peak_rss_per_worker_bytes": [2**30] * workers,
            "load_before": 0.1, "load_after": 0.2, "scenes": 2, "digest": scaleout_flow.digest(summary or _summary())}


def test_report_states_target_and_whether_results_agree():
    out, md = scaleout_flow.report(4096, 4, 512, "8GB", [_run(1, 90.0), _run(2, 50.0)], warmup=True)
    assert out["speedup"] == pytest.approx(1.8) and out["target_met"] and out["identical_results"]
    assert "= 1.80x** (target >= 1.7x): met" in md and "1.00 GiB, 1.00 GiB" in md and "10.0 s / 2.0 s" in md
    out, md = scaleout_flow.report(4096, 4, 512, "8GB", [_run(1, 60.0), _run(2, 50.0, _summary(alerts=()))], warmup=False)
    assert not out["target_met"] and not out["identical_results"]
    assert "1.20x** (target >= 1.7x): NOT met" in md and "alerts): NO" in md and "no warm-up" in md


def test_rounds_give_the_median_speedup_and_each_ceiling():
    runs = [_run(1, 90.0), _run(2, 50.0), _run(1, 80.0), _run(2, 50.0), _run(1, 100.0), _run(2, 50.0)]
    out, md = scaleout_flow.report(4096, 4, 512, "8GB", runs, warmup=True, cores=2)
    assert out["speedup_per_round"] == pytest.approx([1.8, 1.6, 2.0]) and out["speedup"] == pytest.approx(1.8)
    # ceiling: time(1 worker) / ((10 s workers + 2 s flow process) / 2 cores)
    assert out["ceiling_per_round"] == pytest.approx([15.0, 80 / 6, 100 / 6])
    assert "(median of 3 rounds)" in md and "| 2 | 1.60x | 13.33x |" in md and "3 rounds, each" in md
    with pytest.raises(ValueError, match="1 worker and 1 with 2"):
        scaleout_flow.report(4096, 4, 512, "8GB", runs[:3], warmup=True)


def test_report_shows_the_cpu_probe_around_each_run():
    slow = {"single_s": 0.68, "pair_s": [0.9, 0.9], "cores": 1.51}
    fast = {"single_s": 0.34, "pair_s": [0.34, 0.34], "cores": 2.0}
    runs = [_run(1, 90.0) | {"cpu_probe_before": slow, "cpu_probe_after": fast}, _run(2, 50.0) | {"cpu_probe_before": fast, "cpu_probe_after": fast}]
    out, md = scaleout_flow.report(4096, 4, 512, "8GB", runs, warmup=True, cores=2)
    assert "| 0.68 s, 1.51 cores / 0.34 s, 2.00 cores |" in md
    assert "alone 0.34-0.68 s (slowest / fastest 2.00), cores given to two processes 1.51-2.00" in md
    assert out["runs"][0]["cpu_probe_before"] == slow
    _, md = scaleout_flow.report(4096, 4, 512, "8GB", [_run(1, 90.0), _run(2, 50.0)], warmup=True)  # runs from before the probe
    assert "CPU probe (" not in md and "| 0.10 / 0.20 | - |" in md
    assert "Memory stream" not in md  # probes from before the stream workload: no such line


def test_report_gives_the_memory_stream_share_of_two_processes():
    probe = {"single_s": 0.5, "pair_s": [0.5, 0.5], "cores": 2.0, "stream_single_s": 0.3, "stream_pair_s": [0.5, 0.5], "stream_cores": 1.2}
    other = probe | {"stream_cores": 1.26}
    runs = [_run(1, 90.0) | {"cpu_probe_before": probe, "cpu_probe_after": other}, _run(2, 50.0) | {"cpu_probe_before": probe, "cpu_probe_after": probe}]
    _, md = scaleout_flow.report(4096, 4, 512, "8GB", runs, warmup=True, cores=2)
    assert "two processes got 1.20-1.26x the throughput of one" in md


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit, match="--repeat got 0"):
        scaleout_flow.main(["--repeat", "0"])
    with pytest.raises(SystemExit, match="--dates got 1"):
        scaleout_flow.main(["--dates", "1"])
    with pytest.raises(SystemExit, match="--size got 64"):
        scaleout_flow.main(["--size", "64"])


@pytest.mark.slow
def test_one_configuration_runs_the_flow_on_a_cluster_reached_by_address(tmp_path, monkeypatch, prefect_server):
    """The monitor flow on a real 2-process LocalCluster that it reaches through
    SITEWATCH_DASK_ADDRESS: both workers report their peak memory, the flow analysed every date,
    and the address is not left behind in the environment."""
    from benchmarks.scaleout import write_site

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # the workers report to the session's server
    monkeypatch.delenv("SITEWATCH_DASK_ADDRESS", raising=False)
    series, refs = write_site(str(tmp_path / "site"), 192, 2)
    r = scaleout_flow.run_flow_config(Config(2), str(tmp_path), (series, refs, str(tmp_path / "site" / "scenes")), None, 128, "2GB")
    assert r["workers"] == 2 and len(r["peak_rss_per_worker_bytes"]) == 2 and r["scenes"] == 2
    assert all(50 * 2**20 < b < 2 * 2**30 for b in r["peak_rss_per_worker_bytes"])
    assert r["worker_cpu_s"] > 0 and r["total_s"] > 0
    assert [s[0] for s in r["digest"]["scenes"]] == [ref.scene_id for ref in refs]
    assert "SITEWATCH_DASK_ADDRESS" not in os.environ
    # a second round of the same configuration writes a store of its own, so it has the same work to do
    r2 = scaleout_flow.run_flow_config(Config(2), str(tmp_path), (series, refs, str(tmp_path / "site" / "scenes")), None, 128, "2GB", 2)
    assert r2["scenes"] == 2 and r2["digest"] == r["digest"]
