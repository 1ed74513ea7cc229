"""The site datacube: one Zarr (v3) store per site.

Its layout (the contract later versions keep) is in :mod:`sitewatch.io.cube_schema`.

Writes follow the template-then-region pattern with an explicit commit protocol (plain Zarr v3,
so that xarray, GDAL and any Zarr reader open the cube as it is; see the README for why not
Icechunk):

* **create**: the template (every array, per-time values at their fill) is written once with a
  preallocated time *capacity* (:data:`CAPACITY`, grown by doubling when full); the group
  attribute ``sitewatch_cube_version`` is written last and marks the cube as created. A store
  with sitewatch's title but no version is a creation cut short (it holds no scene) and is
  recreated; a store without the title is someone else's and is never touched.
* **allocate** (:func:`extend`): a new scene gets the first free slot; its ``time`` is written,
  then its ``sensor``, then its ``scene_id`` (the allocation commit: a slot is allocated once its
  id is non-empty, so an allocated slot always has its time and sensor).
  Every per-time array is one chunk (:data:`PER_TIME_CHUNK`), so allocation writes a handful
  of small objects whatever the history length.
* **write** (:func:`write_scene_slice`, :func:`write_derived`): chunk-aligned region writes
  of the slot's ``(time, y, x)`` chunks. Time chunks are 1, so parallel writers of different
  scenes never touch the same chunk. The values are stored as given, straight into the Zarr
  arrays (no CF encoding on the way: band counts are stored exactly, never scaled twice).
* **commit** (:func:`commit`): the slot's per-time values (fractions first, then the
  ``ingested``/``analysed`` flag). One writer per site does this (the flow, or a library
  caller), never the parallel tasks, so the one-chunk per-time arrays see no lost updates.

Every object write is atomic (zarr's local store writes a temporary file and renames it; an
S3 PUT is atomic), so a crash at any point leaves: slots committed before it intact, slots
allocated or written but not committed (ingest tasks run in parallel, so there may be several)
that readers skip (their flag is unset) and the next run rewrites, or a
growth cut short, which :func:`open_cube` tolerates and the next :func:`extend` completes.
Two runs for one site are kept apart by a per-site Prefect concurrency limit
(``flows/monitor.py``).
Consolidated metadata is not used (it is not part of the Zarr v3 spec and appends would have to
rewrite it). ``scene_id`` and ``sensor`` are variable-length UTF-8 strings (Zarr v3 ``string``
data type, ``vlen-utf8`` codec), which zarr-python writes without the unstable-specification
warning that fixed-length strings get.

GDAL reads the cube's CF georeferencing, but GDAL before 3.11 cannot decode Zarr v3 arrays as
zarr-python 3 writes them (``Unsupported codec: bytes``; OSGeo/gdal#11787): rasterio 1.4 wheels
bundle GDAL 3.10.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import uuid

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr

from ..grid import SiteGrid
from . import store
from .cube_schema import (  # noqa: F401  (SCORE_FILL, PER_TIME_CHUNK: callers read them as cube_io.*)
    _EPOCH, CAPACITY, CUBE_TITLE, CUBE_VERSION, DEFAULT_SENSOR, DERIVED, OPTIONAL_DERIVED, PER_TIME, PER_TIME_CHUNK, SCORE_FILL,
    _encoding, _template,
)


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
    valid_fraction: float = float("nan")
    cloud_fraction: float = float("nan")
    sensor: str = ""


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




def _nat_ms() -> int:
    return int(np.iinfo(np.int64).min)  # how xarray stores NaT in the int64 time variable


def _group(cube_url: str, storage_options: dict[str, Any] | None, mode: str = "r") -> zarr.Group:
    opts = store.storage_options_for(cube_url, storage_options)
    return zarr.open_group(cube_url, mode=mode, zarr_format=3, **({"storage_options": opts} if opts else {}))


def _state(cube_url: str, storage_options: dict[str, Any] | None) -> str:
    """``"missing"``, ``"partial"`` (a creation cut short: sitewatch's title, no version) or
    ``"ready"``; a store written by another tool or another cube version is a :class:`CubeError`."""
    if not store.exists(store.join(cube_url, "zarr.json"), storage_options):
        return "missing"
    try:
        attrs = dict(_group(cube_url, storage_options).attrs)
    except Exception as exc:  # unreadable group metadata
        raise CubeError(f"cube {cube_url!r}: group metadata unreadable ({type(exc).__name__}: {exc}); "
                        "expected a sitewatch cube") from exc
    version = attrs.get("sitewatch_cube_version")
    if version is None:
        if attrs.get("title") == CUBE_TITLE:
            return "partial"
        raise CubeError(f"store {cube_url!r} got a Zarr group without sitewatch_cube_version; expected a sitewatch "
                        "cube (a store written by another tool is never overwritten: choose another store)")
    if version != CUBE_VERSION:
        raise CubeError(f"cube {cube_url!r} got sitewatch_cube_version {version!r}; expected {CUBE_VERSION} "
                        "(cubes of version 1 predate slot capacity and the commit protocol; cubes of version 2 predate "
                        "the per-time sensor and the CF scale/offset encoding of the bands: move it aside and rerun "
                        "to rebuild it from the scenes)")
    return "ready"


def _time_arrays(g: zarr.Group) -> dict[str, zarr.Array]:
    return {name: a for name, a in g.arrays() if (a.metadata.dimension_names or (None,))[0] == "time"}


def _lengths(g: zarr.Group) -> dict[str, int]:
    return {name: a.shape[0] for name, a in _time_arrays(g).items()}


def _grow(g: zarr.Group, capacity: int) -> None:
    """Resize every time array to ``capacity`` (new slots unallocated). Arrays first, the
    ``time`` coordinate last; a growth cut short is completed by the next call (idempotent)."""
    arrays = _time_arrays(g)
    for name in sorted(arrays, key=lambda n: (n == "time", n == "scene_id", n)):
        a = arrays[name]
        old = a.shape[0]
        if old < capacity:
            a.resize((capacity, *a.shape[1:]))
            if name == "time":
                a[old:capacity] = np.full(capacity - old, _nat_ms(), dtype="int64")


def _per_time(g: zarr.Group) -> dict[str, np.ndarray]:
    """The per-time values, length = the shortest time array (a growth cut short)."""
    n = min(_lengths(g).values())
    out = {name: g[name][:n] for name in ("scene_id", "sensor", "time", *PER_TIME)}
    for name in ("scene_id", "sensor"):
        out[name] = np.asarray([str(v) if v is not None else "" for v in out[name]], dtype=object)
    raw = np.asarray(out["time"], dtype="int64")
    out["time"] = np.where(raw == _nat_ms(), np.datetime64("NaT", "ms"), _EPOCH + raw.astype("timedelta64[ms]")).astype("datetime64[ns]")
    return out


def slots(cube_url: str, storage_options: dict[str, Any] | None = None) -> list[Slot]:
    """The cube's allocated time slots (empty list if the cube does not exist yet). Reads the
    one-chunk per-time arrays only."""
    if _state(cube_url, storage_options) != "ready":
        return []
    v = _per_time(_group(cube_url, storage_options))
    return [
        Slot(sid, i, v["time"][i], bool(v["ingested"][i]), bool(v["analysed"][i]),
             float(v["valid_fraction"][i]), float(v["cloud_fraction"][i]), sensor=str(v["sensor"][i]))
        for i, sid in enumerate(v["scene_id"]) if sid
    ]


def commit(cube_url: str, updates: Mapping[int, Mapping[str, Any]], storage_options: dict[str, Any] | None = None) -> None:
    """Set per-time values of slots: ``{index: {"ingested": True, "valid_fraction": 0.93}}``
    (names from :data:`PER_TIME`). One writer per site calls this (the flow, or a library
    caller), never parallel tasks. Fractions are written before flags, so a flag is never set
    without its fraction."""
    if not updates:
        return
    g = _group(cube_url, storage_options, mode="r+")
    n = min(_lengths(g).values())
    by_name: dict[str, dict[int, Any]] = {}
    for index, values in updates.items():
        if not (0 <= int(index) < n):
            raise ValueError(f"commit got slot {index!r}; expected 0 <= slot < {n}")
        for name, value in values.items():
            if name not in PER_TIME:
                raise ValueError(f"commit got {name!r}; expected one of {PER_TIME!r}")
            by_name.setdefault(name, {})[int(index)] = value
    for name in sorted(by_name, key=lambda k: k in ("ingested", "analysed")):
        a = g[name]
        idx = sorted(by_name[name])
        a.oindex[np.asarray(idx)] = np.asarray([by_name[name][i] for i in idx], dtype=a.dtype)


def check_compatible(cube_url: str, grid: SiteGrid, bands: Sequence[str], storage_options: dict[str, Any] | None = None,
                     qa: Sequence[str] = ()) -> None:
    """Raise :class:`CubeError` if an existing cube has another grid or lacks bands (or the QA
    variables ``qa``)."""
    ds = xr.open_zarr(cube_url, chunks=None, mask_and_scale=False, **_zarr_kwargs(cube_url, storage_options))
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


def _create(cube_url: str, grid: SiteGrid, bands: Sequence[str], chunk: int, capacity: int,
            storage_options: dict[str, Any] | None, qa: Mapping[str, int] | None) -> None:
    """Write the template (metadata and per-time arrays only), then the version attribute."""
    if _state(cube_url, storage_options) == "partial":  # a creation cut short: it holds no scene
        fs, path = store.filesystem(cube_url, storage_options)
        fs.rm(path, recursive=True)
    nat = np.full(capacity, np.datetime64("NaT"), dtype="datetime64[ns]")
    tmpl = _template(grid, bands, [""] * capacity, nat, chunk, qa)
    # the group is created with sitewatch's title in one write, before any array: a creation cut
    # short at any later moment is recognised as "partial" (xarray alone writes the group's
    # metadata first without attributes, and a kill there left a store refused as foreign)
    opts = store.storage_options_for(cube_url, storage_options)
    zarr.open_group(cube_url, mode="w-", zarr_format=3, attributes=dict(tmpl.attrs), **({"storage_options": opts} if opts else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        tmpl.to_zarr(cube_url, mode="a", compute=False, encoding=_encoding(tmpl), **_zarr_kwargs(cube_url, storage_options))
    _group(cube_url, storage_options, mode="r+").attrs.update({"sitewatch_cube_version": CUBE_VERSION})


def extend(
    cube_url: str,
    grid: SiteGrid,
    bands: Sequence[str],
    scenes: Sequence[tuple[str, dt.datetime]],
    chunk: int = 512,
    storage_options: dict[str, Any] | None = None,
    qa: Mapping[str, int] | None = None,
    sensor: Any = DEFAULT_SENSOR,
) -> dict[str, int]:
    """Allocate a slot for every ``(scene_id, datetime)`` not yet in the cube (creating the cube
    if needed) and return ``{scene_id: slot index}`` for all of ``scenes``: a scene delivered
    twice keeps its slot. Writes the slots' time and id only; array chunks stay at their fill
    value until written. ``qa`` maps QA variable names to their fill values (e.g.
    ``{"scl": 0}``, ``{"fmask": 255}``, ``{"qa_pixel": 1}``; see :func:`qa_for_profile`).
    ``sensor`` (a :class:`~sitewatch.sensors.SensorProfile` or its name; default ``"generic"``)
    is recorded in the new slots' per-time ``sensor`` (a scene already in the cube keeps its own).
    One writer per site at a time (see the module docstring)."""
    sensor_name = _sensor_name(sensor)
    for name, fill in (qa or {}).items():
        if name in bands or not (0 <= int(fill) <= 65535):
            raise ValueError(f"qa got {{{name!r}: {fill!r}}}; expected a QA name that is not a band and a uint16 fill value")
    ids = [sid for sid, _ in scenes]
    bad = [sid for sid in ids if not isinstance(sid, str) or not sid]
    if bad:
        raise ValueError(f"extend got scene ids {bad!r}; expected non-empty strings")
    if _state(cube_url, storage_options) != "ready":
        _create(cube_url, grid, bands, chunk, max(CAPACITY, len(set(ids))), storage_options, qa)
    g = _group(cube_url, storage_options, mode="r+")
    lengths = _lengths(g)
    if len(set(lengths.values())) > 1:  # a growth cut short: complete it
        _grow(g, max(lengths.values()))
    check_compatible(cube_url, grid, bands, storage_options, qa=tuple(qa or ()))
    v = _per_time(g)
    existing = {sid: i for i, sid in enumerate(v["scene_id"]) if sid}
    new = sorted({(sid, _to_datetime64(t)) for sid, t in scenes if sid not in existing}, key=lambda p: (p[1], p[0]))
    if new:
        free = [i for i, sid in enumerate(v["scene_id"]) if not sid]
        if len(free) < len(new):
            capacity = len(v["scene_id"])
            bigger = max(2 * capacity, capacity + len(new) - len(free))
            _grow(g, bigger)
            free += list(range(capacity, bigger))
        idx = np.asarray(free[: len(new)])
        ms = np.asarray([(t.astype("datetime64[ms]") - _EPOCH).astype("int64") for _, t in new], dtype="int64")
        g["time"].oindex[idx] = ms  # time first, then the sensor ...
        g["sensor"].oindex[idx] = np.asarray([sensor_name] * len(new), dtype=object)
        g["scene_id"].oindex[idx] = np.asarray([sid for sid, _ in new], dtype=object)  # ... the id commits the slot
        for i, (sid, _) in zip(idx, new):
            existing[sid] = int(i)
    return {sid: existing[sid] for sid in ids}


def _sensor_name(sensor: Any) -> str:
    """The profile name of ``sensor`` (a :class:`~sitewatch.sensors.SensorProfile` or a profile name)."""
    from ..sensors import PROFILES, SensorProfile

    if isinstance(sensor, SensorProfile):
        return sensor.name
    if not isinstance(sensor, str) or sensor not in PROFILES:
        raise ValueError(f"extend got sensor {sensor!r}; expected a sensor profile or one of {sorted(PROFILES)!r}")
    return sensor


def qa_for_profile(profile: Any) -> dict[str, int]:
    """``{qa_band: fill value}`` for a :class:`~sitewatch.sensors.SensorProfile` (or its name);
    empty when the profile has no QA band."""
    from ..sensors import get_profile

    p = get_profile(profile)
    if p.qa_band is None:
        return {}
    nodata = p.band(p.qa_band).nodata
    return {p.qa_band: int(nodata) if nodata is not None else 0}


def _aligned(dask_chunks: tuple[int, ...], zarr_chunk: int) -> bool:
    """Every dask chunk boundary (but the array's end) falls on a Zarr chunk boundary."""
    return all(int(b) % zarr_chunk == 0 for b in np.cumsum(dask_chunks)[:-1])


def _region_write(cube_url: str, index: int, ds: xr.Dataset, storage_options: dict[str, Any] | None, compute: bool = True):
    """Write the ``(y, x)`` variables of ``ds`` into slot ``index`` of the cube's ``(time, y, x)``
    arrays; with ``compute=False`` returns the delayed write so that callers can compute it
    together with reductions of the same inputs.

    The values go straight into the Zarr arrays (``dask.array.store``), cast to the array's
    dtype and nothing else: no CF encoding, so band counts written into a variable that carries
    ``scale_factor`` are stored exactly as given (an xarray region write would apply the
    store's ``scale_factor`` to them a second time). Inputs are rechunked to the Zarr chunks when
    their chunks straddle chunk boundaries, so every Zarr chunk is written by exactly one task."""
    g = _group(cube_url, storage_options, mode="r+")
    sources: list[da.Array] = []
    targets: list[zarr.Array] = []
    regions: list[tuple[slice, ...]] = []
    for name, var in ds.data_vars.items():
        arr = g.get(name)
        dims = tuple(arr.metadata.dimension_names or ()) if isinstance(arr, zarr.Array) else ()
        if dims != ("time", "y", "x"):
            raise ValueError(f"region write got variable {name!r}; expected one of the cube's (time, y, x) variables")
        if set(var.dims) != {"y", "x"}:
            raise ValueError(f"region write of {name!r} got dims {var.dims!r}; expected ('y', 'x')")
        if not (0 <= index < arr.shape[0]):
            raise ValueError(f"region write got slot {index!r}; expected 0 <= slot < {arr.shape[0]}")
        var = var.transpose("y", "x")
        if var.shape != tuple(arr.shape[1:]):
            raise ValueError(f"region write of {name!r} got shape {var.shape!r}; expected the cube's {tuple(arr.shape[1:])!r}")
        dtype = np.dtype(arr.dtype)
        if np.issubdtype(dtype, np.integer) and not (np.issubdtype(var.dtype, np.integer) or var.dtype == bool):
            raise ValueError(f"region write of {name!r} got dtype {var.dtype}; expected integer values for the "
                             f"cube's {dtype} array (bands are raw counts: reflectance x 10000, 0 = nodata)")
        zy, zx = arr.chunks[1:]
        data = var.data
        if isinstance(data, da.Array):
            if not (_aligned(data.chunks[0], zy) and _aligned(data.chunks[1], zx)):
                data = data.rechunk((zy, zx))
        else:
            data = da.from_array(np.asarray(data), chunks=(zy, zx))
        if data.dtype != dtype:
            data = data.astype(dtype)
        sources.append(data[None])
        targets.append(arr)
        regions.append((slice(index, index + 1), slice(None), slice(None)))
    return da.store(sources, targets, regions=regions, lock=False, compute=compute, return_stored=False)


def write_scene_slice(cube_url: str, index: int, scene: xr.Dataset, storage_options: dict[str, Any] | None = None,
                      commit_slot: bool = True) -> float:
    """Write a scene's bands, ``valid`` and QA variable if any (``(y, x)`` arrays on the site
    grid, lazy or not; see :func:`sitewatch.io.scenes.read_scene`) into slot ``index`` and
    return its valid fraction. With ``commit_slot`` (default) the slot is then committed
    (``ingested`` and ``valid_fraction``); parallel writers pass ``False`` and leave the commit
    to the one writer of the site (:func:`commit`)."""
    # One pass: the write and the valid fraction share the (lazy) COG reads.
    write = _region_write(cube_url, index, scene, storage_options, compute=False)
    _, valid_fraction = dask.compute(write, scene["valid"].mean())
    valid_fraction = float(valid_fraction)
    if commit_slot:
        commit(cube_url, {index: {"valid_fraction": valid_fraction, "ingested": True}}, storage_options)
    return valid_fraction


def write_derived(cube_url: str, index: int, derived: xr.Dataset, storage_options: dict[str, Any] | None = None,
                  commit_slot: bool = True) -> float:
    """Write ``cloud``, ``shadow``, ``change_score``, ``change`` (``(y, x)``) into slot ``index``
    and return the cloud fraction (cloud or shadow, over valid pixels). With ``commit_slot``
    (default) the slot's ``analysed`` flag and cloud fraction are then committed."""
    lacking = [v for v in DERIVED if v not in derived.data_vars]
    if lacking:
        raise ValueError(f"derived layers lack {lacking!r}; expected all of {DERIVED!r}")
    names = list(DERIVED)
    if any(v in derived.data_vars for v in OPTIONAL_DERIVED):
        have = set(_group(cube_url, storage_options).array_keys())
        names += [v for v in OPTIONAL_DERIVED if v in derived.data_vars and v in have]
    write = _region_write(cube_url, index, derived[names], storage_options, compute=False)
    # The fraction comes from the layers being written, not from reading them back.
    valid = _open(cube_url, storage_options)["valid"].isel(time=index, drop=True)
    obscured = (derived["cloud"].variable | derived["shadow"].variable) & valid.variable
    _, n_obscured, n_valid = dask.compute(write, obscured.sum(), valid.sum())
    n_valid = int(n_valid)
    cloud_fraction = float(n_obscured) / n_valid if n_valid else float("nan")
    if commit_slot:
        commit(cube_url, {index: {"cloud_fraction": cloud_fraction, "analysed": True}}, storage_options)
    return cloud_fraction


def _open(cube_url: str, storage_options: dict[str, Any] | None = None, lazy: bool = True, **kw: Any) -> xr.Dataset:
    """The whole store as a Dataset (every slot, allocated or not). Tolerates a growth cut
    short (arrays longer than the others are read up to the common length). Dask keys are
    unique per call, so arrays read after a write never alias cached results of earlier reads
    of the same store."""
    kwargs = {**_zarr_kwargs(cube_url, storage_options), "decode_coords": "all", "mask_and_scale": False, **kw}
    g = _group(cube_url, storage_options)
    lengths = _lengths(g)
    n = min(lengths.values())
    longer = [name for name, m in lengths.items() if m > n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        ds = xr.open_dataset(cube_url, engine="zarr", chunks=None, cache=False, drop_variables=longer, **kwargs)
        for name in longer:
            others = [k for k in g.array_keys() if k != name]
            one = xr.open_dataset(cube_url, engine="zarr", chunks=None, cache=False, drop_variables=others, **kwargs)[name]
            ds[name] = one.variable[:n]
    if not lazy:
        return ds
    token = uuid.uuid4().hex
    out = ds.copy()
    for name, var in ds.variables.items():
        if var.ndim >= 2:  # gridded: lazy; per-time values (one small chunk each) are read now
            chunks = dict(zip(var.dims, var.encoding.get("chunks", var.shape)))
            out[name] = var.chunk(chunks, name=f"cube-{name}-{token}")
        elif var.ndim == 1 and name not in ds.dims:
            out[name] = var.load()
    for name in ("scene_id", "sensor"):
        if name in out.variables:
            out[name] = out[name].copy(data=np.asarray([str(v) for v in out[name].values], dtype=object))
    return out


def open_cube(cube_url: str, committed_only: bool = True, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """The cube as a lazy, georeferenced Dataset sorted by time: the committed slots (default)
    or, with ``committed_only=False``, every allocated slot."""
    state = _state(cube_url, storage_options)
    if state == "missing":
        raise CubeError(f"no sitewatch cube at {cube_url!r}")
    if state == "partial":
        raise CubeError(f"cube {cube_url!r}: its creation was cut short and it holds no scene yet; the next run recreates it")
    ds = _open(cube_url, storage_options)
    keep_mask = np.asarray([bool(v) for v in ds["scene_id"].values])
    if committed_only:
        keep_mask &= ds["ingested"].values.astype(bool)
    ds = ds.isel(time=np.flatnonzero(keep_mask))
    if ds.sizes["time"] > 1 and not bool(np.all(np.diff(ds.time.values) >= np.timedelta64(0))):
        ds = ds.sortby("time")
    return ds
