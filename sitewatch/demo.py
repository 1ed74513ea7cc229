"""The demo site: synthetic scenes of Khmeimim air base written into a scene store as COGs +
STAC items, and the site configuration that watches them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .config import SiteConfig
from .io import scenes as scene_io
from .io import store
from .synthetic import BANDS, NODATA, SyntheticSeries


def write_synthetic_scenes(
    series: SyntheticSeries,
    source: str,
    progress: Callable[[int, int, str], None] | None = None,
    storage_options: dict[str, Any] | None = None,
    threads: int = 2,
) -> list[str]:
    """Write every scene of ``series`` under ``source`` (skipping scenes already there);
    returns the STAC item URLs in date order."""

    def one(i: int) -> str:
        sc = series.scene(i)
        url = store.join(source, sc.scene_id, f"{sc.scene_id}.json")
        if not store.exists(url, storage_options):
            props = {
                "platform": "synthetic", "constellation": "sitewatch-demo",
                "eo:cloud_cover": round(100 * sc.cloud_fraction, 2),
                "view:sun_azimuth": round(sc.sun_azimuth, 3), "view:sun_elevation": round(sc.sun_elevation, 3),
            }
            bands = {b: sc.bands[k] for k, b in enumerate(BANDS)}
            url = scene_io.write_scene(source, sc.scene_id, sc.datetime, bands, series.grid, NODATA, props, storage_options=storage_options)
        return url

    urls: list[str] = [""] * len(series)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for done, (i, url) in enumerate(zip(range(len(series)), pool.map(one, range(len(series)))), start=1):
            urls[i] = url
            if progress:
                progress(done, len(series), url)
    return urls


def demo_site_config(series: SyntheticSeries, source: str, store_url: str, name: str = "khmeimim-demo", **overrides: Any) -> SiteConfig:
    """A site config whose grid is exactly the synthetic series' grid."""
    g = series.grid
    return SiteConfig(
        name=name, crs=g.crs, bounds=g.bounds, resolution=g.resolution, source=source, store=store_url,
        bands=BANDS, chunk_size=overrides.pop("chunk_size", 1024), **overrides,
    )
