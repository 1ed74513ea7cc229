"""Tests for sitewatch.kernels.masks, continued: numpy against dask with uneven chunks (the
overlap depth the neighbourhood steps need), the rough obscured guess, inputs left unmodified,
validation errors, and the reduced band sets (no SWIR; red/NIR/SWIR)."""

from __future__ import annotations

from dataclasses import replace

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.masks import MASK_BANDS, MaskParams, masks, masks_np, rough_obscured
from mask_scenes import (  # tests/ is on sys.path
    ALL_BANDS, HAZE_DELTA, P, P0, SHADOW, SNOW, SOIL_DELTA, THICK, WATER, _background, _paint, _rect, _to_baseline_ds, _to_ds,
)


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


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
