"""Tests for sitewatch.kernels.irmad: IR-MAD (Nielsen 2007) with global moments over dask chunks."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.irmad import (
    IRMADParams,
    apply_fit_np,
    consistency,
    irmad,
    irmad_np,
    merge_moments,
    moments_np,
)

P, H, W = 4, 120, 150
CHANGE = (slice(40, 52), slice(60, 75))  # 12 x 15 = 180 px


def _pair(seed: int = 0, gain=(1.0,) * P, offset=(0.0,) * P):
    """A landscape of patches mixing 3 endmembers (bands correlated like real spectra), seen on
    two dates with independent noise (sigma 40 DN); date 2 has ``gain``/``offset`` per band and
    a bright change in ``CHANGE``."""
    rng = np.random.default_rng(seed)
    ends = np.array([[400, 600, 500, 3500], [1200, 1600, 2000, 2600], [2500, 2700, 2800, 3000]], np.float64)
    frac = rng.dirichlet((1.0, 1.0, 1.0), size=(H // 6 + 1, W // 6 + 1))
    frac = np.repeat(np.repeat(frac, 6, 0), 6, 1)[:H, :W]
    surface = np.einsum("hwk,kb->bhw", frac, ends) + rng.normal(0, 150, (P, H, W))
    x = surface + rng.normal(0, 40, (P, H, W))
    y = surface + rng.normal(0, 40, (P, H, W))
    y[:, CHANGE[0], CHANGE[1]] += np.array([1500, 1400, 1300, -800])[:, None, None]
    y = y * np.asarray(gain)[:, None, None] + np.asarray(offset)[:, None, None]
    truth = np.zeros((H, W), bool)
    truth[CHANGE] = True
    return x, y, truth


def _da(a: np.ndarray) -> xr.DataArray:
    return xr.DataArray(a, dims=("band", "y", "x"), coords={"band": list("abcd"), "y": np.arange(H) * -10.0, "x": np.arange(W) * 10.0})


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def test_moments_merge_equals_whole():
    rng = np.random.default_rng(1)
    z = rng.normal(1000, 300, (500, 3))
    w = rng.uniform(0, 1, 500)
    whole = moments_np(z, w)
    merged = merge_moments(merge_moments(moments_np(z[:70], w[:70]), moments_np(z[70:71], w[70:71])), moments_np(z[71:], w[71:]))
    assert merged[0] == pytest.approx(whole[0], rel=1e-12)
    np.testing.assert_allclose(merged[1], whole[1], rtol=1e-12)
    np.testing.assert_allclose(merged[2], whole[2], rtol=1e-10)
    np.testing.assert_allclose(whole[2] / whole[0], np.cov(z.T, aweights=w, bias=True), rtol=1e-10)


def test_finds_the_injected_change_and_few_false_alarms():
    x, y, truth = _pair()
    fit, (mad, chi2, pnc, change) = irmad_np(x, y)
    assert fit.converged and fit.iterations >= 2
    assert np.all(np.diff(fit.rho) >= -1e-12)  # MAD 1 = least correlated
    assert change[truth].mean() == 1.0
    # The 0.999 quantile: ~0.1 % of the 17820 unchanged pixels expected; allow 3x.
    assert change[~truth].sum() <= 3 * 0.001 * (~truth).sum()
    assert pnc[truth].max() < 1e-6 and np.median(pnc[~truth]) > 0.3
    # The consistency-corrected chi2 has the chi-square(4) mean on unchanged pixels.
    assert chi2[~truth].mean() == pytest.approx(P, rel=0.1)
    assert mad.shape == (P, H, W)


def test_invariant_to_gain_and_offset_of_one_date():
    x, y, truth = _pair(2)
    g, o = np.array([0.8, 1.1, 1.25, 0.95]), np.array([300.0, -120.0, 55.0, 900.0])
    _, (_, c1, _, ch1) = irmad_np(x, y)
    _, (_, c2, _, ch2) = irmad_np(x, y * g[:, None, None] + o[:, None, None])
    np.testing.assert_allclose(c2, c1, rtol=1e-4, atol=1e-4)
    assert np.array_equal(ch1, ch2)


def test_numpy_and_dask_uneven_chunks_agree():
    """Global moments are float64 sums merged per chunk: the chunking changes only rounding.
    Stated tolerance: canonical correlations 1e-10 absolute, chi2 1e-5 relative (float32)."""
    x, y, truth = _pair(3)
    use = np.ones((H, W), bool)
    use[:10] = False
    use[70:80, 5:40] = False
    ds_np, fit_np = irmad(_da(x), _da(y), xr.DataArray(use, dims=("y", "x")))
    ch = {"y": (50, 7, 63), "x": (80, 70)}
    ds_dk, fit_dk = irmad(_da(x).chunk(ch), _da(y).chunk({"y": (33, 87), "x": (11, 139)}),
                          xr.DataArray(use, dims=("y", "x")).chunk({"y": 45, "x": 100}))
    assert ds_dk.chi2.chunks is not None  # lazy output
    assert fit_np.iterations == fit_dk.iterations
    np.testing.assert_allclose(fit_dk.rho, fit_np.rho, rtol=0, atol=1e-10)
    c_np, c_dk = ds_np.chi2.values, ds_dk.chi2.values
    assert np.array_equal(np.isnan(c_np), np.isnan(c_dk)) and np.isnan(c_np[~use]).all()
    np.testing.assert_allclose(c_dk, c_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds_dk.mad.values, ds_np.mad.values, rtol=1e-5, atol=1e-5)
    assert np.array_equal(ds_dk.change.values, ds_np.change.values)
    assert ds_np.change.values[truth].all() and not ds_np.change.values[~use].any()
    assert ds_np.attrs["pixels"] == int(use.sum())


def test_use_mask_excludes_pixels_and_nan_bands():
    x, y, truth = _pair(4)
    x2 = x.copy()
    x2[1, :, :5] = np.nan
    before = x2.copy()
    use = np.ones((H, W), bool)
    use[truth] = False
    fit, (_, chi2, pnc, change) = irmad_np(x2, y, use)
    assert np.array_equal(x2, before, equal_nan=True)  # not mutated
    assert np.isnan(chi2[:, :5]).all() and np.isnan(chi2[truth]).all() and not change[truth].any()
    assert fit.pixels == int(use[:, 5:].sum())


def test_apply_fit_reproduces_outputs():
    x, y, _ = _pair(5)
    fit, (mad, chi2, pnc, change) = irmad_np(x, y)
    mad2, chi22, _, _ = apply_fit_np(x[:, :30], y[:, :30], None, fit)
    np.testing.assert_array_equal(chi22, chi2[:30])


def test_consistency_factor():
    assert consistency(4, 1) == 1.0
    assert consistency(4, 500) == pytest.approx(0.3028, abs=2e-3)
    assert consistency(4, 3) > consistency(4, 10) > consistency(4, 500)


def test_bad_input_errors():
    x, y, _ = _pair(6)
    with pytest.raises(ValueError, match="band counts"):
        irmad(_da(x), _da(y)[:3])
    with pytest.raises(ValueError, match="different grids"):
        irmad(_da(x), _da(y).assign_coords(x=np.arange(W) * 10.0 + 5))
    with pytest.raises(ValueError, match="usable pixels"):
        use = np.zeros((H, W), bool)
        use[:5, :5] = True
        irmad(_da(x), _da(y), xr.DataArray(use, dims=("y", "x")))
    with pytest.raises(ValueError, match="dims"):
        irmad(_da(x).rename(band="b"), _da(y))
    with pytest.raises(ValueError, match="singular"):
        x2 = x.copy()
        x2[1] = 7.0  # a constant band
        irmad_np(x2, y)
    with pytest.raises(ValueError, match="quantile"):
        IRMADParams(quantile=1.0)
