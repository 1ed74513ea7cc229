"""Tests for sitewatch.models: Site validation and grid, Alert GeoJSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import Polygon, box, mapping, shape

from sitewatch.models import Alert, Site


def shp_transform(fn, geom):
    """Apply an (x, y) -> (x', y') transform to every vertex of ``geom``."""
    return shapely.transform(geom, lambda xy: np.column_stack(fn(xy[:, 0], xy[:, 1])))


BBOX = (35.93, 35.39, 35.97, 35.42)  # lon/lat around Khmeimim


def _site(**kw) -> Site:
    base = dict(name="base", bbox=BBOX, resolution=10.0, source="/data/scenes", store="/data/store")
    base.update(kw)
    name, bbox = base.pop("name"), base.pop("bbox")
    return Site.from_bbox(name, bbox, **base)


# ---------------------------------------------------------------- Site validation

@pytest.mark.parametrize("name", ["", "Base", "my site", "-lead", "a" * 64, "a/b", "é"])
def test_bad_name(name):
    with pytest.raises(ValueError, match="site name") as exc:
        _site(name=name)
    assert repr(name) in str(exc.value)


@pytest.mark.parametrize("name", ["a", "base-1", "base_2", "0abc", "a" * 63])
def test_good_names(name):
    assert _site(name=name).name == name


@pytest.mark.parametrize("resolution", [0, -5.0, float("nan")])
def test_bad_resolution(resolution):
    with pytest.raises(ValueError, match="resolution") as exc:
        _site(resolution=resolution)
    assert "'base'" in str(exc.value)


def test_empty_geometry():
    with pytest.raises(ValueError, match="geometry") as exc:
        Site(name="base", geometry={"type": "Polygon", "coordinates": []}, resolution=10.0, source="s", store="t")
    assert "'base'" in str(exc.value)


def test_zero_area_geometry():
    with pytest.raises(ValueError, match="geometry"):
        Site(name="base", geometry={"type": "Point", "coordinates": [35.9, 35.4]}, resolution=10.0, source="s", store="t")
    with pytest.raises(ValueError, match="geometry"):
        Site(name="base", geometry={"type": "LineString", "coordinates": [[35.9, 35.4], [36.0, 35.5]]},
             resolution=10.0, source="s", store="t")


@pytest.mark.parametrize("bbox", [(179.5, 0.0, 181.0, 1.0), (-181.0, 0.0, -179.0, 1.0), (0.0, 89.5, 1.0, 90.5), (0.0, -91.0, 1.0, -89.0),
                                  (500000.0, 3900000.0, 500100.0, 3900100.0)])
def test_out_of_range_lonlat(bbox):
    with pytest.raises(ValueError, match="geometry bounds") as exc:
        _site(bbox=bbox)
    assert "EPSG:4326" in str(exc.value)


def test_bounds_without_crs():
    with pytest.raises(ValueError, match="bounds") as exc:
        _site(bounds=(700000.0, 3919000.0, 701000.0, 3920000.0))
    assert "crs" in str(exc.value)


def test_small_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        _site(chunk_size=32)


def test_site_urls():
    s = _site(store="s3://bucket/prefix/")
    assert s.site_root == "s3://bucket/prefix/base"
    assert s.cube_url == "s3://bucket/prefix/base/cube.zarr"
    assert s.alerts_url == "s3://bucket/prefix/base/alerts"


# ---------------------------------------------------------------- Site grid

def test_default_crs_is_utm_of_centroid():
    assert _site().site_crs == "EPSG:32636"
    assert _site(crs="EPSG:32637").site_crs == "EPSG:32637"
    south = _site(bbox=(-58.40, -34.62, -58.36, -34.58))
    assert south.site_crs == "EPSG:32721"


@pytest.mark.parametrize("crs", [None, "EPSG:32637", "EPSG:3857"])
def test_grid_from_bbox_contains_geometry(crs):
    s = _site(crs=crs, resolution=20.0)
    g = s.grid
    assert g.crs == s.site_crs
    assert g.resolution == 20.0
    # grid origin on the pixel lattice of the resolution
    assert g.x0 / 20.0 == pytest.approx(round(g.x0 / 20.0)) and g.y0 / 20.0 == pytest.approx(round(g.y0 / 20.0))
    # the geometry (densified: projected edges of a lon/lat box are curved) lies in the grid
    geom = shape(s.geometry).segmentize(0.0005)
    tr = Transformer.from_crs(4326, g.crs, always_xy=True)
    projected = shp_transform(tr.transform, geom)
    assert box(*g.bounds).contains(projected)
    # ... and the grid is not much larger than the geometry's projected bounding box
    minx, miny, maxx, maxy = projected.bounds
    left, bottom, right, top = g.bounds
    for a, b in [(left, minx), (bottom, miny), (right, maxx), (top, maxy)]:
        assert abs(a - b) < 2 * 20.0 + 1.0


def test_grid_from_polygon_geometry_contains_it():
    poly = Polygon([(35.93, 35.39), (35.97, 35.40), (35.955, 35.42), (35.93, 35.39)])
    s = Site(name="tri", geometry=mapping(poly), resolution=10.0, source="s", store="t")
    g = s.grid
    tr = Transformer.from_crs(4326, g.crs, always_xy=True)
    assert box(*g.bounds).contains(shp_transform(tr.transform, poly))


def test_grid_from_projected_bounds():
    s = _site(crs="EPSG:32636", bounds=(700003.0, 3919001.0, 700995.0, 3919999.0))
    g = s.grid
    assert g.bounds == (700000.0, 3919000.0, 701000.0, 3920000.0)
    assert g.shape == (100, 100)


# ---------------------------------------------------------------- Alert

def _alert(**kw) -> Alert:
    base = dict(
        id="base-20260301-r00100c00150", site="base", status="provisional", first_seen="2026-03-01", last_seen="2026-03-11",
        area_m2=4900.0, lon=35.95, lat=35.40, score_max=12.5, score_mean=8.25, direction="brighter",
        bbox_pixels=(100, 149, 107, 156), n_observations=2,
        geometry={"type": "Polygon", "coordinates": [[[35.9, 35.4], [35.91, 35.4], [35.91, 35.41], [35.9, 35.41], [35.9, 35.4]]]},
        scenes=("S1", "S2"), first_scene="S1", description="brighter change over 4900 m2",
        images={"before": "s3://b/before.png", "after": "s3://b/after.png"},
    )
    base.update(kw)
    return Alert(**base)


def test_alert_feature_shape():
    a = _alert()
    f = a.to_feature()
    assert f["type"] == "Feature"
    assert f["id"] == a.id
    assert f["geometry"] == a.geometry
    assert "geometry" not in f["properties"]
    assert f["properties"]["bbox_pixels"] == [100, 149, 107, 156]
    assert f["properties"]["scenes"] == ["S1", "S2"]
    # the feature is plain JSON
    json.dumps(f)


def test_alert_round_trip_through_json():
    a = _alert()
    back = Alert.from_feature(json.loads(json.dumps(a.to_feature())))
    assert back == a
    assert isinstance(back.bbox_pixels, tuple) and isinstance(back.scenes, tuple)


def test_alert_without_geometry_is_a_point_and_round_trips():
    a = _alert(geometry=None, images={}, scenes=())
    f = a.to_feature()
    assert f["geometry"] == {"type": "Point", "coordinates": [35.95, 35.40]}
    back = Alert.from_feature(json.loads(json.dumps(f)))
    assert back == a
    assert back.geometry is None


def test_alert_from_feature_does_not_modify_input():
    f = _alert().to_feature()
    snapshot = json.loads(json.dumps(f))
    Alert.from_feature(f)
    assert f == snapshot


def test_alert_from_feature_with_null_geometry():
    """GeoJSON allows a null geometry; it reads as an alert without a polygon."""
    f = _alert().to_feature()
    f["geometry"] = None
    back = Alert.from_feature(f)
    assert back.geometry is None
    assert back.id == _alert().id
