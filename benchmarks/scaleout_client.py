"""Where the client process's CPU goes while the analysis runs on a Dask cluster.

    python -m benchmarks.scaleout_client [--size 1024] [--dates 6] [--chunk 512] [--workers 2] [--graphs]

Writes a synthetic site (``scaleout.write_site``), ingests it on a ``LocalCluster`` (processes, 1
thread per worker) and runs ``analysis.analyse_slot`` date by date, measuring per date: wall time,
the client process's CPU (all threads), its main thread's CPU (graph building, the per-date fits,
objects, commits), the workers' CPU, the dask graphs and tasks the scheduler received (a
scheduler plugin; the scheduler runs in this process, on its IO loop) and the client's peak RSS
(reset after the synthetic scenes are written, where Linux allows).
At the end: CPU by thread name for the whole analysis, and with ``--graphs`` every graph with the
sitewatch call that submitted it and its most frequent task names. The 1-minute load average is
recorded: the machine is shared. Report: benchmarks/results/scaleout-client-<size>-<chunk>.md/.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .scaleout import OUT, cpu_seconds, load_average, thread_cpu_seconds, vm_hwm_bytes, write_site


def _caller() -> str:
    frames = [f for f in traceback.extract_stack() if "/sitewatch/" in f.filename]
    return " < ".join(f"{f.name}:{f.lineno}" for f in frames[::-1][:3])


def measure(size: int, dates: int, chunk: int, workers: int, workdir: str) -> dict[str, Any]:
    import distributed.client as dclient
    from dask.utils import key_split
    from distributed import Client

    from flows.dask_env import local_cluster  # workers started as sitewatch starts its own
    from distributed.diagnostics.plugin import SchedulerPlugin

    from sitewatch.analysis import AnalysisParams, analyse_slot
    from sitewatch.io import cube as cube_io
    from sitewatch.io import scenes as scene_io
    from sitewatch.synthetic import BANDS

    callers: list[str] = []
    original = dclient.Client._graph_to_futures

    def graph_to_futures(self, *args, **kw):  # noqa: ANN001, ANN202
        callers.append(_caller())
        return original(self, *args, **kw)

    class Graphs(SchedulerPlugin):
        def __init__(self) -> None:
            self.log: list[collections.Counter] = []

        def update_graph(self, scheduler, *, tasks=None, **kw) -> None:  # noqa: ANN001
            self.log.append(collections.Counter(key_split(k) for k in (tasks or ())))

    series, refs = write_site(f"{workdir}/site", size, dates)
    try:  # the peak RSS from here on: generating the synthetic scenes in this process is not the analysis
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    grid, cube = series.grid, f"{workdir}/cube.zarr"
    dclient.Client._graph_to_futures = graph_to_futures
    try:
        with local_cluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit="8GB",
                          dashboard_address=":0", host="127.0.0.1") as cluster, Client(cluster) as client:
            graphs = Graphs()
            cluster.scheduler.add_plugin(graphs, name="sitewatch-graphs")
            slots = cube_io.extend(cube, grid, BANDS, [(r.scene_id, r.datetime) for r in refs], chunk=chunk)

            def ingest(ref):  # noqa: ANN001, ANN202
                ds = scene_io.read_scene(ref, grid, BANDS, chunk)
                return slots[ref.scene_id], cube_io.write_scene_slice(cube, slots[ref.scene_id], ds, commit_slot=False)

            with ThreadPoolExecutor(4) as pool:
                written = list(pool.map(ingest, refs))
            cube_io.commit(cube, {i: {"valid_fraction": vf, "ingested": True} for i, vf in written})
            pending = sorted((s for s in cube_io.slots(cube) if s.ingested and not s.analysed), key=lambda s: s.time)
            rows, digest = [], []
            threads0, n_graphs0, n_callers0 = thread_cpu_seconds(), len(graphs.log), len(callers)
            load_before = load_average()
            for s in pending:
                t, p, m = time.perf_counter(), cpu_seconds(), time.thread_time()
                w, g = sum(client.run(cpu_seconds).values()), len(graphs.log)
                r = analyse_slot(cube, s.index, grid, BANDS, AnalysisParams())
                rows.append({"wall_s": time.perf_counter() - t, "client_cpu_s": cpu_seconds() - p, "main_cpu_s": time.thread_time() - m,
                             "worker_cpu_s": sum(client.run(cpu_seconds).values()) - w, "graphs": len(graphs.log) - g,
                             "tasks": sum(sum(c.values()) for c in graphs.log[g:]), "state": r.change_state,
                             "objects": len(r.detections), "client_peak_rss_mib": vm_hwm_bytes() // 2**20})
                digest.append([round(float(r.cloud_fraction), 6), r.change_state,
                               [[d.area_m2, round(d.score_mean, 4), list(d.bbox_pixels), d.near_cloud_px, d.delta_ndvi] for d in r.detections]])
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
            threads1 = thread_cpu_seconds()
            peaks = sorted(v // 2**20 for v in client.run(vm_hwm_bytes).values())
            submitted = [{"tasks": sum(c.values()), "caller": who, "top": c.most_common(6)}
                         for who, c in zip(callers[n_callers0:], graphs.log[n_graphs0:])]
    finally:
        dclient.Client._graph_to_futures = original
    by_thread = {k: round(v - threads0.get(k, 0.0), 2) for k, v in threads1.items() if v - threads0.get(k, 0.0) >= 0.05}
    return {"size": size, "dates": dates, "chunk": chunk, "workers": workers, "rows": rows, "threads_cpu_s": by_thread,
            "worker_peak_rss_mib": peaks, "graphs": submitted, "digest": digest, "load_before": load_before,
            "load_after": load_average(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown(res: dict[str, Any], with_graphs: bool) -> str:
    rows = res["rows"]
    tot = {k: sum(r[k] for r in rows) for k in ("wall_s", "client_cpu_s", "main_cpu_s", "worker_cpu_s", "graphs", "tasks")}
    md = [f"# Client-side cost of analyse_slot: {res['size']} x {res['size']} px, chunks {res['chunk']}, {res['dates']} dates, "
          f"{res['workers']} worker process(es)", "",
          f"{res['date']}; 1-minute load average {res['load_before']:.2f} before, {res['load_after']:.2f} after (2 cores, shared).", "",
          "| date | state | wall | client CPU (main thread) | worker CPU | graphs | tasks | client peak RSS |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        md.append(f"| {i} | {r['state']} | {r['wall_s']:.1f} s | {r['client_cpu_s']:.1f} s ({r['main_cpu_s']:.1f} s) | "
                  f"{r['worker_cpu_s']:.1f} s | {r['graphs']} | {r['tasks']:,} | {r['client_peak_rss_mib']} MiB |")
    md.append(f"| all | | {tot['wall_s']:.1f} s | {tot['client_cpu_s']:.1f} s ({tot['main_cpu_s']:.1f} s) | {tot['worker_cpu_s']:.1f} s | "
              f"{tot['graphs']} | {tot['tasks']:,} | |")
    md += ["", f"Client CPU / worker CPU: {tot['client_cpu_s'] / max(tot['worker_cpu_s'], 1e-9):.2f}. Worker peak RSS: "
           f"{', '.join(f'{p} MiB' for p in res['worker_peak_rss_mib'])}.", "",
           "Client CPU by thread over the analysis: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                               sorted(res["threads_cpu_s"].items(), key=lambda kv: -kv[1])) + "."]
    if with_graphs:
        md += ["", "| tasks | submitted by | most frequent task names |", "|---|---|---|"]
        md += [f"| {g['tasks']} | `{g['caller']}` | {', '.join(f'{k} {v}' for k, v in g['top'])} |" for g in res["graphs"]]
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--dates", type=int, default=6)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--graphs", action="store_true", help="list every graph in the report")
    ap.add_argument("--results-dir", default=str(OUT))
    a = ap.parse_args(argv)
    if a.dates < 2 or a.size < 128 or a.workers < 1:
        raise SystemExit(f"got --size {a.size!r}, --dates {a.dates!r}, --workers {a.workers!r}; expected >= 128 px, >= 2 dates, >= 1 worker")
    with tempfile.TemporaryDirectory(prefix="sitewatch-client-") as d:
        res = measure(a.size, a.dates, a.chunk, a.workers, d)
    out = Path(a.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"scaleout-client-{a.size}-{a.chunk}"
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    md = markdown(res, a.graphs)
    (out / f"{name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
