"""Per-pixel robust baseline of a site's recent clear observations.

For every pixel and band: the median and the median absolute deviation (MAD) of the values
observed under clear sky (valid, not cloud, not shadow) in a window of earlier scenes, and the
number of such observations. The numpy kernel works on core dims last (``(..., time, band)``);
:func:`robust_baseline` wraps it for xarray with ``apply_ufunc(dask="parallelized")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import xarray as xr

from ._util import is_dask


@dataclass(frozen=True)
class BaselineParams:
    """``window``: how many of each pixel's most recent clear observations (in the scenes
    analysed before the one at hand) form the baseline. :func:`robust_baseline` itself takes
    whatever stack it is given; the analysis keeps the last ``window`` per pixel in the site's
    baseline state (:mod:`sitewatch.kernels.baseline_ring`, :mod:`sitewatch.io.baseline_state`).
    Before November 2026 it was the clear observations among the last ``window`` scenes.

    ``season_days``: ``None`` (default) uses all of them; ``d`` (1 .. 182) only those whose date is
    within ``d`` days of the target date's month and day, in any year, circularly over the year
    end (:mod:`sitewatch.kernels.season`): a seasonal baseline. The ring still holds the last
    ``window`` clear observations, so ``window`` must reach back a year plus ``d`` days to hold last
    year's season (e.g. :data:`SEASONAL_WINDOW` for a 5-day revisit with about half the views clear);
    the baseline's count is then the in-season observations."""

    window: int = 8
    season_days: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise ValueError(f"baseline window got {self.window!r}; expected an int >= 1 observation")
        from .season import check_season_days

        check_season_days(self.season_days)


#: The window a site gets by default with a seasonal baseline (``season_days`` set): about a
#: year and a month of clear views at a 5-day revisit with about 60 % of them clear.
SEASONAL_WINDOW = 60


@numba.njit(nogil=True, cache=True, inline="always")
def _insertion_sort(a, k):  # pragma: no cover - compiled
    for i in range(1, k):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@numba.njit(nogil=True, cache=True)
def _median_sorted(a, k):  # pragma: no cover - compiled
    if k % 2 == 1:
        return a[k // 2]
    return np.float32(0.5) * (a[k // 2 - 1] + a[k // 2])


@numba.njit(nogil=True, cache=True)
def _median_mad(buf, k):  # pragma: no cover - compiled
    """Median and median absolute deviation of ``buf[:k]`` (reorders ``buf``: a scratch buffer)."""
    _insertion_sort(buf, k)
    med = _median_sorted(buf, k)
    for i in range(k):
        buf[i] = abs(buf[i] - med)
    _insertion_sort(buf, k)
    return med, _median_sorted(buf, k)


@numba.njit(nogil=True, cache=True)
def _baseline_loop(values, clear, median, mad, count):  # pragma: no cover - compiled
    n_pix, n_t, n_b = values.shape
    buf = np.empty(n_t, dtype=np.float32)
    for p in range(n_pix):
        k = 0
        for t in range(n_t):
            if clear[p, t]:
                k += 1
        count[p] = k
        for b in range(n_b):
            if k == 0:
                median[p, b] = np.nan
                mad[p, b] = np.nan
                continue
            j = 0
            for t in range(n_t):
                if clear[p, t]:
                    buf[j] = values[p, t, b]
                    j += 1
            median[p, b], mad[p, b] = _median_mad(buf, k)


def baseline_np(values: np.ndarray, clear: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, MAD (float32, ``(..., band)``) and clear-observation count (int16, ``(...)``).

    ``values``: ``(..., time, band)`` reflectance (any real dtype); ``clear``: ``(..., time)`` bool.
    Pixels with no clear observation get NaN median and MAD and count 0. Inputs are not modified.
    """
    values = np.asarray(values)
    clear = np.asarray(clear)
    if values.ndim < 2:
        raise ValueError(f"baseline values got shape {values.shape!r}; expected (..., time, band)")
    if clear.shape != values.shape[:-1]:
        raise ValueError(f"baseline clear mask shape got {clear.shape!r}; expected {values.shape[:-1]!r} (values without band)")
    lead = values.shape[:-2]
    n_t, n_b = values.shape[-2:]
    v = np.ascontiguousarray(values.reshape(-1, n_t, n_b), dtype=np.float32)
    c = np.ascontiguousarray(clear.reshape(-1, n_t), dtype=np.bool_)
    median = np.empty((v.shape[0], n_b), np.float32)
    mad = np.empty((v.shape[0], n_b), np.float32)
    count = np.empty(v.shape[0], np.int16)
    _baseline_loop(v, c, median, mad, count)
    return median.reshape(lead + (n_b,)), mad.reshape(lead + (n_b,)), count.reshape(lead)


def robust_baseline(stack: xr.DataArray, clear: xr.DataArray) -> xr.Dataset:
    """Baseline of ``stack`` (dims ``time``, ``band``, ``y``, ``x``) over ``clear`` (``time``, ``y``, ``x``).

    Returns a Dataset with ``median`` and ``mad`` (``band``, ``y``, ``x``, float32) and ``count``
    (``y``, ``x``, int16); lazy if the inputs are dask-backed (time and band are rechunked to
    single chunks, space keeps its chunks).
    """
    for d in ("time", "band", "y", "x"):
        if d not in stack.dims:
            raise ValueError(f"baseline stack dims got {stack.dims!r}; expected time, band, y, x")
    if set(clear.dims) != {"time", "y", "x"}:
        raise ValueError(f"baseline clear dims got {clear.dims!r}; expected (time, y, x)")
    if is_dask(stack):
        stack = stack.chunk({"time": -1, "band": -1})
    if is_dask(clear):
        clear = clear.chunk({"time": -1})
    median, mad, count = xr.apply_ufunc(
        baseline_np, stack, clear,
        input_core_dims=[["time", "band"], ["time"]],
        output_core_dims=[["band"], ["band"], []],
        dask="parallelized",
        output_dtypes=[np.float32, np.float32, np.int16],
    )
    out = xr.Dataset({
        "median": median.transpose("band", "y", "x"),
        "mad": mad.transpose("band", "y", "x"),
        "count": count.transpose("y", "x"),
    })
    out.attrs = dict(stack.attrs)
    return out
