"""Tests for sitewatch.outbox: each alert update reaches each channel once in effect, never lost;
against a real webhook receiver on 127.0.0.1 (tests/alert_receivers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alert_receivers import WebhookReceiver  # tests/ is on sys.path (rootdir conftest)
from sitewatch import outbox, publish
from sitewatch.alerts import ClearView, merge
from sitewatch.analysis import Detection
from sitewatch.channels import ChannelError, WebhookSpec, send

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-hmac-key-for-tests"


def _det(scene: str, date: str, bbox=(100, 150, 107, 157)) -> Detection:
    r0, c0, r1, c1 = bbox
    return Detection(scene_id=scene, time=f"{date}T08:30:00Z", area_m2=4900.0, lon=35.95, lat=35.40, row=(r0 + r1) / 2,
                     col=(c0 + c1) / 2, bbox_pixels=bbox, score_mean=8.0, score_max=12.0, direction="brighter",
                     delta_brightness=0.1, polygon={"type": "Polygon", "coordinates": [[[35.95, 35.4], [35.951, 35.4], [35.951, 35.401], [35.95, 35.4]]]})


def _alerts():
    """Two alerts: one confirmed (3 notifiable updates), one opened then closed (2)."""
    dets = [_det(f"S{k}", f"2026-03-{1 + 2 * k:02d}") for k in range(3)] + [_det("T0", "2026-03-02", bbox=(10, 10, 20, 20))]
    alerts, _, _ = merge("base", [], dets)
    other = next(a for a in alerts if a.first_scene == "T0")
    views = [ClearView(other.id, "S1", "2026-03-03T08:30:00Z", 1.0), ClearView(other.id, "S2", "2026-03-05T08:30:00Z", 1.0)]
    return merge("base", [], dets, views)[0]


def _spec(rx: WebhookReceiver, secret: str = SECRET) -> WebhookSpec:
    return WebhookSpec(name="ops-hook", url=rx.url, secret=secret, timeout=5)


def test_due_lists_every_notifiable_update_and_filters_by_status():
    alerts = _alerts()
    d = outbox.due(alerts, "hook")
    assert sorted((x.alert_id[-12:], x.seq, x.event["status"]) for x in d) == sorted(
        [(alerts[0].id[-12:], 1, "first"), (alerts[0].id[-12:], 2, "provisional"), (alerts[0].id[-12:], 3, "confirmed"),
         (alerts[1].id[-12:], 1, "first"), (alerts[1].id[-12:], 2, "closed")])
    assert len({x.key for x in d}) == 5
    assert [x.event["status"] for x in outbox.due(alerts, "hook", statuses=("confirmed",))] == ["confirmed"]


def test_rerun_sends_nothing_twice(tmp_path):
    root = str(tmp_path / "alerts")
    alerts = _alerts()
    with WebhookReceiver(secret=SECRET) as rx:
        spec = _spec(rx)
        r1 = outbox.deliver(root, "ops-hook", outbox.due(alerts, "ops-hook"), lambda d: send(spec, d))
        assert (r1.sent, r1.skipped, r1.failed) == (5, 0, 0)
        r2 = outbox.deliver(root, "ops-hook", outbox.due(alerts, "ops-hook"), lambda d: send(spec, d))
        assert (r2.sent, r2.skipped, r2.failed) == (0, 5, 0)
        assert len(rx.deliveries) == 5 and rx.bad_signatures == 0
        # a later update of one alert: only that one goes out
        more, _, _ = merge("base", alerts, [], [ClearView(alerts[0].id, "S9", "2026-04-01T08:30:00Z", 1.0),
                                                ClearView(alerts[0].id, "S10", "2026-04-11T08:30:00Z", 1.0)])
        r3 = outbox.deliver(root, "ops-hook", outbox.due(more, "ops-hook"), lambda d: send(spec, d))
        assert (r3.sent, r3.skipped) == (1, 5)
    assert len(rx.effects) == 6 and set(rx.effect_count.values()) == {1}
    recs = outbox.records(root, "ops-hook")
    assert len(recs) == 6 and {r["state"] for r in recs} == {"sent"} and {r["attempts"] for r in recs} == {1}


def test_receiver_refusing_first_deliveries_is_retried_next_run(tmp_path):
    root = str(tmp_path / "alerts")
    alerts = _alerts()
    with WebhookReceiver(secret=SECRET, refuse=4) as rx:
        spec = _spec(rx)
        r1 = outbox.deliver(root, "ops-hook", outbox.due(alerts, "ops-hook"), lambda d: send(spec, d), max_failures=3)
        # three consecutive 503s: the channel is left for the next run; nothing is marked sent
        assert (r1.sent, r1.failed) == (0, 5) and "HTTP 503" in r1.error and "ops-hook" in r1.error
        recs = outbox.records(root, "ops-hook")
        assert len(recs) == 3 and {r["state"] for r in recs} == {"pending"} and all("503" in r["last_error"] for r in recs)
        r2 = outbox.deliver(root, "ops-hook", outbox.due(alerts, "ops-hook"), lambda d: send(spec, d))
        assert (r2.sent, r2.failed) == (4, 1)  # one more refusal, then the rest
        r3 = outbox.deliver(root, "ops-hook", outbox.due(alerts, "ops-hook"), lambda d: send(spec, d))
        assert (r3.sent, r3.skipped, r3.failed) == (1, 4, 0)
    assert len(rx.effects) == 5 and set(rx.effect_count.values()) == {1}
    assert len(rx.deliveries) == 9  # 4 refused + 5 accepted
    assert max(r["attempts"] for r in outbox.records(root, "ops-hook")) == 3


CRASH_SCRIPT = textwrap.dedent('''
    import os, sys
    from sitewatch import outbox, publish
    from sitewatch.channels import WebhookSpec, send
    root, url, secret = sys.argv[1:4]
    alerts = publish.read_feed(root)
    spec = WebhookSpec(name="ops-hook", url=url, secret=secret, timeout=5)
    n = {"sent": 0}
    def crash(d):
        n["sent"] += 1
        if n["sent"] == 2:
            os._exit(17)  # killed after the receiver took delivery 2, before its record says 'sent'
    outbox.deliver(root, "ops-hook", outbox.due(alerts, "ops-hook"), lambda d: send(spec, d), after_send=crash)
''')


def test_crash_between_send_and_record_has_no_duplicate_effect_and_loses_nothing(tmp_path):
    root = str(tmp_path / "alerts")
    alerts = _alerts()
    publish.write_feed(root, "base", alerts)
    with WebhookReceiver(secret=SECRET) as rx:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, root, rx.url, SECRET], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 17, p.stderr
        recs = {(r["alert_id"], r["seq"]): r["state"] for r in outbox.records(root, "ops-hook")}
        assert sorted(recs.values()) == ["pending", "sent"]  # the crashed one is still pending
        crashed_key = next(d["headers"]["Idempotency-Key"] for d in rx.deliveries[1:2])
        # the rerun (a new run after the crash)
        r = outbox.deliver(root, "ops-hook", outbox.due(publish.read_feed(root), "ops-hook"), lambda d: send(_spec(rx), d))
        assert (r.sent, r.skipped, r.failed) == (4, 1, 0)
    keys = [d["headers"]["Idempotency-Key"] for d in rx.deliveries]
    assert keys.count(crashed_key) == 2  # sent twice (at least once) ...
    assert len(rx.effects) == 5 and set(rx.effect_count.values()) == {1}  # ... acted on once: no duplicate effect
    assert {k for k in rx.effects} == {d.key for d in outbox.due(alerts, "ops-hook")}  # nothing lost
    assert {r["state"] for r in outbox.records(root, "ops-hook")} == {"sent"}


def test_misconfigured_channel_is_reported_and_others_still_deliver(tmp_path):
    root = str(tmp_path / "alerts")
    alerts = _alerts()
    bad = WebhookSpec(name="bad-hook", url="htp:/nowhere", secret=SECRET)
    with WebhookReceiver(secret=SECRET) as rx:
        good = _spec(rx)
        rb = outbox.deliver(root, "bad-hook", outbox.due(alerts, "bad-hook"), lambda d: send(bad, d))
        rg = outbox.deliver(root, "ops-hook", outbox.due(alerts, "ops-hook"), lambda d: send(good, d))
    assert rb.sent == 0 and rb.failed == 5 and "channel 'bad-hook': url got 'htp:/nowhere'" in rb.error
    assert rg.sent == 5 and len(rx.effects) == 5


def test_wrong_secret_is_refused_without_leaking_it(tmp_path):
    alerts = _alerts()
    with WebhookReceiver(secret=SECRET) as rx:
        wrong = _spec(rx, secret="not-the-right-secret")
        r = outbox.deliver(str(tmp_path), "ops-hook", outbox.due(alerts, "ops-hook")[:1], lambda d: send(wrong, d))
    assert rx.bad_signatures == 1 and r.failed == 1 and "HTTP 401" in r.error
    text = "".join(p.read_text() for p in tmp_path.rglob("*.json")) + r.error
    assert "not-the-right-secret" not in text and SECRET not in text
    with pytest.raises(ChannelError):
        send(wrong, outbox.due(alerts, "ops-hook")[0])


def test_outbox_and_actions_on_a_real_s3_server(s3_server):
    """The outbox, the feed and people's actions in an S3 bucket (moto server on 127.0.0.1)."""
    import boto3

    from sitewatch.alerts import UserAction

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="alerts-bucket")
    root = "s3://alerts-bucket/sites/base/alerts"
    alerts = _alerts()
    publish.write_feed(root, "base", alerts)
    with WebhookReceiver(secret=SECRET, refuse=1) as rx:
        spec = _spec(rx)
        r1 = outbox.deliver(root, "ops-hook", outbox.due(publish.read_feed(root), "ops-hook"), lambda d: send(spec, d))
        r2 = outbox.deliver(root, "ops-hook", outbox.due(publish.read_feed(root), "ops-hook"), lambda d: send(spec, d))
    assert (r1.sent, r1.failed) == (4, 1) and (r2.sent, r2.skipped) == (1, 4)
    assert len(rx.effects) == 5 and set(rx.effect_count.values()) == {1}
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="alerts-bucket")["Contents"]}
    assert sum(k.startswith("sites/base/alerts/outbox/ops-hook/") for k in keys) == 5
    publish.record_action(root, UserAction(alerts[0].id, "ack", "2026-04-01T10:00:00Z", by="ana"))
    acts = publish.read_actions(root)
    assert [a.action for a in acts] == ["ack"]
    assert merge("base", publish.read_feed(root), [], actions=acts)[0][0].status == "acknowledged"
