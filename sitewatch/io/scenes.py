"""Scene files in an object store: writing COG + STAC scenes, finding them, reading them
lazily onto a site grid.

Layout written by :func:`write_scene` (and found by :mod:`sitewatch.io.discovery`)::

    <source>/<scene_id>/<scene_id>.json     STAC item (pystac), assets keyed by eo common name
    <source>/<scene_id>/<band>.tif          one single-band Cloud-Optimized GeoTIFF per band

Reading (:func:`read_scene`) maps asset keys to bands and pixel values to reflectance through a
sensor profile (:mod:`sitewatch.sensors`), and puts every band onto the site grid through GDAL
(rasterio): each dask chunk opens the object (``/vsis3/`` for ``s3://``), lays a WarpedVRT of the
whole site grid over it and reads the chunk's window, so nothing is read until a chunk is
computed, only the COG tiles that a chunk needs are fetched, a chunked read equals a whole-grid
read pixel for pixel, and the graph holds only plain values (it pickles to worker processes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Sequence

import numpy as np
import pystac
import rasterio

import xarray as xr
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping

from ..grid import SiteGrid
from ..models import SceneRef
from ..sensors import BandSpec, SensorProfile, get_profile
from ..sensors import SceneError as _SceneError
from . import lattice, store


# A scene that cannot be used (unreadable file, missing band, no CRS, no overlap with the site):
# defined in sitewatch.sensors so that profiles can raise it too; the same class.
SceneError = _SceneError


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

@dataclass(frozen=True)
class BandSource:
    """One asset of a scene as it is read onto a site grid (plain values: pickles to Dask
    workers). Reflectance: ``cube value = DN * a + b`` (``a = scale * 10000``, ``b = offset *
    10000``), rounded and clipped to [1, 65535], 0 where there is no data. QA: values as they
    are, ``fill`` where there is no data."""

    scene_id: str
    band: str
    key: str
    href: str
    grid: SiteGrid
    qa: bool
    a: float
    b: float
    nodata: float | None
    fill: int
    resampling: str


def _describe(src: rasterio.io.DatasetReader) -> str:
    return f"{src.crs.to_string() if src.crs else 'no CRS'}, {src.width} x {src.height} px, bounds {tuple(round(v) for v in src.bounds)}"


def _open(href: str, scene_id: str, band: str) -> rasterio.io.DatasetReader:
    try:
        return rasterio.open(store.gdal_path(href))
    except Exception as exc:
        if store.is_transient(exc):
            raise
        raise SceneError(f"scene {scene_id!r}: band {band!r} object {href!r} cannot be opened as a raster: "
                         f"{store.redact(str(exc))}") from exc


def _source_res_in_grid(src: rasterio.io.DatasetReader, grid: SiteGrid, bounds_in_grid: tuple[float, ...]) -> float:
    """The source's pixel size in site-grid units (metres), for choosing the resampling."""
    if src.crs == rasterio.crs.CRS.from_user_input(grid.crs):
        return float(np.sqrt(abs(src.transform.a * src.transform.e)))
    left, bottom, right, top = bounds_in_grid
    return float(np.sqrt(abs((right - left) / src.width * (top - bottom) / src.height)))


def _resampling(ratio: float, qa: bool) -> str:
    """Nearest for QA and equal resolutions, bilinear when upsampling a coarser band, average
    when downsampling a finer one."""
    if qa or abs(ratio - 1.0) < 0.01:
        return "nearest"
    return "bilinear" if ratio > 1.0 else "average"


def _probe(ref: SceneRef, band: str, key: str, spec: BandSpec, profile: SensorProfile, grid: SiteGrid,
           check_read: bool = False) -> BandSource:
    """Read one asset's header: georeference, band count, overlap with the site, nodata and
    resolution; with ``check_read`` also read the stored tile of the site window that lies
    furthest into the file (a truncated or corrupt file fails here, not half-way through an
    ingest). Raises :class:`SceneError` naming the scene, the band and the object."""
    href = ref.assets[key]
    where = f"scene {ref.scene_id!r}: band {band!r} object {href!r}"
    src = _open(href, ref.scene_id, band)
    with src:
        if src.crs is None:
            raise SceneError(f"{where} has no CRS; expected a georeferenced GeoTIFF")
        if src.count != 1:
            raise SceneError(f"{where} holds {src.count} raster bands; expected 1 (one object per band)")
        try:
            in_grid = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
        except Exception as exc:
            raise SceneError(f"{where} ({_describe(src)}): its bounds cannot be put into the site CRS {grid.crs}: {exc}") from exc
        left, bottom, right, top = in_grid
        gl, gb, gr, gt = grid.bounds
        if not all(np.isfinite(in_grid)) or right <= gl or left >= gr or top <= gb or bottom >= gt:
            raise SceneError(f"{where} ({_describe(src)}) does not overlap the site grid "
                             f"({grid.crs}, bounds {tuple(round(v) for v in grid.bounds)})")
        meta = profile.pixel_meta(ref, key, spec)
        nodata = next((v for v in (meta["nodata"], src.nodata, meta["nodata_default"]) if v is not None), None)
        ratio = _source_res_in_grid(src, grid, in_grid) / grid.resolution
        if check_read:
            _check_read(src, grid, where)
    if spec.qa:
        fill = int(nodata) if nodata is not None and np.isfinite(nodata) else 0
        return BandSource(ref.scene_id, band, key, href, grid, True, 1.0, 0.0, nodata, fill, "nearest")
    return BandSource(ref.scene_id, band, key, href, grid, False, meta["scale"] * 1e4, meta["offset"] * 1e4,
                      nodata, 0, _resampling(ratio, False))


def _check_read(src: rasterio.io.DatasetReader, grid: SiteGrid, where: str) -> None:
    """Read the tile of the site window stored furthest into the file (or, without tile
    offsets, a small window at the centre of the site window)."""
    from rasterio.windows import Window, from_bounds

    try:
        site = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        win = from_bounds(*site, transform=src.transform).intersection(Window(0, 0, src.width, src.height))
    except Exception:  # no intersection after rounding: the whole file's first tile
        win = Window(0, 0, min(src.width, 256), min(src.height, 256))
    by, bx = src.block_shapes[0]
    r0, c0 = int(win.row_off) // by, int(win.col_off) // bx
    r1 = min((int(np.ceil(win.row_off + win.height)) - 1) // by, (src.height - 1) // by)
    c1 = min((int(np.ceil(win.col_off + win.width)) - 1) // bx, (src.width - 1) // bx)
    best, best_end = None, -1
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            off = src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)
            size = src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)
            if off is None:
                break
            end = int(off) + int(size or 0)
            if end > best_end:
                best, best_end = (r, c), end
        else:
            continue
        best = None  # not a tiled TIFF with block offsets
        break
    if best is not None:
        r, c = best
        check = Window(c * bx, r * by, min(bx, src.width - c * bx), min(by, src.height - r * by))
    else:
        cy, cx = win.row_off + win.height / 2, win.col_off + win.width / 2
        check = Window(max(0, int(cx) - 32), max(0, int(cy) - 32), 64, 64).intersection(Window(0, 0, src.width, src.height))
    try:
        src.read(1, window=check)
    except Exception as exc:
        if store.is_transient(exc):
            raise
        raise SceneError(f"{where} ({_describe(src)}) is truncated or corrupt: reading pixels "
                         f"(rows {check.row_off}-{check.row_off + check.height}, cols {check.col_off}-"
                         f"{check.col_off + check.width}) failed: {store.redact(str(exc))}") from exc


def warp_block(source: BandSource, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Pixels ``rows`` x ``cols`` (half-open) of one asset on the site grid as uint16, through a
    GDAL WarpedVRT of the whole site grid (so a block holds exactly what a whole-grid read
    holds there; only the COG tiles the block needs are fetched). A reflectance asset already
    on the site's pixel lattice (same CRS, pixel size and whole-pixel offset, nearest
    resampling) is read straight from the file instead: the same pixels, several times faster
    than the warper."""
    from rasterio.windows import Window

    g = source.grid
    src = _open(source.href, source.scene_id, source.band)
    try:
        with src:
            offset = lattice.grid_offset(src, g) if not source.qa and source.resampling == "nearest" else None
            if offset is not None:
                arr = lattice.read_block(src, offset, rows, cols, source.nodata)
            else:
                if source.qa:
                    dtype, nodata, src_nodata = src.dtypes[0], source.fill, source.nodata
                else:
                    dtype, nodata, src_nodata = "float32", np.nan, source.nodata
                with WarpedVRT(src, crs=g.crs, transform=g.transform, width=g.width, height=g.height,
                               resampling=Resampling[source.resampling], src_nodata=src_nodata, nodata=nodata,
                               dtype=dtype) as vrt:
                    arr = vrt.read(1, window=Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0]))
    except SceneError:
        raise
    except Exception as exc:
        if store.is_transient(exc):
            raise
        raise SceneError(f"scene {source.scene_id!r}: band {source.band!r} object {source.href!r}: reading site rows "
                         f"{rows[0]}-{rows[1]}, cols {cols[0]}-{cols[1]} failed: {store.redact(str(exc))}") from exc
    if source.qa:
        return arr.astype(np.uint16)
    v = arr * np.float32(source.a) + np.float32(source.b)
    ok = np.isfinite(v)
    out = np.zeros(arr.shape, np.uint16)
    out[ok] = np.clip(np.rint(v[ok]), 1, 65535)
    return out


def _chunks(grid: SiteGrid, chunks: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    def split(n: int, c: int) -> tuple[int, ...]:
        return tuple(min(c, n - i) for i in range(0, n, c))

    h, w = grid.shape
    if chunks is None:
        return (h,), (w,)
    if isinstance(chunks, (int, np.integer)):
        chunks = (int(chunks), int(chunks))
    if isinstance(chunks, tuple) and len(chunks) == 2:
        cy, cx = chunks
        rows = split(h, int(cy)) if isinstance(cy, (int, np.integer)) else tuple(int(v) for v in cy)
        cols = split(w, int(cx)) if isinstance(cx, (int, np.integer)) else tuple(int(v) for v in cx)
        if sum(rows) == h and sum(cols) == w and min(rows) > 0 and min(cols) > 0:
            return rows, cols
    raise ValueError(f"chunks got {chunks!r}; expected an int, (rows, cols) ints, or per-axis chunk sizes summing "
                     f"to the grid shape {grid.shape!r}, or None")


def _read_located(source: BandSource, block_info: Any = None) -> np.ndarray:
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    return warp_block(source, (r0, r1), (c0, c1))


def _lazy(source: BandSource, chunks: tuple[tuple[int, ...], tuple[int, ...]]) -> Any:
    import dask.array as da
    from dask.base import tokenize

    name = f"read-{source.band}-{tokenize(source, chunks)}"
    return da.map_blocks(partial(_read_located, source), chunks=chunks, dtype=np.uint16, meta=np.empty((0, 0), np.uint16), name=name)


def scene_sources(ref: SceneRef, grid: SiteGrid, bands: Sequence[str], profile: "str | SensorProfile" = "generic",
                  check_read: bool = False) -> dict[str, BandSource]:
    """Every band to read for ``ref`` (the requested reflectance ``bands`` plus the profile's QA
    band when the scene has it), headers checked. Raises :class:`SceneError`."""
    prof = get_profile(profile)
    if not bands:
        raise ValueError(f"scene {ref.scene_id!r}: bands got {bands!r}; expected at least one band")
    wanted = [b for b in dict.fromkeys(bands) if b != prof.qa_band]
    if not wanted:
        raise ValueError(f"scene {ref.scene_id!r}: bands got {list(bands)!r}; expected at least one reflectance band")
    for b in wanted:
        if prof.band(b).qa:
            raise ValueError(f"band got QA band {b!r}; expected reflectance bands (the QA band is read when present)")
    found = prof.resolve(ref, wanted)
    if prof.qa_band is not None:
        try:
            found.update(prof.resolve(ref, [prof.qa_band]))
        except SceneError:
            pass  # QA is kept when the scene has it
    return {b: _probe(ref, b, key, spec, prof, grid, check_read=check_read) for b, (key, spec) in found.items()}


def read_scene(ref: SceneRef, grid: SiteGrid, bands: Sequence[str], chunks: Any = 512,
               profile: "str | SensorProfile" = "generic") -> xr.Dataset:
    """The scene on the site grid as a lazy Dataset (``chunks``: pixels per chunk, per-axis
    chunk sizes, or None for numpy arrays read at once): one uint16 ``(y, x)`` variable per
    requested reflectance band (reflectance x 10000; 0 = no data, real values clipped to
    [1, 65535]), ``valid`` (every band has data; False outside the scene's footprint) and the
    profile's QA band as uint16 when the scene has it (its fill value where there is no data).

    Asset keys, scale, offset and nodata come from the sensor ``profile`` (the item's
    ``raster:bands`` win). Any source CRS and resolution: reflectance is resampled bilinearly
    from coarser bands, averaged from finer ones, nearest at equal resolution; QA always
    nearest. Raises :class:`SceneError` naming the scene, the band and the object for a missing
    band, an unreadable file, several bands in one file, no CRS or no overlap with the site."""
    rows, cols = _chunks(grid, chunks)
    sources = scene_sources(ref, grid, bands, profile)
    arrays: dict[str, Any] = {}
    for b, s in sources.items():
        if chunks is None:
            arrays[b] = warp_block(s, (0, grid.height), (0, grid.width))
        else:
            arrays[b] = _lazy(s, (rows, cols))
    refl = [b for b, s in sources.items() if not s.qa]
    data = {b: (("y", "x"), arrays[b], {"nodata": 0}) for b in refl}
    valid = None
    for b in refl:
        ok = arrays[b] != 0
        valid = ok if valid is None else (valid & ok)
    data["valid"] = (("y", "x"), valid)
    for b, s in sources.items():
        if s.qa:
            data[b] = (("y", "x"), arrays[b], {"nodata": s.fill})
    return xr.Dataset(data, coords=grid.coords())


def validate_scene(ref: SceneRef, grid: SiteGrid, bands: Sequence[str], profile: "str | SensorProfile" = "generic") -> None:
    """Check that ``ref`` can be read onto ``grid``: every needed band present, each object
    opens as a single-band georeferenced raster overlapping the site, and one stored tile of the
    site window (the one furthest into the file) decodes. Raises :class:`SceneError`."""
    scene_sources(ref, grid, bands, profile, check_read=True)
