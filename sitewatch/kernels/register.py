"""Co-registration and radiometric normalisation of one date against a baseline median.

A date is often misregistered against the site's history by a fraction of a pixel, and its
radiometry differs by a per-band gain and offset. Both are fitted at once, per date, by least
squares on the linearised model (Lucas-Kanade, two steps: :func:`fit_registration`)::

    x_b(p) ~= a_b * m_b(p + s) + c_b ~= a_b * m_b(p) + c_b + (a_b s) . grad m_b(p)

over pixels where ``use`` (clear, enough baseline observations, all four neighbours with a
median): per band a gain ``a_b`` (ratio of the standard deviations of 3 x 3 local means over
inlier pixels, symmetric in scene and baseline), then by least squares an offset ``c_b`` per band and one sub-pixel shift ``s =
(dy, dx)`` shared by all bands. The normal equations are built from **exact integer sums** (values are
uint16 counts, ``2 * median`` is rounded to an integer and the gradients are central
differences of it), so the fit is identical whatever the chunking. ``s`` is clamped to
``[-1, 1]`` px (bilinear resampling reaches one neighbour).

:func:`fold_registered`: the baseline state (:mod:`.baseline_ring`) folds each date after
registering it to the state's median and moving it onto it (shift removed, gain/offset
inverted), so the baseline's MAD measures sensor noise and real variability rather than per-date
radiometry and geometry; :func:`build_registered_state` does that date after date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from ._util import is_dask
from .register_sums import all_sums_parts, difference_hist_parts

MIN_PIXELS = 100
#: A date whose fitted gain in any band is outside [1 / MAX_GAIN_RATIO, MAX_GAIN_RATIO] is not
#: comparable with its baseline (snow over the site, thick haze, a missed cloud bank: Landsat
#: Colorado's spring snow dates fitted red gains of 3.6-11): no change is scored against it and it
#: is not folded into the baseline state.
MAX_GAIN_RATIO = 2.0
# Below this fraction of the site's pixels (e.g. a mostly cloudy date, where the few "clear"
# pixels are largely cloud edges and haze), the shift/gain/offset least-squares fit is not
# trusted: the fit falls back to matching mean and standard deviation with no shift.
MIN_FRACTION = 0.05
# The fit keeps pixels whose scene-minus-median difference is, in every band, within
# max(TRIM_MADS robust standard deviations, TRIM_MIN counts) of that difference's median
# (exact, from an integer histogram clipped at +-HIST_HALF / 2 counts): a large real change
# (a cleared field, a new roof) or a missed cloud would otherwise inflate the gain.
TRIM_MADS = 5.0
TRIM_MIN = 50
HIST_HALF = 8192


@dataclass(frozen=True)
class Registration:
    """``x ~= gain * median(p + (dy, dx)) + offset`` per band (``gain``/``offset`` per band)."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    dy: float
    dx: float
    pixels: int

    @classmethod
    def identity(cls, nb: int) -> "Registration":
        return cls((1.0,) * nb, (0.0,) * nb, 0.0, 0.0, 0)


def inlier_band(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per band, the centre and half-width (doubled counts) of the scene-minus-median
    differences kept by the fit: median +- max(TRIM_MADS x 1.4826 x MAD, TRIM_MIN) of the
    histogram :func:`~sitewatch.kernels.register_sums.difference_hist_np`; None with fewer than MIN_PIXELS pixels."""
    hist = np.asarray(hist, np.int64)
    n = int(hist[0].sum())
    if n < MIN_PIXELS:
        return None
    levels = np.arange(-HIST_HALF, HIST_HALF)
    centre, tol = np.zeros(hist.shape[0], np.int64), np.zeros(hist.shape[0], np.int64)
    for b, h in enumerate(hist):
        c = np.cumsum(h)
        centre[b] = levels[int(np.searchsorted(c, (n + 1) // 2))]
        dev = np.abs(levels - centre[b])
        hd = np.bincount(dev, weights=h, minlength=2 * HIST_HALF + 1).astype(np.int64)
        mad = int(np.searchsorted(np.cumsum(hd), (n + 1) // 2))
        tol[b] = int(np.ceil(max(TRIM_MADS * 1.4826 * mad, 2 * TRIM_MIN)))
    return centre, tol


def _mean_std_match(sums: np.ndarray, min_pixels: int) -> Registration:
    """Gain/offset matching mean and standard deviation (no shift), from the same sums."""
    from .change import gain_offset_from_sums

    nb = sums.shape[0]
    ns = np.array([[int(sums[b, 1, 1]), int(sums[b, 1, 4]), int(sums[b, 4, 4]), int(sums[b, 0, 1]), int(sums[b, 0, 0])]
                   for b in range(nb)], dtype=object)
    g, o = gain_offset_from_sums(ns, min_pixels)  # x * g + o ~= median
    return Registration(tuple(float(1.0 / v) for v in g), tuple(float(-oo / v) for v, oo in zip(g, o)), 0.0, 0.0, int(sums[0, 1, 1]))


def registration_from_sums(sums: np.ndarray, min_pixels: int = MIN_PIXELS, min_shift_pixels: int = 0,
                           gain_sums: np.ndarray | None = None, box_sums: np.ndarray | None = None) -> Registration:
    """Solve the joint normal equations (per-band gain/offset, one shared shift); identity when
    fewer than ``min_pixels`` pixels or the system is singular; with fewer than
    ``min_shift_pixels`` pixels, a mean/standard-deviation match without shift instead.
    ``gain_sums`` (default ``sums``): the sums over the inlier pixels (:func:`inlier_band`), from
    which the gains (and the mean/standard-deviation match) are taken; the offsets and the
    shift are fitted over all pixels of ``sums``, whose sharp edges carry the shift. With
    ``box_sums`` (:func:`~sitewatch.kernels.register_sums.box_sums_np`) over at least ``min_pixels`` pixels, the gains are the
    ratios of the standard deviations of 3 x 3 local means instead."""
    sums = np.asarray(sums)
    gsums = sums if gain_sums is None else np.asarray(gain_sums)
    nb = sums.shape[0]
    n_px = int(sums[0, 1, 1])
    if n_px < min_pixels or int(gsums[0, 1, 1]) < min_pixels:
        return Registration.identity(nb)
    if n_px < min_shift_pixels:
        return _mean_std_match(gsums, min_pixels)
    # Gain per band from the ratio of standard deviations (as the mean/std match: symmetric in
    # scene and baseline, so a weak scene-baseline correlation -- seasonal change, a small site --
    # does not shrink it the way a least-squares slope would); then offsets and the shared shift
    # by least squares on x - gain * m with features [1, gain * Gy / 4, gain * Gx / 4].
    gain = np.ones(nb)
    use_box = box_sums is not None and int(box_sums[0][0]) >= min_pixels
    for b in range(nb):
        if use_box:
            n, sx, sxx, sm, smm = (int(v) for v in box_sums[b])  # type: ignore[index]
        else:
            n, sm, smm, sx, sxx = (int(gsums[b, 1, 1]), int(gsums[b, 0, 1]), int(gsums[b, 0, 0]), int(gsums[b, 1, 4]), int(gsums[b, 4, 4]))
        vm, vx = (n * smm - sm * sm) / (4 * n * n), (n * sxx - sx * sx) / (n * n)
        if vm > 0 and vx > 0:
            gain[b] = np.sqrt(vx / vm)
    n = nb + 2
    a = np.zeros((n, n))
    y = np.zeros(n)
    for b in range(nb):
        g = gain[b]
        S = np.asarray(sums[b], np.float64)
        # F = [1, g Gy / 4, g Gx / 4]; target r = x - g M2 / 2 (M2 index 0, 1 index 1, Gy 2, Gx 3, x 4)
        w = np.array([1.0, g / 4, g / 4])
        cols = [1, 2, 3]
        F = S[np.ix_(cols, cols)] * w[:, None] * w[None, :]
        t = (S[cols, 4] - g / 2 * S[cols, 0]) * w
        idx = [b, n - 2, n - 1]
        a[np.ix_(idx, idx)] += F
        y[idx] += t
    d = np.sqrt(np.maximum(np.diag(a), 1e-12))
    try:
        th = np.linalg.solve(a / d[:, None] / d[None, :], y / d) / d
    except np.linalg.LinAlgError:
        return Registration.identity(nb)
    if not np.all(np.isfinite(th)):
        return Registration.identity(nb)
    dy = float(np.clip(th[-2], -1.0, 1.0))
    dx = float(np.clip(th[-1], -1.0, 1.0))
    return Registration(tuple(float(g) for g in gain), tuple(float(c) for c in th[:nb]), dy, dx, n_px)


def _aligned_parts(values: xr.DataArray, median: xr.DataArray, use: xr.DataArray) -> tuple:
    """``values``, ``median`` and ``use`` as dask arrays with one block over the bands and the same
    (y, x) chunks (those of ``values``, else of the first dask input): one block of each per task.
    The inputs stay in their own dtypes (uint16 counts, float32 median, bool use), with no stacked
    float32 copy (that copy, rebuilt for each of the fit's four reductions, was most of its cost)."""
    import dask.array as dsa

    ref = next(a for a in (values, median, use) if is_dask(a))
    yx = ref.data.chunks[-2:]
    out = []
    for a in (values, median, use):
        d = a.data if is_dask(a) else dsa.from_array(np.asarray(a.values), chunks=(-1,) * (a.ndim - 2) + yx)
        out.append(d.rechunk((-1,) * (a.ndim - 2) + yx))
    return tuple(out)


def fit_registration(values: xr.DataArray, median: xr.DataArray, use: xr.DataArray, min_pixels: int = MIN_PIXELS,
                     min_fraction: float = MIN_FRACTION, steps: int = 2,
                     keep: Callable[[xr.DataArray], xr.DataArray] | None = None) -> Registration:
    """:func:`fit_once`, then up to ``steps - 1`` further Lucas-Kanade steps: the median is moved
    by the shift so far (bilinear, :func:`shift`) and the residual shift is fitted with the
    gain/offset against it (one linearised step is off by about 0.1 px at 0.4 px and more near
    1 px, where dates two half-pixel shifts apart meet), offsets and residual shift by least
    squares over the inliers only (a cleared field over 6 % of a site biased the offsets by
    100-160 counts). Exact and chunking-independent like :func:`fit_once`; each step costs two
    more small reductions. On dask, the moved median both of a step's reductions read is kept by
    ``keep`` (default: ``persist``, in the cluster's memory; a streamed analysis passes a store)."""
    if steps < 1:
        raise ValueError(f"registration steps got {steps!r}; expected >= 1")
    reg = fit_once(values, median, use, min_pixels, min_fraction)
    for _ in range(steps - 1):
        if reg.pixels < min_pixels:
            break
        moved = shift(median, reg.dy, reg.dx) if (reg.dy or reg.dx) else median
        if is_dask(moved) and moved is not median:
            moved = moved.persist() if keep is None else keep(moved)  # both of the step's reductions read it
        # with the median moved, the differences at sharp edges are small: the offsets and the
        # residual shift are fitted on the inliers only, so a large real change does not bias them
        nxt = fit_once(values, moved, use, min_pixels, min_fraction, least_squares_on="inliers")
        if nxt.pixels < min_pixels or not (nxt.dy or nxt.dx) and nxt.pixels < reg.pixels:
            break  # the moved median left too few pixels (or a fallback without shift): keep the last fit
        dy, dx = float(np.clip(reg.dy + nxt.dy, -1.0, 1.0)), float(np.clip(reg.dx + nxt.dx, -1.0, 1.0))
        reg = Registration(nxt.gain, nxt.offset, dy, dx, nxt.pixels)
    return reg


def fit_once(values: xr.DataArray, median: xr.DataArray, use: xr.DataArray, min_pixels: int = MIN_PIXELS,
             min_fraction: float = MIN_FRACTION, least_squares_on: str = "all") -> Registration:
    """Fit ``values ~= gain * median(p + s) + offset`` (``(band, y, x)`` each, ``use`` ``(y, x)``
    bool) on the ``use`` pixels whose difference from the median is not an outlier
    (:func:`inlier_band`); the offsets and shift by least squares over all ``use`` pixels (the
    sharp edges carry the shift), or over the inliers with ``least_squares_on="inliers"``. Exact,
    so identical on numpy and on any dask chunking (computes two small reductions: the
    difference histogram, then the fit's sums).
    With fewer usable pixels than ``min_fraction`` of the grid: gain/offset by mean/standard
    deviation matching and no shift."""
    if least_squares_on not in ("all", "inliers"):
        raise ValueError(f"registration least_squares_on got {least_squares_on!r}; expected 'all' or 'inliers'")
    for name, da_ in (("values", values), ("median", median)):
        if da_.dims != ("band", "y", "x"):
            raise ValueError(f"registration {name} dims got {da_.dims!r}; expected ('band', 'y', 'x')")
    if use.dims != ("y", "x"):
        raise ValueError(f"registration use dims got {use.dims!r}; expected ('y', 'x')")
    nb = values.sizes["band"]
    if median.sizes["band"] != nb:
        raise ValueError(f"registration median bands got {median.sizes['band']!r}; expected {nb}")
    if any(is_dask(a) for a in (values, median, use)):
        import dask

        v, m, u = _aligned_parts(values, median, use)
        hists = dask.compute(*[dask.delayed(difference_hist_parts)(vb, mb, ub, HIST_HALF)
                               for vb, mb, ub in zip(*(a.to_delayed().ravel() for a in (v, m, u)))])
        band = inlier_band(np.sum(hists, axis=0))
        centre, tol = band if band is not None else (None, None)
        padded = [dask.array.overlap.overlap(a, depth=(0,) * (a.ndim - 2) + (1, 1), boundary="nearest") for a in (v, m, u)]
        tasks = [dask.delayed(all_sums_parts)(vb, mb, ub, centre, tol)
                 for vb, mb, ub in zip(*(a.to_delayed().ravel() for a in padded))]
        parts = dask.compute(*tasks)
        sums = tuple(sum((p[k] for p in parts[1:]), parts[0][k]) for k in range(3))  # Python ints: exact
    else:
        v, m, u = (np.asarray(a.values) for a in (values, median, use))
        band = inlier_band(difference_hist_parts(v, m, u, HIST_HALF))
        centre, tol = band if band is not None else (None, None)
        pad = lambda a: np.pad(a, ((0, 0),) * (a.ndim - 2) + ((1, 1), (1, 1)), mode="edge")  # noqa: E731
        sums = all_sums_parts(pad(v), pad(m), pad(u), centre, tol)
    return registration_from_sums(sums[1] if least_squares_on == "inliers" else sums[0], min_pixels,
                                  int(np.ceil(min_fraction * use.sizes["y"] * use.sizes["x"])), gain_sums=sums[1], box_sums=sums[2])


def shift_np(padded: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Bilinear resampling of ``padded`` (``(..., y + 2, x + 2)``, padded by 1 px) at ``p + (dy,
    dx)`` (|d| <= 1), cropped to ``(..., y, x)``; float32."""
    if abs(dy) > 1 or abs(dx) > 1:
        raise ValueError(f"shift got {(dy, dx)!r}; expected |dy|, |dx| <= 1 px")
    a = np.asarray(padded, np.float32)
    h, w = a.shape[-2] - 2, a.shape[-1] - 2
    out = np.zeros(a.shape[:-2] + (h, w), np.float32)
    for oy, wy in ((0, 1 - abs(dy)), (int(np.sign(dy)), abs(dy))):
        for ox, wx in ((0, 1 - abs(dx)), (int(np.sign(dx)), abs(dx))):
            if wy * wx == 0:
                continue
            out += np.float32(wy * wx) * a[..., 1 + oy:1 + oy + h, 1 + ox:1 + ox + w]
    return out


def shift(arr: xr.DataArray, dy: float, dx: float) -> xr.DataArray:
    """``arr`` (dims ending in ``y, x``) resampled bilinearly at ``p + (dy, dx)``, float32;
    edges padded by repetition (``map_overlap`` depth 1, boundary nearest, on dask)."""
    if arr.dims[-2:] != ("y", "x"):
        raise ValueError(f"shift dims got {arr.dims!r}; expected (..., 'y', 'x')")
    if abs(dy) > 1 or abs(dx) > 1:
        raise ValueError(f"shift got {(dy, dx)!r}; expected |dy|, |dx| <= 1 px")
    if dy == 0 and dx == 0:
        return arr.astype(np.float32)
    return _moved(arr, shift_np, np.float32, dy, dx)  # float32 inside each block: the input passes between tasks as it is


def apply_inverse(values: xr.DataArray, reg: Registration) -> xr.DataArray:
    """``values`` (``(band, y, x)``) moved onto the median's grid and radiometry:
    ``(values(p - s) - offset) / gain``."""
    g = xr.DataArray(np.asarray(reg.gain, np.float32), dims="band")
    o = xr.DataArray(np.asarray(reg.offset, np.float32), dims="band")
    moved = shift(values, -reg.dy, -reg.dx)
    return ((moved - o) / g).astype(np.float32)


def comparable(reg: Registration, max_gain_ratio: float = MAX_GAIN_RATIO) -> bool:
    """Whether every band's gain is within ``[1 / max_gain_ratio, max_gain_ratio]``."""
    return all(1.0 / max_gain_ratio <= g <= max_gain_ratio for g in reg.gain)


def is_identity(reg: Registration) -> bool:
    return reg.dy == 0 and reg.dx == 0 and all(g == 1 for g in reg.gain) and all(o == 0 for o in reg.offset)


def aligned_counts_np(padded: np.ndarray, dy: float, dx: float, gain: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """:func:`aligned_observation`'s counts for one block: ``padded`` (``(band, y + 2, x + 2)``
    uint16, padded by 1 px) resampled at ``p + (dy, dx)``, then ``(v - offset) / gain`` per band,
    rounded and kept in ``1 .. 65534`` (uint16 ``(band, y, x)``). The float32 steps stay inside
    the block: on dask only uint16 chunks and their 1 px halos pass between tasks."""
    moved = shift_np(padded, dy, dx)
    moved = (moved - np.asarray(offset, np.float32)[:, None, None]) / np.asarray(gain, np.float32)[:, None, None]
    return np.clip(np.round(moved), 1, 65534).astype(np.uint16)


def aligned_clear_np(padded: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """:func:`aligned_observation`'s clear mask for one block: ``padded`` (``(y + 2, x + 2)``
    bool) stays clear where the whole bilinear support of ``p + (dy, dx)`` was clear."""
    return shift_np(padded, dy, dx) > np.float32(0.999)


def _moved(arr: xr.DataArray, func: Any, dtype: Any, dy: float, dx: float, **kwargs: Any) -> xr.DataArray:
    """``func`` over ``arr`` padded by 1 px (edges repeated): one ``map_overlap`` on dask."""
    nd = arr.ndim
    if is_dask(arr):
        depth = {k: (1 if k >= nd - 2 else 0) for k in range(nd)}
        bnd = {k: ("nearest" if k >= nd - 2 else "none") for k in range(nd)}
        data = arr.data.map_overlap(func, depth=depth, boundary=bnd, trim=False, dtype=dtype, dy=dy, dx=dx, **kwargs)
    else:
        data = func(np.pad(np.asarray(arr.values), [(0, 0)] * (nd - 2) + [(1, 1), (1, 1)], mode="edge"), dy=dy, dx=dx, **kwargs)
    return arr.copy(data=data).astype(dtype)


def aligned_observation(values: xr.DataArray, clear: xr.DataArray, reg: Registration) -> tuple[xr.DataArray, xr.DataArray]:
    """One date's ``values`` (``(band, y, x)`` uint16 counts) and ``clear`` mask (``(y, x)``)
    moved onto the baseline's grid and radiometry by ``reg`` (:func:`apply_inverse`), as the
    baseline state stores observations: counts rounded and kept in ``1 .. 65534`` (0 is an empty
    ring slot, 65535 saturated), and a pixel stays clear only where the whole bilinear support of
    its moved value was clear. The identity registration returns the inputs. Each output is one
    blockwise step (:func:`aligned_counts_np`, :func:`aligned_clear_np`): no float32 copy of the
    bands between tasks (on a site of 8192^2 px, dask's order otherwise held most of that 1.6 GB
    copy at once in the fold)."""
    if is_identity(reg):
        return values, clear
    values = values.transpose("band", "y", "x")
    if is_dask(values):
        values = values.chunk(band=-1)  # the gain and offset apply per band inside one block
    g, o = np.asarray(reg.gain, np.float32), np.asarray(reg.offset, np.float32)
    counts = _moved(values, aligned_counts_np, np.uint16, -reg.dy, -reg.dx, gain=g, offset=o)
    moved_clear = clear.astype(bool)
    if reg.dy or reg.dx:
        moved_clear = _moved(moved_clear, aligned_clear_np, bool, -reg.dy, -reg.dx)
    return counts, moved_clear


def registered_observation(values: xr.DataArray, clear: xr.DataArray, reg: Registration,
                           max_gain_ratio: float = MAX_GAIN_RATIO) -> tuple[xr.DataArray, xr.DataArray]:
    """What :func:`fold_registered` folds for a date fitted by ``reg``: its
    :func:`aligned_observation`, or, for a date that is not :func:`comparable`, its values with no
    clear pixel (it adds no observation)."""
    if not comparable(reg, max_gain_ratio):
        return values.transpose("band", "y", "x"), xr.zeros_like(clear, dtype=bool)
    return aligned_observation(values, clear, reg)


def fold_registered(state: xr.Dataset, values: xr.DataArray, clear: xr.DataArray, min_count: int,
                    reg: Registration | None = None, max_gain_ratio: float = MAX_GAIN_RATIO, day: object = None,
                    season_days: int | None = None) -> tuple[xr.Dataset, Registration]:
    """Fold one date into the baseline state (:mod:`.baseline_ring`) after registering it to the
    state's median: the fit (:func:`fit_registration`) uses the date's ``clear`` pixels with at
    least ``min_count`` observations in the state (or pass ``reg``, the fit already made), and
    the date is folded as :func:`aligned_observation` moves it. The state's observations are
    then all on one grid and radiometry, so its MAD measures noise and real variability rather
    than per-date gain/offset and sub-pixel misregistration. Returns the new state and the fit.
    An empty state (the first date) gives the identity. A date that is not :func:`comparable`
    adds no observation (its pixels are folded as not clear). ``day``: the date's acquisition
    date, recorded in the state; with ``season_days`` the fit is against the seasonal baseline of
    that date (the one its change is scored against), and ``day`` is required."""
    from .baseline_ring import fold, state_baseline

    if min_count < 1:
        raise ValueError(f"fold_registered min_count got {min_count!r}; expected >= 1")
    if season_days is not None and day is None:
        raise ValueError(f"fold_registered with season_days {season_days!r} got no day; expected the date's acquisition date")
    values = values.transpose("band", "y", "x")
    if reg is None:
        base = state_baseline(state, day, season_days)
        reg = fit_registration(values, base["median"].sel(band=list(values["band"].values)), clear & (base["count"] >= min_count))
    moved, moved_clear = registered_observation(values, clear, reg, max_gain_ratio)
    return fold(state, moved, moved_clear, day), reg


def build_registered_state(stack: xr.DataArray, clear: xr.DataArray, window: int,
                           min_counts: Sequence[int] | None = None, days: object = None,
                           season_days: int | None = None) -> tuple[xr.Dataset, list[Registration]]:
    """The baseline state after folding ``stack`` (``time, band, y, x`` uint16, oldest first)
    date by date with :func:`fold_registered`, as the analysis does scene after scene.
    ``min_counts[t]`` is the observation count a pixel needs in the state to take part in date
    ``t``'s fit (default: ``min(3, t)``). ``days``: the dates (default: the stack's datetime
    ``time`` coordinate, if any; required with ``season_days``, a seasonal baseline per date). On
    dask the state is persisted after every date (each fit is a reduction over the state so far)."""
    from .baseline import BaselineParams
    from .baseline_ring import empty_state, stack_days

    stack = stack.transpose("time", "band", "y", "x")
    clear = clear.transpose("time", "y", "x")
    n = stack.sizes["time"]
    ks = [max(1, min(3, t)) for t in range(n)] if min_counts is None else list(min_counts)
    if len(ks) != n:
        raise ValueError(f"build_registered_state min_counts got {len(ks)} value(s); expected one per date ({n})")
    params = BaselineParams(window=window, season_days=season_days)
    obs_days = stack_days(stack, days)
    if obs_days is None and season_days is not None:
        raise ValueError("build_registered_state with season_days got a stack without dates; expected datetime 'time' or days=")
    if obs_days is not None and len(obs_days) != n:
        raise ValueError(f"build_registered_state days got {len(obs_days)} date(s); expected one per date ({n})")
    state = empty_state(stack.isel(time=0, band=0, drop=True), list(stack["band"].values), params)
    lazy = is_dask(stack) or is_dask(clear)
    fits = []
    for t in range(n):
        state, reg = fold_registered(state, stack.isel(time=t, drop=True), clear.isel(time=t, drop=True).astype(bool), ks[t],
                                     day=None if obs_days is None else int(obs_days[t]), season_days=season_days)
        state = state.persist() if lazy else state.compute()
        fits.append(reg)
    return state, fits
