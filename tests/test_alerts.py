"""Tests for sitewatch.alerts: turning detections into alerts with a persistent identity."""

from __future__ import annotations

import copy

import pytest

from sitewatch.alerts import alert_id, describe, merge
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


def test_alert_id_is_deterministic():
    d = _det("S1", "2026-03-01", bbox=(100, 150, 107, 157))
    assert alert_id(SITE, d) == "base-20260301-r00103c00153"
    assert alert_id(SITE, d) == alert_id(SITE, copy.deepcopy(d))
    assert alert_id("other", d) != alert_id(SITE, d)


def test_describe():
    assert describe(_det("S", "2026-03-01", area=4900.0)) == "brighter change over 4900 m2"
    assert describe(_det("S", "2026-03-01", area=25000.0, direction="darker")) == "darker change over 2.50 ha"


def test_detection_creates_alert():
    d = _det("S1", "2026-03-01")
    alerts, new, updated = merge(SITE, [], [d])
    assert len(alerts) == 1 and updated == []
    a = alerts[0]
    assert new == [a.id] and a.id == alert_id(SITE, d)
    assert a.site == SITE and a.status == "open"
    assert a.first_seen == a.last_seen == "2026-03-01"
    assert a.n_observations == 1
    assert a.scenes == ("S1",) and a.first_scene == "S1"
    assert a.bbox_pixels == d.bbox_pixels
    assert a.direction == "brighter"
    assert a.area_m2 == d.area_m2 and a.score_max == d.score_max and a.score_mean == d.score_mean
    assert a.geometry == d.polygon
    assert a.description == describe(d)
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
    assert a.description == "brighter change over 6000 m2"  # describes the alert as it is now
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
