"""Tests for sitewatch.observation: clear views of alert footprints and the site's observation state."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from sitewatch.alerts import AlertParams, ClearView, merge
from sitewatch.io.cube import Slot
from sitewatch.models import Alert
from sitewatch.observation import clear_views, site_state

TIMES = np.array(["2026-03-01T08:30", "2026-03-11T08:30", "2026-03-21T08:30", "2026-03-31T08:30"], "datetime64[ns]")


def _cube(chunks=None) -> xr.Dataset:
    t, h, w = 4, 40, 50
    valid = np.ones((t, h, w), bool)
    cloud = np.zeros((t, h, w), bool)
    shadow = np.zeros((t, h, w), bool)
    cloud[1, 10:20, 10:15] = True  # half of alert A's box (10:20, 10:20) cloudy in scene 1
    shadow[2, 12:14, 10:20] = True  # 20 % shadow in scene 2
    valid[3, :, 30:] = False  # alert B outside the swath in scene 3
    ds = xr.Dataset({"valid": (("time", "y", "x"), valid), "cloud": (("time", "y", "x"), cloud),
                     "shadow": (("time", "y", "x"), shadow),
                     "analysed": ("time", np.array([True, True, True, False]))},
                    coords={"time": TIMES, "scene_id": ("time", ["S0", "S1", "S2", "S3"])})
    return ds.chunk(chunks) if chunks else ds


def _alert(aid: str, bbox, status="first") -> Alert:
    return Alert(id=aid, site="s", status=status, first_seen="2026-02-01", last_seen="2026-02-01", area_m2=1e4, lon=0, lat=0,
                 score_max=9, score_mean=7, direction="brighter", bbox_pixels=bbox)


@pytest.mark.parametrize("chunks", [None, {"time": 1, "y": 7, "x": 13}])
def test_clear_views_fractions(chunks):
    alerts = [_alert("A", (10, 10, 20, 20)), _alert("B", (0, 30, 10, 40)), _alert("C", (0, 0, 5, 5), status="closed")]
    views = clear_views(_cube(chunks), alerts)
    got = {(v.alert_id, v.scene_id): round(v.clear_fraction, 6) for v in views}
    # scene 3 is not analysed: no view; closed alerts: no view
    assert got == {("A", "S0"): 1.0, ("A", "S1"): 0.5, ("A", "S2"): 0.8, ("B", "S0"): 1.0, ("B", "S1"): 1.0, ("B", "S2"): 1.0}
    assert views[0].time == "2026-03-01T08:30:00Z"
    assert {v.scene_id for v in clear_views(_cube(chunks), alerts, scene_ids=["S2"])} == {"S2"}


@pytest.mark.parametrize("chunks", [None, {"time": 1, "y": 7, "x": 13}])
def test_clear_views_one_union_read_equals_one_read_per_alert(chunks, monkeypatch):
    import sitewatch.observation as obs

    alerts = iter([_alert("A", (10, 10, 20, 20)), _alert("B", (0, 30, 10, 40)), _alert("C", (35, 0, 40, 6))])
    alerts = list(alerts)
    union = clear_views(_cube(chunks), iter(alerts))  # any iterable, read once
    monkeypatch.setattr(obs, "UNION_READ_BYTES", 0)  # too big: one read per alert
    apart = clear_views(_cube(chunks), alerts)
    assert union == apart and len(union) == 9


def test_clear_views_bad_input():
    with pytest.raises(ValueError, match="expected 'shadow'"):
        clear_views(_cube().drop_vars("shadow"), [_alert("A", (0, 0, 2, 2))])
    with pytest.raises(ValueError, match="alert 'A': bbox_pixels got"):
        clear_views(_cube(), [_alert("A", (100, 100, 120, 120))])


def test_clear_views_close_an_alert_in_merge():
    a = _alert("A", (10, 10, 20, 20))
    a = replace(a, first_seen="2026-02-01", last_seen="2026-02-01")
    out, _, _ = merge("s", [a], [], clear_views(_cube(), [a]))
    # S0 (clear) counts, S1 (half cloudy) does not, S2 is 80 % clear (< 0.9): one miss
    assert out[0].misses == 1 and out[0].status == "first"
    out, _, _ = merge("s", [a], [], clear_views(_cube(), [a]), params=AlertParams(min_clear_fraction=0.8))
    assert out[0].status == "closed" and out[0].clear_scenes == ("S0", "S2")


def _slot(i, day, valid=1.0, cloud=0.0, analysed=True):
    return Slot(f"S{i}", i, np.datetime64(f"2026-03-{day:02d}T08:30"), True, analysed, valid, cloud)


def test_site_state():
    p = AlertParams(not_observed_days=20)
    st = site_state([_slot(0, 1), _slot(1, 11, cloud=0.95), _slot(2, 21, valid=0.0, cloud=float("nan"))], "2026-03-25T00:00:00Z", p)
    assert st["last_scene"] == "2026-03-21T08:30:00Z" and st["last_clear_scene"] == "2026-03-01T08:30:00Z"
    assert st["not_observed"] and st["days_since_clear"] == 23.6
    assert st["text"].startswith("not observed for 24 days (last clear scene 2026-03-01")
    ok = site_state([_slot(0, 1), _slot(1, 20)], "2026-03-25T00:00:00Z", p)
    assert not ok["not_observed"] and ok["text"].startswith("observed: last clear scene 2026-03-20")
    assert site_state([], "2026-03-25T00:00:00Z")["text"] == "not observed: no scene yet"
    cloudy = site_state([_slot(0, 1, cloud=1.0)], "2026-03-02T00:00:00Z")
    assert cloudy["not_observed"] and "no clear scene yet" in cloudy["text"]


@pytest.mark.parametrize("chunks", [None, {"time": 2, "y": 9, "x": 11}])
def test_clear_views_tell_a_return_from_a_lasting_change(chunks):
    """Scene 0 before, scene 1 the change (first seen), scene 2 still changed, scene 3 back as before."""
    t, h, w = 4, 30, 30
    red = np.full((t, h, w), 800, np.uint16)
    red[1:3, 10:20, 10:20] = 3000  # bright object in scenes 1 and 2, gone in 3
    red = red + np.arange(t, dtype=np.uint16)[:, None, None] * 20  # per-date offset
    change = np.zeros((t, h, w), bool)
    change[1, 10:20, 10:20] = True
    ds = xr.Dataset({"red": (("time", "y", "x"), red), "nir": (("time", "y", "x"), red.copy()),
                     "valid": (("time", "y", "x"), np.ones((t, h, w), bool)), "cloud": (("time", "y", "x"), np.zeros((t, h, w), bool)),
                     "shadow": (("time", "y", "x"), np.zeros((t, h, w), bool)), "change": (("time", "y", "x"), change),
                     "analysed": ("time", np.ones(t, bool))},
                    coords={"time": TIMES, "scene_id": ("time", ["S0", "S1", "S2", "S3"])})
    ds = ds.chunk(chunks) if chunks else ds
    a = replace(_alert("A", (8, 8, 22, 22)), first_scene="S1", first_seen="2026-03-11", last_seen="2026-03-11", scenes=("S1",))
    views = {v.scene_id: v for v in clear_views(ds, [a])}
    assert views["S0"].returned is None and views["S1"].returned is None  # not after the first view
    assert views["S2"].returned is False and views["S3"].returned is True
    # in the lifecycle: the lasting change is not a miss, the return is
    out, _, _ = merge("s", [a], [], [views["S2"]], params=AlertParams(close_after_clear=1))
    assert out[0].status == "first" and out[0].misses == 0 and out[0].history[-1]["event"] == "clear-view-still-changed"
    out, _, _ = merge("s", out, [], list(views.values()), params=AlertParams(close_after_clear=1))
    assert out[0].status == "closed" and out[0].clear_scenes == ("S2", "S3")
