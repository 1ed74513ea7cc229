"""Spectral indices for the change score: definitions, per-observation values and z-scores.

Every index is one formula over a pixel's band counts ``x`` (reflectance x 10000, STAC common
band names): ``value = (W_num . x) / max(W_den . x, den_floor)``, so one compiled loop serves all.

* ``ndvi`` -- ``(nir - red) / (nir + red)``: vegetation cover (loss and gain).
* ``nbr`` -- ``(nir - swir22) / (nir + swir22)``: burn, clearing, bare soil versus vegetation.
* ``brightness`` -- the mean reflectance of all the site's bands (no fixed subset: the bands a
  sensor has are the ones it observes; for the synthetic and Landsat/S2 sites that is blue,
  green, red, nir, swir16, swir22). Averaging lowers the noise, so a broad brightening or
  darkening shows up that no single band takes beyond its own noise.
* ``swir`` -- the mean reflectance of the SWIR bands present (swir16 and swir22; one of them
  if the sensor has only one). Chosen over the ratio swir16/swir22
  (NBR2), which is flat across most covers and, like every ratio, noisy on dark pixels; SWIR
  reflectance itself moves with moisture, burn scars, bare soil and built surfaces, and the
  two bands' mean halves their independent noise.

Near-zero denominators (water, deep shadow, dark roofs) would make the two normalised
differences blow up: their denominator is floored at ``ND_DEN_FLOOR`` counts (0.1 reflectance
for the sum of the two bands), so on a dark pixel a change of a few counts moves the index by
a few counts / 1000, not by O(1). Indices whose bands the site lacks are skipped
(:func:`index_plan` says which).

The baseline of an index is the median/MAD over the same observations as the bands' of the
index *per observation* (the median of NDVI, not the NDVI of the median), computed in the
ring pass (:func:`~sitewatch.kernels.baseline_ring.state_baseline`) or from a stack
(:func:`index_baseline`). An index's z-score is ``(value - median) / max(1.4826 * MAD,
floor_abs + floor_rel * min(|median|, |value|))`` with the per-index floors of :data:`INDEX_DEFS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np
import xarray as xr

from ._util import is_dask
from .baseline import _median_mad

ND_DEN_FLOOR = 1000.0  # counts: nir + red (or nir + swir22) below 0.1 reflectance is floored


@dataclass(frozen=True)
class IndexDef:
    """``kind``: ``"nd"`` (normalised difference of ``bands[0]`` and ``bands[1]``) or ``"mean"``
    (mean reflectance of those of ``bands`` the site has, at least one; empty = all the site's
    bands). ``floor_abs`` (index units:
    unitless for ``nd``, reflectance for ``mean``) and ``floor_rel`` bound the z-score's
    denominator from below, as the bands' floors do."""

    name: str
    kind: str
    bands: tuple[str, ...]
    floor_abs: float
    floor_rel: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("nd", "mean"):
            raise ValueError(f"index {self.name!r} kind got {self.kind!r}; expected 'nd' or 'mean'")
        if self.kind == "nd" and len(self.bands) != 2:
            raise ValueError(f"index {self.name!r} bands got {self.bands!r}; expected two bands for a normalised difference")
        if not self.floor_abs > 0 or self.floor_rel < 0:
            raise ValueError(f"index {self.name!r} floors got {(self.floor_abs, self.floor_rel)!r}; expected floor_abs > 0, floor_rel >= 0")


INDEX_DEFS: dict[str, IndexDef] = {
    "ndvi": IndexDef("ndvi", "nd", ("nir", "red"), floor_abs=0.04),
    "nbr": IndexDef("nbr", "nd", ("nir", "swir22"), floor_abs=0.04),
    "brightness": IndexDef("brightness", "mean", (), floor_abs=0.016, floor_rel=0.03),
    "swir": IndexDef("swir", "mean", ("swir16", "swir22"), floor_abs=0.016, floor_rel=0.03),
}
# Floors chosen on the tuning seeds 71-74 (benchmarks/change_tune_indices.py): 0.04 for the
# normalised differences (0.02 let noise through, 0.08 lost an event), 0.016 reflectance for the
# means (0.004 and 0.008 gave more false objects).
INDICES = tuple(INDEX_DEFS)


def require_index_names(names: Sequence[str], what: str = "indices") -> tuple[str, ...]:
    """``names`` as a tuple, each a known index, no repeats; else a ValueError naming them."""
    if isinstance(names, str):
        raise ValueError(f"{what} got the string {names!r}; expected a sequence of index names from {INDICES!r}")
    names = tuple(names)
    unknown = [n for n in names if n not in INDEX_DEFS]
    if unknown:
        raise ValueError(f"{what} got unknown index name(s) {unknown!r}; expected names from {INDICES!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} got {names!r}; expected each index at most once")
    return names


@dataclass(frozen=True)
class IndexPlan:
    """The indices of ``names`` computable from ``bands`` (in that band order): ``num``/``den``
    ``(index, band)`` float32 weights and ``den_floor`` ``(index,)``, ``floor_abs``/``floor_rel``
    ``(index,)``; ``skipped``: the requested indices the bands do not support."""

    names: tuple[str, ...]
    skipped: tuple[str, ...]
    bands: tuple[str, ...]
    num: np.ndarray
    den: np.ndarray
    den_floor: np.ndarray
    floor_abs: np.ndarray
    floor_rel: np.ndarray


def index_plan(names: Sequence[str], bands: Sequence[str]) -> IndexPlan:
    """Weights of the requested ``names`` over ``bands``; those lacking a band are skipped."""
    names, bands = require_index_names(names), tuple(str(b) for b in bands)
    kept, skipped, num, den, dfl = [], [], [], [], []
    for n in names:
        d = INDEX_DEFS[n]
        members = (d.bands or bands) if d.kind == "nd" else [b for b in (d.bands or bands) if b in bands]
        if not members or any(b not in bands for b in members):
            skipped.append(n)
            continue
        wn, wd = np.zeros(len(bands), np.float32), np.zeros(len(bands), np.float32)
        if d.kind == "nd":
            a, b = bands.index(members[0]), bands.index(members[1])
            wn[a], wn[b], wd[a], wd[b] = 1, -1, 1, 1
            dfl.append(ND_DEN_FLOOR)
        else:  # mean reflectance: counts x 1e-4 / m, over a constant denominator of 1
            for b in members:
                wn[bands.index(b)] = np.float32(1e-4 / len(members))
            dfl.append(1.0)
        kept.append(n)
        num.append(wn)
        den.append(wd)
    nk = len(kept)
    shape = (nk, len(bands))
    return IndexPlan(
        tuple(kept), tuple(skipped), bands,
        np.array(num, np.float32).reshape(shape), np.array(den, np.float32).reshape(shape), np.array(dfl, np.float32),
        np.array([INDEX_DEFS[n].floor_abs for n in kept], np.float32), np.array([INDEX_DEFS[n].floor_rel for n in kept], np.float32),
    )


# ---------------------------------------------------------------- per-observation values

@numba.njit(nogil=True, cache=True)
def index_median_mad_ring(ring, p, slots, c, num, den, den_floor, buf, imedian, imad):  # pragma: no cover - compiled
    """Median/MAD of every index over observations ``ring[p, slots[:c], :]`` into ``imedian[p]``,
    ``imad[p]`` (NaN when ``c == 0``); ``buf``: scratch of length >= c. Called from the ring
    pass (:func:`~sitewatch.kernels.baseline_ring._state_baseline_loop`), so the ring is read once."""
    n_i, n_b = num.shape
    for j in range(n_i):
        if c == 0:
            imedian[p, j] = np.nan
            imad[p, j] = np.nan
            continue
        for i in range(c):
            sn = np.float32(0.0)
            sd = np.float32(0.0)
            for b in range(n_b):
                v = np.float32(ring[p, slots[i], b])
                sn += num[j, b] * v
                sd += den[j, b] * v
            buf[i] = sn / max(sd, den_floor[j])
        imedian[p, j], imad[p, j] = _median_mad(buf, c)


def index_values_np(values: np.ndarray, num: np.ndarray, den: np.ndarray, den_floor: np.ndarray) -> np.ndarray:
    """Index values ``(..., index)`` float32 of band counts ``values`` ``(..., band)`` (any real
    dtype; the same float32 arithmetic as the ring pass, band by band)."""
    v = np.asarray(values, np.float32)
    if v.shape[-1] != num.shape[1]:
        raise ValueError(f"index values got {v.shape[-1]} band(s); expected {num.shape[1]} like the index plan")
    num, den = np.asarray(num, np.float32), np.asarray(den, np.float32)
    sn = np.zeros(v.shape[:-1] + (num.shape[0],), np.float32)
    sd = np.zeros_like(sn)
    for b in range(num.shape[1]):  # band by band in float32, the order of the ring pass: chunking-independent
        sn += v[..., b, None] * num[:, b]
        sd += v[..., b, None] * den[:, b]
    return (sn / np.maximum(sd, np.asarray(den_floor, np.float32))).astype(np.float32)


def index_z2_np(values: np.ndarray, gain: np.ndarray, offset: np.ndarray, imedian: np.ndarray, imad: np.ndarray,
                plan: IndexPlan) -> np.ndarray:
    """Sum over indices of the squared index z-scores ``(...)`` float32: ``values`` ``(..., band)``
    counts mapped by ``gain * x + offset`` into the baseline's radiometry, ``imedian``/``imad``
    ``(..., index)``. NaN where the baseline is NaN. Inputs are not modified."""
    x = np.asarray(values, np.float32) * np.asarray(gain, np.float32) + np.asarray(offset, np.float32)
    v = index_values_np(x, plan.num, plan.den, plan.den_floor)
    med = np.asarray(imedian, np.float32)
    ref = np.minimum(np.abs(med), np.abs(v))
    scale = np.maximum(np.float32(1.4826) * np.asarray(imad, np.float32), plan.floor_abs + plan.floor_rel * ref)
    z = (v - med) / scale
    return np.sum(z * z, axis=-1, dtype=np.float32).astype(np.float32)


def index_z2(values: xr.DataArray, gain: np.ndarray, offset: np.ndarray, imedian: xr.DataArray, imad: xr.DataArray,
             plan: IndexPlan) -> xr.DataArray:
    """:func:`index_z2_np` over ``values`` (``band, y, x``) and the baseline's ``index_median`` /
    ``index_mad`` (``index, y, x``, already in the plan's index order); ``(y, x)``, lazy on dask."""
    if is_dask(values):
        values = values.chunk({"band": -1})
    if is_dask(imedian):
        imedian, imad = imedian.chunk({"index": -1}), imad.chunk({"index": -1})
    return xr.apply_ufunc(
        lambda v, m, d: index_z2_np(v, gain, offset, m, d, plan), values, imedian, imad,
        input_core_dims=[["band"], ["index"], ["index"]], output_core_dims=[[]], dask="parallelized", output_dtypes=[np.float32],
    ).transpose("y", "x")


def baseline_indices(baseline: xr.Dataset, bands: Sequence[str], names: Sequence[str]):
    """The plan of ``names`` over ``bands`` and the ``baseline``'s ``index_median``/``index_mad``
    in its order, or ``(None, None, None)`` when no index is asked for or the bands support none;
    a ValueError naming what is missing when the baseline does not carry them."""
    plan = index_plan(names, bands)
    if not plan.names:
        return None, None, None
    lacking = [v for v in ("index_median", "index_mad") if v not in baseline.data_vars]
    if lacking:
        raise ValueError(f"change baseline lacks {lacking!r} for indices {list(plan.names)!r}; expected a baseline from "
                         "state_baseline(state, indices=...) or change_baseline, or ChangeParams(indices=())")
    have = [str(i) for i in baseline["index"].values]
    missing = [n for n in plan.names if n not in have]
    if missing:
        raise ValueError(f"change baseline index got {have!r}; expected it to hold {missing!r} too")
    base_bands = [str(b) for b in baseline["band"].values]
    if base_bands != list(bands):
        raise ValueError(f"change bands got {list(bands)!r}; expected the baseline's {base_bands!r} in that order "
                         "(its indices were computed over them)")
    return plan, baseline["index_median"].sel(index=list(plan.names)), baseline["index_mad"].sel(index=list(plan.names))


def combine(band_rms: xr.DataArray, index_z2_sum: xr.DataArray, n_bands: int, n_indices: int, weight: float = 1.0,
            how: str = "rms") -> xr.DataArray:
    """One score from the band RMS z-score and the sum of squared index z-scores: ``"rms"``, the
    RMS over all, each index term weighted by ``weight``: ``sqrt((n_bands * band_rms^2 + weight *
    sum z_i^2) / (n_bands + weight * n_indices))``; ``"max"``, the larger of the band RMS and the
    index RMS. NaN where ``band_rms`` is NaN (not scored); float32."""
    if how == "max":
        out = np.fmax(band_rms, np.sqrt(index_z2_sum / np.float32(n_indices))).where(band_rms.notnull())
    elif how == "rms":
        w = np.float32(weight)
        out = np.sqrt((np.float32(n_bands) * band_rms * band_rms + w * index_z2_sum) / np.float32(n_bands + w * n_indices))
    else:
        raise ValueError(f"index combination got {how!r}; expected 'rms' or 'max'")
    return out.astype(np.float32)


def index_baseline(stack: xr.DataArray, clear: xr.DataArray, names: Sequence[str]) -> xr.Dataset:
    """``index_median``/``index_mad`` (``index, y, x`` float32) of a history ``stack`` (``time,
    band, y, x`` counts) over ``clear`` (``time, y, x``): each observation's index values, then
    :func:`~sitewatch.kernels.baseline.robust_baseline` of them (the non-ring path, consistent
    with the ring pass). Attribute ``indices_skipped`` lists requested indices the bands lack."""
    from .baseline import robust_baseline

    plan = index_plan(names, [str(b) for b in stack["band"].values])
    if is_dask(stack):
        stack = stack.chunk({"band": -1})
    vals = xr.apply_ufunc(
        index_values_np, stack, kwargs={"num": plan.num, "den": plan.den, "den_floor": plan.den_floor},
        input_core_dims=[["band"]], output_core_dims=[["index"]], dask="parallelized", output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"index": len(plan.names)}},
    ).assign_coords(index=list(plan.names))
    base = robust_baseline(vals.rename(index="band"), clear)
    out = xr.Dataset({"index_median": base["median"].rename(band="index"), "index_mad": base["mad"].rename(band="index")})
    out.attrs["indices_skipped"] = list(plan.skipped)
    return out
