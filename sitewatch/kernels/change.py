"""Change score of one scene against the site's clear-sky baseline.

1. **Co-registration and radiometric normalisation** (default, ``coregister=True``): per band a
   gain and offset, and one sub-pixel shift for all bands, fitted by least squares over jointly
   clear pixels (:mod:`.register`, exact integer sums); the baseline median and MAD are moved by
   the shift (bilinear, ``map_overlap``) and the scene is normalised by the gain/offset. The
   baseline should itself be built from co-registered dates (:func:`change_baseline`), so its
   MAD measures noise and real variability, not per-date radiometry and misregistration.
   With ``coregister=False``: per band, a gain and offset that match the scene's mean and
   standard deviation over jointly clear pixels to the baseline median's (absorbs per-date
   gain/offset differences and uniform haze). The sums are exact integers (values are uint16
   and medians half-integers), so the fit is identical whatever the chunking.
2. **z-scores** per band: ``(gain * x + offset - median) / max(1.4826 * MAD, floor)``, with
   ``floor = floor_abs + floor_rel * min(median, value)`` guarding against a too-small MAD from few
   observations.
3. **Index z-scores** (``params.indices``, :mod:`.indices`; NDVI by default, NBR, brightness and
   SWIR on request): the index of the scene mapped into the baseline's radiometry against the per-pixel median/MAD of the same
   index over the baseline's observations (``index_median``/``index_mad`` of the baseline, from
   the ring pass of :func:`~sitewatch.kernels.baseline_ring.state_baseline`), each with its own
   floor. Indices whose bands the scene lacks are skipped (attribute ``indices_skipped`` of
   ``change_score``).
   **Score**: the root-mean-square of the band z-scores and the index z-scores, the index terms
   weighted by ``index_weight`` (``index_combine="max"``: the larger of the band RMS and the
   index RMS); with ``indices=()`` the RMS of the band z-scores alone. NaN where the pixel is not clear or has
   fewer than ``min_obs`` clear observations in the baseline. ``change``: hysteresis -- the
   8-connected regions of ``score > grow_threshold`` that hold a pixel with ``score >
   threshold`` (``grow_threshold=None``: ``change = score > threshold``).
4. **Misregistration tolerance** (opt-in, ``shift_tolerance_px = t > 0``): the score is the
   minimum over the baseline (median and MAD) resampled bilinearly at the 9 shifts
   ``{-t, 0, t}^2`` px, so a scene misregistered by up to ``t`` px against the baseline does not
   light up along sharp edges (``map_overlap`` with depth 1, edge pixels padded by repetition;
   ``t <= 1``). A change wider than ~2 px keeps its score inside; a 1-2 px object next to a
   similar surface loses part of it.

``delta_brightness``: mean over visible bands of the normalised difference from the baseline
(reflectance units), used to tell brighter from darker changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import xarray as xr

from ._util import is_dask, require_same_grid
from .indices import baseline_indices, combine, index_plan, index_z2, require_index_names

VISIBLE = ("blue", "green", "red")


@dataclass(frozen=True)
class ChangeParams:
    """``threshold``: score above which a pixel seeds a change; ``grow_threshold`` (None: no
    hysteresis, ``change = score > threshold``): score above which a pixel joins a change region
    that holds a seed (8-connected). ``coregister``: fit a sub-pixel shift together with the
    gain/offset and compare against the baseline moved by it (see :mod:`.register`); use it
    with a baseline of co-registered dates (:func:`change_baseline`; the analysis folds every
    scene into its baseline state registered, :func:`~sitewatch.kernels.register.fold_registered`).
    Defaults tuned on benchmark seeds 71-74 (benchmarks/change.py ``--seeds 71 72 73 74``)."""

    threshold: float = 7.0
    floor_abs: float = 0.012
    floor_rel: float = 0.04
    min_obs: int = 3
    shift_tolerance_px: float = 0.0
    grow_threshold: float | None = 5.0
    coregister: bool = True
    # with coregister: a scene whose fitted gain in a band is beyond this ratio (either way) is not
    # comparable with the baseline (snow, thick haze): no change is scored (see register.comparable)
    max_gain_ratio: float = 2.0
    # with coregister: clear pixels within this many pixels of one that is not clear are not scored.
    # 0 by default: the analysis's cloud and shadow masks are already buffered (MaskParams.buffer_px),
    # and 1 px more cost the bright aircraft whose few pixels the spectral rules took for cloud.
    edge_px: int = 0
    # index z-scores joined to the band z-scores (kernels.indices: any of INDICES; () = bands only);
    # the baseline must carry index_median/index_mad for them (state_baseline(state, indices=...),
    # change_baseline). NDVI alone by default: on the tuning seeds 71-74 it gave the fewest false
    # objects at the same events found, as did all four at index_weight 0.5 (F1 0.005 lower, and
    # twice the ring pass's CPU); see benchmarks/results/change-tuning-indices*.md
    indices: tuple[str, ...] = ("ndvi",)
    index_weight: float = 1.0  # weight of each index's squared z-score against a band's in the RMS
    index_combine: str = "rms"  # "rms": weighted RMS over bands and indices; "max": max(band RMS, index RMS)

    def __post_init__(self) -> None:
        if self.edge_px < 0:
            raise ValueError(f"change edge_px got {self.edge_px!r}; expected >= 0")
        if not self.max_gain_ratio > 1.0:
            raise ValueError(f"change max_gain_ratio got {self.max_gain_ratio!r}; expected > 1")
        if self.grow_threshold is not None and not 0 < self.grow_threshold <= self.threshold:
            raise ValueError(f"change grow_threshold got {self.grow_threshold!r}; expected None or in (0, threshold={self.threshold!r}]")
        if not 0.0 <= self.shift_tolerance_px <= 1.0:
            raise ValueError(f"change shift_tolerance_px got {self.shift_tolerance_px!r}; expected in [0, 1] px")
        if not self.threshold > 0:
            raise ValueError(f"change threshold got {self.threshold!r}; expected > 0")
        if self.floor_abs <= 0 or self.floor_rel < 0:
            raise ValueError(f"change floors got {(self.floor_abs, self.floor_rel)!r}; expected floor_abs > 0, floor_rel >= 0")
        if self.min_obs < 1:
            raise ValueError(f"change min_obs got {self.min_obs!r}; expected >= 1")
        object.__setattr__(self, "indices", require_index_names(self.indices, "change indices"))
        if not (np.isfinite(self.index_weight) and self.index_weight > 0):
            raise ValueError(f"change index_weight got {self.index_weight!r}; expected a finite number > 0")
        if self.index_combine not in ("rms", "max"):
            raise ValueError(f"change index_combine got {self.index_combine!r}; expected 'rms' or 'max'")
        if self.indices and self.shift_tolerance_px > 0:
            raise ValueError(f"change indices got {self.indices!r} with shift_tolerance_px={self.shift_tolerance_px!r}; "
                             "expected indices=() (the misregistration-tolerant score uses the bands only)")


# ---------------------------------------------------------------- normalisation

def normalisation_sums_np(values: np.ndarray, median: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Exact integer sums ``[n, sum x, sum x^2, sum m2, sum m2^2]`` per band (``m2 = 2 * median``)
    over pixels where ``use``; ``values``/``median`` are ``(band, y, x)``, ``use`` ``(y, x)``."""
    use = np.asarray(use, dtype=bool)
    out = np.zeros((values.shape[0], 5), dtype=np.int64)
    for i in range(values.shape[0]):
        x = np.asarray(values[i])[use].astype(np.int64)
        m2 = np.rint(2 * np.asarray(median[i], dtype=np.float64)[use]).astype(np.int64)
        out[i] = (x.size, x.sum(), (x * x).sum(), m2.sum(), (m2 * m2).sum())
    return out


def gain_offset_from_sums(sums: np.ndarray, min_pixels: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Gain and offset per band from :func:`normalisation_sums_np` output; identity where fewer
    than ``min_pixels`` jointly clear pixels exist."""
    sums = np.asarray(sums, dtype=np.int64)
    gain = np.ones(sums.shape[0], np.float64)
    offset = np.zeros(sums.shape[0], np.float64)
    for i, row in enumerate(sums):
        # Python ints: ``sx * sx`` overflows int64 once n * mean exceeds ~3e9 (e.g. 1e6 pixels
        # at reflectance 0.3); exact integer numerators also avoid cancellation in the variances.
        n, sx, sxx, sm, smm = (int(v) for v in row)
        if n < min_pixels:
            continue
        mx, mm = sx / n, sm / (2 * n)
        vx = (n * sxx - sx * sx) / (n * n)
        vm = (n * smm - sm * sm) / (4 * n * n)
        if vx <= 0 or vm <= 0:
            offset[i] = mm - mx
            continue
        gain[i] = np.sqrt(vm / vx)
        offset[i] = mm - gain[i] * mx
    return gain, offset


# ---------------------------------------------------------------- score

def change_score_np(
    values: np.ndarray,
    clear: np.ndarray,
    median: np.ndarray,
    mad: np.ndarray,
    count: np.ndarray,
    gain: np.ndarray,
    offset: np.ndarray,
    params: ChangeParams = ChangeParams(),
) -> np.ndarray:
    """Change score (float32, ``(...)``) from ``values``/``median``/``mad`` of shape
    ``(..., band)`` (reflectance x 10000), ``clear`` and ``count`` ``(...)``, per-band ``gain``
    and ``offset``. Inputs are not modified."""
    values = np.asarray(values)
    if values.shape != np.shape(median) or values.shape != np.shape(mad):
        raise ValueError(f"change values/median/mad shapes got {(values.shape, np.shape(median), np.shape(mad))!r}; expected equal")
    nb = values.shape[-1]
    if np.shape(gain) != (nb,) or np.shape(offset) != (nb,):
        raise ValueError(f"change gain/offset shapes got {(np.shape(gain), np.shape(offset))!r}; expected ({nb},)")
    x = values.astype(np.float32) * np.asarray(gain, np.float32) + np.asarray(offset, np.float32)
    med = np.asarray(median, np.float32)
    # The relative floor uses the darker of scene and baseline, so a bright object leaving
    # (aircraft departing) scores like the same object arriving.
    ref = np.minimum(np.abs(med), np.abs(x))
    scale = np.maximum(np.float32(1.4826) * np.asarray(mad, np.float32),
                       np.float32(params.floor_abs * 1e4) + np.float32(params.floor_rel) * ref)
    z = (x - med) / scale
    score = np.sqrt(np.mean(z * z, axis=-1, dtype=np.float32)).astype(np.float32)
    ok = np.asarray(clear, bool) & (np.asarray(count) >= params.min_obs)
    return np.where(ok, score, np.float32(np.nan)).astype(np.float32)


def _shifted(a: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Bilinear resampling of ``a`` (``(..., y, x)``, padded by 1 px on y and x) at a shift of
    ``(dy, dx)`` px (|d| <= 1), cropped back to the unpadded shape."""
    h, w = a.shape[-2] - 2, a.shape[-1] - 2
    out = 0.0
    for oy, wy in ((0, 1 - abs(dy)), (int(np.sign(dy)), abs(dy))):
        for ox, wx in ((0, 1 - abs(dx)), (int(np.sign(dx)), abs(dx))):
            if wy * wx == 0:
                continue
            out = out + np.float32(wy * wx) * a[..., 1 + oy:1 + oy + h, 1 + ox:1 + ox + w]
    return out


def tolerant_score_np(
    stacked: np.ndarray, nb: int, gain: np.ndarray, offset: np.ndarray, params: ChangeParams = ChangeParams(),
) -> np.ndarray:
    """Misregistration-tolerant change score of a block padded by 1 px on y and x.

    ``stacked`` is ``(3 * nb + 2, y + 2, x + 2)`` float32: values (nb bands), median (nb), MAD
    (nb), clear (0/1) and count, in that order. Returns ``(y, x)`` float32: the minimum of
    :func:`change_score_np` over the baseline resampled at shifts ``{-t, 0, t}^2``."""
    t = params.shift_tolerance_px
    v = stacked[:nb, 1:-1, 1:-1]
    med, mad = stacked[nb:2 * nb], stacked[2 * nb:3 * nb]
    clear, count = stacked[3 * nb, 1:-1, 1:-1] > 0.5, stacked[3 * nb + 1, 1:-1, 1:-1]
    best = None
    shifts = (-t, 0.0, t) if t > 0 else (0.0,)
    for dy in shifts:
        for dx in shifts:
            m = np.moveaxis(_shifted(med, dy, dx), 0, -1)
            d = np.moveaxis(_shifted(mad, dy, dx), 0, -1)
            sc = change_score_np(np.moveaxis(v, 0, -1), clear, m, d, count, gain, offset, params)
            best = sc if best is None else np.fmin(best, sc)
    return best.astype(np.float32)


def tolerant_score(values: xr.DataArray, clear: xr.DataArray, median: xr.DataArray, mad: xr.DataArray,
                   count: xr.DataArray, gain: np.ndarray, offset: np.ndarray, params: ChangeParams) -> xr.DataArray:
    """:func:`tolerant_score_np` over ``(band, y, x)`` inputs; ``map_overlap`` (depth 1 on y and
    x, boundary = nearest) on dask, the same padding with ``np.pad(mode="edge")`` on numpy."""
    nb = values.sizes["band"]
    parts = [values.transpose("band", "y", "x").astype(np.float32), median.transpose("band", "y", "x").astype(np.float32),
             mad.transpose("band", "y", "x").astype(np.float32),
             clear.transpose("y", "x").astype(np.float32).expand_dims(band=1), count.transpose("y", "x").astype(np.float32).expand_dims(band=1)]
    parts = [p.drop_vars("band", errors="ignore") for p in parts]
    stacked = xr.concat(parts, dim="band", coords="minimal", compat="override")
    if is_dask(stacked):
        import dask.array

        data = stacked.data.rechunk({0: -1})
        out = dask.array.map_overlap(
            lambda b: tolerant_score_np(b, nb, gain, offset, params), data, depth={0: 0, 1: 1, 2: 1},
            boundary={0: "none", 1: "nearest", 2: "nearest"}, trim=False, drop_axis=0, dtype=np.float32,
            chunks=data.chunks[1:], meta=np.empty((0, 0), np.float32),
        )
    else:
        out = tolerant_score_np(np.pad(stacked.values, ((0, 0), (1, 1), (1, 1)), mode="edge"), nb, gain, offset, params)
    return xr.DataArray(out, dims=("y", "x"), coords={d: values[d] for d in ("y", "x") if d in values.coords})


def delta_np(values: np.ndarray, median: np.ndarray, gain: np.ndarray, offset: np.ndarray, which: Sequence[int]) -> np.ndarray:
    """Mean normalised difference from the median over band indices ``which`` (reflectance)."""
    x = values[..., list(which)].astype(np.float32) * np.asarray(gain, np.float32)[list(which)] + np.asarray(offset, np.float32)[list(which)]
    d = (x - np.asarray(median, np.float32)[..., list(which)]).mean(axis=-1)
    return (d * np.float32(1e-4)).astype(np.float32)


def _stack(scene: xr.Dataset, bands: Sequence[str]) -> xr.DataArray:
    arr = xr.concat([scene[b] for b in bands], dim="band").assign_coords(band=list(bands))
    if is_dask(arr):
        arr = arr.chunk({"band": -1})
    return arr


def fit_gain_offset(
    scene: xr.Dataset, use: xr.DataArray, baseline: xr.Dataset, bands: Sequence[str], min_obs: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band gain and offset matching ``scene`` to the baseline median over pixels where
    ``use`` and the baseline has at least ``min_obs`` observations. Exact (integer sums), so the
    same whatever the chunking; computes a small reduction when the inputs are dask-backed."""
    lacking = [b for b in bands if b not in scene.data_vars]
    if lacking:
        raise ValueError(f"scene lacks band(s) {lacking!r} for normalisation; expected {list(bands)!r}")
    require_same_grid(scene, baseline, "normalisation")
    values = _stack(scene, bands)
    median = baseline["median"].sel(band=list(bands))
    use = use & (baseline["count"] >= min_obs)
    if is_dask(values):
        import dask
        import dask.array

        v = values.data
        # The baseline or the mask may be numpy while the scene is dask.
        m = dask.array.asarray(median.data).rechunk(v.chunks)
        u = dask.array.asarray(use.data).rechunk(v.chunks[1:])
        vb, mb, ub = v.to_delayed(), m.to_delayed(), u.to_delayed()
        parts = [
            dask.delayed(normalisation_sums_np)(vb[0, i, j], mb[0, i, j], ub[i, j])
            for i in range(vb.shape[1]) for j in range(vb.shape[2])
        ]
        sums = np.sum(dask.compute(*parts), axis=0, dtype=np.int64)
    else:
        sums = normalisation_sums_np(values.values, median.values, use.values)
    return gain_offset_from_sums(sums)


def change_baseline(stack: xr.DataArray, clear: xr.DataArray, params: ChangeParams = ChangeParams()) -> xr.Dataset:
    """The baseline :func:`change` expects with ``params`` from a history ``stack`` (``time,
    band, y, x`` uint16, oldest first) and its ``clear`` masks: with ``params.coregister``, the
    median/MAD of the baseline state the analysis builds scene after scene, each date registered
    to the state so far before it is folded
    (:func:`~sitewatch.kernels.register.build_registered_state`; a date's fit uses pixels with
    ``min(min_obs, earlier dates with a clear pixel)`` observations, as the analysis does), else
    :func:`~sitewatch.kernels.baseline.robust_baseline` of the history as stored; with
    ``params.indices`` also ``index_median``/``index_mad``."""
    from .baseline import robust_baseline
    from .baseline_ring import state_baseline
    from .register import build_registered_state

    if not params.coregister:
        base = robust_baseline(stack, clear)
        if params.indices:
            from .indices import index_baseline

            ib = index_baseline(stack, clear, params.indices)
            base = base.assign(index_median=ib["index_median"], index_mad=ib["index_mad"])
            base.attrs["indices_skipped"] = ib.attrs["indices_skipped"]
        return base
    clear = clear.transpose("time", "y", "x")
    seen = np.cumsum([0] + [int(v) for v in np.asarray(clear.any(("y", "x")).values)][:-1])
    ks = [max(1, min(params.min_obs, int(n))) for n in seen]
    state, _ = build_registered_state(stack, clear, stack.sizes["time"], ks)
    return state_baseline(state, indices=params.indices)


def change(
    scene: xr.Dataset,
    clear: xr.DataArray,
    baseline: xr.Dataset,
    bands: Sequence[str],
    params: ChangeParams = ChangeParams(),
    gain_offset: tuple[Sequence[float], Sequence[float]] | None = None,
    registration: Any = None,
) -> tuple[xr.Dataset, dict[str, list[float]]]:
    """``change_score``, ``change`` and ``delta_brightness`` (``(y, x)``) for ``scene`` against
    ``baseline`` (``median``/``mad`` over ``band``, ``count``), plus the fitted normalisation
    ``{"gain": [...], "offset": [...]}``. Lazy on dask inputs except for the normalisation sums,
    which are computed (a small reduction) to fix the gain and offset; pass ``gain_offset`` to
    reuse a fit (see :func:`fit_gain_offset`). With ``params.coregister`` the shift, gain and
    offset are fitted on ``clear`` pixels with ``min_obs`` observations, or taken from
    ``registration`` (a :class:`~sitewatch.kernels.register.Registration`, e.g. the fit the
    analysis also folds the scene with); the normalisation then also holds ``shift_px``."""
    lacking = [b for b in bands if b not in scene.data_vars]
    if lacking:
        raise ValueError(f"scene lacks band(s) {lacking!r} for change; expected {list(bands)!r}")
    require_same_grid(scene, baseline, "change")
    require_same_grid(scene, clear, "change", ("scene", "clear mask"))
    values = _stack(scene, bands)
    median = baseline["median"].sel(band=list(bands))
    mad = baseline["mad"].sel(band=list(bands))
    count = baseline["count"]
    plan, imed, imad = baseline_indices(baseline, bands, params.indices)
    shift_px = None
    if params.coregister:
        if gain_offset is not None:
            raise ValueError("change gain_offset got a fit with coregister=True; expected None (the registration fits its own gain/offset)")
        from .register import fit_registration, shift

        reg = registration
        if reg is None:
            ok = clear.astype(bool) & (count >= params.min_obs)
            reg = fit_registration(values.transpose("band", "y", "x"), median.transpose("band", "y", "x"), ok.transpose("y", "x"))
        elif len(reg.gain) != len(bands):
            raise ValueError(f"change registration got {len(reg.gain)} band gain(s); expected {len(bands)} ({list(bands)!r})")
        from .register import comparable

        if not comparable(reg, params.max_gain_ratio):  # nothing is scored against an incomparable scene
            clear = xr.zeros_like(clear, dtype=bool)
        elif params.edge_px:
            from .objects import dilate

            # clear pixels next to a pixel that is not clear (swath edge, nodata, cloud) are mixed, and
            # the registered comparison resamples across that edge: they are not scored
            clear = clear.astype(bool) & ~dilate(~clear.astype(bool), params.edge_px)
        gain = 1.0 / np.asarray(reg.gain, np.float64)
        offset = -np.asarray(reg.offset, np.float64) / np.asarray(reg.gain, np.float64)
        shift_px = [reg.dy, reg.dx]
        if reg.dy or reg.dx:
            fin = (median.notnull().all("band") & (count >= params.min_obs)).transpose("y", "x")
            moved_ok = shift(fin.astype(np.float32), reg.dy, reg.dx) > np.float32(0.999)
            median = shift(median.transpose("band", "y", "x"), reg.dy, reg.dx).where(moved_ok)
            mad = shift(mad.transpose("band", "y", "x").fillna(0), reg.dy, reg.dx).where(moved_ok)
            if plan is not None:
                imed = shift(imed.transpose("index", "y", "x").fillna(0), reg.dy, reg.dx).where(moved_ok)
                imad = shift(imad.transpose("index", "y", "x").fillna(0), reg.dy, reg.dx).where(moved_ok)
            count = xr.where(moved_ok, count.transpose("y", "x").astype(np.int16).clip(min=params.min_obs), 0).astype(np.int16)
    elif registration is not None:
        raise ValueError("change registration got a fit with coregister=False; expected None")
    elif gain_offset is None:
        gain, offset = fit_gain_offset(scene, clear, baseline, bands, params.min_obs)
    else:
        gain, offset = (np.asarray(v, np.float64) for v in gain_offset)
        if gain.shape != (len(bands),) or offset.shape != (len(bands),):
            raise ValueError(f"change gain_offset shapes got {(gain.shape, offset.shape)!r}; expected ({len(bands)},) each")
    vis_idx = [i for i, b in enumerate(bands) if b in VISIBLE] or list(range(len(bands)))
    if params.shift_tolerance_px > 0:
        score = tolerant_score(values, clear, median, mad, count, gain, offset, params)
    else:
        s_median, s_mad, s_gain, s_offset = median, mad, gain, offset
        if params.coregister:
            # scored in the scene's own radiometry: the baseline is moved into it (the state's
            # radiometry is that of its first date, an arbitrary reference), so the noise floor
            # (floor_abs, in reflectance) applies to what was observed
            g = xr.DataArray(np.asarray(gain, np.float32), dims="band")
            o = xr.DataArray(np.asarray(offset, np.float32), dims="band")
            s_median, s_mad = (median - o) / g, mad / g
            s_gain, s_offset = np.ones(len(bands)), np.zeros(len(bands))
        core = [["band"], [], ["band"], ["band"], []]
        score = xr.apply_ufunc(
            change_score_np, values, clear, s_median, s_mad, count,
            kwargs={"gain": s_gain, "offset": s_offset, "params": params},
            input_core_dims=core, output_core_dims=[[]], dask="parallelized", output_dtypes=[np.float32],
        )
    delta = xr.apply_ufunc(
        delta_np, values, median,
        kwargs={"gain": gain, "offset": offset, "which": vis_idx},
        input_core_dims=[["band"], ["band"]], output_core_dims=[[]], dask="parallelized", output_dtypes=[np.float32],
    )
    score = score.transpose("y", "x")
    if plan is not None:
        # index z-scores of the scene mapped into the baseline's radiometry (gain * x + offset)
        z2 = index_z2(values, gain, offset, imed, imad, plan)
        score = combine(score, z2, len(bands), len(plan.names), params.index_weight, params.index_combine)
    if params.grow_threshold is None:
        changed = score > params.threshold
    else:
        from .objects import hysteresis

        changed = hysteresis(score, params.grow_threshold, params.threshold)
    out = xr.Dataset({
        "change_score": score.assign_attrs(long_name="change score against the clear-sky baseline",
                                           indices=list(plan.names) if plan is not None else [],
                                           indices_skipped=list(index_plan(params.indices, bands).skipped)),
        "change": changed.transpose("y", "x").assign_attrs(long_name="changed pixel"),
        "delta_brightness": delta.transpose("y", "x").assign_attrs(long_name="visible brightness minus baseline", units="1"),
    })
    norm = {"gain": np.asarray(gain, np.float64).tolist(), "offset": np.asarray(offset, np.float64).tolist()}
    if shift_px is not None:
        norm["shift_px"] = shift_px
    return out, norm
