"""Per-pixel ring buffer of a site's last W clear observations: the incremental baseline state.

The baseline (:mod:`sitewatch.kernels.baseline`) is the median and MAD of each pixel's last
``window`` clear observations. Instead of re-reading history scenes for every new scene, the
state keeps those observations per pixel:

* ``ring`` ``(k, band, y, x)`` uint16: up to ``k = window`` clear observations of every band
  (band counts, which are at least 1 where valid; 0 = empty slot);
* ``n_obs`` ``(y, x)`` uint32: how many clear observations were ever folded in; the ring holds
  ``min(n_obs, k)`` of them in slots ``0 .. min(n_obs, k) - 1`` and the next one goes to slot
  ``n_obs % k`` (overwriting the oldest once the ring is full).

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

RING_DTYPE = np.uint16
N_OBS_DTYPE = np.uint32


@numba.njit(nogil=True, cache=True)
def _fold_loop(ring, n_obs, values, clear):  # pragma: no cover - compiled
    """Fold ``values`` (P, T, B) where ``clear`` (P, T) into ``ring`` (P, K, B) / ``n_obs`` (P,)
    in place (callers pass copies). Returns how many clear values were 0 (nodata)."""
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
                n += 1
        n_obs[p] = n
    return zeros


@numba.njit(nogil=True, cache=True)
def _state_baseline_loop(ring, n_obs, median, mad, count, inum, iden, iden_floor, imedian, imad):  # pragma: no cover - compiled
    n_pix, k, n_b = ring.shape
    buf = np.empty(k, dtype=np.float32)
    for p in range(n_pix):
        c = n_obs[p] if n_obs[p] < k else k
        count[p] = c
        for b in range(n_b):
            if c == 0:
                median[p, b] = np.nan
                mad[p, b] = np.nan
                continue
            for i in range(c):
                buf[i] = np.float32(ring[p, i, b])
            median[p, b], mad[p, b] = _median_mad(buf, c)
        # spectral indices (kernels.indices): median/MAD of each observation's index values,
        # in this same pass over the ring; no-op when no index is asked for (inum has 0 rows)
        index_median_mad_ring(ring, p, c, inum, iden, iden_floor, buf, imedian, imad)


def _check_state(ring: np.ndarray, n_obs: np.ndarray) -> tuple[int, int]:
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
    return k, n_b


def fold_stack_np(ring: np.ndarray, n_obs: np.ndarray, values: np.ndarray, clear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold a time-ordered stack into the state: new ``(ring, n_obs)``; inputs are not modified.

    ``ring`` ``(..., k, band)`` uint16, ``n_obs`` ``(...)`` uint32, ``values`` ``(..., time, band)``
    uint16 band counts, ``clear`` ``(..., time)`` bool. Clear values must be >= 1 (0 is nodata).
    """
    ring, n_obs, values, clear = (np.asarray(a) for a in (ring, n_obs, values, clear))
    k, n_b = _check_state(ring, n_obs)
    if values.dtype != RING_DTYPE:
        raise ValueError(f"baseline fold values got dtype {values.dtype}; expected {np.dtype(RING_DTYPE)} band counts")
    lead = ring.shape[:-2]
    if values.ndim != len(lead) + 2 or values.shape[:len(lead)] != lead or values.shape[-1] != n_b:
        raise ValueError(f"baseline fold values got shape {values.shape!r}; expected {lead!r} + (time, {n_b})")
    if clear.shape != values.shape[:-1]:
        raise ValueError(f"baseline fold clear got shape {clear.shape!r}; expected {values.shape[:-1]!r} (values without band)")
    n_t = values.shape[-2]
    r = np.array(ring.reshape(-1, k, n_b), dtype=RING_DTYPE, order="C", copy=True)
    n = np.array(n_obs.reshape(-1), dtype=N_OBS_DTYPE, copy=True)
    v = np.ascontiguousarray(values.reshape(-1, n_t, n_b))
    c = np.ascontiguousarray(clear.reshape(-1, n_t), dtype=np.bool_)
    zeros = _fold_loop(r, n, v, c)
    if zeros:
        raise ValueError(f"baseline fold got {zeros} clear value(s) of 0 (nodata); expected band counts >= 1 wherever clear")
    return r.reshape(ring.shape), n.reshape(n_obs.shape)


def fold_np(ring: np.ndarray, n_obs: np.ndarray, values: np.ndarray, clear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold one scene: ``values`` ``(..., band)`` uint16 where ``clear`` ``(...)``; see :func:`fold_stack_np`."""
    values, clear = np.asarray(values), np.asarray(clear)
    return fold_stack_np(ring, n_obs, values[..., None, :], clear[..., None])


def state_baseline_np(ring: np.ndarray, n_obs: np.ndarray, index: IndexPlan | None = None) -> tuple[np.ndarray, ...]:
    """Median, MAD (float32 ``(..., band)``) and count (int16 ``(...)``) of the observations in
    the ring: equal to ``baseline_np`` over the same observations. With an ``index`` plan
    (:func:`~sitewatch.kernels.indices.index_plan` over the ring's bands) also the index median
    and MAD (float32 ``(..., index)``) of the same observations, from the same pass."""
    ring, n_obs = np.asarray(ring), np.asarray(n_obs)
    k, n_b = _check_state(ring, n_obs)
    if index is not None and index.num.shape[1] != n_b:
        raise ValueError(f"baseline index plan got {index.num.shape[1]} band(s); expected the ring's {n_b}")
    lead = ring.shape[:-2]
    r = np.ascontiguousarray(ring.reshape(-1, k, n_b))
    n = np.ascontiguousarray(n_obs.reshape(-1))
    median = np.empty((r.shape[0], n_b), np.float32)
    mad = np.empty((r.shape[0], n_b), np.float32)
    count = np.empty(r.shape[0], np.int16)
    n_i = 0 if index is None else len(index.names)
    inum = np.zeros((0, n_b), np.float32) if index is None else index.num
    iden = np.zeros((0, n_b), np.float32) if index is None else index.den
    ifloor = np.zeros(0, np.float32) if index is None else index.den_floor
    imedian = np.empty((r.shape[0], n_i), np.float32)
    imad = np.empty((r.shape[0], n_i), np.float32)
    _state_baseline_loop(r, n, median, mad, count, inum, iden, ifloor, imedian, imad)
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
    else:
        ring = np.zeros((k, nb) + t.shape, dtype=RING_DTYPE)
        n_obs = np.zeros(t.shape, dtype=N_OBS_DTYPE)
    coords = {"band": list(bands), "y": t.y, "x": t.x}
    return xr.Dataset({"ring": (("k", "band", "y", "x"), ring), "n_obs": (("y", "x"), n_obs)}, coords=coords)


def _state_parts(state: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    for name in ("ring", "n_obs"):
        if name not in state.data_vars:
            raise ValueError(f"baseline state lacks {name!r}; expected variables 'ring' (k, band, y, x) and 'n_obs' (y, x)")
    ring, n_obs = state["ring"], state["n_obs"]
    _require(ring, ("k", "band", "y", "x"), "baseline ring")
    _require(n_obs, ("y", "x"), "baseline n_obs")
    if is_dask(ring):
        ring = ring.chunk({"k": -1, "band": -1})
    return ring, n_obs


def _fold_xr(state: xr.Dataset, values: xr.DataArray, clear: xr.DataArray, time: bool) -> xr.Dataset:
    ring, n_obs = _state_parts(state)
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
    new_ring, new_n = xr.apply_ufunc(
        fold_stack_np if time else fold_np, ring, n_obs, values, clear,
        input_core_dims=[["k", "band"], [], core_v, ["time"] if time else []],
        output_core_dims=[["k", "band"], []],
        dask="parallelized",
        output_dtypes=[RING_DTYPE, N_OBS_DTYPE],
    )
    out = xr.Dataset({"ring": new_ring.transpose("k", "band", "y", "x"), "n_obs": new_n.transpose("y", "x")})
    out.attrs = dict(state.attrs)
    return out


def fold(state: xr.Dataset, values: xr.DataArray, clear: xr.DataArray) -> xr.Dataset:
    """The state with one scene's clear observations added: ``values`` ``(band, y, x)`` uint16
    (bands in the state's order), ``clear`` ``(y, x)`` bool. Lazy if any input is dask-backed."""
    return _fold_xr(state, values, clear, time=False)


def build_state(stack: xr.DataArray, clear: xr.DataArray, params: BaselineParams = BaselineParams()) -> xr.Dataset:
    """The state after folding ``stack`` (``time, band, y, x`` uint16, oldest first) where
    ``clear`` (``time, y, x``) into an empty one: each pixel's last ``params.window`` clear observations."""
    _require(stack, ("time", "band", "y", "x"), "baseline stack")
    template = stack.isel(time=0, band=0, drop=True)
    empty = empty_state(template, list(stack["band"].values), params)
    return _fold_xr(empty, stack, clear, time=True)


def state_baseline(state: xr.Dataset, indices: Sequence[str] = ()) -> xr.Dataset:
    """``median``, ``mad`` (``band, y, x`` float32) and ``count`` (``y, x`` int16) of the state's
    observations, as :func:`~sitewatch.kernels.baseline.robust_baseline` returns them. With
    ``indices`` (names from :data:`~sitewatch.kernels.indices.INDICES`) also ``index_median`` and
    ``index_mad`` (``index, y, x`` float32) of each observation's index values, from the same
    pass over the ring; indices the state's bands lack are skipped and listed in the attribute
    ``indices_skipped``."""
    ring, n_obs = _state_parts(state)
    plan = index_plan(indices, [str(b) for b in ring["band"].values]) if indices else None
    if plan is None:
        median, mad, count = xr.apply_ufunc(
            state_baseline_np, ring, n_obs,
            input_core_dims=[["k", "band"], []],
            output_core_dims=[["band"], ["band"], []],
            dask="parallelized",
            output_dtypes=[np.float32, np.float32, np.int16],
        )
    else:
        median, mad, count, imedian, imad = xr.apply_ufunc(
            state_baseline_np, ring, n_obs, kwargs={"index": plan},
            input_core_dims=[["k", "band"], []],
            output_core_dims=[["band"], ["band"], [], ["index"], ["index"]],
            dask="parallelized",
            output_dtypes=[np.float32, np.float32, np.int16, np.float32, np.float32],
            dask_gufunc_kwargs={"output_sizes": {"index": len(plan.names)}},
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
