"""The per-date change-objects files next to the cube (sitewatch/io/objects_file.py)."""

from __future__ import annotations

import json

import pytest

from sitewatch.io import objects_file

POLY = {"type": "Polygon", "coordinates": [[[36.0, 35.4], [36.001, 35.4], [36.001, 35.401], [36.0, 35.4]]]}


def test_url_is_named_by_time_then_scene_so_listings_are_in_date_order(tmp_path):
    root = str(tmp_path / "site")
    a = objects_file.objects_url(root, "2026-01-15T08:18:31Z", "S2B_36SYC_20260115_0_L2A")
    b = objects_file.objects_url(root, "2026-02-01T08:00:00Z", "A/../weird id")
    assert a.endswith("/site/objects/20260115T081831Z_S2B_36SYC_20260115_0_L2A.geojson")
    assert b.endswith("/site/objects/20260201T080000Z_A_.._weird_id.geojson")  # no path separators
    for url, t in ((b, "2026-02-01T08:00:00Z"), (a, "2026-01-15T08:18:31Z")):
        objects_file.write(url, objects_file.feature_collection("x", t, [], "ok", 3, 1.0, 1000))
    assert objects_file.list_dates(root) == [a, b]
    assert objects_file.list_dates(str(tmp_path / "nowhere")) == []


@pytest.mark.parametrize("bad", ["yesterday", "2026-13", ""])
def test_bad_time_is_named(tmp_path, bad):
    with pytest.raises(ValueError, match=f"objects file time got {bad!r}"):
        objects_file.objects_url(str(tmp_path), bad, "S1")


def test_round_trip_with_state_and_properties(tmp_path):
    url = objects_file.objects_url(str(tmp_path), "2026-01-15T08:18:31Z", "S1")
    fc = objects_file.feature_collection(
        "S1", "2026-01-15T08:18:31Z",
        [{"polygon": POLY, "area_m2": 400.0, "direction": "brighter", "vegetation": None}], "ok", 8, 0.93456, 100.0)
    objects_file.write(url, fc)
    back = objects_file.read(url)
    assert back == json.loads(json.dumps(fc))
    (f,) = back["features"]
    assert f["id"] == "S1-1" and f["geometry"] == json.loads(json.dumps(POLY))
    assert f["properties"] == {"area_m2": 400.0, "direction": "brighter", "vegetation": None}
    assert back["sitewatch:change_state"] == "ok" and back["sitewatch:history_fraction"] == 0.9346
    assert back["sitewatch:n_baseline_scenes"] == 8 and back["sitewatch:min_area_m2"] == 100.0


def test_states_are_validated():
    with pytest.raises(ValueError, match="change_state got 'meh'"):
        objects_file.feature_collection("S1", "2026-01-15T08:18:31Z", [], "meh", 0, None, 0)
    with pytest.raises(ValueError, match="1 object\\(s\\) with change_state 'not enough history'; expected none"):
        objects_file.feature_collection("S1", "2026-01-15T08:18:31Z", [{"polygon": POLY}], "not enough history", 0, 0.0, 0)


def test_rewrite_replaces_and_corrupt_file_is_named(tmp_path):
    url = objects_file.objects_url(str(tmp_path), "2026-01-15T08:18:31Z", "S1")
    objects_file.write(url, objects_file.feature_collection("S1", "2026-01-15T08:18:31Z", [{"polygon": POLY}], "ok", 2, 1.0, 0))
    objects_file.write(url, objects_file.feature_collection("S1", "2026-01-15T08:18:31Z", [], "ok", 2, 1.0, 0))
    assert objects_file.read(url)["features"] == []
    assert [p.name for p in (tmp_path / "objects").iterdir()] == [url.rsplit("/", 1)[1]]  # no temporary left
    (tmp_path / "objects" / "x.geojson").write_text("{not json")
    with pytest.raises(ValueError, match="x.geojson' is not JSON"):
        objects_file.read(str(tmp_path / "objects" / "x.geojson"))
    (tmp_path / "objects" / "y.geojson").write_text('{"type": "Feature"}')
    with pytest.raises(ValueError, match="got type 'Feature'; expected 'FeatureCollection'"):
        objects_file.read(str(tmp_path / "objects" / "y.geojson"))
