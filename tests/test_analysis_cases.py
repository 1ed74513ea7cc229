"""sitewatch.analysis case by case, each on a small cube of its own (no Prefect): its parameters and
the history it takes, mask methods, and the scenes that must not break it (nodata, all cloud,
saturated, unlike the baseline, a short history)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import dask
import numpy as np
import pytest
import xarray as xr

from sitewatch.analysis import AnalysisParams, analyse_slot, history_indices
from sitewatch.grid import SiteGrid
from sitewatch.io import cube as cube_io
from sitewatch.io import objects_file
from sitewatch.kernels.change import ChangeParams
from sitewatch.synthetic import BANDS


def test_work_chunk_px_is_validated():
    with pytest.raises(ValueError, match="work_chunk_px got 8"):
        AnalysisParams(work_chunk_px=8)



def _flags_cube(times, ingested, analysed) -> xr.Dataset:
    return xr.Dataset(
        {"ingested": ("time", np.asarray(ingested, bool)), "analysed": ("time", np.asarray(analysed, bool))},
        coords={"time": np.asarray(times, dtype="datetime64[ns]")},
    )



def test_history_indices_window_and_order():
    times = [f"2026-01-{d:02d}" for d in (1, 2, 3, 4, 5, 6)]
    ds = _flags_cube(times, [True] * 6, [True] * 6)
    assert history_indices(ds, 5, 3) == [2, 3, 4]
    assert history_indices(ds, 5, 10) == [0, 1, 2, 3, 4]
    assert history_indices(ds, 0, 3) == []
    assert history_indices(ds, 2, 1) == [1]



def test_history_indices_skips_unanalysed_and_uncommitted():
    times = [f"2026-01-{d:02d}" for d in (1, 2, 3, 4, 5, 6)]
    ds = _flags_cube(times, [True, True, False, True, True, True], [True, False, False, True, True, False])
    assert history_indices(ds, 5, 8) == [0, 3, 4]
    assert history_indices(ds, 5, 2) == [3, 4]



def test_history_indices_uses_time_not_slot_order():
    # slots appended out of time order: slot 3 is the oldest scene
    times = ["2026-01-05", "2026-01-07", "2026-01-09", "2026-01-01", "2026-01-08"]
    ds = _flags_cube(times, [True] * 5, [True] * 5)
    assert history_indices(ds, 2, 10) == [3, 0, 1, 4]  # sorted by time
    assert history_indices(ds, 2, 2) == [1, 4]  # the two latest before 01-09
    assert history_indices(ds, 3, 5) == []  # nothing is older than slot 3
    assert history_indices(ds, 1, 5) == [3, 0]
    # a scene acquired at the same time is not history
    same = _flags_cube(["2026-01-01", "2026-01-01", "2026-01-02"], [True] * 3, [True] * 3)
    assert history_indices(same, 1, 5) == []
    assert history_indices(same, 2, 5) == [0, 1]



def test_analyse_uningested_slot_raises(tmp_path):
    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=64, height=64)
    url = str(tmp_path / "cube.zarr")
    cube_io.extend(url, grid, BANDS, [("ONLY", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))], chunk=64)
    with pytest.raises(ValueError, match="ONLY"):
        analyse_slot(url, 0, grid, BANDS)
    assert not cube_io.slots(url)[0].analysed



def test_analysis_params_validation():
    with pytest.raises(ValueError, match="min_object_area_m2"):
        AnalysisParams(min_object_area_m2=-1.0)



def _l1c_cube(tmp_path, bands13: np.ndarray, chunk: int):
    """The s2cloudless reference scene (13 TOA bands) ingested as a Sentinel-2 L1C site would
    be: counts = TOA x 10000 as uint16, under the eo common names of the sentinel2-l1c profile."""
    from sitewatch.kernels.s2cloud import ALL_BANDS
    from sitewatch.sensors import S2CLOUDLESS_BANDS

    names = list(S2CLOUDLESS_BANDS.values()) + ["green"]
    by_b = {**S2CLOUDLESS_BANDS, "B03": "green"}
    h, w = bands13.shape[1:]
    grid = SiteGrid(crs="EPSG:32633", x0=450000.0, y0=5080000.0, resolution=10.0, width=w, height=h)
    counts = {by_b[b]: np.clip(np.round(bands13[ALL_BANDS.index(b)] * 1e4), 1, 65535).astype(np.uint16)
              for b in by_b}
    ds = xr.Dataset({n: (("y", "x"), counts[n]) for n in names} | {"valid": (("y", "x"), np.ones((h, w), bool))},
                    coords=grid.coords())
    url = str(tmp_path / "l1c" / "cube.zarr")
    slots = cube_io.extend(url, grid, names, [("L1C", dt.datetime(2026, 5, 1, 10, tzinfo=dt.timezone.utc))], chunk=chunk,
                           sensor="sentinel2-l1c")
    cube_io.write_scene_slice(url, slots["L1C"], ds.chunk({"y": chunk, "x": chunk}))
    return url, grid, names



def test_s2cloudless_mask_method_reproduces_the_reference_through_the_cube(tmp_path, shared_data):
    """mask_method='s2cloudless' on an L1C cube (chunked 200 px: chunk borders inside clouds)
    stores the s2cloudless reference mask: >= 99.9 % of pixels equal after the uint16 round trip."""
    from sitewatch.kernels.masks import MaskParams

    d = np.load(shared_data / "s2cloudless-reference" / "input_arrays.npz")
    bands13 = np.moveaxis(d["s2_im"][0], -1, 0)
    ref = d["cl_mask"][0].astype(bool)
    url, grid, names = _l1c_cube(tmp_path, bands13, chunk=200)
    params = AnalysisParams(mask_method="s2cloudless", masks=MaskParams(buffer_px=0))
    with dask.config.set(scheduler="threads"):
        res = analyse_slot(url, 0, grid, names, params)
    cube = cube_io.open_cube(url)
    cloud = cube["cloud"].isel(time=0).values
    agree = (cloud == ref).mean()
    assert agree >= 0.999, agree
    assert 0.2 < cloud.mean() < 0.8 and not cube["shadow"].isel(time=0).values.any()
    assert res.cloud_fraction == pytest.approx(cloud.mean(), abs=1e-6)



def test_s2cloudless_mask_method_names_the_missing_bands(tmp_path):
    from sitewatch.config import SiteConfig

    rng = np.random.default_rng(0)
    url, grid, names = _l1c_cube(tmp_path, rng.uniform(0.01, 0.5, (13, 64, 64)).astype(np.float32), chunk=64)
    lacking = [n for n in names if n not in ("cirrus", "nir09")]
    with pytest.raises(ValueError, match=r"mask_method 's2cloudless' got bands .* lacking \['nir09', 'cirrus'\]"):
        analyse_slot(url, 0, grid, lacking, AnalysisParams(mask_method="s2cloudless"))
    assert not cube_io.slots(url)[0].analysed
    with pytest.raises(ValueError, match=r"got 's2cloudless' but bands lack \['nir09', 'cirrus'\]"):
        SiteConfig(name="s2", bbox=(14.5, 45.8, 14.6, 45.9), source="/tmp/x", store="/tmp/y", sensor="sentinel2-l1c",
                   bands=tuple(lacking), mask_method="s2cloudless")
    ok = SiteConfig(name="s2", bbox=(14.5, 45.8, 14.6, 45.9), source="/tmp/x", store="/tmp/y", sensor="sentinel2-l1c",
                    bands=tuple(names), mask_method="s2cloudless")
    assert ok.mask_method == "s2cloudless"



def test_all_nodata_scene_is_analysed_without_errors_and_counts_as_unobserved(tmp_path):
    """A scene with no valid pixel over the site (outside the swath, all fill): no division by
    zero, no NaN warnings turned errors, nothing detected; its cloud fraction is NaN (not 0 %: the
    site was not observed) and its valid fraction 0."""
    import warnings

    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=96, height=80)
    url = str(tmp_path / "cube.zarr")
    times = [dt.datetime(2026, 1, d, 8, tzinfo=dt.timezone.utc) for d in (1, 2, 3)]
    slots = cube_io.extend(url, grid, BANDS, [(f"S{k}", t) for k, t in enumerate(times)], chunk=64)
    rng = np.random.default_rng(1)
    for k in range(3):
        empty = k == 2
        data = {b: (("y", "x"), np.zeros(grid.shape, np.uint16) if empty else rng.integers(300, 3000, grid.shape).astype(np.uint16))
                for b in BANDS}
        data["valid"] = (("y", "x"), np.full(grid.shape, not empty))
        cube_io.write_scene_slice(url, slots[f"S{k}"], xr.Dataset(data, coords=grid.coords()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        results = [analyse_slot(url, slots[f"S{k}"], grid, BANDS, AnalysisParams(min_object_area_m2=0.0)) for k in range(3)]
    last = results[2]
    assert last.valid_fraction == 0.0 and np.isnan(last.cloud_fraction) and last.detections == []
    s = cube_io.slots(url)[slots["S2"]]
    assert s.analysed and s.valid_fraction == 0.0 and np.isnan(s.cloud_fraction)
    ds = cube_io.open_cube(url).isel(time=2)
    assert not ds["cloud"].values.any() and not ds["change"].values.any() and np.isnan(ds["change_score"].values).all()



def test_mask_method_auto_prefers_the_provider_over_the_red_nir_swir_rules():
    """'auto' on a red/NIR/SWIR sensor with a QA band uses the provider mask and says why the
    reduced spectral rules did not run; without a QA band it runs them; an explicit method the
    bands cannot support names the bands."""
    from sitewatch.analysis import mask_methods

    cube = xr.Dataset({"fmask": (("y", "x"), np.zeros((2, 2), np.uint16))})
    rns = ("red", "nir", "swir16")
    methods, notes = mask_methods(cube, rns, AnalysisParams(qa_band="fmask", qa_kind="fmask"))
    assert methods == ("provider",) and "lack blue/green" in notes[0]
    assert mask_methods(xr.Dataset(), rns, AnalysisParams()) == (("spectral",), [])
    methods, notes = mask_methods(cube, ("red", "nir"), AnalysisParams(qa_band="fmask", qa_kind="fmask"))
    assert methods == ("provider",) and "lack ['blue', 'green']" in notes[0]
    with pytest.raises(ValueError, match=r"mask_method 'spectral' got bands \['red', 'nir'\]"):
        mask_methods(cube, ("red", "nir"), AnalysisParams(mask_method="spectral"))



def test_saturated_pixels_are_flagged_and_kept_out_of_the_change(tmp_path):
    """A pixel saturated in one band (65535) is flagged, never scored as change, and no NaN or
    overflow warning escapes."""
    import warnings

    from sitewatch.kernels.masks import FLAG_SATURATED

    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=96, height=80)
    url = str(tmp_path / "cube.zarr")
    times = [dt.datetime(2026, 1, d, 8, tzinfo=dt.timezone.utc) for d in range(1, 6)]
    slots = cube_io.extend(url, grid, BANDS, [(f"S{k}", t) for k, t in enumerate(times)], chunk=64)
    rng = np.random.default_rng(2)
    land = {"blue": 600, "green": 900, "red": 800, "nir": 2500, "swir16": 1800, "swir22": 1200}
    for k in range(5):
        data = {b: (("y", "x"), np.rint(land[b] + rng.normal(0, 20, grid.shape)).astype(np.uint16)) for b in BANDS}
        if k == 4:
            data["nir"][1][30:34, 40:44] = 65535  # a saturated glint
        data["valid"] = (("y", "x"), np.ones(grid.shape, bool))
        cube_io.write_scene_slice(url, slots[f"S{k}"], xr.Dataset(data, coords=grid.coords()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for k in range(5):
            res = analyse_slot(url, slots[f"S{k}"], grid, BANDS, AnalysisParams(min_object_area_m2=0.0))
    assert res.detections == []
    ds = cube_io.open_cube(url).isel(time=slots["S4"])
    sat = (ds["mask_flags"].values & FLAG_SATURATED) > 0
    assert sat[30:34, 40:44].all() and sat.sum() == 16
    assert not ds["change"].values.any() and np.isnan(ds["change_score"].values[30:34, 40:44]).all()



def test_vegetation_loss_is_labelled_and_a_short_history_degrades_to_bitemporal(tmp_path):
    """A field cleared between dates (NIR falls, red and SWIR rise) is an object labelled
    vegetation loss; with a single earlier clear scene the comparison is bi-temporal."""
    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=64, height=64)
    url = str(tmp_path / "site" / "cube.zarr")
    times = [dt.datetime(2026, 3, d, 8, tzinfo=dt.timezone.utc) for d in (1, 11)]
    slots = cube_io.extend(url, grid, BANDS, [(f"S{k}", t) for k, t in enumerate(times)], chunk=40)
    rng = np.random.default_rng(4)
    field = {"blue": 500, "green": 800, "red": 600, "nir": 3500, "swir16": 1800, "swir22": 900}
    soil = {"blue": 800, "green": 1100, "red": 2000, "nir": 1800, "swir16": 3000, "swir22": 2400}
    for k in range(2):
        data = {b: (("y", "x"), np.rint(field[b] + rng.normal(0, 20, grid.shape)).astype(np.uint16)) for b in BANDS}
        if k == 1:  # cleared, across the 40 px chunk border
            for b in BANDS:
                data[b][1][30:46, 20:36] = soil[b]
        data["valid"] = (("y", "x"), np.ones(grid.shape, bool))
        cube_io.write_scene_slice(url, slots[f"S{k}"], xr.Dataset(data, coords=grid.coords()))
    res = [analyse_slot(url, slots[f"S{k}"], grid, BANDS, AnalysisParams(min_object_area_m2=100.0)) for k in range(2)]
    assert res[0].change_state == "not enough history" and res[0].detections == []
    last = res[1]
    assert last.change_state == "ok" and last.n_baseline_scenes == 1 and last.history_fraction == 1.0
    assert len(last.detections) == 1, last.detections
    d = last.detections[0]
    assert d.area_m2 == pytest.approx(16 * 16 * 100)
    assert d.vegetation == "loss" and d.delta_ndvi < -0.3, d
    fc = objects_file.read(last.objects_url)
    (f,) = fc["features"]
    assert f["properties"]["vegetation"] == "loss" and f["properties"]["area_px"] == 256
    assert f["properties"]["bbox_pixels"] == [30, 20, 46, 36]



def test_all_cloud_or_no_history_dates_say_so_and_raise_nothing(tmp_path):
    """A date whose every pixel is invalid: state "no clear pixels"; min_history not reached:
    "not enough history", with no change computed even though a baseline exists."""
    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=48, height=48)
    url = str(tmp_path / "site" / "cube.zarr")
    times = [dt.datetime(2026, 3, d, 8, tzinfo=dt.timezone.utc) for d in (1, 11, 21)]
    slots = cube_io.extend(url, grid, BANDS, [(f"S{k}", t) for k, t in enumerate(times)], chunk=48)
    rng = np.random.default_rng(5)
    land = rng.uniform(500, 3000, grid.shape)  # a textured surface, the same on every date
    for k in range(3):
        data = {b: (("y", "x"), np.rint(land + rng.normal(0, 20, grid.shape)).astype(np.uint16)) for b in BANDS}
        if k == 2:  # a new bright-in-infrared roof
            for b in ("nir", "swir16", "swir22"):
                data[b][1][10:20, 10:20] += 5000
        data["valid"] = (("y", "x"), np.full(grid.shape, k != 1))
        cube_io.write_scene_slice(url, slots[f"S{k}"], xr.Dataset(data, coords=grid.coords()))
    params = AnalysisParams(min_object_area_m2=0.0, min_history=3)
    res = [analyse_slot(url, slots[f"S{k}"], grid, BANDS, params) for k in range(3)]
    assert [r.change_state for r in res] == ["not enough history", "no clear pixels", "not enough history"]
    assert res[2].n_baseline_scenes == 2 and all(r.detections == [] for r in res)
    assert objects_file.read(res[1].objects_url)["sitewatch:history_fraction"] is None
    ds = cube_io.open_cube(url)
    assert np.isnan(ds["change_score"].values).all() and not ds["change"].values.any()
    # the same dates with the default min_history: the bright square is found on the last date
    url2 = str(tmp_path / "site2" / "cube.zarr")
    import shutil
    shutil.copytree(tmp_path / "site" / "cube.zarr", url2)
    res2 = analyse_slot(url2, slots["S2"], grid, BANDS, AnalysisParams(min_object_area_m2=0.0))
    assert res2.change_state == "ok" and [d.bbox_pixels for d in res2.detections] == [(10, 10, 20, 20)]



def test_a_scene_unlike_its_baseline_is_not_comparable_raises_nothing_and_is_not_folded(tmp_path):
    """A date a quarter darker in every band over the whole site, against ``max_gain_ratio`` 1.2
    (the default, 2, catches snow cover or thick haze; a uniform brightening that strong is cloud
    to the spectral masks): the registration gain is beyond ChangeParams.max_gain_ratio, so the date says "not comparable", raises no object and
    adds no observation to the baseline state; the next ordinary date is scored again."""
    from sitewatch.io import baseline_state as st

    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=48, height=48)
    url = str(tmp_path / "site" / "cube.zarr")
    times = [dt.datetime(2026, 1, d, 8, tzinfo=dt.timezone.utc) for d in (1, 5, 9, 13, 17)]
    slots = cube_io.extend(url, grid, BANDS, [(f"S{k}", t) for k, t in enumerate(times)], chunk=48)
    rng = np.random.default_rng(6)
    land = rng.uniform(300, 2500, grid.shape)
    for k in range(5):
        v = land * (0.75 if k == 3 else 1.0)  # date 3: everything a quarter darker in every band
        data = {b: (("y", "x"), np.rint(v + rng.normal(0, 20, grid.shape)).clip(1, 65534).astype(np.uint16)) for b in BANDS}
        data["valid"] = (("y", "x"), np.ones(grid.shape, bool))
        cube_io.write_scene_slice(url, slots[f"S{k}"], xr.Dataset(data, coords=grid.coords()))
    # the darkening is a plausible radiometric gain, so the ratio is tightened to 1.2 to test the rule
    params = AnalysisParams(min_object_area_m2=100.0, mask_method="spectral", change=replace(ChangeParams(), max_gain_ratio=1.2))
    res = []
    for k in range(5):
        res.append(analyse_slot(url, slots[f"S{k}"], grid, BANDS, params))
        if k == 2:
            n_before = st.open_state(st.state_url(url), st.read_info(st.state_url(url)), grid.coords()["y"], grid.coords()["x"])["n_obs"].values.copy()
    r3 = res[3]
    assert r3.cloud_fraction < 0.5, r3  # the masks do not take the bright date for cloud: the registration decides
    assert r3.change_state == "not comparable" and r3.detections == [], r3
    after = st.open_state(st.state_url(url), st.read_info(st.state_url(url)), grid.coords()["y"], grid.coords()["x"])["n_obs"].values
    assert np.array_equal(after, n_before + 1)  # S4 folded; S3 added nothing
    assert res[4].change_state == "ok" and res[4].detections == []
