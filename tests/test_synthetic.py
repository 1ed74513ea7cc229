"""Tests of the seeded synthetic site time-series generator (sitewatch.synthetic)."""

from __future__ import annotations

import datetime
import pickle
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest

from sitewatch.synthetic import (
    BANDS,
    CLOUD_OPACITY_THRESHOLD,
    EVENT_KINDS,
    NODATA,
    ChangeEvent,
    LandCover,
    SyntheticScene,
    SyntheticSeries,
    SyntheticSpec,
    generate_series,
    solar_position,
)

SMALL = dict(width=256, height=256, n_dates=14)
ARRAYS = ("bands", "valid", "cloud", "shadow", "change", "surface")


@pytest.fixture(scope="module")
def series() -> SyntheticSeries:
    return generate_series(**SMALL, seed=0)


@pytest.fixture(scope="module")
def scenes(series: SyntheticSeries) -> list[SyntheticScene]:
    return list(series)


def _assert_same_scene(a: SyntheticScene, b: SyntheticScene) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name
    for f in fields(SyntheticScene):
        if f.name not in ARRAYS:
            assert getattr(a, f.name) == getattr(b, f.name), f.name


# ---------------------------------------------------------------- determinism

def test_same_seed_gives_identical_arrays(series: SyntheticSeries, scenes: list[SyntheticScene]) -> None:
    other = generate_series(SyntheticSpec(**SMALL, seed=0))
    assert other.dates == series.dates
    assert other.events == series.events
    cloudy = next(i for i, s in enumerate(scenes) if s.cloud_fraction > 0.05)
    for i in (0, cloudy, len(series) - 1):
        _assert_same_scene(other.scene(i), scenes[i])


def test_different_seed_gives_different_data(series: SyntheticSeries, scenes: list[SyntheticScene]) -> None:
    other = generate_series(**SMALL, seed=1)
    assert other.dates != series.dates  # date jitter
    for i in (0, 8):
        assert not np.array_equal(other.scene(i).bands, scenes[i].bands)
    assert [s.cloud_fraction for s in other] != [s.cloud_fraction for s in scenes]


def test_scene_does_not_depend_on_call_order(scenes: list[SyntheticScene]) -> None:
    fresh = generate_series(**SMALL, seed=0)
    seventh_first = fresh.scene(7)
    in_order = [fresh.scene(i) for i in range(8)]
    _assert_same_scene(seventh_first, in_order[7])
    for i in range(8):
        _assert_same_scene(in_order[i], scenes[i])
    _assert_same_scene(fresh.scene(-1), scenes[-1])


def test_pickles_as_its_spec(series: SyntheticSeries, scenes: list[SyntheticScene]) -> None:
    clone = pickle.loads(pickle.dumps(series))
    assert clone.spec == series.spec
    _assert_same_scene(clone.scene(6), scenes[6])


# ---------------------------------------------------------------- shapes, dtypes, nodata

def test_dtypes_and_shapes(series: SyntheticSeries, scenes: list[SyntheticScene]) -> None:
    h, w = series.grid.shape
    assert (h, w) == (SMALL["height"], SMALL["width"])
    assert len(series) == len(scenes) == SMALL["n_dates"] == len(series.dates)
    assert series.land_cover.shape == (h, w) and not series.land_cover.flags.writeable
    for i, s in enumerate(scenes):
        assert s.index == i
        assert s.bands.shape == s.surface.shape == (len(BANDS), h, w)
        assert s.bands.dtype == s.surface.dtype == np.uint16
        for name in ("valid", "cloud", "shadow", "change"):
            arr = getattr(s, name)
            assert arr.shape == (h, w) and arr.dtype == bool, name
        assert s.datetime.tzinfo is not None and s.datetime.utcoffset() == datetime.timedelta(0)
        assert 0.0 <= s.cloud_fraction <= 1.0
        assert s.band("nir") is not None and np.shares_memory(s.band("nir"), s.bands)


def test_nodata_exactly_where_not_valid(scenes: list[SyntheticScene]) -> None:
    assert any(not s.valid.all() for s in scenes), "expected at least one date with a swath edge"
    for i, s in enumerate(scenes):
        if i < 4:
            assert s.valid.all()
        assert np.array_equal((s.bands == NODATA).any(axis=0), ~s.valid)
        assert np.array_equal((s.bands == NODATA).all(axis=0), ~s.valid)
        assert (s.surface != NODATA).all()
        for name in ("cloud", "shadow", "change"):
            assert not (getattr(s, name) & ~s.valid).any(), name
        assert not (s.cloud & s.shadow).any()
        if not s.valid.all():  # a diagonal cut through one corner
            corners = [s.valid[0, 0], s.valid[0, -1], s.valid[-1, 0], s.valid[-1, -1]]
            assert corners.count(False) == 1
            assert 0.6 < s.valid.mean() < 0.98


def test_scene_ids_dates_and_times(series: SyntheticSeries, scenes: list[SyntheticScene]) -> None:
    spec = series.spec
    ids = [s.scene_id for s in scenes]
    assert len(set(ids)) == len(ids) and ids == series.scene_ids
    assert ids[0] == f"SYN_{spec.seed}_{series.dates[0]:%Y%m%d}"
    assert series.dates[0] == spec.start
    for i, d in enumerate(series.dates):
        nominal = spec.start + datetime.timedelta(days=i * spec.interval_days)
        assert abs((d - nominal).days) <= 2
    assert all(b > a for a, b in zip(series.dates, series.dates[1:]))
    for s, d in zip(scenes, series.dates):
        assert s.date == d
        minutes = s.datetime.hour * 60 + s.datetime.minute
        assert 8 * 60 + 10 <= minutes <= 8 * 60 + 30  # ~08:20 UTC morning overpass at the demo site
        assert 120.0 < s.sun_azimuth < 170.0  # south-east in the morning
        assert 20.0 < s.sun_elevation < 75.0


# ---------------------------------------------------------------- truth agrees with the pixels

def test_cloud_pixels_are_bright_in_blue(scenes: list[SyntheticScene]) -> None:
    checked = 0
    for s in scenes:
        if s.cloud.sum() < 50:
            continue
        diff = s.bands[0][s.cloud].astype(np.int32) - s.surface[0][s.cloud].astype(np.int32)
        assert np.median(diff) > 400, s.scene_id
        checked += 1
    assert checked >= 3


def test_shadow_pixels_are_dark_in_nir(scenes: list[SyntheticScene]) -> None:
    checked = 0
    for s in scenes:
        if s.shadow.sum() < 50:
            continue
        ratio = np.median(s.bands[3][s.shadow].astype(np.float64)) / np.median(s.surface[3][s.shadow].astype(np.float64))
        assert ratio < 0.85, s.scene_id
        checked += 1
    assert checked >= 3


def test_clear_pixels_match_surface(scenes: list[SyntheticScene]) -> None:
    """Away from clouds and shadows the observation is the surface plus radiometry and noise."""
    for s in scenes:
        clear = s.valid & ~s.cloud & ~s.shadow
        for b in range(len(BANDS)):
            obs, surf = s.bands[b][clear].astype(np.float64), s.surface[b][clear].astype(np.float64)
            gain, offset = np.polyfit(surf, obs, 1)
            assert 0.92 <= gain <= 1.08 and abs(offset) <= 170, (s.scene_id, BANDS[b], gain, offset)
            residual = obs - (gain * surf + offset)
            robust_sigma = 1.4826 * np.median(np.abs(residual - np.median(residual)))
            assert 40 <= robust_sigma <= 100, (s.scene_id, BANDS[b], robust_sigma)  # sensor noise 50-80 DN


def test_change_truth_matches_surface_differences(series: SyntheticSeries, scenes: list[SyntheticScene]) -> None:
    crop = series.land_cover == LandCover.CROP
    concrete = series.land_cover == LandCover.CONCRETE
    assert scenes[0].change.sum() == 0
    n_changed_dates = 0
    for prev, cur in zip(scenes, scenes[1:]):
        differs = (cur.surface != prev.surface).any(axis=0)
        assert differs[cur.change].all(), cur.scene_id  # every change pixel differs
        steady = ~cur.change
        # outside crop parcels nothing but the events changes the surface: apron, runway, roofs...
        assert not differs[steady & ~crop].any(), cur.scene_id
        assert not differs[steady & concrete].any(), cur.scene_id
        # crops drift slowly with their phenology
        drift = np.abs(cur.surface.astype(np.int32) - prev.surface.astype(np.int32))[:, steady & crop]
        assert drift.max() < 500, cur.scene_id
        assert np.array_equal(cur.change, series.change_mask(cur.index))
        n_changed_dates += bool(cur.change.any())
    assert n_changed_dates >= 4


def test_events(series: SyntheticSeries) -> None:
    h, w = series.grid.shape
    n = len(series)
    assert {e.kind for e in series.events} == set(EVENT_KINDS)
    assert [e.date_index for e in series.events] == sorted(e.date_index for e in series.events)
    for e in series.events:
        r0, c0, r1, c1 = e.bbox
        assert 0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w
        assert 5 <= e.date_index < n
        assert e.date == series.dates[e.date_index]
        assert e.description and e.object_id
        assert e.area_px == int(e.mask((h, w)).sum())
        union = (min(b[0] for b in e.boxes), min(b[1] for b in e.boxes), max(b[2] for b in e.boxes), max(b[3] for b in e.boxes))
        assert union == e.bbox
        assert e.direction == ("darker" if e.kind == "aircraft_departure" else "brighter")
    arrivals = {e.object_id: e for e in series.events if e.kind == "aircraft_arrival"}
    departures = {e.object_id: e for e in series.events if e.kind == "aircraft_departure"}
    assert 2 <= len(arrivals) <= 3 and arrivals.keys() == departures.keys()
    for key, arrival in arrivals.items():
        assert departures[key].bbox == arrival.bbox
        assert departures[key].date_index >= arrival.date_index + 6
        r0, c0, r1, c1 = arrival.bbox
        assert 3 <= r1 - r0 <= 12 and 3 <= c1 - c0 <= 12  # ~7 x 7 px at 10 m
    (vehicles,) = [e for e in series.events if e.kind == "vehicles_removed"]
    assert len(vehicles.parts) == 6
    # each footprint is covered by the change truth of its date
    for e in series.events:
        change = series.change_mask(e.date_index)
        assert change[e.mask((h, w))].all()
        if len(e.boxes) == 1:
            r0, c0, r1, c1 = e.bbox
            assert change[r0:r1, c0:c1].all()


def test_event_pixels_change_in_the_stated_direction(series: SyntheticSeries, scenes: list[SyntheticScene]) -> None:
    for e in series.events:
        m = e.mask(series.grid.shape)
        before = scenes[e.date_index - 1].surface[:3][:, m].astype(np.float64).mean()
        after = scenes[e.date_index].surface[:3][:, m].astype(np.float64).mean()
        assert (after > before) == (e.direction == "brighter"), e.kind
    (cleared,) = [e for e in series.events if e.kind == "field_cleared"]
    m = cleared.mask(series.grid.shape)
    nir = [scenes[cleared.date_index + k].surface[3][m].mean() for k in (-1, 0)]
    red = [scenes[cleared.date_index + k].surface[2][m].mean() for k in (-1, 0)]
    assert nir[1] < nir[0] and red[1] > red[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_dates_clear_mostly_cloudy_date_and_clear_event_footprints(seed: int) -> None:
    s = generate_series(**SMALL, seed=seed)
    scenes = list(s)
    fractions = [sc.cloud_fraction for sc in scenes]
    assert max(fractions[:4]) < 0.05
    assert max(fractions) > 0.85
    assert sum(f > 0.02 for f in fractions) >= 3
    for e in s.events:
        sc = scenes[e.date_index]
        m = e.mask(s.grid.shape)
        assert sc.valid[m].all() and not sc.cloud[m].any() and not sc.shadow[m].any(), (seed, e.kind)
        assert sc.change[m].all()
        # the event is visible in the observation itself (clear sky: close to the surface)
        obs, surf = sc.bands[:, m].astype(np.float64), sc.surface[:, m].astype(np.float64)
        assert np.median(np.abs(obs - surf) / surf) < 0.15


def test_cloud_threshold_is_documented() -> None:
    import sitewatch.synthetic as synthetic

    assert CLOUD_OPACITY_THRESHOLD == pytest.approx(0.1)
    assert "CLOUD_OPACITY_THRESHOLD" in (synthetic.__doc__ or "")


def test_minimum_site_contains_every_event() -> None:
    s = generate_series(width=192, height=192, n_dates=12, seed=5)
    assert {e.kind for e in s.events} == set(EVENT_KINDS)
    assert all(5 <= e.date_index <= 11 for e in s.events)
    h, w = s.grid.shape
    owners = np.zeros((h, w), np.int32)
    for e in {e.object_id: e for e in s.events}.values():
        owners += e.mask((h, w))
    assert owners.max() == 1  # footprints of different objects do not overlap


# ---------------------------------------------------------------- spec validation

@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 100),
        ("height", 191),
        ("width", 256.0),
        ("resolution", 0),
        ("resolution", -10.0),
        ("resolution", float("nan")),
        ("n_dates", 11),
        ("interval_days", 0),
        ("seed", -1),
        ("cloudy_fraction", 1.5),
        ("cloudy_fraction", -0.1),
        ("lat", 95.0),
        ("lon", 200.0),
        ("crs", "EPSG:4326"),
        ("crs", "not a crs"),
        ("start", "2026-01-04"),
        ("start", datetime.datetime(2026, 1, 4, 8, 0)),
    ],
)
def test_bad_spec_values_raise_value_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SyntheticSpec(**{field: value})
    with pytest.raises(ValueError, match=field):
        generate_series(**{field: value})


def test_generate_series_overrides(series: SyntheticSeries) -> None:
    s = generate_series(series.spec, seed=3)
    assert s.spec == SyntheticSpec(**SMALL, seed=3)
    with pytest.raises(TypeError):
        generate_series(series.spec, no_such_field=1)
    with pytest.raises(IndexError):
        series.scene(len(series))


def test_event_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        ChangeEvent("tank_parade", 6, datetime.date(2026, 3, 1), (0, 0, 2, 2), "brighter", "x")
    with pytest.raises(ValueError, match="direction"):
        ChangeEvent("field_cleared", 6, datetime.date(2026, 3, 1), (0, 0, 2, 2), "greener", "x")


# ---------------------------------------------------------------- sun

def test_solar_position_noon_and_morning() -> None:
    lon, lat = 35.95, 35.40
    # June solstice: solar noon at ~09:38 UTC at lon 35.95; elevation 90 - (lat - 23.44)
    t0 = datetime.datetime(2026, 6, 21, 9, 0, tzinfo=datetime.timezone.utc)
    minute = max(range(80), key=lambda m: solar_position(t0 + datetime.timedelta(minutes=m), lon, lat)[1])
    azimuth, elevation = solar_position(t0 + datetime.timedelta(minutes=minute), lon, lat)
    assert elevation == pytest.approx(90.0 - (lat - 23.44), abs=0.5)
    assert azimuth == pytest.approx(180.0, abs=5.0)
    assert 30 <= minute <= 46
    # winter morning: sun low in the south-east; naive datetimes are UTC
    az, el = solar_position(datetime.datetime(2026, 1, 4, 8, 20), lon, lat)
    assert 140 < az < 170 and 20 < el < 35


# ---------------------------------------------------------------- library hygiene

def test_module_imports_no_prefect_dask_or_xarray() -> None:
    code = (
        "import sys, sitewatch.synthetic\n"
        "bad = [m for m in ('prefect', 'dask', 'xarray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
