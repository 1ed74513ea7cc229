"""Deployments of the monitor flow: one per site, on a cron schedule, with the site's
parameters, served by this process (``flow.serve``-style). Ad-hoc runs can be started from the
Prefect UI on the same deployments (the site form is the :class:`SiteConfig` model)."""

from __future__ import annotations

from typing import Sequence

from prefect import serve

from sitewatch.config import SiteConfig

from .monitor import monitor_site


def deployments_for(sites: Sequence[SiteConfig], cron: str = "0 */6 * * *", name: str = "scheduled"):
    return [
        monitor_site.to_deployment(
            name=f"{cfg.name}-{name}",
            cron=cron,
            parameters={"site": cfg.model_dump(mode="json")},
            tags=["sitewatch", f"site:{cfg.name}"],
            description=f"Monitor site {cfg.name} on schedule {cron!r}",
            concurrency_limit=1,
        )
        for cfg in sites
    ]


def serve_sites(sites: Sequence[SiteConfig], cron: str = "0 */6 * * *", name: str = "scheduled") -> None:
    serve(*deployments_for(sites, cron, name))
