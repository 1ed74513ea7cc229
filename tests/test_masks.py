"""Tests for sitewatch.kernels.masks: spectral + temporal cloud/shadow masks, opening, regrowth,
buffer, edge behaviour, per-date normalisation and the rough obscured guess."""

from __future__ import annotations

from dataclasses import replace

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from sitewatch.kernels.masks import MASK_BANDS, OPTIONAL_MASK_BANDS, MaskParams, masks, masks_np, rough_obscured

ALL_BANDS = MASK_BANDS + OPTIONAL_MASK_BANDS

# Clear-sky land reflectance x 10000 and a water surface.
LAND = {"blue": 600, "green": 900, "red": 800, "nir": 2500, "swir16": 1800}
WATER = {"blue": 500, "green": 600, "red": 400, "nir": 300, "swir16": 150}
THICK = {"blue": 5000, "green": 5000, "red": 5000, "nir": 5200, "swir16": 4000}
# Uniform brightening: blue +800, green +500, red +300 (haze: blue rises most), nir +100.
HAZE_DELTA = {"blue": 800, "green": 500, "red": 300, "nir": 100, "swir16": 50}
# Exposed soil: blue +600, red +1200 (red rises more than blue).
SOIL_DELTA = {"blue": 600, "green": 900, "red": 1200, "nir": 200, "swir16": 900}
SHADOW = {"blue": 400, "green": 500, "red": 500, "nir": 1000, "swir16": 700}
SNOW = {"blue": 6000, "green": 6000, "red": 5800, "nir": 5000, "swir16": 500}

# Every parameter explicit, so the geometry below does not follow the next default tweak:
# a 9 x 9 opening (min_width_px=4), regrowth by up to 6 px, a 4 px buffer.
P = MaskParams(
    bright=0.35, whiteness=0.7, ndsi_snow=0.4, thin_blue=0.025, blue_red_ratio=0.75,
    shadow_ratio=0.85, shadow_ratio_red=0.9, rough_blue=0.06, rough_ratio=0.7, land_nir=0.06,
    min_obs=3, min_width_px=4, grow_px=6, buffer_px=4,
)
P0 = replace(P, buffer_px=0)  # the same without the buffer: masks equal the kept pixels exactly


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _background(h: int, w: int, seed: int | None = 0, noise: float = 20.0):
    """Noisy land scene, its clear-sky baseline (exact land values) and count (5 everywhere)."""
    rng = np.random.default_rng(seed)
    bands = {}
    for b, v in LAND.items():
        n = rng.normal(0.0, noise, (h, w)) if seed is not None else np.zeros((h, w))
        bands[b] = np.rint(v + n).astype(np.uint16)
    baseline = {b: np.full((h, w), v, np.float32) for b, v in LAND.items()}
    count = np.full((h, w), 5, np.int16)
    valid = np.ones((h, w), bool)
    return bands, valid, baseline, count


def _paint(bands, rows, cols, values=None, delta=None, baseline=None):
    for b in ALL_BANDS:
        if values is not None:
            bands[b][rows, cols] = values[b]
        if delta is not None:
            bands[b][rows, cols] = (baseline[b][rows, cols] + delta[b]).astype(np.uint16)


def _rect(h, w, rows, cols):
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


def _dilate(m, b):
    if b == 0:
        return m.copy()
    return ndimage.binary_dilation(m, structure=np.ones((2 * b + 1, 2 * b + 1), bool))


def _to_ds(bands, valid, chunks=None):
    ds = xr.Dataset(
        {b: (("y", "x"), a) for b, a in bands.items()} | {"valid": (("y", "x"), valid)},
        coords={"y": np.arange(valid.shape[0]) * -10.0, "x": np.arange(valid.shape[1]) * 10.0},
    )
    return ds.chunk(chunks) if chunks else ds


def _to_baseline_ds(baseline, count, chunks=None):
    names = list(ALL_BANDS)
    med = np.stack([baseline[b] for b in names])
    ds = xr.Dataset(
        {"median": (("band", "y", "x"), med), "mad": (("band", "y", "x"), np.full_like(med, 30.0)),
         "count": (("y", "x"), count)},
        coords={"band": names},
    )
    return ds.chunk(chunks) if chunks else ds


# ---------------------------------------------------------------- spectral / temporal rules


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

H, W = 300, 300
CHUNKS = [
    {"y": (100, 37, 163), "x": (90, 120, 90)},
    {"y": 37, "x": 53},
]


def _chunked_scene():
    """A 300 x 300 scene with objects straddling the borders of CHUNKS[0] (rows 100, 137;
    cols 90, 210) and of CHUNKS[1]."""
    bands, valid, baseline, count = _background(H, W, seed=42)
    for b in ALL_BANDS:  # water in the bottom-left corner
        baseline[b][230:, :80] = WATER[b]
        bands[b][230:, :80] = WATER[b]
        bands[b][260:290, 20:60] = WATER[b] * 0.3  # darkened water: no shadow
    _paint(bands, slice(95, 107), slice(80, 102), THICK)  # around the corner (100, 90)
    _paint(bands, slice(101, 112), slice(150, 161), THICK)  # 11 x 11 just below row 100
    _paint(bands, slice(250, 281), slice(205, 216), THICK)  # 11 wide across col 210
    _paint(bands, slice(88, 99), slice(230, 250), THICK)  # ends 1 px above row 100
    _paint(bands, slice(99, 102), slice(30, 33), THICK)  # aircraft on row 100
    # Reach probe (P: opening 2 * 4, regrowth 6, buffer 4 = 18 px): an 8-row blob (too thin)
    # with a 1 px fringe reaching up to row 103. A block ending at row 99 with an overlap of
    # 17 rows sees the blob cut at row 116, its last row repeated, so it would wrongly survive,
    # regrow into the fringe and buffer into row 99.
    _paint(bands, slice(109, 117), slice(256, 269), THICK)
    _paint(bands, slice(103, 109), slice(262, 263), THICK)
    _paint(bands, slice(130, 161), slice(20, 61), delta=HAZE_DELTA, baseline=baseline)  # across row 137
    _paint(bands, slice(20, 51), slice(230, 271), delta=SOIL_DELTA, baseline=baseline)
    _paint(bands, slice(180, 216), slice(195, 231), SHADOW)  # across col 210
    _paint(bands, slice(132, 143), slice(100, 125), SHADOW)  # 11 rows across row 137
    count[0:20, 100:200] = 1  # too few observations there
    _paint(bands, slice(2, 18), slice(120, 170), delta=HAZE_DELTA, baseline=baseline)
    valid[:, 290:] = False
    valid[0:6, :] = False
    valid[200:205, 200:220] = False  # inside the shadow, at a chunk border
    return bands, valid, baseline, count


def test_chunked_scene_flags_what_it_should():
    bands, valid, baseline, count = _chunked_scene()
    cloud, shadow = masks_np(bands, valid, baseline, count, P)
    assert cloud[95:107, 80:102].all() and cloud[101:112, 150:161].all() and cloud[250:281, 205:216].all()
    assert cloud[95:103, 230:250].all()  # buffer of the blob ending at row 98
    assert cloud[130:161, 20:61].all()  # haze
    assert not cloud[99:102, 30:33].any()  # aircraft
    assert not cloud[20:51, 230:271].any()  # soil
    assert not cloud[2:18, 120:170].any()  # haze without enough observations
    assert not cloud[103:117, 256:269].any()  # the reach probe is too thin
    assert shadow[180:216, 195:231][valid[180:216, 195:231]].all()
    assert not valid[180:216, 195:231].all()
    assert shadow[132:143, 100:125].all()
    assert not shadow[230:, :80].any()  # water
    assert not (cloud | shadow)[~valid].any()


@pytest.mark.parametrize("chunks", CHUNKS)
@pytest.mark.parametrize("with_baseline", [False, True])
def test_dask_uneven_chunks_identical_to_numpy(chunks, with_baseline):
    bands, valid, baseline, count = _chunked_scene()
    if with_baseline:
        ref_cloud, ref_shadow = masks_np(bands, valid, baseline, count, P)
        bl_eager, bl_lazy = _to_baseline_ds(baseline, count), _to_baseline_ds(baseline, count, {"y": 64, "x": 71})
    else:
        ref_cloud, ref_shadow = masks_np(bands, valid, params=P)
        bl_eager = bl_lazy = None
    eager = masks(_to_ds(bands, valid), bl_eager, P)
    np.testing.assert_array_equal(eager["cloud"].values, ref_cloud)
    np.testing.assert_array_equal(eager["shadow"].values, ref_shadow)
    lazy = masks(_to_ds(bands, valid, chunks), bl_lazy, P)
    assert isinstance(lazy["cloud"].data, da.Array)
    assert lazy["cloud"].dims == ("y", "x")
    assert lazy["cloud"].shape == (H, W)
    np.testing.assert_array_equal(lazy["cloud"].values, ref_cloud)
    np.testing.assert_array_equal(lazy["shadow"].values, ref_shadow)
    np.testing.assert_array_equal(lazy["cloud"].x.values, eager["cloud"].x.values)


def test_dask_scene_with_numpy_baseline():
    bands, valid, baseline, count = _chunked_scene()
    ref_cloud, ref_shadow = masks_np(bands, valid, baseline, count, P)
    with dask.config.set(scheduler="threads"):
        lazy = masks(_to_ds(bands, valid, CHUNKS[0]), _to_baseline_ds(baseline, count), P).compute()
    np.testing.assert_array_equal(lazy["cloud"].values, ref_cloud)
    np.testing.assert_array_equal(lazy["shadow"].values, ref_shadow)


def test_chunked_fixture_needs_the_full_overlap_depth(monkeypatch):
    """Guard that the chunk-border objects above really exercise the second stage's overlap:
    without it the buffer of clouds next to a chunk border does not cross it, and exactly the
    buffer reach is enough. The first stage (opening + regrowth) is guarded by the identical-result
    tests above, not by a sharp probe."""
    bands, valid, baseline, count = _chunked_scene()
    ref_cloud, _ = masks_np(bands, valid, baseline, count, P)
    ds, bl = _to_ds(bands, valid, CHUNKS[0]), _to_baseline_ds(baseline, count)
    assert P.depth > 2 * P.min_width_px + P.grow_px and P.margin > P.buffer_px
    monkeypatch.setattr(MaskParams, "margin", property(lambda self: 0))
    assert not np.array_equal(masks(ds, bl, P)["cloud"].values, ref_cloud)
    monkeypatch.setattr(MaskParams, "margin", property(lambda self: P.buffer_px))
    np.testing.assert_array_equal(masks(ds, bl, P)["cloud"].values, ref_cloud)


@pytest.mark.parametrize(
    "params",
    [
        replace(P, min_width_px=0, grow_px=0, buffer_px=0),
        replace(P, min_width_px=3, grow_px=2, buffer_px=6),
        replace(P, min_width_px=5, grow_px=9, buffer_px=1),
    ],
)
def test_dask_identical_other_params(params):
    bands, valid, baseline, count = _chunked_scene()
    ref_cloud, ref_shadow = masks_np(bands, valid, baseline, count, params)
    lazy = masks(_to_ds(bands, valid, CHUNKS[0]), _to_baseline_ds(baseline, count, CHUNKS[1]), params)
    np.testing.assert_array_equal(lazy["cloud"].values, ref_cloud)
    np.testing.assert_array_equal(lazy["shadow"].values, ref_shadow)


# ---------------------------------------------------------------- rough obscured guess


def _rough_reference(bands, baseline, params):
    s = 1e-4
    blue, green, red, nir = (bands[b].astype(np.float32) * s for b in ("blue", "green", "red", "nir"))
    vis = (blue + green + red) / 3
    bb, bn = baseline["blue"] * s, baseline["nir"] * s
    return (vis > params.bright) | ((blue - bb) > params.rough_blue) | (nir < params.rough_ratio * bn)


def test_rough_obscured_numpy_equals_dask():
    bands, valid, baseline, count = _chunked_scene()
    ref = _rough_reference(bands, baseline, P)
    eager = rough_obscured(_to_ds(bands, valid), _to_baseline_ds(baseline, count), P)
    assert eager.dims == ("y", "x") and eager.dtype == bool and eager.name == "rough_obscured"
    np.testing.assert_array_equal(eager.values, ref)
    # per pixel, no opening: the aircraft counts; thick cloud, haze and shadow do; clear land does not
    assert eager.values[95:107, 80:102].all() and eager.values[99:102, 30:33].all()
    assert eager.values[130:161, 20:61].all() and eager.values[132:143, 100:125].all()
    assert not eager.values[60:90, 100:140].any()
    for scene_chunks, bl_chunks in ((CHUNKS[0], {"y": 64, "x": 71}), (CHUNKS[1], None)):
        bl = _to_baseline_ds(baseline, count, bl_chunks)
        lazy = rough_obscured(_to_ds(bands, valid, scene_chunks), bl, P)
        assert isinstance(lazy.data, da.Array)
        assert lazy.dims == ("y", "x") and lazy.dtype == bool
        np.testing.assert_array_equal(lazy.values, eager.values)
    # its thresholds are its own: a stricter rough_blue drops the haze
    strict = rough_obscured(_to_ds(bands, valid), _to_baseline_ds(baseline, count), replace(P, rough_blue=0.09))
    assert not strict.values[130:161, 20:61].any()


# ---------------------------------------------------------------- no mutation


def test_inputs_not_mutated():
    bands, valid, baseline, count = _chunked_scene()
    snap = ({k: v.copy() for k, v in bands.items()}, valid.copy(), {k: v.copy() for k, v in baseline.items()}, count.copy())
    norm = {"blue": (1.02, -15.0), "nir": (0.98, 20.0)}
    masks_np(bands, valid, baseline, count, P, norm=norm)
    for k in bands:
        np.testing.assert_array_equal(bands[k], snap[0][k])
        np.testing.assert_array_equal(baseline[k], snap[2][k])
    np.testing.assert_array_equal(valid, snap[1])
    np.testing.assert_array_equal(count, snap[3])
    ds, bl = _to_ds(bands, valid), _to_baseline_ds(baseline, count)
    ds0, bl0 = ds.copy(deep=True), bl.copy(deep=True)
    masks(ds, bl, P, norm=norm)
    masks(ds.chunk({"y": 37}), bl, P).compute()
    rough_obscured(ds, bl, P)
    xr.testing.assert_identical(ds, ds0)
    xr.testing.assert_identical(bl, bl0)
    assert norm == {"blue": (1.02, -15.0), "nir": (0.98, 20.0)}


# ---------------------------------------------------------------- bad input


def test_params_validation():
    with pytest.raises(ValueError, match="min_width_px"):
        MaskParams(min_width_px=-1)
    with pytest.raises(ValueError, match="buffer_px"):
        MaskParams(buffer_px=-1)
    with pytest.raises(ValueError, match="grow_px"):
        MaskParams(grow_px=-1)
    with pytest.raises(ValueError, match="min_obs"):
        MaskParams(min_obs=0)
    assert MaskParams(min_width_px=0, grow_px=0, buffer_px=0).depth >= 1
    assert P.depth == 2 * 4 + 6 + 1
    assert P.margin == 6 + 4 + 3
    d = MaskParams()
    assert d.depth == 2 * d.min_width_px + d.grow_px + 1
    with pytest.raises(ValueError, match="shadow_weak_ratio"):
        MaskParams(shadow_weak_ratio=1.5)
    with pytest.raises(ValueError, match="saturation_dn"):
        MaskParams(saturation_dn=0)


def test_masks_np_bad_input():
    bands, valid, baseline, count = _background(20, 20, seed=13)
    with pytest.raises(ValueError, match="nir"):
        masks_np({k: v for k, v in bands.items() if k != "nir"}, valid)
    with pytest.raises(ValueError, match="nir"):
        masks_np(dict(bands, nir=bands["nir"][:, :19]), valid)
    with pytest.raises(ValueError, match="valid"):
        masks_np(bands, valid[None])
    with pytest.raises(ValueError, match="count"):
        masks_np(bands, valid, baseline, None)
    with pytest.raises(ValueError, match="count"):
        masks_np(bands, valid, baseline, count[:10])
    with pytest.raises(ValueError, match="baseline lacks.*red"):
        masks_np(bands, valid, {k: v for k, v in baseline.items() if k != "red"}, count)


def test_masks_bad_input():
    bands, valid, baseline, count = _background(20, 20, seed=14)
    ds = _to_ds(bands, valid)
    with pytest.raises(ValueError, match="valid"):
        masks(ds.drop_vars("valid"))
    with pytest.raises(ValueError, match="blue"):
        masks(ds.drop_vars(["blue", "swir16"]))  # neither the visible nor the red/NIR/SWIR set
    with pytest.raises(ValueError, match="blue"):
        masks_np({b: bands[b] for b in ("green", "red", "nir")}, valid)
    with pytest.raises(ValueError, match="dims"):
        masks(ds.transpose("x", "y"))
    with pytest.raises(ValueError, match="dims"):
        masks(ds.expand_dims(time=1))


def test_four_band_products_without_swir():
    """RGB+NIR (commercial 4-band): the thick, thin-cloud and shadow tests run without SWIR
    (no snow test); eager and dask with uneven chunks agree."""
    h, w = 120, 120
    bands, valid, baseline, count = _background(h, w, seed=5)
    _paint(bands, slice(10, 40), slice(10, 40), THICK)
    _paint(bands, slice(60, 90), slice(60, 95), SHADOW)
    four = {b: bands[b] for b in MASK_BANDS}
    cloud, shadow = masks_np(four, valid, {b: baseline[b] for b in MASK_BANDS}, count, P)
    assert cloud[10:40, 10:40].all() and shadow[60:90, 60:95].all()
    assert not cloud[60:, :50].any() and not shadow[:50, 60:].any()
    # snow is told apart only with SWIR: without it, bright white snow reads as cloud
    snowy = {b: a.copy() for b, a in bands.items()}
    _paint(snowy, slice(10, 40), slice(70, 100), SNOW)
    assert not masks_np(snowy, valid)[0][10:40, 70:100].any()
    assert masks_np({b: snowy[b] for b in MASK_BANDS}, valid)[0][10:40, 70:100].all()
    eager = masks(_to_ds(four, valid), _to_baseline_ds(baseline, count).sel(band=list(MASK_BANDS)), P)
    lazy = masks(_to_ds(four, valid, {"y": (50, 33, 37), "x": (70, 50)}),
                 _to_baseline_ds(baseline, count).sel(band=list(MASK_BANDS)), P)
    np.testing.assert_array_equal(eager.cloud.values, cloud)
    np.testing.assert_array_equal(lazy.cloud.values, cloud)
    np.testing.assert_array_equal(lazy.shadow.values, shadow)


def test_red_nir_swir_rules_tell_cloud_from_snow():
    """Without blue and green (Landsat TM/ETM+ red/NIR/SWIR subsets) cloud is a temporal test:
    red much brighter than its clear-sky median while SWIR-1.6 does not drop; snow, bright in
    red but dark in SWIR-1.6, is flagged as snow, never cloud. Eager and dask agree."""
    from sitewatch.kernels.masks import FLAG_CLOUD, FLAG_SNOW, RNS_BANDS, mask_layers_np

    h, w = 90, 100
    bands, valid, baseline, count = _background(h, w, seed=21)
    rns = {b: bands[b] for b in RNS_BANDS}
    base = {b: baseline[b] for b in RNS_BANDS}
    rns["red"][10:40, 10:40] = 3000  # cloud: red +0.22, SWIR +0.12
    rns["swir16"][10:40, 10:40] = 3000
    rns["nir"][10:40, 10:40] = 3500
    rns["red"][50:80, 50:90] = 5000  # snow: red +0.42, SWIR -0.13
    rns["swir16"][50:80, 50:90] = 500
    rns["red"][5:8, 60:63] = 3000  # a 3 x 3 bright roof: below the minimum width
    rns["swir16"][5:8, 60:63] = 3000
    layers = mask_layers_np(rns, valid, base, count, P0)
    cloud, snow = (layers["flags"] & FLAG_CLOUD) > 0, (layers["flags"] & FLAG_SNOW) > 0
    np.testing.assert_array_equal(cloud, _rect(h, w, slice(10, 40), slice(10, 40)))
    assert snow[50:80, 50:90].all() and not snow[10:40, 10:40].any()
    # single date (no baseline): the cautious rule still finds the bright, SWIR-bright cloud, not the snow
    single = mask_layers_np(rns, valid, params=P0)["cloud"]
    assert single[10:40, 10:40].all() and not single[50:80, 50:90].any()
    ds = xr.Dataset({b: (("y", "x"), a) for b, a in rns.items()} | {"valid": (("y", "x"), valid)})
    bl = _to_baseline_ds(baseline, count).sel(band=list(RNS_BANDS))
    lazy = masks(ds.chunk({"y": (30, 35, 25), "x": (45, 55)}), bl, P)
    np.testing.assert_array_equal(lazy["cloud"].values, masks_np(rns, valid, base, count, P)[0])
