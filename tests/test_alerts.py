"""Tests for sitewatch.alerts: turning detections into alerts with a persistent identity."""

from __future__ import annotations

import copy

import pytest

from dataclasses import replace

from sitewatch.alerts import (AlertParams, ClearView, UserAction, alert_id, apply_action, confidence, describe,
                              filter_alerts, merge)
from sitewatch.analysis import Detection
from sitewatch.models import Alert

SITE = "base"


def _det(scene: str, date: str, bbox=(100, 150, 107, 157), direction: str = "brighter", area: float = 4900.0,
         score_max: float = 12.0, score_mean: float = 8.0) -> Detection:
    r0, c0, r1, c1 = bbox
    return Detection(
        scene_id=scene, time=f"{date}T08:30:00Z", area_m2=area, lon=35.95, lat=35.40,
        row=(r0 + r1) / 2, col=(c0 + c1) / 2, bbox_pixels=bbox, score_mean=score_mean, score_max=score_max,
        direction=direction, delta_brightness=0.1 if direction == "brighter" else -0.1,
        polygon={"type": "Polygon", "coordinates": [[[35.95, 35.40], [35.951, 35.40], [35.951, 35.401], [35.95, 35.40]]]},
    )


def test_vegetation_change_is_carried_into_the_alert_and_its_description():
    from dataclasses import replace

    d1 = replace(_det("S1", "2026-03-01", direction="brighter"), delta_ndvi=-0.42, vegetation="loss")
    assert "vegetation loss (NDVI fell)" in describe(d1)
    alerts, new, _ = merge("base", [], [d1])
    (a,) = alerts
    assert a.vegetation == "loss" and "Brighter change over 4900 m2: vegetation loss (NDVI fell)" in a.description
    # a later support without a vegetation label keeps the alert's; the feed round-trips it
    alerts, _, _ = merge("base", alerts, [_det("S2", "2026-03-11")])
    assert alerts[0].n_observations == 2 and alerts[0].vegetation == "loss"
    assert Alert.from_feature(alerts[0].to_feature()).vegetation == "loss"
    assert Alert.from_feature({**a.to_feature(), "properties": {k: v for k, v in a.to_feature()["properties"].items()
                                                                 if k != "vegetation"}}).vegetation is None  # older feeds


def test_alert_id_is_deterministic():
    d = _det("S1", "2026-03-01", bbox=(100, 150, 107, 157))
    assert alert_id(SITE, d) == "base-20260301-r00103c00153"
    assert alert_id(SITE, d) == alert_id(SITE, copy.deepcopy(d))
    assert alert_id("other", d) != alert_id(SITE, d)


def test_describe():
    assert describe(_det("S", "2026-03-01", area=4900.0)).startswith("Brighter change over 4900 m2: brighter than")
    assert describe(_det("S", "2026-03-01", area=25000.0, direction="darker")).startswith("Darker change over 2.50 ha: darker than")


def test_detection_creates_alert():
    d = _det("S1", "2026-03-01")
    alerts, new, updated = merge(SITE, [], [d])
    assert len(alerts) == 1 and updated == []
    a = alerts[0]
    assert new == [a.id] and a.id == alert_id(SITE, d)
    assert a.site == SITE and a.status == "first"
    assert a.first_seen == a.last_seen == "2026-03-01"
    assert a.n_observations == 1
    assert a.scenes == ("S1",) and a.first_scene == "S1"
    assert a.bbox_pixels == d.bbox_pixels
    assert a.direction == "brighter"
    assert a.area_m2 == d.area_m2 and a.score_max == d.score_max and a.score_mean == d.score_mean
    assert a.geometry == d.polygon
    assert a.description.startswith(describe(d)) and "New, not yet confirmed" in a.description
    # the same input gives the same alert (same id) in a fresh run
    assert merge(SITE, [], [d])[0] == alerts


def test_merging_same_detections_twice_changes_nothing():
    dets = [
        _det("S1", "2026-03-01"),
        _det("S2", "2026-03-11", bbox=(101, 150, 108, 158), area=5600.0, score_max=15.0),
        _det("S2", "2026-03-11", bbox=(10, 10, 15, 15), direction="darker"),
    ]
    alerts, new, updated = merge(SITE, [], dets)
    assert len(alerts) == 2 and len(new) == 2
    again, new2, updated2 = merge(SITE, alerts, dets)
    assert again == alerts
    assert new2 == [] and updated2 == []
    # also one detection at a time, then everything again
    step: list[Alert] = []
    for d in dets:
        step, _, _ = merge(SITE, step, [d])
    assert step == alerts
    assert merge(SITE, step, list(reversed(dets)))[0] == alerts


def test_overlapping_later_detection_updates_alert():
    first = _det("S1", "2026-03-01", bbox=(100, 150, 107, 157), area=4900.0, score_max=12.0)
    alerts, (aid,), _ = merge(SITE, [], [first])
    later = _det("S2", "2026-03-11", bbox=(103, 155, 110, 162), area=6000.0, score_max=9.0)
    alerts2, new, updated = merge(SITE, alerts, [later])
    assert new == [] and updated == [aid]
    (a,) = alerts2
    assert a.id == aid
    assert a.first_seen == "2026-03-01" and a.last_seen == "2026-03-11"
    assert a.n_observations == 2
    assert a.scenes == ("S1", "S2") and a.first_scene == "S1"
    assert a.bbox_pixels == (100, 150, 110, 162)  # union
    assert a.area_m2 == 6000.0  # the largest
    assert a.description.startswith("Brighter change over 6000 m2")  # describes the alert as it is now
    assert "Provisional, seen 2 times from 2026-03-01 to 2026-03-11" in a.description
    assert a.score_max == 12.0  # the largest
    # a third observation
    alerts3, _, updated3 = merge(SITE, alerts2, [_det("S3", "2026-03-21", bbox=(100, 150, 107, 157))])
    assert updated3 == [aid] and alerts3[0].n_observations == 3 and alerts3[0].last_seen == "2026-03-21"


def test_adjacent_boxes_count_as_overlapping():
    # boxes one pixel apart (end-exclusive) are within the 1-pixel margin
    alerts, (aid,), _ = merge(SITE, [], [_det("S1", "2026-03-01", bbox=(100, 150, 107, 157))])
    alerts2, new, updated = merge(SITE, alerts, [_det("S2", "2026-03-11", bbox=(107, 150, 110, 157))])
    assert new == [] and updated == [aid]
    # two pixels apart: a separate alert
    alerts3, new3, _ = merge(SITE, alerts, [_det("S2", "2026-03-11", bbox=(108, 150, 110, 157))])
    assert len(new3) == 1 and len(alerts3) == 2


def test_opposite_direction_creates_new_alert():
    arrive = _det("S1", "2026-03-01", direction="brighter")
    alerts, (a1,), _ = merge(SITE, [], [arrive])
    leave = _det("S7", "2026-05-01", direction="darker")
    alerts2, new, updated = merge(SITE, alerts, [leave])
    assert updated == [] and len(new) == 1 and new[0] != a1
    assert {a.direction for a in alerts2} == {"brighter", "darker"}
    old = next(a for a in alerts2 if a.id == a1)
    assert old == alerts[0]  # untouched


def test_non_overlapping_creates_new_alert():
    alerts, (a1,), _ = merge(SITE, [], [_det("S1", "2026-03-01", bbox=(100, 150, 107, 157))])
    alerts2, new, updated = merge(SITE, alerts, [_det("S2", "2026-03-11", bbox=(200, 20, 210, 30))])
    assert updated == [] and len(new) == 1
    assert len(alerts2) == 2
    assert [a.id for a in alerts2] == [a1, new[0]]  # sorted by first seen


def test_closed_alert_is_not_updated():
    alerts, (a1,), _ = merge(SITE, [], [_det("S1", "2026-03-01")])
    from dataclasses import replace

    closed = [replace(alerts[0], status="closed")]
    alerts2, new, updated = merge(SITE, closed, [_det("S2", "2026-03-11")])
    assert updated == [] and len(new) == 1
    assert next(a for a in alerts2 if a.id == a1).status == "closed"


def test_detection_before_first_seen_does_not_update():
    alerts, (a1,), _ = merge(SITE, [], [_det("S5", "2026-03-11")])
    alerts2, new, updated = merge(SITE, alerts, [_det("S1", "2026-03-01")])
    assert updated == [] and len(new) == 1
    assert next(a for a in alerts2 if a.id == a1).n_observations == 1


def test_detections_applied_in_time_order():
    early = _det("S1", "2026-03-01")
    late = _det("S2", "2026-03-11", bbox=(101, 151, 108, 158))
    alerts, new, updated = merge(SITE, [], [late, early])
    (a,) = alerts
    assert a.first_seen == "2026-03-01" and a.first_scene == "S1" and a.n_observations == 2
    assert new == [a.id] and updated == []  # created in this merge: reported as new only


def test_input_not_mutated():
    alerts, _, _ = merge(SITE, [], [_det("S1", "2026-03-01")])
    existing = list(alerts)
    snapshot = copy.deepcopy(existing)
    dets = [_det("S2", "2026-03-11"), _det("S3", "2026-03-21", bbox=(0, 0, 5, 5))]
    dets_snapshot = copy.deepcopy(dets)
    out, _, _ = merge(SITE, existing, dets)
    assert existing == snapshot
    assert existing[0] is alerts[0]
    assert dets == dets_snapshot
    assert out is not existing
    assert out[0] != existing[0]  # the output has the update; the input does not


def test_merge_accepts_any_iterable():
    alerts, new, _ = merge(SITE, (), (d for d in [_det("S1", "2026-03-01")]))
    assert len(alerts) == 1 and len(new) == 1


@pytest.mark.parametrize("direction", ["brighter", "darker"])
def test_same_scene_twice_in_one_merge_counts_once(direction):
    d = _det("S1", "2026-03-01", direction=direction)
    alerts, new, updated = merge(SITE, [], [d, d])
    assert len(alerts) == 1 and alerts[0].n_observations == 1 and updated == []


# ---------------------------------------------------------------- lifecycle

def _series(n: int, start_day: int = 1) -> list[Detection]:
    return [_det(f"S{k}", f"2026-03-{start_day + 2 * k:02d}") for k in range(n)]


def test_first_provisional_confirmed_with_history():
    seen = []
    alerts: list[Alert] = []
    for d in _series(4):
        alerts, _, _ = merge(SITE, alerts, [d])
        seen.append(alerts[0].status)
    assert seen == ["first", "provisional", "confirmed", "confirmed"]
    a = alerts[0]
    assert [h["event"] for h in a.history] == ["opened", "supported", "provisional", "supported", "confirmed", "supported"]
    # notifiable updates: opened, provisional, confirmed
    assert a.update_seq == 3 and [h["seq"] for h in a.history if h["notify"]] == [1, 2, 3]
    # the same in one merge
    assert merge(SITE, [], _series(4))[0] == alerts


def test_counts_are_configurable():
    p = AlertParams(provisional_at=3, confirmed_at=5)
    alerts, _, _ = merge(SITE, [], _series(4), params=p)
    assert alerts[0].status == "provisional" and alerts[0].n_observations == 4
    alerts, _, _ = merge(SITE, alerts, [_det("S9", "2026-03-30")], params=p)
    assert alerts[0].status == "confirmed"


def test_params_validated():
    with pytest.raises(ValueError, match="provisional_at"):
        AlertParams(provisional_at=4, confirmed_at=3)
    with pytest.raises(ValueError, match="min_clear_fraction"):
        AlertParams(min_clear_fraction=0)


def test_clear_views_without_support_close_the_alert():
    alerts, (aid,), _ = merge(SITE, [], _series(2))  # S0 03-01, S1 03-03: provisional
    views = [ClearView(aid, "S5", "2026-03-10T08:30:00Z", 1.0), ClearView(aid, "S6", "2026-03-20T08:30:00Z", 0.95)]
    out, new, updated = merge(SITE, alerts, [], views[:1])
    assert out[0].status == "provisional" and out[0].misses == 1 and updated == [aid]
    out, _, _ = merge(SITE, out, [], views)  # the first view again (a rerun) and the second
    a = out[0]
    assert a.status == "closed" and "baseline" in a.closed_reason and a.misses == 2
    assert a.clear_scenes == ("S5", "S6")
    assert a.history[-1]["event"] == "closed" and a.history[-1]["notify"] and a.update_seq == 3
    # rerun: nothing changes
    assert merge(SITE, out, _series(2), views) == (out, [], [])
    # a later detection at the same place opens a new alert
    out2, new2, _ = merge(SITE, out, [_det("S7", "2026-03-25")])
    assert len(new2) == 1 and new2[0] != aid


def test_support_resets_misses_and_cloudy_or_same_scene_views_do_not_count():
    alerts, (aid,), _ = merge(SITE, [], _series(1))
    views = [ClearView(aid, "S5", "2026-03-10T08:30:00Z", 1.0),  # a miss
             ClearView(aid, "S6", "2026-03-12T08:30:00Z", 1.0),  # S6 also supports it: not a miss
             ClearView(aid, "S7", "2026-03-14T08:30:00Z", 0.5),  # footprint half cloudy: not a clear view
             ClearView(aid, "S0", "2026-03-01T08:30:00Z", 1.0)]  # its own first scene
    out, _, _ = merge(SITE, alerts, [_det("S6", "2026-03-12")], views)
    a = out[0]
    assert a.status == "provisional" and a.misses == 0 and a.clear_scenes == ("S5",)


def test_closed_after_time_without_support():
    p = AlertParams(close_after_days=30)
    alerts, (aid,), _ = merge(SITE, [], _series(1), params=p)
    out, _, upd = merge(SITE, alerts, [], params=p, as_of="2026-03-20T00:00:00Z")
    assert out[0].status == "first" and upd == []
    out, _, upd = merge(SITE, alerts, [], params=p, as_of="2026-04-15T00:00:00Z")
    assert out[0].status == "closed" and "30 days" in out[0].closed_reason and upd == [aid]
    # a detection after the expiry opens a new alert instead of reviving the old one
    out2, new2, _ = merge(SITE, alerts, [_det("S9", "2026-05-01")], params=p)
    assert len(new2) == 1 and next(a for a in out2 if a.id == aid).status == "closed"


def test_ack_and_close_by_a_person():
    alerts, (aid,), _ = merge(SITE, [], _series(3))
    ack = UserAction(aid, "ack", "2026-03-08T10:00:00Z", by="ana", note="looked at it")
    out, _, upd = merge(SITE, alerts, [], actions=[ack])
    a = out[0]
    assert a.status == "acknowledged" and upd == [aid]
    assert a.history[-1]["event"] == "acknowledged" and a.history[-1]["by"] == "ana"
    assert apply_action(a, ack) == a  # once only
    # still updated by later detections, status stays acknowledged
    out, _, _ = merge(SITE, out, [_det("S9", "2026-03-10")])
    assert out[0].status == "acknowledged" and out[0].n_observations == 4
    close = UserAction(aid, "close", "2026-03-12T10:00:00Z", by="ana")
    out, _, _ = merge(SITE, out, [], actions=[ack, close])
    assert out[0].status == "closed" and out[0].closed_reason == "closed by ana"
    assert merge(SITE, out, [], actions=[ack, close]) == (out, [], [])
    with pytest.raises(ValueError, match="alert action got 'delete'"):
        UserAction(aid, "delete", "2026-03-12T10:00:00Z")


def test_legacy_open_status_maps_by_observations():
    a = merge(SITE, [], _series(3))[0][0]
    for n, want in [(1, "first"), (2, "provisional"), (5, "confirmed")]:
        f = replace(a, n_observations=n).to_feature()
        f["properties"]["status"] = "open"
        for k in ("confidence", "history", "update_seq", "misses", "clear_scenes", "cube", "closed_reason"):
            f["properties"].pop(k)  # a feed written before the lifecycle
        assert Alert.from_feature(f).status == want
    bad = a.to_feature()
    bad["properties"]["status"] = "zombie"
    with pytest.raises(ValueError, match="status got 'zombie'"):
        Alert.from_feature(bad)


# ---------------------------------------------------------------- confidence

def test_confidence_bounded_and_monotone():
    base = dict(score_max=8.0, area_m2=3000.0, n_observations=2, mask_uncertainty=0.2)
    c0 = confidence(**base)
    assert 0 < c0 < 1
    for key, values in [("score_max", [5, 8, 12, 30]), ("area_m2", [500, 3000, 1e4, 1e6]), ("n_observations", [1, 2, 3, 6])]:
        cs = [confidence(**{**base, key: v}) for v in values]
        assert cs == sorted(cs) and cs[0] < cs[-1], (key, cs)
    cs = [confidence(**{**base, "mask_uncertainty": u}) for u in (0.0, 0.2, 0.5, 1.0)]
    assert cs == sorted(cs, reverse=True) and cs[-1] == 0.0
    assert confidence(1e6, 1e9, 50, 0.0) <= 1.0


def test_near_cloud_support_lowers_confidence_and_more_observations_raise_it():
    alerts, _, _ = merge(SITE, [], _series(1))
    c1 = alerts[0].confidence
    clean, _, _ = merge(SITE, alerts, [_det("S2", "2026-03-05")])
    near = replace(_det("S2", "2026-03-05"), near_cloud_px=30)
    cloudy, _, _ = merge(SITE, alerts, [near])
    assert clean[0].confidence > c1
    assert cloudy[0].n_observations == 2 and cloudy[0].mask_uncertainty > 0
    assert cloudy[0].confidence < clean[0].confidence


def test_content_cube_link_and_filter():
    alerts, (aid,), _ = merge(SITE, [], _series(2), cube_url="/store/base/cube.zarr")
    a = alerts[0]
    assert a.cube["url"] == "/store/base/cube.zarr"
    assert a.cube["time"] == ["2026-03-01T08:30:00Z", "2026-03-03T08:30:00Z"]
    assert a.cube["window"] == [84, 134, 123, 173]
    other, _, _ = merge(SITE, alerts, [_det("T1", "2026-04-01", bbox=(0, 0, 5, 5))])
    assert [x.id for x in filter_alerts(other, status="provisional")] == [aid]
    assert [x.id for x in filter_alerts(other, since="2026-03-10")] != [aid]
    assert len(filter_alerts(other, until="2026-03-10")) == 1 and len(filter_alerts(other, status="open")) == 2
    with pytest.raises(ValueError, match="status got 'opne'"):
        filter_alerts(other, status="opne")
