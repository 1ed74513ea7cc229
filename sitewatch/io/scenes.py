"""Scene files in an object store: writing COG + STAC scenes, finding them, reading them
lazily onto a site grid.

Layout written by :func:`write_scene` (and found by :mod:`sitewatch.io.discovery`)::

    <source>/<scene_id>/<scene_id>.json     STAC item (pystac), assets keyed by eo common name
    <source>/<scene_id>/<band>.tif          one single-band Cloud-Optimized GeoTIFF per band

Reading goes through GDAL (rasterio) with a WarpedVRT onto the site grid, wrapped by
rioxarray with dask chunks: nothing is read until a chunk is computed, and only the COG tiles
that a chunk needs are fetched.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Sequence

import numpy as np
import pystac
import rasterio
import rioxarray
import xarray as xr
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping

from ..grid import SiteGrid
from ..models import SceneRef
from . import store


class SceneError(ValueError):
    """A scene that cannot be used: unreadable file, missing band, no overlap with the site."""


# ---------------------------------------------------------------- writing

def cog_bytes(array: np.ndarray, grid: SiteGrid, nodata: float | None = 0, blocksize: int = 256) -> bytes:
    """A single-band Cloud-Optimized GeoTIFF (deflate, internal tiles, overviews) as bytes."""
    if array.ndim != 2 or array.shape != grid.shape:
        raise ValueError(f"COG band shape got {array.shape!r}; expected the grid shape {grid.shape!r}")
    profile = dict(
        driver="COG", width=grid.width, height=grid.height, count=1, dtype=array.dtype.name,
        crs=grid.crs, transform=grid.transform, nodata=nodata, compress="deflate",
        blocksize=blocksize, overview_resampling="nearest",
    )
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(array, 1)
        return mem.read()


def write_scene(
    source: str,
    scene_id: str,
    when: dt.datetime,
    bands: dict[str, np.ndarray],
    grid: SiteGrid,
    nodata: float | None = 0,
    properties: dict[str, Any] | None = None,
    scale: float = 1e-4,
    storage_options: dict[str, Any] | None = None,
    common_names: dict[str, str] | None = None,
) -> str:
    """Write one scene (COG per band + STAC item) under ``source``; returns the item's URL.
    ``bands`` are keyed by asset key; ``common_names`` gives their eo common names where the
    keys are not (default: the key itself)."""
    if not bands:
        raise ValueError(f"scene {scene_id!r}: bands got an empty mapping; expected at least one band")
    if when.tzinfo is None:
        raise ValueError(f"scene {scene_id!r}: datetime got naive {when!r}; expected a timezone-aware UTC datetime")
    folder = store.join(source, scene_id)
    west, south, east, north = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)
    item = pystac.Item(
        id=scene_id,
        geometry=mapping(box(west, south, east, north)),
        bbox=[west, south, east, north],
        datetime=when,
        properties=dict(properties or {}),
    )
    item.properties["proj:code"] = grid.crs
    item.properties["proj:shape"] = list(grid.shape)
    item.properties["proj:transform"] = list(grid.transform)[:6]
    for name, arr in bands.items():
        href = store.join(folder, f"{name}.tif")
        store.write_bytes(href, cog_bytes(np.asarray(arr), grid, nodata), storage_options)
        item.add_asset(
            name,
            pystac.Asset(
                href=f"./{name}.tif",
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields={
                    "eo:bands": [{"name": name, "common_name": (common_names or {}).get(name, name)}],
                    "raster:bands": [{"nodata": nodata, "scale": scale, "offset": 0.0, "data_type": np.asarray(arr).dtype.name}],
                },
            ),
        )
    item_url = store.join(folder, f"{scene_id}.json")
    # Write the item last: a scene is discoverable only once all its files are in place.
    store.write_json(item_url, item.to_dict(include_self_link=False, transform_hrefs=False), storage_options)
    return item_url


def add_asset(
    item_url: str,
    key: str,
    array: np.ndarray,
    grid: SiteGrid,
    nodata: float | None = None,
    roles: Sequence[str] = ("data",),
    extra: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Add one more single-band COG asset (e.g. a QA or class raster, with its own nodata and no
    scaling) to a scene written by :func:`write_scene`; the item is rewritten after the file is
    in place. Returns the asset's URL."""
    item = store.read_json(item_url, storage_options)
    if key in item.get("assets", {}):
        raise ValueError(f"scene {item.get('id')!r}: asset key got {key!r}, which the item already has; expected a new key")
    href = store.join(item_url.rsplit("/", 1)[0], f"{key}.tif")
    store.write_bytes(href, cog_bytes(np.asarray(array), grid, nodata), storage_options)
    item["assets"][key] = {
        "href": f"./{key}.tif", "type": str(pystac.MediaType.COG), "roles": list(roles),
        "raster:bands": [{"nodata": nodata, "data_type": np.asarray(array).dtype.name}],
        **(extra or {}),
    }
    store.write_json(item_url, item, storage_options)
    return href


# ---------------------------------------------------------------- reading

def _open_band(href: str, scene_id: str, band: str, grid: SiteGrid, chunks: int) -> xr.DataArray:
    path = store.gdal_path(href)
    try:
        src = rasterio.open(path)
    except RasterioIOError as exc:
        raise SceneError(f"scene {scene_id!r}: band {band!r} file {href!r} cannot be read: {exc}") from exc
    with src:
        if src.crs is None:
            raise SceneError(f"scene {scene_id!r}: band {band!r} file {href!r} has no CRS; expected a georeferenced GeoTIFF")
        if src.count < 1:
            raise SceneError(f"scene {scene_id!r}: band {band!r} file {href!r} holds no raster band")
        left, bottom, right, top = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
        gl, gb, gr, gt = grid.bounds
        if right <= gl or left >= gr or top <= gb or bottom >= gt:
            raise SceneError(
                f"scene {scene_id!r}: band {band!r} ({src.crs.to_string()}, bounds {tuple(round(v) for v in src.bounds)}) "
                f"does not overlap the site grid ({grid.crs}, bounds {tuple(round(v) for v in grid.bounds)})"
            )
        nodata = src.nodata if src.nodata is not None else 0
        vrt = WarpedVRT(
            src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
            resampling=Resampling.nearest, nodata=nodata, src_nodata=nodata,
        )
        da = rioxarray.open_rasterio(vrt, chunks={"band": 1, "y": chunks, "x": chunks}, lock=False, masked=False)
    da = da.squeeze("band", drop=True).drop_vars("spatial_ref", errors="ignore")
    da.attrs = {"nodata": nodata}
    da.encoding = {}
    return da


def read_scene(ref: SceneRef, grid: SiteGrid, bands: Sequence[str], chunks: int = 512) -> xr.Dataset:
    """The scene on the site grid as a lazy Dataset: one uint16 ``(y, x)`` variable per band and
    ``valid`` (True where every band has data). Raises :class:`SceneError` naming the scene and
    the band for a missing band, an unreadable file or no overlap with the site."""
    missing = [b for b in bands if b not in ref.assets]
    if missing:
        raise SceneError(
            f"scene {ref.scene_id!r} lacks band(s) {missing!r}; expected assets {list(bands)!r}, "
            f"found {sorted(ref.assets)!r}"
        )
    arrays = {b: _open_band(ref.assets[b], ref.scene_id, b, grid, chunks) for b in bands}
    valid = None
    for b, a in arrays.items():
        ok = a != a.attrs["nodata"]
        valid = ok if valid is None else (valid & ok)
    ds = xr.Dataset({b: a.astype("uint16") for b, a in arrays.items()})
    ds["valid"] = valid
    coords = grid.coords()
    ds = ds.assign_coords(y=coords["y"], x=coords["x"])
    return ds


def validate_scene(ref: SceneRef, grid: SiteGrid, bands: Sequence[str]) -> None:
    """Open every band file and check georeference and overlap (reads headers only)."""
    read_scene(ref, grid, bands, chunks=max(grid.width, grid.height))
