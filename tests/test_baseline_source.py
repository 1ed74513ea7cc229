"""Tests for sitewatch.baseline_source: a slot's baseline from the stored state or rebuilt from
the cube, through analyse_slot on small cubes written directly (no COG, no STAC)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from sitewatch.analysis import AnalysisParams, analyse_slot
from sitewatch.baseline_source import analysed_earlier, fold_clear
from sitewatch.grid import SiteGrid
from sitewatch.io import baseline_state as st
from sitewatch.io import cube as cube_io
from sitewatch.io import store
from sitewatch.kernels.baseline import BaselineParams
from sitewatch.kernels.baseline_ring import state_baseline
from sitewatch.kernels.register import build_registered_state
from sitewatch.synthetic import BANDS

def _noisy_cube(tmp_path, name: str, n: int, seed: int = 5, step_days: int = 2, texture: float = 0.0):
    """A 96 x 80 px cube (chunks 64: uneven) of ``n`` scenes ``step_days`` apart: noisy land, a swath
    edge moving across the scenes and a bright blob (a cloud to the spectral rules) here and there.
    ``texture``: amplitude of a fixed spatial pattern (fields, roads) that registration can fit;
    without it the land is flat and noise alone drives the fitted gains."""
    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=96, height=80)
    url = str(tmp_path / name / "cube.zarr")
    times = [dt.datetime(2026, 1, 1, 8, tzinfo=dt.timezone.utc) + dt.timedelta(days=step_days * k) for k in range(n)]
    slots = cube_io.extend(url, grid, BANDS, [(f"S{k}", t) for k, t in enumerate(times)], chunk=64)
    rng = np.random.default_rng(seed)
    land = {"blue": 600, "green": 900, "red": 800, "nir": 2500, "swir16": 1800, "swir22": 1200}
    yy, xx = np.mgrid[0:grid.shape[0], 0:grid.shape[1]]
    pattern = texture * np.sin(xx / 5.0 + 0.3 * yy / 7.0) * np.cos(yy / 6.0)
    for k in range(n):
        valid = np.ones(grid.shape, bool)
        valid[:, : (7 * k) % 40] = False
        data = {b: np.rint((land[b] + pattern * land[b] / 1000) * rng.uniform(0.9, 1.1) + rng.normal(0, 40, grid.shape)).astype(np.uint16)
                for b in BANDS}
        if k % 3 == 2:
            r, c = rng.integers(10, 60, 2)
            for b in BANDS:
                data[b][r:r + 15, c:c + 20] = 6000
        ds = xr.Dataset({b: (("y", "x"), np.where(valid, v, 0).astype(np.uint16)) for b, v in data.items()}, coords=grid.coords())
        ds["valid"] = (("y", "x"), valid)
        cube_io.write_scene_slice(url, slots[f"S{k}"], ds)
    return grid, url, slots


def _derived(url):
    ds = cube_io.open_cube(url).compute()
    return {v: ds[v].values for v in ("cloud", "shadow", "change_score", "change")}


def _state_equals_the_cube(url, window, min_obs=3, season_days=None):
    """The stored state equals one built from the cube's analysed scenes it says it folded: each
    date registered to the state so far before it is folded (the default co-registration), its
    fit on pixels with min(min_obs, earlier scenes with a clear pixel) observations."""
    info = st.read_info(st.state_url(url))
    ds = cube_io.open_cube(url)
    keys = [st.slot_key(t, s) for t, s in zip(ds.time.values, ds.scene_id.values)]
    idx = [keys.index(k) for k in info.folded]
    h = ds.isel(time=idx)
    stack = h[list(BANDS)].to_dataarray("band").transpose("time", "band", "y", "x")
    seen = [sum(1 for j in idx[:t] if ds["valid_fraction"].values[j] > 0 and ds["cloud_fraction"].values[j] < 1)
            for t in range(len(idx))]
    built, fits = build_registered_state(stack, fold_clear(h["valid"], h["cloud"], h["shadow"], stack), window,
                                         [max(1, min(min_obs, n)) for n in seen], season_days=season_days)
    assert info.alignment.startswith("registered") and any(f.dy or f.dx for f in fits[1:])
    stored = st.open_state(st.state_url(url), info, ds.y, ds.x).compute()
    np.testing.assert_array_equal(stored["ring"].values, built["ring"].values)
    np.testing.assert_array_equal(stored["n_obs"].values, built["n_obs"].values)
    np.testing.assert_array_equal(stored["day"].values, built["day"].values)
    assert info.season_days == season_days
    return info


def test_incremental_state_gives_what_rebuilding_from_the_cube_gives(tmp_path):
    """Slot by slot with the stored state (each scene folded in after its masks; in memory) and
    with the baseline rebuilt from the cube every time (use_state=False; dask, uneven chunks) give
    identical layers while the history fits in the rebuild's 3 W scenes; the state run reads the
    state from slot 1 on."""
    params = AnalysisParams(baseline=BaselineParams(window=3), min_object_area_m2=0.0)
    n = 8
    with dask.config.set(scheduler="synchronous"):
        grid, url_a, slots = _noisy_cube(tmp_path, "a", n)
        _, url_b, _ = _noisy_cube(tmp_path, "b", n)
        res_a = [analyse_slot(url_a, slots[f"S{k}"], grid, BANDS, params) for k in range(n)]
        lazy = replace(params, eager_max_px=0)  # cube b: chunk by chunk with dask (uneven chunks), cube a in memory
        res_b = [analyse_slot(url_b, slots[f"S{k}"], grid, BANDS, lazy, use_state=False) for k in range(n)]
    assert [r.baseline_source for r in res_a] == ["none"] + ["state"] * (n - 1)
    assert [r.baseline_source for r in res_b] == ["none"] + ["rebuilt"] * (n - 1)
    assert "not used (asked)" in res_b[1].baseline_note
    assert [r.n_baseline_scenes for r in res_a] == [r.n_baseline_scenes for r in res_b] == list(range(n))
    a, b = _derived(url_a), _derived(url_b)
    assert np.isfinite(a["change_score"][1:]).any() and a["cloud"].any()
    for v in a:
        np.testing.assert_array_equal(a[v], b[v], err_msg=v)
    info = _state_equals_the_cube(url_a, 3)
    assert len(info.folded) == n and info.n_before == 0
    ds = xr.open_zarr(url_a, mask_and_scale=False, consolidated=False)
    assert analysed_earlier(ds, slots[f"S{n - 1}"]) == [slots[f"S{k}"] for k in range(n - 1)]
    assert analysed_earlier(ds, slots["S0"]) == []
    assert not store.exists(st.state_url(url_b))  # use_state=False stores none


def test_a_streamed_site_gives_the_same_layers_and_state_from_the_state_and_rebuilt(tmp_path):
    """Streamed (the whole-site arrays in a scratch store, strips of 20 x 96 px across the stored 64
    px chunks, the fold in the stored chunks): the same layers as in memory, with the stored state
    and with the baseline rebuilt (kept in the scratch store between the rebuild's dates), and the
    same stored state."""
    params = AnalysisParams(baseline=BaselineParams(window=3), min_object_area_m2=0.0)
    streamed = replace(params, eager_max_px=0, hold_max_bytes=0, streamed_chunk_px=64)
    n = 6
    with dask.config.set(scheduler="synchronous"):
        grid, url_a, slots = _noisy_cube(tmp_path, "a", n)
        _, url_c, _ = _noisy_cube(tmp_path, "c", n)
        _, url_d, _ = _noisy_cube(tmp_path, "d", n)
        res_a = [analyse_slot(url_a, slots[f"S{k}"], grid, BANDS, params) for k in range(n)]
        res_c = [analyse_slot(url_c, slots[f"S{k}"], grid, BANDS, streamed) for k in range(n)]
        res_d = [analyse_slot(url_d, slots[f"S{k}"], grid, BANDS, streamed, use_state=False) for k in range(n)]
    assert [r.baseline_source for r in res_c] == ["none"] + ["state"] * (n - 1)
    assert [r.baseline_source for r in res_d] == ["none"] + ["rebuilt"] * (n - 1)
    a = _derived(url_a)
    assert np.isfinite(a["change_score"][1:]).any() and a["cloud"].any()
    for url in (url_c, url_d):
        got = _derived(url)
        for v in a:
            np.testing.assert_array_equal(got[v], a[v], err_msg=f"{url} {v}")
    for ra, rc, rd in zip(res_a, res_c, res_d):
        assert ra.detections == rc.detections == rd.detections and ra.normalisation == rc.normalisation == rd.normalisation
    _state_equals_the_cube(url_c, 3)
    assert st.read_info(st.state_url(url_c)).folded == st.read_info(st.state_url(url_a)).folded
    for url in (url_c, url_d):  # the scratch stores are gone
        root = url.rsplit("/", 1)[0] + "/_scratch"
        assert not store.exists(root) or not __import__("os").listdir(root)


def test_state_is_rebuilt_after_a_backfill_a_cut_short_update_a_reanalysis_and_a_window_change(tmp_path):
    # dask arrays chunk by chunk (eager_max_px=0): the state read lazily, folded and written per chunk
    p3 = AnalysisParams(baseline=BaselineParams(window=3), min_object_area_m2=0.0, eager_max_px=0)
    n = 11
    with dask.config.set(scheduler="synchronous"):
        grid, url, slots = _noisy_cube(tmp_path, "c", n)
        surl = st.state_url(url)

        def go(k, params=p3):
            return analyse_slot(url, slots[f"S{k}"], grid, BANDS, params)

        for k in (0, 1, 3, 4):  # scene 2 arrives late
            go(k)
        assert [k for _, k in st.read_info(surl).folded] == ["S0", "S1", "S3", "S4"]
        r2 = go(2)  # backfill: the state holds later scenes; rebuilt, and the stored state left alone
        assert r2.baseline_source == "rebuilt" and "no longer analysed earlier" in r2.baseline_note
        assert [k for _, k in st.read_info(surl).folded] == ["S0", "S1", "S3", "S4"]
        r5 = go(5)  # the state lacks the backfilled scene: rebuilt (bounded: the last 3 W = 9 scenes), then stored
        assert r5.baseline_source == "rebuilt" and "+1 analysed earlier slot(s)" in r5.baseline_note
        assert _state_equals_the_cube(url, 3).status == "ready"
        assert go(6).baseline_source == "state"
        # a writer that died between the marker and the record left "updating"
        zarr.open_group(surl, mode="r+").attrs.update({"status": "updating"})
        r7 = go(7)
        assert r7.baseline_source == "rebuilt" and "cut short" in r7.baseline_note
        assert go(8).baseline_source == "state"
        # re-analysing a folded scene marks the state stale before its masks change
        r6 = go(6)
        assert r6.baseline_source == "rebuilt" and st.read_info(surl).status == "stale"
        r9 = go(9)
        assert r9.baseline_source == "rebuilt" and "stale" in r9.baseline_note and "S6" in r9.baseline_note
        info = _state_equals_the_cube(url, 3)
        assert (len(info.folded), info.n_before) == (10, 0)  # 3 W = 9: all 9 earlier scenes, then S9
        r10 = go(10, replace(p3, baseline=BaselineParams(window=4)))
        assert r10.baseline_source == "rebuilt" and "window changed (3 -> 4)" in r10.baseline_note
        info = _state_equals_the_cube(url, 4)
        assert (info.window, len(info.folded), info.n_before) == (4, 11, 0)


@pytest.mark.slow  # 13 + 1 analyses: about 45 s on a loaded 2-core machine
def test_seasonal_state_gives_what_rebuilding_from_the_cube_gives(tmp_path):
    """Seasonal baseline (W = 10, +-90 days), 13 scenes a month apart: every slot analysed with
    the stored state (in memory); the stored state equals the one the cube rebuilds (each date
    registered to its own seasonal baseline), and the last slot analysed again with the baseline
    rebuilt from the cube (dask, uneven chunks) gives identical layers."""
    params = AnalysisParams(baseline=BaselineParams(window=10, season_days=90), min_object_area_m2=0.0)
    n = 13
    with dask.config.set(scheduler="synchronous"):
        grid, url, slots = _noisy_cube(tmp_path, "s", n, seed=9, step_days=30, texture=300.0)
        res = [analyse_slot(url, slots[f"S{k}"], grid, BANDS, params) for k in range(n)]
        assert [r.baseline_source for r in res] == ["none"] + ["state"] * (n - 1)
        assert {r.change_state for r in res[3:]} == {"ok"}  # three months back are always in season
        info = _state_equals_the_cube(url, 10, season_days=90)
        assert len(info.folded) == n
        stored = st.open_state(st.state_url(url), info, grid.coords()["y"], grid.coords()["x"]).compute()
        base = state_baseline(stored, np.datetime64("2027-01-26"), 90)
        assert 0 < base["count"].values.mean() < state_baseline(stored)["count"].values.mean()  # a real selection
        assert base["count"].values.max() > 3  # last year's season is in the ring for some pixels
        before = _derived(url)
        again = analyse_slot(url, slots[f"S{n - 1}"], grid, BANDS, replace(params, eager_max_px=0), use_state=False)
        assert again.baseline_source == "rebuilt" and again.change_state == "ok"
        after = _derived(url)
        for v in before:
            np.testing.assert_array_equal(before[v], after[v], err_msg=v)


def test_an_old_state_and_a_change_of_season_are_rebuilt(tmp_path):
    """A state written by version 1 (no 'day') is rebuilt, never read; so is one registered
    with another seasonal window."""
    last_n = AnalysisParams(baseline=BaselineParams(window=4), min_object_area_m2=0.0)
    seasonal = replace(last_n, baseline=BaselineParams(window=4, season_days=45))
    with dask.config.set(scheduler="synchronous"):
        grid, url, slots = _noisy_cube(tmp_path, "v", 4, step_days=20)
        surl = st.state_url(url)
        for k in (0, 1):
            analyse_slot(url, slots[f"S{k}"], grid, BANDS, last_n)
        g = zarr.open_group(surl, mode="r+")  # what version 1 stored: no day, no season_days
        del g["day"]
        attrs = {k: v for k, v in g.attrs.items() if k != "season_days"}
        g.attrs.clear()
        g.attrs.update({**attrs, "sitewatch_baseline_state_version": 1})
        r2 = analyse_slot(url, slots["S2"], grid, BANDS, last_n)
        assert r2.baseline_source == "rebuilt" and "state version 1, expected 2" in r2.baseline_note
        assert _state_equals_the_cube(url, 4).status == "ready"
        r3 = analyse_slot(url, slots["S3"], grid, BANDS, seasonal)
        assert r3.baseline_source == "rebuilt" and "season_days changed (None -> 45)" in r3.baseline_note
        assert _state_equals_the_cube(url, 4, season_days=45).folded[-1][1] == "S3"
