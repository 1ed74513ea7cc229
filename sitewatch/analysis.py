"""Analyse one scene slot of a site cube: baseline, masks, change and change objects.

This composes the kernels with the cube I/O for one unit of work (one scene of one site). It
is Prefect-free; the Prefect task in ``tasks/analyse.py`` adds retries, logging and the Dask
client. Arrays stay lazy (dask) from the cube to the region write; the only values brought
back are the per-band normalisation sums and the per-object statistics.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import dask
import numpy as np
import xarray as xr
from rasterio import features
from shapely.geometry import mapping, shape
import shapely
from shapely.ops import unary_union
from pyproj import Transformer

from .baseline_source import (PERSIST_STATE_BYTES, analysed_earlier, fold_clear, fold_in_stored_chunks, fold_slot, n_seen,
                              slot_baseline, state_in_stored_chunks)
from .grid import SiteGrid
from .io import baseline_state as state_io
from .io import colocated
from .io import cube as cube_io
from .io import objects_file
from .io import scratch
from .kernels.baseline import BaselineParams
from .kernels.baseline_ring import state_baseline
from .kernels.change import ChangeParams, change, fit_gain_offset
from .kernels.masks import FLAG_CLOUD, FLAG_SATURATED, FLAG_SHADOW, FLAG_SNOW, FLAG_WATER, MASK_BANDS, RNS_BANDS, MaskParams, masks, rough_obscured, rule_set
from .kernels.objects import ObjectStats, dilate, hysteresis, objects
from .kernels.qa import QAParams, decode as decode_qa
from .kernels.register import comparable, fit_registration, registered_observation
from .kernels.s2cloud import S2CloudlessParams, s2cloudless
from .sensors import S2CLOUDLESS_BANDS
from .sun import solar_position
from .work_chunks import open_for_analysis, open_strips, threads, worker_memory

MASK_METHODS = ("auto", "spectral", "provider", "s2cloudless")
# What a date's analysis holds per pixel of the site when it holds its whole-site arrays in
# memory, with 6 bands: the baseline (median and MAD per band and index, counts) about 80 B, the
# scene and its band stack 26, the masks 7, the change 9.
HELD_BYTES_PER_PX = 120


@dataclass(frozen=True)
class AnalysisParams:
    baseline: BaselineParams = field(default_factory=BaselineParams)
    masks: MaskParams = field(default_factory=MaskParams)
    change: ChangeParams = field(default_factory=ChangeParams)
    min_object_area_m2: float = 1000.0
    join_px: int = 1  # changed pixels up to 2 * join_px + 1 apart form one object
    cloud_distance_px: int = 3  # objects this close to cloud/shadow are reported as near_cloud
    # Narrowest cloud core kept by the spectral rules, in metres: sets masks.min_width_px from the
    # site resolution (opening of 2 r + 1 px with r = max(2, round(width / (2 * resolution))):
    # 4 at 10 m, 2 at 30 m). None keeps masks.min_width_px as given.
    min_cloud_width_m: float | None = 90.0
    # Cloud/shadow masks: "spectral" (sitewatch's own spectral + temporal rules, needs
    # MASK_BANDS), "provider" (the scene's own QA band, ``qa_band`` decoded as ``qa_kind``),
    # "s2cloudless" (clouds from the s2cloudless model on Sentinel-2 L1C TOA bands, needs
    # S2CLOUDLESS_BANDS; no shadows of its own), or "auto": the union of whichever the cube allows.
    mask_method: str = "auto"
    qa_band: str | None = None
    qa_kind: str | None = None
    qa: QAParams = field(default_factory=QAParams)
    s2cloudless: S2CloudlessParams = field(default_factory=S2CloudlessParams)
    # Fewer earlier analysed scenes than this, or no clear pixel of the date with at least
    # ``change.min_obs`` clear observations in its baseline: no change is computed for the date,
    # its state is "not enough history" (objects file, run report) and it raises no alert.
    min_history: int = 1
    # An object's mean NDVI change (normalised scene minus baseline median) beyond +-ndvi_change
    # is reported as vegetation gain/loss (needs red and nir).
    ndvi_change: float = 0.1
    # Sites of at most this many pixels are analysed in memory with the numpy kernels; larger
    # ones as dask arrays chunk by chunk (0: always dask). Measured per scene, 2 threads, 12
    # dates: 512^2 px 0.85 s in memory vs 1.4 s on dask; 1024^2 px 3.6 s vs 3.3 s, and only dask
    # spreads over a cluster's workers.
    eager_max_px: int = 512 * 512
    # Edge of the Dask chunks a lazy analysis works on, in px, rounded down to a multiple of the
    # cube's stored chunks (at least one). Chunks larger than the stored ones mean fewer tasks
    # (each costs the scheduler and the workers a few ms, and map_overlap slices halos per chunk);
    # None works on the stored chunks. Smaller where a site would otherwise have fewer than two
    # chunks per thread of the cluster. See sitewatch.work_chunks.
    work_chunk_px: int | None = 2048
    # The whole-site arrays a date's analysis reads more than once (baseline, masks, change) are
    # held in the cluster's memory while the site's estimate (HELD_BYTES_PER_PX per pixel) is at
    # most this (None: a quarter of a worker's memory, sitewatch.work_chunks.worker_memory; the
    # whole analysis then peaks at about 2.3x the estimate). Above it the site is streamed: they
    # go to a scratch Zarr store beside the cube and are read back chunk by chunk
    # (sitewatch.io.scratch), and the analysis works on full-width strips of about
    # ``streamed_chunk_px ** 2`` pixels (sitewatch.work_chunks.open_strips). Streamed, memory
    # grows much more slowly than the site's area, and the analysis takes about twice as long.
    hold_max_bytes: int | None = None
    streamed_chunk_px: int = 1024

    def __post_init__(self) -> None:
        if self.work_chunk_px is not None and self.work_chunk_px < 64:
            raise ValueError(f"work_chunk_px got {self.work_chunk_px!r}; expected None or >= 64 px")
        if self.streamed_chunk_px < 64:
            raise ValueError(f"streamed_chunk_px got {self.streamed_chunk_px!r}; expected >= 64 px")
        if self.hold_max_bytes is not None and self.hold_max_bytes < 0:
            raise ValueError(f"hold_max_bytes got {self.hold_max_bytes!r}; expected >= 0 bytes or None")
        if self.min_history < 1:
            raise ValueError(f"min_history got {self.min_history!r}; expected >= 1 earlier scene")
        if not 0 < self.ndvi_change < 2:
            raise ValueError(f"ndvi_change got {self.ndvi_change!r}; expected in (0, 2)")
        if self.min_object_area_m2 < 0:
            raise ValueError(f"min_object_area_m2 got {self.min_object_area_m2!r}; expected >= 0")
        if self.mask_method not in MASK_METHODS:
            raise ValueError(f"mask_method got {self.mask_method!r}; expected one of {MASK_METHODS!r}")
        if (self.qa_band is None) != (self.qa_kind is None):
            raise ValueError(f"qa_band/qa_kind got {(self.qa_band, self.qa_kind)!r}; expected both or neither")
        if self.min_cloud_width_m is not None and not self.min_cloud_width_m > 0:
            raise ValueError(f"min_cloud_width_m got {self.min_cloud_width_m!r}; expected metres > 0 or None")
        if self.mask_method == "provider" and self.qa_band is None:
            raise ValueError("mask_method got 'provider' without a qa_band; expected a sensor with a QA band")


@dataclass(frozen=True)
class Detection:
    """A change object found in one scene, in site-grid and lon/lat terms."""

    scene_id: str
    time: str  # ISO 8601 UTC
    area_m2: float
    lon: float
    lat: float
    row: float
    col: float
    bbox_pixels: tuple[int, int, int, int]  # row0, col0, row1, col1
    score_mean: float
    score_max: float
    direction: str  # "brighter" | "darker"
    delta_brightness: float
    polygon: dict[str, Any]  # GeoJSON geometry in lon/lat
    near_cloud_px: int = 0  # pixels within cloud_distance_px of cloud or shadow: less certain
    delta_ndvi: float | None = None  # mean NDVI of the object minus its baseline's (None: no red/nir)
    vegetation: str | None = None  # "loss" | "gain" | None (|delta_ndvi| below AnalysisParams.ndvi_change)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["bbox_pixels"] = list(self.bbox_pixels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Detection":
        d = dict(d)
        d["bbox_pixels"] = tuple(d["bbox_pixels"])
        return cls(**d)


@dataclass(frozen=True)
class SlotResult:
    scene_id: str
    index: int
    time: str
    cloud_fraction: float
    valid_fraction: float
    n_baseline_scenes: int
    detections: list[Detection]
    normalisation: dict[str, list[float]] | None
    mask_methods: tuple[str, ...] = ()  # the cloud/shadow mask methods that ran
    mask_notes: tuple[str, ...] = ()  # methods "auto" left out, and why
    shadow_length_px: int | None = None  # matched shadow projection (spectral rules), None if none
    # "ok" | "not enough history" | "no clear pixels" | "not comparable" (the fitted gain of a band
    # beyond ChangeParams.max_gain_ratio: snow, thick haze); all but "ok": no change, no detections
    change_state: str = "ok"
    history_fraction: float | None = None  # share of the date's clear pixels with enough clear history
    objects_url: str | None = None  # the date's change objects (GeoJSON) next to the cube
    # where the baseline came from: "state" (the stored incremental state), "rebuilt" (from the
    # cube's recent analysed scenes; baseline_note says why) or "none" (no earlier analysed scene)
    baseline_source: str = "none"
    baseline_note: str = ""


def history_indices(cube: xr.Dataset, index: int, window: int) -> list[int]:
    """Indices of the last ``window`` analysed scenes acquired before slot ``index``."""
    return analysed_earlier(cube, index)[-window:]


def mask_methods(cube: xr.Dataset, bands: Sequence[str], params: AnalysisParams) -> tuple[tuple[str, ...], list[str]]:
    """Which mask methods run on this cube, and notes on the ones "auto" left out and why.

    "spectral" needs the visible rule set (MASK_BANDS) or the red/NIR/SWIR set (RNS_BANDS),
    "provider" the QA variable in the cube, "s2cloudless" every S2CLOUDLESS_BANDS band. A method
    asked for by name that the bands do not support is a ValueError naming the bands; "auto"
    takes the union of what is supported, except that the reduced red/NIR/SWIR rules are used
    only where no provider mask exists (the provider's mask is better than those rules)."""
    s2_lacking = [b for b in S2CLOUDLESS_BANDS.values() if b not in bands]
    rs = rule_set(bands)
    ok = {
        "spectral": rs is not None,
        "provider": params.qa_band is not None and params.qa_band in cube.data_vars,
        "s2cloudless": not s2_lacking,
    }
    if params.mask_method == "spectral" and not ok["spectral"]:
        raise ValueError(f"mask_method 'spectral' got bands {list(bands)!r}; expected all of {list(MASK_BANDS)!r} "
                         f"or of {list(RNS_BANDS)!r}")
    if params.mask_method == "provider" and not ok["provider"]:
        raise ValueError(f"mask_method 'provider' got a cube without QA variable {params.qa_band!r}; expected it ingested")
    if params.mask_method == "s2cloudless" and not ok["s2cloudless"]:
        raise ValueError(f"mask_method 's2cloudless' got bands {list(bands)!r}, lacking {s2_lacking!r}; expected all of "
                         f"{list(S2CLOUDLESS_BANDS.values())!r} (Sentinel-2 L1C {', '.join(S2CLOUDLESS_BANDS)})")
    if params.mask_method != "auto":
        return (params.mask_method,), []
    notes = []
    if rs is RNS_BANDS and ok["provider"]:
        ok["spectral"] = False
        notes.append(f"spectral rules not used: bands {list(bands)!r} lack blue/green, and the provider mask "
                     f"({params.qa_band}) is used instead of the reduced red/NIR/SWIR rules")
    elif rs is None:
        notes.append(f"spectral rules not used: bands {list(bands)!r} lack {[b for b in MASK_BANDS if b not in bands]!r}")
    if params.qa_band is not None and not ok["provider"]:
        notes.append(f"provider mask not used: QA band {params.qa_band!r} not in the cube")
    out = tuple(m for m in ("spectral", "provider", "s2cloudless") if ok[m])
    if not out:
        raise ValueError(
            f"no cloud mask method for bands {list(bands)!r} and QA {params.qa_band!r}; expected all of "
            f"{list(MASK_BANDS)!r} or {list(RNS_BANDS)!r} (spectral rules), a sensor QA band in the cube (provider "
            f"masks) or the Sentinel-2 L1C bands {list(S2CLOUDLESS_BANDS.values())!r} (s2cloudless)"
        )
    return out, notes


def _s2cloudless_masks(scene: xr.Dataset, params: AnalysisParams) -> xr.Dataset:
    """Clouds from s2cloudless on the scene's L1C bands (counts x 1e-4 = TOA reflectance),
    raw (as the s2cloudless post-processing leaves them, within valid pixels) and buffered by
    ``masks.buffer_px``; s2cloudless has no shadow class, so both shadow layers are empty."""
    names = list(S2CLOUDLESS_BANDS)
    stack = xr.concat([scene[S2CLOUDLESS_BANDS[b]] for b in names], dim="band").assign_coords(band=names)
    out = s2cloudless(stack.astype(np.float32) * np.float32(1e-4), params.s2cloudless)
    cloud, probability = out["cloud"] & scene["valid"], out["cloud_probability"]
    none = xr.zeros_like(scene["valid"])
    return xr.Dataset({"cloud_raw": cloud, "shadow_raw": none, "cloud": dilate(cloud, params.masks.buffer_px), "shadow": none,
                       "flags": cloud.astype(np.uint8) * np.uint8(FLAG_CLOUD), "cloud_score": probability.where(scene["valid"])})


def _provider_masks(scene: xr.Dataset, params: AnalysisParams) -> xr.Dataset:
    """The scene's provider cloud and shadow flags, raw and buffered by ``masks.buffer_px``."""
    layers = decode_qa(scene[params.qa_band], params.qa_kind, params.qa)  # type: ignore[arg-type]
    buf = params.masks.buffer_px
    u8 = lambda name, bit: layers[name].astype(np.uint8) * np.uint8(bit)  # noqa: E731
    flags = u8("cloud", FLAG_CLOUD) | u8("shadow", FLAG_SHADOW) | u8("snow", FLAG_SNOW) | u8("water", FLAG_WATER)
    return xr.Dataset({
        "cloud_raw": layers["cloud"], "shadow_raw": layers["shadow"],
        "cloud": dilate(layers["cloud"], buf), "shadow": dilate(layers["shadow"], buf),
        "flags": flags, "cloud_score": layers["cloud"].astype(np.float32).where(scene["valid"]),
    })


def mask_params(params: AnalysisParams, resolution: float) -> MaskParams:
    """The spectral rules' parameters at this resolution (``min_cloud_width_m`` -> ``min_width_px``)."""
    if params.min_cloud_width_m is None:
        return params.masks
    r = max(2, int(round(params.min_cloud_width_m / (2 * resolution))))
    return replace(params.masks, min_width_px=r)


def sun_position(cube: xr.Dataset, index: int, grid: SiteGrid) -> tuple[float, float] | None:
    """``(azimuth, elevation)`` of the sun for slot ``index``: from the cube's per-time
    ``sun_azimuth``/``sun_elevation`` (scene metadata) when present and finite, else computed
    from the acquisition time and the site centre; ``None`` when the sun is below the horizon."""
    if "sun_azimuth" in cube.variables and "sun_elevation" in cube.variables:
        az, el = float(cube["sun_azimuth"].values[index]), float(cube["sun_elevation"].values[index])
        if np.isfinite(az) and np.isfinite(el):
            return (az, el) if el > 0 else None
    when = cube.time.values[index].astype("datetime64[us]").item()
    lon, lat = grid.pixel_to_lonlat(grid.height / 2, grid.width / 2)
    az, el = solar_position(when, lon, lat)
    return (az, el) if el > 0 else None


def _polygon(win: np.ndarray, obj: ObjectStats, grid: SiteGrid, to_lonlat: Transformer) -> dict[str, Any]:
    """The object's outline in lon/lat from ``win``, its pixels in its bounding box (bool)."""
    tr = grid.transform @ grid.transform.translation(obj.col0, obj.row0)
    polys = [shape(g) for g, v in features.shapes(win.astype(np.uint8), mask=win, transform=tr, connectivity=8) if v == 1]
    geom = unary_union(polys)
    return mapping(shapely.transform(geom, lambda x, y: to_lonlat.transform(x, y), interleaved=False))


def _object_windows(scene: xr.Dataset, baseline: xr.Dataset, labels: xr.DataArray,
                    objs: Sequence[ObjectStats]) -> list[dict[str, np.ndarray]]:
    """Per object, its bounding-box windows of the labels (``labels``) and, where the scene and the
    baseline have red and nir, of the scene's and the baseline median's red/nir (``red``, ``nir``,
    ``median``): all fetched in one ``dask.compute`` (one round trip for every object of the date
    instead of a few per object)."""
    ndvi = "red" in scene and "nir" in scene and {"red", "nir"} <= set(baseline["median"].band.values.tolist())
    med = baseline["median"].sel(band=["red", "nir"]) if ndvi else None
    wins = []
    for o in objs:
        win = dict(y=slice(o.row0, o.row1), x=slice(o.col0, o.col1))
        w = {"labels": labels.isel(win).data}
        if ndvi:
            w.update(red=scene["red"].isel(win).data, nir=scene["nir"].isel(win).data, median=med.isel(win).data)  # type: ignore[union-attr]
        wins.append(w)
    return [{k: np.asarray(v) for k, v in w.items()} for w in dask.compute(*wins)] if wins else []


def _change_state(clear: xr.DataArray, baseline: xr.Dataset | None, n_history: int,
                  params: AnalysisParams) -> tuple[str, float | None]:
    """The date's change state and the share of its clear pixels with at least ``min_obs``
    clear observations in the baseline: "no clear pixels" (all cloud, shadow or nodata), "not
    enough history" (fewer than ``min_history`` earlier scenes, or no clear pixel with enough
    clear history) or "ok"."""
    if baseline is None:
        n_clear = int(clear.sum().compute())
        return ("not enough history" if n_clear else "no clear pixels"), (0.0 if n_clear else None)
    enough = clear & (baseline["count"] >= params.change.min_obs)
    sums = xr.Dataset({"clear": clear.sum(), "enough": enough.sum()}).compute()
    n_clear, n_enough = int(sums["clear"]), int(sums["enough"])
    if n_clear == 0:
        return "no clear pixels", None
    frac = n_enough / n_clear
    if n_history < params.min_history or n_enough == 0:
        return "not enough history", frac
    return "ok", frac


def _ndvi_delta(win: dict[str, np.ndarray], obj: ObjectStats, norm: dict[str, tuple[float, float]] | None) -> float | None:
    """Mean over the object's pixels of NDVI (scene, normalised like the change score) minus the
    baseline median's NDVI, from the object's windows (:func:`_object_windows`); None without red and nir."""
    if "red" not in win:
        return None
    inside = win["labels"] == obj.label

    def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(red + nir > 0, (nir - red) / (nir + red), np.nan)

    g = norm or {}
    scaled = {b: win[b].astype(np.float64) * g.get(b, (1.0, 0.0))[0] + g.get(b, (1.0, 0.0))[1] for b in ("red", "nir")}
    med = win["median"].astype(np.float64)
    d = (ndvi(scaled["red"], scaled["nir"]) - ndvi(med[0], med[1]))[inside]
    d = d[np.isfinite(d)]
    return round(float(d.mean()), 4) if d.size else None


def _object_record(d: Detection, grid: SiteGrid) -> dict[str, Any]:
    """One object of the date's objects file: geometry plus its properties."""
    r0, c0, r1, c1 = d.bbox_pixels
    corners = [grid.pixel_to_lonlat(r, c) for r, c in ((r0, c0), (r0, c1), (r1, c0), (r1, c1))]
    lons, lats = [c[0] for c in corners], [c[1] for c in corners]
    return {
        "polygon": d.polygon, "area_m2": round(d.area_m2, 1), "area_px": int(round(d.area_m2 / grid.pixel_area_m2)),
        "centroid": [round(d.lon, 7), round(d.lat, 7)],
        "bbox": [round(min(lons), 7), round(min(lats), 7), round(max(lons), 7), round(max(lats), 7)],
        "bbox_pixels": list(d.bbox_pixels), "score_mean": round(d.score_mean, 3), "score_max": round(d.score_max, 3),
        "direction": d.direction, "delta_brightness": round(d.delta_brightness, 5),
        "vegetation": d.vegetation, "delta_ndvi": d.delta_ndvi, "near_cloud_px": d.near_cloud_px,
    }


def analyse_slot(
    cube_url: str,
    index: int,
    grid: SiteGrid,
    bands: Sequence[str],
    params: AnalysisParams = AnalysisParams(),
    storage_options: dict[str, Any] | None = None,
    use_state: bool = True,
) -> SlotResult:
    """Compute and write ``cloud``, ``shadow``, ``change_score``, ``change`` for slot ``index``
    and return its change objects of at least ``min_object_area_m2``.

    The baseline is the median/MAD of each pixel's last ``params.baseline.window`` clear
    observations in the analysed scenes acquired before this one. It comes from the site's
    stored baseline state (:mod:`sitewatch.io.baseline_state`) when that state folded exactly
    those scenes; otherwise (no state yet, a backfill of an older scene, another window, an
    update cut short, or ``use_state=False``) it is rebuilt from the cube's last
    ``REBUILD_SCENES_PER_WINDOW * window`` analysed scenes (``SlotResult.baseline_source`` /
    ``baseline_note`` say which). After the slot's masks are committed, its clear pixels are
    folded into the state, which is stored when this slot is the latest analysed one.

    A site whose whole-site arrays would take more than ``params.hold_max_bytes`` (default: a
    quarter of a worker's memory) is streamed: they are kept in a scratch store beside the cube
    (removed when the slot is done, also when it fails) instead of memory (see :func:`streamed`)."""
    if not streamed(grid, params):
        return _analyse(cube_url, index, grid, bands, params, storage_options, use_state, scratch.in_memory, None)
    scratch.sweep(scratch.scratch_url(cube_url), storage_options)  # what a killed run left, a day on
    with scratch.Scratch(scratch.scratch_url(cube_url), storage_options) as hold:
        return _analyse(cube_url, index, grid, bands, params, storage_options, use_state, hold,
                        params.streamed_chunk_px)


def streamed(grid: SiteGrid, params: AnalysisParams) -> bool:
    """Whether a site's analysis keeps its whole-site arrays in a scratch store (not in memory):
    when their estimate, ``HELD_BYTES_PER_PX`` per pixel, is above ``params.hold_max_bytes``
    (``None``: a quarter of the memory of a worker of the cluster computing now)."""
    px = grid.width * grid.height
    if px <= params.eager_max_px:
        return False
    budget = worker_memory() // 4 if params.hold_max_bytes is None else params.hold_max_bytes
    return px * HELD_BYTES_PER_PX > budget


def _analyse(cube_url: str, index: int, grid: SiteGrid, bands: Sequence[str], params: AnalysisParams,
             storage_options: dict[str, Any] | None, use_state: bool, hold: scratch.Hold, stream_px: int | None) -> SlotResult:
    """:func:`analyse_slot` with the arrays read more than once kept by ``hold`` (in memory or in a
    scratch store); a streamed site (``stream_px``, else ``None``) works on strips of about
    ``stream_px ** 2`` pixels."""
    n_kept = itertools.count()

    def keep(a: xr.DataArray) -> xr.DataArray:
        """Where a kernel keeps an array its later steps read: in memory, or the scratch store."""
        return hold(a, f"kept_{next(n_kept)}")

    # raw band counts (reflectance x 10000, 0 = nodata), as the kernels expect: no CF scale/mask decoding
    # two chunks per thread of the cluster at least, so that every thread has work
    if stream_px is None:
        cube = open_for_analysis(cube_url, params.work_chunk_px, storage_options, min_chunks=2 * threads())
    else:
        cube = open_strips(cube_url, stream_px, storage_options, min_chunks=2 * threads())
    # the per-time arrays (flags, fractions, sun angles) are read here in one compute: every
    # ``.values`` on them below would otherwise be a round trip of its own to the cluster
    per_time = [n for n, v in cube.variables.items() if v.dims == ("time",) and n != "time" and v.chunks is not None]
    loaded = {n: cube.variables[n].copy(data=v) for n, v in zip(per_time, dask.compute(*[cube.variables[n].data for n in per_time]))}
    cube = cube.assign_coords({n: v for n, v in loaded.items() if n in cube.coords})
    cube = cube.assign({n: v for n, v in loaded.items() if n not in cube.coords})
    if not bool(cube["ingested"].values[index]):
        raise ValueError(f"cube slot {index} ({cube.scene_id.values[index]!r}) got no committed scene; expected an ingested slot")
    scene_id = str(cube.scene_id.values[index])
    when = np.datetime_as_string(cube.time.values[index], unit="s") + "Z"
    methods, method_notes = mask_methods(cube, bands, params)
    qa_vars = [params.qa_band] if "provider" in methods else []
    scene = cube[list(bands) + ["valid"] + qa_vars].isel(time=index, drop=True)
    # A small site is read into memory and analysed with the numpy kernels (identical results,
    # see the kernels' tests): for it, scheduling thousands of tiny dask tasks costs more than
    # the work. Larger sites stay lazy and chunked on the Dask cluster.
    eager = grid.width * grid.height <= params.eager_max_px
    register_min_obs = params.change.min_obs if params.change.coregister else None
    base = slot_baseline(cube, cube_url, index, bands, params.baseline, storage_options, use_state,
                         register_min_obs=register_min_obs, in_memory=eager, max_gain_ratio=params.change.max_gain_ratio,
                         hold=hold)
    # With little history the comparison degrades to what there is: a pixel needs
    # min(min_obs, earlier scenes with any clear pixel) clear observations (one earlier clear
    # view: bi-temporal); the scenes are those folded into the baseline state.
    params = replace(params, change=replace(params.change, min_obs=max(1, min(params.change.min_obs, n_seen(cube, base.indices)))))
    # a streamed site reads the stored state where it needs it (a rebuilt one is in the scratch store)
    state_held = eager or (stream_px is None and base.state["ring"].nbytes <= PERSIST_STATE_BYTES)
    if eager:
        base.state = base.state.load()
    elif state_held:
        base.state = base.state.persist()  # read (or rebuilt) once: the baseline and the fold below use it
    strips = None
    if stream_px is not None:
        strips = {"y": cube["valid"].data.chunks[-2][0], "x": -1}
        if base.source == "state":
            # the baseline is made in the state's stored chunks (a strip would decode every stored
            # chunk of the ring it meets whole) and kept in chunks that fit both, read back in strips
            state_in_stored_chunks(cube, cube_url, index, bands, params.baseline, base, storage_options)
    baseline = None
    if base.folded:
        baseline = state_baseline(base.state, cube.time.values[index], base.season_days, params.change.indices)  # seasonal: around this date
        baseline = baseline if eager else hold(baseline, "baseline", chunks=strips)
    if not eager and stream_px is None and baseline is not None:
        # each chunk of the scene read by the worker that holds the baseline's chunk: the masks, the
        # change and the fold combine the two without copying either between workers
        scene = colocated.slot_beside(cube_io._group(cube_url, storage_options), scene, index, baseline["count"])
    if eager:
        scene = scene.load()
    elif stream_px is None:
        scene = scene.persist()  # read the scene once; every step below reuses it
    # streamed: every step reads the chunks it needs from the cube
    gain_offset = None
    norm_by_band = None
    # per-method masks beside sitewatch's own rules: the scene's QA band, s2cloudless
    extra = [f(scene, params) for name, f in (("provider", _provider_masks), ("s2cloudless", _s2cloudless_masks)) if name in methods]
    if baseline is not None:
        # Per-date radiometric normalisation, fitted on pixels that are roughly clear.
        obscured = rough_obscured(scene, baseline, params.masks) if "spectral" in methods else None
        for e in extra:
            unbuffered = e["cloud_raw"] | e["shadow_raw"]
            obscured = unbuffered if obscured is None else (obscured | unbuffered)
        rough_clear = scene["valid"] & ~obscured
        gain_offset = fit_gain_offset(scene, rough_clear, baseline, bands, params.change.min_obs)
        norm_by_band = {b: (float(g), float(o)) for b, g, o in zip(bands, *gain_offset)}
    sun = sun_position(cube, index, grid)
    m = (masks(scene, baseline, mask_params(params, grid.resolution), norm=norm_by_band, sun=sun, resolution=grid.resolution)
         if "spectral" in methods else None)
    for e in extra:
        p = e[["cloud", "shadow", "flags", "cloud_score"]]
        m = p if m is None else xr.Dataset({
            "cloud": m["cloud"] | p["cloud"], "shadow": (m["shadow"] | p["shadow"]) & ~(m["cloud"] | p["cloud"]),
            "flags": m["flags"] | p["flags"], "cloud_score": np.fmax(m["cloud_score"], p["cloud_score"])})
    shadow_length = None
    if "spectral" in methods and m["shadow"].attrs.get("shadow_length_px", -1) >= 0:
        shadow_length = int(m["shadow"].attrs["shadow_length_px"])
    m = hold(m, "masks")
    saturated = (m["flags"] & np.uint8(FLAG_SATURATED)) > 0
    clear = scene["valid"] & ~m["cloud"] & ~m["shadow"] & ~saturated
    values = scene[list(bands)].to_dataarray("band").transpose("band", "y", "x")
    folded_clear = fold_clear(scene["valid"], m["cloud"], m["shadow"], values)
    if stream_px is not None:
        # the band stack (12 bytes per pixel) in the scratch store too, in strips: the registration,
        # the change and the fold read it there, not from the cube's stored chunks, which a strip
        # cuts across (a stored chunk is then decompressed once for each strip it meets)
        held = hold(xr.Dataset({"values": values.chunk(band=-1), "folded_clear": folded_clear}), "values")
        values, folded_clear = held["values"], held["folded_clear"]
        scene = scene.assign({b: values.sel(band=b, drop=True) for b in bands})
    elif not eager:
        # the band stack and the folded pixels feed the registration's four reductions and the
        # fold: made once (one block of all bands per chunk) instead of rebuilt in every graph;
        # the scene's bands become views of the stack, so the bands are held once. Submitted
        # before the change state's sums below wait on the masks, so the workers have this
        # work queued while the client waits (on a cluster, persist does not block)
        values, folded_clear = dask.persist(values.chunk(band=-1), folded_clear)
        scene = scene.assign({b: values.sel(band=b, drop=True) for b in bands})
    state, history_fraction = _change_state(clear, baseline, len(base.folded), params)
    registration = None
    if baseline is not None and params.change.coregister:
        # one fit (sub-pixel shift, per-band gain/offset) against the baseline median serves the
        # change score and the fold of this scene into the baseline state
        median = baseline["median"].sel(band=list(bands)).transpose("band", "y", "x")
        registration = fit_registration(values, median, folded_clear & (baseline["count"] >= params.change.min_obs),
                                        keep=keep)
        if state == "ok" and not comparable(registration, params.change.max_gain_ratio):
            # snow over the site, thick haze or a missed cloud bank: the scene is unlike its baseline
            # as a whole; it is neither scored nor folded into the baseline state
            state = "not comparable"
    if state == "ok":
        # on dask the hysteresis runs on the persisted score: inside change() it would persist a
        # copy of the score's graph, and the persist here would compute the score a second time
        grow = params.change.grow_threshold if not eager else None
        cp = replace(params.change, grow_threshold=None) if grow is not None else params.change
        ch, norm = change(scene, clear, baseline, bands, cp,
                          gain_offset=None if params.change.coregister else gain_offset, registration=registration)
        if grow is None:
            ch = ch if eager else hold(ch, "change")
        else:
            ch = hold(ch.drop_vars("change"), "change")
            changed = hysteresis(ch["change_score"], grow, params.change.threshold, keep).assign_attrs(long_name="changed pixel")
            ch = ch.assign(change=hold(changed, "changed"))
    else:  # nothing to compare: no change computed, no detections
        nan = xr.full_like(scene["valid"], np.nan, dtype=np.float32)
        ch = xr.Dataset({"change_score": nan, "change": xr.zeros_like(scene["valid"]), "delta_brightness": nan})
        norm = None
    detections: list[Detection] = []
    if state == "ok":
        near = dilate(m["cloud"] | m["shadow"], params.cloud_distance_px)
        labels, objs = objects(ch["change"], ch["change_score"], ch["delta_brightness"], join_px=params.join_px, flag=near,
                               keep=keep)
        min_px = params.min_object_area_m2 / grid.pixel_area_m2
        to_lonlat = Transformer.from_crs(grid.crs, 4326, always_xy=True)
        kept = [o for o in objs if o.area_px >= min_px]
        for o, win in zip(kept, _object_windows(scene, baseline, labels, kept)):
            lon, lat = grid.pixel_to_lonlat(o.row, o.col)
            dndvi = _ndvi_delta(win, o, norm_by_band)
            veg = None if dndvi is None or abs(dndvi) < params.ndvi_change else ("gain" if dndvi > 0 else "loss")
            detections.append(Detection(
                scene_id=scene_id, time=when, area_m2=o.area_px * grid.pixel_area_m2, lon=lon, lat=lat,
                row=o.row, col=o.col, bbox_pixels=(o.row0, o.col0, o.row1, o.col1),
                score_mean=o.score_mean, score_max=o.score_max,
                direction="brighter" if o.delta_mean >= 0 else "darker", delta_brightness=o.delta_mean,
                polygon=_polygon(win["labels"] == o.label, o, grid, to_lonlat), near_cloud_px=o.flagged_px,
                delta_ndvi=dndvi, vegetation=veg,
            ))
    # the date's objects file first, then the slot's layers and its "analysed" flag: an analysed
    # date always has its objects file
    site_root = cube_url.rstrip("/").rsplit("/", 1)[0]
    obj_url = objects_file.objects_url(site_root, when, scene_id)
    objects_file.write(obj_url, objects_file.feature_collection(
        scene_id, when, [_object_record(d, grid) for d in detections], state, len(base.folded), history_fraction,
        params.min_object_area_m2), storage_options)
    score_pct = (m["cloud_score"] * 100).round().fillna(cube_io.SCORE_FILL).astype(np.uint8)
    derived = xr.Dataset({"cloud": m["cloud"], "shadow": m["shadow"], "change_score": ch["change_score"], "change": ch["change"],
                          "mask_flags": m["flags"], "cloud_score": score_pct})
    cloud_fraction = cube_io.write_derived(cube_url, index, derived, storage_options)
    # the date's layers are stored: drop every reference to them (and to the baseline) so that the
    # cluster frees them before the fold reads and rewrites the state (lower peak memory)
    m = ch = derived = score_pct = clear = saturated = baseline = median = labels = near = None  # noqa: F841
    extra = obscured = rough_clear = changed = None  # noqa: F841
    if stream_px is not None:
        if registration is not None:
            # moved onto the baseline here, in strips (with a 1 px halo), and kept in the scratch
            # store: the fold then reads uint16 counts in the state's stored chunks and needs no
            # halo there (a halo across stored chunks held most of the date's bands at once)
            moved, moved_clear = registered_observation(values, folded_clear, registration, base.max_gain_ratio)
            held = hold(xr.Dataset({"values": moved, "folded_clear": moved_clear}), "moved")
            values, folded_clear, registration = held["values"], held["folded_clear"], None
        values, folded_clear = fold_in_stored_chunks(cube, cube_url, index, bands, params.baseline, base, values, folded_clear,
                                                      storage_options)
    elif not state_held and base.source == "state":
        # the stored state, too large to hold, is read a second time for the fold: beside the date's pixels
        base.state = state_io.open_state_beside(state_io.state_url(cube_url), base.state, folded_clear, storage_options)
    # fold this slot's clear pixels (as committed: valid, not cloud, not shadow) into the state
    fold_slot(cube, cube_url, index, base, values, folded_clear, storage_options, registration)
    valid_fraction = float(cube["valid_fraction"].values[index])
    cube.close()
    return SlotResult(scene_id, index, when, cloud_fraction, valid_fraction, len(base.folded), detections, norm,
                      mask_methods=methods, mask_notes=tuple(method_notes), shadow_length_px=shadow_length,
                      change_state=state, history_fraction=history_fraction, objects_url=obj_url,
                      baseline_source=base.source, baseline_note=base.note)
