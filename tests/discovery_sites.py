"""Scenes for the discovery tests (test_discovery, test_layout, test_stac_api): a small site
near Khmeimim and one far from it, scenes written on them, STAC API items, uploads to S3."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from shapely.geometry import box, mapping

from sitewatch.grid import SiteGrid
from sitewatch.io import scenes as S

UTC = dt.timezone.utc
BANDS = ("blue", "red", "nir")
# a 64 x 80 px site at 10 m in UTM 36N (near Khmeimim)
SITE = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=80, height=64)
FAR = SiteGrid(crs="EPSG:32636", x0=500000.0, y0=4100000.0, resolution=10.0, width=80, height=64)


def arrays(grid: SiteGrid, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {b: rng.integers(1, 10000, size=grid.shape, dtype=np.uint16) for b in BANDS}


def when(day: int) -> dt.datetime:
    return dt.datetime(2026, 1, day, 8, 30, tzinfo=UTC)


def site_footprint() -> dict:
    """The SITE grid's footprint in lon/lat, shrunk to lie strictly inside it."""
    from rasterio.warp import transform_bounds

    return mapping(box(*transform_bounds(SITE.crs, "EPSG:4326", *SITE.bounds)).buffer(-1e-4))



def api_items_for(root: Path, specs: list[tuple[str, int, SiteGrid, float | None, str]], asset_root: str | None = None) -> list[dict]:
    """Write scenes and return their items as a STAC API serves them: absolute asset hrefs,
    collection, eo:cloud_cover."""
    items = []
    for sid, day, grid, cloud, coll in specs:
        url = S.write_scene(str(root), sid, when(day), arrays(grid), grid,
                            properties={} if cloud is None else {"eo:cloud_cover": cloud})
        item = json.loads(Path(url).read_text())
        for k, a in item["assets"].items():
            a["href"] = f"{asset_root or root}/{sid}/{k}.tif"
        item["collection"] = coll
        items.append(item)
    return items


def upload(client, bucket: str, folder: Path, prefix: str) -> list[str]:
    keys = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            key = f"{prefix}/{p.relative_to(folder).as_posix()}"
            client.upload_file(str(p), bucket, key)
            keys.append(key)
    return keys
