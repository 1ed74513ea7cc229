"""Tests for sitewatch.kernels.indices: definitions, per-observation values, ring-pass index
median/MAD (numpy and dask with uneven chunks), the stack path, z-scores and their guards."""

from __future__ import annotations

from dataclasses import replace

import dask
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels.baseline import BaselineParams
from sitewatch.kernels.baseline_ring import build_state, state_baseline, state_baseline_np
from sitewatch.kernels.indices import (
    INDEX_DEFS, INDICES, IndexDef, index_baseline, index_plan, index_values_np, index_z2_np, require_index_names,
)

BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _stack(seed=0, t=9, h=30, w=40, p_clear=0.6):
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 6000, size=(t, len(BANDS), h, w), dtype=np.uint16)
    values[:, :, :3, :3] = rng.integers(5, 40, size=(t, len(BANDS), 3, 3), dtype=np.uint16)  # dark (water-like) corner
    clear = rng.random((t, h, w)) < p_clear
    clear[:, 0, 10:20] = False  # never clear
    coords = {"time": np.arange(t), "band": BANDS, "y": np.arange(h) * 10.0, "x": np.arange(w) * 10.0}
    return (xr.DataArray(values, dims=("time", "band", "y", "x"), coords=coords),
            xr.DataArray(clear, dims=("time", "y", "x"), coords={k: coords[k] for k in ("time", "y", "x")}))


def test_plan_skips_indices_the_bands_lack_and_says_which():
    p = index_plan(INDICES, BANDS)
    assert p.names == INDICES and p.skipped == ()
    four = index_plan(INDICES, ["blue", "green", "red", "nir"])
    assert four.names == ("ndvi", "brightness") and four.skipped == ("nbr", "swir")
    # Landsat Colorado's three bands: SWIR from swir16 alone, no NBR (needs swir22)
    lc = index_plan(INDICES, ["red", "nir", "swir16"])
    assert lc.names == ("ndvi", "brightness", "swir") and lc.skipped == ("nbr",)
    np.testing.assert_allclose(lc.num[2], [0, 0, 1e-4])
    assert index_plan((), BANDS).names == ()


def test_index_values_by_hand():
    x = np.zeros((2, len(BANDS)), np.float32)
    x[0] = [500, 700, 1000, 3000, 2000, 1000]
    x[1] = [10, 12, 10, 30, 8, 6]  # dark: nir + red = 40 counts, far below the 1000-count floor
    p = index_plan(INDICES, BANDS)
    v = index_values_np(x, p.num, p.den, p.den_floor)
    np.testing.assert_allclose(v[0], [0.5, 0.5, np.mean(x[0]) * 1e-4, 0.15], rtol=1e-6)
    # the floored denominator: (30 - 10) / 1000, not (30 - 10) / 40 = 0.5
    np.testing.assert_allclose(v[1, :2], [0.02, 0.024], rtol=1e-6)
    assert v.dtype == np.float32


def test_ring_index_stats_are_the_median_of_per_observation_indices():
    stack, clear = _stack()
    st = build_state(stack, clear, BaselineParams(window=5))
    b = state_baseline(st, indices=INDICES)
    p = index_plan(INDICES, BANDS)
    vals = index_values_np(np.moveaxis(stack.values, 1, -1), p.num, p.den, p.den_floor)  # (t, y, x, index)
    rank_from_end = np.cumsum(clear.values[::-1], axis=0)[::-1]
    keep = clear.values & (rank_from_end <= 5)
    for (y, x) in [(1, 1), (5, 7), (29, 39), (12, 3)]:
        obs = vals[keep[:, y, x], y, x]  # (c, index)
        med = np.median(obs, axis=0)
        mad = np.median(np.abs(obs - med), axis=0)
        np.testing.assert_allclose(b["index_median"].values[:, y, x], med, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(b["index_mad"].values[:, y, x], mad, rtol=1e-5, atol=1e-6)
    # the median of NDVI, not the NDVI of the band medians (they differ somewhere)
    nir, red = b["median"].sel(band="nir"), b["median"].sel(band="red")
    of_median = ((nir - red) / np.maximum(nir + red, 1000)).values
    assert np.nanmax(np.abs(of_median - b["index_median"].sel(index="ndvi").values)) > 0.05
    # no clear observation: NaN
    assert np.isnan(b["index_median"].values[:, 0, 10:20]).all()
    assert b["index_median"].dims == ("index", "y", "x") and list(b["index"].values) == list(INDICES)


def test_indices_leave_the_band_baseline_unchanged_and_numpy_equals_dask_uneven_chunks():
    stack, clear = _stack(seed=3)
    st = build_state(stack, clear, BaselineParams(window=4))
    plain = state_baseline(st)
    eager = state_baseline(st, indices=INDICES)
    lazy = state_baseline(build_state(stack.chunk({"y": (11, 1, 18), "x": (25, 15)}), clear.chunk({"y": 7}), BaselineParams(window=4)),
                          indices=INDICES)
    assert lazy["index_median"].chunks is not None
    bands_part = eager[["median", "mad", "count"]]
    bands_part.attrs = dict(plain.attrs)
    xr.testing.assert_identical(plain, bands_part)
    xr.testing.assert_identical(eager, lazy.compute())
    four = state_baseline(build_state(stack.sel(band=BANDS[:4]), clear, BaselineParams(window=4)), indices=INDICES)
    assert list(four["index"].values) == ["ndvi", "brightness"] and four.attrs["indices_skipped"] == ["nbr", "swir"]


def test_stack_path_matches_the_ring_pass():
    stack, clear = _stack(seed=4, t=5)
    ring = state_baseline(build_state(stack, clear, BaselineParams(window=5)), indices=INDICES)
    direct = index_baseline(stack, clear, INDICES)
    lazy = index_baseline(stack.chunk({"y": (13, 17), "x": (9, 31)}), clear, INDICES)
    for v in ("index_median", "index_mad"):
        np.testing.assert_allclose(direct[v].values, ring[v].values, rtol=1e-6, atol=1e-6)
        xr.testing.assert_identical(direct[v], lazy[v].compute())


def test_z_scores_and_the_dark_pixel_guard():
    p = index_plan(("ndvi",), ["red", "nir"])
    # vegetated pixel: NDVI 0.6 +- small MAD; the scene's NDVI drops to ~0.2
    z2 = index_z2_np(np.array([[1000.0, 2000.0]]), np.ones(2), np.zeros(2), np.array([[0.6]]), np.array([[0.005]]), p)
    np.testing.assert_allclose(np.sqrt(z2), [abs(1 / 3 - 0.6) / 0.04], rtol=1e-5)  # floored at 0.04, not 1.4826 * 0.005
    # water: red ~50, nir ~30 counts; a change of 10-20 counts would move the raw NDVI by 0.2
    # (-0.25 -> -0.45, z ~ 5 at the 0.04 floor); with the 1000-count denominator floor it moves 0.03
    base = np.array([[(30 - 50) / 1000.0]])
    z2 = index_z2_np(np.array([[60.0, 23.0]]), np.ones(2), np.zeros(2), base, np.array([[0.001]]), p)
    assert np.sqrt(z2[0]) < 1.0
    # gain/offset map the scene into the baseline's radiometry before the index is taken
    z_id = index_z2_np(np.array([[1000.0, 2000.0]]), np.array([0.5, 0.5]), np.array([0.0, 0.0]), np.array([[1 / 3]]), np.array([[0.0]]), p)
    assert z_id[0] == pytest.approx(0.0, abs=1e-10)
    # NaN baseline stays NaN; inputs are not modified
    vals = np.array([[1000.0, 2000.0]])
    keep = vals.copy()
    assert np.isnan(index_z2_np(vals, np.ones(2), np.zeros(2), np.array([[np.nan]]), np.array([[np.nan]]), p)[0])
    np.testing.assert_array_equal(vals, keep)


def test_bad_names_and_definitions_are_named():
    with pytest.raises(ValueError, match="unknown index name"):
        require_index_names(("ndvi", "evi"))
    with pytest.raises(ValueError, match="the string"):
        require_index_names("ndvi")
    with pytest.raises(ValueError, match="at most once"):
        require_index_names(("ndvi", "ndvi"))
    with pytest.raises(ValueError, match="kind got"):
        IndexDef("x", "ratio", ("a", "b"), 0.1)
    with pytest.raises(ValueError, match="two bands"):
        IndexDef("x", "nd", ("a",), 0.1)
    with pytest.raises(ValueError, match="floors got"):
        replace(INDEX_DEFS["ndvi"], floor_abs=0.0)
    with pytest.raises(ValueError, match="unknown index name"):
        state_baseline(build_state(*_stack(t=2), BaselineParams(window=2)), indices=("ndwi",))
    ring = np.zeros((2, 2, 3, 6), np.uint16)
    with pytest.raises(ValueError, match="index plan got 4 band"):
        state_baseline_np(ring, np.zeros((2, 2), np.uint32), index=index_plan(INDICES, BANDS[:4]))
    with pytest.raises(ValueError, match="index values got 3 band"):
        index_values_np(np.zeros((2, 3)), *(lambda q: (q.num, q.den, q.den_floor))(index_plan(INDICES, BANDS)))


def test_seasonal_index_stats_use_only_the_in_season_observations():
    """With a seasonal window the index median/MAD come from the same in-season slots as the
    bands' (the ring pass selects them once): equal to a last-N state built from those dates alone."""
    stack, clear = _stack(seed=6, t=9, p_clear=1.0)
    days = np.array(["2025-01-10", "2025-03-01", "2025-06-15", "2025-07-01", "2025-12-20",
                     "2026-01-05", "2026-04-01", "2026-06-20", "2026-07-10"], dtype="datetime64[D]")
    stack, clear = stack.assign_coords(time=days), clear.assign_coords(time=days)
    params = BaselineParams(window=9, season_days=30)
    full = state_baseline(build_state(stack, clear, params), np.datetime64("2026-07-01"), 30, indices=INDICES)
    in_season = [2, 3, 7, 8]  # 15 Jun, 1 Jul (2025), 20 Jun, 10 Jul (2026): within 30 days of 1 Jul
    alone = state_baseline(build_state(stack.isel(time=in_season), clear.isel(time=in_season), BaselineParams(window=9)),
                           indices=INDICES)
    np.testing.assert_array_equal(full["count"].values, clear.isel(time=in_season).sum("time").values)  # 4, 0 where never clear
    assert (full["count"].values == len(in_season)).mean() > 0.9
    for v in ("median", "mad", "index_median", "index_mad"):
        np.testing.assert_array_equal(full[v].values, alone[v].values)
