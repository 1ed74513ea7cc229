"""Tests for sitewatch.kernels.masks: the spectral + temporal rules for cloud and shadow, opening,
regrowth, buffer, edge behaviour and per-date normalisation, on painted scenes. Chunked and dask
runs, the rough obscured guess and input validation: tests/test_masks_chunks.py."""

from __future__ import annotations

from dataclasses import replace

import dask
import dask.array as da
import numpy as np
import pytest

from sitewatch.kernels.masks import masks, masks_np
from mask_scenes import (  # tests/ is on sys.path
    ALL_BANDS, HAZE_DELTA, LAND, P, P0, SHADOW, SNOW, SOIL_DELTA, THICK, WATER, _background, _dilate, _paint, _rect, _to_baseline_ds, _to_ds,
)


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield



def test_bright_flat_blob_is_cloud_exactly_with_buffer():
    bands, valid, _, _ = _background(60, 70, seed=None)
    _paint(bands, slice(10, 22), slice(20, 45), THICK)  # 12 x 25 > 9 px opening
    blob = _rect(60, 70, slice(10, 22), slice(20, 45))
    cloud, shadow = masks_np(bands, valid, params=P0)
    np.testing.assert_array_equal(cloud, blob)
    assert not shadow.any()
    cloud, _ = masks_np(bands, valid, params=P)  # buffer 4
    np.testing.assert_array_equal(cloud, _rect(60, 70, slice(6, 26), slice(16, 49)))


@pytest.mark.parametrize("buffer_px", [0, 1, 4])
def test_buffer_dilates_by_buffer_px(buffer_px):
    bands, valid, _, _ = _background(80, 80, seed=1)
    core = np.zeros((80, 80), bool)
    core[20:35, 15:40] = True
    core[50:70, 50:62] = True
    _paint(bands, slice(20, 35), slice(15, 40), THICK)
    _paint(bands, slice(50, 70), slice(50, 62), THICK)
    cloud, _ = masks_np(bands, valid, params=replace(P, buffer_px=buffer_px))
    np.testing.assert_array_equal(cloud, _dilate(core, buffer_px))
    assert cloud.sum() == (15 + 2 * buffer_px) * (25 + 2 * buffer_px) + (20 + 2 * buffer_px) * (12 + 2 * buffer_px)


def test_narrow_and_aircraft_like_objects_are_not_cloud():
    bands, valid, _, _ = _background(80, 80, seed=2)
    _paint(bands, slice(10, 13), slice(10, 13), THICK)  # 3 x 3 aircraft
    _paint(bands, slice(30, 38), slice(5, 75), THICK)  # 8 px wide: narrower than the 9 px opening
    _paint(bands, slice(50, 78), slice(40, 47), THICK)  # 7 px wide
    cloud, shadow = masks_np(bands, valid, params=P)
    assert not cloud.any()
    assert not shadow.any()
    # the same objects survive a small opening: it is the opening that removes them
    cloud1, _ = masks_np(bands, valid, params=replace(P0, min_width_px=1, grow_px=0))
    assert cloud1[10:13, 10:13].all() and cloud1[30:38, 5:75].all() and cloud1[50:78, 40:47].all()
    assert cloud1.sum() == 9 + 8 * 70 + 28 * 7
    cloud0, _ = masks_np(bands, valid, params=replace(P0, min_width_px=0))
    assert cloud0.sum() == 9 + 8 * 70 + 28 * 7


def test_exactly_min_width_survives():
    bands, valid, _, _ = _background(50, 50, seed=3)
    _paint(bands, slice(5, 14), slice(10, 40), THICK)  # exactly 2 * 4 + 1 = 9 rows
    _paint(bands, slice(30, 38), slice(10, 40), THICK)  # 8 rows: one too few
    cloud, _ = masks_np(bands, valid, params=P0)
    np.testing.assert_array_equal(cloud, _rect(50, 50, slice(5, 14), slice(10, 40)))


def test_snow_is_not_thick_cloud():
    bands, valid, _, _ = _background(50, 50, seed=4)
    _paint(bands, slice(5, 45), slice(5, 45), SNOW)
    cloud, shadow = masks_np(bands, valid, params=P)
    assert not cloud.any() and not shadow.any()


def test_thin_haze_is_cloud_but_soil_is_not():
    h, w = 90, 90
    bands, valid, baseline, count = _background(h, w, seed=5)
    _paint(bands, slice(10, 40), slice(10, 40), delta=HAZE_DELTA, baseline=baseline)
    _paint(bands, slice(50, 80), slice(50, 80), delta=SOIL_DELTA, baseline=baseline)
    cloud, shadow = masks_np(bands, valid, baseline, count, P)
    np.testing.assert_array_equal(cloud, _rect(h, w, slice(6, 44), slice(6, 44)))
    assert not shadow.any()
    # the haze is too faint for the single-date rules
    cloud_sd, _ = masks_np(bands, valid, params=P)
    assert not cloud_sd.any()


def test_thin_cloud_needs_enough_baseline_observations():
    h, w = 60, 60
    bands, valid, baseline, count = _background(h, w, seed=6)
    _paint(bands, slice(10, 40), slice(10, 40), delta=HAZE_DELTA, baseline=baseline)
    count[:] = 2  # below min_obs = 3
    cloud, _ = masks_np(bands, valid, baseline, count, P)
    assert not cloud.any()
    cloud, _ = masks_np(bands, valid, baseline, count, replace(P, min_obs=2))
    assert cloud[10:40, 10:40].all()


def test_shadow_over_land_not_over_water():
    h, w = 100, 100
    bands, valid, baseline, count = _background(h, w, seed=7)
    # water in the right half (clear-sky baseline NIR 0.03 < land_nir)
    for b in ALL_BANDS:
        baseline[b][:, 50:] = WATER[b]
        bands[b][:, 50:] = WATER[b]
    # darken a land patch and a water patch the same relative amount
    _paint(bands, slice(20, 40), slice(10, 35), SHADOW)
    for b in ALL_BANDS:
        bands[b][60:80, 60:85] = (WATER[b] * 0.3)
    cloud, shadow = masks_np(bands, valid, baseline, count, P)
    assert not cloud.any()
    np.testing.assert_array_equal(shadow, _rect(h, w, slice(16, 44), slice(6, 39)))
    # no baseline: no temporal shadow test at all
    _, shadow_sd = masks_np(bands, valid, params=P)
    assert not shadow_sd.any()


def test_shadow_needs_all_of_nir_swir_and_red_dark():
    h, w = 60, 60
    bands, valid, baseline, count = _background(h, w, seed=8)
    partial = dict(SHADOW, red=LAND["red"])  # red not darkened
    _paint(bands, slice(10, 40), slice(10, 40), partial)
    _, shadow = masks_np(bands, valid, baseline, count, P)
    assert not shadow.any()
    # the same patch with red darkened too is shadow: it is the red test that rejects it
    _paint(bands, slice(10, 40), slice(10, 40), SHADOW)
    _, shadow = masks_np(bands, valid, baseline, count, P0)
    np.testing.assert_array_equal(shadow, _rect(h, w, slice(10, 40), slice(10, 40)))


def test_shadow_is_removed_under_buffered_cloud():
    h, w = 80, 80
    bands, valid, baseline, count = _background(h, w, seed=9)
    _paint(bands, slice(10, 30), slice(10, 30), THICK)
    _paint(bands, slice(10, 30), slice(30, 60), SHADOW)  # shadow adjacent to the cloud
    cloud, shadow = masks_np(bands, valid, baseline, count, P)
    np.testing.assert_array_equal(cloud, _rect(h, w, slice(6, 34), slice(6, 34)))
    expected_shadow = _rect(h, w, slice(6, 34), slice(26, 64)) & ~cloud
    np.testing.assert_array_equal(shadow, expected_shadow)
    assert not (cloud & shadow).any()


def test_invalid_pixels_never_flagged():
    h, w = 100, 100
    bands, valid, baseline, count = _background(h, w, seed=10)
    _paint(bands, slice(10, 40), slice(10, 60), THICK)
    _paint(bands, slice(60, 90), slice(10, 60), SHADOW)
    valid[:, 30:35] = False  # a no-data strip through both
    valid[0:5, :] = False
    cloud, shadow = masks_np(bands, valid, baseline, count, P)
    assert not cloud[~valid].any()
    assert not shadow[~valid].any()
    # buffers are cut at the invalid rows, the objects themselves remain on valid pixels
    np.testing.assert_array_equal(cloud, _rect(h, w, slice(6, 44), slice(6, 64)) & valid)
    np.testing.assert_array_equal(shadow, _rect(h, w, slice(56, 94), slice(6, 64)) & valid)
    # invalid pixels do not count as cloud for the opening: a blob that is only wide
    # enough including invalid pixels is dropped
    bands2, valid2, _, _ = _background(50, 50, seed=11)
    _paint(bands2, slice(10, 19), slice(10, 40), THICK)
    cloud2, _ = masks_np(bands2, valid2, params=P)
    assert cloud2[10:19, 10:40].all()  # 9 rows: survives while all valid
    valid2[14, :] = False  # splits the 9-row blob into 4 + 4 rows
    cloud2, _ = masks_np(bands2, valid2, params=P)
    assert not cloud2.any()


def test_valid_accepts_non_bool_and_count_ignored_without_baseline():
    bands, valid, _, _ = _background(40, 40, seed=12)
    _paint(bands, slice(5, 25), slice(5, 25), THICK)
    a = masks_np(bands, valid, params=P)
    b = masks_np(bands, valid.astype(np.uint8), params=P)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[0].dtype == bool and a[1].dtype == bool
    assert a[0][5:25, 5:25].all()


# ---------------------------------------------------------------- regrowth, edges, norm


def test_regrowth_keeps_fringe_of_big_cloud_and_drops_isolated_thin_blob():
    h, w = 80, 80
    bands, valid, _, _ = _background(h, w, seed=15)
    core = _rect(h, w, slice(20, 40), slice(20, 40))
    _paint(bands, slice(20, 40), slice(20, 40), THICK)  # big cloud core
    _paint(bands, slice(40, 52), slice(28, 30), THICK)  # 2 px wide, 12 px long fringe below it
    _paint(bands, slice(25, 28), slice(40, 44), THICK)  # 3 x 4 arm on its right side
    _paint(bands, slice(60, 66), slice(10, 70), THICK)  # isolated 6 px wide blob, 20 px away
    kept = core | _rect(h, w, slice(40, 46), slice(28, 30)) | _rect(h, w, slice(25, 28), slice(40, 44))
    cloud, _ = masks_np(bands, valid, params=P0)
    # the fringe regrows up to grow_px = 6 rows beyond the core, no further; the arm is kept whole
    np.testing.assert_array_equal(cloud, kept)
    assert not cloud[46:52].any() and not cloud[60:66].any()
    # without regrowth the opening leaves the bare core
    cloud_nogrow, _ = masks_np(bands, valid, params=replace(P0, grow_px=0))
    np.testing.assert_array_equal(cloud_nogrow, core)
    # more regrowth takes more of the fringe but never the isolated blob (not a core)
    cloud_grow, _ = masks_np(bands, valid, params=replace(P0, grow_px=20))
    np.testing.assert_array_equal(cloud_grow, kept | _rect(h, w, slice(46, 52), slice(28, 30)))
    # the buffer is applied after the regrowth
    cloud_buf, _ = masks_np(bands, valid, params=P)
    np.testing.assert_array_equal(cloud_buf, _dilate(kept, P.buffer_px))


def test_cloud_cut_by_array_edge_is_kept():
    h, w = 50, 70
    bands, valid, _, _ = _background(h, w, seed=16)
    _paint(bands, slice(0, 5), slice(10, 60), THICK)  # 5 rows along the top edge
    _paint(bands, slice(36, 50), slice(0, 6), THICK)  # 6 cols along the left edge, into the corner
    _paint(bands, slice(20, 25), slice(10, 60), THICK)  # the same 5 rows in the interior
    at_edge = _rect(h, w, slice(0, 5), slice(10, 60)) | _rect(h, w, slice(36, 50), slice(0, 6))
    cloud, _ = masks_np(bands, valid, params=P0)
    np.testing.assert_array_equal(cloud, at_edge)  # edge strips kept exactly, interior strip dropped
    cloud, _ = masks_np(bands, valid, params=P)
    np.testing.assert_array_equal(cloud, _dilate(at_edge, P.buffer_px))
    # chunked: blocks on the array edge see the same edge, so dask agrees
    for chunks in ({"y": 25, "x": 35}, {"y": (20, 30), "x": (16, 30, 24)}):
        lazy = masks(_to_ds(bands, valid, chunks), params=P)
        assert isinstance(lazy["cloud"].data, da.Array)
        np.testing.assert_array_equal(lazy["cloud"].values, cloud)


def test_norm_removes_uniform_blue_offset():
    h, w = 40, 40
    bands, valid, baseline, count = _background(h, w, seed=None)
    bands["blue"] = bands["blue"] + np.uint16(300)  # +0.03 in blue: above thin_blue = 0.025
    cloud, shadow = masks_np(bands, valid, baseline, count, P)
    assert cloud.all() and not shadow.any()  # reads as haze without normalisation
    matching = {"blue": (1.0, -300.0)}
    cloud, shadow = masks_np(bands, valid, baseline, count, P, norm=matching)
    assert not cloud.any() and not shadow.any()
    # the norm is per band: the same offset on another band leaves the blue haze
    cloud, _ = masks_np(bands, valid, baseline, count, P, norm={"green": (1.0, -300.0)})
    assert cloud.all()
    # a gain works too: 0.9 * 900 + 60 = 870 DN = baseline blue 600 + 270 (> 250) -> haze;
    # 0.9 * 900 - 210 = 600 -> clear
    cloud, _ = masks_np(bands, valid, baseline, count, P, norm={"blue": (0.9, 60.0)})
    assert cloud.all()
    cloud, _ = masks_np(bands, valid, baseline, count, P, norm={"blue": (0.9, -210.0)})
    assert not cloud.any()
    # the xarray wrapper passes the norm to the blocks, eager and lazy
    ds, bl = _to_ds(bands, valid), _to_baseline_ds(baseline, count)
    assert masks(ds, bl, P)["cloud"].values.all()
    assert not masks(ds, bl, P, norm=matching)["cloud"].values.any()
    lazy = masks(ds.chunk({"y": 17, "x": 23}), bl, P, norm=matching)
    assert isinstance(lazy["cloud"].data, da.Array) and not lazy["cloud"].values.any()
    assert masks(ds.chunk({"y": 17, "x": 23}), bl, P)["cloud"].values.all()


# ---------------------------------------------------------------- numpy vs xarray vs dask
