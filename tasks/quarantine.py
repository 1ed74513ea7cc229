"""Task: keep the site's quarantine list (scenes that could not be used) in its store."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sitewatch import quarantine
from sitewatch.config import SiteConfig
from sitewatch.io import store


@task(name="record-quarantine", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def record_quarantine(cfg: SiteConfig, failures: list[dict[str, str]], succeeded: list[str]) -> list[dict]:
    """Merge this run's failed scenes (``scene_id``, ``object``, ``error``) into
    ``<store>/<site>/quarantine.json``, drop the scenes ingested this run, write it back and
    return the list (dicts)."""
    site = cfg.to_site()
    url = quarantine.quarantine_url(site.site_root)
    previous = quarantine.read(url)
    fails = [quarantine.Failure(f["scene_id"], f["object"], store.redact(f["error"])) for f in failures]
    entries = quarantine.update(previous, fails, succeeded)
    if entries or previous:
        quarantine.write(url, site.name, entries)
    log = get_run_logger()
    left = {e.key for e in previous} - {e.key for e in entries}
    if left:
        log.info("site %s: %d scene(s) left the quarantine list: %s", site.name, len(left), ", ".join(sorted(left)))
    if entries:
        log.warning("site %s: %d scene(s) in quarantine (%s)", site.name, len(entries), url)
    return [e.to_dict() for e in entries]
