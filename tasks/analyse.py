"""Task: masks, change and change objects for one scene of one site."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sitewatch.analysis import AnalysisParams, SlotResult, analyse_slot
from sitewatch.config import SiteConfig
from sitewatch.kernels.baseline import BaselineParams
from sitewatch.kernels.change import ChangeParams

from ._dask import dask_client


def analysis_params(cfg: SiteConfig) -> AnalysisParams:
    profile = cfg.profile()
    return AnalysisParams(
        baseline=BaselineParams(window=cfg.baseline_window, season_days=cfg.baseline_season_days),
        change=ChangeParams(threshold=cfg.change_threshold,
                            grow_threshold=min(ChangeParams().grow_threshold or cfg.change_threshold, cfg.change_threshold)),
        min_object_area_m2=cfg.min_alert_area_m2,
        mask_method=cfg.mask_method,
        qa_band=profile.qa_band,
        qa_kind=profile.qa_kind,
        work_chunk_px=cfg.work_chunk_size,
        hold_max_bytes=None if cfg.hold_max_mib is None else cfg.hold_max_mib * 2**20,
        streamed_chunk_px=cfg.strip_size,
    )


@task(name="analyse-scene", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE, task_run_name="analyse-slot-{index}")
def analyse_scene(cfg: SiteConfig, index: int) -> SlotResult:
    site = cfg.to_site()
    with dask_client():
        res = analyse_slot(site.cube_url, index, site.grid, cfg.bands, analysis_params(cfg))
    log = get_run_logger()
    log.info(
        "analysed %s (%s): %.0f%% cloud/shadow (masks: %s%s), baseline from %d scene(s) (%s), %s",
        res.scene_id, res.time[:10], 100 * res.cloud_fraction, "+".join(res.mask_methods) or "none",
        f", shadows projected {res.shadow_length_px} px from their clouds" if res.shadow_length_px is not None else "",
        res.n_baseline_scenes, {"state": "stored state", "rebuilt": "rebuilt from the cube"}.get(res.baseline_source, "none"),
        f"{len(res.detections)} change object(s) >= {cfg.min_alert_area_m2:.0f} m2" if res.change_state == "ok"
        else f"no change computed: {res.change_state}",
    )
    if res.baseline_source == "rebuilt":
        log.info("site %s, scene %s: baseline %s", cfg.name, res.scene_id, res.baseline_note)
    for note in res.mask_notes:
        log.info("site %s, scene %s: %s", cfg.name, res.scene_id, note)
    return res
