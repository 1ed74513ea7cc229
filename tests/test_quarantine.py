"""Tests for sitewatch.quarantine: the persisted list of scenes that could not be used."""

from __future__ import annotations

import json

import pytest

from sitewatch import quarantine as q


def F(sid, obj="s3://b/s/x.tif", err="boom"):
    return q.Failure(sid, obj, err)


def test_first_failure_is_added_with_one_attempt():
    out = q.update([], [F("A")], [], now="2026-01-01T00:00:00+00:00")
    assert out == [q.QuarantineEntry("A", "s3://b/s/x.tif", "boom", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00", 1)]


def test_repeated_failure_counts_attempts_and_keeps_first_attempt():
    one = q.update([], [F("A")], [], now="t1")
    two = q.update(one, [F("A", err="still broken")], [], now="t2")
    assert [(e.attempts, e.first_attempt, e.last_attempt, e.error) for e in two] == [(2, "t1", "t2", "still broken")]


def test_success_removes_and_untried_entries_stay():
    prev = q.update([], [F("A"), F("B")], [], now="t1")
    out = q.update(prev, [], ["A"], now="t2")
    assert [e.scene_id for e in out] == ["B"] and out[0].attempts == 1


def test_unknown_items_are_keyed_by_object_and_dropped_when_no_longer_failing():
    prev = q.update([], [F("?", "s3://b/bad1.json"), F("?", "s3://b/bad2.json")], [], now="t1")
    assert len(prev) == 2
    out = q.update(prev, [F("?", "s3://b/bad2.json")], [], now="t2")
    assert [(e.object, e.attempts) for e in out] == [("s3://b/bad2.json", 2)]


def test_update_does_not_mutate_its_inputs():
    prev = q.update([], [F("A")], [], now="t1")
    snapshot = list(prev)
    q.update(prev, [F("A")], [], now="t2")
    assert prev == snapshot


@pytest.mark.parametrize("error, expected", [
    ("scene 'A': band 'red' file 's3://b/scenes/A/red.tif' cannot be read: HTTP response code: 403", "s3://b/scenes/A/red.tif"),
    ("RasterioIOError: /vsis3/b/scenes/A/nir.tif: Read failed", "s3://b/scenes/A/nir.tif"),
    ("'/data/scenes/A/red.tif' not recognized as a supported file format", "/data/scenes/A/red.tif"),
    ("Could not connect to the endpoint URL", "s3://b/scenes/A/A.json"),
])
def test_object_named(error, expected):
    assert q.object_named(error, "s3://b/scenes/A/A.json") == expected


def test_write_read_round_trip(tmp_path):
    url = q.quarantine_url(str(tmp_path / "site"))
    entries = q.update([], [F("A"), F("?", "s3://b/x.json")], [], now="t1")
    q.write(url, "site", entries)
    doc = json.loads((tmp_path / "site" / "quarantine.json").read_text())
    assert doc["site"] == "site" and len(doc["scenes"]) == 2
    assert q.read(url) == entries


def test_read_missing_is_empty_and_bad_file_is_a_clear_error(tmp_path):
    assert q.read(str(tmp_path / "none.json")) == []
    bad = tmp_path / "quarantine.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="quarantine list .*quarantine.json"):
        q.read(str(bad))
