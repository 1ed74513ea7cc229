"""Per-pixel ring buffer of a site's last W clear observations: the incremental baseline state.

The baseline (:mod:`sitewatch.kernels.baseline`) is the median and MAD of each pixel's last
``window`` clear observations. Instead of re-reading history scenes for every new scene, the
state keeps those observations per pixel:

* ``ring`` ``(k, band, y, x)`` uint16: up to ``k = window`` clear observations of every band
  (band counts, which are at least 1 where valid; 0 = empty slot);
* ``n_obs`` ``(y, x)`` uint32: how many clear observations were ever folded in; the ring holds
  ``min(n_obs, k)`` of them in slots ``0 .. min(n_obs, k) - 1`` and the next one goes to slot
  ``n_obs % k`` (overwriting the oldest once the ring is full);
* ``day`` ``(k, y, x)`` uint16: when each slot's observation was taken, in whole days since
  1970-01-01 (:mod:`.season`; 0 in empty slots, and where a fold was given no date, which only
  the last-N baseline allows). It costs 1/band of the ring (one more uint16 per slot).

A seasonal baseline (``BaselineParams.season_days``) takes the median/MAD over the slots whose
day is in season around the target date (:func:`slot_use_np`); the default, all filled slots.

:func:`fold` adds one scene's clear values (a new state; inputs are never modified),
:func:`build_state` folds a time-ordered stack from an empty state, and :func:`state_baseline`
gives median, MAD and count equal to :func:`~sitewatch.kernels.baseline.baseline_np` over the
same observations (the same float32 sort and median code); with ``indices`` also the median/MAD
of each observation's spectral indices (:mod:`.indices`), in the same pass. numpy kernels work on core dims
last (``(..., k, band)``); the xarray wrappers use ``apply_ufunc(dask="parallelized")``.
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
import xarray as xr

from ._util import is_dask
from .baseline import BaselineParams, _median_mad
from .indices import IndexPlan, index_median_mad_ring, index_plan
from .season import DAY_DTYPE, check_season_days, epoch_day, epoch_days, in_season_np

RING_DTYPE = np.uint16
N_OBS_DTYPE = np.uint32


@numba.njit(nogil=True, cache=True)
def _fold_loop(ring, n_obs, day, values, clear, obs_days):  # pragma: no cover - compiled
    """Fold ``values`` (P, T, B) where ``clear`` (P, T) into ``ring`` (P, K, B) / ``n_obs`` (P,)
    / ``day`` (P, K), ``obs_days`` (T,) the dates, in place (callers pass copies). Returns how
    many clear values were 0 (nodata)."""
    n_pix, k, n_b = ring.shape
    n_t = values.shape[1]
    zeros = 0
    for p in range(n_pix):
        n = n_obs[p]
        for t in range(n_t):
            if clear[p, t]:
                h = n % k
                for b in range(n_b):
                    v = values[p, t, b]
                    if v == 0:
                        zeros += 1
                    ring[p, h, b] = v
                day[p, h] = obs_days[t]
                n += 1
        n_obs[p] = n
    return zeros


@numba.njit(nogil=True, cache=True)
def _state_baseline_loop(ring, use, median, mad, count, inum, iden, iden_floor, imedian, imad):  # pragma: no cover - compiled
    """Median/MAD per band of the slots where ``use`` (P, K) (see :func:`slot_use_np`), and per
    index of the same slots' index values (``inum`` with 0 rows: none)."""
    n_pix, k, n_b = ring.shape
    buf = np.empty(k, dtype=np.float32)
    slots = np.empty(k, dtype=np.int64)
    for p in range(n_pix):
        c = 0
        for i in range(k):
            if use[p, i]:
                slots[c] = i
                c += 1
        count[p] = c
        for b in range(n_b):
            if c == 0:
                median[p, b] = np.nan
                mad[p, b] = np.nan
                continue
            for j in range(c):
                buf[j] = np.float32(ring[p, slots[j], b])
            median[p, b], mad[p, b] = _median_mad(buf, c)
        # spectral indices (kernels.indices): median/MAD of each observation's index values,
        # in this same pass over the ring; no-op when no index is asked for (inum has 0 rows)
        index_median_mad_ring(ring, p, slots, c, inum, iden, iden_floor, buf, imedian, imad)


def _check_state(ring: np.ndarray, n_obs: np.ndarray, day: np.ndarray | None = None) -> tuple[int, int]:
    if ring.ndim < 2:
        raise ValueError(f"baseline ring got shape {ring.shape!r}; expected (..., k, band)")
    if ring.dtype != RING_DTYPE:
        raise ValueError(f"baseline ring got dtype {ring.dtype}; expected {np.dtype(RING_DTYPE)} band counts")
    if n_obs.shape != ring.shape[:-2]:
        raise ValueError(f"baseline n_obs got shape {n_obs.shape!r}; expected {ring.shape[:-2]!r} (the ring without k, band)")
    if n_obs.dtype != N_OBS_DTYPE:
        raise ValueError(f"baseline n_obs got dtype {n_obs.dtype}; expected {np.dtype(N_OBS_DTYPE)}")
    k, n_b = ring.shape[-2:]
    if k < 1:
        raise ValueError(f"baseline ring got k = {k!r}; expected >= 1 slot")
    if day is not None:
        if day.shape != ring.shape[:-1]:
            raise ValueError(f"baseline day got shape {day.shape!r}; expected {ring.shape[:-1]!r} (the ring without band)")
        if day.dtype != DAY_DTYPE:
            raise ValueError(f"baseline day got dtype {day.dtype}; expected {np.dtype(DAY_DTYPE)} days since 1970-01-01")
    return k, n_b


def slot_use_np(day: np.ndarray, n_obs: np.ndarray, target_day: int | None = None,
                season_days: int | None = None) -> np.ndarray:
    """Which ring slots (bool ``(..., k)``) a baseline uses: the filled ones (``min(n_obs, k)``),
    and with ``season_days`` only those whose ``day`` is in season around ``target_day``
    (:func:`~sitewatch.kernels.season.in_season_np`; ``target_day`` then required)."""
    day, n_obs = np.asarray(day), np.asarray(n_obs)
    k = day.shape[-1]
    use = np.arange(k, dtype=np.int64) < np.minimum(n_obs, k)[..., None].astype(np.int64)
    if check_season_days(season_days) is None:
        return use
    if target_day is None:
        raise ValueError(f"seasonal baseline (season_days {season_days!r}) got no target date; expected the date the baseline is for")
    return use & in_season_np(day, target_day, season_days)


def fold_stack_np(ring: np.ndarray, n_obs: np.ndarray, day: np.ndarray, values: np.ndarray, clear: np.ndarray,
                  obs_days: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold a time-ordered stack into the state: new ``(ring, n_obs, day)``; inputs are not modified.

    ``ring`` ``(..., k, band)`` uint16, ``n_obs`` ``(...)`` uint32, ``day`` ``(..., k)`` uint16,
    ``values`` ``(..., time, band)`` uint16 band counts, ``clear`` ``(..., time)`` bool,
    ``obs_days`` ``(time,)`` the dates (days since 1970-01-01; ``None``: 0, unknown). Clear values
    must be >= 1 (0 is nodata).
    """
    ring, n_obs, day, values, clear = (np.asarray(a) for a in (ring, n_obs, day, values, clear))
    k, n_b = _check_state(ring, n_obs, day)
    if values.dtype != RING_DTYPE:
        raise ValueError(f"baseline fold values got dtype {values.dtype}; expected {np.dtype(RING_DTYPE)} band counts")
    lead = ring.shape[:-2]
    if values.ndim != len(lead) + 2 or values.shape[:len(lead)] != lead or values.shape[-1] != n_b:
        raise ValueError(f"baseline fold values got shape {values.shape!r}; expected {lead!r} + (time, {n_b})")
    if clear.shape != values.shape[:-1]:
        raise ValueError(f"baseline fold clear got shape {clear.shape!r}; expected {values.shape[:-1]!r} (values without band)")
    n_t = values.shape[-2]
    od = np.zeros(n_t, DAY_DTYPE) if obs_days is None else np.asarray(obs_days)
    if od.shape != (n_t,) or od.dtype != DAY_DTYPE:
        raise ValueError(f"baseline fold obs_days got shape {od.shape!r}, dtype {od.dtype}; expected ({n_t},) "
                         f"{np.dtype(DAY_DTYPE)} days since 1970-01-01, one per time step")
    # the new ring and day are copies laid out slot- and band-planar, as the state is stored
    # (``(k, band, y, x)``): apply_ufunc hands the kernel a view of such a chunk with the core
    # dims last, so the copy is a plain memcpy, and the xarray wrapper's transpose back gives a
    # contiguous chunk to the store (no transposing copy on the way in, nor on the way out)
    r = _pixels_first(_core_first_copy(ring.reshape(-1, k, n_b), 2))
    d = _pixels_first(_core_first_copy(day.reshape(-1, k), 1))
    n = np.array(n_obs.reshape(-1), dtype=N_OBS_DTYPE, copy=True)
    v = values.reshape(-1, n_t, n_b)  # views where the layout allows; the loop takes any strides
    c = clear.reshape(-1, n_t).astype(np.bool_, copy=False)
    zeros = _fold_loop(r, n, d, v, c, od)
    if zeros:
        raise ValueError(f"baseline fold got {zeros} clear value(s) of 0 (nodata); expected band counts >= 1 wherever clear")
    return r.reshape(ring.shape), n.reshape(n_obs.shape), d.reshape(day.shape)


def _core_first_copy(a: np.ndarray, n_core: int) -> np.ndarray:
    """A C-contiguous copy of ``a`` ``(pixels, *core)`` laid out core dims first
    ``(*core, pixels)``: a memcpy when ``a`` is a core-last view of such an array."""
    return np.moveaxis(a, 0, n_core).copy(order="C")  # always a copy (never the input, even when laid out so)


def _pixels_first(a: np.ndarray) -> np.ndarray:
    """The view ``(pixels, *core)`` of a core-first array ``(*core, pixels)``."""
    return np.moveaxis(a, -1, 0)


def fold_np(ring: np.ndarray, n_obs: np.ndarray, day: np.ndarray, values: np.ndarray, clear: np.ndarray,
            obs_day: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold one scene: ``values`` ``(..., band)`` uint16 where ``clear`` ``(...)``, taken on
    ``obs_day`` (days since 1970-01-01); see :func:`fold_stack_np`."""
    values, clear = np.asarray(values), np.asarray(clear)
    od = None if obs_day is None else np.array([epoch_day(obs_day)], DAY_DTYPE)
    return fold_stack_np(ring, n_obs, day, values[..., None, :], clear[..., None], od)


def state_baseline_np(ring: np.ndarray, n_obs: np.ndarray, day: np.ndarray | None = None, target_day: int | None = None,
                      season_days: int | None = None, index: IndexPlan | None = None) -> tuple[np.ndarray, ...]:
    """Median, MAD (float32 ``(..., band)``) and count (int16 ``(...)``) of the observations in
    the ring (with ``season_days``: those in season around ``target_day``, which needs ``day``):
    equal to ``baseline_np`` over the same observations. With an ``index`` plan
    (:func:`~sitewatch.kernels.indices.index_plan` over the ring's bands) also the index median
    and MAD (float32 ``(..., index)``) of the same observations, from the same pass."""
    ring, n_obs = np.asarray(ring), np.asarray(n_obs)
    if day is None:
        if season_days is not None:
            raise ValueError("seasonal baseline got no baseline day array; expected the state's day (k) per pixel")
        day = np.zeros(ring.shape[:-1], DAY_DTYPE)
    day = np.asarray(day)
    k, n_b = _check_state(ring, n_obs, day)
    if index is not None and index.num.shape[1] != n_b:
        raise ValueError(f"baseline index plan got {index.num.shape[1]} band(s); expected the ring's {n_b}")
    lead = ring.shape[:-2]
    r = ring.reshape(-1, k, n_b)  # a view where the layout allows (the stored (k, band, y, x) chunk): no copy
    use = np.ascontiguousarray(slot_use_np(day.reshape(-1, k), n_obs.reshape(-1), target_day, season_days))
    n_p = r.shape[0]
    # outputs band- and index-planar, as the wrapper hands them on ((band, y, x)): contiguous there
    median = _pixels_first(np.empty((n_b, n_p), np.float32))
    mad = _pixels_first(np.empty((n_b, n_p), np.float32))
    count = np.empty(n_p, np.int16)
    n_i = 0 if index is None else len(index.names)
    inum = np.zeros((0, n_b), np.float32) if index is None else index.num
    iden = np.zeros((0, n_b), np.float32) if index is None else index.den
    ifloor = np.zeros(0, np.float32) if index is None else index.den_floor
    imedian = _pixels_first(np.empty((n_i, n_p), np.float32))
    imad = _pixels_first(np.empty((n_i, n_p), np.float32))
    _state_baseline_loop(r, use, median, mad, count, inum, iden, ifloor, imedian, imad)
    out = (median.reshape(lead + (n_b,)), mad.reshape(lead + (n_b,)), count.reshape(lead))
    if index is None:
        return out
    return out + (imedian.reshape(lead + (n_i,)), imad.reshape(lead + (n_i,)))


# ---------------------------------------------------------------- xarray wrappers

def _require(da: xr.DataArray, dims: Sequence[str], what: str) -> None:
    if set(da.dims) != set(dims):
        raise ValueError(f"{what} dims got {tuple(da.dims)!r}; expected {tuple(dims)!r}")


def empty_state(template: xr.DataArray, bands: Sequence[str], params: BaselineParams = BaselineParams()) -> xr.Dataset:
    """An empty state on the ``(y, x)`` grid of ``template`` (its coords and, if dask, its chunks)."""
    _require(template, ("y", "x"), "baseline state template")
    if not bands:
        raise ValueError(f"baseline state bands got {list(bands)!r}; expected at least one band")
    t = template.transpose("y", "x")
    k, nb = params.window, len(bands)
    if is_dask(t):
        import dask.array as dsa

        ring = dsa.zeros((k, nb) + t.shape, dtype=RING_DTYPE, chunks=((k,), (nb,)) + t.chunks)
        n_obs = dsa.zeros(t.shape, dtype=N_OBS_DTYPE, chunks=t.chunks)
        day = dsa.zeros((k,) + t.shape, dtype=DAY_DTYPE, chunks=((k,),) + t.chunks)
    else:
        ring = np.zeros((k, nb) + t.shape, dtype=RING_DTYPE)
        n_obs = np.zeros(t.shape, dtype=N_OBS_DTYPE)
        day = np.zeros((k,) + t.shape, dtype=DAY_DTYPE)
    coords = {"band": list(bands), "y": t.y, "x": t.x}
    return xr.Dataset({"ring": (("k", "band", "y", "x"), ring), "n_obs": (("y", "x"), n_obs),
                       "day": (("k", "y", "x"), day)}, coords=coords)


def _state_parts(state: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    for name in ("ring", "n_obs", "day"):
        if name not in state.data_vars:
            raise ValueError(f"baseline state lacks {name!r}; expected variables 'ring' (k, band, y, x), 'n_obs' (y, x) "
                             "and 'day' (k, y, x)")
    ring, n_obs, day = state["ring"], state["n_obs"], state["day"]
    _require(ring, ("k", "band", "y", "x"), "baseline ring")
    _require(n_obs, ("y", "x"), "baseline n_obs")
    _require(day, ("k", "y", "x"), "baseline day")
    if is_dask(ring):
        ring = ring.chunk({"k": -1, "band": -1})
    if is_dask(day):
        day = day.chunk({"k": -1})
    return ring, n_obs, day


def _fold_xr(state: xr.Dataset, values: xr.DataArray, clear: xr.DataArray, time: bool, obs_days: np.ndarray | None) -> xr.Dataset:
    ring, n_obs, day = _state_parts(state)
    core_v = ["time", "band"] if time else ["band"]
    _require(values, core_v + ["y", "x"], "baseline fold values")
    _require(clear, (["time"] if time else []) + ["y", "x"], "baseline fold clear")
    if list(values["band"].values) != list(ring["band"].values):
        raise ValueError(f"baseline fold bands got {list(values['band'].values)!r}; expected the state's "
                         f"{list(ring['band'].values)!r} in that order")
    if is_dask(values):
        values = values.chunk({d: -1 for d in core_v})
    if time and is_dask(clear):
        clear = clear.chunk({"time": -1})
    if time and obs_days is not None and obs_days.shape != (values.sizes["time"],):
        raise ValueError(f"baseline fold days got {obs_days.shape[0]} date(s); expected one per time step ({values.sizes['time']})")
    new_ring, new_n, new_day = xr.apply_ufunc(
        fold_stack_np if time else fold_np, ring, n_obs, day, values, clear,
        input_core_dims=[["k", "band"], [], ["k"], core_v, ["time"] if time else []],
        output_core_dims=[["k", "band"], [], ["k"]],
        dask="parallelized",
        output_dtypes=[RING_DTYPE, N_OBS_DTYPE, DAY_DTYPE],
        kwargs={"obs_days" if time else "obs_day": obs_days if time or obs_days is None else int(obs_days[0])},
    )
    out = xr.Dataset({"ring": new_ring.transpose("k", "band", "y", "x"), "n_obs": new_n.transpose("y", "x"),
                      "day": new_day.transpose("k", "y", "x")})
    out.attrs = dict(state.attrs)
    return out


def fold(state: xr.Dataset, values: xr.DataArray, clear: xr.DataArray, day: object = None) -> xr.Dataset:
    """The state with one scene's clear observations added: ``values`` ``(band, y, x)`` uint16
    (bands in the state's order), ``clear`` ``(y, x)`` bool, taken on ``day`` (a date or datetime,
    or days since 1970-01-01; ``None``: recorded as 0, unknown, which a seasonal baseline cannot
    use). Lazy if any input is dask-backed."""
    return _fold_xr(state, values, clear, False, None if day is None else np.array([epoch_day(day)], DAY_DTYPE))


def stack_days(stack: xr.DataArray, days: object = None) -> np.ndarray | None:
    """The dates of a ``stack``'s time steps as days since 1970-01-01: ``days`` if given, else its
    ``time`` coordinate when that holds datetimes, else ``None`` (unknown)."""
    if days is not None:
        return epoch_days(days)
    if "time" in stack.coords and np.issubdtype(stack["time"].dtype, np.datetime64):
        return epoch_days(stack["time"].values)
    return None


def build_state(stack: xr.DataArray, clear: xr.DataArray, params: BaselineParams = BaselineParams(),
                days: object = None) -> xr.Dataset:
    """The state after folding ``stack`` (``time, band, y, x`` uint16, oldest first) where
    ``clear`` (``time, y, x``) into an empty one: each pixel's last ``params.window`` clear
    observations, with their dates from ``days`` or the stack's datetime ``time`` coordinate
    (:func:`stack_days`; required when ``params.season_days`` is set)."""
    _require(stack, ("time", "band", "y", "x"), "baseline stack")
    obs_days = stack_days(stack, days)
    if obs_days is None and params.season_days is not None:
        raise ValueError("seasonal baseline state got a stack without dates; expected datetime 'time' coordinates or days=")
    template = stack.isel(time=0, band=0, drop=True)
    empty = empty_state(template, list(stack["band"].values), params)
    return _fold_xr(empty, stack, clear, True, obs_days)


def state_baseline(state: xr.Dataset, date: object = None, season_days: int | None = None,
                   indices: Sequence[str] = ()) -> xr.Dataset:
    """``median``, ``mad`` (``band, y, x`` float32) and ``count`` (``y, x`` int16) of the state's
    observations, as :func:`~sitewatch.kernels.baseline.robust_baseline` returns them; with
    ``season_days`` (``BaselineParams.season_days``) only of those in season around ``date``.
    With ``indices`` (names from :data:`~sitewatch.kernels.indices.INDICES`) also ``index_median``
    and ``index_mad`` (``index, y, x`` float32) of each observation's index values, from the same
    pass over the ring; indices the state's bands lack are skipped and listed in the attribute
    ``indices_skipped``."""
    ring, n_obs, day = _state_parts(state)
    target = None
    if check_season_days(season_days) is not None:
        if date is None:
            raise ValueError(f"seasonal baseline (season_days {season_days!r}) got no date; expected the date the baseline is for")
        target = epoch_day(date)
    plan = index_plan(indices, [str(b) for b in ring["band"].values]) if indices else None
    kwargs = {"target_day": target, "season_days": season_days, "index": plan}
    if plan is None:
        median, mad, count = xr.apply_ufunc(
            state_baseline_np, ring, n_obs, day,
            input_core_dims=[["k", "band"], [], ["k"]],
            output_core_dims=[["band"], ["band"], []],
            dask="parallelized",
            output_dtypes=[np.float32, np.float32, np.int16],
            kwargs=kwargs,
        )
    else:
        median, mad, count, imedian, imad = xr.apply_ufunc(
            state_baseline_np, ring, n_obs, day,
            input_core_dims=[["k", "band"], [], ["k"]],
            output_core_dims=[["band"], ["band"], [], ["index"], ["index"]],
            dask="parallelized",
            output_dtypes=[np.float32, np.float32, np.int16, np.float32, np.float32],
            dask_gufunc_kwargs={"output_sizes": {"index": len(plan.names)}},
            kwargs=kwargs,
        )
    out = xr.Dataset({"median": median.transpose("band", "y", "x"), "mad": mad.transpose("band", "y", "x"),
                      "count": count.transpose("y", "x")})
    out.attrs = dict(state.attrs)
    if plan is not None:
        out["index_median"] = imedian.transpose("index", "y", "x")
        out["index_mad"] = imad.transpose("index", "y", "x")
        out = out.assign_coords(index=list(plan.names))
        out.attrs["indices_skipped"] = list(plan.skipped)
    return out
