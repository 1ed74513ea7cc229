"""Tests for sitewatch.kernels.cva: change-vector magnitude, histogram over chunks, Otsu/GMM."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.cva import CVAParams, cva, cva_magnitude, cva_magnitude_np, gmm_threshold, histogram, otsu_threshold

P, H, W = 3, 90, 110


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _pair(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(500, 3000, (P, H, W)).astype(np.uint16)
    y = (x + rng.normal(0, 60, (P, H, W))).clip(1).astype(np.uint16)
    truth = np.zeros((H, W), bool)
    truth[20:35, 30:60] = True
    y[:, truth] += np.uint16(900)
    return x, y, truth


def _da(a):
    return xr.DataArray(a, dims=("band", "y", "x"), coords={"band": ["red", "nir", "swir16"], "y": -10.0 * np.arange(H),
                                                             "x": 10.0 * np.arange(W)}, attrs={"k": 1})


def test_magnitude_np_values_gain_offset_scale_and_use():
    b = np.array([[100, 200], [0, 0]], np.uint16)
    a = np.array([[103, 204], [10, 0]], np.uint16)
    np.testing.assert_allclose(cva_magnitude_np(b, a), [5.0, 10.0])
    # after * gain + offset - before, divided by scale
    np.testing.assert_allclose(cva_magnitude_np(b, a, gain=[1, 0.5], offset=[-3, 98], scale=[1, 2]), [0.0, np.hypot(7.0, 49.0)], atol=1e-4)
    m = cva_magnitude_np(b, a, use=np.array([True, False]))
    assert m[0] == 5.0 and np.isnan(m[1])
    with pytest.raises(ValueError, match="gain"):
        cva_magnitude_np(b, a, gain=[1.0])
    with pytest.raises(ValueError, match="shapes"):
        cva_magnitude_np(b, a[:, :1])


def test_otsu_on_a_bimodal_histogram_splits_the_modes():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(10, 2, 9000), rng.normal(40, 3, 1000)])
    counts, edges = np.histogram(v.clip(0, 60), bins=600, range=(0, 60))
    t = otsu_threshold(counts, edges)
    assert 15 < t < 32  # Otsu leans towards the larger class
    g = gmm_threshold(counts, edges)
    assert 14 < g < 32
    # The mixture crossing sits where the weighted densities meet: far from the big mode's mean.
    assert ((v > g) == (v > 25)).mean() > 0.995
    with pytest.raises(ValueError, match="empty histogram"):
        otsu_threshold(np.zeros(10), np.arange(11.0))


def test_histogram_top_bin_and_nan():
    da_ = xr.DataArray(np.array([[0.5, 1.5, 99.0], [np.nan, 2.5, 2.9]], np.float32), dims=("y", "x"))
    c, e = histogram(da_, 3, 3.0)
    assert c.tolist() == [1, 1, 3] and e.tolist() == [0, 1, 2, 3]
    c2, _ = histogram(da_.chunk({"y": 1, "x": 2}), 3, 3.0)
    assert c2.tolist() == c.tolist()


@pytest.mark.parametrize("method", ["otsu", "gmm"])
def test_cva_numpy_and_dask_uneven_chunks_identical(method):
    x, y, truth = _pair()
    use = np.ones((H, W), bool)
    use[:, :7] = False
    u = xr.DataArray(use, dims=("y", "x"))
    p = CVAParams(method=method, bins=512)
    e = cva(_da(x), _da(y), u, p)
    d = cva(_da(x).chunk({"y": (40, 13, 37), "x": (60, 50)}), _da(y).chunk({"y": 25, "x": (9, 101)}), u.chunk({"y": 50}), p)
    assert d.magnitude.chunks is not None
    assert d.attrs["threshold"] == e.attrs["threshold"]
    np.testing.assert_array_equal(d.magnitude.values, e.magnitude.values)
    np.testing.assert_array_equal(d.change.values, e.change.values)
    assert e.change.values[truth].all() and not e.change.values[~use].any()
    assert e.change.values[~truth].mean() < 0.01
    assert e.attrs["pixels"] == int(use.sum())
    assert list(e.magnitude.dims) == ["y", "x"] and np.array_equal(e.x.values, _da(x).x.values)


def test_cva_inputs_not_mutated_and_fixed_hist_max():
    x, y, _ = _pair(2)
    x0, y0 = x.copy(), y.copy()
    out = cva(_da(x), _da(y), params=CVAParams(hist_max=2000.0))
    assert out.attrs["hist_max"] == 2000.0
    assert np.array_equal(x, x0) and np.array_equal(y, y0)


def test_cva_bad_input():
    x, y, _ = _pair(3)
    with pytest.raises(ValueError, match="band counts"):
        cva(_da(x), _da(y)[:2])
    with pytest.raises(ValueError, match="different grids"):
        cva(_da(x), _da(y).assign_coords(y=-10.0 * np.arange(H) + 1))
    with pytest.raises(ValueError, match="no usable pixel"):
        cva(_da(x), _da(y), xr.DataArray(np.zeros((H, W), bool), dims=("y", "x")))
    with pytest.raises(ValueError, match="method"):
        CVAParams(method="kmeans")
    with pytest.raises(ValueError, match="use dims"):
        cva_magnitude(_da(x), _da(y), xr.DataArray(np.ones(H, bool), dims=("y",)))
