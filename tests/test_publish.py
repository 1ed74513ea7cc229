"""Tests for sitewatch.publish: the GeoJSON alert feed, image chips and the markdown report."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import xarray as xr
from PIL import Image
from shapely.geometry import shape

from sitewatch import publish
from sitewatch.models import Alert


def _alert(i: int = 0, **kw) -> Alert:
    base = dict(
        id=f"base-2026030{i + 1}-r00100c0015{i}", site="base", status="first", first_seen=f"2026-03-0{i + 1}",
        last_seen=f"2026-03-0{i + 1}", area_m2=4900.0 + i, lon=35.95 + i * 1e-3, lat=35.40, score_max=12.5, score_mean=8.0,
        direction="brighter" if i % 2 == 0 else "darker", bbox_pixels=(100, 150 + i, 107, 157 + i), n_observations=1,
        geometry={"type": "Polygon", "coordinates": [[[35.95, 35.40], [35.951, 35.40], [35.951, 35.401], [35.95, 35.401], [35.95, 35.40]]]},
        scenes=(f"S{i}",), first_scene=f"S{i}", description="brighter change over 4900 m2",
    )
    base.update(kw)
    return Alert(**base)


# ---------------------------------------------------------------- feed

def test_feed_round_trip(tmp_path):
    root = str(tmp_path / "base" / "alerts")
    alerts = [_alert(0), _alert(1, geometry=None, images={"before": "b.png", "after": "a.png"})]
    url = publish.write_feed(root, "base", alerts)
    assert url == str(tmp_path / "base" / "alerts" / "alerts.geojson")
    assert publish.read_feed(root) == alerts
    fc = json.loads((tmp_path / "base" / "alerts" / "alerts.geojson").read_text())
    assert fc["type"] == "FeatureCollection"
    assert "base" in fc["name"]
    assert len(fc["features"]) == 2
    for f, a in zip(fc["features"], alerts):
        assert f["type"] == "Feature" and f["id"] == a.id
        geom = shape(f["geometry"])  # valid GeoJSON geometry
        assert geom.is_valid and not geom.is_empty
        assert isinstance(f["properties"], dict)
        assert f["properties"]["id"] == a.id
    assert fc["features"][1]["geometry"]["type"] == "Point"
    # rewriting replaces the feed
    publish.write_feed(root, "base", alerts[:1])
    assert publish.read_feed(root) == alerts[:1]
    assert sorted(p.name for p in (tmp_path / "base" / "alerts").iterdir()) == ["alerts.geojson"]


def test_read_feed_missing_is_empty(tmp_path):
    assert publish.read_feed(str(tmp_path / "nothing")) == []


def test_empty_feed(tmp_path):
    publish.write_feed(str(tmp_path), "base", [])
    assert publish.read_feed(str(tmp_path)) == []
    assert json.loads((tmp_path / "alerts.geojson").read_text())["features"] == []


@pytest.mark.parametrize("content", [{"type": "Feature", "properties": {}}, {"features": []}])
def test_read_feed_rejects_non_feature_collection(tmp_path, content):
    (tmp_path / "alerts.geojson").write_text(json.dumps(content))
    with pytest.raises(ValueError) as exc:
        publish.read_feed(str(tmp_path))
    msg = str(exc.value)
    assert str(tmp_path / "alerts.geojson") in msg
    assert "FeatureCollection" in msg


# ---------------------------------------------------------------- outline / chip window / png

def test_outline_of_square():
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    o = publish.outline(m)
    expected = m.copy()
    expected[3:6, 3:6] = False
    np.testing.assert_array_equal(o, expected)
    assert o.sum() == 16


def test_outline_touching_edges_and_single_pixels():
    m = np.zeros((5, 6), bool)
    m[:, :3] = True  # touches the top, bottom and left edges
    m[2, 5] = True  # isolated pixel
    o = publish.outline(m)
    # pixels on the array edge are boundary (outside the array counts as outside the mask)
    assert o[0, :3].all() and o[-1, :3].all() and o[:, 0].all()
    assert o[:, 2].all()  # next to the unmasked column 3
    assert not o[1:4, 1].any()  # interior
    assert o[2, 5]
    assert not (o & ~m).any()  # a subset of the mask
    assert publish.outline(np.ones((3, 3), bool)).sum() == 8
    assert not publish.outline(np.zeros((4, 4), bool)).any()


def test_chip_window_centre():
    rs, cs = publish.chip_window((100, 150, 107, 157), (256, 256))
    assert (rs.stop - rs.start, cs.stop - cs.start) == (64, 64)  # min_size
    assert rs.start <= 100 and rs.stop >= 107 and cs.start <= 150 and cs.stop >= 157


def test_chip_window_large_bbox_gets_margin():
    rs, cs = publish.chip_window((50, 60, 150, 100), (512, 512), margin=16)
    assert rs == slice(100 - 66, 100 + 66)
    assert cs == slice(80 - 36, 80 + 36)
    assert cs.start <= 60 - 16 and cs.stop >= 100 + 16


@pytest.mark.parametrize(
    "bbox, shape, check",
    [
        ((0, 0, 5, 5), (256, 256), lambda rs, cs: rs.start == 0 and cs.start == 0 and rs.stop == 34 and cs.stop == 34),
        ((250, 252, 256, 256), (256, 256), lambda rs, cs: rs.stop == 256 and cs.stop == 256 and rs.start == 221 and cs.start == 222),
        ((10, 10, 20, 20), (40, 30), lambda rs, cs: rs == slice(0, 40) and cs == slice(0, 30)),
    ],
)
def test_chip_window_clipped_at_edges(bbox, shape, check):
    rs, cs = publish.chip_window(bbox, shape)
    assert 0 <= rs.start < rs.stop <= shape[0] and 0 <= cs.start < cs.stop <= shape[1]
    assert check(rs, cs), (rs, cs)
    r0, c0, r1, c1 = bbox
    assert rs.start <= r0 and rs.stop >= r1 and cs.start <= c0 and cs.stop >= c1


def test_true_colour():
    red = np.array([[0, 3500, 7000]], np.uint16)
    green = np.array([[0, 0, 3500]], np.uint16)
    blue = np.array([[0, 0, 0]], np.uint16)
    valid = np.array([[True, True, False]])
    rgb = publish.true_colour(red, green, blue, valid)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    assert rgb[0, 1].tolist() == [255, 0, 0]
    assert rgb[0, 2].tolist() == [0, 0, 0]  # invalid is black
    assert rgb[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("scale", [1, 3])
def test_png_bytes(scale):
    h, w = 20, 30
    rgb = np.full((h, w, 3), 100, np.uint8)
    hl = np.zeros((h, w), bool)
    hl[5:10, 8:14] = True
    data = publish.png_bytes(rgb, hl, scale=scale)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.size == (w * scale, h * scale)
    arr = np.asarray(img)
    # outline pixels red, interior and outside unchanged
    assert arr[5 * scale, 8 * scale].tolist() == [255, 40, 40]
    assert arr[7 * scale, 10 * scale].tolist() == [100, 100, 100]
    assert arr[0, 0].tolist() == [100, 100, 100]
    # the input is not modified
    assert (rgb == 100).all()


def test_png_bytes_without_highlight():
    rgb = np.zeros((4, 5, 3), np.uint8)
    img = Image.open(io.BytesIO(publish.png_bytes(rgb)))
    assert img.size == (20, 16)


# ---------------------------------------------------------------- before/after chips

def _chip_cube(n: int = 5, h: int = 80, w: int = 90) -> xr.Dataset:
    rng = np.random.default_rng(0)
    shape = (n, h, w)
    red = np.full(shape, 1000, np.uint16) + np.arange(n, dtype=np.uint16)[:, None, None] * 100
    ds = xr.Dataset(
        {
            "red": (("time", "y", "x"), red),
            "green": (("time", "y", "x"), red.copy()),
            "blue": (("time", "y", "x"), red.copy()),
            "valid": (("time", "y", "x"), np.ones(shape, bool)),
            "cloud": (("time", "y", "x"), np.zeros(shape, bool)),
            "shadow": (("time", "y", "x"), np.zeros(shape, bool)),
            "change": (("time", "y", "x"), rng.random(shape) < 0.01),
        },
        coords={"time": np.arange(n).astype("datetime64[D]").astype("datetime64[ns]"),
                "scene_id": ("time", [f"S{i}" for i in range(n)])},
    )
    ds["change"][3, 40:45, 40:46] = True
    return ds


def test_before_after_chips_picks_latest_clear_scene():
    cube = _chip_cube()
    cube["cloud"][2, :, :] = True  # the scene just before the alert is cloudy in the window
    alert = _alert(0, bbox_pixels=(40, 40, 45, 46), first_scene="S3")
    before, after, sid_before, sid_after = publish.before_after_chips(cube, alert)
    assert (sid_before, sid_after) == ("S1", "S3")
    for data in (before, after):
        img = Image.open(io.BytesIO(data))
        assert img.format == "PNG" and img.size == (64 * 4, 64 * 4)
    a = np.asarray(Image.open(io.BytesIO(after)))
    b = np.asarray(Image.open(io.BytesIO(before)))
    assert not np.array_equal(a, b)
    # the changed box is outlined in red in both chips
    assert (a == [255, 40, 40]).all(axis=-1).any() and (b == [255, 40, 40]).all(axis=-1).any()


def test_before_after_chips_without_visible_bands_use_false_colour():
    """A Landsat site cut to red/NIR/SWIR (the shipped Colorado sample) still gets chips."""
    cube = _chip_cube().rename({"green": "nir", "blue": "swir16"})
    before, after, _, _ = publish.before_after_chips(cube, _alert(0, bbox_pixels=(40, 40, 45, 46), first_scene="S3"))
    for data in (before, after):
        img = Image.open(io.BytesIO(data))
        assert img.info["composite"] == "swir16/nir/red"
    assert Image.open(io.BytesIO(publish.png_bytes(np.zeros((2, 2, 3), np.uint8)))).info["composite"] == "red/green/blue"


@pytest.mark.parametrize("names, triple", [
    (["red", "green", "blue", "nir"], ("red", "green", "blue")),
    (["red", "nir", "swir16", "valid"], ("swir16", "nir", "red")),
    (["green", "red", "nir"], ("nir", "red", "green")),
    (["nir", "valid"], ("nir", "nir", "nir")),
])
def test_chip_bands(names, triple):
    assert publish.chip_bands(names) == triple


def test_chip_bands_none_usable():
    with pytest.raises(ValueError, match=r"chip bands: cube bands got \['coastal', 'valid'\]"):
        publish.chip_bands(["valid", "coastal"])


def test_before_after_chips_unknown_scene():
    with pytest.raises(ValueError, match="first scene"):
        publish.before_after_chips(_chip_cube(), _alert(0, first_scene="NOPE"))


# ---------------------------------------------------------------- markdown

def test_markdown_report_mentions_new_and_updated_alerts():
    alerts = [_alert(0), _alert(1), _alert(2, status="closed")]
    scenes = [{"scene_id": "S9", "time": "2026-03-11T08:30:00Z", "valid_fraction": 0.98, "cloud_fraction": 0.25, "n_detections": 2,
               "mask_methods": ["provider"], "mask_notes": ["spectral rules not used: bands ['red', 'nir'] lack ['blue', 'green']"]}]
    md = publish.markdown_report("base", alerts, [alerts[0].id], [alerts[1].id], scenes)
    assert md.startswith("# sitewatch: base")
    assert f"{alerts[0].id} (new)" in md
    assert f"{alerts[1].id} (updated)" in md
    assert alerts[2].id not in md  # neither new nor updated
    assert "| S9 | 2026-03-11 | 98% | 25% | provider | 2 |" in md
    assert "- spectral rules not used: bands ['red', 'nir'] lack ['blue', 'green']" in md  # why a method did not run
    assert "No new scenes" not in md and "No new alerts" not in md
    assert "Open alerts at this site: 2" in md


def test_markdown_report_scene_without_valid_pixels_is_not_observed():
    scenes = [{"scene_id": "S0", "time": "2026-03-11T08:30:00Z", "valid_fraction": 0.0, "cloud_fraction": float("nan"), "n_detections": 0}]
    md = publish.markdown_report("base", [], [], [], scenes)
    assert "| S0 | 2026-03-11 | 0% | not observed (no valid pixel) | - | 0 |" in md and "nan" not in md


def test_markdown_report_says_when_no_change_was_computed():
    scenes = [{"scene_id": "S0", "time": "2026-03-01T08:30:00Z", "valid_fraction": 1.0, "cloud_fraction": 0.0, "n_detections": 0,
               "change_state": "not enough history"},
              {"scene_id": "S1", "time": "2026-03-11T08:30:00Z", "valid_fraction": 1.0, "cloud_fraction": 1.0, "n_detections": 0,
               "change_state": "no clear pixels"},
              {"scene_id": "S2", "time": "2026-03-21T08:30:00Z", "valid_fraction": 1.0, "cloud_fraction": 0.1, "n_detections": 3,
               "change_state": "ok"}]
    md = publish.markdown_report("base", [], [], [], scenes)
    assert "| S0 | 2026-03-01 | 100% | 0% | - | none (not enough history) |" in md
    assert "| S1 | 2026-03-11 | 100% | 100% | - | none (no clear pixels) |" in md
    assert "| S2 | 2026-03-21 | 100% | 10% | - | 3 |" in md


def test_markdown_report_no_new_scenes():
    md = publish.markdown_report("base", [_alert(0)], [], [], [])
    assert "No new scenes" in md
    assert "No new alerts." in md
    assert "Open alerts at this site: 1" in md


def test_markdown_report_lists_images():
    a = _alert(0, images={"before": "s3://b/before.png", "after": "s3://b/after.png"})
    md = publish.markdown_report("base", [a], [a.id], [], [])
    assert "s3://b/before.png" in md and "s3://b/after.png" in md


def test_markdown_report_lists_quarantined_scenes():
    quarantined = [
        {"scene_id": "S3", "object": "s3://b/scenes/S3/red.tif", "error": "truncated | corrupt\nsecond line",
         "attempts": 2, "first_attempt": "2026-01-01T00:00:00+00:00", "last_attempt": "2026-01-02T00:00:00+00:00"},
    ]
    md = publish.markdown_report("base", [], [], [], [], quarantined)
    assert "## Quarantined scenes (1)" in md
    row = next(line for line in md.splitlines() if line.startswith("| S3 |"))
    assert "`s3://b/scenes/S3/red.tif`" in row and "| 2 |" in row
    assert "truncated \\| corrupt second line" in row  # one table cell: pipe escaped, one line
    assert "Quarantined" not in publish.markdown_report("base", [], [], [], [])


# ---------------------------------------------------------------- chips never block alerts, STAC, actions, report

def test_render_alert_chips_failure_keeps_the_alert(tmp_path):
    root = str(tmp_path / "alerts")
    good = _alert(0, bbox_pixels=(40, 40, 45, 46), first_scene="S3")
    bad = _alert(1, bbox_pixels=(10, 10, 15, 15), first_scene="GONE")  # its scene is not in the cube
    out = publish.render_alert_chips(_chip_cube(), [good, bad], root)
    assert [a.id for a in out] == [good.id, bad.id]
    assert Image.open(out[0].images["after"]).format == "PNG" and out[0].images["before_scene"] == "S2"
    assert set(out[1].images) == {"error"} and "first scene got 'GONE'" in out[1].images["error"]
    assert out[1].status == bad.status and out[1].description == bad.description
    md = publish.markdown_report("base", out, [a.id for a in out], [], [])
    assert "no pictures (ValueError" in md and f"![after]({out[0].images['after']})" in md


def test_stac_items(tmp_path):
    from sitewatch.alerts import merge
    from sitewatch.analysis import Detection

    det = Detection(scene_id="S1", time="2026-03-01T08:30:00Z", area_m2=4900.0, lon=35.95, lat=35.4, row=103.5, col=153.5,
                    bbox_pixels=(100, 150, 107, 157), score_mean=8.0, score_max=12.0, direction="brighter", delta_brightness=0.1,
                    polygon=_alert(0).geometry)
    (a,), _, _ = merge("base", [], [det], cube_url=str(tmp_path / "cube.zarr"))
    a = replace_images(a, {"before": "b.png", "after": "a.png"})
    (url,) = publish.write_stac_items(str(tmp_path), [a])
    item = json.loads(open(url).read())
    assert url.endswith(f"stac/{a.id}.json") and item["stac_version"] == "1.0.0" and item["id"] == a.id
    assert item["properties"]["start_datetime"] == "2026-03-01T00:00:00Z" and item["properties"]["datetime"] is None
    assert item["properties"]["sitewatch:status"] == "first" and item["properties"]["sitewatch:confidence"] == a.confidence
    assert item["assets"]["after"]["href"] == "a.png" and item["assets"]["cube"]["href"].endswith("cube.zarr")
    assert item["bbox"] == list(shape(item["geometry"]).bounds)
    pystac = pytest.importorskip("pystac")
    assert pystac.Item.from_dict(item).id == a.id  # pystac reads it


def replace_images(a, images):
    from dataclasses import replace

    return replace(a, images=images)


def test_actions_are_stored_one_object_each(tmp_path):
    from sitewatch.alerts import UserAction

    root = str(tmp_path / "alerts")
    assert publish.read_actions(root) == []
    acts = [UserAction("A1", "ack", "2026-04-01T10:00:00Z", by="ana"), UserAction("A1", "close", "2026-04-02T10:00:00Z")]
    for x in acts:
        publish.record_action(root, x)
    assert publish.read_actions(root) == acts


def test_markdown_report_site_state_deliveries_and_table():
    a = _alert(0, status="confirmed", confidence=0.81, cube={"url": "/s/cube.zarr", "time": ["2026-03-01T08:30:00Z", "2026-03-05T08:30:00Z"],
                                                              "window": [84, 134, 123, 173]})
    state = {"text": "not observed for 41 days (last clear scene 2026-03-05; last scene 2026-04-10, 6 days ago)", "not_observed": True}
    deliveries = [{"channel": "ops-hook", "sent": 2, "skipped": 1, "failed": 0, "error": None},
                  {"channel": "bad-hook", "sent": 0, "skipped": 0, "failed": 3, "error": "channel 'bad-hook': url got 'x'"}]
    md = publish.markdown_report("base", [a, _alert(1, status="closed")], [a.id], [], [], site_state=state, channels=deliveries)
    assert "**Site observation:** not observed for 41 days" in md
    assert "| ops-hook | 2 | 1 | 0 |  |" in md and "| bad-hook | 0 | 0 | 3 | channel 'bad-hook': url got 'x' |" in md
    assert "| confirmed | 0.81 |" in md and "sel(time=slice('2026-03-01', '2026-03-05')).isel(y=slice(84, 123), x=slice(134, 173))" in md
    assert "Open alerts at this site: 1" in md
    rows = publish.open_alerts_table([a, _alert(1, status="closed")])
    assert [r["id"] for r in rows] == [a.id] and rows[0]["confidence"] == 0.81


def test_quicklook_outlines_the_change_and_fits_max_px():
    cube = _chip_cube(h=300, w=200)
    cube["change"][3] = False
    cube["change"][3, 100:110, 50:70] = True
    cube["change"][3, 250, 150] = True  # a single changed pixel stays visible when decimated
    cube["cloud"][3, :20, :] = True
    data = publish.quicklook_png(cube.chunk({"y": 128, "x": 128}), "S3", max_px=100)
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.size == (67, 100) and img.text["composite"] == "red/green/blue"
    arr = np.asarray(img)
    red = (arr == [255, 40, 40]).all(axis=-1)
    assert red[33:37, 16:24].any() and red[83, 50] and red.sum() < 40  # step 3: the box and the lone pixel
    assert (arr[0, 0] != arr[50, 5]).any()  # cloud tinted
    full = Image.open(io.BytesIO(publish.quicklook_png(cube, "S3")))
    assert full.size == (200, 300)  # small scenes are not upsampled
    with pytest.raises(ValueError, match="quicklook scene got 'S9'"):
        publish.quicklook_png(cube, "S9")


def test_markdown_report_shows_the_quicklook_or_why_not():
    scenes = [{"scene_id": "S1", "time": "2026-03-11T08:30:00Z", "valid_fraction": 1.0, "cloud_fraction": 0.0, "n_detections": 0}]
    md = publish.markdown_report("base", [], [], [], scenes, quicklook={"scene_id": "S1", "url": "/x/quicklook/S1.png",
                                                                         "data_uri": "data:image/png;base64,AAAA"})
    assert "## Newest scene: S1" in md and "(data:image/png;base64,AAAA)" in md and "/x/quicklook/S1.png" in md
    md = publish.markdown_report("base", [], [], [], scenes, quicklook={"scene_id": "S1", "error": "OSError: gone"})
    assert "not drawn (OSError: gone)" in md
