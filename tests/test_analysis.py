"""End-to-end tests for sitewatch.analysis without Prefect: synthetic scenes written as COG + STAC,
found, ingested into a cube and analysed slot by slot, for two cube chunk sizes. The parameters and
the cases each on a cube of their own are in test_analysis_cases.py."""

from __future__ import annotations

import datetime as dt
import os

import dask
import numpy as np
import pytest
import xarray as xr
from shapely.geometry import Point, shape

from sitewatch.analysis import AnalysisParams, Detection, SlotResult, analyse_slot, analysed_earlier
from sitewatch.demo import write_synthetic_scenes
from sitewatch.io import cube as cube_io
from sitewatch.io import discovery
from sitewatch.io import objects_file
from sitewatch.io import scenes as scene_io
from sitewatch.synthetic import BANDS, SyntheticSpec, generate_series

SPEC = SyntheticSpec(width=256, height=256, n_dates=12, seed=3)
FULL_CHUNK = 256  # the whole series is analysed on a cube with this chunk size
SMALL_CHUNK = 128  # ... and its first N_COMPARE dates again in 2 x 2 Dask chunks of
STORED_CHUNK = 64  # ... 2 x 2 stored chunks each (AnalysisParams.work_chunk_px)
N_COMPARE = 7  # dates 0-6: the baseline growing to 6 scenes, cloudy dates 2, 4, 5, a swath edge
#                on 5, and the aircraft arrivals on 5 (one of them across the 128 px chunk border)


class Pipeline:
    def __init__(self, series, refs, problems, cube_url, slots, results, cube):
        self.series = series
        self.refs = refs
        self.problems = problems
        self.cube_url = cube_url
        self.slots = slots  # {scene_id: index} from extend
        self.results: list[SlotResult] = results  # in slot order
        self.cube: xr.Dataset = cube  # the committed slots of the cube, loaded into memory


def _run(series, source: str, cube_url: str, chunk: int, n_dates: int | None = None, bands=BANDS,
         params: AnalysisParams = AnalysisParams()) -> Pipeline:
    """find -> extend -> read + write each scene -> analyse each slot in time order (the first
    ``n_dates`` scenes only, if given; the cube still gets a slot for every scene)."""
    grid = series.grid
    refs, problems = discovery.find_scenes(source, _footprint(series))
    use = sorted(refs, key=lambda r: r.datetime)[:n_dates]
    with dask.config.set(scheduler="synchronous"):
        slots = cube_io.extend(cube_url, grid, bands, [(r.scene_id, r.datetime) for r in refs], chunk=chunk)
        for r in use:
            cube_io.write_scene_slice(cube_url, slots[r.scene_id], scene_io.read_scene(r, grid, bands, chunks=chunk))
        results = [analyse_slot(cube_url, slots[r.scene_id], grid, bands, params) for r in use]
        cube = cube_io.open_cube(cube_url).compute()
    return Pipeline(series, refs, problems, cube_url, slots, results, cube)


def _footprint(series) -> dict:
    from rasterio.warp import transform_bounds
    from shapely.geometry import box, mapping

    return mapping(box(*transform_bounds(series.grid.crs, "EPSG:4326", *series.grid.bounds, densify_pts=21)))


@pytest.fixture(scope="module")
def series():
    return generate_series(SPEC)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, series) -> dict[int, Pipeline]:
    root = tmp_path_factory.mktemp("analysis")
    source = str(root / "scenes")
    write_synthetic_scenes(series, source)
    return {
        FULL_CHUNK: _run(series, source, str(root / f"cube{FULL_CHUNK}" / "cube.zarr"), FULL_CHUNK),
        # the same dates chunked and lazy (dask) instead of in memory (numpy): same results
        SMALL_CHUNK: _run(series, source, str(root / f"cube{SMALL_CHUNK}" / "cube.zarr"), STORED_CHUNK, N_COMPARE,
                          params=AnalysisParams(eager_max_px=0, work_chunk_px=SMALL_CHUNK)),
        # an RGB+NIR product (commercial 4-band): spectral masks without SWIR
        "rgbn": _run(series, source, str(root / "cube-rgbn" / "cube.zarr"), FULL_CHUNK, N_COMPARE,
                     bands=("blue", "green", "red", "nir")),
        "unheld": _unheld_state_run(series, source, str(root / "cube-unheld" / "cube.zarr")),
        "streamed": _streamed_run(series, source, str(root / "cube-streamed" / "cube.zarr")),
    }


N_UNHELD = 4


def _unheld_state_run(series, source: str, cube_url: str) -> Pipeline:
    """The lazy run of the first N_UNHELD dates as a large site runs it: the baseline state too
    large to hold (PERSIST_STATE_BYTES 0), so it is read again for the fold, beside the date's
    pixels (``open_state_beside``, counted)."""
    import sitewatch.analysis as analysis
    from sitewatch.io import baseline_state as state_io

    calls = []
    real = state_io.open_state_beside

    def counted(*a, **kw):
        calls.append(a[0])
        return real(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(analysis, "PERSIST_STATE_BYTES", 0)
        mp.setattr(state_io, "open_state_beside", counted)
        out = _run(series, source, cube_url, STORED_CHUNK, N_UNHELD, params=AnalysisParams(eager_max_px=0, work_chunk_px=SMALL_CHUNK))
    out.state_rereads = calls
    return out


def _streamed_run(series, source: str, cube_url: str) -> Pipeline:
    """The lazy run of the first N_COMPARE dates as a site too large to hold runs it: the
    whole-site arrays kept in a scratch store beside the cube (hold_max_bytes 0), in the same
    work chunks as the SMALL_CHUNK run. Records what each date kept there."""
    from sitewatch.io import scratch

    held: list[tuple[str, str]] = []
    real = scratch.Scratch.__call__

    def recorded(self, obj, name, chunks=None):
        out = real(self, obj, name, chunks)
        held.append((self.url, name))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scratch.Scratch, "__call__", recorded)
        out = _run(series, source, cube_url, STORED_CHUNK, N_COMPARE,
                   params=AnalysisParams(eager_max_px=0, work_chunk_px=SMALL_CHUNK, hold_max_bytes=0, streamed_chunk_px=SMALL_CHUNK))
    out.held = held
    return out


@pytest.fixture(scope="module")
def run(runs) -> Pipeline:
    return runs[FULL_CHUNK]


def _overlaps(a, b) -> bool:
    ar0, ac0, ar1, ac1 = a
    br0, bc0, br1, bc1 = b
    return ar0 < br1 and br0 < ar1 and ac0 < bc1 and bc0 < ac1


# ---------------------------------------------------------------- the pipeline itself

def test_scenes_found_and_ingested(run, series):
    assert run.problems == []
    assert [r.scene_id for r in run.refs] == series.scene_ids
    assert sorted(run.slots.values()) == list(range(len(series)))
    s = cube_io.slots(run.cube_url)
    assert [x.scene_id for x in s] == series.scene_ids
    assert all(x.ingested and x.analysed for x in s)
    # the cube holds exactly the scenes' bands
    for i in (0, 5):
        sc = series.scene(i)
        for k, b in enumerate(BANDS):
            np.testing.assert_array_equal(run.cube[b].values[i], sc.bands[k])
        np.testing.assert_array_equal(run.cube["valid"].values[i], sc.valid)


def test_slot_results_describe_their_slot(run, series):
    assert [r.index for r in run.results] == list(range(len(series)))
    for i, r in enumerate(run.results):
        sc = series.scene(i)
        assert r.scene_id == sc.scene_id
        assert r.time == sc.datetime.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert r.valid_fraction == pytest.approx(sc.valid.mean(), abs=1e-6)
        # the stored baseline state folded every earlier scene (each pixel keeps its last W clear
        # observations from them); it was created after slot 0 and used from slot 1 on
        assert r.n_baseline_scenes == i
        assert (r.baseline_source, r.baseline_note) == (("state", "") if i else ("none", ""))
        assert 0.0 <= r.cloud_fraction <= 1.0
        assert float(run.cube["cloud_fraction"].values[i]) == pytest.approx(r.cloud_fraction, abs=1e-6)
        if i > 0:  # per-band radiometric normalisation (and, by default, the sub-pixel shift) against the baseline
            assert r.normalisation is not None
            assert set(r.normalisation) == {"gain", "offset", "shift_px"}
            assert len(r.normalisation["shift_px"]) == 2 and all(abs(v) <= 1 for v in r.normalisation["shift_px"])
            assert len(r.normalisation["gain"]) == len(r.normalisation["offset"]) == len(BANDS)
            assert all(0.5 < g < 2.0 for g in r.normalisation["gain"])


def test_first_slot_has_no_baseline(run):
    r0 = run.results[0]
    assert r0.change_state == "not enough history"
    fc = objects_file.read(r0.objects_url)
    assert fc["sitewatch:change_state"] == "not enough history" and fc["features"] == []
    assert fc["sitewatch:n_baseline_scenes"] == 0
    assert r0.n_baseline_scenes == 0
    assert r0.detections == []
    assert r0.normalisation is None
    assert np.isnan(run.cube["change_score"].values[0]).all()
    assert not run.cube["change"].values[0].any()
    assert bool(run.cube["analysed"].values[0])


def test_later_slots_have_masks_and_scores(run, series):
    ds = run.cube
    assert ds["analysed"].values.all()
    assert np.isfinite(ds["cloud_fraction"].values).all()
    min_obs = AnalysisParams().change.min_obs
    for i in range(1, len(series)):
        sc = series.scene(i)
        score = ds["change_score"].values[i]
        clear = ds["valid"].values[i] & ~ds["cloud"].values[i] & ~ds["shadow"].values[i]
        # a score exactly where the pixel is clear and was clear often enough in the baseline's
        # scenes (every earlier one: the state holds each pixel's last W clear observations from
        # them): min_obs times, or in every earlier scene while there are fewer (a short history
        # degrades to a comparison with what there is; one earlier scene: bi-temporal)
        hist = analysed_earlier(ds, i)
        assert min_obs <= AnalysisParams().baseline.window  # so "count >= need" is "clear >= need times"
        assert run.results[i].n_baseline_scenes == len(hist)
        before = ds["valid"].values[hist] & ~ds["cloud"].values[hist] & ~ds["shadow"].values[hist]
        need = max(1, min(min_obs, int(before.any(axis=(1, 2)).sum())))
        expected = clear & (before.sum(axis=0) >= need)
        # Co-registration: each earlier scene was folded moved onto the baseline by its sub-pixel
        # shift (a pixel kept only where its whole bilinear support was clear) and the baseline is
        # moved by this scene's shift, so a pixel next to a cloud or swath edge, or next to pixels
        # with less history, may lose its score; never is a pixel scored that is not clear.
        finite = np.isfinite(score)
        assert not (finite & ~clear).any(), i
        assert (expected & ~finite).sum() <= 0.03 * expected.sum() + 10, (i, int((expected & ~finite).sum()), int(expected.sum()))
        assert run.results[i].change_state == "ok", i
        assert not np.isfinite(score[~ds["valid"].values[i]]).any(), i
        # a changed pixel has a score
        assert np.isfinite(score[ds["change"].values[i]]).all(), i
        if sc.cloud_fraction > 0.05:
            assert ds["cloud"].values[i].any(), i
        # masks never flag pixels outside the swath
        assert not (ds["cloud"].values[i] & ~sc.valid).any(), i
    # clear dates give (nearly) empty masks
    for i in range(len(series)):
        sc = series.scene(i)
        if sc.cloud_fraction == 0 and not sc.shadow.any():
            assert ds["cloud"].values[i].mean() < 0.01, i


def test_cloud_mask_recall_on_cloudiest_date(run, series):
    fractions = [series.scene(i).cloud_fraction for i in range(len(series))]
    i = int(np.argmax(fractions))
    truth = series.scene(i).cloud
    assert truth.mean() > 0.3, "the series should have a cloudy date"
    got = run.cube["cloud"].values[i]
    recall = (got & truth).sum() / truth.sum()
    assert recall > 0.7, f"cloud recall {recall:.2f} on date {i}"
    # and the cloud fraction reported reflects it
    assert run.results[i].cloud_fraction > 0.5 * fractions[i]


def test_four_band_sites_mask_clouds_and_find_the_aircraft(runs, series):
    """Without SWIR the masks still catch the cloudiest date's clouds and the aircraft arrivals
    on the dates analysed are still found."""
    four = runs["rgbn"]
    assert set(four.cube.data_vars) >= {"blue", "green", "red", "nir", "cloud", "change"} and "swir16" not in four.cube
    fractions = [series.scene(i).cloud_fraction for i in range(N_COMPARE)]
    i = int(np.argmax(fractions))
    truth = series.scene(i).cloud
    recall = (four.cube["cloud"].values[i] & truth).sum() / truth.sum()
    assert recall > 0.7, f"cloud recall {recall:.2f} on date {i} without SWIR"
    arrivals = [e for e in series.events if e.kind == "aircraft_arrival" and e.date_index < N_COMPARE]
    assert arrivals
    for e in arrivals:
        assert any(_overlaps(d.bbox_pixels, e.bbox) for d in four.results[e.date_index].detections), e.description


def test_shadow_mask_on_shadowiest_date(run, series):
    sizes = [series.scene(i).shadow.sum() for i in range(len(series))]
    i = int(np.argmax(sizes))
    truth = series.scene(i).shadow
    assert truth.sum() > 1000
    obscured = run.cube["shadow"].values[i] | run.cube["cloud"].values[i]
    assert run.cube["shadow"].values[i].any()
    assert (obscured & truth).sum() / truth.sum() > 0.5


def test_aircraft_arrivals_detected_on_their_date(run, series):
    arrivals = [e for e in series.events if e.kind == "aircraft_arrival"]
    assert arrivals, "the series should have aircraft arrivals"
    for e in arrivals:
        i = e.date_index
        sc = series.scene(i)
        r0, c0, r1, c1 = e.bbox
        # precondition guaranteed by the generator: the footprint is clear and valid on its date
        assert not sc.cloud[r0:r1, c0:c1].any() and not sc.shadow[r0:r1, c0:c1].any()
        assert sc.valid[r0:r1, c0:c1].all()
        res = run.results[i]
        assert res.n_baseline_scenes > 0
        hits = [d for d in res.detections if _overlaps(d.bbox_pixels, e.bbox)]
        assert hits, f"{e.description} not detected; detections: {[d.bbox_pixels for d in res.detections]}"
        d = hits[0]
        assert d.direction == e.direction == "brighter"
        assert d.scene_id == sc.scene_id and d.time == res.time
        assert d.area_m2 >= AnalysisParams().min_object_area_m2
        assert d.area_m2 == pytest.approx(round(d.area_m2 / 100.0) * 100.0)  # whole 10 m pixels
        # the detection is where the aircraft is, also in lon/lat
        assert r0 - 2 <= d.row <= r1 + 2 and c0 - 2 <= d.col <= c1 + 2
        poly = shape(d.polygon)
        assert poly.is_valid and not poly.is_empty
        elon, elat = series.grid.pixel_to_lonlat((r0 + r1) / 2, (c0 + c1) / 2)
        assert poly.buffer(2e-4).contains(Point(elon, elat))
        assert abs(d.lon - elon) < 3e-4 and abs(d.lat - elat) < 3e-4
        # the changed pixels in the cube cover most of the aircraft
        assert run.cube["change"].values[i][r0:r1, c0:c1].mean() > 0.5
        # Detection round trip through a plain dict
        assert Detection.from_dict(d.to_dict()) == d


def test_other_events_detected_on_their_date(run, series):
    """Every one-off event (building, vehicles, field) shows up as a detection on its date."""
    for e in series.events:
        if e.kind not in ("building_appeared", "vehicles_removed", "field_cleared"):
            continue
        res = run.results[e.date_index]
        hits = [d for d in res.detections if _overlaps(d.bbox_pixels, e.bbox)]
        assert hits, f"{e.kind} on date {e.date_index} not detected"


def test_no_detections_before_any_event(run, series):
    first_event = min(e.date_index for e in series.events)
    for i in range(first_event):
        sc = series.scene(i)
        if sc.cloud_fraction == 0:
            assert run.results[i].detections == [], i


# ---------------------------------------------------------------- chunk independence

def test_results_independent_of_chunk_size_and_of_eager_or_dask(runs):
    """2 x 2 chunks analysed lazily on dask == one chunk analysed in memory with numpy."""
    small, full = runs[SMALL_CHUNK], runs[FULL_CHUNK]
    assert small.cube.sizes["time"] == N_COMPARE and len(small.results) == N_COMPARE
    a, b = small.cube, full.cube.isel(time=slice(0, N_COMPARE))
    assert [str(v) for v in a.scene_id.values] == [str(v) for v in b.scene_id.values]
    for v in ("cloud", "shadow", "change", "valid"):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    np.testing.assert_array_equal(a["change_score"].values, b["change_score"].values)  # NaN-aware: same NaNs
    np.testing.assert_array_equal(a["cloud_fraction"].values, b["cloud_fraction"].values)
    assert a["change"].values.any() and a["cloud"].values.any()  # not trivially equal
    n_dets = 0
    for ra, rb in zip(small.results, full.results):
        assert (ra.scene_id, ra.index, ra.n_baseline_scenes) == (rb.scene_id, rb.index, rb.n_baseline_scenes)
        assert ra.cloud_fraction == rb.cloud_fraction
        assert ra.normalisation == rb.normalisation
        # the same objects with the same statistics and outlines; their order follows the label
        # numbering, which depends on the chunking
        key = lambda d: (d.bbox_pixels, d.row, d.col)  # noqa: E731
        assert sorted(ra.detections, key=key) == sorted(rb.detections, key=key)
        n_dets += len(ra.detections)
    assert n_dets > 0
    # an object crossing the 128 px chunk border is one detection, not two halves
    crossing = [d for r in small.results for d in r.detections if d.bbox_pixels[0] < SMALL_CHUNK < d.bbox_pixels[2]]
    assert crossing


def test_a_state_too_large_to_hold_is_read_again_beside_the_pixels_with_the_same_results(runs):
    unheld, full = runs["unheld"], runs[FULL_CHUNK]
    # every date folded after the first reads the stored state a second time (the first has none yet)
    assert len(unheld.state_rereads) == N_UNHELD - 1
    a, b = unheld.cube, full.cube.isel(time=slice(0, N_UNHELD))
    for v in ("cloud", "shadow", "change", "change_score"):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    assert [len(r.detections) for r in unheld.results] == [len(r.detections) for r in full.results[:N_UNHELD]]


def test_a_site_too_large_to_hold_streams_through_a_scratch_store_with_the_same_results(runs):
    streamed, small = runs["streamed"], runs[SMALL_CHUNK]
    a, b = streamed.cube, small.cube
    for v in ("cloud", "shadow", "change", "change_score", "mask_flags", "cloud_score", "cloud_fraction"):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    key = lambda d: (d.bbox_pixels, d.row, d.col)  # noqa: E731
    for ra, rb in zip(streamed.results, small.results):
        assert (ra.change_state, ra.normalisation, ra.baseline_source) == (rb.change_state, rb.normalisation, rb.baseline_source)
        assert sorted(ra.detections, key=key) == sorted(rb.detections, key=key)
    assert sum(len(r.detections) for r in streamed.results) > 0
    # every date with a baseline kept it, its masks, its band stack and folded pixels and its change there, each
    # date in a store of its own; the stores are gone once the dates are done
    names = [n for _, n in streamed.held]
    dates_with_change = sum(r.change_state == "ok" for r in streamed.results)
    assert names.count("baseline") == N_COMPARE - 1 and names.count("masks") == N_COMPARE
    assert names.count("change") == dates_with_change > 0 and names.count("values") == N_COMPARE
    assert len({u for u, _ in streamed.held}) == N_COMPARE
    from sitewatch.io import scratch

    root = scratch.scratch_url(streamed.cube_url)
    assert not any(os.path.exists(u) for u, _ in streamed.held) and (not os.path.exists(root) or not os.listdir(root))


def test_cube_chunks_are_as_configured(runs):
    for run, chunk in ((FULL_CHUNK, FULL_CHUNK), (SMALL_CHUNK, STORED_CHUNK)):
        ds = cube_io.open_cube(runs[run].cube_url)
        assert ds["change"].data.chunksize == (1, chunk, chunk)


# ---------------------------------------------------------------- history_indices and errors


# ---------------------------------------------------------------- s2cloudless as the mask method


def test_mask_flags_and_cloud_score_stored_with_the_buffered_masks(run, series):
    """The cube keeps the masks before the buffer (mask_flags bits 1/2) inside the buffered
    ones, snow/water flags outside cloud, a cloud score of 0-100 % on valid pixels (255 outside),
    and every slot result says which mask method ran and where its shadows were projected."""
    from sitewatch.kernels.masks import FLAG_CLOUD, FLAG_SHADOW, FLAG_WATER

    ds = run.cube
    flags = ds["mask_flags"].values
    raw_cloud, raw_shadow = (flags & FLAG_CLOUD) > 0, (flags & FLAG_SHADOW) > 0
    assert (raw_cloud <= ds["cloud"].values).all() and (raw_shadow <= (ds["shadow"].values | ds["cloud"].values)).all()
    assert raw_cloud.any() and raw_cloud.sum() < ds["cloud"].values.sum()  # the buffer adds pixels
    assert ((flags & FLAG_WATER) > 0)[:, :, :10].mean() > 0.5  # the sea along the west edge
    score = ds["cloud_score"].values
    valid = ds["valid"].values
    assert (score[~valid] == 255).all() and (score[valid] <= 100).all()
    cloudiest = int(np.argmax([series.scene(i).cloud_fraction for i in range(len(series))]))
    assert score[cloudiest][raw_cloud[cloudiest]].mean() > 50 > score[cloudiest][valid[cloudiest] & ~ds["cloud"].values[cloudiest]].mean()
    assert all(r.mask_methods == ("spectral",) and r.mask_notes == () for r in run.results)
    projected = [r.shadow_length_px for r in run.results if r.shadow_length_px is not None]
    assert projected and all(p > 0 for p in projected)


# ---------------------------------------------------------------- objects next to the cube, states

def test_every_analysed_date_has_its_objects_file_next_to_the_cube(run, series):
    site_root = run.cube_url.rsplit("/", 1)[0]
    files = objects_file.list_dates(site_root)
    assert files == sorted(r.objects_url for r in run.results)  # one per date, named by time
    for r in run.results:
        fc = objects_file.read(r.objects_url)
        assert fc["sitewatch:scene_id"] == r.scene_id and fc["sitewatch:time"] == r.time
        assert fc["sitewatch:change_state"] == r.change_state
        assert len(fc["features"]) == len(r.detections)
        for f, d in zip(fc["features"], r.detections):
            p = f["properties"]
            assert shape(f["geometry"]).equals(shape(d.polygon)) and f["geometry"]["type"] in ("Polygon", "MultiPolygon")
            assert p["area_m2"] == pytest.approx(d.area_m2, abs=0.1) and p["area_px"] * series.grid.pixel_area_m2 == pytest.approx(d.area_m2)
            assert p["centroid"] == [pytest.approx(d.lon, abs=1e-6), pytest.approx(d.lat, abs=1e-6)]
            w, so, e, n = p["bbox"]
            assert w <= d.lon <= e and so <= d.lat <= n
            assert shape(f["geometry"]).representative_point().within(shape({"type": "Polygon", "coordinates": [[
                [w, so], [e, so], [e, n], [w, n], [w, so]]]}).buffer(1e-9))
            assert p["direction"] == d.direction and p["score_max"] >= p["score_mean"] > 0
            assert p["vegetation"] in (None, "loss", "gain")


def test_aircraft_on_bare_concrete_are_not_vegetation_change(run, series):
    """Aircraft parking on an apron change brightness, not vegetation: their objects carry an
    NDVI change below the vegetation threshold (and so no vegetation label)."""
    dets = [d for r in run.results for d in r.detections if d.direction == "brighter" and d.delta_ndvi is not None]
    assert dets, "expected brighter objects with an NDVI change"
    aircraft = [e for e in series.events if e.kind == "aircraft_arrival"]
    on_aircraft = [d for d in dets for e in aircraft if d.scene_id == series.scene_ids[e.date_index]
                   and _overlaps(d.bbox_pixels, e.bbox)]
    assert on_aircraft
    assert all(d.vegetation is None for d in on_aircraft), [(d.delta_ndvi, d.vegetation) for d in on_aircraft]


def test_change_rejects_a_baseline_on_another_grid(run, series):
    from sitewatch.kernels.baseline import robust_baseline
    from sitewatch.kernels.change import change

    ds = run.cube
    bands = list(BANDS)
    stack = ds[bands].isel(time=[1, 2, 3]).to_dataarray("band").transpose("band", "time", "y", "x")
    clear = ds["valid"].isel(time=[1, 2, 3])
    baseline = robust_baseline(stack, clear)
    scene = ds[bands].isel(time=6)
    shifted = baseline.assign_coords(x=baseline.x + series.grid.resolution)
    with pytest.raises(ValueError, match="different grids: x coordinates"):
        change(scene, ds["valid"].isel(time=6), shifted, bands)
    with pytest.raises(ValueError, match="different grids: y sizes got 256 and 200"):
        change(scene, ds["valid"].isel(time=6), baseline.isel(y=slice(0, 200)), bands)


