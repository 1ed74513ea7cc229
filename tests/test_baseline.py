"""Tests for sitewatch.kernels.baseline: per-pixel median/MAD/count of clear observations."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.baseline import BaselineParams, baseline_np, robust_baseline

BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _random_stack(seed: int = 0, t: int = 7, h: int = 120, w: int = 150, p_clear: float = 0.6):
    """uint16 stack (time, band, y, x) and clear mask (time, y, x) with some never-clear pixels."""
    rng = np.random.default_rng(seed)
    values = rng.integers(200, 6000, size=(t, len(BANDS), h, w), dtype=np.uint16)
    # a few duplicated values so ties in the sort are exercised
    values[:, :, :10, :10] = rng.integers(1000, 1003, size=(t, len(BANDS), 10, 10), dtype=np.uint16)
    clear = rng.random((t, h, w)) < p_clear
    clear[:, 5:9, 20:30] = False  # never clear: 40 pixels
    clear[:, 40, :] = True  # always clear (t obs)
    clear[1:, 41, :] = True  # t - 1 obs (other parity)
    clear[0, 41, :] = False
    return values, clear


def _as_xr(values: np.ndarray, clear: np.ndarray):
    t, _, h, w = values.shape
    stack = xr.DataArray(
        values,
        dims=("time", "band", "y", "x"),
        coords={"band": BANDS, "time": np.arange(t), "y": np.arange(h) * 10.0, "x": np.arange(w) * 10.0},
        attrs={"site": "test-site"},
    )
    clear_da = xr.DataArray(clear, dims=("time", "y", "x"), coords={"time": stack.time, "y": stack.y, "x": stack.x})
    return stack, clear_da


def _nan_reference(values: np.ndarray, clear: np.ndarray):
    """Median / MAD by np.nanmedian over the clear observations, (band, y, x) float32."""
    v = values.astype(np.float32)
    masked = np.where(clear[:, None, :, :], v, np.float32(np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices for never-clear pixels
        med = np.nanmedian(masked, axis=0)
        mad = np.nanmedian(np.abs(masked - med[None]), axis=0)
    return med.astype(np.float32), mad.astype(np.float32), clear.sum(axis=0)


# ---------------------------------------------------------------- hand-computed


def test_hand_computed_odd_and_even_counts():
    # one pixel row of 3 pixels, 5 times, 2 bands (core dims last: (x, time, band))
    vals = np.array(
        [
            # pixel 0: all 5 clear; band0 = 4, 1, 9, 100, 2 -> sorted 1 2 4 9 100 -> median 4
            [[4, 10], [1, 10], [9, 10], [100, 10], [2, 10]],
            # pixel 1: clear at t = 0..3 -> band0 1, 3, 10, 7 -> median 5; |d| = 4 2 5 2 -> MAD 3
            [[1, 0], [3, 2], [10, 4], [7, 6], [999, 999]],
            # pixel 2: never clear
            [[5, 5], [5, 5], [5, 5], [5, 5], [5, 5]],
        ],
        dtype=np.uint16,
    )
    clear = np.array(
        [[True] * 5, [True, True, True, True, False], [False] * 5],
    )
    med, mad, count = baseline_np(vals, clear)
    assert med.dtype == np.float32 and mad.dtype == np.float32 and count.dtype == np.int16
    assert med.shape == (3, 2) and count.shape == (3,)
    # pixel 0: band0 median 4, deviations 0 3 5 96 2 -> sorted 0 2 3 5 96 -> MAD 3; band1 constant
    assert med[0].tolist() == [4.0, 10.0]
    assert mad[0].tolist() == [3.0, 0.0]
    # pixel 1: band1 0 2 4 6 -> median 3, |d| 3 1 1 3 -> MAD 2 (the unclear 999 ignored)
    assert med[1].tolist() == [5.0, 3.0]
    assert mad[1].tolist() == [3.0, 2.0]
    assert count.tolist() == [5, 4, 0]
    assert np.isnan(med[2]).all() and np.isnan(mad[2]).all()


def test_even_count_median_is_half_integer():
    vals = np.array([[[1001], [1000]]], dtype=np.uint16)  # (pixel, time, band)
    med, mad, count = baseline_np(vals, np.ones((1, 2), bool))
    assert med[0, 0] == np.float32(1000.5)
    assert mad[0, 0] == np.float32(0.5)
    assert count[0] == 2


def test_single_clear_observation_has_zero_mad():
    vals = np.array([[[7, 8], [300, 400], [9, 9]]], dtype=np.float64)
    med, mad, count = baseline_np(vals, np.array([[False, True, False]]))
    assert med[0].tolist() == [300.0, 400.0]
    assert mad[0].tolist() == [0.0, 0.0]
    assert count[0] == 1


def test_matches_nanmedian_on_masked_data():
    values, clear = _random_stack(seed=3)
    ref_med, ref_mad, ref_count = _nan_reference(values, clear)
    stack, clear_da = _as_xr(values, clear)
    out = robust_baseline(stack, clear_da)
    assert out["median"].dims == ("band", "y", "x")
    assert out["mad"].dims == ("band", "y", "x")
    assert out["count"].dims == ("y", "x")
    assert out["median"].dtype == np.float32 and out["count"].dtype == np.int16
    np.testing.assert_array_equal(out["count"].values, ref_count)
    np.testing.assert_array_equal(out["median"].values, ref_med)  # NaN positions must agree too
    np.testing.assert_array_equal(out["mad"].values, ref_mad)
    never = ~clear.any(axis=0)
    assert never[5:9, 20:30].all() and never.sum() >= 40
    assert np.isnan(out["median"].values[:, never]).all()
    assert np.isnan(out["mad"].values[:, never]).all()
    assert (out["count"].values[never] == 0).all()
    assert not np.isnan(out["median"].values[:, ~never]).any()
    # rows with known counts
    assert (out["count"].values[40] == values.shape[0]).all()
    assert (out["count"].values[41] == values.shape[0] - 1).all()
    assert out.attrs == {"site": "test-site"}
    assert list(out["band"].values) == BANDS


def test_float_input_dtypes_agree():
    values, clear = _random_stack(seed=4, t=5, h=50, w=40)
    vals = np.moveaxis(values, (0, 1), (-2, -1))  # (y, x, time, band)
    cl = np.moveaxis(clear, 0, -1)
    a = baseline_np(vals, cl)
    b = baseline_np(vals.astype(np.float64), cl)
    c = baseline_np(vals.astype(np.float32), cl.astype(np.uint8))
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


# ---------------------------------------------------------------- numpy vs xarray vs dask


def test_numpy_kernel_equals_xarray_eager():
    values, clear = _random_stack(seed=5)
    stack, clear_da = _as_xr(values, clear)
    out = robust_baseline(stack, clear_da)
    med, mad, count = baseline_np(np.moveaxis(values, (0, 1), (-2, -1)), np.moveaxis(clear, 0, -1))
    np.testing.assert_array_equal(out["median"].values, np.moveaxis(med, -1, 0))
    np.testing.assert_array_equal(out["mad"].values, np.moveaxis(mad, -1, 0))
    np.testing.assert_array_equal(out["count"].values, count)


def test_band_time_order_does_not_matter():
    # the analysis passes stacks as (band, time, y, x)
    values, clear = _random_stack(seed=6, t=6, h=50, w=50)
    stack, clear_da = _as_xr(values, clear)
    a = robust_baseline(stack, clear_da)
    b = robust_baseline(stack.transpose("band", "time", "y", "x"), clear_da.transpose("y", "time", "x"))
    for v in ("median", "mad", "count"):
        assert b[v].dims == a[v].dims
        assert np.array_equal(a[v].values, b[v].values, equal_nan=True)


@pytest.mark.parametrize(
    "stack_chunks, clear_chunks",
    [
        ({"time": (2, 3, 2), "band": (1, 3), "y": 37, "x": 53}, {"time": 3, "y": 37, "x": 53}),
        ({"time": 4, "band": 2, "y": (50, 13, 57), "x": (90, 17, 43)}, {"time": -1, "y": 41, "x": (20, 130)}),
    ],
)
def test_dask_uneven_chunks_identical_to_numpy(stack_chunks, clear_chunks):
    values, clear = _random_stack(seed=7)
    stack, clear_da = _as_xr(values, clear)
    eager = robust_baseline(stack, clear_da)
    lazy = robust_baseline(stack.chunk(stack_chunks), clear_da.chunk(clear_chunks))
    for v in ("median", "mad", "count"):
        assert isinstance(lazy[v].data, da.Array), v
        assert lazy[v].dtype == eager[v].dtype
        computed = lazy[v].compute()
        assert computed.dims == eager[v].dims
        assert np.array_equal(computed.values, eager[v].values, equal_nan=True), v


def test_dask_stack_with_numpy_clear_and_threads():
    values, clear = _random_stack(seed=8, t=6, h=90, w=70)
    stack, clear_da = _as_xr(values, clear)
    eager = robust_baseline(stack, clear_da)
    with dask.config.set(scheduler="threads"):
        lazy = robust_baseline(stack.chunk({"y": 37, "x": 29}), clear_da).compute()
    for v in ("median", "mad", "count"):
        assert np.array_equal(lazy[v].values, eager[v].values, equal_nan=True), v


# ---------------------------------------------------------------- no mutation


def test_inputs_not_mutated():
    values, clear = _random_stack(seed=9, t=6, h=50, w=30)
    # float32 contiguous core-last input is the case where the kernel could work in place
    vals = np.ascontiguousarray(np.moveaxis(values, (0, 1), (-2, -1)).astype(np.float32))
    cl = np.ascontiguousarray(np.moveaxis(clear, 0, -1))
    v0, c0 = vals.copy(), cl.copy()
    baseline_np(vals, cl)
    np.testing.assert_array_equal(vals, v0)
    np.testing.assert_array_equal(cl, c0)

    stack, clear_da = _as_xr(values, clear)
    s0, k0 = stack.copy(deep=True), clear_da.copy(deep=True)
    robust_baseline(stack, clear_da)
    robust_baseline(stack.chunk({"y": 7}), clear_da.chunk({"x": 11})).compute()
    xr.testing.assert_identical(stack, s0)
    xr.testing.assert_identical(clear_da, k0)


# ---------------------------------------------------------------- bad input


def test_params_validation():
    assert BaselineParams().window == 8
    assert BaselineParams(window=1).window == 1
    with pytest.raises(ValueError, match="window"):
        BaselineParams(window=0)
    with pytest.raises(ValueError, match="window"):
        BaselineParams(window=-3)


def test_baseline_np_bad_shapes():
    with pytest.raises(ValueError, match="values"):
        baseline_np(np.zeros(5), np.ones(5, bool))
    with pytest.raises(ValueError, match="clear"):
        baseline_np(np.zeros((4, 5, 3)), np.ones((4, 6), bool))
    with pytest.raises(ValueError, match="clear"):
        baseline_np(np.zeros((4, 5, 3)), np.ones((4, 5, 3), bool))


def test_robust_baseline_bad_dims():
    values, clear = _random_stack(seed=10, t=3, h=50, w=30)
    stack, clear_da = _as_xr(values, clear)
    with pytest.raises(ValueError, match="stack dims"):
        robust_baseline(stack.isel(band=0), clear_da)
    with pytest.raises(ValueError, match="stack dims"):
        robust_baseline(stack.rename(time="date"), clear_da)
    with pytest.raises(ValueError, match="clear dims"):
        robust_baseline(stack, clear_da.isel(time=0))
    with pytest.raises(ValueError, match="clear dims"):
        robust_baseline(stack, clear_da.expand_dims(band=2))
