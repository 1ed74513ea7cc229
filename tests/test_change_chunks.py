"""Tests for sitewatch.kernels.change, continued: numpy against dask with uneven chunks, a given
gain/offset against a fitted one, the shift tolerance and the spectral index scores."""

from __future__ import annotations

from dataclasses import replace

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.change import (
    ChangeParams,
    change,
    change_score_np,
    fit_gain_offset,
    gain_offset_from_sums,
    normalisation_sums_np,
)
from change_scenes import (  # tests/ is on sys.path
    BANDS, LEGACY, _baseline, _baseline_ds, _clear, _noisy_scene, _scene_from,
)


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


H, W = 300, 300


def _big_case():
    median, mad, count = _baseline(H, W, seed=19)
    values = _noisy_scene(median, seed=20, sigma=60.0, gain=0.95, offset=25.0)
    values[:, 95:110, 85:95] += 2500  # changed patch across the chunk corner (100, 90)
    clear = _clear(H, W, seed=21)
    return values, clear, median, mad, count


@pytest.mark.parametrize(
    "scene_chunks, baseline_chunks",
    [
        ({"y": (100, 37, 163), "x": (90, 120, 90)}, {"y": 64, "x": 71}),
        ({"y": 37, "x": 53}, {"y": (100, 37, 163), "x": (90, 120, 90)}),
    ],
)
def test_dask_uneven_chunks_identical_to_numpy(scene_chunks, baseline_chunks):
    values, clear, median, mad, count = _big_case()
    scene, bl = _scene_from(values, H, W), _baseline_ds(median, mad, count)
    eager, norm_e = change(scene, clear, bl, BANDS, LEGACY)
    lazy, norm_l = change(scene.chunk(scene_chunks), clear.chunk(scene_chunks), bl.chunk(baseline_chunks), BANDS, LEGACY)
    assert norm_l == norm_e  # exact integer sums: identical fit whatever the chunking
    for v in ("change_score", "change", "delta_brightness"):
        assert isinstance(lazy[v].data, da.Array), v
        assert lazy[v].dims == ("y", "x")
        assert np.array_equal(lazy[v].values, eager[v].values, equal_nan=True), v
    patch_clear = clear.values[95:110, 85:95]
    assert patch_clear.sum() > 100 and (eager["change"].values[95:110, 85:95] == patch_clear).all()


def test_dask_scene_with_numpy_baseline_and_clear():
    values, clear, median, mad, count = _big_case()
    scene, bl = _scene_from(values, H, W), _baseline_ds(median, mad, count)
    eager, norm_e = change(scene, clear, bl, BANDS, LEGACY)
    with dask.config.set(scheduler="threads"):
        lazy, norm_l = change(scene.chunk({"y": (100, 37, 163), "x": (90, 120, 90)}), clear, bl, BANDS, LEGACY)
        lazy = lazy.compute()
    assert norm_l == norm_e
    for v in ("change_score", "change", "delta_brightness"):
        assert np.array_equal(lazy[v].values, eager[v].values, equal_nan=True), v


def _refit(values, clear, median, count, min_obs):
    return gain_offset_from_sums(normalisation_sums_np(values, median, clear & (count >= min_obs)))


def test_fit_gain_offset_eager_equals_dask():
    values, clear, median, mad, count = _big_case()
    scene, bl = _scene_from(values, H, W), _baseline_ds(median, mad, count)
    for min_obs in (1, 3):
        ref = _refit(values, clear.values, median, count, min_obs)
        eager = fit_gain_offset(scene, clear, bl, BANDS, min_obs)
        assert np.array_equal(eager[0], ref[0]) and np.array_equal(eager[1], ref[1])
        lazy = fit_gain_offset(scene.chunk({"y": (100, 37, 163), "x": (90, 120, 90)}),
                               clear.chunk({"y": 64, "x": 71}), bl.chunk({"y": 37, "x": 53}), BANDS, min_obs)
        assert np.array_equal(lazy[0], eager[0]) and np.array_equal(lazy[1], eager[1])
    # dask scene with numpy baseline and mask
    lazy = fit_gain_offset(scene.chunk({"y": 37, "x": 53}), clear, bl, BANDS, 3)
    assert np.array_equal(lazy[0], eager[0]) and np.array_equal(lazy[1], eager[1])
    # the mask and min_obs matter: pixels with 2 observations join the fit at min_obs 1 ...
    assert not np.array_equal(fit_gain_offset(scene, clear, bl, BANDS, 1)[1], eager[1])
    # ... and the fit recovers the scene's transform (scene = (median - 25) / 0.95 + noise)
    np.testing.assert_allclose(eager[0], 0.95, rtol=0.02)
    # a band subset fits only those bands, in the given order
    sub = fit_gain_offset(scene, clear, bl, ["nir", "blue"], 3)
    np.testing.assert_array_equal(sub[0], eager[0][[3, 0]])
    np.testing.assert_array_equal(sub[1], eager[1][[3, 0]])
    with pytest.raises(ValueError, match="swir16"):
        fit_gain_offset(scene, clear, bl, ["blue", "swir16"])


def test_change_with_given_gain_offset_equals_fitted():
    values, clear, median, mad, count = _big_case()
    scene, bl = _scene_from(values, H, W), _baseline_ds(median, mad, count)
    fit = fit_gain_offset(scene, clear, bl, BANDS, ChangeParams().min_obs)
    chunks = {"y": (100, 37, 163), "x": (90, 120, 90)}
    for sc, cl, b in ((scene, clear, bl), (scene.chunk(chunks), clear.chunk(chunks), bl.chunk({"y": 64}))):
        ref, norm_ref = change(sc, cl, b, BANDS, LEGACY)
        got, norm_got = change(sc, cl, b, BANDS, LEGACY, gain_offset=fit)
        assert norm_got == norm_ref == {"gain": fit[0].tolist(), "offset": fit[1].tolist()}
        for v in ("change_score", "change", "delta_brightness"):
            assert np.array_equal(got[v].values, ref[v].values, equal_nan=True), v
    # plain lists work; another fit gives other scores, exactly those of the kernel with it
    other = ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    out, norm = change(scene, clear, bl, BANDS, LEGACY, gain_offset=other)
    assert norm == {"gain": other[0], "offset": other[1]}
    mv = lambda a: np.moveaxis(a, 0, -1)  # noqa: E731
    expected = change_score_np(mv(values), clear.values, mv(median), mv(mad), count, np.ones(4), np.zeros(4), LEGACY)
    assert np.array_equal(out["change_score"].values, expected, equal_nan=True)
    assert not np.array_equal(out["change_score"].values, ref["change_score"].values, equal_nan=True)
    with pytest.raises(ValueError, match="gain_offset"):
        change(scene, clear, bl, BANDS, LEGACY, gain_offset=(fit[0][:3], fit[1]))
    with pytest.raises(ValueError, match="gain_offset"):
        change(scene, clear, bl, BANDS, LEGACY, gain_offset=(fit[0], np.zeros((4, 1))))


def test_change_with_given_gain_offset_on_dask_computes_nothing():
    values, clear, median, mad, count = _big_case()
    scene, bl = _scene_from(values, H, W).chunk({"y": 100}), _baseline_ds(median, mad, count).chunk({"y": 100})
    fit = fit_gain_offset(scene, clear, bl, BANDS, 3)

    def refuse(*args, **kwargs):
        raise AssertionError("computed")

    with dask.config.set(scheduler=refuse):
        out, _ = change(scene, clear.chunk({"y": 100}), bl, BANDS, LEGACY, gain_offset=fit)
        with pytest.raises(AssertionError, match="computed"):  # the fit itself must compute
            change(scene, clear.chunk({"y": 100}), bl, BANDS, LEGACY)
    assert all(isinstance(out[v].data, da.Array) for v in out.data_vars)
    ref, _ = change(scene, clear, bl, BANDS, LEGACY)
    assert np.array_equal(out["change_score"].values, ref["change_score"].values, equal_nan=True)


# ---------------------------------------------------------------- no mutation


def _edge_case():
    """A baseline with a sharp 500 -> 5000 DN edge at x = 35, a scene misregistered by 0.4 px
    in x (bilinear) with noise, and a 4 x 4 px bright change away from the edge."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    h, w = 60, 70
    med = np.full((len(BANDS), h, w), 500, np.float32)
    med[:, :, 35:] = 5000
    base = xr.Dataset({"median": (("band", "y", "x"), med), "mad": (("band", "y", "x"), np.full_like(med, 30)),
                       "count": (("y", "x"), np.full((h, w), 8, np.int16))}, coords={"band": BANDS})
    sc = ndimage.shift(med, (0, 0, 0.4), order=1, mode="nearest") + rng.normal(0, 20, med.shape)
    sc[:, 20:24, 10:14] += 1500
    scene = xr.Dataset({b: (("y", "x"), np.clip(sc[k], 1, None).astype(np.uint16)) for k, b in enumerate(BANDS)})
    return scene, xr.DataArray(np.ones((h, w), bool), dims=("y", "x")), base


def test_shift_tolerance_removes_misregistration_edges_keeps_change():
    scene, clear, base = _edge_case()
    plain, _ = change(scene, clear, base, BANDS, replace(LEGACY, threshold=3.0))
    tol, _ = change(scene, clear, base, BANDS, replace(LEGACY, threshold=3.0, shift_tolerance_px=0.5))
    assert plain["change"].values[:, 33:38].sum() >= 60  # the edge lights up without tolerance
    assert tol["change"].values[:, 30:40].sum() == 0
    assert tol["change"].values[20:24, 10:14].all() and tol["change"].values.sum() == 16
    assert (tol["change_score"].values <= plain["change_score"].values + 1e-6).all()  # the 0-shift is one of the 9


def test_shift_tolerance_numpy_and_dask_uneven_chunks_identical():
    scene, clear, base = _edge_case()
    p = replace(LEGACY, shift_tolerance_px=0.5)
    e, _ = change(scene, clear, base, BANDS, p)
    d, _ = change(scene.chunk({"y": (25, 35), "x": (30, 1, 39)}), clear.chunk({"y": 17}), base.chunk({"x": 33}), BANDS, p)
    assert d["change_score"].chunks is not None
    np.testing.assert_array_equal(d["change_score"].values, e["change_score"].values)
    with pytest.raises(ValueError, match="shift_tolerance_px"):
        ChangeParams(shift_tolerance_px=1.5)


# ---------------------------------------------------------------- index z-scores (kernels.indices)

S2 = ["blue", "green", "red", "nir", "swir16", "swir22"]


def _veg_history(t=8, h=24, w=30, seed=0):
    """Vegetated history (6 bands): blue 400, green 700, red 500, nir 3000, swir16 2000, swir22
    1000 counts times a per-pixel brightness in [0.8, 1.2] (texture, the same on every date),
    +-~15 counts of noise; all clear. Returns the stack, clear and the (band, y, x) means."""
    rng = np.random.default_rng(seed)
    mean = np.array([400, 700, 500, 3000, 2000, 1000], np.float32)[:, None, None] * rng.uniform(0.8, 1.2, (1, h, w)).astype(np.float32)
    vals = np.rint(mean[None] + rng.normal(0, 15, (t, 6, h, w))).clip(1).astype(np.uint16)
    coords = {"band": S2, "y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0}
    stack = xr.DataArray(vals, dims=("time", "band", "y", "x"), coords=coords)
    clear = xr.DataArray(np.ones((t, h, w), bool), dims=("time", "y", "x"), coords={"y": coords["y"], "x": coords["x"]})
    return stack, clear, mean


def test_an_ndvi_drop_with_moderate_band_z_scores_scores_higher_with_indices():
    from sitewatch.kernels.change import change_baseline

    stack, clear, mean = _veg_history()
    h, w = clear.shape[1:]
    rng = np.random.default_rng(7)
    scene = np.rint(mean + rng.normal(0, 15, (6, h, w))).clip(1).astype(np.float32)
    # red +600 and nir -900 counts: band z ~4 each (floor 120 counts + 4 %), band RMS ~2.5 over the
    # 6 bands; NDVI 0.71 -> 0.31 (z ~10 at the 0.04 floor), NBR 0.5 -> 0.35 (z ~3.6)
    scene[2, 10:14, 10:14] += 600
    scene[3, 10:14, 10:14] -= 900
    ds = xr.Dataset({b: (("y", "x"), scene[i].astype(np.uint16)) for i, b in enumerate(S2)}, coords={"y": stack.y, "x": stack.x})
    sc_clear = clear.isel(time=0, drop=True)
    base_p = replace(LEGACY, threshold=3.0)
    idx_p = replace(base_p, indices=("ndvi", "nbr", "brightness", "swir"))
    same = (np.ones(6), np.zeros(6))  # identity radiometry: the history and the scene share it
    bands_only, _ = change(ds, sc_clear, change_baseline(stack, clear, base_p), S2, base_p, gain_offset=same)
    with_idx, _ = change(ds, sc_clear, change_baseline(stack, clear, idx_p), S2, idx_p, gain_offset=same)
    b, i = bands_only["change_score"].values, with_idx["change_score"].values
    assert 2.0 < b[10:14, 10:14].max() < 3.0 and not bands_only["change"].values.any()  # the bands alone miss it
    assert i[10:14, 10:14].min() > 3.0 and with_idx["change"].values[10:14, 10:14].all()  # RMS over 10: 3.2-4.7
    outside = np.ones((h, w), bool)
    outside[10:14, 10:14] = False
    assert np.nanmax(i[outside]) < 1.5  # the indices add no false change elsewhere
    assert with_idx["change_score"].attrs["indices"] == ["ndvi", "nbr", "brightness", "swir"]
    # the co-registered default (index stats from the ring pass) sees it as well
    reg_p = ChangeParams(threshold=3.0, grow_threshold=None)
    reg, _ = change(ds, sc_clear, change_baseline(stack, clear, reg_p), S2, reg_p)
    reg_b, _ = change(ds, sc_clear, change_baseline(stack, clear, reg_p), S2, replace(reg_p, indices=()))
    gap = reg["change_score"].values[10:14, 10:14] - reg_b["change_score"].values[10:14, 10:14]
    assert gap.min() > 0.5 and reg["change"].values[10:14, 10:14].all() and not reg_b["change"].values.any()


@pytest.mark.parametrize("coregister", [False, True])
def test_index_score_numpy_and_dask_uneven_chunks_identical(coregister):
    from sitewatch.kernels.change import change_baseline

    stack, clear, mean = _veg_history(h=40, w=37, seed=2)
    rng = np.random.default_rng(3)
    scene = np.rint(mean * rng.uniform(0.9, 1.1, (6, 40, 37))).astype(np.uint16)
    ds = xr.Dataset({b: (("y", "x"), scene[i]) for i, b in enumerate(S2)}, coords={"y": stack.y, "x": stack.x})
    p = replace(ChangeParams(), coregister=coregister, threshold=3.0, grow_threshold=2.0)
    c = clear.isel(time=0, drop=True).copy()
    c[5:9, 5:9] = False
    e, ne = change(ds, c, change_baseline(stack, clear, p), S2, p)
    base_d = change_baseline(stack.chunk({"y": (17, 1, 22), "x": (30, 7)}), clear.chunk({"y": 13}), p)
    d, nd = change(ds.chunk({"y": (9, 31), "x": (20, 17)}), c.chunk({"x": 11}), base_d, S2, p)
    assert d["change_score"].chunks is not None
    xr.testing.assert_identical(e.compute(), d.compute())
    assert ne == nd


def test_index_inputs_are_checked_and_skips_are_named():
    from sitewatch.kernels.change import change_baseline

    stack, clear, _ = _veg_history(t=4)
    ds = xr.Dataset({b: stack.isel(time=0, drop=True).sel(band=b, drop=True) for b in S2})
    sc_clear = clear.isel(time=0, drop=True)
    p = replace(LEGACY, indices=("ndvi", "swir"))
    with pytest.raises(ValueError, match="lacks \\['index_median', 'index_mad'\\]"):
        change(ds, sc_clear, change_baseline(stack, clear, LEGACY), S2, p)
    with pytest.raises(ValueError, match="expected it to hold \\['swir'\\]"):
        change(ds, sc_clear, change_baseline(stack, clear, replace(LEGACY, indices=("ndvi",))), S2, p)
    with pytest.raises(ValueError, match="in that order"):
        change(ds, sc_clear, change_baseline(stack, clear, p), S2[::-1], p)
    # a four-band site: NBR and SWIR are skipped and said so
    four = S2[:4]
    out, _ = change(ds[four], sc_clear, change_baseline(stack.sel(band=four), clear, replace(LEGACY, indices=("ndvi", "nbr", "swir"))), four,
                    replace(LEGACY, indices=("ndvi", "nbr", "swir")))
    assert out["change_score"].attrs["indices"] == ["ndvi"] and out["change_score"].attrs["indices_skipped"] == ["nbr", "swir"]


def test_index_params_are_validated():
    with pytest.raises(ValueError, match="unknown index name"):
        ChangeParams(indices=("ndvi", "ndwi"))
    with pytest.raises(ValueError, match="the string"):
        ChangeParams(indices="ndvi")
    with pytest.raises(ValueError, match="index_weight"):
        ChangeParams(index_weight=0.0)
    with pytest.raises(ValueError, match="index_weight"):
        ChangeParams(index_weight=float("inf"))
    with pytest.raises(ValueError, match="index_combine"):
        ChangeParams(index_combine="mean")
    with pytest.raises(ValueError, match="shift_tolerance_px"):
        ChangeParams(indices=("ndvi",), shift_tolerance_px=0.5)
    assert ChangeParams(indices=["ndvi"]).indices == ("ndvi",)  # a list is taken as a tuple (hashable, frozen)
    ChangeParams(indices=(), shift_tolerance_px=0.5)  # allowed: bands only
