"""The site datacube's layout: its variables, their CF attributes and Zarr encodings, and the
template a cube is created from (:mod:`sitewatch.io.cube` creates, writes and opens cubes).

Contract (later versions keep it):

* dims ``(time, y, x)``; ``y``/``x`` pixel-centre coordinates in the site CRS (CF
  ``projection_x_coordinate``/``projection_y_coordinate``, or ``longitude``/``latitude`` for a
  geographic CRS), ``time`` the acquisition time (UTC), per-time coordinates ``scene_id`` and
  ``sensor`` (the sensor profile the scene was read with: ``generic``, ``sentinel2-l2a``,
  ``landsat-c2-l2``, ...);
* one ``uint16`` variable per band named by STAC eo common name holding reflectance x 10000
  (0 = nodata), with CF ``scale_factor`` 1e-4, ``add_offset`` 0 and ``_FillValue`` 0: a plain
  ``xr.open_zarr(...)`` decodes them to float reflectance with NaN for nodata, while sitewatch
  itself (:func:`open_cube`, :func:`_open`, ``sitewatch.open_site``, the analysis) opens with
  ``mask_and_scale=False`` and works on the raw counts;
* optionally the sensor's QA band (``scl``, ``qa_pixel``, ``fmask``) as ``uint16`` ``(time, y, x)``,
  values as the provider wrote them, its fill value where there is no data (Zarr fill value and
  the ``nodata`` attribute), CF ``flag_values``/``flag_masks`` and ``flag_meanings``;
* ``valid``, ``cloud``, ``shadow``, ``change`` (bool, CF ``flag_values``/``flag_meanings``;
  ``cloud`` and ``shadow`` include the safety buffer) and ``change_score`` (float32, NaN where no
  score) over ``(time, y, x)``; since November 2026 also ``mask_flags`` (uint8 CF ``flag_masks``:
  cloud and shadow before the buffer, snow, water, saturated) and ``cloud_score`` (uint8
  percent, 255 = none); cubes created earlier lack these two and are written without them;
* per-time ``ingested`` and ``analysed`` commit flags, ``valid_fraction`` and ``cloud_fraction``;
* group attributes ``Conventions: CF-1.8``, ``title`` and ``sitewatch_cube_version``
  (:data:`CUBE_VERSION`);
* a CF grid mapping variable ``spatial_ref`` (CRS WKT + GeoTransform) referenced by every
  gridded variable, so ``xr.open_zarr(...)`` followed by ``.rio.crs`` / ``.rio.transform()``
  gives the georeference.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from ..grid import SiteGrid
from ..sensors import qa_attrs

DERIVED = ("cloud", "shadow", "change_score", "change")
#: Derived layers added within version 3: written when the cube has them (cubes created before
#: they existed lack them and stay readable and writable).
OPTIONAL_DERIVED = ("mask_flags", "cloud_score")
SCORE_FILL = 255  # cloud_score (uint8 percent) where not computed or not valid
#: CF flag_masks of ``mask_flags`` (sitewatch.kernels.masks.FLAG_MEANINGS; kept here so that the
#: I/O layer does not import the kernels).
MASK_FLAG_BITS = {1: "cloud", 2: "cloud_shadow", 4: "snow", 8: "water", 16: "saturated"}
PER_TIME = ("ingested", "analysed", "valid_fraction", "cloud_fraction")
# Version 3: per-time ``sensor``; bands CF-encoded (scale_factor/add_offset/_FillValue); CF
# coordinate and flag attributes. Version 2 stores are refused (see _state).
CUBE_VERSION = 3
CUBE_TITLE = "sitewatch site datacube"
CAPACITY = 64  # time slots preallocated when a cube is created; doubled when full
PER_TIME_CHUNK = 4096  # per-time arrays (time, scene_id, flags, fractions) in one chunk
_EPOCH = np.datetime64("1970-01-01T00:00:00", "ms")
TIME_ENCODING = {"units": "milliseconds since 1970-01-01T00:00:00", "calendar": "proleptic_gregorian", "dtype": "int64"}
#: CF encoding of the band variables: stored uint16 counts, reflectance = count * 1e-4 + 0, 0 = nodata.
REFLECTANCE_SCALE = 1e-4
REFLECTANCE_OFFSET = 0.0
REFLECTANCE_FILL = 0
DEFAULT_SENSOR = "generic"
#: CF flag attributes of the boolean (time, y, x) masks: stored as Zarr bool (0/1).
MASK_FLAGS = {
    "valid": ("pixel has data in every band", "no_data valid"),
    "cloud": ("cloud (buffered)", "not_cloud cloud"),
    "shadow": ("cloud shadow (buffered)", "not_shadow cloud_shadow"),
    "change": ("changed pixel", "no_change change"),
}

BAND_LONG_NAMES = {
    "coastal": "coastal aerosol", "blue": "blue", "green": "green", "red": "red",
    "rededge": "red edge", "nir": "near infrared", "nir08": "near infrared (narrow)",
    "swir16": "shortwave infrared 1.6 um", "swir22": "shortwave infrared 2.2 um",
}


def _xy_attrs(crs: str) -> tuple[dict[str, str], dict[str, str]]:
    """CF attributes of the ``x`` and ``y`` coordinates for ``crs``: ``projection_x_coordinate``
    / ``projection_y_coordinate`` in the CRS's linear unit (``m`` for metres) for a projected
    CRS, ``longitude`` / ``latitude`` in degrees for a geographic one."""
    from pyproj import CRS

    by_axis = {a.get("axis"): a for a in CRS.from_user_input(crs).cs_to_cf()}
    out = []
    for axis, proj_name in (("X", "projection_x_coordinate"), ("Y", "projection_y_coordinate")):
        cf = by_axis.get(axis, {})
        name = cf.get("standard_name", proj_name)
        units = cf.get("units", "m")
        if units == "metre":
            units = "m"
        if name == proj_name:
            long_name = f"{axis.lower()} coordinate of projection (pixel centre)"
        else:
            long_name = f"{name} (pixel centre)"
        out.append({"standard_name": name, "long_name": long_name, "units": units, "axis": axis})
    return out[0], out[1]


def _template(grid: SiteGrid, bands: Sequence[str], scene_ids: Sequence[str], times: Sequence[np.datetime64], chunk: int,
              qa: Mapping[str, int] | None = None) -> xr.Dataset:
    n = len(scene_ids)
    shape = (n, grid.height, grid.width)
    chunks = (1, min(chunk, grid.height), min(chunk, grid.width))
    coords = grid.coords()
    data_vars: dict[str, Any] = {}
    for b in bands:
        # Decoded form (float reflectance, NaN = nodata); stored as uint16 counts through the CF
        # encoding of _encoding. The template's data is never written (compute=False).
        data_vars[b] = (("time", "y", "x"), da.full(shape, np.nan, chunks=chunks, dtype="float32"), {
            "long_name": f"{BAND_LONG_NAMES.get(b, b)} reflectance", "units": "1", "eo_common_name": b,
        })
    for name, fill in (qa or {}).items():
        data_vars[name] = (("time", "y", "x"), da.full(shape, fill, chunks=chunks, dtype="uint16"),
                           {**qa_attrs(name), "nodata": int(fill), "sitewatch_role": "qa"})
    for name, (long_name, meanings) in MASK_FLAGS.items():
        data_vars[name] = (("time", "y", "x"), da.zeros(shape, chunks=chunks, dtype=bool),
                           {"long_name": long_name, "flag_values": [0, 1], "flag_meanings": meanings})
    data_vars["change_score"] = (("time", "y", "x"), da.full(shape, np.nan, chunks=chunks, dtype="float32"), {"long_name": "change score against the site's clear-sky baseline", "units": "1"})
    data_vars["mask_flags"] = (("time", "y", "x"), da.zeros(shape, chunks=chunks, dtype="uint8"), {
        "long_name": "per-pixel mask flags before the safety buffer", "flag_masks": list(MASK_FLAG_BITS),
        "flag_meanings": " ".join(MASK_FLAG_BITS.values())})
    data_vars["cloud_score"] = (("time", "y", "x"), da.full(shape, SCORE_FILL, chunks=chunks, dtype="uint8"), {
        "long_name": "cloud score or probability of the mask method (percent; 50 = the test threshold for "
                     "sitewatch's spectral rules)", "units": "percent", "valid_range": [0, 100]})
    data_vars["ingested"] = (("time",), np.zeros(n, bool), {"long_name": "scene bands fully written (commit flag)", "flag_values": [0, 1], "flag_meanings": "not_ingested ingested"})
    data_vars["analysed"] = (("time",), np.zeros(n, bool), {"long_name": "masks and change fully written (commit flag)", "flag_values": [0, 1], "flag_meanings": "not_analysed analysed"})
    data_vars["valid_fraction"] = (("time",), np.full(n, np.nan, "float32"), {"long_name": "fraction of site pixels with data", "units": "1"})
    data_vars["cloud_fraction"] = (("time",), np.full(n, np.nan, "float32"), {"long_name": "fraction of valid pixels under cloud or shadow", "units": "1"})
    x_attrs, y_attrs = _xy_attrs(grid.crs)
    ds = xr.Dataset(
        data_vars,
        coords={
            "time": ("time", np.asarray(times, dtype="datetime64[ns]"), {"long_name": "acquisition time (UTC)", "standard_name": "time", "axis": "T"}),
            "scene_id": ("time", np.asarray(scene_ids, dtype=object), {"long_name": "scene identifier"}),
            "sensor": ("time", np.full(n, "", dtype=object), {"long_name": "sensor profile the scene was read with (sitewatch.sensors)"}),
            "y": ("y", coords["y"], y_attrs),
            "x": ("x", coords["x"], x_attrs),
        },
        attrs={"title": CUBE_TITLE, "Conventions": "CF-1.8"},  # sitewatch_cube_version: written last, by _create
    )
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
    for name, v in ds.data_vars.items():
        if v.dims == ("time", "y", "x"):
            v.encoding.pop("grid_mapping", None)
            v.attrs["grid_mapping"] = "spatial_ref"  # CF: read by rioxarray and GDAL
    return ds


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {"time": dict(TIME_ENCODING)}
    for name in (*PER_TIME, "scene_id", "sensor"):
        enc[name] = {"chunks": (PER_TIME_CHUNK,)}
    enc["time"]["chunks"] = (PER_TIME_CHUNK,)
    for name, v in ds.data_vars.items():
        if v.dims == ("time", "y", "x"):
            enc[name] = {"chunks": v.data.chunksize}
        if "eo_common_name" in v.attrs:  # a band: uint16 counts, CF scale/offset/fill
            enc[name].update({"dtype": "uint16", "scale_factor": REFLECTANCE_SCALE, "add_offset": REFLECTANCE_OFFSET,
                              "_FillValue": np.uint16(REFLECTANCE_FILL)})
    enc["change_score"]["fill_value"] = np.float32(np.nan)
    enc["cloud_score"]["fill_value"] = np.uint8(SCORE_FILL)
    for name, v in ds.data_vars.items():
        if v.attrs.get("sitewatch_role") == "qa":
            enc[name]["fill_value"] = np.uint16(v.attrs["nodata"])  # unwritten chunks read as the QA fill
    return enc
