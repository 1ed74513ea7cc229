"""Tests for sitewatch.kernels.shadow (cloud projection along the sun direction) and its use
in sitewatch.kernels.masks (projected shadows)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.masks import FLAG_CLOUD, FLAG_SHADOW, MaskParams, mask_layers_np, masks
from sitewatch.kernels.shadow import Geometry, ShadowParams, match, match_np, project, project_np, window

SP = ShadowParams()


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _cast(cloud: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """The cloud moved by ``offset`` (rows, cols), off-array pixels dropped, minus the cloud."""
    out = np.zeros_like(cloud)
    src = np.argwhere(cloud)
    dst = src + np.array(offset)
    ok = (dst >= 0).all(axis=1) & (dst[:, 0] < cloud.shape[0]) & (dst[:, 1] < cloud.shape[1])
    out[dst[ok, 0], dst[ok, 1]] = True
    return out & ~cloud


def _lazy(a: np.ndarray, chunks) -> xr.DataArray:
    return xr.DataArray(da.from_array(a, chunks=chunks), dims=("y", "x"))


def test_geometry_points_away_from_the_sun():
    # sun due south at 45 deg: 1 px of shadow per 10 m of height, northward (rows decrease)
    g = Geometry.from_sun(180.0, 45.0, 10.0, ShadowParams(heights_m=(100.0, 1000.0)))
    assert g.lengths == (10, 100)
    assert g.offset(50) == (-50, 0)
    g = Geometry.from_sun(90.0, 45.0, 10.0, SP)  # sun in the east: shadows to the west
    assert g.offset(20) == (0, -20)
    g = Geometry.from_sun(315.0, 30.0, 30.0, SP)  # sun in the north-west: shadows to the south-east
    dr, dc = g.offset(100)
    assert dr > 0 and dc > 0 and abs(dr - dc) <= 1
    with pytest.raises(ValueError, match="elevation"):
        Geometry.from_sun(180.0, -5.0, 10.0, SP)
    with pytest.raises(ValueError, match="heights_m"):
        ShadowParams(heights_m=(500.0, 100.0))


def _scene(h=300, w=260, offset_len=80, seed=0):
    rng = np.random.default_rng(seed)
    cloud = np.zeros((h, w), bool)
    cloud[40:90, 130:200] = True
    cloud[150:175, 180:240] = True
    g = Geometry.from_sun(150.0, 35.0, 10.0, SP)
    shadow = _cast(cloud, g.offset(offset_len))
    dark = shadow | (rng.random((h, w)) < 0.05)  # plus 5 % of scattered dark pixels
    return cloud, dark, np.ones((h, w), bool), shadow, g


def test_match_finds_the_shadow_length_numpy_and_dask():
    cloud, dark, valid, shadow, g = _scene()
    best, frac = match_np(cloud, dark, valid, g)
    assert best == 80 and frac == 1.0
    for chunks in (((100, 120, 80), (70, 90, 100)), ((37, 263), (260,))):
        assert match(_lazy(cloud, chunks), _lazy(dark, chunks), _lazy(valid, chunks), g) == (best, frac)


def test_no_match_without_dark_pixels_or_clouds():
    cloud, dark, valid, shadow, g = _scene()
    assert match_np(cloud, np.zeros_like(dark), valid, g) == (None, 0.0)
    assert match_np(np.zeros_like(cloud), dark, valid, g)[0] is None
    # random darkness alone (5 %) is below min_match
    assert match_np(cloud, dark & ~shadow, valid, g)[0] is None


def test_project_recovers_the_shadow_and_dask_equals_numpy():
    cloud, dark, valid, shadow, g = _scene()
    lengths = window(80, g, SP)
    out = project_np(cloud, dark, valid, g, lengths)
    assert out[shadow].all()  # every true shadow pixel
    assert not (out & cloud).any()
    extra = out & ~shadow  # only random dark pixels inside the +-tolerance projection
    assert extra.sum() < 0.05 * shadow.sum()
    valid2 = valid.copy()
    valid2[100:120, :] = False
    ref = project_np(cloud, dark, valid2, g, lengths)
    assert not ref[100:120].any()
    # chunks smaller than the longest shift (rechunked by the overlap) and uneven
    for chunks in (((100, 120, 80), (70, 90, 100)), ((30, 270), (200, 60)), ((300,), (260,))):
        lazy = project(_lazy(cloud, chunks), _lazy(dark, chunks), _lazy(valid2, chunks), g, lengths)
        assert isinstance(lazy.data, da.Array) and lazy.data.chunks == _lazy(cloud, chunks).data.chunks
        np.testing.assert_array_equal(lazy.values, ref)


# ---------------------------------------------------------------- in the mask kernel

LAND = {"blue": 600, "green": 900, "red": 800, "nir": 2500, "swir16": 1800}


def _haze_and_faint_shadow(h=200, w=220, seed=3):
    """Land with a thin cloud (blue +0.04, red +0.02: thin test only) and its faint shadow 60 px
    north-west of it, darkened to 0.92 x the baseline: below the strong shadow test (0.85) but
    within the loose one (0.95)."""
    rng = np.random.default_rng(seed)
    bands = {b: np.rint(v + rng.normal(0, 10, (h, w))).astype(np.uint16) for b, v in LAND.items()}
    baseline = {b: np.full((h, w), v, np.float32) for b, v in LAND.items()}
    count = np.full((h, w), 6, np.int16)
    valid = np.ones((h, w), bool)
    cloud = np.zeros((h, w), bool)
    cloud[110:160, 120:190] = True
    g = Geometry.from_sun(135.0, 40.0, 10.0, SP)  # sun south-east: shadow to the north-west
    length = 60
    shadow = _cast(cloud, g.offset(length))
    for b, d in (("blue", 400), ("green", 300), ("red", 200), ("nir", 100), ("swir16", 50)):
        bands[b][cloud] += np.uint16(d)
    for b in LAND:
        bands[b][shadow] = np.rint(bands[b][shadow] * 0.92).astype(np.uint16)
    return bands, valid, baseline, count, cloud, shadow


def test_projected_shadow_catches_a_faint_shadow_the_strong_test_misses():
    bands, valid, baseline, count, cloud, shadow = _haze_and_faint_shadow()
    p = MaskParams(buffer_px=0)
    plain = mask_layers_np(bands, valid, baseline, count, p)
    assert plain["cloud"][cloud].mean() > 0.99 and not plain["shadow"].any()
    proj = mask_layers_np(bands, valid, baseline, count, p, sun=(135.0, 40.0), resolution=10.0)
    assert proj["shadow_length_px"] is not None and abs(proj["shadow_length_px"] - 60) <= 1
    tp = (proj["shadow"] & shadow).sum()
    assert tp / shadow.sum() > 0.97 and tp / proj["shadow"].sum() > 0.97
    # flags carry the unbuffered layers
    np.testing.assert_array_equal((proj["flags"] & FLAG_SHADOW) > 0, proj["shadow"])
    np.testing.assert_array_equal((proj["flags"] & FLAG_CLOUD) > 0, proj["cloud"])
    # switched off by the parameter; no projection without a baseline
    off = mask_layers_np(bands, valid, baseline, count, MaskParams(buffer_px=0, project_shadows=False), sun=(135.0, 40.0), resolution=10.0)
    assert not off["shadow"].any()
    assert mask_layers_np(bands, valid, params=p, sun=(135.0, 40.0), resolution=10.0)["shadow_length_px"] is None
    with pytest.raises(ValueError, match="resolution"):
        mask_layers_np(bands, valid, baseline, count, p, sun=(135.0, 40.0))


def _ds(bands, valid, chunks=None):
    ds = xr.Dataset({b: (("y", "x"), a) for b, a in bands.items()} | {"valid": (("y", "x"), valid)})
    return ds.chunk(chunks) if chunks else ds


def _bl(baseline, count, chunks=None):
    names = list(LAND)
    ds = xr.Dataset({"median": (("band", "y", "x"), np.stack([baseline[b] for b in names])), "count": (("y", "x"), count)},
                    coords={"band": names})
    return ds.chunk(chunks) if chunks else ds


@pytest.mark.parametrize("chunks", [{"y": (70, 80, 50), "x": (100, 50, 70)}, {"y": 40, "x": 45}])
def test_masks_with_sun_dask_equals_numpy(chunks):
    bands, valid, baseline, count, cloud, shadow = _haze_and_faint_shadow()
    valid[:, :6] = False
    p = MaskParams()
    ref = mask_layers_np(bands, valid, baseline, count, p, sun=(135.0, 40.0), resolution=10.0)
    eager = masks(_ds(bands, valid), _bl(baseline, count), p, sun=(135.0, 40.0), resolution=10.0)
    lazy = masks(_ds(bands, valid, chunks), _bl(baseline, count, chunks), p, sun=(135.0, 40.0), resolution=10.0)
    assert isinstance(lazy["shadow"].data, da.Array)
    for name in ("cloud", "shadow"):
        np.testing.assert_array_equal(eager[name].values, ref[name])
        np.testing.assert_array_equal(lazy[name].values, ref[name])
    np.testing.assert_array_equal(lazy["flags"].values, ref["flags"])
    assert lazy["shadow"].attrs["shadow_length_px"] == ref["shadow_length_px"]
    np.testing.assert_array_equal(lazy["cloud_score"].values, eager["cloud_score"].values)


def test_site_smaller_than_the_longest_shadow_dask_equals_numpy():
    # 200 x 220 px at 10 m with clouds up to 4 km under a 20 deg sun: shadows up to 1100 px long
    bands, valid, baseline, count, cloud, shadow = _haze_and_faint_shadow()
    p = MaskParams()
    ref = mask_layers_np(bands, valid, baseline, count, p, sun=(135.0, 20.0), resolution=10.0)
    lazy = masks(_ds(bands, valid, {"y": 64, "x": 64}), _bl(baseline, count, {"y": 64, "x": 64}), p, sun=(135.0, 20.0), resolution=10.0)
    np.testing.assert_array_equal(lazy["shadow"].values, ref["shadow"])
    np.testing.assert_array_equal(lazy["cloud"].values, ref["cloud"])
