"""The ``sitewatch`` command.

    sitewatch demo  --workdir DIR          synthetic Khmeimim scenes -> monitor flow -> summary
    sitewatch run   --config sites.yaml    run the monitor flow for every site in a config file
    sitewatch serve --config sites.yaml    serve scheduled deployments (needs a Prefect server)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _quiet_env() -> None:
    # Before Prefect is imported: no telemetry (it logs 'database is locked' and waits at exit
    # on a closed network), and keep Dask's INFO logs out of the run log.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_DISTRIBUTED_LEVEL", "WARNING")
    import logging

    logging.getLogger("distributed").setLevel(logging.WARNING)
    from sitewatch.io.store import configure_gdal_s3_from_env

    configure_gdal_s3_from_env()


def _say(msg: str) -> None:
    print(f"[sitewatch {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _run_site(cfg) -> tuple[dict[str, Any], str | None]:
    from flows.monitor import monitor_site

    state = monitor_site(cfg, return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        return {"site": cfg.name, "error": f"{type(data).__name__}: {data}"}, f"{type(data).__name__}: {data}"
    return data, (None if state.is_completed() else state.message)


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n=== sitewatch summary: {summary.get('site')} ===")
    if "error" in summary and "cube" not in summary:
        print(f"run failed: {summary['error']}")
        return
    print(f"scenes ingested: {len(summary['scenes_ingested'])}")
    if summary["scenes_analysed"]:
        print("cloud/shadow fraction per date:")
        for s in summary["scenes_analysed"]:
            bar = "#" * int(round(20 * (s["cloud_fraction"] if s["cloud_fraction"] == s["cloud_fraction"] else 0)))
            cloud = "  (not observed)" if s["cloud_fraction"] != s["cloud_fraction"] else f"{s['cloud_fraction']:6.1%} {bar}"
            print(f"  {s['time'][:10]}  {s['scene_id']:<24} valid {s['valid_fraction']:6.1%}  cloud {cloud}")
    else:
        print("no new scenes: nothing analysed")
    print(f"alerts raised: {len(summary['new_alert_ids'])} new, {len(summary['updated_alert_ids'])} updated, {summary['open_alerts']} open")
    for a in summary["alerts"]:
        tag = "NEW" if a["id"] in summary["new_alert_ids"] else "upd"
        print(f"  [{tag}] {a['id']}  first seen {a['first_seen']}  {a['area_m2']:>9,.0f} m2  "
              f"({a['lon']:.5f}, {a['lat']:.5f})  score {a['score_max']:.1f}  {a['description']}")
    for r in summary["scenes_rejected"]:
        print(f"  REJECTED {r['scene_id']}: {r['error']}")
    quarantined = summary.get("scenes_quarantined") or []
    if quarantined:
        print(f"quarantine: {len(quarantined)} scene(s) skipped, retried on the next run ({summary.get('quarantine', '')})")
        for q in quarantined:
            print(f"  {q['scene_id']:<24} {q['attempts']} attempt(s) since {q['first_attempt']}  {q['object']}")
    print(f"cube:       {summary['cube']}")
    print(f"alert feed: {summary['alert_feed']}")
    print(f"pictures:   {summary['images']}")


def cmd_demo(args: argparse.Namespace) -> int:
    from sitewatch.demo import demo_site_config, write_synthetic_scenes
    from sitewatch.io import store
    from sitewatch.synthetic import SyntheticSpec, generate_series

    workdir = Path(args.workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    store_url = store.normalise_url(args.store or str(workdir / "store"))
    if args.real:
        return _demo_real(args, workdir, store_url)
    source = store.normalise_url(args.source or str(workdir / "scenes"))
    spec = SyntheticSpec(width=args.size, height=args.size, n_dates=args.dates, seed=args.seed)
    series = generate_series(spec)
    _say(f"demo site: Khmeimim air base ({spec.lat:.2f} N {spec.lon:.2f} E), {spec.width} x {spec.height} px at "
         f"{spec.resolution:g} m in {spec.crs}, {spec.n_dates} dates")
    _say(f"writing synthetic scenes (COG + STAC) to {source}")
    write_synthetic_scenes(series, source, progress=lambda k, n, url: _say(f"  scene {k}/{n} ready: {url.rsplit('/', 1)[-1]}"))
    (workdir / "truth.json").write_text(json.dumps({
        "events": [{**e.__dict__, "date": e.date.isoformat()} for e in series.events],
        "note": "ground truth of the synthetic demo: change events with pixel bboxes (row0, col0, row1, col1)",
    }, indent=2, default=str))
    cfg = demo_site_config(series, source, store_url, min_alert_area_m2=args.min_area)
    _say(f"running the monitor flow for site {cfg.name!r} (Prefect + Dask)")
    t0 = time.time()
    summary, err = _run_site(cfg)
    return _finish_demo(workdir, summary, err, t0)


def _finish_demo(workdir: Path, summary: dict[str, Any], err: str | None, t0: float) -> int:
    _say(f"monitor flow finished in {time.time() - t0:.1f} s" + (f" with errors: {err}" if err else ""))
    print_summary(summary)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"summary:    {workdir / 'summary.json'}")
    return 1 if err else 0


def _demo_real(args: argparse.Namespace, workdir: Path, store_url: str) -> int:
    """The same pipeline on real data shipped with sitewatch: 105 Landsat 5/7 scenes (Colorado)."""
    from sitewatch.io import store
    from sitewatch.realdata import COLORADO, colorado_site_config

    source = store.normalise_url(args.source) if args.source else str(COLORADO)
    cfg = colorado_site_config(store_url, source=source)
    _say(f"real-data demo: Landsat 5 TM / 7 ETM+ time series, Colorado (40.29 N 106.91 W), 105 dates 2008-2013, "
         f"61 x 61 px at 30 m, Fmask as the cloud/shadow mask; scenes from {source}")
    _say(f"running the monitor flow for site {cfg.name!r} (Prefect + Dask)")
    t0 = time.time()
    summary, err = _run_site(cfg)
    return _finish_demo(workdir, summary, err, t0)


def _load_sites(path: str):
    """The validated sites of a config file, or None after printing the error (naming the field)."""
    from sitewatch.config import ConfigError, load_sites

    try:
        return load_sites(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    sites = _load_sites(args.config)
    if sites is None:
        return 2
    if args.site:
        sites = [s for s in sites if s.name in set(args.site)]
        if not sites:
            print(f"error: no site named {args.site!r} in {args.config}", file=sys.stderr)
            return 2
    rc = 0
    out = []
    for cfg in sites:
        _say(f"monitoring site {cfg.name!r}")
        summary, err = _run_site(cfg)
        print_summary(summary)
        out.append(summary)
        rc = rc or (1 if err else 0)
    if args.summary:
        Path(args.summary).write_text(json.dumps(out, indent=2, default=str))
    return rc


def cmd_serve(args: argparse.Namespace) -> int:
    sites = _load_sites(args.config)
    if sites is None:
        return 2
    from flows.deployments import serve_sites

    if not os.environ.get("PREFECT_API_URL"):
        _say("PREFECT_API_URL is not set: start a server with `prefect server start` and export "
             "PREFECT_API_URL=http://127.0.0.1:4200/api, so scheduled and UI runs have somewhere to live")
    serve_sites(sites, cron=args.cron, name=args.name)
    return 0


def main(argv: list[str] | None = None) -> int:
    _quiet_env()
    p = argparse.ArgumentParser(prog="sitewatch", description="Watch sites in satellite imagery and raise alerts on change.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="generate a synthetic Khmeimim time series and run the whole pipeline on it")
    d.add_argument("--workdir", required=True, help="folder for scenes, cube, alerts and summary.json")
    d.add_argument("--size", type=int, default=1024, help="site width and height in pixels (default 1024)")
    d.add_argument("--dates", type=int, default=24, help="number of scene dates (default 24)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--min-area", type=float, default=1000.0, help="smallest alert area in m2 (default 1000)")
    d.add_argument("--real", action="store_true", help="run on the real Landsat Colorado time series shipped with "
                   "sitewatch (105 dates) instead of synthetic scenes")
    d.add_argument("--source", help="scene store URL (default DIR/scenes; e.g. s3://bucket/scenes; with --real: "
                   "a copy of the shipped sample)")
    d.add_argument("--store", help="output store URL (default DIR/store; e.g. s3://bucket/sitewatch)")
    d.set_defaults(fn=cmd_demo)
    r = sub.add_parser("run", help="run the monitor flow for the sites in a config file")
    r.add_argument("--config", required=True)
    r.add_argument("--site", action="append", help="only this site (repeatable)")
    r.add_argument("--summary", help="write the run summaries as JSON here")
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("serve", help="serve a scheduled monitor deployment per site (Prefect serve)")
    s.add_argument("--config", required=True)
    s.add_argument("--cron", default="0 */6 * * *", help="cron schedule (default every 6 hours)")
    s.add_argument("--name", default="scheduled", help="deployment name suffix")
    s.set_defaults(fn=cmd_serve)
    args = p.parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
