"""Cloud shadows found by projecting the clouds along the sun's direction.

A cloud at height ``h`` casts its shadow ``h * tan(sun zenith)`` metres away from the sun. Without
a thermal band the height is unknown, so (as Fmask does per cloud object, here per scene):

1. **match**: for each candidate shadow length ``L`` (pixels) over the configured range of cloud
   heights, shift the cloud mask by ``L`` away from the sun and count how many of the projected
   pixels (outside cloud, valid) are *dark* (darker than their clear-sky baseline). The length
   whose projection is darkest wins (every ``coarse_step_px``-th length over the whole range,
   then every length around the three best). The counts are integer sums over chunks, so the choice does not depend
   on the chunking. A match weaker than ``min_match`` gives no projected shadow.
2. **project**: the union of the cloud mask shifted by every length within ``tolerance`` of the
   best one (clouds of one scene are not all at one height) is the shadow *region*; the shadow
   is the region's pixels that are dark by a looser test (``candidate``), outside cloud and
   valid. Shadows of clouds beyond the site edge cannot be projected (their cloud is not in the
   array); :mod:`sitewatch.kernels.masks` keeps its strong temporal darkening test for them.

Grid north is taken as true north (UTM grid convergence, at most a few degrees inside a zone, is
ignored). Shifts are exact pixel offsets (rounded), so the chunked result equals the
whole-array one: the dask path pads each chunk by the longest shift (``map_overlap``,
constant ``False`` beyond the array edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr

from ..sun import shadow_step
from ._util import is_dask, require_2d_same_shape


@dataclass(frozen=True)
class ShadowParams:
    heights_m: tuple[float, float] = (200.0, 4000.0)  # cloud base heights searched
    coarse_step_px: int = 3  # step between the lengths tried over the whole range in the first pass
    tolerance: float = 0.1  # keep lengths within +-10 % (at least +-2 px) of the best one
    min_match: float = 0.3  # fraction of the projected cloud that must be dark
    min_projected_px: int = 50  # a projection this small (clouds mostly outside) is not matched

    def __post_init__(self) -> None:
        lo, hi = self.heights_m
        if not 0 <= lo < hi:
            raise ValueError(f"shadow heights_m got {self.heights_m!r}; expected 0 <= low < high metres")
        if self.coarse_step_px < 1:
            raise ValueError(f"shadow coarse_step_px got {self.coarse_step_px!r}; expected >= 1")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"shadow tolerance got {self.tolerance!r}; expected 0 <= tolerance < 1")
        if not 0 < self.min_match <= 1:
            raise ValueError(f"shadow min_match got {self.min_match!r}; expected 0 < min_match <= 1")


@dataclass(frozen=True)
class Geometry:
    """Shadow direction (unit ``(rows, cols)`` per pixel of length) and the range of lengths."""

    unit: tuple[float, float]
    lengths: tuple[int, int]  # shortest and longest shadow length in pixels

    @classmethod
    def from_sun(cls, azimuth: float, elevation: float, resolution: float, params: ShadowParams) -> "Geometry":
        dr, dc = shadow_step(azimuth, elevation, resolution)
        per_m = math.hypot(dr, dc)
        if per_m == 0:  # sun overhead: shadows right under their clouds
            return cls((0.0, 0.0), (0, 0))
        lo, hi = (int(math.floor(h * per_m)) for h in params.heights_m)
        return cls((dr / per_m, dc / per_m), (lo, max(lo, int(math.ceil(params.heights_m[1] * per_m)))))

    def offset(self, length: int) -> tuple[int, int]:
        return int(round(length * self.unit[0])), int(round(length * self.unit[1]))


def _depth(geom: Geometry, shape: tuple[int, int]) -> tuple[int, int]:
    """Padding per axis that holds every shift's source pixels (capped at the axis size: a shift
    at least that long has no source inside the array)."""
    far = geom.offset(geom.lengths[1])
    return min(abs(far[0]) + 1, shape[0]), min(abs(far[1]) + 1, shape[1])


def _shifted(padded: np.ndarray, depth: tuple[int, int], offset: tuple[int, int], core: tuple[int, int]) -> np.ndarray | None:
    """``out[p] = source[p - offset]`` over the core of a block padded by ``depth``; ``None`` when
    every source pixel is beyond the padding (outside the array)."""
    (py, px), (dr, dc), (h, w) = depth, offset, core
    if abs(dr) > py or abs(dc) > px:
        return None
    return padded[py - dr: py - dr + h, px - dc: px - dc + w]


def _counts_block(cloud: np.ndarray, dark: np.ndarray, open_: np.ndarray, depth: tuple[int, int],
                  geom: Geometry, lengths: tuple[int, ...]) -> np.ndarray:
    """``(len(lengths), 2)`` int64: projected pixels and dark projected pixels of the core, per
    length; ``open_`` = valid and not cloud (core only), ``dark`` dark and open (core only)."""
    out = np.zeros((len(lengths), 2), dtype=np.int64)
    core = open_.shape
    for k, length in enumerate(lengths):
        s = _shifted(cloud, depth, geom.offset(length), core)
        if s is None:
            continue
        proj = s & open_
        out[k, 0] = np.count_nonzero(proj)
        out[k, 1] = np.count_nonzero(proj & dark)
    return out


def _region_block(cloud: np.ndarray, depth: tuple[int, int], geom: Geometry, lengths: tuple[int, ...],
                  core: tuple[int, int]) -> np.ndarray:
    region = np.zeros(core, dtype=bool)
    for length in lengths:
        s = _shifted(cloud, depth, geom.offset(length), core)
        if s is not None:
            region |= s
    return region


def _pad(a: np.ndarray, depth: tuple[int, int]) -> np.ndarray:
    return np.pad(np.asarray(a, dtype=bool), ((depth[0], depth[0]), (depth[1], depth[1])), constant_values=False)


def _coarse_lengths(geom: Geometry, params: ShadowParams) -> tuple[int, ...]:
    lo, hi = geom.lengths
    return tuple(sorted(set(range(lo, hi + 1, params.coarse_step_px)) | {hi}))


def _fine_lengths(coarse: tuple[int, ...], counts: np.ndarray, geom: Geometry, params: ShadowParams, top: int = 3) -> tuple[int, ...]:
    """Every length within one coarse step of the ``top`` best coarse lengths (by dark fraction)."""
    step = max((b - a for a, b in zip(coarse, coarse[1:])), default=1)
    lo, hi = geom.lengths
    n = np.maximum(counts[:, 0], 1)
    frac = np.where(counts[:, 0] >= params.min_projected_px, counts[:, 1] / n, -1.0)
    order = np.lexsort((-counts[:, 0], -frac))[:top]
    out: set[int] = set()
    for k in order:
        if frac[k] >= 0:
            out.update(range(max(lo, coarse[k] - step), min(hi, coarse[k] + step) + 1))
    return tuple(sorted(out))


def choose_length(lengths: tuple[int, ...], counts: np.ndarray, params: ShadowParams) -> tuple[int | None, float]:
    """The length whose projection is darkest (ties: the one with more projected pixels, then
    the shortest) and its dark fraction; ``None`` when no projection reaches
    ``min_projected_px`` pixels and ``min_match``."""
    best, best_frac, best_n = None, 0.0, 0
    for length, (n, d) in zip(lengths, np.asarray(counts)):
        if n < params.min_projected_px:
            continue
        frac = float(d / n)
        if (frac, n) > (best_frac, best_n):
            best, best_frac, best_n = length, frac, int(n)
    if best is None or best_frac < params.min_match:
        return None, best_frac
    return best, best_frac


def window(best: int, geom: Geometry, params: ShadowParams) -> tuple[int, ...]:
    """The lengths kept around the best match."""
    tol = max(2, int(math.ceil(params.tolerance * best)))
    lo, hi = geom.lengths
    return tuple(range(max(lo, best - tol), min(hi, best + tol) + 1))


def _match(counts_for, geom: Geometry, params: ShadowParams) -> tuple[int | None, float]:
    """The coarse pass over the whole range, then the fine pass around the best coarse lengths;
    ``counts_for(lengths)`` gives the ``(len(lengths), 2)`` counts (numpy or summed over chunks)."""
    coarse = _coarse_lengths(geom, params)
    counts = counts_for(coarse)
    if choose_length(coarse, counts, params)[0] is None:
        return None, 0.0
    fine = _fine_lengths(coarse, counts, geom, params)
    return choose_length(fine, counts_for(fine), params)


# ------------------------------------------------------------------------------------- numpy

def match_np(cloud: np.ndarray, dark: np.ndarray, valid: np.ndarray, geom: Geometry,
             params: ShadowParams = ShadowParams()) -> tuple[int | None, float]:
    """Best shadow length (pixels) for a whole array, and its dark fraction."""
    require_2d_same_shape("shadow match", cloud=cloud, dark=dark, valid=valid)
    depth = _depth(geom, np.shape(cloud))
    cloud = np.asarray(cloud, dtype=bool)
    open_ = np.asarray(valid, dtype=bool) & ~cloud
    dark = np.asarray(dark, dtype=bool) & open_
    padded = _pad(cloud, depth)
    return _match(lambda lengths: _counts_block(padded, dark, open_, depth, geom, lengths), geom, params)


def project_np(cloud: np.ndarray, candidate: np.ndarray, valid: np.ndarray, geom: Geometry,
               lengths: tuple[int, ...]) -> np.ndarray:
    """Shadow = pixels of ``candidate`` in the union of ``cloud`` shifted by ``lengths``, outside
    cloud, valid."""
    require_2d_same_shape("shadow projection", cloud=cloud, candidate=candidate, valid=valid)
    depth = _depth(geom, np.shape(cloud))
    cloud = np.asarray(cloud, dtype=bool)
    region = _region_block(_pad(cloud, depth), depth, geom, lengths, cloud.shape)
    return region & np.asarray(candidate, dtype=bool) & np.asarray(valid, dtype=bool) & ~cloud


# ------------------------------------------------------------------------------------- xarray / dask

def _counts_dask(cloud: da.Array, dark: da.Array, open_: da.Array, depth: tuple[int, int], geom: Geometry,
                 lengths: tuple[int, ...]) -> np.ndarray:
    padded = da.overlap.overlap(cloud, depth={0: depth[0], 1: depth[1]}, boundary={0: False, 1: False})
    # the overlap may rechunk (depth > chunk): align the core arrays to the padded blocks
    core_chunks = tuple(tuple(c - 2 * d for c in cs) for cs, d in zip(padded.chunks, depth))
    dark, open_ = dark.rechunk(core_chunks), open_.rechunk(core_chunks)

    def block(c, d, o):
        return _counts_block(c, d, o, depth, geom, lengths)[None, None]

    parts = da.map_blocks(block, padded, dark, open_, dtype=np.int64, new_axis=[2, 3],
                          chunks=((1,) * len(core_chunks[0]), (1,) * len(core_chunks[1]), (len(lengths),), (2,)))
    return parts.sum(axis=(0, 1)).compute()


def match(cloud: xr.DataArray, dark: xr.DataArray, valid: xr.DataArray, geom: Geometry,
          params: ShadowParams = ShadowParams()) -> tuple[int | None, float]:
    """:func:`match_np` for ``(y, x)`` DataArrays; on dask arrays two small computes of
    per-chunk counts (coarse, then fine), never the whole array in memory."""
    if not is_dask(cloud):
        return match_np(cloud.values, dark.values, valid.values, geom, params)
    c = cloud.data.astype(bool)
    o = (valid.data.astype(bool) & ~c).rechunk(c.chunks)
    d = dark.data.astype(bool).rechunk(c.chunks) & o
    depth = _depth(geom, c.shape)
    return _match(lambda lengths: _counts_dask(c, d, o, depth, geom, lengths), geom, params)


def _project_block(cloud: np.ndarray, candidate: np.ndarray, valid: np.ndarray, depth: tuple[int, int], geom: Geometry,
                   lengths: tuple[int, ...]) -> np.ndarray:
    core = (cloud.shape[0] - 2 * depth[0], cloud.shape[1] - 2 * depth[1])
    region = _region_block(cloud, depth, geom, lengths, core)
    sl = (slice(depth[0], depth[0] + core[0]), slice(depth[1], depth[1] + core[1]))
    out = region & candidate[sl] & valid[sl] & ~cloud[sl]
    return np.pad(out, ((depth[0], depth[0]), (depth[1], depth[1])))  # trimmed again by map_overlap


def project(cloud: xr.DataArray, candidate: xr.DataArray, valid: xr.DataArray, geom: Geometry,
            lengths: tuple[int, ...]) -> xr.DataArray:
    """:func:`project_np` for ``(y, x)`` DataArrays (lazy ``map_overlap`` on dask, chunks kept)."""
    if not is_dask(cloud):
        out = project_np(cloud.values, candidate.values, valid.values, geom, lengths)
    else:
        c = cloud.data.astype(bool)
        depth = _depth(geom, c.shape)
        args = [c, candidate.data.astype(bool).rechunk(c.chunks), valid.data.astype(bool).rechunk(c.chunks)]
        out = da.map_overlap(lambda a, b, v: _project_block(a, b, v, depth, geom, lengths), *args,
                             depth={0: depth[0], 1: depth[1]}, boundary={0: False, 1: False}, dtype=bool,
                             trim=True).rechunk(c.chunks)
    return xr.DataArray(out, dims=cloud.dims, coords=cloud.coords, attrs={"long_name": "cloud shadow (projected)"})
