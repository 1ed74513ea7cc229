"""Tests for sitewatch.kernels.baseline_ring: the per-pixel ring of the last W clear observations."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.baseline import BaselineParams, baseline_np
from sitewatch.kernels.baseline_ring import (
    build_state, empty_state, fold, fold_np, fold_stack_np, state_baseline, state_baseline_np,
)

BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _stack(seed=0, t=11, h=40, w=50, p_clear=0.5):
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 6000, size=(t, len(BANDS), h, w), dtype=np.uint16)
    values[:, :, :5, :5] = rng.integers(1000, 1003, size=(t, len(BANDS), 5, 5), dtype=np.uint16)  # ties
    clear = rng.random((t, h, w)) < p_clear
    clear[:, 0, 10:20] = False  # never clear
    clear[:, 1, :] = True  # always clear
    return values, clear


def _last_w_reference(values, clear, window):
    """baseline_np over each pixel's last ``window`` clear observations, selected by numpy."""
    t = clear.shape[0]
    rank_from_end = np.cumsum(clear[::-1], axis=0)[::-1]  # 1 = the last clear observation
    keep = clear & (rank_from_end <= window)
    return baseline_np(values.transpose(2, 3, 0, 1), keep.transpose(1, 2, 0)), keep.sum(axis=0), t


def _xr(values, clear):
    t, _, h, w = values.shape
    coords = {"time": np.arange(t), "band": BANDS, "y": np.arange(h) * 10.0, "x": np.arange(w) * 10.0}
    stack = xr.DataArray(values, dims=("time", "band", "y", "x"), coords=coords)
    return stack, xr.DataArray(clear, dims=("time", "y", "x"), coords={k: coords[k] for k in ("time", "y", "x")})


def _np_state(values, clear, window):
    _, nb, h, w = values.shape
    ring = np.zeros((h, w, window, nb), np.uint16)
    n = np.zeros((h, w), np.uint32)
    for i in range(values.shape[0]):
        ring, n = fold_np(ring, n, values[i].transpose(1, 2, 0), clear[i])
    return ring, n


@pytest.mark.parametrize("window", [1, 3, 8, 20])
def test_folding_one_by_one_equals_baseline_of_last_w_clear(window):
    values, clear = _stack()
    ring, n = _np_state(values, clear, window)
    (med_ref, mad_ref, count_ref), n_keep, _ = _last_w_reference(values, clear, window)
    med, mad, count = state_baseline_np(ring, n)
    np.testing.assert_array_equal(n, clear.sum(axis=0))
    np.testing.assert_array_equal(count, np.minimum(clear.sum(axis=0), window))
    np.testing.assert_array_equal(count, count_ref)
    np.testing.assert_array_equal(med, med_ref)  # bitwise, NaN where never clear
    np.testing.assert_array_equal(mad, mad_ref)
    assert np.isnan(med[0, 10:20]).all() and (count[0, 10:20] == 0).all()


def test_window_larger_than_history_equals_plain_baseline():
    values, clear = _stack(seed=4, t=6)
    ring, n = _np_state(values, clear, 8)
    ref = baseline_np(values.transpose(2, 3, 0, 1), clear.transpose(1, 2, 0))
    for got, want in zip(state_baseline_np(ring, n), ref):
        np.testing.assert_array_equal(got, want)


def test_ring_overwrites_oldest_and_keeps_empty_zero():
    ring = np.zeros((1, 3, 1), np.uint16)
    n = np.zeros(1, np.uint32)
    seen = []
    for v in (10, 20, 30, 40, 50):
        ring, n = fold_np(ring, n, np.array([[v]], np.uint16), np.array([True]))
        seen.append(sorted(ring[0, :, 0].tolist()))
    assert seen == [[0, 0, 10], [0, 10, 20], [10, 20, 30], [20, 30, 40], [30, 40, 50]]
    assert int(n[0]) == 5
    ring2, n2 = fold_np(ring, n, np.array([[99]], np.uint16), np.array([False]))  # not clear: unchanged
    np.testing.assert_array_equal(ring2, ring)
    assert int(n2[0]) == 5


def test_stack_fold_equals_one_by_one_and_inputs_not_mutated():
    values, clear = _stack(seed=2)
    ring0, n0 = _np_state(values[:4], clear[:4], 5)
    keep = (ring0.copy(), n0.copy(), values.copy(), clear.copy())
    ring_a, n_a = fold_stack_np(ring0, n0, values[4:].transpose(2, 3, 0, 1), clear[4:].transpose(1, 2, 0))
    ring_b, n_b = _np_state(values, clear, 5)
    np.testing.assert_array_equal(ring_a, ring_b)
    np.testing.assert_array_equal(n_a, n_b)
    for a, b in zip(keep, (ring0, n0, values, clear)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunks", [{"y": 13, "x": 17}, {"y": 40, "x": 7}])
def test_xarray_numpy_and_dask_uneven_chunks_identical(chunks):
    values, clear = _stack(seed=5)
    stack, clear_da = _xr(values, clear)
    params = BaselineParams(window=4)
    eager = build_state(stack[:7], clear_da[:7], params)
    for i in range(7, values.shape[0]):
        eager = fold(eager, stack[i], clear_da[i])
    lazy = build_state(stack[:7].chunk(chunks), clear_da[:7].chunk({"y": 9, "x": 23}), params)
    for i in range(7, values.shape[0]):
        lazy = fold(lazy, stack[i].chunk(chunks), clear_da[i])
    assert lazy["ring"].chunks is not None
    b_eager, b_lazy = state_baseline(eager), state_baseline(lazy.chunk({"y": 11}))
    assert b_lazy["median"].chunks is not None
    xr.testing.assert_identical(eager.compute(), lazy.compute())
    xr.testing.assert_identical(b_eager, b_lazy.compute())
    ref, _, _ = _last_w_reference(values, clear, 4)
    np.testing.assert_array_equal(b_eager["median"].values, ref[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(b_eager["count"].values, ref[2])
    assert b_eager["median"].dims == ("band", "y", "x") and list(b_eager["band"].values) == BANDS
    np.testing.assert_array_equal(b_eager["x"].values, stack["x"].values)


def test_empty_state_has_no_baseline():
    values, clear = _stack(t=1)
    stack, _ = _xr(values, clear)
    st = empty_state(stack.isel(time=0, band=0, drop=True).chunk({"y": 7}), BANDS, BaselineParams(window=3))
    assert st["ring"].shape == (3, len(BANDS), 40, 50) and st["ring"].chunks is not None
    b = state_baseline(st).compute()
    assert np.isnan(b["median"].values).all() and (b["count"].values == 0).all()


def test_bad_inputs_are_named():
    ring = np.zeros((2, 2, 3, 4), np.uint16)
    n = np.zeros((2, 2), np.uint32)
    with pytest.raises(ValueError, match="clear value"):
        fold_np(ring, n, np.zeros((2, 2, 4), np.uint16), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="dtype"):
        fold_np(ring, n, np.ones((2, 2, 4), np.float32), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="values got shape"):
        fold_np(ring, n, np.ones((2, 2, 5), np.uint16), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="n_obs got shape"):
        state_baseline_np(ring, np.zeros((3, 2), np.uint32))
    with pytest.raises(ValueError, match="ring got dtype"):
        state_baseline_np(ring.astype(np.int32), n)
    values, clear = _stack(t=2)
    stack, clear_da = _xr(values, clear)
    st = build_state(stack, clear_da, BaselineParams(window=2))
    with pytest.raises(ValueError, match="bands got"):
        fold(st, stack[0].isel(band=[1, 0, 2, 3]), clear_da[0])
    with pytest.raises(ValueError, match="values dims"):
        fold(st, stack[0].rename(band="b"), clear_da[0])
