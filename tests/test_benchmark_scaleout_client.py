"""Tests of benchmarks/scaleout_client.py: its report and argument checks (the measurement itself
needs a LocalCluster and minutes; it is run by hand, see README)."""

from __future__ import annotations

import pytest

from benchmarks import scaleout_client


def _res(rows):
    return {"size": 1024, "dates": 2, "chunk": 512, "workers": 2, "rows": rows, "threads_cpu_s": {"IO loop": 3.0, "MainThread": 1.0},
            "worker_peak_rss_mib": [500, 510], "graphs": [{"tasks": 40, "caller": "masks:1 < analyse_slot:2", "top": [("getitem", 30)]}],
            "date": "2026-12-01 06:00 UTC", "load_before": 1.5, "load_after": 2.5}


def _row(client, main, worker, tasks):
    return {"wall_s": 10.0, "client_cpu_s": client, "main_cpu_s": main, "worker_cpu_s": worker, "graphs": 3, "tasks": tasks,
            "state": "ok", "objects": 1, "client_peak_rss_mib": 300}


def test_report_sums_the_dates_and_states_the_client_share():
    md = scaleout_client.markdown(_res([_row(2.0, 0.5, 10.0, 1000), _row(3.0, 0.5, 10.0, 1500)]), with_graphs=True)
    assert "| all | | 20.0 s | 5.0 s (1.0 s) | 20.0 s | 6 | 2,500 | |" in md
    assert "Client CPU / worker CPU: 0.25" in md and "IO loop 3.0 s, MainThread 1.0 s" in md
    assert "`masks:1 < analyse_slot:2`" in md and "load average 1.50 before, 2.50 after" in md
    assert "`masks:1" not in scaleout_client.markdown(_res([_row(1.0, 0.5, 2.0, 10)]), with_graphs=False)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit, match="expected >= 128 px, >= 2 dates"):
        scaleout_client.main(["--dates", "1"])
