"""Time per stage of the pipeline (library level, no Prefect) on the demo-sized site.

    python -m benchmarks.speed [--size 1024] [--dates 24]

Reports scene writing (COG + STAC), ingest (lazy read + region write) and analysis (baseline,
masks, normalisation, change, objects, derived-layer write) per scene, bytes of the cube, and
the process peak RSS. Writes benchmarks/results/speed.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from sitewatch.synthetic import SyntheticSpec

from ._site import build

OUT = Path(__file__).resolve().parent / "results"


def _du(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--dates", type=int, default=24)
    ap.add_argument("--chunk", type=int, default=512)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        series, cube, results, tm = build(d, SyntheticSpec(width=a.size, height=a.size, n_dates=a.dates, seed=0), chunk=a.chunk)
        total = time.perf_counter() - t0
        cube_bytes = _du(cube)
        scene_bytes = _du(f"{d}/scenes")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {
        "size": a.size, "dates": a.dates, "chunk": a.chunk, "cpus": os.cpu_count(),
        "write_scenes_s": tm.write_scenes, "ingest_s_per_scene": float(np.mean(tm.ingest)),
        "analyse_s_per_scene": float(np.mean(tm.analyse)), "analyse_s_first_5": float(np.mean(tm.analyse[:5])),
        "analyse_s_last_5": float(np.mean(tm.analyse[-5:])), "total_s": total,
        "cube_mb": cube_bytes / 1e6, "scenes_mb": scene_bytes / 1e6, "peak_rss_mb": peak_mb,
        "megapixels_per_s_analyse": a.size * a.size / 1e6 / float(np.mean(tm.analyse)),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (OUT / "speed.json").write_text(json.dumps({"meta": meta, "row": row}, indent=2))
    md = [f"# Pipeline stage times ({a.size} x {a.size} px, {a.dates} dates, chunks {a.chunk})", "",
          f"{meta['date']}, {meta['machine']}, Python {meta['python']}; library calls with dask's threaded scheduler (no Prefect).", "",
          "| stage | value |", "|---|---|",
          f"| write synthetic scenes (COG + STAC), all dates | {row['write_scenes_s']:.1f} s |",
          f"| ingest per scene (lazy COG read + region write) | {row['ingest_s_per_scene']:.2f} s |",
          f"| analyse per scene (baseline, masks, change, objects, write) | {row['analyse_s_per_scene']:.2f} s ({row['megapixels_per_s_analyse']:.2f} Mpx/s) |",
          f"| analyse per scene, first 5 / last 5 dates | {row['analyse_s_first_5']:.2f} s / {row['analyse_s_last_5']:.2f} s |",
          f"| total | {row['total_s']:.1f} s |",
          f"| cube size on disk | {row['cube_mb']:.1f} MB (scenes: {row['scenes_mb']:.1f} MB) |",
          f"| peak RSS of the process | {row['peak_rss_mb']:.0f} MB |"]
    (OUT / "speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
