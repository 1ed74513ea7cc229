"""The ``sitewatch`` command.

    sitewatch demo  --workdir DIR          synthetic Khmeimim scenes -> monitor flow -> summary
    sitewatch run   --config sites.yaml    run the monitor flow for every site in a config file
    sitewatch serve --config sites.yaml    serve scheduled deployments (needs a Prefect server)
    sitewatch stack up|status|down         a local Prefect server + Dask cluster + S3 (moto)
    sitewatch site scenes --config sites.yaml --site NAME   the scenes in a site's cube

Exit codes: 0 ok; 1 a run failed (a site's flow ended Failed, or a stack did not start);
2 usage or configuration error (bad arguments, bad or missing sites file, unknown site).
"""

from __future__ import annotations

import argparse
import contextlib
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


@contextlib.contextmanager
def progress_reporter(label: str, line, stream=None, tty: bool | None = None):
    """A ``progress(k, n, *info)`` callback for long work: a live progress bar (rich) when
    ``stream`` (default stderr) is a terminal, else one line per step (``line(k, n, *info)``), so
    logs and scripts get plain text."""
    stream = stream or sys.stderr
    if not (stream.isatty() if tty is None else tty):
        yield lambda k, n, *info: _say(line(k, n, *info))
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(f"[sitewatch] {label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(file=stream, force_terminal=True)) as bar:
        task = bar.add_task(label, total=None)

        def tick(k: int, n: int, *info: Any) -> None:
            bar.update(task, completed=k, total=n)

        yield tick


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
        print(f"  [{tag}] {a['id']}  {a['status']:<12} conf {a.get('confidence', 0):.2f}  first seen {a['first_seen']}  {a['area_m2']:>9,.0f} m2  "
              f"({a['lon']:.5f}, {a['lat']:.5f})  score {a['score_max']:.1f}  {a['description']}")
    if summary.get("site_state"):
        print(f"site observation: {summary['site_state']['text']}")
    for c in summary.get("deliveries") or []:
        print(f"  channel {c['channel']}: {c['sent']} sent, {c['skipped']} already sent, {c['failed']} failed"
              + (f" -- {c['error']}" if c.get("error") else ""))
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
    with progress_reporter("writing scenes", lambda k, n, url: f"  scene {k}/{n} ready: {url.rsplit('/', 1)[-1]}") as tick:
        write_synthetic_scenes(series, source, progress=tick)
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


def cmd_alerts(args: argparse.Namespace) -> int:
    """``sitewatch alerts [list|ack|close] [ID]``: list a site's alerts from its feed, or
    acknowledge / close one (stored as an action the flow also applies, and in the feed's history)."""
    import datetime as dt

    from sitewatch import alerts as alert_lib
    from sitewatch import publish

    for name in ("since", "until"):
        v = getattr(args, name)
        try:
            v and dt.date.fromisoformat(v[:10])
        except ValueError:
            print(f"error: --{name} got {v!r}; expected a date YYYY-MM-DD", file=sys.stderr)
            return 2
    if args.action == "list" and args.alert_id:
        print(f"error: 'alerts list' takes no alert id (got {args.alert_id!r}); use --status/--since/--until", file=sys.stderr)
        return 2
    if args.action in ("ack", "close") and not args.alert_id:
        print(f"error: 'alerts {args.action}' needs an alert id", file=sys.stderr)
        return 2
    cfg = _one_site(args)
    if cfg is None:
        return 2
    root, so = cfg.to_site().alerts_url, (cfg.storage_options or None)
    try:
        alerts = publish.read_feed(root, so)
        if args.action == "list":
            chosen = alert_lib.filter_alerts(alerts, args.status, args.since, args.until)
            if args.json:
                print(json.dumps([a.to_feature() for a in chosen], indent=2, default=str))
                return 0
            print(f"{len(chosen)} of {len(alerts)} alert(s) at site {cfg.name} ({publish.feed_url(root)})")
            for a in chosen:
                print(f"  {a.id}  {a.status:<12} conf {a.confidence:.2f}  {a.first_seen} .. {a.last_seen}  "
                      f"{a.area_m2:>9,.0f} m2  ({a.lon:.5f}, {a.lat:.5f})  {a.direction}")
            return 0
        match = next((a for a in alerts if a.id == args.alert_id), None)
        if match is None:
            print(f"error: no alert {args.alert_id!r} at site {cfg.name} ({publish.feed_url(root)})", file=sys.stderr)
            return 1
        if not match.is_open:
            print(f"error: alert {match.id} is already closed ({match.closed_reason}); nothing to {args.action}", file=sys.stderr)
            return 1
        action = alert_lib.UserAction(match.id, args.action, alert_lib.utc_now(), by=args.by or os.environ.get("USER", ""),
                                      note=args.note or "")
        publish.record_action(root, action, so)  # first: a flow running now applies it on its next merge
        updated = alert_lib.apply_action(match, action, cfg.alerts.to_params())
        publish.write_feed(root, cfg.name, [updated if a.id == match.id else a for a in publish.read_feed(root, so)], so)
        print(f"alert {updated.id}: {match.status} -> {updated.status} (recorded in its history, update {updated.update_seq})")
        return 0
    except (OSError, ValueError) as exc:
        from sitewatch.io.store import redact

        print(f"error: site {cfg.name}: {redact(str(exc))}", file=sys.stderr)
        return 1


def _one_site(args: argparse.Namespace):
    """The site ``--site`` names in ``--config`` (or its only site); ``None`` after printing why
    (a usage/config error)."""
    sites = _load_sites(args.config)
    if sites is None:
        return None
    if args.site is None and len(sites) != 1:
        print(f"error: {args.config} has {len(sites)} sites {[s.name for s in sites]!r}; expected --site NAME", file=sys.stderr)
        return None
    cfg = next((s for s in sites if args.site in (None, s.name)), None)
    if cfg is None:
        print(f"error: no site named {args.site!r} in {args.config}", file=sys.stderr)
    return cfg


SITE_EPILOG = ("exit codes: 0 ok; 1 failure (the site has no cube yet, or its store cannot be read); "
               "2 usage or configuration error")


def _pct(v: float) -> str:
    return "-" if v != v else f"{v:6.1%}"


def cmd_site(args: argparse.Namespace) -> int:
    """``sitewatch site scenes``: the scenes in a site's cube (time, id, sensor, valid and cloud
    fractions, ingested/analysed flags), read from the cube's per-time arrays only."""
    import datetime as dt

    import numpy as np

    bounds = {}
    for name in ("since", "until"):
        v = getattr(args, name)
        try:
            bounds[name] = v and np.datetime64(dt.date.fromisoformat(v[:10]), "D")
        except ValueError:
            print(f"error: --{name} got {v!r}; expected a date YYYY-MM-DD", file=sys.stderr)
            return 2
    cfg = _one_site(args)
    if cfg is None:
        return 2
    from sitewatch.io import cube as cube_io
    from sitewatch.io.store import redact

    url, so = cfg.to_site().cube_url, (cfg.storage_options or None)
    try:
        state = cube_io._state(url, so)
        if state != "ready":
            why = "its creation was cut short and it holds no scene" if state == "partial" else "nothing ingested yet"
            print(f"error: site {cfg.name} has no cube yet at {redact(url)} ({why}); run `sitewatch run --config "
                  f"{args.config} --site {cfg.name}` first", file=sys.stderr)
            return 1
        slots = cube_io.slots(url, so)
    except (OSError, ValueError) as exc:
        print(f"error: site {cfg.name}: cube {redact(url)} unreadable: {redact(str(exc))}", file=sys.stderr)
        return 1
    day = lambda s: s.time.astype("datetime64[D]")  # noqa: E731
    chosen = sorted((s for s in slots if (not bounds["since"] or day(s) >= bounds["since"])
                     and (not bounds["until"] or day(s) <= bounds["until"])), key=lambda s: (s.time, s.scene_id))
    rows = [{"time": str(np.datetime_as_string(s.time, unit="s")) + "Z", "scene_id": s.scene_id, "sensor": s.sensor,
             "valid_fraction": None if s.valid_fraction != s.valid_fraction else s.valid_fraction,
             "cloud_fraction": None if s.cloud_fraction != s.cloud_fraction else s.cloud_fraction,
             "ingested": s.ingested, "analysed": s.analysed, "slot": s.index} for s in chosen]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(rows)} of {len(slots)} scene(s) in the cube of site {cfg.name} ({redact(url)})")
    if rows:
        print(f"  {'time (UTC)':<20} {'scene id':<28} {'sensor':<16} {'valid':>6}  {'cloud':>12}  ingested analysed")
    for r, s in zip(rows, chosen):
        cloud = "not observed" if r["cloud_fraction"] is None else _pct(s.cloud_fraction)
        print(f"  {r['time']:<20} {s.scene_id:<28} {s.sensor or '-':<16} {_pct(s.valid_fraction):>6}  {cloud:>12}  "
              f"{'yes' if s.ingested else 'no':<8} {'yes' if s.analysed else 'no'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    sites = _load_sites(args.config)
    if sites is None:
        return 2
    from flows.deployments import parse_groups, serve_sites

    try:
        groups = parse_groups(args.group or [], sites)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if not os.environ.get("PREFECT_API_URL"):
        _say("PREFECT_API_URL is not set: start a server with `prefect server start` and export "
             "PREFECT_API_URL=http://127.0.0.1:4200/api, so scheduled and UI runs have somewhere to live")
    serve_sites(sites, cron=args.cron, name=args.name, groups=groups or None)
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from flows import stack

    try:
        if args.action == "up":
            spec = stack.StackSpec(workers=args.workers, threads_per_worker=args.threads)
            st = stack.up(args.dir, spec, timeout=args.timeout, say=_say)
            env = stack.env_path(st["folder"])
            print(f"stack up in {st['folder']}")
            for name, svc in st["services"].items():
                print(f"  {name:<15} pid {svc['pid']:<8} {svc.get('url', '')}")
            print(f"environment: {env}\n  sitewatch run --stack {st['folder']} --config sites.yaml"
                  f"   (or: export SITEWATCH_STACK_DIR={st['folder']}; or: set -a; . {env}; set +a)")
            return 0
        if args.action == "down":
            for name, what in stack.down(args.dir, timeout=args.timeout).items():
                print(f"  {name:<15} {what}")
            return 0
        rows = stack.status(args.dir)
        for name, r in rows.items():
            state = "healthy" if r["healthy"] else ("running, not answering" if r["running"] else "stopped")
            print(f"  {name:<15} pid {r['pid']:<8} {state:<24} {r['url']}")
        return 0 if all(r["healthy"] for r in rows.values()) else 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _use_stack(argv: list[str] | None) -> int | None:
    """Before Prefect is imported: load a running local stack's environment (``--stack DIR``,
    ``SITEWATCH_STACK_DIR``, or ``./.sitewatch-stack``) for the commands that run flows."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("cmd", nargs="?")
    pre.add_argument("--stack")
    known, _ = pre.parse_known_args(argv)
    if known.cmd not in ("demo", "run", "serve"):
        return None
    from flows import stack

    try:
        used = stack.apply_env(known.stack)
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if used:
        _say(f"using the local stack in {used}: Prefect {os.environ.get('PREFECT_API_URL')}, "
             f"Dask {os.environ.get('SITEWATCH_DASK_ADDRESS')}, S3 {os.environ.get('AWS_ENDPOINT_URL')}")
    return None


EPILOG = ("exit codes: 0 ok; 1 a run failed (a flow ended Failed, a stack did not start); "
          "2 usage or configuration error")


def main(argv: list[str] | None = None) -> int:
    rc = _use_stack(argv)
    if rc is not None:
        return rc
    _quiet_env()
    p = argparse.ArgumentParser(prog="sitewatch", description="Watch sites in satellite imagery and raise alerts on change.",
                                epilog=EPILOG)
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
    al = sub.add_parser("alerts", help="list a site's alerts, or acknowledge / close one by id "
                        "(exit 0 ok, 1 not found or failed, 2 bad usage)")
    al.add_argument("action", nargs="?", default="list", choices=["list", "ack", "close"],
                    help="list (default), ack ID or close ID")
    al.add_argument("alert_id", nargs="?", metavar="ID", help="alert id (ack, close)")
    al.add_argument("--config", required=True)
    al.add_argument("--site", help="site name (needed when the config has several sites)")
    al.add_argument("--status", choices=["open", "first", "provisional", "confirmed", "acknowledged", "closed"])
    al.add_argument("--since", metavar="DATE", help="only alerts last seen on or after DATE (YYYY-MM-DD)")
    al.add_argument("--until", metavar="DATE", help="only alerts first seen on or before DATE (YYYY-MM-DD)")
    al.add_argument("--json", action="store_true", help="print the alerts as GeoJSON features")
    al.add_argument("--by", help="who acknowledges or closes (default $USER)")
    al.add_argument("--note", help="a note kept in the alert's history")
    al.set_defaults(fn=cmd_alerts)
    st = sub.add_parser("site", help="inspect a site: 'site scenes' lists the scenes in its cube", epilog=SITE_EPILOG)
    st.add_argument("action", choices=["scenes"], help="scenes: time, scene id, sensor, valid and cloud fractions "
                    "('not observed' when no cloud fraction), ingested/analysed flags")
    st.add_argument("--config", required=True)
    st.add_argument("--site", help="site name (needed when the config has several sites)")
    st.add_argument("--since", metavar="DATE", help="only scenes acquired on or after DATE (YYYY-MM-DD, UTC)")
    st.add_argument("--until", metavar="DATE", help="only scenes acquired on or before DATE (YYYY-MM-DD, UTC)")
    st.add_argument("--json", action="store_true", help="print the scenes as a JSON list (fractions null when unknown)")
    st.set_defaults(fn=cmd_site)
    s = sub.add_parser("serve", help="serve a scheduled monitor deployment per site (Prefect serve)")
    s.add_argument("--config", required=True)
    s.add_argument("--cron", default="0 */6 * * *", help="cron schedule (default every 6 hours)")
    s.add_argument("--name", default="scheduled", help="deployment name suffix")
    s.add_argument("--group", action="append", metavar="NAME=SITE[,SITE...]",
                   help="serve one scheduled deployment per site group instead of one per site (repeatable); "
                   "a backfill deployment per site is served either way")
    s.set_defaults(fn=cmd_serve)
    k = sub.add_parser("stack", help="start, check or stop a local stack: Prefect server, Dask scheduler and "
                       "workers, S3 (moto) on 127.0.0.1", epilog=EPILOG)
    k.add_argument("action", choices=["up", "status", "down"], help="up: start and wait until healthy; status: "
                   "which services run and answer (exit 1 if any does not); down: terminate, wait, kill")
    k.add_argument("--dir", default=".sitewatch-stack", help="stack folder: state.json, stack.env, logs/ "
                   "(default ./.sitewatch-stack)")
    k.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    k.add_argument("--threads", type=int, default=1, help="threads per Dask worker (default 1)")
    k.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each service (default 120)")
    k.set_defaults(fn=cmd_stack)
    for sp in (d, r, s):
        sp.add_argument("--stack", metavar="DIR", help="use the local stack in DIR (see 'sitewatch stack'); "
                        "default: $SITEWATCH_STACK_DIR, or ./.sitewatch-stack when a stack runs there")
    _complete_help(sub)
    args = p.parse_args(argv)
    return int(args.fn(args) or 0)


_OPTION_HELP = {
    "--config": "sites YAML file (see infra/sites.example.yaml); a bad field is reported by name (exit 2)",
    "--seed": "random seed of the synthetic series (default 0)",
    "--status": "only alerts with this status",
}


def _complete_help(sub: argparse._SubParsersAction) -> None:
    """Every command's --help: its description, help on every option, and the exit codes."""
    for act in sub._choices_actions:
        sp = sub.choices[act.dest]
        sp.description = sp.description or act.help
        sp.epilog = sp.epilog or EPILOG
        for a in sp._actions:
            if a.help is None and a.option_strings:
                a.help = _OPTION_HELP.get(a.option_strings[-1])


def entry() -> int:
    """The ``sitewatch`` command: :func:`main` in a process started with
    :data:`flows.dask_env.WORKER_MALLOC_ENV` (without it, on Linux, the command starts itself again
    once with it: glibc reads it only at start). With no cluster configured, the flows compute in
    this process's threads, which then keep freed memory as the Dask workers do.
    ``SITEWATCH_KEEP_MALLOC=1`` leaves the process as it was started."""
    from flows.dask_env import WORKER_MALLOC_ENV

    missing = any(os.environ.get(k) != v for k, v in WORKER_MALLOC_ENV.items())
    if missing and sys.platform.startswith("linux") and not os.environ.get("SITEWATCH_KEEP_MALLOC"):
        env = {**os.environ, **WORKER_MALLOC_ENV, "SITEWATCH_KEEP_MALLOC": "1"}  # once, whatever happens
        os.execve(sys.executable, [sys.executable, "-m", "flows.cli", *sys.argv[1:]], env)
    return main()


if __name__ == "__main__":
    raise SystemExit(entry())
