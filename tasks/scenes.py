"""Tasks that find scenes and bring them into a site's cube."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sitewatch import quarantine
from sitewatch.config import SiteConfig
from sitewatch.io import cube as cube_io
from sitewatch.io import discovery
from sitewatch.io import scenes as scene_io
from sitewatch.io import store
from sitewatch.models import SceneRef

from ._dask import dask_client
from .storage import call_with_retries


def _not_bad_input(task, task_run, state) -> bool:
    """Retry transient failures (connection refused or reset, timeouts, HTTP 5xx: see
    ``store.is_transient``) and unexpected errors, not bad input (a SceneError, a missing
    bucket, a missing object, access denied)."""
    try:
        state.result()
    except Exception as exc:
        if store.is_transient(exc):
            return True
        return not isinstance(exc, (scene_io.SceneError, store.StoreError, FileNotFoundError, PermissionError))
    return False


@task(name="find-new-scenes", retries=2, retry_delay_seconds=5, retry_condition_fn=_not_bad_input, cache_policy=NO_CACHE)
def find_new_scenes(cfg: SiteConfig, start=None, end=None) -> tuple[list[SceneRef], list[str]]:
    """Scenes in the site's source (``cfg.discovery``: STAC items, a static catalog, a STAC API
    or a plain folder layout) that intersect the site, are in ``cfg.collections``, pass
    ``cfg.max_cloud``, were acquired in ``[start, end]`` (datetimes or ISO strings, None: open;
    a backfill's date range) and are not yet committed to its cube. Returns ``(new, problems)``:
    ``problems`` are ``"<url>: <error>"`` lines for items that could not be used."""
    log = get_run_logger()
    site = cfg.to_site()
    opts = cfg.storage_options or None
    done = {s.scene_id for s in cube_io.slots(site.cube_url, opts) if s.ingested}
    found = discovery.discover(site.source, site.geometry, method=cfg.discovery, collections=cfg.collections,
                               max_cloud=cfg.max_cloud, storage_options=opts, exclude_ids=done, start=start, end=end)
    new = list(found.scenes)
    cloud = f", {found.cloudy} over max_cloud {cfg.max_cloud:g}%" if cfg.max_cloud is not None else ""
    if start is not None or end is not None:
        cloud += f", {found.out_of_time} outside {start or '...'} to {end or '...'}"
    log.info("site %s: %s discovery in %s: %d scene(s) found, %d already in the cube, %d not over the site, "
             "%d in other collections%s: %d new", site.name, found.method, store.redact(site.source), found.matched,
             found.excluded, found.outside, found.other_collection, cloud, len(new))
    for p in found.problems:
        log.error("site %s: unusable scene or item: %s", site.name, store.redact(p))
    return new, list(found.problems)


@task(name="validate-scenes", cache_policy=NO_CACHE)
def validate_scenes(cfg: SiteConfig, refs: list[SceneRef]) -> tuple[list[SceneRef], list[dict[str, str]]]:
    """Open every band header of every scene (a thread per scene; headers only): an unreadable
    file, a missing band, no CRS or no overlap with the site rejects the scene with a message
    naming it. Returns ``(usable, rejected)``."""
    site = cfg.to_site()
    grid = site.grid
    log = get_run_logger()

    profile = cfg.profile()

    def check(ref: SceneRef) -> str | None:
        def retrying(attempt: int, wait: float, exc: BaseException) -> None:
            log.warning("scene %s: transient error (attempt %d), retrying in %.1f s: %s", ref.scene_id, attempt, wait,
                        store.redact(str(exc)))

        try:
            call_with_retries(lambda: scene_io.validate_scene(ref, grid, cfg.bands, profile), on_retry=retrying)
        except scene_io.SceneError as exc:
            return store.redact(str(exc))
        except Exception as exc:  # storage trouble that outlived the retries: skip the scene, name it
            return store.redact(f"scene {ref.scene_id!r} ({ref.item_href or 'no item'}): {type(exc).__name__}: {exc}")
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        errors = list(pool.map(check, refs))
    ok = [r for r, e in zip(refs, errors) if e is None]
    rejected = [{"scene_id": r.scene_id, "error": e} for r, e in zip(refs, errors) if e is not None]
    for r in rejected:
        log.error("rejected scene %s: %s", r["scene_id"], r["error"])
    return ok, rejected


@task(name="prepare-cube", retries=2, retry_delay_seconds=5, retry_condition_fn=_not_bad_input, cache_policy=NO_CACHE)
def prepare_cube(cfg: SiteConfig, refs: list[SceneRef]) -> dict[str, int]:
    """Create the cube or extend it with a slot per new scene (recording the site's sensor
    profile as the slots' ``sensor``); returns ``{scene_id: slot}``."""
    site = cfg.to_site()
    profile = cfg.profile()
    with dask_client():
        slots = cube_io.extend(site.cube_url, site.grid, cfg.bands, [(r.scene_id, r.datetime) for r in refs], chunk=cfg.chunk_size,
                               qa=cube_io.qa_for_profile(profile), sensor=profile)
    get_run_logger().info("site %s: cube %s has slots for %d new scene(s)", site.name, site.cube_url, len(refs))
    return slots


def _failing_band(ref: SceneRef, grid, bands, chunks: int, profile) -> tuple[str, str] | None:
    """After a failed ingest: which band fails to read over the site window, and its object
    (GDAL's own message often names no file). Reads each band again; only on this failure path."""
    for b in bands:
        try:
            scene_io.read_scene(ref, grid, [b], chunks=chunks, profile=profile)[b].compute(scheduler="synchronous")
        except Exception as exc:
            return b, quarantine.object_named(str(exc), ref.assets.get(b, ref.item_href))
    return None


@task(name="ingest-scene", retries=2, retry_delay_seconds=5, retry_condition_fn=_not_bad_input, cache_policy=NO_CACHE,
      task_run_name="ingest-{ref.scene_id}")
def ingest_scene(cfg: SiteConfig, ref: SceneRef, index: int) -> dict:
    """Read one scene lazily onto the site grid and write it into its cube slot."""
    site = cfg.to_site()
    ds = scene_io.read_scene(ref, site.grid, cfg.bands, chunks=cfg.chunk_size, profile=cfg.profile())
    try:
        with dask_client():
            # parallel writers leave the commit to the flow (commit_scenes): one writer of per-time values
            valid_fraction = cube_io.write_scene_slice(site.cube_url, index, ds, commit_slot=False)
    except Exception as exc:  # a lazy COG read failed mid-write: the slot stays uncommitted
        gdal_failed = "Rasterio" in type(exc).__name__ or "RasterioIOError" in str(exc) or "CPLE_" in str(exc)
        if store.is_transient(exc) or isinstance(exc, scene_io.SceneError) or not gdal_failed:
            raise
        bad = _failing_band(ref, site.grid, cfg.bands, cfg.chunk_size, cfg.profile())
        what = f"band {bad[0]!r} file {bad[1]!r}" if bad else "its bands"
        raise scene_io.SceneError(f"scene {ref.scene_id!r}: reading {what} into slot {index} failed "
                                  f"(corrupt or truncated?): {type(exc).__name__}: {exc}") from exc
    get_run_logger().info("wrote %s (%s) into slot %d: %.0f%% valid", ref.scene_id, ref.datetime.date(), index, 100 * valid_fraction)
    return {"scene_id": ref.scene_id, "index": index, "valid_fraction": valid_fraction}


@task(name="commit-scenes", retries=2, retry_delay_seconds=2, retry_condition_fn=_not_bad_input, cache_policy=NO_CACHE)
def commit_scenes(cfg: SiteConfig, written: list[dict]) -> None:
    """Commit slots written by :func:`ingest_scene` (``{"index", "valid_fraction", "scene_id"}``):
    from here on readers see them. Called by the flow, the one writer of the site's per-time values."""
    site = cfg.to_site()
    cube_io.commit(site.cube_url, {w["index"]: {"valid_fraction": w["valid_fraction"], "ingested": True} for w in written})
    get_run_logger().info("site %s: committed %s", site.name, ", ".join(f"{w['scene_id']} (slot {w['index']})" for w in written))
