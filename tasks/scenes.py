"""Tasks that find scenes and bring them into a site's cube."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sitewatch.config import SiteConfig
from sitewatch.io import cube as cube_io
from sitewatch.io import discovery
from sitewatch.io import scenes as scene_io
from sitewatch.models import SceneRef

from ._dask import dask_client


def _not_bad_input(task, task_run, state) -> bool:
    """Retry transient failures (network, storage), not bad input (a clear SceneError)."""
    try:
        state.result()
    except scene_io.SceneError:
        return False
    except Exception:
        return True
    return False


@task(name="find-new-scenes", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def find_new_scenes(cfg: SiteConfig) -> tuple[list[SceneRef], list[str]]:
    """Scenes in the site's source that intersect the site and are not yet committed to its cube."""
    log = get_run_logger()
    site = cfg.to_site()
    found, problems = discovery.find_scenes(site.source, site.geometry)
    done = {s.scene_id for s in cube_io.slots(site.cube_url) if s.ingested}
    new = [s for s in found if s.scene_id not in done]
    log.info("site %s: %d scene(s) in source, %d already in the cube, %d new", site.name, len(found), len(found) - len(new), len(new))
    for p in problems:
        log.error("site %s: unusable STAC item: %s", site.name, p)
    return new, problems


@task(name="validate-scenes", cache_policy=NO_CACHE)
def validate_scenes(cfg: SiteConfig, refs: list[SceneRef]) -> tuple[list[SceneRef], list[dict[str, str]]]:
    """Open every band header of every scene (a thread per scene; headers only): an unreadable
    file, a missing band, no CRS or no overlap with the site rejects the scene with a message
    naming it. Returns ``(usable, rejected)``."""
    site = cfg.to_site()
    grid = site.grid
    log = get_run_logger()

    def check(ref: SceneRef) -> str | None:
        try:
            scene_io.validate_scene(ref, grid, cfg.bands)
        except scene_io.SceneError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        errors = list(pool.map(check, refs))
    ok = [r for r, e in zip(refs, errors) if e is None]
    rejected = [{"scene_id": r.scene_id, "error": e} for r, e in zip(refs, errors) if e is not None]
    for r in rejected:
        log.error("rejected scene %s: %s", r["scene_id"], r["error"])
    return ok, rejected


@task(name="prepare-cube", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def prepare_cube(cfg: SiteConfig, refs: list[SceneRef]) -> dict[str, int]:
    """Create the cube or extend it with a slot per new scene; returns ``{scene_id: slot}``."""
    site = cfg.to_site()
    with dask_client():
        slots = cube_io.extend(site.cube_url, site.grid, cfg.bands, [(r.scene_id, r.datetime) for r in refs], chunk=cfg.chunk_size)
    get_run_logger().info("site %s: cube %s has slots for %d new scene(s)", site.name, site.cube_url, len(refs))
    return slots


@task(name="ingest-scene", retries=2, retry_delay_seconds=5, retry_condition_fn=_not_bad_input, cache_policy=NO_CACHE,
      task_run_name="ingest-{ref.scene_id}")
def ingest_scene(cfg: SiteConfig, ref: SceneRef, index: int) -> dict:
    """Read one scene lazily onto the site grid and write it into its cube slot."""
    site = cfg.to_site()
    ds = scene_io.read_scene(ref, site.grid, cfg.bands, chunks=cfg.chunk_size)
    with dask_client():
        valid_fraction = cube_io.write_scene_slice(site.cube_url, index, ds)
    get_run_logger().info("ingested %s (%s) into slot %d: %.0f%% valid", ref.scene_id, ref.datetime.date(), index, 100 * valid_fraction)
    return {"scene_id": ref.scene_id, "index": index, "valid_fraction": valid_fraction}
