"""Tests for sitewatch.kernels.normalise: orthogonal regression on IR-MAD pseudo-invariant pixels."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.irmad import IRMADParams
from sitewatch.kernels.normalise import NormalisationFit, fit_normalisation, normalise, normalise_np, normalise_to, tls_from_moments

P, H, W = 4, 160, 160
GAIN = np.array([1.08, 0.93, 1.12, 0.96])
OFFSET = np.array([-150.0, 120.0, 60.0, -90.0])


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _scenes(seed: int = 0):
    """Reference and a scene = GAIN * reference surface + OFFSET, plus: a change (20 x 20 px),
    haze over the left quarter (additive, stronger in blue), noise sigma 30 DN on both."""
    rng = np.random.default_rng(seed)
    ends = np.array([[400, 600, 500, 3500], [1200, 1600, 2000, 2600], [2500, 2700, 2800, 3000], [300, 350, 300, 200]], float)
    frac = rng.dirichlet((0.7,) * 4, size=(H // 8, W // 8))
    frac = np.repeat(np.repeat(frac, 8, 0), 8, 1)
    surface = np.einsum("hwk,kb->bhw", frac, ends) + rng.normal(0, 120, (P, H, W))
    ref = surface + rng.normal(0, 30, (P, H, W))
    s = surface.copy()
    s[:, 100:120, 30:50] += np.array([1500, 1500, 1400, -1500])[:, None, None]  # change
    s[:, :, :40] += np.array([700, 550, 400, 200])[:, None, None]  # haze over a quarter
    scene = s * GAIN[:, None, None] + OFFSET[:, None, None] + rng.normal(0, 30, (P, H, W))
    return ref, scene


def _da(a):
    return xr.DataArray(a.astype(np.float32), dims=("band", "y", "x"),
                        coords={"band": ["blue", "green", "red", "nir"], "y": -10.0 * np.arange(H), "x": 10.0 * np.arange(W)},
                        attrs={"units": "DN"})


def test_tls_recovers_a_line_with_noise_in_both():
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 3000, 20000)
    x = t + rng.normal(0, 100, t.size)
    y = 1.3 * t - 200 + rng.normal(0, 100, t.size)
    z = np.stack([x, y], 1)
    g, o = tls_from_moments(z.mean(0), np.cov(z.T, bias=True), 1)
    assert g[0] == pytest.approx(1.3, rel=0.01) and o[0] == pytest.approx(-200, abs=20)


@pytest.mark.parametrize("chunked", [False, True])
def test_recovers_gain_offset_despite_haze_and_change(chunked):
    ref, scene = _scenes()
    r, s = _da(ref), _da(scene)
    if chunked:
        r, s = r.chunk({"y": (70, 90), "x": 55}), s.chunk({"y": 60, "x": (100, 60)})
    out, nfit, (ds, fit) = normalise_to(s, r, params=IRMADParams(quantile=0.999))
    # The fit maps scene -> reference: gain ~ 1/GAIN, offset ~ -OFFSET/GAIN.
    np.testing.assert_allclose(nfit.gain, 1 / GAIN, rtol=0.01)
    np.testing.assert_allclose(nfit.offset, -OFFSET / GAIN, atol=40)
    pnc = ds.no_change_prob.values
    assert np.nanmax(pnc[:, :40]) < 0.95 and np.nanmax(pnc[100:120, 30:50]) < 0.95  # haze and change are not PIFs
    res = out.values - ref
    assert np.abs(np.median(res[:, :, 50:], axis=(1, 2))).max() < 15  # unhazed part matches the reference
    assert out.dims == s.dims and out.attrs == {"units": "DN"} and out.dtype == np.float32
    assert (out.chunks is not None) == chunked


def test_numpy_and_dask_fits_agree():
    ref, scene = _scenes(2)
    pifs = xr.DataArray(np.ones((H, W), bool), dims=("y", "x"))
    pifs[:, :45] = False
    a = fit_normalisation(_da(scene), _da(ref), pifs)
    b = fit_normalisation(_da(scene).chunk({"y": (7, 153), "x": 70}), _da(ref).chunk({"y": 50}), pifs.chunk({"x": 33}))
    np.testing.assert_allclose(b.gain, a.gain, rtol=1e-10)
    np.testing.assert_allclose(b.offset, a.offset, rtol=1e-9, atol=1e-8)
    assert a.pixels == b.pixels == int(pifs.values.sum())


def test_normalise_np_and_bad_input():
    v = np.array([[100, 200]], np.uint16)
    np.testing.assert_allclose(normalise_np(v, [2.0, 0.5], [1.0, -10.0]), [[201.0, 90.0]])
    ref, scene = _scenes(3)
    with pytest.raises(ValueError, match="invariant pixels"):
        fit_normalisation(_da(scene), _da(ref), xr.DataArray(np.zeros((H, W), bool), dims=("y", "x")))
    with pytest.raises(ValueError, match="band counts"):
        fit_normalisation(_da(scene)[:3], _da(ref), xr.DataArray(np.ones((H, W), bool), dims=("y", "x")))
    with pytest.raises(ValueError, match="band"):
        normalise(_da(scene).isel(band=0), NormalisationFit(np.ones(4), np.zeros(4), 1))
    with pytest.raises(ValueError, match="pif_threshold"):
        normalise_to(_da(scene), _da(ref), pif_threshold=1.5)
