"""Tests for sitewatch.kernels.register (co-registration, registered folds into the baseline state), the
hysteresis threshold in sitewatch.kernels.objects and the default change pathway that uses them."""

from __future__ import annotations

from dataclasses import replace

import dask
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from sitewatch.kernels.baseline import robust_baseline
from sitewatch.kernels.change import ChangeParams, change, change_baseline
from sitewatch.kernels.objects import hysteresis, hysteresis_np
from sitewatch.kernels.baseline_ring import fold, state_baseline
from sitewatch.kernels.register_sums import difference_hist_np, registration_sums_np
from sitewatch.kernels.register import (
    HIST_HALF,
    Registration,
    aligned_observation,
    apply_inverse,
    build_registered_state,
    inlier_band,
    fit_once,
    fit_registration,
    fold_registered,
    registered_observation,
    registration_from_sums,
    shift,
    shift_np,
)

BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _surface(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(band, y, x) float reflectance x 1e4: smooth texture plus sharp-edged blocks (a 'runway'
    and 'buildings'), different per band."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for b in range(len(BANDS)):
        s = 1500 + 400 * np.sin(yy / (7 + b)) * np.cos(xx / (9 - b)) + ndimage.gaussian_filter(rng.normal(0, 300, (h, w)), 2)
        s[20:28, 5:w - 5] += 1800 + 200 * b  # bright strip with sharp edges
        s[40:52, 30:44] -= 900
        s[h - 20:h - 12, 10:20] += 2500
        out.append(s)
    return np.stack(out)


def _observe(surface: np.ndarray, dy: float, dx: float, gain, offset, rng, sigma: float = 20.0) -> np.ndarray:
    moved = np.stack([ndimage.shift(b, (dy, dx), order=3, mode="nearest") for b in surface])
    x = moved * np.asarray(gain)[:, None, None] + np.asarray(offset)[:, None, None] + rng.normal(0, sigma, moved.shape)
    return np.clip(np.rint(x), 1, 65535).astype(np.uint16)


def _da(a: np.ndarray) -> xr.DataArray:
    return xr.DataArray(a, dims=("band", "y", "x"), coords={"band": BANDS})


def _scene(a: np.ndarray) -> xr.Dataset:
    return xr.Dataset({b: (("y", "x"), a[i]) for i, b in enumerate(BANDS)})


# ---------------------------------------------------------------- registration fit


def test_registration_recovers_known_shift_gain_offset():
    rng = np.random.default_rng(1)
    surf = _surface(90, 100)
    median = np.rint(2 * surf) / 2  # half-integers, as a median of counts is
    gain, offset = np.array([0.9, 1.1, 1.0, 0.95]), np.array([120.0, -80.0, 30.0, 200.0])
    # scene content moved by (+0.3, -0.4) px: x(p) = S(p - s) = median(p + beta) with beta = -s
    x = _observe(surf, 0.3, -0.4, gain, offset, rng)
    use = xr.DataArray(np.ones((90, 100), bool), dims=("y", "x"))
    one = fit_registration(_da(x), _da(median.astype(np.float32)), use, steps=1)
    assert abs(one.dy - (-0.3)) < 0.12 and abs(one.dx - 0.4) < 0.12  # one linearised step: ~0.1 px short
    reg = fit_registration(_da(x), _da(median.astype(np.float32)), use)  # two steps (default)
    assert abs(reg.dy - (-0.3)) < 0.04 and abs(reg.dx - 0.4) < 0.04, reg
    assert abs(reg.dy + 0.3) + abs(reg.dx - 0.4) < abs(one.dy + 0.3) + abs(one.dx - 0.4)
    np.testing.assert_allclose(reg.gain, gain, rtol=0.03)
    np.testing.assert_allclose(reg.offset, offset, atol=60)
    assert one.pixels == 90 * 100  # every pixel has a finite median and neighbours (edges padded)
    # unshifted scene: no shift found
    reg0 = fit_registration(_da(_observe(surf, 0, 0, gain, offset, rng)), _da(median.astype(np.float32)), use)
    assert abs(reg0.dy) < 0.03 and abs(reg0.dx) < 0.03


def test_registration_sums_exact_and_identity_when_too_few_pixels():
    rng = np.random.default_rng(2)
    med = np.rint(2 * _surface(30, 40)) / 2
    x = _observe(_surface(30, 40), 0.2, 0.1, [1] * 4, [0] * 4, rng)
    use = np.zeros((30, 40), bool)
    use[5:8, 5:9] = True  # 12 pixels < 100
    stacked = np.concatenate([x.astype(np.float32), med.astype(np.float32), use[None].astype(np.float32)])
    sums = registration_sums_np(np.pad(stacked, ((0, 0), (1, 1), (1, 1)), mode="edge"), 4)
    assert sums.dtype == np.int64 and sums[0, 1, 1] == 12
    np.testing.assert_array_equal(sums[:, :4, :4], np.transpose(sums[:, :4, :4], (0, 2, 1)))
    r = registration_from_sums(sums)
    assert r.gain == (1.0,) * 4 and r.offset == (0.0,) * 4 and r.dy == r.dx == 0.0
    with pytest.raises(ValueError, match="registration block"):
        registration_sums_np(stacked, 3)


def test_fit_registration_numpy_equals_dask_uneven_chunks():
    rng = np.random.default_rng(3)
    surf = _surface(70, 80)
    med = np.rint(2 * surf) / 2
    med[:, 0:3, 0:10] = np.nan  # no baseline there
    x = _observe(surf, -0.35, 0.25, [1.05, 0.97, 1.0, 1.1], [50, -20, 0, 10], rng)
    use = xr.DataArray(rng.random((70, 80)) < 0.9, dims=("y", "x"))
    eager = fit_registration(_da(x), _da(med.astype(np.float32)), use)
    lazy = fit_registration(_da(x).chunk({"y": (20, 1, 49), "x": (33, 47)}), _da(med.astype(np.float32)).chunk({"y": 31}),
                            use.chunk({"x": (10, 70)}))
    assert eager == lazy
    assert abs(eager.dy - 0.35) < 0.12 and abs(eager.dx + 0.25) < 0.12
    # the moved median of the second step kept where the caller says (a streamed analysis: a store)
    kept = []
    held = fit_registration(_da(x).chunk({"y": (20, 1, 49), "x": (33, 47)}), _da(med.astype(np.float32)).chunk({"y": 31}),
                            use.chunk({"x": (10, 70)}), keep=lambda a: kept.append(a) or a.persist())
    assert held == eager and len(kept) == 1 and kept[0].dims == ("band", "y", "x")


# ---------------------------------------------------------------- shift


def test_shift_numpy_hand_and_dask_uneven_chunks():
    ramp = np.tile(np.arange(12, dtype=np.float32), (2, 9, 1)) * 10  # (2, 9, 12), +10 per column
    arr = xr.DataArray(ramp, dims=("band", "y", "x"))
    out = shift(arr, 0.0, 0.5).values
    np.testing.assert_allclose(out[..., :-1], ramp[..., :-1] + 5)  # sampled half a pixel right
    np.testing.assert_allclose(out[..., -1], ramp[..., -1])  # edge repeated
    rng = np.random.default_rng(4)
    a = xr.DataArray(rng.normal(size=(3, 40, 50)).astype(np.float32), dims=("band", "y", "x"))
    e = shift(a, -0.3, 0.7)
    d = shift(a.chunk({"y": (13, 1, 26), "x": (25, 25)}), -0.3, 0.7)
    assert np.array_equal(e.values, d.values)
    np.testing.assert_array_equal(shift(a, 0, 0).values, a.values)
    with pytest.raises(ValueError, match="shift got"):
        shift(a, 1.5, 0)
    with pytest.raises(ValueError, match="shift got"):
        shift_np(np.zeros((4, 4)), 0, -1.2)


# ---------------------------------------------------------------- co-registered baseline


def _history(n: int = 6, h: int = 60, w: int = 70, seed: int = 5):
    rng = np.random.default_rng(seed)
    surf = _surface(h, w, seed)
    dates, clear = [], []
    for _ in range(n):
        dy, dx = rng.uniform(-0.5, 0.5, 2)
        dates.append(_observe(surf, dy, dx, rng.uniform(0.9, 1.1, 4), rng.uniform(-200, 200, 4), rng))
        clear.append(rng.random((h, w)) < 0.95)
    stack = xr.DataArray(np.stack(dates), dims=("time", "band", "y", "x"), coords={"band": BANDS})
    return stack, xr.DataArray(np.stack(clear), dims=("time", "y", "x")), surf


def test_registered_state_shrinks_mad_at_edges():
    stack, clear, surf = _history()
    raw = robust_baseline(stack, clear)
    state, fits = build_registered_state(stack, clear, window=6)
    reg = state_baseline(state)
    assert len(fits) == 6 and all(abs(f.dy) <= 1 and abs(f.dx) <= 1 for f in fits)
    assert fits[0] == Registration.identity(len(BANDS))  # the first date has nothing to register to
    edges = np.zeros(surf.shape[1:], bool)
    edges[19:21, 8:-8] = edges[27:29, 8:-8] = True  # the strip's sharp edges
    mad_raw = np.nanmedian(raw["mad"].values[:, edges])
    mad_reg = np.nanmedian(reg["mad"].values[:, edges])
    assert mad_reg < 0.7 * mad_raw
    assert reg["count"].dtype == np.int16 and reg["median"].dims == ("band", "y", "x")


def test_registered_state_numpy_equals_dask_uneven_chunks():
    stack, clear, _ = _history(n=5, seed=6)
    e, fe = build_registered_state(stack, clear, window=4)
    d, fd = build_registered_state(stack.chunk({"y": (17, 1, 42), "x": (30, 40)}), clear.chunk({"y": 25}), window=4)
    assert fe == fd and any(f.dy or f.dx for f in fe)
    for v in ("ring", "n_obs"):
        assert np.array_equal(e[v].values, d[v].compute().values), v
    with pytest.raises(ValueError, match="min_counts"):
        build_registered_state(stack, clear, window=4, min_counts=[1, 1])


def test_fold_registered_equals_fit_then_aligned_fold_and_leaves_inputs_alone():
    stack, clear, _ = _history(n=3, seed=8)
    state, _ = build_registered_state(stack.isel(time=slice(0, 2)), clear.isel(time=slice(0, 2)), window=4)
    before = state.copy(deep=True)
    x, c = stack.isel(time=2, drop=True), clear.isel(time=2, drop=True)
    new, reg = fold_registered(state, x, c, 2)
    base = state_baseline(state)
    assert reg == fit_registration(x, base["median"], c & (base["count"] >= 2))
    moved, moved_clear = aligned_observation(x, c, reg)
    by_hand = fold(state, moved, moved_clear)
    for v in ("ring", "n_obs"):
        assert np.array_equal(new[v].values, by_hand[v].values)
        assert np.array_equal(state[v].values, before[v].values)  # not mutated
    with pytest.raises(ValueError, match="min_count"):
        fold_registered(state, x, c, 0)


@pytest.mark.parametrize("dy, dx", [(0.37, -0.81), (0.0, 0.0), (-1.0, 0.25)])
def test_aligned_observation_equals_the_float32_steps_it_fuses_eagerly_and_on_uneven_dask_chunks(dy, dx):
    rng = np.random.default_rng(5)
    x = _da(rng.integers(0, 65535, (4, 29, 23), dtype=np.uint16))
    c = xr.DataArray(rng.random((29, 23)) > 0.2, dims=("y", "x"))
    reg = Registration((1.07, 0.93, 1.0, 1.21), (-12.5, 40.0, 0.0, 3.25), dy, dx, 1000)
    # the steps as they were composed before they were fused into one block function each
    counts = apply_inverse(x, reg).round().clip(1, 65534).astype(np.uint16).values
    clear = (shift(c.astype(np.float32), -dy, -dx) > np.float32(0.999)).values if (dy or dx) else c.values
    before = x.copy(deep=True)
    for xs, cs in ((x, c), (x.chunk({"band": (1, 3), "y": (13, 1, 15), "x": (20, 3)}), c.chunk({"y": (5, 24), "x": (1, 22)}))):
        mx, mc = aligned_observation(xs, cs, reg)
        assert mx.dtype == np.uint16 and mc.dtype == bool and mx.dims == ("band", "y", "x")
        assert np.array_equal(mx.values, counts) and np.array_equal(mc.values, clear)
    assert np.array_equal(x.values, before.values)


def test_registered_observation_of_a_date_unlike_its_baseline_adds_no_clear_pixel():
    x = _da(np.full((4, 6, 7), 100, np.uint16))
    c = xr.DataArray(np.ones((6, 7), bool), dims=("y", "x"))
    far = Registration((3.0, 1.0, 1.0, 1.0), (0.0,) * 4, 0.2, 0.0, 1000)
    mx, mc = registered_observation(x, c, far, max_gain_ratio=2.0)
    assert np.array_equal(mx.values, x.values) and not mc.values.any()
    near = replace(far, gain=(1.5, 1.0, 1.0, 1.0))
    mx, mc = registered_observation(x, c, near, max_gain_ratio=2.0)
    assert [a.values.tolist() for a in (mx, mc)] == [a.values.tolist() for a in aligned_observation(x, c, near)]


def test_aligned_observation_keeps_counts_in_range_and_clear_only_with_clear_support():
    x = _da(np.full((4, 6, 7), 100, np.uint16))
    x[:, 2, :] = 65000
    c = xr.DataArray(np.ones((6, 7), bool), dims=("y", "x"))
    c[4, 4] = False
    ident = Registration.identity(4)
    mx, mc = aligned_observation(x, c, ident)
    assert mx is x and mc is c
    reg = Registration((0.5,) * 4, (-100.0,) * 4, 0.0, 0.5, 1000)
    mx, mc = aligned_observation(x, c, reg)
    assert mx.dtype == np.uint16 and int(mx.min()) >= 1 and int(mx.max()) <= 65534
    assert int(mx[0, 0, 0]) == 400  # (100 + 100) / 0.5
    assert int(mx[0, 2, 3]) == 65534  # clipped: 65535 is saturation, 0 an empty ring slot
    # moved by -0.5 px in x: pixel (4, 5) draws on (4, 4) (not clear) and (4, 5)
    assert not bool(mc[4, 4]) and not bool(mc[4, 5]) and bool(mc[4, 3]) and bool(mc[0, 0])


# ---------------------------------------------------------------- hysteresis


def test_hysteresis_hand_example():
    s = np.zeros((8, 10), np.float32)
    s[1, 1:5] = [6, 6, 8, 6]  # grown from the 8
    s[5, 5:9] = [6, 6, 6, 6]  # no seed: dropped
    s[6, 0] = 9  # a lone seed stays
    s[2, 5] = 6  # diagonal neighbour of the seeded run: joins (8-connected)
    s[3, 8] = np.nan
    got = hysteresis_np(s, 5.0, 7.0)
    want = np.zeros_like(got)
    want[1, 1:5] = True
    want[2, 5] = True
    want[6, 0] = True
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(hysteresis_np(s, 7.0, 7.0), s > 7)
    with pytest.raises(ValueError, match="hysteresis thresholds"):
        hysteresis(xr.DataArray(s, dims=("y", "x")), 7.0, 5.0)


def test_hysteresis_numpy_equals_dask_across_chunks():
    rng = np.random.default_rng(7)
    s = ndimage.gaussian_filter(rng.normal(0, 1, (60, 70)), 2).astype(np.float32) * 20
    s[rng.random(s.shape) < 0.02] = np.nan
    e = hysteresis(xr.DataArray(s, dims=("y", "x")), 2.0, 5.0).values
    d = hysteresis(xr.DataArray(s, dims=("y", "x")).chunk({"y": (13, 1, 46), "x": (35, 35)}), 2.0, 5.0).values
    assert np.array_equal(e, d)
    assert e.any() and (e != (np.nan_to_num(s) > 5)).any()  # grows beyond the seeds
    empty = hysteresis(xr.DataArray(np.zeros((10, 10), np.float32), dims=("y", "x")).chunk(4), 1.0, 2.0)
    assert not empty.values.any()
    # the score and the labels kept where the caller says (a streamed analysis: a store)
    kept = []
    k = hysteresis(xr.DataArray(s, dims=("y", "x")).chunk({"y": (13, 1, 46), "x": (35, 35)}), 2.0, 5.0,
                   keep=lambda a: kept.append(a.dtype) or a.persist()).values
    assert np.array_equal(k, e) and kept == [np.float32, np.int32]


# ---------------------------------------------------------------- default change pathway


def _misregistered_case(seed: int = 8):
    stack, clear, surf = _history(n=7, h=64, w=72, seed=seed)
    rng = np.random.default_rng(seed + 100)
    scene = _observe(surf, 0.45, -0.4, [1.04, 0.96, 1.0, 1.08], [90, -60, 10, -150], rng)
    scene[:, 8:12, 50:54] = np.clip(scene[:, 8:12, 50:54].astype(int) + 2500, 1, 65535)  # new bright object, 4 x 4 px
    truth = np.zeros((64, 72), bool)
    truth[8:12, 50:54] = True
    return stack, clear, scene, truth


def test_default_change_flags_object_not_misregistered_edges():
    stack, clear, scene, truth = _misregistered_case()
    sc_clear = xr.DataArray(np.ones(truth.shape, bool), dims=("y", "x"))
    p = ChangeParams()
    out, norm = change(_scene(scene), sc_clear, change_baseline(stack, clear, p), BANDS, p)
    assert set(norm) == {"gain", "offset", "shift_px"}
    got = out["change"].values
    assert got[truth].mean() > 0.9
    assert not got[~ndimage.binary_dilation(truth, iterations=1)].any()
    # without co-registration the strip's edges score far higher (here still below the seed threshold)
    legacy = replace(p, coregister=False)
    out_l, _ = change(_scene(scene), sc_clear, change_baseline(stack, clear, legacy), BANDS, legacy)
    edges = np.zeros(truth.shape, bool)
    edges[19:21, 8:-8] = edges[27:29, 8:-8] = True
    s_def, s_leg = out["change_score"].values[edges], out_l["change_score"].values[edges]
    assert np.nanpercentile(s_def, 95) < 0.6 * np.nanpercentile(s_leg, 95)


def test_default_change_numpy_equals_dask_uneven_chunks():
    stack, clear, scene, truth = _misregistered_case(seed=9)
    sc_clear = xr.DataArray(np.random.default_rng(10).random(truth.shape) < 0.95, dims=("y", "x"))
    base = change_baseline(stack, clear)
    e, ne = change(_scene(scene), sc_clear, base, BANDS)
    base_d = change_baseline(stack.chunk({"y": (20, 1, 43), "x": (36, 36)}), clear.chunk({"x": 25}))
    d, nd = change(_scene(scene).chunk({"y": (30, 34), "x": (11, 61)}), sc_clear.chunk({"y": 17}), base_d, BANDS)
    assert ne == nd
    for v in ("change_score", "change", "delta_brightness"):
        assert np.array_equal(e[v].values, d[v].values, equal_nan=True), v
    assert e["change"].values[truth].any()


def test_change_params_validation_and_coregister_with_gain_offset():
    with pytest.raises(ValueError, match="grow_threshold"):
        ChangeParams(threshold=5.0, grow_threshold=6.0)
    with pytest.raises(ValueError, match="grow_threshold"):
        ChangeParams(grow_threshold=0.0)
    ChangeParams(grow_threshold=None)  # plain threshold allowed
    stack, clear, scene, truth = _misregistered_case(seed=11)
    with pytest.raises(ValueError, match="coregister"):
        change(_scene(scene), xr.DataArray(np.ones(truth.shape, bool), dims=("y", "x")), change_baseline(stack, clear), BANDS,
               gain_offset=([1.0] * 4, [0.0] * 4))


def test_registration_falls_back_to_mean_std_match_on_few_pixels():
    """A fit on < MIN_FRACTION of the grid (a mostly cloudy date) has no shift and matches mean
    and standard deviation, as the gain/offset-only normalisation does."""
    from sitewatch.kernels.change import gain_offset_from_sums, normalisation_sums_np

    rng = np.random.default_rng(12)
    surf = _surface(90, 100)
    median = (np.rint(2 * surf) / 2).astype(np.float32)
    x = _observe(surf, 0.4, 0.0, [0.9, 1.1, 1.0, 0.95], [120, -80, 30, 200], rng)
    use = np.zeros((90, 100), bool)
    use[30:60, 40:50] = True  # 300 px = 3.3 % of the grid
    reg = fit_registration(_da(x), _da(median), xr.DataArray(use, dims=("y", "x")))
    # the match is over the fit's inliers: differences from the median within the trimmed band
    centre, tol = inlier_band(difference_hist_np(np.concatenate([x, median, use[None]]).astype(np.float32), 4, HIST_HALF))
    d = np.rint(2.0 * x).astype(np.int64) - np.rint(2.0 * median).astype(np.int64)
    inl = use & (np.abs(d - centre[:, None, None]) <= tol[:, None, None]).all(axis=0)
    assert 0.9 * 300 < inl.sum() < 300
    assert reg.dy == reg.dx == 0.0 and reg.pixels == int(inl.sum())
    g, o = gain_offset_from_sums(normalisation_sums_np(x, median, inl))
    np.testing.assert_allclose(reg.gain, 1 / g, rtol=1e-12)
    np.testing.assert_allclose(reg.offset, -o / g, rtol=1e-9)
    shifted = fit_registration(_da(x), _da(median), xr.DataArray(use, dims=("y", "x")), min_fraction=0.01)
    assert shifted.dy != 0.0  # the same pixels with a lower bar: the least-squares fit with shift


def test_a_large_real_change_does_not_inflate_the_gain():
    """A cleared field over 6 % of the grid (red +2500, nir -1700 counts) stays out of the gain:
    without the inlier band its standard-deviation ratio would be far from 1."""
    rng = np.random.default_rng(13)
    surf = _surface(64, 64)
    median = (np.rint(2 * surf) / 2).astype(np.float32)
    x = _observe(surf, 0.0, 0.0, [1.0] * 4, [0.0] * 4, rng).astype(np.int64)
    x[2, 30:46, 20:36] += 2500
    x[3, 30:46, 20:36] -= 1700
    use = xr.DataArray(np.ones((64, 64), bool), dims=("y", "x"))
    reg = fit_registration(_da(x.astype(np.uint16)), _da(median), use)
    np.testing.assert_allclose(reg.gain, 1.0, atol=0.03)
    all_px = registration_from_sums(registration_sums_np(np.pad(np.concatenate([x, median, use.values[None]]).astype(np.float32),
                                                                ((0, 0), (1, 1), (1, 1)), mode="edge"), 4))
    assert max(abs(g - 1) for g in all_px.gain) > 0.15  # what the untrimmed fit would give


def test_registration_steps_validated():
    x = _da(np.full((4, 12, 12), 100, np.uint16))
    use = xr.DataArray(np.ones((12, 12), bool), dims=("y", "x"))
    with pytest.raises(ValueError, match="steps got 0"):
        fit_registration(x, x.astype(np.float32), use, steps=0)
    with pytest.raises(ValueError, match="least_squares_on"):
        fit_once(x, x.astype(np.float32), use, least_squares_on="some")


def test_a_date_unlike_its_baseline_is_not_comparable_and_adds_nothing():
    """Snow over the site (every band x 3): the fitted gain is far beyond max_gain_ratio, so the
    date is not comparable; fold_registered adds no observation, change() scores nothing."""
    from sitewatch.kernels.register import comparable

    stack, clear, _ = _history(n=3, seed=9)
    state, _ = build_registered_state(stack, clear, window=4)
    snow = (stack.isel(time=2, drop=True).astype(np.float32) * 3 + 500).clip(1, 65534).astype(np.uint16)
    c = clear.isel(time=2, drop=True)
    new, reg = fold_registered(state, snow, c, 2)
    assert not comparable(reg) and max(reg.gain) > 2.0
    assert np.array_equal(new["n_obs"].values, state["n_obs"].values)
    assert comparable(reg, max_gain_ratio=max(max(reg.gain), 1 / min(reg.gain)) + 0.01)
    out, _ = change(_scene(snow.values), c, state_baseline(state, indices=ChangeParams().indices), BANDS, ChangeParams(), registration=reg)
    assert np.isnan(out["change_score"].values).all() and not out["change"].values.any()
    with pytest.raises(ValueError, match="max_gain_ratio"):
        ChangeParams(max_gain_ratio=1.0)


def test_edge_px_drops_scores_next_to_pixels_that_are_not_clear():
    stack, clear, _ = _history(n=4, seed=14)
    state, _ = build_registered_state(stack.isel(time=slice(0, 3)), clear.isel(time=slice(0, 3)), window=4)
    x = stack.isel(time=3, drop=True)
    c = xr.DataArray(np.ones(clear.shape[1:], bool), dims=("y", "x"))
    c[30:34, 40:44] = False  # a small cloud
    base = state_baseline(state, indices=ChangeParams().indices)
    s0 = change(_scene(x.values), c, base, BANDS, ChangeParams())[0]["change_score"].values
    s1 = change(_scene(x.values), c, base, BANDS, ChangeParams(edge_px=1))[0]["change_score"].values
    ring = np.zeros(c.shape, bool)
    ring[29:35, 39:45] = True
    ring[30:34, 40:44] = False
    assert np.isfinite(s0[ring]).sum() > 5 and np.isnan(s1[ring]).all()
    assert np.array_equal(np.isfinite(s1), np.isfinite(s0) & ~ring)
    with pytest.raises(ValueError, match="edge_px"):
        ChangeParams(edge_px=-1)


def test_seasonal_registered_state_numpy_equals_dask_and_fits_against_the_date_s_season():
    """With ``season_days`` each date is registered to the seasonal baseline of its own date (the
    one its change is scored against): numpy == dask (uneven chunks), the dates recorded, and a
    date's fold equals the fit against ``state_baseline(state, date, season_days)`` then the fold."""
    stack, clear, _ = _history(n=6, seed=9)
    times = np.array(["2024-06-20", "2024-12-30", "2025-01-04", "2025-06-10", "2025-06-25", "2025-12-28"], "datetime64[ns]")
    stack, clear = stack.assign_coords(time=times), clear.assign_coords(time=times)
    ones = [1] * 6  # a pixel with one in-season observation takes part in the fit
    e, fe = build_registered_state(stack, clear, window=6, min_counts=ones, season_days=20)
    d, fd = build_registered_state(stack.chunk({"y": (17, 1, 42), "x": (30, 40)}), clear.chunk({"y": 25}), window=6,
                                   min_counts=ones, season_days=20)
    assert fe == fd
    for v in ("ring", "n_obs", "day"):
        assert np.array_equal(e[v].values, d[v].compute().values), v
    # 2024-12-30 has no earlier date in season (identity), 2025-01-04 has it; 2025-06-10 has 2024-06-20
    assert fe[1] == Registration.identity(len(BANDS)) and fe[2] != fe[1] and fe[3] != Registration.identity(len(BANDS))
    last_n, _ = build_registered_state(stack, clear, window=6, min_counts=ones)
    assert not np.array_equal(last_n["ring"].values, e["ring"].values)  # other baselines, other registrations
    state, _ = build_registered_state(stack.isel(time=slice(0, 5)), clear.isel(time=slice(0, 5)), window=6,
                                      min_counts=ones[:5], season_days=20)
    x, c = stack.isel(time=5, drop=True), clear.isel(time=5, drop=True)
    new, reg = fold_registered(state, x, c, 1, day=times[5], season_days=20)
    base = state_baseline(state, times[5], 20)
    assert reg == fit_registration(x, base["median"], c & (base["count"] >= 1))
    moved, moved_clear = aligned_observation(x, c, reg)
    by_hand = fold(state, moved, moved_clear, times[5])
    for v in ("ring", "n_obs", "day"):
        assert np.array_equal(new[v].values, by_hand[v].values), v
    with pytest.raises(ValueError, match="got no day"):
        fold_registered(state, x, c, 1, season_days=20)
    with pytest.raises(ValueError, match="without dates"):
        build_registered_state(stack.drop_vars("time"), clear, window=6, season_days=20)
    with pytest.raises(ValueError, match="days got 2 date"):
        build_registered_state(stack, clear, window=6, days=times[:2])
