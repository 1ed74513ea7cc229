"""Tests for sitewatch.kernels.baseline_ring: the per-pixel ring of the last W clear observations."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.baseline import BaselineParams, baseline_np
from sitewatch.kernels.baseline_ring import (
    build_state, empty_state, fold, fold_np, fold_stack_np, state_baseline, state_baseline_np,
)

BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _stack(seed=0, t=11, h=40, w=50, p_clear=0.5):
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 6000, size=(t, len(BANDS), h, w), dtype=np.uint16)
    values[:, :, :5, :5] = rng.integers(1000, 1003, size=(t, len(BANDS), 5, 5), dtype=np.uint16)  # ties
    clear = rng.random((t, h, w)) < p_clear
    clear[:, 0, 10:20] = False  # never clear
    clear[:, 1, :] = True  # always clear
    return values, clear


def _last_w_reference(values, clear, window):
    """baseline_np over each pixel's last ``window`` clear observations, selected by numpy."""
    t = clear.shape[0]
    rank_from_end = np.cumsum(clear[::-1], axis=0)[::-1]  # 1 = the last clear observation
    keep = clear & (rank_from_end <= window)
    return baseline_np(values.transpose(2, 3, 0, 1), keep.transpose(1, 2, 0)), keep.sum(axis=0), t


def _xr(values, clear):
    t, _, h, w = values.shape
    coords = {"time": np.arange(t), "band": BANDS, "y": np.arange(h) * 10.0, "x": np.arange(w) * 10.0}
    stack = xr.DataArray(values, dims=("time", "band", "y", "x"), coords=coords)
    return stack, xr.DataArray(clear, dims=("time", "y", "x"), coords={k: coords[k] for k in ("time", "y", "x")})


def _np_state(values, clear, window, days=None):
    _, nb, h, w = values.shape
    ring = np.zeros((h, w, window, nb), np.uint16)
    n = np.zeros((h, w), np.uint32)
    day = np.zeros((h, w, window), np.uint16)
    for i in range(values.shape[0]):
        ring, n, day = fold_np(ring, n, day, values[i].transpose(1, 2, 0), clear[i], None if days is None else days[i])
    return ring, n, day


@pytest.mark.parametrize("window", [1, 3, 8, 20])
def test_folding_one_by_one_equals_baseline_of_last_w_clear(window):
    values, clear = _stack()
    ring, n, _ = _np_state(values, clear, window)
    (med_ref, mad_ref, count_ref), n_keep, _ = _last_w_reference(values, clear, window)
    med, mad, count = state_baseline_np(ring, n)
    np.testing.assert_array_equal(n, clear.sum(axis=0))
    np.testing.assert_array_equal(count, np.minimum(clear.sum(axis=0), window))
    np.testing.assert_array_equal(count, count_ref)
    np.testing.assert_array_equal(med, med_ref)  # bitwise, NaN where never clear
    np.testing.assert_array_equal(mad, mad_ref)
    assert np.isnan(med[0, 10:20]).all() and (count[0, 10:20] == 0).all()


def test_window_larger_than_history_equals_plain_baseline():
    values, clear = _stack(seed=4, t=6)
    ring, n, _ = _np_state(values, clear, 8)
    ref = baseline_np(values.transpose(2, 3, 0, 1), clear.transpose(1, 2, 0))
    for got, want in zip(state_baseline_np(ring, n), ref):
        np.testing.assert_array_equal(got, want)


def test_ring_overwrites_oldest_and_keeps_empty_zero():
    ring = np.zeros((1, 3, 1), np.uint16)
    n = np.zeros(1, np.uint32)
    day = np.zeros((1, 3), np.uint16)
    seen = []
    for i, v in enumerate((10, 20, 30, 40, 50)):
        ring, n, day = fold_np(ring, n, day, np.array([[v]], np.uint16), np.array([True]), 20000 + i)
        seen.append(sorted(ring[0, :, 0].tolist()))
    assert seen == [[0, 0, 10], [0, 10, 20], [10, 20, 30], [20, 30, 40], [30, 40, 50]]
    assert int(n[0]) == 5
    assert day[0].tolist() == [20003, 20004, 20002]  # each slot's date travels with its value
    ring2, n2, day2 = fold_np(ring, n, day, np.array([[99]], np.uint16), np.array([False]), 20010)  # not clear: unchanged
    np.testing.assert_array_equal(ring2, ring)
    np.testing.assert_array_equal(day2, day)
    assert int(n2[0]) == 5


def test_stack_fold_equals_one_by_one_and_inputs_not_mutated():
    values, clear = _stack(seed=2)
    days = np.arange(20000, 20000 + values.shape[0], dtype=np.uint16)
    ring0, n0, day0 = _np_state(values[:4], clear[:4], 5, days)
    keep = (ring0.copy(), n0.copy(), day0.copy(), values.copy(), clear.copy())
    ring_a, n_a, day_a = fold_stack_np(ring0, n0, day0, values[4:].transpose(2, 3, 0, 1), clear[4:].transpose(1, 2, 0), days[4:])
    ring_b, n_b, day_b = _np_state(values, clear, 5, days)
    np.testing.assert_array_equal(ring_a, ring_b)
    np.testing.assert_array_equal(n_a, n_b)
    np.testing.assert_array_equal(day_a, day_b)
    for a, b in zip(keep, (ring0, n0, day0, values, clear)):
        np.testing.assert_array_equal(a, b)


def test_stored_layout_in_and_out_without_transposing_and_same_values():
    """The state as stored, (k, band, y, x), reaches the kernels as a core-last view (apply_ufunc):
    fold and baseline give the same values as from core-last C arrays, and their outputs are
    planar again once the wrapper transposes them back (contiguous chunks for the store)."""
    values, clear = _stack(seed=3)
    days = np.arange(20000, 20000 + values.shape[0], dtype=np.uint16)
    ring_c, n, day_c = _np_state(values[:6], clear[:6], 5, days)  # core-last, C-contiguous
    ring_p = np.ascontiguousarray(ring_c.transpose(2, 3, 0, 1))  # stored layout (k, band, y, x)
    day_p = np.ascontiguousarray(day_c.transpose(2, 0, 1))
    ring_v, day_v = np.moveaxis(ring_p, (0, 1), (-2, -1)), np.moveaxis(day_p, 0, -1)  # what apply_ufunc passes
    v = np.moveaxis(values[6], 0, -1)
    keep = (ring_p.copy(), day_p.copy(), n.copy())
    out_c = fold_np(ring_c, n, day_c, v, clear[6], int(days[6]))
    out_v = fold_np(ring_v, n, day_v, v, clear[6], int(days[6]))
    for a, b in zip(out_c, out_v):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(keep, (ring_p, day_p, n)):
        np.testing.assert_array_equal(a, b)  # inputs not modified
    assert np.moveaxis(out_v[0], (-2, -1), (0, 1)).flags.c_contiguous
    assert np.moveaxis(out_v[2], -1, 0).flags.c_contiguous
    base_c = state_baseline_np(out_c[0], out_c[1], out_c[2])
    base_v = state_baseline_np(np.moveaxis(np.ascontiguousarray(np.moveaxis(out_v[0], (-2, -1), (0, 1))), (0, 1), (-2, -1)),
                               out_v[1], out_v[2])
    for a, b in zip(base_c, base_v):
        np.testing.assert_array_equal(a, b)
    assert np.moveaxis(base_v[0], -1, 0).flags.c_contiguous and np.moveaxis(base_v[1], -1, 0).flags.c_contiguous


@pytest.mark.parametrize("chunks", [{"y": 13, "x": 17}, {"y": 40, "x": 7}])
def test_xarray_numpy_and_dask_uneven_chunks_identical(chunks):
    values, clear = _stack(seed=5)
    stack, clear_da = _xr(values, clear)
    params = BaselineParams(window=4)
    eager = build_state(stack[:7], clear_da[:7], params)
    for i in range(7, values.shape[0]):
        eager = fold(eager, stack[i], clear_da[i])
    lazy = build_state(stack[:7].chunk(chunks), clear_da[:7].chunk({"y": 9, "x": 23}), params)
    for i in range(7, values.shape[0]):
        lazy = fold(lazy, stack[i].chunk(chunks), clear_da[i])
    assert lazy["ring"].chunks is not None
    b_eager, b_lazy = state_baseline(eager), state_baseline(lazy.chunk({"y": 11}))
    assert b_lazy["median"].chunks is not None
    xr.testing.assert_identical(eager.compute(), lazy.compute())
    xr.testing.assert_identical(b_eager, b_lazy.compute())
    ref, _, _ = _last_w_reference(values, clear, 4)
    np.testing.assert_array_equal(b_eager["median"].values, ref[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(b_eager["count"].values, ref[2])
    assert b_eager["median"].dims == ("band", "y", "x") and list(b_eager["band"].values) == BANDS
    np.testing.assert_array_equal(b_eager["x"].values, stack["x"].values)


def test_empty_state_has_no_baseline():
    values, clear = _stack(t=1)
    stack, _ = _xr(values, clear)
    st = empty_state(stack.isel(time=0, band=0, drop=True).chunk({"y": 7}), BANDS, BaselineParams(window=3))
    assert st["ring"].shape == (3, len(BANDS), 40, 50) and st["ring"].chunks is not None
    b = state_baseline(st).compute()
    assert np.isnan(b["median"].values).all() and (b["count"].values == 0).all()


def test_bad_inputs_are_named():
    ring = np.zeros((2, 2, 3, 4), np.uint16)
    n = np.zeros((2, 2), np.uint32)
    day = np.zeros((2, 2, 3), np.uint16)
    with pytest.raises(ValueError, match="clear value"):
        fold_np(ring, n, day, np.zeros((2, 2, 4), np.uint16), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="dtype"):
        fold_np(ring, n, day, np.ones((2, 2, 4), np.float32), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="values got shape"):
        fold_np(ring, n, day, np.ones((2, 2, 5), np.uint16), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="day got shape"):
        fold_np(ring, n, day[..., :2], np.ones((2, 2, 4), np.uint16), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="day got dtype"):
        state_baseline_np(ring, n, day.astype(np.int32))
    with pytest.raises(ValueError, match="obs_days"):
        fold_stack_np(ring, n, day, np.ones((2, 2, 2, 4), np.uint16), np.ones((2, 2, 2), bool), np.array([1], np.uint16))
    with pytest.raises(ValueError, match="n_obs got shape"):
        state_baseline_np(ring, np.zeros((3, 2), np.uint32))
    with pytest.raises(ValueError, match="ring got dtype"):
        state_baseline_np(ring.astype(np.int32), n)
    values, clear = _stack(t=2)
    stack, clear_da = _xr(values, clear)
    st = build_state(stack, clear_da, BaselineParams(window=2))
    with pytest.raises(ValueError, match="bands got"):
        fold(st, stack[0].isel(band=[1, 0, 2, 3]), clear_da[0])
    with pytest.raises(ValueError, match="values dims"):
        fold(st, stack[0].rename(band="b"), clear_da[0])


# ---------------------------------------------------------------- seasonal window

DAY0 = int((np.datetime64("2024-01-01") - np.datetime64("1970-01-01")).astype(int))


def _seasonal_reference(values, clear, days, window, target, season_days):
    """baseline_np over each pixel's last ``window`` clear observations that are in season."""
    from sitewatch.kernels.season import in_season_np

    rank_from_end = np.cumsum(clear[::-1], axis=0)[::-1]
    keep = clear & (rank_from_end <= window) & in_season_np(days, target, season_days)[:, None, None]
    return baseline_np(values.transpose(2, 3, 0, 1), keep.transpose(1, 2, 0))


@pytest.mark.parametrize("window,season_days", [(6, 20), (30, 45), (30, 182), (12, 1)])
def test_seasonal_baseline_uses_only_in_season_observations(window, season_days):
    values, clear = _stack(seed=7, t=40, h=12, w=15)
    rng = np.random.default_rng(7)
    days = (DAY0 + np.cumsum(rng.integers(5, 40, 40))).astype(np.uint16)  # irregular revisits over ~3 years
    ring, n, day = _np_state(values, clear, window, days)
    for target in (int(days[-1]) + 10, DAY0 + 366 * 2 + 180, DAY0 + 366 + 364):  # a leap year: 2024
        got = state_baseline_np(ring, n, day, target, season_days)
        want = _seasonal_reference(values, clear, days, window, target, season_days)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    # the last-N baseline is the same ring with every filled slot
    for g, w in zip(state_baseline_np(ring, n, day), state_baseline_np(ring, n)):
        np.testing.assert_array_equal(g, w)


def test_summer_scene_scores_low_against_its_season_and_high_against_the_last_n():
    """One pixel with a seasonal cycle (bright in summer, dark in winter), every 10 days for two
    and a half years, under cloud from March to June 2026: on 1 July 2026 the seasonal baseline
    (W = 40, +-30 days) is last June-July's, the default last-N one (W = 8) this winter's."""
    from sitewatch.kernels.change import ChangeParams, change_score_np
    from sitewatch.kernels.season import epoch_days

    rng = np.random.default_rng(3)
    days = np.arange(np.datetime64("2024-01-05"), np.datetime64("2026-06-25"), 10).astype("datetime64[D]")
    doy = np.array([(d - d.astype("datetime64[Y]")).astype(int) for d in days])
    level = 2000 + 1000 * np.cos(2 * np.pi * (doy - 182) / 365.25)  # peak around 1 July
    values = np.rint(level[:, None] * np.array([0.5, 0.8, 1.0, 1.3]) + rng.normal(0, 20, (len(days), 4)))
    values = values.astype(np.uint16)[:, :, None, None]
    clear = ~((days >= np.datetime64("2026-03-01")) & (days < np.datetime64("2026-06-25")))[:, None, None]
    scene = np.rint(3000 * np.array([0.5, 0.8, 1.0, 1.3])).astype(np.uint16)[None, None, :]
    july = int(epoch_days([np.datetime64("2026-07-01")])[0])

    def score(window, *season):
        ring, n, day = _np_state(values, clear, window, epoch_days(days))
        med, mad, count = state_baseline_np(ring, n, day, *season)
        return float(change_score_np(scene, np.ones((1, 1), bool), med, mad, count, np.ones(4), np.zeros(4),
                                     ChangeParams())[0, 0]), int(count[0, 0]), med[0, 0, 2]

    seasonal, n_season, med_season = score(40, july, 30)
    last_n, n_last, med_last = score(8)
    assert n_last == 8 and n_season == 6  # last June-July (1 June .. 31 July)
    assert 2800 < med_season < 3050 and med_last < 1500  # summer's red, winter's
    assert seasonal < 3 < ChangeParams().threshold < last_n, (seasonal, last_n)


@pytest.mark.parametrize("chunks", [{"y": 13, "x": 17}, {"y": 40, "x": 7}])
def test_seasonal_xarray_numpy_and_dask_uneven_chunks_identical(chunks):
    values, clear = _stack(seed=8, t=30)
    times = np.datetime64("2024-11-20T10:30") + np.arange(30) * np.timedelta64(9, "D")  # over two year ends
    stack, clear_da = _xr(values, clear)
    stack, clear_da = stack.assign_coords(time=times), clear_da.assign_coords(time=times)
    params = BaselineParams(window=20, season_days=25)
    eager = build_state(stack[:12], clear_da[:12], params)
    lazy = build_state(stack[:12].chunk(chunks), clear_da[:12].chunk({"y": 9, "x": 23}), params)
    for i in range(12, 30):
        eager = fold(eager, stack[i], clear_da[i], times[i])
        lazy = fold(lazy, stack[i].chunk(chunks), clear_da[i], times[i])
    xr.testing.assert_identical(eager.compute(), lazy.compute())
    target = np.datetime64("2026-01-02")
    b_eager = state_baseline(eager, target, 25)
    b_lazy = state_baseline(lazy.chunk({"y": 11}), target, 25)
    assert b_lazy["median"].chunks is not None
    xr.testing.assert_identical(b_eager, b_lazy.compute())
    ref = _seasonal_reference(values, clear, _days(times), 20,
                              int(_days([target])[0]), 25)
    np.testing.assert_array_equal(b_eager["median"].values, ref[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(b_eager["count"].values, ref[2])
    assert 0 < b_eager["count"].values.mean() < state_baseline(eager)["count"].values.mean()  # a real selection


def _days(times):
    from sitewatch.kernels.season import epoch_days

    return epoch_days(np.asarray(times))


def test_seasonal_validation_errors_name_the_problem():
    values, clear = _stack(t=3)
    stack, clear_da = _xr(values, clear)  # integer times: no dates
    st = build_state(stack, clear_da, BaselineParams(window=3))
    assert (st["day"].values == 0).all()  # folded without dates: unknown (0)
    with pytest.raises(ValueError, match="no date"):
        state_baseline(st, season_days=30)
    with pytest.raises(ValueError, match="season_days got 0"):
        state_baseline(st, np.datetime64("2026-01-01"), 0)
    with pytest.raises(ValueError, match="without dates"):
        build_state(stack, clear_da, BaselineParams(window=3, season_days=30))
    with pytest.raises(ValueError, match="days got 2 date"):
        build_state(stack, clear_da, BaselineParams(window=3), days=["2026-01-01", "2026-01-02"])
    with pytest.raises(ValueError, match="observation date"):
        fold(st, stack[0], clear_da[0], "yesterday")
    with pytest.raises(ValueError, match="lacks 'day'"):
        state_baseline(st.drop_vars("day"))
    with pytest.raises(ValueError, match="no target date"):
        state_baseline_np(st["ring"].values.transpose(2, 3, 0, 1), st["n_obs"].values,
                          st["day"].values.transpose(1, 2, 0), None, 30)
    for bad in (0, 183, True):
        with pytest.raises(ValueError, match="season_days got"):
            BaselineParams(window=60, season_days=bad)
    assert BaselineParams(window=60, season_days=30).season_days == 30 and BaselineParams().season_days is None
