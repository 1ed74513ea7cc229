"""Scenes in a plain folder layout, without STAC: ``<source>/<scene_id>/<asset>.tif``.

Each folder holding GeoTIFFs is a scene; its name is the scene id. Asset keys are the file stems
(a ``<scene_id>_`` prefix, as in USGS file names ``LC08_..._T1_SR_B4.TIF``, is dropped: key
``SR_B4``). The acquisition time comes from the scene id (:func:`scene_time`); the footprint,
CRS and nodata from the GeoTIFF header of one asset (a header read: a few KiB of a COG).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import rasterio
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_bounds
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ..models import SceneRef
from . import store

RASTER_SUFFIXES = (".tif", ".tiff")
_UTC = dt.timezone.utc

# Sentinel-2 SAFE (S2A_MSIL2A_20240105T083341_...) and anything else with YYYYMMDDTHHMMSS
_COMPACT_DATETIME = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?!\d)")
# Landsat pre-Collection ids: LE70350322008118EDC00 = sensor, path, row, year, day of year, station, version
_LANDSAT_LEGACY = re.compile(r"^L[A-Z]\d(\d{3})(\d{3})(\d{4})(\d{3})[A-Z]{3}\d{2}$")
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):?(\d{2}):?(\d{2}))?(?!\d)")
# Landsat C2 (LC08_L2SP_174036_20240105_20240115_02_T1: the first date is the acquisition),
# Earth Search Sentinel-2 (S2B_36SYC_20240105_0_L2A), any YYYYMMDD on its own
_COMPACT_DATE = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")


def _make(y: str, m: str, d: str, hh: str | None = None, mm: str | None = None, ss: str | None = None) -> dt.datetime | None:
    try:
        t = dt.datetime(int(y), int(m), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=_UTC)
    except ValueError:
        return None
    return t if 1972 <= t.year <= 2100 else None


def scene_time(scene_id: str) -> dt.datetime | None:
    """The acquisition time (UTC) a scene id states, or None. Understands Sentinel-2 product
    ids (``S2A_MSIL2A_20240105T083341_...``: date and time), Earth Search Sentinel-2 ids
    (``S2B_36SYC_20240105_0_L2A``), Landsat Collection 2 ids
    (``LC08_L2SP_174036_20240105_20240115_02_T1``: the first date), Landsat pre-Collection ids
    (``LE70350322008118EDC00``: year and day of year) and a plain ``YYYYMMDD`` or ``YYYY-MM-DD``
    anywhere in the id (the first valid one; time of day 00:00 unless given)."""
    for m in _COMPACT_DATETIME.finditer(scene_id):
        t = _make(*m.groups())
        if t:
            return t
    m = _LANDSAT_LEGACY.match(scene_id)
    if m:
        year, doy = int(m.group(3)), int(m.group(4))
        if 1972 <= year <= 2100 and 1 <= doy <= 366:
            t = dt.datetime(year, 1, 1, tzinfo=_UTC) + dt.timedelta(days=doy - 1)
            if t.year == year:
                return t
    for pattern in (_ISO_DATE, _COMPACT_DATE):
        for m in pattern.finditer(scene_id):
            t = _make(*m.groups())
            if t:
                return t
    return None


def asset_key(stem: str, scene_id: str) -> str:
    """The asset key of a file stem: the stem, less a leading ``<scene_id>_``."""
    prefix = f"{scene_id}_"
    return stem[len(prefix):] if stem.startswith(prefix) and len(stem) > len(prefix) else stem


def _header(url: str) -> tuple[BaseGeometry, dict[str, Any]]:
    """Footprint (lon/lat) and pixel metadata from one GeoTIFF's header."""
    try:
        with rasterio.open(store.gdal_path(url)) as src:
            if src.crs is None:
                raise ValueError(f"GeoTIFF {url!r} has no CRS; expected a georeferenced GeoTIFF")
            west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
            meta: dict[str, Any] = {"data_type": src.dtypes[0]}
            if src.nodata is not None:
                meta["nodata"] = src.nodata
            if src.scales and src.scales[0] not in (None, 1.0):
                meta["scale"] = src.scales[0]
            if src.offsets and src.offsets[0] not in (None, 0.0):
                meta["offset"] = src.offsets[0]
    except RasterioIOError as exc:
        raise ValueError(f"GeoTIFF {url!r} cannot be read: {exc}") from exc
    return box(west, south, east, north), meta


def find_layout_scenes(
    source: str,
    files: Sequence[str],
    storage_options: dict[str, Any] | None = None,
    keep_early: Callable[[str, dt.datetime | None], bool] = lambda sid, when: True,
) -> tuple[list[tuple[SceneRef, BaseGeometry | None]], list[str]]:
    """Scenes among ``files`` (every file URL under ``source``, as :func:`store.list_files`
    gives them): ``(scene, footprint)`` pairs and problems (``"<url>: <error>"``). ``keep_early``
    drops scenes by id and time before any header is read. GDAL reads the headers, with the S3
    endpoint taken from the environment (:func:`store.configure_gdal_s3_from_env`)."""
    base = store.normalise_url(source).rstrip("/")
    folders: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for url in sorted(files):
        if not url.lower().endswith(RASTER_SUFFIXES):
            continue
        rel = url[len(base):].lstrip("/") if url.startswith(base) else posixpath.basename(url)
        folder, _, name = rel.rpartition("/")
        if not folder:
            problems.append(f"{url}: GeoTIFF directly under the source; expected <source>/<scene_id>/<asset>.tif")
            continue
        scene_id = posixpath.basename(folder)
        key = asset_key(name.rsplit(".", 1)[0], scene_id)
        folders.setdefault(folder, {}).setdefault(key, url)
    todo: list[tuple[str, str, dt.datetime, dict[str, str]]] = []
    for folder, assets in folders.items():
        scene_id = posixpath.basename(folder)
        when = scene_time(scene_id)
        folder_url = f"{base}/{folder}"
        if when is None:
            if keep_early(scene_id, None):
                problems.append(f"{folder_url}: cannot tell the acquisition time from scene id {scene_id!r}; expected a "
                                "Sentinel-2 or Landsat product id, or a YYYYMMDD / YYYY-MM-DD date in the folder name")
            continue
        if keep_early(scene_id, when):
            todo.append((scene_id, folder_url, when, assets))
    if any(store.protocol_of(u) != "file" for _, u, _, _ in todo):
        store.configure_gdal_s3_from_env()

    def one(job: tuple[str, str, dt.datetime, dict[str, str]]) -> tuple[SceneRef | None, BaseGeometry | None, str | None]:
        scene_id, folder_url, when, assets = job
        probe = assets[sorted(assets)[0]]
        try:
            footprint, meta = _header(probe)
        except Exception as exc:
            if store.is_transient(exc):
                raise
            return None, None, f"{probe}: scene {scene_id!r}: {exc}"
        ref = SceneRef(scene_id=scene_id, datetime=when, assets=dict(assets), item_href=folder_url,
                       nodata=meta.get("nodata"), asset_meta={sorted(assets)[0]: meta})
        return ref, footprint, None

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, todo))
    found = [(r, g) for r, g, e in results if r is not None]
    problems += [e for _, _, e in results if e is not None]
    return found, problems
