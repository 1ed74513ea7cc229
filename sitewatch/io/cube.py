"""The site datacube: one Zarr (v3) store per site.

Contract (later versions keep it):

* dims ``(time, y, x)``; ``y``/``x`` pixel-centre coordinates in the site CRS, ``time`` the
  acquisition time (UTC), per-time coordinate ``scene_id``;
* one ``uint16`` variable per band named by STAC eo common name (reflectance x 10000, 0 = nodata);
* optionally the sensor's QA band (``scl``, ``qa_pixel``, ``fmask``) as ``uint16`` ``(time, y, x)``,
  values as the provider wrote them, its fill value where there is no data (Zarr fill value and
  the ``nodata`` attribute), CF ``flag_values``/``flag_masks`` and ``flag_meanings``;
* ``valid``, ``cloud``, ``shadow``, ``change`` (bool) and ``change_score`` (float32, NaN where no
  score) over ``(time, y, x)``;
* per-time ``ingested`` and ``analysed`` commit flags, ``valid_fraction`` and ``cloud_fraction``;
* a CF grid mapping variable ``spatial_ref`` (CRS WKT + GeoTransform) referenced by every
  gridded variable, so ``xr.open_zarr(...)`` followed by ``.rio.crs`` / ``.rio.transform()``
  gives the georeference.

Writes follow the template-then-region pattern: :func:`extend` appends the new time slots
(coordinates and metadata only, data left at the fill value), then each scene fills its own
chunk-aligned slot with :func:`write_scene_slice` and :func:`write_derived`. Time chunks are 1,
so writers of different scenes never touch the same chunk. A slot counts as holding a scene only
once its ``ingested`` flag is written, which happens after its bands: a crash mid-write leaves a
slot that readers skip and the next run fills again.
Consolidated metadata is not used (it is not part of the Zarr v3 spec and appends would have to
rewrite it).
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from ..grid import SiteGrid
from ..sensors import qa_attrs
from . import store

DERIVED = ("cloud", "shadow", "change_score", "change")
PER_TIME = ("ingested", "analysed", "valid_fraction", "cloud_fraction")
TIME_ENCODING = {"units": "milliseconds since 1970-01-01T00:00:00", "calendar": "proleptic_gregorian", "dtype": "int64"}

BAND_LONG_NAMES = {
    "coastal": "coastal aerosol", "blue": "blue", "green": "green", "red": "red",
    "rededge": "red edge", "nir": "near infrared", "nir08": "near infrared (narrow)",
    "swir16": "shortwave infrared 1.6 um", "swir22": "shortwave infrared 2.2 um",
}


class CubeError(ValueError):
    """The cube does not match what the caller expects (grid, bands) or cannot be opened."""


@dataclass(frozen=True)
class Slot:
    """Where a scene lives in the cube."""

    scene_id: str
    index: int
    time: np.datetime64
    ingested: bool
    analysed: bool


def _zarr_kwargs(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    opts = store.storage_options_for(url, storage_options)
    kw: dict[str, Any] = {"consolidated": False, "zarr_format": 3}
    if opts:
        kw["storage_options"] = opts
    return kw


def _to_datetime64(when: dt.datetime) -> np.datetime64:
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return np.datetime64(when, "ms").astype("datetime64[ns]")


def _template(grid: SiteGrid, bands: Sequence[str], scene_ids: Sequence[str], times: Sequence[np.datetime64], chunk: int,
              qa: Mapping[str, int] | None = None) -> xr.Dataset:
    n = len(scene_ids)
    shape = (n, grid.height, grid.width)
    chunks = (1, min(chunk, grid.height), min(chunk, grid.width))
    coords = grid.coords()
    data_vars: dict[str, Any] = {}
    for b in bands:
        data_vars[b] = (("time", "y", "x"), da.zeros(shape, chunks=chunks, dtype="uint16"), {
            "long_name": f"{BAND_LONG_NAMES.get(b, b)} reflectance", "units": "1",
            "reflectance_scale": 1e-4, "nodata": 0, "eo_common_name": b,
        })
    for name, fill in (qa or {}).items():
        data_vars[name] = (("time", "y", "x"), da.full(shape, fill, chunks=chunks, dtype="uint16"),
                           {**qa_attrs(name), "nodata": int(fill), "sitewatch_role": "qa"})
    data_vars["valid"] = (("time", "y", "x"), da.zeros(shape, chunks=chunks, dtype=bool), {"long_name": "pixel has data in every band"})
    data_vars["cloud"] = (("time", "y", "x"), da.zeros(shape, chunks=chunks, dtype=bool), {"long_name": "cloud (buffered)"})
    data_vars["shadow"] = (("time", "y", "x"), da.zeros(shape, chunks=chunks, dtype=bool), {"long_name": "cloud shadow (buffered)"})
    data_vars["change_score"] = (("time", "y", "x"), da.full(shape, np.nan, chunks=chunks, dtype="float32"), {"long_name": "change score against the site's clear-sky baseline", "units": "1"})
    data_vars["change"] = (("time", "y", "x"), da.zeros(shape, chunks=chunks, dtype=bool), {"long_name": "changed pixel"})
    data_vars["ingested"] = (("time",), np.zeros(n, bool), {"long_name": "scene bands fully written (commit flag)"})
    data_vars["analysed"] = (("time",), np.zeros(n, bool), {"long_name": "masks and change fully written (commit flag)"})
    data_vars["valid_fraction"] = (("time",), np.full(n, np.nan, "float32"), {"long_name": "fraction of site pixels with data"})
    data_vars["cloud_fraction"] = (("time",), np.full(n, np.nan, "float32"), {"long_name": "fraction of valid pixels under cloud or shadow"})
    ds = xr.Dataset(
        data_vars,
        coords={
            "time": ("time", np.asarray(times, dtype="datetime64[ns]"), {"long_name": "acquisition time (UTC)", "standard_name": "time"}),
            "scene_id": ("time", np.asarray(scene_ids, dtype=object), {"long_name": "scene identifier"}),
            "y": ("y", coords["y"], {"standard_name": "projection_y_coordinate", "units": "m"}),
            "x": ("x", coords["x"], {"standard_name": "projection_x_coordinate", "units": "m"}),
        },
        attrs={"title": "sitewatch site datacube", "Conventions": "CF-1.8", "sitewatch_cube_version": 1},
    )
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
    for name, v in ds.data_vars.items():
        if v.dims == ("time", "y", "x"):
            v.encoding.pop("grid_mapping", None)
            v.attrs["grid_mapping"] = "spatial_ref"  # CF: read by rioxarray and GDAL
    return ds


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {"time": dict(TIME_ENCODING)}
    for name in PER_TIME:
        enc[name] = {"chunks": (1,)}
    for name, v in ds.data_vars.items():
        if v.dims == ("time", "y", "x"):
            enc[name] = {"chunks": v.data.chunksize}
    enc["change_score"]["fill_value"] = np.float32(np.nan)
    for name, v in ds.data_vars.items():
        if v.attrs.get("sitewatch_role") == "qa":
            enc[name]["fill_value"] = np.uint16(v.attrs["nodata"])  # unwritten chunks read as the QA fill
    return enc


def slots(cube_url: str, storage_options: dict[str, Any] | None = None) -> list[Slot]:
    """The cube's time slots (empty list if the cube does not exist yet)."""
    if not store.exists(store.join(cube_url, "zarr.json"), storage_options):
        return []
    ds = xr.open_zarr(cube_url, chunks=None, **_zarr_kwargs(cube_url, storage_options))  # small: no dask
    out = [
        Slot(str(sid), i, t, bool(ing), bool(ana))
        for i, (sid, t, ing, ana) in enumerate(
            zip(ds.scene_id.values, ds.time.values, ds.ingested.values, ds.analysed.values)
        )
    ]
    ds.close()
    return out


def check_compatible(cube_url: str, grid: SiteGrid, bands: Sequence[str], storage_options: dict[str, Any] | None = None,
                     qa: Sequence[str] = ()) -> None:
    """Raise :class:`CubeError` if an existing cube has another grid or lacks bands (or the QA
    variables ``qa``)."""
    ds = xr.open_zarr(cube_url, chunks=None, **_zarr_kwargs(cube_url, storage_options))
    try:
        if (ds.sizes["y"], ds.sizes["x"]) != grid.shape:
            raise CubeError(f"cube {cube_url!r} shape got {(ds.sizes['y'], ds.sizes['x'])!r}; expected the site grid {grid.shape!r}")
        x0 = float(ds.x.values[0]) - grid.resolution / 2
        y0 = float(ds.y.values[0]) + grid.resolution / 2
        if abs(x0 - grid.x0) > 1e-6 or abs(y0 - grid.y0) > 1e-6:
            raise CubeError(f"cube {cube_url!r} origin got {(x0, y0)!r}; expected the site grid origin {(grid.x0, grid.y0)!r}")
        wkt = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds.variables else None
        if wkt:
            from pyproj import CRS

            cube_crs = CRS.from_wkt(wkt)
            if not cube_crs.equals(CRS.from_user_input(grid.crs), ignore_axis_order=True):
                raise CubeError(f"cube {cube_url!r} CRS got {cube_crs.to_string()!r}; expected the site grid CRS {grid.crs!r}")
        lacking = [b for b in bands if b not in ds.data_vars]
        if lacking:
            raise CubeError(f"cube {cube_url!r} lacks band variable(s) {lacking!r}")
        lacking = [q for q in qa if q not in ds.data_vars]
        if lacking:
            raise CubeError(f"cube {cube_url!r} lacks QA variable(s) {lacking!r}; expected them for this site's sensor "
                            "(a cube made for another sensor profile)")
    finally:
        ds.close()


def extend(
    cube_url: str,
    grid: SiteGrid,
    bands: Sequence[str],
    scenes: Sequence[tuple[str, dt.datetime]],
    chunk: int = 512,
    storage_options: dict[str, Any] | None = None,
    qa: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Make a slot for every ``(scene_id, datetime)`` not yet in the cube (creating the cube if
    needed) and return ``{scene_id: slot index}`` for all of ``scenes``. Writes metadata and
    per-time coordinates only; array chunks stay at their fill value until written. ``qa``
    maps QA variable names to their fill values (e.g. ``{"scl": 0}``, ``{"fmask": 255}``,
    ``{"qa_pixel": 1}``; see :func:`qa_for_profile`)."""
    for name, fill in (qa or {}).items():
        if name in bands or not (0 <= int(fill) <= 65535):
            raise ValueError(f"qa got {{{name!r}: {fill!r}}}; expected a QA name that is not a band and a uint16 fill value")
    existing = {s.scene_id: s.index for s in slots(cube_url, storage_options)}
    if existing:
        check_compatible(cube_url, grid, bands, storage_options, qa=tuple(qa or ()))
    new = sorted({(sid, _to_datetime64(t)) for sid, t in scenes if sid not in existing}, key=lambda p: (p[1], p[0]))
    if new:
        tmpl = _template(grid, bands, [s for s, _ in new], [t for _, t in new], chunk, qa)
        kw = _zarr_kwargs(cube_url, storage_options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            if existing:
                tmpl.drop_vars(["x", "y", "spatial_ref"]).to_zarr(cube_url, append_dim="time", compute=False, **kw)
            else:
                tmpl.to_zarr(cube_url, mode="w-", compute=False, encoding=_encoding(tmpl), **kw)
        base = len(existing)
        for i, (sid, _) in enumerate(new):
            existing[sid] = base + i
    return {sid: existing[sid] for sid, _ in scenes}


def qa_for_profile(profile: Any) -> dict[str, int]:
    """``{qa_band: fill value}`` for a :class:`~sitewatch.sensors.SensorProfile` (or its name);
    empty when the profile has no QA band."""
    from ..sensors import get_profile

    p = get_profile(profile)
    if p.qa_band is None:
        return {}
    nodata = p.band(p.qa_band).nodata
    return {p.qa_band: int(nodata) if nodata is not None else 0}


def _region_write(cube_url: str, index: int, ds: xr.Dataset, storage_options: dict[str, Any] | None, compute: bool = True):
    """Region write of ``ds`` into slot ``index``; with ``compute=False`` returns the delayed
    write so that callers can compute it together with reductions of the same inputs."""
    ds = ds.drop_vars([c for c in ("x", "y", "spatial_ref", "time", "scene_id") if c in ds.variables])
    for name in ds.data_vars:
        ds[name].attrs = {}
        ds[name].encoding = {}
    return ds.to_zarr(cube_url, region={"time": slice(index, index + 1)}, compute=compute, **_zarr_kwargs(cube_url, storage_options))


def write_scene_slice(cube_url: str, index: int, scene: xr.Dataset, storage_options: dict[str, Any] | None = None) -> float:
    """Write a scene's bands, ``valid`` and QA variable if any (``(y, x)`` arrays on the site
    grid, lazy or not; see :func:`sitewatch.io.scenes.read_scene`) into slot ``index``, then
    commit the slot. Returns the valid fraction."""
    data = scene.expand_dims("time")
    # One pass: the write and the valid fraction share the (lazy) COG reads.
    write = _region_write(cube_url, index, data, storage_options, compute=False)
    _, valid_fraction = dask.compute(write, scene["valid"].mean())
    valid_fraction = float(valid_fraction)
    flags = xr.Dataset({
        "ingested": ("time", np.array([True])),
        "valid_fraction": ("time", np.array([valid_fraction], "float32")),
    })
    _region_write(cube_url, index, flags, storage_options)
    return valid_fraction


def write_derived(cube_url: str, index: int, derived: xr.Dataset, storage_options: dict[str, Any] | None = None) -> float:
    """Write ``cloud``, ``shadow``, ``change_score``, ``change`` (``(y, x)``) into slot ``index``,
    then set its ``analysed`` flag and cloud fraction. Returns the cloud fraction (cloud or
    shadow, over valid pixels)."""
    lacking = [v for v in DERIVED if v not in derived.data_vars]
    if lacking:
        raise ValueError(f"derived layers lack {lacking!r}; expected all of {DERIVED!r}")
    write = _region_write(cube_url, index, derived[list(DERIVED)].expand_dims("time"), storage_options, compute=False)
    # The fraction comes from the layers being written, not from reading them back.
    cube = xr.open_zarr(cube_url, **_zarr_kwargs(cube_url, storage_options))
    valid = cube["valid"].isel(time=index, drop=True)
    obscured = (derived["cloud"].variable | derived["shadow"].variable) & valid.variable
    _, n_obscured, n_valid = dask.compute(write, obscured.sum(), valid.sum())
    n_valid = int(n_valid)
    cloud_fraction = float(n_obscured) / n_valid if n_valid else float("nan")
    flags = xr.Dataset({
        "analysed": ("time", np.array([True])),
        "cloud_fraction": ("time", np.array([cloud_fraction], "float32")),
    })
    _region_write(cube_url, index, flags, storage_options)
    return cloud_fraction


def open_cube(cube_url: str, committed_only: bool = True, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """The cube as a lazy, georeferenced Dataset, sorted by time. With ``committed_only``
    (default) slots whose scene was never fully written are left out."""
    if not store.exists(store.join(cube_url, "zarr.json"), storage_options):
        raise CubeError(f"no sitewatch cube at {cube_url!r}")
    ds = xr.open_zarr(cube_url, decode_coords="all", **_zarr_kwargs(cube_url, storage_options))
    if committed_only:
        keep = np.flatnonzero(ds["ingested"].values)
        if len(keep) != ds.sizes["time"]:
            ds = ds.isel(time=keep)
    if ds.sizes["time"] > 1 and not bool(np.all(np.diff(ds.time.values) >= np.timedelta64(0))):
        ds = ds.sortby("time")
    return ds
