"""Backfill: run the monitor flow for one site over the scenes acquired in a date range.

Used for a new site (ingest its history), or after an outage. The run is the monitor flow
(``monitor-site``) as a subflow with a date filter, so it holds the site's run slot
(``sitewatch-site-<name>``, limit 1) like every monitor run: a backfill and a scheduled or
ad-hoc run of the same site never overlap; the later one waits.

Parameters are pydantic models: in the Prefect UI the deployment's run form shows the site's
fields and the date range with their defaults, and a bad value (end before start, a bad site
name) is refused before the run starts.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sitewatch.config import SiteConfig

from .monitor import monitor_site


class DateRange(BaseModel):
    """Acquisition dates to backfill, both ends included (UTC days)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: date = Field(description="First acquisition day (UTC), included")
    end: date = Field(description="Last acquisition day (UTC), included")

    @model_validator(mode="after")
    def _ordered(self) -> "DateRange":
        if self.end < self.start:
            raise ValueError(f"date range got end {self.end.isoformat()} before start {self.start.isoformat()}; "
                             "expected start <= end")
        return self

    def bounds(self) -> tuple[datetime, datetime]:
        """``[start 00:00, end 24:00)`` as UTC datetimes (the end's last microsecond)."""
        t0 = datetime.combine(self.start, time.min, tzinfo=timezone.utc)
        t1 = datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=timezone.utc) - timedelta(microseconds=1)
        return t0, t1


@flow(name="backfill-site", flow_run_name="backfill-{site.name}-{window.start}-{window.end}")
def backfill_site(site: SiteConfig, window: DateRange) -> dict[str, Any]:
    """Ingest and analyse the site's scenes acquired in ``window`` that are not in its cube yet,
    then raise and publish alerts, exactly as the monitor flow does (it runs as a subflow and
    waits for the site's run slot). Returns the monitor run's summary with the window added;
    the run fails when the monitor run fails (scenes rejected)."""
    t0, t1 = window.bounds()
    state = monitor_site(site, start=t0, end=t1, return_state=True)
    summary = state.result(raise_on_failure=False)
    if isinstance(summary, BaseException):
        raise summary
    if not state.is_completed():
        from prefect.states import Failed

        return Failed(message=f"backfill of {site.name} {window.start}..{window.end}: {state.message}",
                      data={**(summary or {}), "window": [window.start.isoformat(), window.end.isoformat()]})
    return {**summary, "window": [window.start.isoformat(), window.end.isoformat()]}
