"""Tasks that turn detections into alerts, draw them, publish them and deliver them.

Prefect-specific channels live here (artifacts, events, Secret blocks); the HTTP/SMTP senders
and the outbox are in the library (``sitewatch.channels``, ``sitewatch.outbox``).
"""

from __future__ import annotations

import base64

import uuid
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sitewatch import alerts as alert_lib
from sitewatch import channels, observation, outbox, publish
from sitewatch.analysis import Detection
from sitewatch.config import PrefectEventsChannel, SiteConfig, channel_spec
from sitewatch.io import cube as cube_io
from sitewatch.io import store
from sitewatch.models import Alert

from ._dask import dask_client


@task(name="update-alerts", cache_policy=NO_CACHE)
def update_alerts(cfg: SiteConfig, detections: list[Detection], scene_ids: list[str] | None = None
                  ) -> tuple[list[Alert], list[str], list[str], dict[str, Any]]:
    """Merge this run's detections, the clear views of open alerts in this run's scenes and
    people's stored actions into the site's alerts (read from its feed); nothing is written here.
    Also returns the site's observation state ("not observed for N days")."""
    site = cfg.to_site()
    params = cfg.alerts.to_params()
    existing = publish.read_feed(site.alerts_url)
    actions = publish.read_actions(site.alerts_url)
    slots = cube_io.slots(site.cube_url)
    analysed = [sl for sl in slots if sl.ingested and sl.analysed]
    as_of = max((observation.iso(sl.time) for sl in analysed), default=None)
    kw = dict(params=params, cube_url=site.cube_url)
    views: list[alert_lib.ClearView] = []
    if scene_ids:
        # alerts as they stand after this run's detections (new ones included), then what this
        # run's scenes saw of their footprints
        tentative, _, _ = alert_lib.merge(site.name, existing, detections, actions=actions, **kw)
        if any(a.is_open for a in tentative):
            with dask_client():
                views = observation.clear_views(cube_io.open_cube(site.cube_url), tentative, scene_ids, params.min_clear_fraction)
    alerts, new_ids, updated = alert_lib.merge(site.name, existing, detections, views, actions, as_of=as_of, **kw)
    state = observation.site_state(slots, params=params)
    log = get_run_logger()
    log.info("site %s: %d new alert(s), %d updated, %d open, %d in total", site.name, len(new_ids), len(updated),
             sum(a.is_open for a in alerts), len(alerts))
    (log.warning if state["not_observed"] else log.info)("site %s: %s", site.name, state["text"])
    return alerts, new_ids, updated, state


@task(name="render-chips", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def render_chips(cfg: SiteConfig, alerts: list[Alert]) -> list[Alert]:
    """Before/after PNGs for each alert, written next to the feed; returns the alerts with
    their image URLs (or the error that kept an alert's pictures from being drawn). One task per
    run: the cube is opened once and only chip windows are read."""
    site = cfg.to_site()
    with dask_client():
        out = publish.render_alert_chips(cube_io.open_cube(site.cube_url), alerts, site.alerts_url)
    bad = [a for a in out if "error" in a.images]
    log = get_run_logger()
    log.info("site %s: before/after pictures for %d alert(s) under %s", site.name, len(out) - len(bad), site.alerts_url)
    for a in bad:
        log.warning("site %s: no pictures for alert %s: %s", site.name, a.id, a.images["error"])
    return out


@task(name="publish-alerts", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_alerts(cfg: SiteConfig, alerts: list[Alert], new_ids: list[str], updated: list[str]) -> str:
    """Write the GeoJSON feed and the STAC items of new and updated alerts (and of any alert
    without one yet); returns the feed URL."""
    site = cfg.to_site()
    url = publish.write_feed(site.alerts_url, site.name, alerts)
    changed = set(new_ids) | set(updated)
    stac_missing = [a for a in alerts if a.id not in changed
                    and not store.exists(store.join(site.alerts_url, publish.STAC_DIR, f"{a.id}.json"))]
    publish.write_stac_items(site.alerts_url, [a for a in alerts if a.id in changed] + stac_missing)
    get_run_logger().info("site %s: alert feed %s", site.name, url)
    return url


def _quicklook(site, scenes: list[dict]) -> dict[str, Any] | None:
    """The newest analysed scene's quicklook, written next to the feed (``quicklook/<scene>.png``)
    and inlined (256 px) for the artifact; a failure is reported, never raised: the report
    matters more than its picture."""
    if not scenes:
        return None
    newest = max(scenes, key=lambda s: s["time"])
    try:
        with dask_client():
            cube = cube_io.open_cube(site.cube_url)
            png = publish.quicklook_png(cube, newest["scene_id"])
        small = publish.shrink_png(png, 256)  # the inline copy: no second read of the cube
        url = store.join(site.alerts_url, "quicklook", f"{newest['scene_id']}.png")
        store.write_bytes(url, png)
        return {"scene_id": newest["scene_id"], "url": url, "data_uri": "data:image/png;base64," + base64.b64encode(small).decode()}
    except Exception as exc:  # noqa: BLE001 - a picture never blocks the report
        get_run_logger().warning("site %s: no quicklook of %s: %s", site.name, newest["scene_id"], exc)
        return {"scene_id": newest["scene_id"], "error": f"{type(exc).__name__}: {exc}"}


@task(name="report-run", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def report_run(cfg: SiteConfig, alerts: list[Alert], new_ids: list[str], updated: list[str], scenes: list[dict],
               quarantined: list[dict] | None = None, site_state: dict | None = None,
               deliveries: list[dict] | None = None) -> None:
    """A Prefect markdown artifact for this run (chips, site state, deliveries, quarantined
    scenes) and a table artifact of the site's open alerts."""
    site = cfg.to_site()
    key = f"sitewatch-{site.name}".replace("_", "-")
    quicklook = _quicklook(site, scenes)
    md = publish.markdown_report(site.name, alerts, new_ids, updated, scenes, quarantined or (), site_state, deliveries or (),
                                 quicklook=quicklook)
    create_markdown_artifact(markdown=md, key=key, description=f"sitewatch run for {site.name}")
    rows = publish.open_alerts_table(alerts) or [{"id": "(no open alerts)"}]
    create_table_artifact(table=rows, key=f"{key}-open-alerts", description=f"open alerts at {site.name}")


def _secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())


def _event_sender(site: str):
    from prefect.events import emit_event

    def send(d: channels.Delivery) -> None:
        a = d.alert
        ev = emit_event(
            event=f"sitewatch.alert.{d.event.get('status', a.status)}",
            resource={"prefect.resource.id": f"sitewatch.alert.{a.id}", "prefect.resource.name": a.id,
                      "sitewatch.site": site},
            related=[{"prefect.resource.id": f"sitewatch.site.{site}", "prefect.resource.role": "site"}],
            payload={"idempotency_key": d.key, "event": d.event, "alert": a.to_feature()["properties"] | {"geometry": a.geometry}},
            id=uuid.uuid5(uuid.NAMESPACE_URL, d.key),  # the same update always has the same event id
        )
        if ev is None:
            raise channels.ChannelError(f"channel {d.channel!r}: Prefect events are not enabled in this process")
    return send


@task(name="deliver-alerts", cache_policy=NO_CACHE)
def deliver_alerts(cfg: SiteConfig, alerts: list[Alert]) -> list[dict[str, Any]]:
    """Deliver every alert update not yet delivered to each of the site's channels, through the
    outbox (``sitewatch.outbox``: once in effect, never lost; failures are retried on the next
    run). A misconfigured or failing channel is reported and never stops the others."""
    site = cfg.to_site()
    log = get_run_logger()
    reports = []
    for ch in cfg.channels:
        if isinstance(ch, PrefectEventsChannel):
            sender = _event_sender(site.name)
        else:
            try:
                spec = channel_spec(ch, resolve_block=_secret_block)
                sender = (lambda spec: lambda d: channels.send(spec, d))(spec)
            except (channels.ChannelError, ValueError) as exc:
                err = store.redact(str(exc))
                sender = (lambda err: lambda d: (_ for _ in ()).throw(channels.ChannelError(err)))(err)
        rep = outbox.deliver(site.alerts_url, ch.name, outbox.due(alerts, ch.name, ch.statuses), sender).to_dict()
        reports.append(rep)
        if rep["error"]:
            log.error("site %s: channel %s: %d update(s) not delivered (retried next run): %s", site.name, ch.name, rep["failed"], rep["error"])
        else:
            log.info("site %s: channel %s: %d sent, %d already sent", site.name, ch.name, rep["sent"], rep["skipped"])
    return reports
