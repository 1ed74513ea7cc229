"""Deployments of sitewatch's flows, served by this process (``prefect.serve``) or declared in
``prefect.yaml`` for ``prefect deploy`` and a work pool.

* ``monitor-site/<site>-<name>``: one per site on a cron schedule (``deployments_for``);
* ``monitor-sites/<group>-<name>``: one per site group on a cron schedule (``group_deployments``),
  the group's sites one after the other;
* ``backfill-site/<site>-backfill``: one per site, no schedule: started from the UI (or
  ``run_deployment``) with a date range (``backfill_deployments``).

Parameters are the pydantic models :class:`~sitewatch.config.SiteConfig` and
:class:`~flows.backfill.DateRange`, so the Prefect UI shows a run form with the defaults, and
the server refuses bad values (``enforce_parameter_schema``). Every monitor run holds its site's
run slot (``tasks/concurrency.py``): two runs of one site never overlap, whichever deployment
started them; the deployments also have ``concurrency_limit=1``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from prefect import serve

from sitewatch.config import SiteConfig

from .backfill import DateRange, backfill_site
from .monitor import monitor_site, monitor_sites

DEFAULT_CRON = "0 */6 * * *"
_GROUP_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def deployments_for(sites: Sequence[SiteConfig], cron: str = DEFAULT_CRON, name: str = "scheduled"):
    """A scheduled ``monitor-site`` deployment per site."""
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


def parse_groups(specs: Sequence[str], sites: Sequence[SiteConfig]) -> dict[str, list[SiteConfig]]:
    """``["syria=khmeimim,tartus", ...]`` -> ``{"syria": [SiteConfig, SiteConfig]}``; a bad spec
    or an unknown site raises ``ValueError`` naming it."""
    import re

    by_name = {s.name: s for s in sites}
    groups: dict[str, list[SiteConfig]] = {}
    for spec in specs:
        group, sep, names = spec.partition("=")
        group = group.strip()
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        if not sep or not re.match(_GROUP_NAME, group) or not wanted:
            raise ValueError(f"site group got {spec!r}; expected NAME=SITE[,SITE...] with a lowercase NAME")
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ValueError(f"site group {group!r} names unknown site(s) {unknown!r}; expected some of {sorted(by_name)!r}")
        if group in groups:
            raise ValueError(f"site group {group!r} given twice; expected each group once")
        groups[group] = [by_name[n] for n in wanted]
    return groups


def group_deployments(groups: Mapping[str, Sequence[SiteConfig]], cron: str = DEFAULT_CRON, name: str = "scheduled"):
    """A scheduled ``monitor-sites`` deployment per site group."""
    out = []
    for group, sites in groups.items():
        if not sites:
            raise ValueError(f"site group {group!r} got no sites; expected at least one")
        out.append(monitor_sites.to_deployment(
            name=f"{group}-{name}",
            cron=cron,
            parameters={"sites": [cfg.model_dump(mode="json") for cfg in sites]},
            tags=["sitewatch", f"group:{group}", *(f"site:{cfg.name}" for cfg in sites)],
            description=f"Monitor the sites of group {group} ({', '.join(c.name for c in sites)}) on schedule {cron!r}",
            concurrency_limit=1,
        ))
    return out


def backfill_deployments(sites: Sequence[SiteConfig], window: DateRange | None = None):
    """An unscheduled ``backfill-site`` deployment per site; the date range is asked for at run
    time (or defaults to ``window`` when given)."""
    out = []
    for cfg in sites:
        params = {"site": cfg.model_dump(mode="json")}
        if window is not None:
            params["window"] = window.model_dump(mode="json")
        out.append(backfill_site.to_deployment(
            name=f"{cfg.name}-backfill",
            parameters=params,
            tags=["sitewatch", "backfill", f"site:{cfg.name}"],
            description=f"Backfill site {cfg.name} over a date range (scenes acquired from start to end, both included)",
        ))
    return out


def serve_sites(sites: Sequence[SiteConfig], cron: str = DEFAULT_CRON, name: str = "scheduled",
                groups: Mapping[str, Sequence[SiteConfig]] | None = None, backfill: bool = True) -> None:
    """Serve the scheduled deployments (per group when ``groups`` is given, else per site) and a
    backfill deployment per site, until interrupted."""
    deps = group_deployments(groups, cron, name) if groups else deployments_for(sites, cron, name)
    if backfill:
        deps += backfill_deployments(sites)
    serve(*deps)
