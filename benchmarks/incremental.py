"""Incremental baseline: does analysing scene 60 cost what scene 10 did?

    python -m benchmarks.incremental [--size 1024] [--chunk 512] [--scenes 60] [--marks 10,60]

Ingests ``--scenes`` synthetic scenes (sitewatch.synthetic, the bands written straight into a
fresh local cube: the ingest is not what is measured) and analyses them in time order with
``analyse_slot``, the way the monitor flow does, so that the baseline state
(``cube.baseline.zarr``) is folded scene by scene. For the scenes N-4..N around each mark, the
slot is first analysed with ``use_state=False`` (the baseline rebuilt from the cube's last
3 W analysed scenes: the path without a state), then again with the state (the timing
that counts, and the run that folds the scene into the state). Per run it records wall time
and the bytes the process read and wrote (``/proc/self/io`` rchar/wchar: every read() call,
page cache hits included; the dask threaded scheduler keeps all reads in this process), and
it compares the two runs' change scores (identical while the history fits in 3 W scenes).

Writes benchmarks/results/incremental.md and .json (machine, load average, commit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from sitewatch.analysis import AnalysisParams, analyse_slot
from sitewatch.baseline_source import REBUILD_SCENES_PER_WINDOW
from sitewatch.io import cube as cube_io
from sitewatch.synthetic import BANDS, SyntheticSpec, generate_series

OUT = Path(__file__).resolve().parent / "results"
SPAN = 5  # scenes N-4..N per mark


def io_counters() -> tuple[int, int]:
    """(rchar, wchar) of this process: bytes passed to read() / write() calls."""
    vals = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            vals[k] = int(v)
    return vals["rchar"], vals["wchar"]


def timed(fn):
    """``fn()``, its wall time, its CPU time (this process, all threads: less sensitive than wall
    time to other jobs on a shared machine) and the bytes read and written."""
    r0, w0 = io_counters()
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    r1, w1 = io_counters()
    return out, dt, cpu, r1 - r0, w1 - w0


def change_score(cube_url: str, index: int) -> np.ndarray:
    ds = xr.open_zarr(cube_url, mask_and_scale=False, consolidated=False)
    out = ds["change_score"].isel(time=index).values.copy()
    ds.close()
    return out


def commit_id() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def run(size: int, chunk: int, n: int, marks: list[int], workdir: str) -> dict:
    series = generate_series(SyntheticSpec(width=size, height=size, n_dates=n, seed=7))
    grid = series.grid
    cube_url = f"{workdir}/site/cube.zarr"
    params = AnalysisParams()
    t = time.perf_counter()
    slots = cube_io.extend(cube_url, grid, BANDS, [(series.scene(i).scene_id, series.scene(i).datetime) for i in range(n)], chunk=chunk)
    order = sorted(range(n), key=lambda i: series.scene(i).datetime)
    for i in order:
        sc = series.scene(i)
        ds = xr.Dataset({b: (("y", "x"), sc.bands[k]) for k, b in enumerate(BANDS)} | {"valid": (("y", "x"), sc.valid)})
        cube_io.write_scene_slice(cube_url, slots[sc.scene_id], ds)
    ingest_s = time.perf_counter() - t
    print(f"ingested {n} scenes of {size} x {size} px in {ingest_s:.1f} s", flush=True)
    wanted = {m - k for m in marks for k in range(SPAN)}
    rows = []
    for pos, i in enumerate(order, start=1):  # pos = N: the Nth scene, N - 1 analysed before it
        index = slots[series.scene(i).scene_id]
        row: dict = {"N": pos, "scene_id": series.scene(i).scene_id}
        if pos in wanted:
            res, dt, cpu, rb, wb = timed(lambda: analyse_slot(cube_url, index, grid, BANDS, params, use_state=False))
            rebuilt_score = change_score(cube_url, index)
            row["rebuild"] = {"time_s": dt, "cpu_s": cpu, "read_bytes": rb, "written_bytes": wb, "baseline_scenes": res.n_baseline_scenes,
                              "source": res.baseline_source}
        res, dt, cpu, rb, wb = timed(lambda: analyse_slot(cube_url, index, grid, BANDS, params))
        row["state"] = {"time_s": dt, "cpu_s": cpu, "read_bytes": rb, "written_bytes": wb, "baseline_scenes": res.n_baseline_scenes,
                        "source": res.baseline_source, "note": res.baseline_note}
        if pos in wanted:
            s = change_score(cube_url, index)
            same = (s == rebuilt_score) | (np.isnan(s) & np.isnan(rebuilt_score))
            row["differing_score_pixels"] = int((~same).sum())
        rows.append(row)
        print(f"N={pos:3d} state {row['state']['time_s']:.2f} s, cpu {row['state']['cpu_s']:.2f} s ({res.baseline_source}, {res.n_baseline_scenes} scenes)"
              + (f", rebuild {row['rebuild']['time_s']:.2f} s ({row['rebuild']['baseline_scenes']} scenes), "
                 f"{row['differing_score_pixels']} px differ" if "rebuild" in row else ""), flush=True)
    return {"rows": rows, "ingest_s": ingest_s}


def summarise(rows: list[dict], marks: list[int]) -> dict:
    out = {}
    by_n = {r["N"]: r for r in rows}
    for m in marks:
        sel = [by_n[m - k] for k in range(SPAN) if (m - k) in by_n]
        out[m] = {
            path: {
                "time_s": float(np.median([r[path]["time_s"] for r in sel])),
                "cpu_s": float(np.median([r[path]["cpu_s"] for r in sel])),
                "read_mb": float(np.median([r[path]["read_bytes"] for r in sel])) / 1e6,
                "written_mb": float(np.median([r[path]["written_bytes"] for r in sel])) / 1e6,
                "baseline_scenes": [r[path]["baseline_scenes"] for r in sel],
            } for path in ("state", "rebuild")
        }
        out[m]["differing_score_pixels"] = [r["differing_score_pixels"] for r in sel]
        out[m]["scenes"] = [r["N"] for r in sel]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--marks", default="10,60")
    ap.add_argument("--workers", type=int, default=2, help="dask threads")
    ap.add_argument("--out", default=str(OUT / "incremental"))
    a = ap.parse_args()
    marks = [int(m) for m in a.marks.split(",")]
    if not all(SPAN <= m <= a.scenes for m in marks):
        raise SystemExit(f"--marks got {marks!r}; expected each within {SPAN}..{a.scenes}")
    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sw-incr-") as tmp, dask.config.set(scheduler="threads", num_workers=a.workers):
        result = run(a.size, a.chunk, a.scenes, marks, tmp)
    total = time.perf_counter() - t0
    load1 = os.getloadavg()
    s = summarise(result["rows"], marks)
    lo, hi = marks[0], marks[-1]
    ratio = s[hi]["state"]["time_s"] / s[lo]["state"]["time_s"]
    ratio_rebuild = s[hi]["rebuild"]["time_s"] / s[lo]["rebuild"]["time_s"]
    ratio_cpu = s[hi]["state"]["cpu_s"] / s[lo]["state"]["cpu_s"]
    ratio_cpu_rebuild = s[hi]["rebuild"]["cpu_s"] / s[lo]["rebuild"]["cpu_s"]
    window = AnalysisParams().baseline.window
    meta = {
        "started": started, "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before": load0, "load_average_after": load1, "commit": commit_id(),
        "size": a.size, "chunk": a.chunk, "scenes": a.scenes, "bands": list(BANDS), "window": window,
        "rebuild_scenes": REBUILD_SCENES_PER_WINDOW * window, "dask": f"threaded scheduler, {a.workers} threads",
        "total_s": total, "ingest_s": result["ingest_s"],
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": s, "ratio_state": ratio,
                                                     "ratio_rebuild": ratio_rebuild, "ratio_cpu_state": ratio_cpu,
                                                     "ratio_cpu_rebuild": ratio_cpu_rebuild, "rows": result["rows"]}, indent=1))
    lines = [
        f"# Incremental baseline: time to analyse scene N ({a.size} x {a.size} px, {len(BANDS)} bands, chunks {a.chunk}, window {window})",
        "",
        f"{started}, {meta['machine']}; load average (1, 5, 15 min) {tuple(round(x, 2) for x in load0)} before, "
        f"{tuple(round(x, 2) for x in load1)} after; commit {meta['commit']}; {meta['dask']}, local store; "
        f"`python -m benchmarks.incremental --size {a.size} --chunk {a.chunk} --scenes {a.scenes} --marks {a.marks}` "
        f"({total / 60:.1f} min in all).",
        "",
        f"`analyse_slot` of scene N (baseline, normalisation, masks, change, objects, region write, commit), median of "
        f"scenes N-{SPAN - 1}..N. *state*: the baseline from the stored state, then this scene folded into it. *rebuild*: "
        f"`use_state=False`, the baseline rebuilt from the cube's last {REBUILD_SCENES_PER_WINDOW} x {window} = "
        f"{REBUILD_SCENES_PER_WINDOW * window} analysed scenes (what every scene would cost without the state), run "
        "just before the state run of the same scene. Bytes: `/proc/self/io` rchar/wchar of the process (read()/write() "
        "calls, page-cache hits included).",
        "",
        "| N | path | wall time | CPU time | read | written | scenes behind the baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in marks:
        for path in ("state", "rebuild"):
            v = s[m][path]
            lines.append(f"| {m} | {path} | {v['time_s']:.2f} s | {v['cpu_s']:.2f} s | {v['read_mb']:.0f} MB | {v['written_mb']:.0f} MB | "
                         f"{min(v['baseline_scenes'])}-{max(v['baseline_scenes'])} |")
    lines += [
        "",
        f"**state: t(N={hi}) / t(N={lo}) = {ratio:.2f}** in wall time (target <= 1.3), {ratio_cpu:.2f} in CPU time; "
        f"rebuild: {ratio_rebuild:.2f} wall, {ratio_cpu_rebuild:.2f} CPU.",
        "",
        f"Change scores, state run vs rebuild run of the same scene, pixels that differ: "
        + "; ".join(f"N={m}: {s[m]['differing_score_pixels']}" for m in marks)
        + f" (of {a.size * a.size}). Up to {REBUILD_SCENES_PER_WINDOW * window + 1} scenes the two baselines hold the "
        "same observations; later, a pixel with fewer than W clear observations in the rebuild's scenes has older "
        "ones in the state.",
        "",
        f"Ingest of the {a.scenes} scenes (not measured above): {result['ingest_s']:.0f} s.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
