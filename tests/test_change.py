"""Tests for sitewatch.kernels.change: exact normalisation sums, gain/offset, the change score on
small hand-made scenes, inputs and validation. Dask with uneven chunks, the shift tolerance and
the spectral indices: tests/test_change_chunks.py."""

from __future__ import annotations

import warnings
from dataclasses import replace

import dask
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.change import (
    ChangeParams,
    change,
    change_score_np,
    delta_np,
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
