"""Tasks that turn detections into alerts and publish them."""

from __future__ import annotations

from dataclasses import replace

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sitewatch import alerts as alert_lib
from sitewatch import publish
from sitewatch.analysis import Detection
from sitewatch.config import SiteConfig
from sitewatch.io import cube as cube_io
from sitewatch.io import store
from sitewatch.models import Alert

from ._dask import dask_client


@task(name="update-alerts", cache_policy=NO_CACHE)
def update_alerts(cfg: SiteConfig, detections: list[Detection]) -> tuple[list[Alert], list[str], list[str]]:
    """Merge detections into the site's alerts (read from its feed); nothing is written here."""
    site = cfg.to_site()
    existing = publish.read_feed(site.alerts_url)
    alerts, new_ids, updated = alert_lib.merge(site.name, existing, detections)
    get_run_logger().info("site %s: %d new alert(s), %d updated, %d in total", site.name, len(new_ids), len(updated), len(alerts))
    return alerts, new_ids, updated


@task(name="render-chips", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def render_chips(cfg: SiteConfig, alerts: list[Alert]) -> list[Alert]:
    """Before/after PNGs for each alert, written next to the feed; returns the alerts with
    their image URLs. One task per run: the cube is opened once and only chip windows are read."""
    site = cfg.to_site()
    out = []
    with dask_client():
        cube = cube_io.open_cube(site.cube_url)
        for alert in alerts:
            before, after, before_id, after_id = publish.before_after_chips(cube, alert)
            folder = store.join(site.alerts_url, alert.id)
            urls = {"before": store.join(folder, "before.png"), "after": store.join(folder, "after.png")}
            store.write_bytes(urls["before"], before)
            store.write_bytes(urls["after"], after)
            out.append(replace(alert, images={**urls, "before_scene": before_id, "after_scene": after_id}))
    get_run_logger().info("site %s: before/after pictures for %d alert(s) under %s", site.name, len(out), site.alerts_url)
    return out


@task(name="publish-alerts", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_alerts(cfg: SiteConfig, alerts: list[Alert], new_ids: list[str], updated: list[str], scenes: list[dict],
                   quarantined: list[dict] | None = None) -> str:
    """Write the GeoJSON feed and a Prefect markdown artifact for this run (with the site's
    quarantined scenes); returns the feed URL."""
    site = cfg.to_site()
    url = publish.write_feed(site.alerts_url, site.name, alerts)
    md = publish.markdown_report(site.name, alerts, new_ids, updated, scenes, quarantined or ())
    create_markdown_artifact(markdown=md, key=f"sitewatch-{site.name}".replace("_", "-"), description=f"sitewatch run for {site.name}")
    get_run_logger().info("site %s: alert feed %s", site.name, url)
    return url
