"""Per-site mutual exclusion: two runs of one site (a scheduled run and an ad-hoc run from the
UI) never write its cube at the same time.

Each site has a Prefect global concurrency limit ``sitewatch-site-<name>`` with limit 1, created
on first use. A run holds one slot from start to end; a second run waits for it (logging that it
waits). The slot is a lease that Prefect renews while the run is alive; a run that dies (killed
worker, lost machine) releases it when the lease expires (``SITEWATCH_SITE_LEASE_SECONDS``,
default 300). A run that cannot get the slot within ``SITEWATCH_SITE_WAIT_SECONDS`` (default
21600, 6 h) fails saying which slot it waited for, instead of waiting without end behind a
stuck run.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from typing import Iterator

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_run_logger


def limit_name(site_name: str) -> str:
    return f"sitewatch-site-{site_name}"


def ensure_site_limit(site_name: str) -> str:
    """Create the site's limit (limit 1) if it does not exist yet; returns its name."""
    name = limit_name(site_name)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # another run created it meanwhile
                pass
    return name


@contextmanager
def site_concurrency(site_name: str) -> Iterator[None]:
    """Hold the site's slot for the duration of the block (waits while another run holds it)."""
    name = ensure_site_limit(site_name)
    lease = float(os.environ.get("SITEWATCH_SITE_LEASE_SECONDS", "300"))
    wait = float(os.environ.get("SITEWATCH_SITE_WAIT_SECONDS", "21600"))
    log = get_run_logger()
    log.info("site %s: waiting for the site's run slot (%s) if another run holds it", site_name, name)
    t0 = time.monotonic()
    with ExitStack() as held:
        try:
            held.enter_context(concurrency(name, occupy=1, strict=True, lease_duration=lease, timeout_seconds=wait))
        except TimeoutError:
            raise TimeoutError(f"site {site_name}: run slot {name} still held by another run after {wait:.0f} s "
                               "(SITEWATCH_SITE_WAIT_SECONDS); is a run of this site stuck?") from None
        log.info("site %s: run slot %s acquired after %.1f s", site_name, name, time.monotonic() - t0)
        yield
