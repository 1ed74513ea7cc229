"""The monitor flow: new scenes -> cube -> masks and change -> alerts -> publish.

Orchestration only: every unit of work is a task in ``tasks/``; array work happens inside the
tasks on the flow's Dask cluster.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, unmapped
from prefect.logging import get_run_logger
from prefect.states import Failed

from sitewatch.config import SiteConfig
from sitewatch.io import cube as cube_io
from sitewatch.io import store
from sitewatch.io.store import configure_gdal_s3_from_env
from tasks.alerts import publish_alerts, render_chips, update_alerts
from tasks.analyse import analyse_scene
from tasks.scenes import find_new_scenes, ingest_scene, prepare_cube, validate_scenes

from .runner import make_task_runner


def _error_text(state: Any) -> str:
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by Prefect
        return f"{type(exc).__name__}: {exc}"
    return state.message or "failed"


@flow(name="monitor-site", task_runner=make_task_runner(), flow_run_name="monitor-{site.name}")
def monitor_site(site: SiteConfig) -> dict[str, Any]:
    """Bring a site up to date: ingest new scenes, compute masks and change, raise and publish alerts.

    Scenes that cannot be used (unreadable, missing band, wrong place) are skipped with a clear
    error; everything else is processed, and the run then ends Failed, naming them.
    """
    log = get_run_logger()
    configure_gdal_s3_from_env()  # deployments run without the CLI: same mapping here
    s = site.to_site()
    new, problems = find_new_scenes(site)
    rejected: list[dict[str, str]] = [{"scene_id": "?", "error": p} for p in problems]

    ok, bad = validate_scenes(site, new) if new else ([], [])
    rejected += bad

    ingested: list[dict[str, Any]] = []
    if ok:
        slots = prepare_cube(site, ok)
        futs = ingest_scene.map(unmapped(site), ok, [slots[r.scene_id] for r in ok])
        for ref, fut in zip(ok, futs):
            fut.wait()
            if fut.state.is_completed():
                ingested.append(fut.result())
            else:
                rejected.append({"scene_id": ref.scene_id, "error": _error_text(fut.state)})
                log.error("could not ingest scene %s: %s", ref.scene_id, rejected[-1]["error"])

    pending = sorted((sl for sl in cube_io.slots(s.cube_url) if sl.ingested and not sl.analysed), key=lambda sl: sl.time)
    results = [analyse_scene(site, sl.index) for sl in pending]
    detections = [d for r in results for d in r.detections]

    alerts, new_ids, updated = update_alerts(site, detections)
    fresh = [a for a in alerts if a.id in new_ids]
    if fresh:
        rendered = {a.id: a for a in render_chips(site, fresh)}
        alerts = [rendered.get(a.id, a) for a in alerts]
    scenes = [
        {"scene_id": r.scene_id, "time": r.time, "valid_fraction": r.valid_fraction,
         "cloud_fraction": r.cloud_fraction, "n_detections": len(r.detections)}
        for r in results
    ]
    feed = publish_alerts(site, alerts, new_ids, updated, scenes)
    summary = {
        "site": s.name,
        "scenes_ingested": [i["scene_id"] for i in sorted(ingested, key=lambda i: i["index"])],
        "scenes_analysed": scenes,
        "scenes_rejected": rejected,
        "alerts": [a.to_feature()["properties"] | {"geometry": a.geometry} for a in alerts if a.id in set(new_ids) | set(updated)],
        "new_alert_ids": new_ids,
        "updated_alert_ids": updated,
        "open_alerts": sum(1 for a in alerts if a.status == "open"),
        "cube": s.cube_url,
        "alert_feed": feed,
        "images": store.join(s.alerts_url, "<alert-id>/{before,after}.png"),
    }
    if not results:
        log.info("site %s: no new scenes; nothing to analyse and no new alerts", s.name)
    if rejected:
        msg = f"site {s.name}: {len(rejected)} scene(s) rejected: " + "; ".join(f"{r['scene_id']}: {r['error']}" for r in rejected)
        return Failed(message=msg, data=summary)
    return summary


@flow(name="monitor-sites", task_runner=make_task_runner())
def monitor_sites(sites: list[SiteConfig]) -> list[dict[str, Any]]:
    """Run the monitor flow for each site of a group, one after the other."""
    out = []
    for cfg in sites:
        state = monitor_site(cfg, return_state=True)
        out.append(state.result(raise_on_failure=False) if state.is_completed() else {"site": cfg.name, "error": state.message})
    return out
