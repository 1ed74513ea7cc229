"""The measured phases of the pipeline benchmark, each run in a fresh Python process (so that
its peak memory is its own): ``floor`` (ingest only), ``full`` (ingest, analyse_slot per date,
alerts), ``full-streamed`` (the same with every site streamed through the scratch store:
``AnalysisParams(hold_max_bytes=0)``), ``full-write-empty-chunks`` (the same with zarr's ``array.write_empty_chunks`` set for
the whole process: a what-if for the zarr empty-chunk check the profile shows, the library
unchanged), ``hand`` (the hand-written rasterio + numpy loop) and ``cluster-<n>`` (the scale-out
benchmark's monitor work on a LocalCluster of n worker processes).

Library path throughout, no Prefect: the calls are those the monitor flow's tasks make
(flows/monitor.py -> tasks/scenes.py, tasks/analyse.py, tasks/alerts.py)."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ._pipeline_measure import CallTimer, PeakRSS, TaskTimer, peak_growth

PHASES = ("floor", "full", "full-streamed", "full-write-empty-chunks", "hand", "cluster-1", "cluster-2")

# library calls inside analyse_slot (looked up in sitewatch.analysis's namespace, or through the
# module objects it calls them on), timed from outside
ANALYSE_CALLS = {
    "baseline (slot_baseline: state read or rebuild)": "sitewatch.analysis:slot_baseline",
    "baseline (state_baseline: median/MAD graph)": "sitewatch.analysis:state_baseline",
    "masks (rough_obscured)": "sitewatch.analysis:rough_obscured",
    "change (fit_gain_offset)": "sitewatch.analysis:fit_gain_offset",
    "masks (masks graph)": "sitewatch.analysis:masks",
    "change (_change_state sums)": "sitewatch.analysis:_change_state",
    "change (change graph)": "sitewatch.analysis:change",
    "change (hysteresis on the persisted score)": "sitewatch.analysis:hysteresis",
    "objects (objects: labels + stats)": "sitewatch.analysis:objects",
    "objects (_object_windows: the objects' windows, one compute)": "sitewatch.analysis:_object_windows",
    "objects (_polygon)": "sitewatch.analysis:_polygon",
    "objects (_ndvi_delta)": "sitewatch.analysis:_ndvi_delta",
    "objects (objects file write)": "sitewatch.io.objects_file:write",
    "write (write_derived: masks+change compute and region write)": "sitewatch.io.cube:write_derived",
    "baseline (fold_slot: state update)": "sitewatch.analysis:fold_slot",
    "scratch (a streamed site's whole-site arrays written to the scratch store)": "sitewatch.io.scratch:Scratch.__call__",
}


def save_grid(site_dir: Path, grid: Any) -> None:
    (site_dir / "grid.json").write_text(json.dumps(grid.__dict__))


def load_site(site_dir: Path) -> tuple[Any, list[Any]]:
    """The site grid and its scene refs in time order, as written by pipeline.write_sites."""
    from sitewatch.grid import SiteGrid
    from sitewatch.io import discovery

    grid = SiteGrid(**json.loads((site_dir / "grid.json").read_text()))
    refs, problems = discovery.find_scenes(str(site_dir / "scenes"))
    if problems:
        raise RuntimeError(f"scenes under {site_dir}: {problems}")
    return grid, sorted(refs, key=lambda r: r.datetime)


def ingest(cube: str, grid: Any, refs: list[Any], chunk: int) -> dict[str, int]:
    """The monitor flow's ingest (prepare-cube, ingest-scene per scene concurrently, commit),
    as benchmarks/scaleout.monitor_work does it: returns scene id -> slot."""
    from sitewatch.io import cube as cube_io
    from sitewatch.io import scenes as scene_io
    from sitewatch.synthetic import BANDS

    slots = cube_io.extend(cube, grid, BANDS, [(r.scene_id, r.datetime) for r in refs], chunk=chunk)

    def one(ref: Any) -> tuple[int, float]:
        ds = scene_io.read_scene(ref, grid, BANDS, chunk)
        return slots[ref.scene_id], cube_io.write_scene_slice(cube, slots[ref.scene_id], ds, commit_slot=False)

    with ThreadPoolExecutor(max_workers=min(4, len(refs))) as pool:
        written = list(pool.map(one, refs))
    cube_io.commit(cube, {i: {"valid_fraction": vf, "ingested": True} for i, vf in written})
    return slots


def analyse(cube: str, grid: Any, streamed: bool = False, strip_px: int | None = None) -> list[Any]:
    """analyse_slot for every ingested, not yet analysed slot in time order (analyse-scene), with
    the default parameters, or with every site ``streamed`` (``hold_max_bytes=0``; small ones lazy too)
    in strips of about ``strip_px ** 2`` px (``AnalysisParams.streamed_chunk_px``; None: its default)."""
    from sitewatch.analysis import AnalysisParams, analyse_slot
    from sitewatch.io import cube as cube_io
    from sitewatch.synthetic import BANDS

    strips = {} if strip_px is None else {"streamed_chunk_px": strip_px}
    params = AnalysisParams(hold_max_bytes=0, eager_max_px=0, **strips) if streamed else AnalysisParams()
    pending = sorted((s for s in cube_io.slots(cube) if s.ingested and not s.analysed), key=lambda s: s.time)
    return [analyse_slot(cube, s.index, grid, BANDS, params) for s in pending]


def alerts(site: str, cube: str, alerts_root: str, results: list[Any]) -> dict[str, Any]:
    """The alert update of tasks/alerts.py (update-alerts, render-chips, publish-alerts) through
    the library: merge the detections into the feed's alerts with the clear views of open ones,
    before/after chips for new alerts, the GeoJSON feed and STAC items."""
    from sitewatch import alerts as alert_lib
    from sitewatch import observation, publish
    from sitewatch.io import cube as cube_io

    params = alert_lib.AlertParams()
    detections = [d for r in results for d in r.detections]
    scene_ids = [r.scene_id for r in results]
    existing = publish.read_feed(alerts_root)
    actions = publish.read_actions(alerts_root)
    analysed = [sl for sl in cube_io.slots(cube) if sl.ingested and sl.analysed]
    as_of = max((observation.iso(sl.time) for sl in analysed), default=None)
    tentative, _, _ = alert_lib.merge(site, existing, detections, actions=actions, params=params, cube_url=cube)
    views = []
    if any(a.is_open for a in tentative):
        views = observation.clear_views(cube_io.open_cube(cube), tentative, scene_ids, params.min_clear_fraction)
    merged, new_ids, updated = alert_lib.merge(site, existing, detections, views, actions, as_of=as_of, params=params, cube_url=cube)
    todo = [a for a in merged if a.id in new_ids or (a.is_open and not a.images.get("after"))]
    if todo:
        drawn = {a.id: a for a in publish.render_alert_chips(cube_io.open_cube(cube), todo, alerts_root)}
        merged = [drawn.get(a.id, a) for a in merged]
    publish.write_feed(alerts_root, site, merged)
    publish.write_stac_items(alerts_root, merged)
    return {"alerts": len(merged), "new": len(new_ids), "updated": len(updated), "detections": len(detections)}


def _full(work: Path, grid: Any, refs: list[Any], chunk: int, stages: dict[str, float], streamed: bool = False,
          strip_px: int | None = None) -> dict[str, Any]:
    cube, root = str(work / "cube.zarr"), str(work / "alerts")
    t = time.perf_counter()
    ingest(cube, grid, refs, chunk)
    stages["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    results = analyse(cube, grid, streamed, strip_px)
    stages["analyse"] = time.perf_counter() - t
    t = time.perf_counter()
    al = alerts("bench", cube, root, results)
    stages["alerts"] = time.perf_counter() - t
    return {"objects": sum(len(r.detections) for r in results), "change_states": [r.change_state for r in results],
            "cloud_fractions": [round(float(r.cloud_fraction), 6) for r in results], **al}


def run_phase(phase: str, site_dir: Path, warm_dir: Path | None, work: Path, chunk: int,
              strip_px: int | None = None) -> dict[str, Any]:
    """Run one phase on the site under ``site_dir`` (after the same work on ``warm_dir``, not
    measured, when given) and return its measurements."""
    if phase not in PHASES:
        raise ValueError(f"phase got {phase!r}; expected one of {PHASES!r}")
    from .scaleout import load_average

    grid, refs = load_site(site_dir)
    work.mkdir(parents=True, exist_ok=True)
    if phase == "full-write-empty-chunks":
        import zarr

        zarr.config.set({"array.write_empty_chunks": True})
    if phase.startswith("cluster-"):
        return _cluster(int(phase.split("-")[1]), site_dir, warm_dir, work, chunk)
    stages: dict[str, float] = {}

    def do(w: Path, g: Any, rs: list[Any], st: dict[str, float]) -> dict[str, Any]:
        if phase == "floor":
            t = time.perf_counter()
            ingest(str(w / "cube.zarr"), g, rs, chunk)
            st["ingest"] = time.perf_counter() - t
            return {}
        if phase.startswith("full"):
            return _full(w, g, rs, chunk, st, streamed=phase == "full-streamed", strip_px=strip_px)
        from sitewatch.synthetic import BANDS

        from ._pipeline_handwritten import run as hand_run

        t = time.perf_counter()
        out = hand_run([Path(r.item_href.removeprefix("file://")) for r in rs], BANDS, w / "out")
        st["hand"] = time.perf_counter() - t
        return {"objects": out["objects"]}

    warm_s = 0.0
    if warm_dir is not None:
        t = time.perf_counter()
        wg, wr = load_site(warm_dir)
        do(work / "warm", wg, wr, {})
        shutil.rmtree(work / "warm", ignore_errors=True)
        warm_s = time.perf_counter() - t
    timer = TaskTimer()
    calls = CallTimer(ANALYSE_CALLS if phase.startswith("full") else {})
    load_before = load_average()
    with PeakRSS() as mem, timer.threaded(), calls.active():
        t = time.perf_counter()
        extra = do(work, grid, refs, stages)
        total = time.perf_counter() - t
    return {"phase": phase, "size": grid.width, "dates": len(refs), "total_s": total, "stages_s": stages, "warmup_s": warm_s,
            "peak_rss_bytes": mem.peak, "start_rss_bytes": mem.start_rss, "rss_samples": mem.samples,
            "n_tasks": timer.n_tasks, "n_graphs": timer.n_graphs, "task_s_by_stage": timer.by_stage(),
            "top_tasks": timer.top_names(15), "call_s": dict(calls.seconds), "call_n": dict(calls.calls),
            "peak_growth_bytes": peak_growth(mem.rises, mem.start_rss, calls.spans),
            "load_before": load_before, "load_after": load_average(), **extra}


def _cluster(workers: int, site_dir: Path, warm_dir: Path | None, work: Path, chunk: int) -> dict[str, Any]:
    """benchmarks/scaleout.run_config on this site: its monitor work (ingest + analyse_slot, no
    alerts) on a LocalCluster of ``workers`` processes x 1 thread, with the peak RSS of this
    process and every worker process sampled."""
    from .scaleout import Config, run_config

    def site(d: Path) -> tuple[Any, list[Any]]:
        g, rs = load_site(d)
        return SimpleNamespace(grid=g), rs

    with PeakRSS() as mem:
        r = run_config(Config(workers), str(work), site(site_dir), None if warm_dir is None else site(warm_dir), chunk, "6GB")
    r.update(phase=f"cluster-{workers}", size=site(site_dir)[0].grid.width, peak_rss_bytes=mem.peak,
             start_rss_bytes=mem.start_rss)
    return r
