"""Tests for sitewatch.kernels.change: exact normalisation sums, gain/offset, change score."""

from __future__ import annotations

import warnings
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
    delta_np,
    fit_gain_offset,
    gain_offset_from_sums,
    normalisation_sums_np,
)

BANDS = ["blue", "green", "red", "nir"]
# The gain/offset pathway and plain threshold these tests were written for (ChangeParams defaults
# before issue 6's quality work): no co-registration, no hysteresis, floor_rel 0.08, threshold 5.
# The default pathway (co-registration + hysteresis) is tested in tests/test_register.py.
LEGACY = ChangeParams(threshold=5.0, floor_rel=0.08, grow_threshold=None, coregister=False, indices=())


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _baseline(h: int, w: int, seed: int = 0):
    """Baseline with integer medians in [500, 3000), MAD 50, count 5 except a few low-count
    and zero-count pixels (NaN median/MAD there, as robust_baseline produces)."""
    rng = np.random.default_rng(seed)
    median = rng.integers(500, 3000, size=(len(BANDS), h, w)).astype(np.float32)
    mad = np.full((len(BANDS), h, w), 50.0, np.float32)
    count = np.full((h, w), 5, np.int16)
    count[0:4, :] = 2  # below min_obs
    count[4:6, 0:30] = 0
    median[:, 4:6, 0:30] = np.nan
    mad[:, 4:6, 0:30] = np.nan
    return median, mad, count


def _scene_from(values: np.ndarray, h: int, w: int):
    return xr.Dataset(
        {b: (("y", "x"), values[i]) for i, b in enumerate(BANDS)},
        coords={"y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0},
    )


def _baseline_ds(median, mad, count):
    h, w = count.shape
    return xr.Dataset(
        {"median": (("band", "y", "x"), median), "mad": (("band", "y", "x"), mad), "count": (("y", "x"), count)},
        coords={"band": BANDS, "y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0},
    )


def _clear(h: int, w: int, seed: int = 1, p: float = 0.9):
    rng = np.random.default_rng(seed)
    c = rng.random((h, w)) < p
    return xr.DataArray(c, dims=("y", "x"), coords={"y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0})


def _noisy_scene(median, seed=2, sigma=40.0, gain=1.0, offset=0.0):
    """Scene whose normalised values scatter around the baseline median: x = (m - o) / g + noise."""
    rng = np.random.default_rng(seed)
    m = np.nan_to_num(median, nan=1500.0)
    x = (m - offset) / gain + rng.normal(0.0, sigma, m.shape)
    return np.clip(np.rint(x), 0, 65535).astype(np.uint16)


# ---------------------------------------------------------------- normalisation


def test_normalisation_sums_are_exact_integers():
    values = np.array([[[1, 2], [3, 4]], [[10, 20], [30, 40]]], dtype=np.uint16)
    median = np.array([[[1.5, 2.0], [2.5, np.nan]], [[10, 10], [10, 10]]], dtype=np.float32)
    use = np.array([[True, True], [True, False]])
    sums = normalisation_sums_np(values, median, use)
    assert sums.dtype == np.int64
    # band 0: x = 1 2 3; m2 = 3 4 5
    assert sums[0].tolist() == [3, 6, 14, 12, 50]
    # band 1: x = 10 20 30; m2 = 20 20 20
    assert sums[1].tolist() == [3, 60, 1400, 60, 1200]


def test_normalisation_sums_add_up_over_blocks():
    median, _, count = _baseline(90, 70, seed=3)
    values = _noisy_scene(median, seed=4)
    use = (count >= 3) & _clear(90, 70, seed=5).values
    whole = normalisation_sums_np(values, median, use)
    parts = sum(
        normalisation_sums_np(values[:, r], median[:, r], use[r])
        for r in (slice(0, 37), slice(37, 41), slice(41, 90))
    )
    np.testing.assert_array_equal(whole, parts)


def test_gain_offset_exact_from_sums():
    rng = np.random.default_rng(6)
    x = rng.integers(300, 4000, size=(2, 50, 60)).astype(np.uint16)
    median = np.stack([1.5 * x[0] + 100.5, 0.5 * x[1] - 20.0]).astype(np.float32)  # half-integers
    gain, offset = gain_offset_from_sums(normalisation_sums_np(x, median, np.ones((50, 60), bool)))
    np.testing.assert_allclose(gain, [1.5, 0.5], rtol=1e-12)
    np.testing.assert_allclose(offset, [100.5, -20.0], rtol=0, atol=1e-8)


def test_gain_offset_large_scene_sums_do_not_overflow():
    # 4e6 pixels (a 2000 x 2000 site) half at 3000 and half at 3100 DN; median = 1.1 x + 50.
    # sum x ~ 1.2e10 and sum m2 ~ 2.7e10: their squares overflow int64.
    n, h = 4_000_000, 2_000_000
    a, b = 3000, 3100
    m2a, m2b = int(2 * (1.1 * a + 50)), int(2 * (1.1 * b + 50))
    sums = np.array([[n, h * (a + b), h * (a * a + b * b), h * (m2a + m2b), h * (m2a * m2a + m2b * m2b)]], np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gain, offset = gain_offset_from_sums(sums)
    np.testing.assert_allclose(gain, [1.1], rtol=1e-12)
    np.testing.assert_allclose(offset, [50.0], rtol=0, atol=1e-6)


def test_gain_offset_identity_below_min_pixels_and_offset_only_when_flat():
    sums = np.array([
        [99, 99 * 1000, 99 * 10 ** 6, 99 * 2200, 99 * 2200 ** 2],  # too few pixels
        [200, 200 * 1000, 200 * 10 ** 6, 200 * 2200, 200 * 2200 ** 2],  # flat scene and median
    ], np.int64)
    gain, offset = gain_offset_from_sums(sums)
    assert gain.tolist() == [1.0, 1.0]
    assert offset.tolist() == [0.0, 100.0]
    gain, offset = gain_offset_from_sums(sums, min_pixels=50)
    assert offset.tolist() == [100.0, 100.0]


# ---------------------------------------------------------------- score kernel (hand-computed)


def test_change_score_np_hand_computed():
    values = np.array([[1400, 2000]], np.uint16)  # one pixel, two bands
    median = np.array([[1000, 2000]], np.float32)
    mad = np.array([[100, 500]], np.float32)
    # band 0: scale = max(148.26, 120 + 80) = 200 -> z = 2; band 1: scale = 741.3 -> z = 0
    s = change_score_np(values, np.array([True]), median, mad, np.array([5]), np.ones(2), np.zeros(2), LEGACY)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, [np.sqrt(2.0)], rtol=1e-6)
    # gain/offset are applied before the difference: 0.5 * 1400 + 300 = 1000 -> z = 0
    s = change_score_np(values, np.array([True]), median, mad, np.array([5]), np.array([0.5, 1.0]), np.array([300.0, 0.0]))
    np.testing.assert_allclose(s, [0.0], atol=1e-7)
    # MAD floor: MAD 0 -> scale = floor_abs * 1e4 + floor_rel * median = 200
    s = change_score_np(values, np.array([True]), median, np.zeros_like(mad), np.array([5]), np.ones(2), np.zeros(2), LEGACY)
    np.testing.assert_allclose(s, [np.sqrt(2.0)], rtol=1e-6)
    s = change_score_np(values, np.array([True]), median, np.zeros_like(mad), np.array([5]), np.ones(2), np.zeros(2),
                        ChangeParams(floor_abs=0.004, floor_rel=0.0))
    np.testing.assert_allclose(s, [np.sqrt((10.0 ** 2 + 0.0) / 2)], rtol=1e-6)


def test_departure_scores_like_arrival():
    """The relative floor uses the darker of scene and baseline, so a bright object leaving
    scores like the same object arriving (MAD 0: the floor sets the scale)."""
    zero = np.zeros((1, 1), np.float32)
    one, five = np.array([True]), np.array([5])
    g, o = np.ones(1), np.zeros(1)
    leaving = change_score_np(np.array([[2700]], np.uint16), one, np.array([[5400]], np.float32), zero, five, g, o, LEGACY)
    arriving = change_score_np(np.array([[5400]], np.uint16), one, np.array([[2700]], np.float32), zero, five, g, o, LEGACY)
    # scale = floor_abs * 1e4 + floor_rel * min(5400, 2700) = 120 + 216 = 336
    np.testing.assert_allclose(arriving, [2700 / 336], rtol=1e-6)
    np.testing.assert_allclose(leaving, arriving, rtol=1e-6)
    assert leaving[0] > LEGACY.threshold  # a floor from the median alone would give 4.9
    # the floor uses the normalised value: 5400 DN at gain 0.5 is 2700 against the median 5400
    norm = change_score_np(np.array([[5400]], np.uint16), one, np.array([[5400]], np.float32), zero, five,
                           np.array([0.5]), o, LEGACY)
    np.testing.assert_allclose(norm, leaving, rtol=1e-6)
    # several bands, the same symmetry per band
    lo, hi = np.array([[900, 2700, 3000]], np.uint16), np.array([[1800, 5400, 3000]], np.uint16)
    z3, g3, o3 = np.zeros((1, 3), np.float32), np.ones(3), np.zeros(3)
    a = change_score_np(hi, one, lo.astype(np.float32), z3, five, g3, o3, LEGACY)
    b = change_score_np(lo, one, hi.astype(np.float32), z3, five, g3, o3, LEGACY)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, [np.sqrt(((900 / 192) ** 2 + (2700 / 336) ** 2) / 3)], rtol=1e-6)


def test_change_score_np_nan_where_not_clear_or_few_obs():
    values = np.full((4, 3), 1000, np.uint16)
    median = np.full((4, 3), 900, np.float32)
    mad = np.full((4, 3), 10, np.float32)
    clear = np.array([True, False, True, True])
    count = np.array([3, 5, 2, 10])
    s = change_score_np(values, clear, median, mad, count, np.ones(3), np.zeros(3), LEGACY)
    assert np.isnan(s[1]) and np.isnan(s[2])
    # scale = max(14.826, 120 + 72) = 192; z = 100 / 192 in every band
    np.testing.assert_allclose(s[[0, 3]], [100 / 192, 100 / 192], rtol=1e-6)
    s = change_score_np(values, clear, median, mad, count, np.ones(3), np.zeros(3), ChangeParams(min_obs=1))
    assert np.isnan(s[1]) and np.isfinite(s[2])


def test_delta_np_hand_computed():
    values = np.array([[1100, 2200, 3300, 9999]], np.uint16)
    median = np.array([[1000, 2000, 3000, 0]], np.float32)
    d = delta_np(values, median, np.ones(4), np.zeros(4), [0, 1, 2])
    np.testing.assert_allclose(d, [(100 + 200 + 300) / 3 * 1e-4], rtol=1e-6)
    d = delta_np(values, median, np.array([1.0, 1.0, 0.5, 1.0]), np.array([0.0, -200.0, 0.0, 0.0]), [1, 2])
    np.testing.assert_allclose(d, [(0 + (1650 - 3000)) / 2 * 1e-4], rtol=1e-6)


# ---------------------------------------------------------------- change(): behaviour


def test_identity_when_scene_equals_baseline():
    h, w = 80, 90
    median, mad, count = _baseline(h, w, seed=7)
    values = np.nan_to_num(median, nan=1234).astype(np.uint16)
    clear = _clear(h, w, seed=8)
    out, norm = change(_scene_from(values, h, w), clear, _baseline_ds(median, mad, count), BANDS, LEGACY)
    assert norm["gain"] == [1.0] * 4
    assert norm["offset"] == [0.0] * 4
    ok = clear.values & (count >= 3)
    score = out["change_score"].values
    assert (score[ok] == 0).all()
    assert np.isnan(score[~ok]).all()
    assert (out["delta_brightness"].values[count > 0] == 0).all()
    assert not out["change"].values.any()


def test_recovers_known_gain_and_offset():
    h, w = 120, 110
    median, mad, count = _baseline(h, w, seed=9)
    gains, offsets = np.array([0.9, 1.2, 1.05, 0.8]), np.array([150.0, -80.0, 40.0, 300.0])
    # scene = (median - offset) / gain, rounded to DN: normalising it must undo the transform
    values = _noisy_scene(median, sigma=0.0, gain=gains[:, None, None], offset=offsets[:, None, None])
    clear = _clear(h, w, seed=10)
    out, norm = change(_scene_from(values, h, w), clear, _baseline_ds(median, mad, count), BANDS, LEGACY)
    np.testing.assert_allclose(norm["gain"], gains, rtol=1e-4)
    np.testing.assert_allclose(norm["offset"], offsets, rtol=0, atol=0.5)
    ok = clear.values & (count >= 3)
    score = out["change_score"].values
    assert np.isfinite(score[ok]).all() and np.isnan(score[~ok]).all()
    assert np.nanmax(score) < 0.05  # rounding residuals only
    assert np.nanmax(np.abs(out["delta_brightness"].values)) < 1e-4


def test_changed_patch_scores_above_threshold_noise_below():
    h, w = 120, 110
    median, mad, count = _baseline(h, w, seed=11)
    median[:, 90:95, 10:20] = 3000  # bright before ...
    values = _noisy_scene(median, seed=12, sigma=40.0)
    values[:, 50:60, 70:85] += 3000  # new bright object
    values[:, 90:95, 10:20] = 300  # ... dark now: z ~ 2700 / (120 + 0.08 * 300) = 18.75
    clear = _clear(h, w, seed=13, p=1.0)
    out, norm = change(_scene_from(values, h, w), clear, _baseline_ds(median, mad, count), BANDS, LEGACY)
    score, changed = out["change_score"].values, out["change"].values
    bright = np.zeros((h, w), bool)
    bright[50:60, 70:85] = True
    dark = np.zeros((h, w), bool)
    dark[90:95, 10:20] = True
    assert (score[bright] > 5).all() and changed[bright].all()
    assert (score[dark] > 5).all() and changed[dark].all()
    rest = ~bright & ~dark & (count >= 3)
    assert np.nanmax(score[rest]) < 5 and not changed[rest].any()
    assert not changed[count < 3].any()  # NaN score is not a change
    delta = out["delta_brightness"].values
    assert (delta[bright] > 0.2).all() and (delta[dark] < -0.05).all()
    assert out["change"].dtype == bool and out["change_score"].dtype == np.float32
    assert out["change_score"].dims == ("y", "x")
    # threshold is honoured
    out_hi, _ = change(_scene_from(values, h, w), clear, _baseline_ds(median, mad, count), BANDS,
                       replace(LEGACY, threshold=float(np.nanmax(score)) + 1))
    assert not out_hi["change"].values.any()


def test_numpy_kernel_equals_xarray_eager():
    h, w = 70, 80
    median, mad, count = _baseline(h, w, seed=14)
    values = _noisy_scene(median, seed=15, sigma=80.0, gain=1.1, offset=-40.0)
    clear = _clear(h, w, seed=16)
    out, norm = change(_scene_from(values, h, w), clear, _baseline_ds(median, mad, count), BANDS, LEGACY)
    use = clear.values & (count >= 3)
    gain, offset = gain_offset_from_sums(normalisation_sums_np(values, median, use))
    assert norm == {"gain": gain.tolist(), "offset": offset.tolist()}
    ref = change_score_np(np.moveaxis(values, 0, -1), clear.values, np.moveaxis(median, 0, -1),
                          np.moveaxis(mad, 0, -1), count, gain, offset, LEGACY)
    assert np.array_equal(out["change_score"].values, ref, equal_nan=True)
    ref_d = delta_np(np.moveaxis(values, 0, -1), np.moveaxis(median, 0, -1), gain, offset, [0, 1, 2])
    assert np.array_equal(out["delta_brightness"].values, ref_d, equal_nan=True)


def test_delta_uses_all_bands_when_no_visible_band():
    h, w = 30, 40
    median, mad, count = _baseline(h, w, seed=17)
    values = _noisy_scene(median, seed=18)
    names = ["nir"]
    scene = xr.Dataset({"nir": (("y", "x"), values[3])})
    bl = _baseline_ds(median, mad, count)
    out, norm = change(scene, _clear(h, w).drop_vars(["y", "x"]), bl.drop_vars(["y", "x"]), names, LEGACY)
    ref = delta_np(values[3][..., None], median[3][..., None], np.array(norm["gain"]), np.array(norm["offset"]), [0])
    assert np.array_equal(out["delta_brightness"].values, ref, equal_nan=True)


# ---------------------------------------------------------------- numpy vs dask

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


def test_inputs_not_mutated():
    h, w = 60, 50
    median, mad, count = _baseline(h, w, seed=22)
    values = _noisy_scene(median, seed=23, gain=1.2, offset=10.0)
    clear = _clear(h, w, seed=24)
    snap = [a.copy() for a in (values, median, mad, count, clear.values)]
    gain, offset = np.array([1.1, 0.9, 1.0, 1.0]), np.array([5.0, 0.0, -5.0, 0.0])
    g0, o0 = gain.copy(), offset.copy()
    change_score_np(np.moveaxis(values, 0, -1), clear.values, np.moveaxis(median, 0, -1), np.moveaxis(mad, 0, -1),
                    count, gain, offset)
    delta_np(np.moveaxis(values, 0, -1), np.moveaxis(median, 0, -1), gain, offset, [0, 1])
    normalisation_sums_np(values, median, clear.values & (count >= 3))
    for a, b in zip((values, median, mad, count, clear.values), snap):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(gain, g0)
    np.testing.assert_array_equal(offset, o0)
    scene, bl = _scene_from(values, h, w), _baseline_ds(median, mad, count)
    s0, b0, c0 = scene.copy(deep=True), bl.copy(deep=True), clear.copy(deep=True)
    change(scene, clear, bl, BANDS, LEGACY)
    out, _ = change(scene.chunk({"y": 17}), clear.chunk({"x": 13}), bl.chunk({"y": 23}), BANDS, LEGACY)
    out.compute()
    xr.testing.assert_identical(scene, s0)
    xr.testing.assert_identical(bl, b0)
    xr.testing.assert_identical(clear, c0)


# ---------------------------------------------------------------- bad input


def test_params_validation():
    with pytest.raises(ValueError, match="threshold"):
        ChangeParams(threshold=0)
    with pytest.raises(ValueError, match="threshold"):
        ChangeParams(threshold=float("nan"))
    with pytest.raises(ValueError, match="floor"):
        ChangeParams(floor_abs=0)
    with pytest.raises(ValueError, match="floor"):
        ChangeParams(floor_rel=-0.1)
    with pytest.raises(ValueError, match="min_obs"):
        ChangeParams(min_obs=0)
    ChangeParams(floor_rel=0.0)  # allowed


def test_change_score_np_bad_shapes():
    v = np.zeros((5, 3), np.uint16)
    m = np.zeros((5, 3), np.float32)
    c, n = np.ones(5, bool), np.full(5, 5)
    with pytest.raises(ValueError, match="median"):
        change_score_np(v, c, m[:, :2], m, n, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="mad"):
        change_score_np(v, c, m, m[:4], n, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="gain"):
        change_score_np(v, c, m, m, n, np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="offset"):
        change_score_np(v, c, m, m, n, np.ones(3), np.zeros((3, 1)))


def test_change_missing_band():
    h, w = 20, 20
    median, mad, count = _baseline(h, w, seed=25)
    scene = _scene_from(_noisy_scene(median), h, w).drop_vars("red")
    with pytest.raises(ValueError, match="red"):
        change(scene, _clear(h, w), _baseline_ds(median, mad, count), BANDS, LEGACY)


# ---------------------------------------------------------------- misregistration tolerance

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
