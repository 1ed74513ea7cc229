"""Where the work of each date runs on a 2-worker cluster: per date, each worker's busy time,
transfers and tasks, from dask's task stream.

    python -m benchmarks.scaleout_balance [--size 4096] [--dates 4] [--chunk 1024] [--workers 2]
                                          [--co-runner stream|sort]

The speed-up of the monitor flow from 1 to 2 workers (issue 8) is bounded by how evenly the
chunks of a date are spread over the workers and by the data moved between them. This runs the
monitor work through the library (``benchmarks.scaleout.monitor_work``: ingest, then
``analyse_slot`` per date; no Prefect) on a ``distributed.LocalCluster`` under
``distributed.get_task_stream`` and reports, per phase (the ingest, then each date's
``analyse_slot``):

* the wall time, and each worker's compute seconds and its share of the wall time (its use);
* each worker's seconds spent receiving data from the other worker (transfers);
* for the costliest task groups of each phase (by task-name prefix) the tasks and compute
  seconds on each worker: a 3 + 1 split of 4 chunks shows here.

With ``--co-runner stream`` (or ``sort``) a process of ``benchmarks._cpu_probe`` streams through
memory (or sorts in the caches) on the other core during the measured work: run with 1 worker,
it shows how much of the work slows down when a neighbour takes the memory bandwidth, which a
second worker does.

Writes benchmarks/results/scaleout-balance.md and .json (``--out`` for another name).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections import defaultdict
from typing import Any

from .scaleout import OUT, write_report, write_site

#: task groups shown per phase, the costliest first (the rest summed as "other")
TOP = 8


def prefix(key: Any) -> str:
    """The task group of a task key: ``('fold_np-abc123', 0, 1)`` -> ``fold_np``."""
    name = key[0] if isinstance(key, tuple) else str(key)
    head, _, tail = str(name).rpartition("-")
    return head if head and len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) else str(name)


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching ``(start, stop)`` spans joined into disjoint ones, in order."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def idle_split(busy: dict[str, list[tuple[float, float]]], t0: float, t1: float) -> dict[str, Any]:
    """How the workers' idle time in ``[t0, t1)`` splits, from each worker's compute spans:
    ``all_idle_s``, the seconds no worker computed (the client's round trips: reductions brought
    back, graphs built and sent), and ``alone_s`` per worker, the seconds it alone computed while
    every other worker waited (a phase's tail on one worker, a chunk more on one side)."""
    merged = {w: _merged([(max(a, t0), min(b, t1)) for a, b in spans if b > t0 and a < t1]) for w, spans in busy.items()}
    edges = sorted({t0, t1, *(t for m in merged.values() for span in m for t in span)})
    all_idle, alone = 0.0, dict.fromkeys(busy, 0.0)
    cursor = {w: 0 for w in merged}
    for a, b in zip(edges, edges[1:]):
        mid, on = (a + b) / 2, []
        for w, m in merged.items():
            while cursor[w] < len(m) and m[cursor[w]][1] <= mid:
                cursor[w] += 1
            if cursor[w] < len(m) and m[cursor[w]][0] <= mid:
                on.append(w)
        if not on:
            all_idle += b - a
        elif len(on) == 1 and len(merged) > 1:
            alone[on[0]] += b - a
    return {"all_idle_s": all_idle, "alone_s": alone}


def summarise(stream: list[dict[str, Any]], phases: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """Per phase ``(name, t0, t1)`` (wall-clock seconds): the task stream's compute and transfer
    seconds per worker, and per task group the tasks, compute seconds and seconds of transfers of
    its inputs per worker. A task counts in the phase where its compute started, a transfer where
    it started."""
    workers = sorted({r["worker"] for r in stream})
    busy: dict[str, list[tuple[float, float]]] = {w: [] for w in workers}
    for r in stream:
        busy[r["worker"]] += [(ss["start"], ss["stop"]) for ss in r["startstops"] if ss["action"] == "compute"]
    out = []
    for name, t0, t1 in phases:
        compute = dict.fromkeys(workers, 0.0)
        transfer = dict.fromkeys(workers, 0.0)
        groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: {w: [0, 0.0, 0.0] for w in workers})
        for r in stream:
            for ss in r["startstops"]:
                if not t0 <= ss["start"] < t1:
                    continue
                dt = ss["stop"] - ss["start"]
                if ss["action"] == "compute":
                    compute[r["worker"]] += dt
                    g = prefix(r["key"])
                    groups[g][r["worker"]][0] += 1
                    groups[g][r["worker"]][1] += dt
                elif ss["action"] == "transfer":  # the inputs this task waited for, from another worker
                    transfer[r["worker"]] += dt
                    groups[prefix(r["key"])][r["worker"]][2] += dt
        wall = t1 - t0
        out.append({"phase": name, "wall_s": wall, "compute_s": compute, "transfer_s": transfer,
                    "use": {w: (c / wall if wall > 0 else 0.0) for w, c in compute.items()}, **idle_split(busy, t0, t1),
                    "groups": {g: {w: tuple(v) for w, v in per.items()} for g, per in sorted(groups.items())}})
    return out


def report_md(size: int, dates: int, chunk: int, workers: int, rows: list[dict[str, Any]], work_chunk: int | None = None,
              peaks: list[int] | None = None, dask_env: bool = False, co_runner: dict[str, Any] | None = None) -> str:
    extra = (("" if work_chunk is None else f" --work-chunk {work_chunk}") + (" --dask-worker-env" if dask_env else "")
             + ("" if co_runner is None else f" --co-runner {co_runner['kind']}"))
    names = sorted({w for r in rows for w in r["compute_s"]})
    short = {w: f"w{i}" for i, w in enumerate(names)}
    md = [f"# Balance of the monitor work over {workers} workers: {size} x {size} px, {dates} dates, chunks {chunk} px", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. `python -m benchmarks.scaleout_balance --size {size} "
          f"--dates {dates} --chunk {chunk} --workers {workers}{extra}`: the library path (no Prefect) on a LocalCluster "
          f"({workers} processes x 1 thread), under dask's task stream; workers started "
          + ("with dask's default environment." if dask_env else "as sitewatch starts its own (`flows.dask_env.local_cluster`).")
          + ("" if not peaks else " Peak RSS per worker (VmHWM): " + ", ".join(f"{b / 2**30:.2f} GiB" for b in peaks) + ".")
          + ("" if co_runner is None else f" A co-runner process ran the CPU probe's {co_runner['kind']} workload on the other "
             f"core throughout the measured work ({co_runner.get('rounds', '?')} rounds)."), "",
          "| phase | wall | compute per worker (use) | transfers per worker | no worker computing | one worker alone |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        comp = ", ".join(f"{short[w]} {r['compute_s'][w]:.1f} s ({r['use'][w]:.0%})" for w in names)
        tr = ", ".join(f"{short[w]} {r['transfer_s'][w]:.1f} s" for w in names)
        alone = ", ".join(f"{short[w]} {r['alone_s'][w]:.1f} s" for w in names)
        md.append(f"| {r['phase']} | {r['wall_s']:.1f} s | {comp} | {tr} | {r['all_idle_s']:.1f} s | {alone} |")
    md += ["", "No worker computing: the seconds of the phase when every worker waited (on the client: a "
           "reduction brought back, the next graph built and sent; or on transfers). One worker alone: the seconds "
           "that worker computed while every other one waited (the tail of a step on one worker)."]
    md += ["", "Task groups: tasks / compute seconds / seconds receiving their inputs from the other worker, per worker.", "",
           "| phase | group | " + " | ".join(short[w] for w in names) + " |", "|---|---|" + "---|" * len(names)]
    cell = lambda v: f"{v[0]} / {v[1]:.1f} s / {v[2]:.1f} s"  # noqa: E731
    for r in rows:
        ranked = sorted(r["groups"].items(), key=lambda kv: -sum(v[1] + v[2] for v in kv[1].values()))
        for g, per in ranked[:TOP]:
            md.append(f"| {r['phase']} | `{g}` | " + " | ".join(cell(per[w]) for w in names) + " |")
        if len(ranked) > TOP:
            rest = {w: [sum(per[w][i] for _, per in ranked[TOP:]) for i in range(3)] for w in names}
            md.append(f"| {r['phase']} | other ({len(ranked) - TOP} groups) | " + " | ".join(cell(rest[w]) for w in names) + " |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--dates", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=1024, help="cube chunk size in px (default 1024, the site default)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work-chunk", type=int, help="the analysis's work chunk edge in px (default: the analysis's own)")
    ap.add_argument("--out", default="scaleout-balance")
    ap.add_argument("--co-runner", choices=("stream", "sort"),
                    help="run the CPU probe's memory stream (or in-cache sort) in a process beside the measured work")
    ap.add_argument("--dask-worker-env", action="store_true",
                    help="start the workers with dask's default environment instead of sitewatch's (flows.dask_env.WORKER_MALLOC_ENV)")
    a = ap.parse_args(argv)
    if a.dates < 2 or a.workers < 1:
        raise SystemExit(f"--dates got {a.dates!r} and --workers {a.workers!r}; expected dates >= 2 and workers >= 1")
    from distributed import Client, LocalCluster, get_task_stream

    from flows.dask_env import local_cluster

    from . import _cpu_probe

    import sitewatch.analysis as analysis

    from .scaleout import monitor_work, vm_hwm_bytes

    phases: list[tuple[str, float, float]] = []
    real = analysis.analyse_slot

    def timed(cube, index, *args, **kw):  # noqa: ANN001, ANN202 (wraps analyse_slot as the benchmark calls it)
        t0 = time.time()
        try:
            return real(cube, index, *args, **kw)
        finally:
            phases.append((f"date {len(phases)}", t0, time.time()))

    with tempfile.TemporaryDirectory(prefix="sitewatch-balance-") as d:
        series, refs = write_site(f"{d}/site", a.size, a.dates)
        warm_series, warm_refs = write_site(f"{d}/warm", max(192, min(a.size, 2 * a.chunk)), 3, seed=12)
        with (LocalCluster if a.dask_worker_env else local_cluster)(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                          host="127.0.0.1") as cluster, Client(cluster) as client:
            monitor_work(f"{d}/warm.zarr", warm_series.grid, warm_refs, a.chunk)  # imports, numba: not measured
            analysis.analyse_slot = timed
            try:
                t0 = time.time()
                with (_cpu_probe.co_runner(a.co_runner) if a.co_runner else contextlib.nullcontext({})) as co, \
                        get_task_stream() as ts:
                    monitor_work(f"{d}/cube.zarr", series.grid, refs, a.chunk, a.work_chunk)
                peaks = sorted(client.run(vm_hwm_bytes).values())
            finally:
                analysis.analyse_slot = real
    phases.insert(0, ("ingest", t0, phases[0][1] if phases else time.time()))
    rows = summarise(ts.data, phases)
    write_report(str(OUT), a.out,
                 {"size": a.size, "dates": a.dates, "chunk": a.chunk, "workers": a.workers, "work_chunk": a.work_chunk,
                  "dask_worker_env": a.dask_worker_env, "co_runner": co or None, "peak_rss_per_worker_bytes": peaks, "phases": rows},
                 report_md(a.size, a.dates, a.chunk, a.workers, rows, a.work_chunk, peaks, a.dask_worker_env, co or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
