"""Tests of the balance report (benchmarks/scaleout_balance.py): task groups from keys, and the
per-phase sums over a task stream."""

from __future__ import annotations

import pytest

from benchmarks import scaleout_balance as sb


def test_prefix_strips_the_token_only():
    assert sb.prefix(("fold_np-0123456789abcdef0123456789abcdef", 0, 1)) == "fold_np"
    assert sb.prefix(("getitem-store-map-0123456789abcdef", 2)) == "getitem-store-map"
    assert sb.prefix("finalize-hlgfinalizecompute-0123456789abcdef") == "finalize-hlgfinalizecompute"
    assert sb.prefix(("read-green", 0, 0)) == "read-green"  # no token: the name as it is


def _task(key, worker, start, stop, action="compute"):
    return {"key": key, "worker": worker, "startstops": [{"action": action, "start": start, "stop": stop}]}


def test_summarise_splits_by_phase_worker_and_group():
    stream = [_task(("fold_np-0123456789abcdef", 0, 0), "A", 1.0, 3.0), _task(("fold_np-0123456789abcdef", 0, 1), "A", 3.0, 4.0),
              _task(("fold_np-0123456789abcdef", 1, 0), "B", 1.0, 2.0), _task(("x-0123456789abcdef", 0), "B", 2.0, 2.5),
              _task(("change_score_np-0123456789abcdef", 0), "B", 11.0, 12.0),
              _task(("fold_np-0123456789abcdef", 1, 1), "B", 2.0, 2.5, action="transfer")]
    rows = sb.summarise(stream, [("date 0", 0.0, 10.0), ("date 1", 10.0, 20.0)])
    first, second = rows
    assert first["compute_s"] == {"A": pytest.approx(3.0), "B": pytest.approx(1.5)}
    assert first["transfer_s"] == {"A": 0.0, "B": pytest.approx(0.5)}
    assert first["use"]["A"] == pytest.approx(0.3)
    assert first["groups"]["fold_np"] == {"A": (2, pytest.approx(3.0), 0.0), "B": (1, pytest.approx(1.0), pytest.approx(0.5))}
    assert first["groups"]["x"]["B"] == (1, pytest.approx(0.5), 0.0) and first["groups"]["x"]["A"] == (0, 0.0, 0.0)
    assert second["groups"] == {"change_score_np": {"A": (0, 0.0, 0.0), "B": (1, pytest.approx(1.0), 0.0)}}
    md = sb.report_md(4096, 2, 1024, 2, rows)
    # A computes 1-4 s, B 1-2.5 s: nobody 0-1 and 4-10 s, A alone 2.5-4 s
    assert "| date 0 | 10.0 s | w0 3.0 s (30%), w1 1.5 s (15%) | w0 0.0 s, w1 0.5 s | 7.0 s | w0 1.5 s, w1 0.0 s |" in md
    assert "| date 0 | `fold_np` | 2 / 3.0 s / 0.0 s | 1 / 1.0 s / 0.5 s |" in md
    assert md.index("`fold_np`") < md.index("| date 0 | `x` |")  # the costliest group first
    many = [_task((f"g{i}-0123456789abcdef", 0), "A", 1.0, 1.0 + i / 10) for i in range(1, 11)]
    md = sb.report_md(4096, 2, 1024, 2, sb.summarise(many, [("date 0", 0.0, 10.0)]))
    assert "`g10`" in md and "`g2`" not in md and "| date 0 | other (2 groups) | 2 / 0.3 s / 0.0 s |" in md
    assert "co-runner" not in md
    md = sb.report_md(4096, 2, 1024, 1, rows, co_runner={"kind": "stream", "rounds": 40})
    assert "--workers 1 --co-runner stream`" in md and "ran the CPU probe's stream workload on the other core" in md
    assert "(40 rounds)" in md


def test_idle_split_tells_all_idle_from_one_worker_alone():
    busy = {"A": [(0.0, 2.0), (1.5, 3.0), (6.0, 7.0)], "B": [(0.5, 1.0), (2.0, 5.0), (9.0, 12.0)]}
    split = sb.idle_split(busy, 0.0, 10.0)
    # A busy 0-3 and 6-7, B 0.5-1, 2-5 and 9-10 (clipped): nobody 5-6 and 7-9; A alone 0-0.5, 1-2 and 6-7; B alone 3-5 and 9-10
    assert split["all_idle_s"] == pytest.approx(3.0)
    assert split["alone_s"] == {"A": pytest.approx(2.5), "B": pytest.approx(3.0)}
    one = sb.idle_split({"A": [(1.0, 2.0)]}, 0.0, 4.0)
    assert one == {"all_idle_s": pytest.approx(3.0), "alone_s": {"A": 0.0}}  # a single worker is never "alone"
