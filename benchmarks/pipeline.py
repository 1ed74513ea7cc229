"""Throughput against the I/O floor, peak memory against site size, on the same scenes.

    python -m benchmarks.pipeline [--sizes 1024 2048 4096] [--dates 6] [--chunk 512]
                                  [--cluster-sizes 1024] [--no-cluster] [--quick] [--allow-8192]

For each site size, synthetic scenes (sitewatch.synthetic, COGs + STAC items in a local folder)
are written once (not timed); then each measurement runs in a fresh Python process (its peak
memory is its own; a warm-up on a small site first, not measured, for imports and numba):

1. ``floor``: the I/O floor, the library's ingest and nothing else (scenes read lazily onto the
   site grid, one windowed COG decode per chunk, region-written into a new cube);
2. ``full``: the same ingest, then ``analysis.analyse_slot`` per date in time order (baseline,
   normalisation, masks, change, objects, derived-layer write) and the alert update (merge with
   clear views, chips, feed, STAC items): the monitor flow's work through the library, no Prefect;
3. ratio floor / full (goal >= 0.7);
4. ``hand``: a hand-written rasterio + numpy loop over whole scenes (benchmarks/_pipeline_handwritten.py);
5. peak RSS of the process and all its descendants (psutil, sampled every 100 ms) per size;
   growth from 1024^2 to 4096^2 px (goal <= 1.3x);
6. the scale-out benchmark's work (benchmarks/scaleout.run_config: ingest + analyse_slot) on a
   LocalCluster of 1 and of 2 worker processes x 1 thread, at ``--cluster-sizes``;
(``--what-if``: at the smallest size, the full pipeline as is and with zarr's
``array.write_empty_chunks`` set in that process, alternately, twice each: the cost of the
empty-chunk check the profile shows.)
7. per-stage breakdown: dask task time by stage (a dask callback on the threaded scheduler), the
   wall time of the library calls analyse_slot makes (wrapped from outside), and the number of
   dask tasks per run.

Writes benchmarks/results/pipeline.md, .json and pipeline-throughput.png, pipeline-memory.png
(``pipeline-quick.*`` for --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results"
MAX_SIZE_WITHOUT_FLAG = 4096


def write_sites(workdir: Path, sizes: list[int], dates: int, warm_size: int | None) -> dict[str, Any]:
    """Synthetic scenes per size under ``workdir/site-<size>`` (+ a warm-up site), with grid.json."""
    from ._pipeline_phases import save_grid
    from .scaleout import write_site

    out: dict[str, Any] = {"write_s": {}}
    todo = [(f"site-{s}", s, dates, 11) for s in sizes] + ([("warm", warm_size, 3, 12)] if warm_size else [])
    for name, size, n, seed in todo:
        d = workdir / name
        t = time.perf_counter()
        series, _ = write_site(str(d), size, n, seed=seed)
        save_grid(d, series.grid)
        out["write_s"][name] = time.perf_counter() - t
        print(f"wrote {n} scenes of {size} x {size} px in {out['write_s'][name]:.1f} s", flush=True)
    return out


def run_child(phase: str, site_dir: Path, warm_dir: Path | None, work: Path, chunk: int,
              profile_to: Path | None = None, default_malloc: bool = False, strip_px: int | None = None) -> dict[str, Any]:
    """Run one phase in a fresh Python process (under py-spy, writing ``profile_to``, when
    given); returns its measurements. The process starts as the ``sitewatch`` command starts
    (with ``flows.dask_env.WORKER_MALLOC_ENV``), or as Python starts by default (``default_malloc``)."""
    result = work.with_suffix(".json")
    prefix: list[str] = []
    if profile_to is not None:
        from ._pipeline_profile import RATE, py_spy

        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy); expected it next to this Python or on PATH")
        prefix = [exe, "record", "-r", str(RATE), "-f", "raw", "-o", str(profile_to), "--"]
    cmd = prefix + [sys.executable, "-m", "benchmarks.pipeline", "--child", phase, "--site-dir", str(site_dir),
           "--work", str(work), "--chunk", str(chunk), "--child-out", str(result)]
    if warm_dir is not None:
        cmd += ["--warm-dir", str(warm_dir)]
    if strip_px is not None:
        cmd += ["--strip-px", str(strip_px)]
    from flows.dask_env import WORKER_MALLOC_ENV

    env = {k: v for k, v in os.environ.items() if not (default_malloc and k in WORKER_MALLOC_ENV)}
    env.update({} if default_malloc else WORKER_MALLOC_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {phase} on {site_dir.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    r = json.loads(result.read_text())
    r["process_s"] = time.perf_counter() - t
    shutil.rmtree(work, ignore_errors=True)
    return r


def measure_what_if(work: Path, size: int, warm: Path | None, chunk: int, repeats: int = 2) -> list[dict[str, Any]]:
    """The full pipeline as is and with zarr's write_empty_chunks, alternately, ``repeats``
    times each, back to back (on a shared machine both then see about the same load)."""
    out = []
    for rep in range(repeats):
        for phase in ("full", "full-write-empty-chunks"):
            r = run_child(phase, work / f"site-{size}", warm, work / f"run-what-if-{phase}-{rep}", chunk)
            r["repeat"] = rep
            print(f"what-if {size} px {phase} #{rep}: {r['total_s']:.1f} s", flush=True)
            out.append(r)
    return out


def report_from(path: Path, results: Path, name: str) -> str:
    """The markdown and plots again from a report's JSON (no measuring)."""
    from ._pipeline_report import write_report

    d = json.loads(path.read_text())
    meta = {k: v for k, v in d["meta"].items() if k != "machine"}
    return write_report(results, name, meta, d["runs"], d.get("profile"), d.get("what_if") or [])


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096], help="site widths in px (default 1024 2048 4096)")
    ap.add_argument("--dates", type=int, default=6, help="dates per site (default 6)")
    ap.add_argument("--chunk", type=int, default=512, help="cube chunk size in px (default 512)")
    ap.add_argument("--cluster-sizes", type=int, nargs="*", default=None,
                    help="sizes run on LocalClusters of 1 and 2 workers (default: the smallest size)")
    ap.add_argument("--no-cluster", action="store_true", help="skip the LocalCluster runs")
    ap.add_argument("--default-malloc", action="store_true",
                    help="start each measured process with glibc's default malloc settings instead of the sitewatch "
                         "command's (flows.dask_env.WORKER_MALLOC_ENV)")
    ap.add_argument("--no-warmup", action="store_true", help="no warm-up site (times then include numba compilation)")
    ap.add_argument("--quick", action="store_true", help="smoke run: sizes 192 256, 2 dates, chunk 128, no warm-up")
    ap.add_argument("--allow-8192", action="store_true", help="allow sizes above 4096 (8192^2 px: long, several GB)")
    ap.add_argument("--streamed-sizes", type=int, nargs="*", default=[],
                    help="further sizes measured only as the I/O floor and the streamed full pipeline (no held run, "
                         "no hand-written loop: their memory follows the area), e.g. 8192 with --allow-8192")
    ap.add_argument("--strip-px", type=int, metavar="PX",
                    help="the streamed phases' strips: about PX^2 pixels each (AnalysisParams.streamed_chunk_px; "
                         "default: its default, 1024). Smaller strips: less memory, more tasks")
    ap.add_argument("--profile", type=int, metavar="SIZE",
                    help="also run the full pipeline at SIZE px under py-spy and report where the time goes")
    ap.add_argument("--what-if", action="store_true",
                    help="also run the full pipeline at the smallest size with zarr's write_empty_chunks set (what-if)")
    ap.add_argument("--report-from", metavar="JSON", help="only rewrite the markdown and plots from a report's JSON")
    ap.add_argument("--results-dir", default=str(OUT), help="where the report goes (default benchmarks/results)")
    ap.add_argument("--out", help="report name (default pipeline, or pipeline-quick with --quick)")
    ap.add_argument("--workdir", help="scratch folder, kept: scenes already written there are reused (default: a "
                    "temporary folder, removed at the end)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--site-dir", help=argparse.SUPPRESS)
    ap.add_argument("--warm-dir", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.sizes, a.dates, a.chunk, a.no_warmup = [192, 256], 2, 128, True
    if a.dates < 2:
        ap.error(f"--dates got {a.dates!r}; expected at least 2 (a date is analysed against the earlier ones)")
    for opt, sizes in (("--sizes", a.sizes), ("--streamed-sizes", a.streamed_sizes)):
        bad = [s for s in sizes if s < 192 or (s > MAX_SIZE_WITHOUT_FLAG and not a.allow_8192)]
        if bad:
            ap.error(f"{opt} got {bad!r}; expected 192..{MAX_SIZE_WITHOUT_FLAG} px (larger only with --allow-8192)")
    a.streamed_sizes = sorted(set(a.streamed_sizes) - set(a.sizes))
    if a.strip_px is not None and a.strip_px < 64:
        ap.error(f"--strip-px got {a.strip_px!r}; expected at least 64 px")
    if a.chunk < 64:
        ap.error(f"--chunk got {a.chunk!r}; expected at least 64 px")
    a.sizes = sorted(set(a.sizes))
    if a.profile is not None and a.profile not in a.sizes:
        ap.error(f"--profile got {a.profile!r}; expected one of --sizes {a.sizes!r}")
    if a.cluster_sizes is None:
        a.cluster_sizes = [] if a.no_cluster else a.sizes[:1]
    elif a.no_cluster:
        a.cluster_sizes = []
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.child:
        from ._pipeline_phases import run_phase

        r = run_phase(a.child, Path(a.site_dir), Path(a.warm_dir) if a.warm_dir else None, Path(a.work), a.chunk, a.strip_px)
        Path(a.child_out).write_text(json.dumps(r))
        return 0
    from ._pipeline_report import write_report
    from .scaleout import load_average

    if a.report_from:
        print(report_from(Path(a.report_from), Path(a.results_dir), a.out or Path(a.report_from).stem))
        return 0

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()
    if a.workdir:
        Path(a.workdir).mkdir(parents=True, exist_ok=True)
    tmp = a.workdir or tempfile.mkdtemp(prefix="sitewatch-pipeline-")
    work = Path(tmp)
    try:
        written = write_sites(work, sorted(set(a.sizes) | set(a.cluster_sizes) | set(a.streamed_sizes)), a.dates,
                              None if a.no_warmup else min(256, min(a.sizes)))
        warm = None if a.no_warmup else work / "warm"
        runs: list[dict[str, Any]] = []
        profile = None
        what_if: list[dict[str, Any]] = []

        def measure(plan: list[tuple[int, tuple[str, ...]]]) -> None:
            for size, phases in plan:
                for phase in phases:
                    r = run_child(phase, work / f"site-{size}", warm, work / f"run-{phase}-{size}", a.chunk,
                                  default_malloc=a.default_malloc, strip_px=a.strip_px if phase == "full-streamed" else None)
                    load = f", load {r['load_before']:.2f} -> {r['load_after']:.2f}" if "load_before" in r else ""
                    print(f"{size} px {phase}: {r['total_s']:.1f} s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB{load}",
                          flush=True)
                    runs.append(r)

        measure([(size, ("floor", "full", "full-streamed", "hand")) for size in a.sizes]
                + [(size, ("floor", "full-streamed")) for size in a.streamed_sizes])
        if a.what_if:
            what_if = measure_what_if(work, a.sizes[0], warm, a.chunk)
        measure([(size, ("cluster-1", "cluster-2")) for size in a.cluster_sizes])
        if a.profile is not None:
            raw = work / "profile-full.txt"
            r = run_child("full", work / f"site-{a.profile}", warm, work / f"run-profile-{a.profile}", a.chunk, profile_to=raw)
            from ._pipeline_profile import summarise

            profile = {"run": r, "summary": summarise(raw)}
            print(f"profiled full pipeline at {a.profile} px: {r['total_s']:.1f} s", flush=True)
    finally:
        if not a.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_start": list(load_start), "load_end": list(os.getloadavg()), "load_now": load_average(),
            "sizes": a.sizes, "streamed_sizes": a.streamed_sizes, "dates": a.dates, "chunk": a.chunk, "cluster_sizes": a.cluster_sizes,
            "warmup": not a.no_warmup, "write_scenes_s": written["write_s"], "quick": a.quick,
            "profile": a.profile, "what_if": a.what_if, "default_malloc": a.default_malloc, "strip_px": a.strip_px}
    name = a.out or ("pipeline-quick" if a.quick else "pipeline")
    md = write_report(Path(a.results_dir), name, meta, runs, profile, what_if)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
