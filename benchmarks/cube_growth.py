"""Incremental cost of the site cube: does adding the 100th scene cost what the 10th did?

    python -m benchmarks.cube_growth [--size 1024] [--scenes 100] [--chunk 1024]

Writes ``--scenes`` synthetic scenes (COG + STAC) to a local folder, then ingests them one at a
time into a fresh cube the way the monitor flow does (``extend`` allocates the slot, the scene
is read lazily and region-written, ``commit`` marks it ingested) and measures, for every scene:

* wall time of the three steps together;
* bytes written to the store (files created or changed, by size, from a listing of the store
  before and after; the listing is outside the timing).

It reports scene N = 10, 50 and 100 (the median of scenes N-4..N, to smooth out one-off
hiccups, and the single scene N) and the ratio time(100) / time(10) (target <= 1.3). The
cube starts with ``cube.CAPACITY`` slots, so the run crosses a capacity doubling; that scene
is listed separately. Writes benchmarks/results/cube_growth.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from sitewatch.demo import write_synthetic_scenes
from sitewatch.io import cube as cube_io
from sitewatch.io import discovery
from sitewatch.io import scenes as scene_io
from sitewatch.synthetic import BANDS, SyntheticSpec, generate_series

OUT = Path(__file__).resolve().parent / "results"
MARKS = (10, 50, 100)


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root``."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(bytes, files) created or changed between two listings."""
    changed = [k for k, v in after.items() if before.get(k) != v]
    return sum(after[k][0] for k in changed), len(changed)


def run(size: int, n: int, chunk: int, workdir: str) -> list[dict]:
    series = generate_series(SyntheticSpec(width=size, height=size, n_dates=n, seed=7))
    source = f"{workdir}/scenes"
    t = time.perf_counter()
    write_synthetic_scenes(series, source)
    print(f"wrote {n} scenes in {time.perf_counter() - t:.1f} s", flush=True)
    refs, problems = discovery.find_scenes(source)
    if problems:
        raise RuntimeError(problems)
    cube = Path(workdir) / "cube.zarr"
    rows = []
    for k, r in enumerate(sorted(refs, key=lambda r: r.datetime), start=1):
        before = listing(cube) if cube.exists() else {}
        t = time.perf_counter()
        slot = cube_io.extend(str(cube), series.grid, BANDS, [(r.scene_id, r.datetime)], chunk=chunk)[r.scene_id]
        cube_io.write_scene_slice(str(cube), slot, scene_io.read_scene(r, series.grid, BANDS, chunk), commit_slot=True)
        dt = time.perf_counter() - t
        nbytes, nfiles = written(before, listing(cube))
        capacity = cube_io._lengths(cube_io._group(str(cube), None))["time"]
        rows.append({"n": k, "seconds": dt, "bytes_written": nbytes, "files_written": nfiles, "capacity": capacity})
        if k in MARKS or k % 10 == 0:
            print(f"scene {k:4d}: {dt:.3f} s, {nbytes / 1e6:.2f} MB in {nfiles} files, capacity {capacity}", flush=True)
    return rows


def summarise(rows: list[dict], size: int, chunk: int) -> tuple[dict, str]:
    by_n = {r["n"]: r for r in rows}
    marks = [m for m in MARKS if m in by_n]
    stats = {}
    for m in marks:
        window = [by_n[i] for i in range(max(1, m - 4), m + 1)]
        stats[m] = {
            "median_s": float(np.median([w["seconds"] for w in window])),
            "single_s": by_n[m]["seconds"],
            "median_bytes": float(np.median([w["bytes_written"] for w in window])),
            "files": by_n[m]["files_written"],
        }
    growth = [r for r, prev in zip(rows[1:], rows) if r["capacity"] != prev["capacity"]]
    first, last = marks[0], marks[-1]
    ratio = stats[last]["median_s"] / stats[first]["median_s"]
    meta = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    md = [f"# Cube growth: cost of adding scene N ({size} x {size} px, {len(BANDS)} bands, chunks {chunk})", "",
          f"{meta['date']}, {meta['machine']}, Python {meta['python']}; library calls (extend + lazy read + region write + commit), "
          "dask threaded scheduler, local store.", "",
          "| scene N | time (median of N-4..N) | time of scene N | bytes written | files written |", "|---|---|---|---|---|"]
    for m in marks:
        s = stats[m]
        md.append(f"| {m} | {s['median_s']:.3f} s | {s['single_s']:.3f} s | {s['median_bytes'] / 1e6:.2f} MB | {s['files']} |")
    md += ["", f"**time({last}) / time({first}) = {ratio:.2f}** (target <= 1.3).", ""]
    for g in growth:
        md.append(f"Capacity doubled to {g['capacity']} slots at scene {g['n']}: {g['seconds']:.3f} s, "
                  f"{g['bytes_written'] / 1e6:.2f} MB in {g['files_written']} files (the per-time arrays are rewritten, one chunk each).")
    md.append("")
    md.append(f"Mean over all {len(rows)} scenes: {np.mean([r['seconds'] for r in rows]):.3f} s, "
              f"{np.mean([r['bytes_written'] for r in rows]) / 1e6:.2f} MB written per scene.")
    report = {"meta": meta, "size": size, "chunk": chunk, "marks": {str(k): v for k, v in stats.items()}, "ratio": ratio, "rows": rows}
    return report, "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=1024)
    a = ap.parse_args(argv)
    if a.scenes < 10:
        raise SystemExit(f"--scenes got {a.scenes!r}; expected at least 10")
    with tempfile.TemporaryDirectory() as d:
        rows = run(a.size, a.scenes, a.chunk, d)
    report, md = summarise(rows, a.size, a.chunk)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cube_growth.json").write_text(json.dumps(report, indent=2))
    (OUT / "cube_growth.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
