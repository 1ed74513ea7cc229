"""The monitor flow: new scenes -> cube -> masks and change -> alerts -> publish.

Orchestration only: every unit of work is a task in ``tasks/``; array work happens inside the
tasks on the flow's Dask cluster.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from prefect import flow, unmapped
from prefect.logging import get_run_logger
from prefect.states import Failed

from sitewatch import quarantine
from sitewatch.config import SiteConfig
from sitewatch.io import cube as cube_io
from sitewatch.io import store
from sitewatch.models import ALERT_STATUSES
from tasks.alerts import deliver_alerts, publish_alerts, render_chips, report_run, update_alerts
from tasks.analyse import analyse_scene
from tasks.quarantine import record_quarantine
from tasks.concurrency import site_concurrency
from tasks.scenes import commit_scenes, find_new_scenes, ingest_scene, prepare_cube, validate_scenes
from tasks.storage import check_storage, configure_storage, task_retry_options, use_storage

from .runner import make_task_runner


def _error_text(state: Any) -> str:
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by Prefect
        return store.redact(f"{type(exc).__name__}: {exc}")
    return store.redact(state.message or "failed")


def _failure(scene_id: str, error: str, default_object: str) -> dict[str, str]:
    error = store.redact(error)
    return {"scene_id": scene_id, "object": quarantine.object_named(error, default_object), "error": error}


@flow(name="monitor-site", task_runner=make_task_runner(), flow_run_name="monitor-{site.name}")
def monitor_site(site: SiteConfig, start: Optional[datetime] = None, end: Optional[datetime] = None) -> dict[str, Any]:
    """Bring a site up to date: ingest new scenes, compute masks and change, raise and publish alerts.

    Scenes that cannot be used (unreadable or corrupt, missing band, wrong place, access denied,
    storage unreachable after retries with backoff) are skipped with a clear error naming the
    object; everything else is processed, and the run then ends Failed, naming them.
    ``scenes_rejected`` lists this run's failures; ``scenes_quarantined`` the site's persisted
    quarantine list (``<store>/<site>/quarantine.json``) after the run: failed scenes stay there,
    with attempts, until a later run ingests them.

    Two runs of one site never overlap: the run holds the site's Prefect global concurrency
    limit (``sitewatch-site-<name>``, limit 1) from start to end; a second run waits for it.

    ``start``/``end`` (optional, UTC): only scenes acquired in that range (a backfill).
    """
    with site_concurrency(site.name):
        return _monitor(site, start, end)


def _monitor(site: SiteConfig, start: Optional[datetime] = None, end: Optional[datetime] = None) -> dict[str, Any]:
    log = get_run_logger()
    use_storage(site)  # endpoint, region and keys (env, storage_options, credentials block) in this process
    s = site.to_site()
    configure_storage(site)  # ... and on every Dask worker, where lazy reads and writes run
    retry = task_retry_options()  # transient errors: exponential backoff with jitter
    check_storage.with_options(**retry)(site)  # a missing or denied bucket fails the run here, named
    new, problems = find_new_scenes.with_options(**retry)(site, start, end)
    rejected: list[dict[str, str]] = [_failure(quarantine.UNKNOWN_SCENE, p, p.split(": ", 1)[0]) for p in problems]

    ok, bad = validate_scenes(site, new) if new else ([], [])
    by_id = {r.scene_id: r for r in new}
    rejected += [_failure(b["scene_id"], b["error"], by_id[b["scene_id"]].item_href) for b in bad]

    ingested: list[dict[str, Any]] = []
    if ok:
        slots = prepare_cube.with_options(**retry)(site, ok)
        futs = ingest_scene.with_options(**retry).map(unmapped(site), ok, [slots[r.scene_id] for r in ok])
        for ref, fut in zip(ok, futs):
            fut.wait()
            if fut.state.is_completed():
                commit_scenes(site, [fut.result()])  # committed one by one: a crash keeps what was done
                ingested.append(fut.result())
            else:
                rejected.append(_failure(ref.scene_id, _error_text(fut.state), ref.item_href))
                log.error("could not ingest scene %s: %s", ref.scene_id, rejected[-1]["error"])
    quarantined = record_quarantine(site, rejected, [i["scene_id"] for i in ingested])

    pending = sorted((sl for sl in cube_io.slots(s.cube_url) if sl.ingested and not sl.analysed), key=lambda sl: sl.time)
    # one date after the other (each date's baseline uses the dates before it), each submitted rather
    # than called: on the Dask task runner the task then runs on a worker and its arrays on the whole
    # cluster (tasks/_dask.py); called here it computed them in the flow's own process (4096 px: 213 s
    # of CPU in the flow's process against 28 s in the workers, 1.06x from a second worker)
    results = [analyse_scene.submit(site, sl.index).result() for sl in pending]
    detections = [d for r in results for d in r.detections]

    alerts, new_ids, updated, site_state = update_alerts(site, detections, [r.scene_id for r in results])
    # pictures for new alerts and for open ones still without (a chip that failed is tried again)
    todo = [a for a in alerts if a.id in new_ids or (a.is_open and not a.images.get("after"))]
    if todo:
        chips = render_chips(site, todo, return_state=True)
        if chips.is_completed():
            rendered = {a.id: a for a in chips.result()}
            alerts = [rendered.get(a.id, a) for a in alerts]
        else:  # pictures never block the alerts themselves
            log.error("site %s: alert pictures could not be drawn: %s", s.name, _error_text(chips))
    scenes = [
        {"scene_id": r.scene_id, "time": r.time, "valid_fraction": r.valid_fraction,
         "cloud_fraction": r.cloud_fraction, "n_detections": len(r.detections),
         "change_state": r.change_state, "objects": r.objects_url,
         "mask_methods": list(r.mask_methods), "mask_notes": list(r.mask_notes)}
        for r in results
    ]
    feed = publish_alerts(site, alerts, new_ids, updated)  # the record first, then the deliveries
    deliveries = deliver_alerts(site, alerts) if site.channels else []
    report_run(site, alerts, new_ids, updated, scenes, quarantined, site_state, deliveries)
    summary = {
        "site": s.name,
        "scenes_ingested": [i["scene_id"] for i in sorted(ingested, key=lambda i: i["index"])],
        "scenes_analysed": scenes,
        "scenes_rejected": rejected,
        "scenes_quarantined": quarantined,
        "quarantine": quarantine.quarantine_url(s.site_root),
        "site_state": site_state,
        "alerts": [a.to_feature()["properties"] | {"geometry": a.geometry} for a in alerts if a.id in set(new_ids) | set(updated)],
        "new_alert_ids": new_ids,
        "updated_alert_ids": updated,
        "open_alerts": sum(1 for a in alerts if a.is_open),
        "alert_statuses": {st: sum(1 for a in alerts if a.status == st) for st in ALERT_STATUSES},
        "deliveries": deliveries,
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
