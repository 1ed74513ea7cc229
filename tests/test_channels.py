"""Tests for sitewatch.channels: generic webhook (HMAC-SHA256), Slack-compatible webhook and
SMTP email, against real receivers on 127.0.0.1 (tests/alert_receivers.py)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from alert_receivers import SmtpReceiver, WebhookReceiver, free_port, self_signed_cert
from sitewatch.alerts import merge
from sitewatch.analysis import Detection
from sitewatch.channels import (ChannelError, Delivery, EmailSpec, SlackSpec, WebhookSpec, check_statuses, delivery_key,
                                env_secret, send)
from sitewatch.channels.http import signature, slack_body
from sitewatch.channels.mail import message
from sitewatch.outbox import due

SECRET = "whsec-test-0123456789"


def _delivery(channel: str = "hook") -> Delivery:
    dets = [Detection(scene_id=f"S{k}", time=f"2026-03-0{1 + k}T08:30:00Z", area_m2=4900.0, lon=35.95, lat=35.4, row=103.5,
                      col=153.5, bbox_pixels=(100, 150, 107, 157), score_mean=8.0, score_max=12.0, direction="brighter",
                      delta_brightness=0.1, polygon={"type": "Polygon", "coordinates": [[[35.95, 35.4], [35.951, 35.4], [35.951, 35.401], [35.95, 35.4]]]})
            for k in range(3)]
    alerts, _, _ = merge("base", [], dets, cube_url="/store/base/cube.zarr")
    from dataclasses import replace

    a = replace(alerts[0], images={"before": "https://x.example/before.png", "after": "https://x.example/after.png"})
    return [d for d in due([a], channel) if d.event["status"] == "confirmed"][0]


def test_webhook_body_signature_and_key():
    d = _delivery("hook")
    with WebhookReceiver(secret=SECRET) as rx:
        send(WebhookSpec("hook", rx.url, SECRET), d)
    (got,) = rx.deliveries
    h = {k.lower(): v for k, v in got["headers"].items()}
    assert h["x-sitewatch-signature"] == "sha256=" + hmac.new(SECRET.encode(), got["body"], hashlib.sha256).hexdigest()
    assert h["x-sitewatch-signature"] == signature(SECRET, got["body"])
    assert h["idempotency-key"] == d.key == delivery_key("hook", d.alert_id, 3)
    body = json.loads(got["body"])
    assert body["event"]["event"] == "confirmed" and body["idempotency_key"] == d.key
    p = body["alert"]["properties"]
    for k in ("id", "site", "status", "confidence", "first_seen", "last_seen", "area_m2", "lon", "lat", "description",
              "images", "cube"):
        assert k in p, k
    assert body["alert"]["geometry"]["type"] == "Polygon"
    assert p["cube"]["url"] == "/store/base/cube.zarr" and len(p["cube"]["window"]) == 4
    assert rx.bad_signatures == 0 and len(rx.effects) == 1


def test_unreachable_and_bad_url_errors_name_the_channel():
    d = _delivery()
    with pytest.raises(ChannelError, match=r"channel 'hook': could not reach http://127\.0\.0\.1:\d+/x"):
        send(WebhookSpec("hook", f"http://127.0.0.1:{free_port()}/x", SECRET, timeout=2), d)
    with pytest.raises(ChannelError, match="channel 'hook': url got 'ftp://h/x'; expected an http"):
        send(WebhookSpec("hook", "ftp://h/x"), d)
    with WebhookReceiver() as rx:
        with pytest.raises(ChannelError, match="answered HTTP 404"):
            send(WebhookSpec("hook", rx.url + "-wrong-path"), d)


def test_slack_body_and_secret_url_hidden():
    d = _delivery("slack")
    body = slack_body(d)
    assert body["text"].startswith("[sitewatch] base: brighter change confirmed")
    assert body["blocks"][0]["type"] == "header" and "Confidence" in json.dumps(body["blocks"])
    assert "<https://x.example/before.png|before>" in json.dumps(body)
    with WebhookReceiver(path="/services/T000/B000/XXXXSECRET") as rx:
        send(SlackSpec("slack", rx.url), d)
        assert json.loads(rx.deliveries[0]["body"]) == body
        with pytest.raises(ChannelError) as exc:
            send(SlackSpec("slack", rx.url.replace("XXXXSECRET", "wrong")), d)
    assert "XXXXSECRET" not in str(exc.value) and "wrong" not in str(exc.value) and "/***" in str(exc.value)
    assert "XXXXSECRET" not in repr(SlackSpec("slack", rx.url))
    with pytest.raises(ChannelError) as exc:
        send(SlackSpec("slack", "hooks.slack.com/services/T0/B0/SECRETPART"), d)
    assert "SECRETPART" not in str(exc.value) and "hidden" in str(exc.value)


def test_email_plain_smtp():
    d = _delivery("mail")
    with SmtpReceiver() as rx:
        spec = EmailSpec("mail", "127.0.0.1", rx.port, "sitewatch@example.org", ("ana@example.org", "bo@example.org"))
        send(spec, d)
        send(spec, d)  # the same update again (e.g. after a crash): same Message-ID
    m1, m2 = rx.messages
    assert m1["Subject"].strip() == "[sitewatch] base: brighter change confirmed (" + d.alert_id + ")"
    assert m1["To"] == "ana@example.org, bo@example.org" and m1["X-Sitewatch-Idempotency-Key"] == d.key
    assert m1["Message-ID"] == m2["Message-ID"] == message(spec, d)["Message-ID"]
    text = m1.get_content()
    assert "Confidence" in text and "https://x.example/after.png" in text and "/store/base/cube.zarr" in text


def test_email_starttls(tmp_path):
    cert = self_signed_cert(str(tmp_path))
    d = _delivery("mail")
    with SmtpReceiver(tls_cert=cert) as rx:
        send(EmailSpec("mail", "127.0.0.1", rx.port, "s@example.org", ("a@example.org",), starttls=True), d)
        with pytest.raises(ChannelError, match="channel 'mail': smtp://127.0.0.1"):
            send(EmailSpec("mail", "127.0.0.1", rx.port, "s@example.org", ("a@example.org",), starttls=False), d)
    assert len(rx.messages) == 1


def test_email_refused_and_unreachable():
    d = _delivery("mail")
    with SmtpReceiver(refuse=1) as rx:
        spec = EmailSpec("mail", "127.0.0.1", rx.port, "s@example.org", ("a@example.org",), password="pw-not-shown")
        with pytest.raises(ChannelError, match="channel 'mail'") as exc:
            send(spec, d)
        send(spec, d)
    assert len(rx.messages) == 1 and "pw-not-shown" not in str(exc.value) and "pw-not-shown" not in repr(spec)
    with pytest.raises(ChannelError, match="could not reach smtp://127.0.0.1"):
        send(EmailSpec("mail", "127.0.0.1", free_port(), "s@example.org", ("a@example.org",), timeout=2), d)


def test_env_secret(monkeypatch):
    monkeypatch.setenv("SW_TEST_SECRET", "value-123")
    assert env_secret("hook", "SW_TEST_SECRET") == "value-123"
    assert env_secret("hook", None) is None
    monkeypatch.delenv("SW_TEST_SECRET")
    with pytest.raises(ChannelError, match="channel 'hook': secret environment variable 'SW_TEST_SECRET' is not set"):
        env_secret("hook", "SW_TEST_SECRET")
    with pytest.raises(ValueError, match="statuses got \\['opne'\\]"):
        check_statuses("hook", ("opne",))


# ---------------------------------------------------------------- per-site configuration (sites.yaml)

SITES = """
sites:
  - name: port
    bbox: [35.8, 34.8, 35.9, 34.9]
    source: s
    store: t
    alerts: {provisional_at: 2, confirmed_at: 4, close_after_days: 60}
    channels:
{channels}
"""


def _load(tmp_path, channels: str):
    from sitewatch.config import load_sites

    p = tmp_path / "sites.yaml"
    p.write_text(SITES.replace("{channels}", channels))
    return load_sites(p)[0]


def test_channels_from_sites_yaml(tmp_path, monkeypatch):
    from sitewatch.config import channel_spec

    cfg = _load(tmp_path, """      - {type: webhook, name: ops, url: "http://127.0.0.1:9/hook", secret_env: SW_HOOK_SECRET, statuses: [confirmed, closed]}
      - {type: slack, name: chat, url_env: SW_SLACK_URL}
      - {type: email, name: mail, host: 127.0.0.1, port: 2525, sender: s@example.org, to: [a@example.org], starttls: true}
      - {type: prefect-events, name: events}""")
    assert [c.type for c in cfg.channels] == ["webhook", "slack", "email", "prefect-events"]
    assert cfg.alerts.to_params().confirmed_at == 4 and cfg.alerts.to_params().close_after_days == 60
    monkeypatch.setenv("SW_HOOK_SECRET", "hook-secret-value")
    monkeypatch.setenv("SW_SLACK_URL", "https://hooks.example/services/T/B/SECRET")
    hook = channel_spec(cfg.channels[0])
    assert isinstance(hook, WebhookSpec) and hook.secret == "hook-secret-value" and hook.statuses == ("confirmed", "closed")
    assert "hook-secret-value" not in repr(hook)
    assert channel_spec(cfg.channels[1]).url.endswith("/SECRET")
    mail = channel_spec(cfg.channels[2])
    assert isinstance(mail, EmailSpec) and mail.starttls and mail.port == 2525 and mail.password is None
    # the config itself, as Prefect stores and shows it, holds names of secrets, not values
    assert "hook-secret-value" not in cfg.model_dump_json() and "SECRET" not in cfg.model_dump_json().replace("SW_HOOK_SECRET", "")
    monkeypatch.delenv("SW_HOOK_SECRET")
    with pytest.raises(ChannelError, match="channel 'ops': secret environment variable 'SW_HOOK_SECRET' is not set"):
        channel_spec(cfg.channels[0])
    with pytest.raises(ChannelError, match="Prefect block 'blk'"):
        channel_spec(cfg.channels[0].model_copy(update={"secret_env": None, "secret_block": "blk"}))
    assert channel_spec(cfg.channels[0].model_copy(update={"secret_env": None, "secret_block": "blk"}),
                        resolve_block=lambda name: "from-block").secret == "from-block"


@pytest.mark.parametrize("channels, words", [
    ("      - {type: pager, name: p}", ["channels.0", "pager"]),
    ("      - {type: webhook, name: a, url: 'http://h'}\n      - {type: webhook, name: a, url: 'http://h'}", ["duplicate channel names"]),
    ("      - {type: webhook, name: a, url: 'http://h', statuses: [opne]}", ["statuses", "opne"]),
    ("      - {type: slack, name: s, url: 'https://hooks.slack.com/services/X'}", ["channels.0.slack", "url"]),
    ("      - {type: slack, name: s}", ["url_env / url_block"]),
    ("      - {type: email, name: m, host: h, sender: s@x, to: []}", ["to"]),
])
def test_bad_channel_config_names_the_field(tmp_path, channels, words):
    from sitewatch.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, channels)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))
    assert "port" in str(exc.value)


# ---------------------------------------------------------------- end to end: the monitor flow delivers (slow)

@pytest.mark.slow
def test_monitor_flow_delivers_through_every_channel_once(demo_run, prefect_server, tmp_path, monkeypatch):
    """The session's demo site (alerts already raised), copied, rerun with channels: a webhook
    that refuses its first 2 deliveries (HMAC secret in a Prefect Secret block), email, Prefect
    events and a webhook whose secret environment variable is missing. The good channels get every notifiable update once, the broken one is reported by
    name and the others still deliver; a second run sends nothing; no secret anywhere."""
    import shutil

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId

    from flows.monitor import monitor_site
    from sitewatch import outbox, publish
    from sitewatch.config import EmailChannel, PrefectEventsChannel, WebhookChannel

    store = tmp_path / "store"
    shutil.copytree(demo_run.cfg.store, store)
    from prefect.blocks.system import Secret

    secret = "flow-test-hmac-secret-9f8e7d"
    Secret(value=secret).save("sw-flow-hook-secret", overwrite=True)  # a real Prefect Secret block on the test server
    monkeypatch.delenv("SW_MISSING_SECRET", raising=False)
    with WebhookReceiver(secret=secret, refuse=2) as rx, SmtpReceiver() as mx:
        chans = (
            WebhookChannel(type="webhook", name="ops-hook", url=rx.url, secret_block="sw-flow-hook-secret"),
            WebhookChannel(type="webhook", name="broken-hook", url=rx.url, secret_env="SW_MISSING_SECRET"),
            EmailChannel(type="email", name="mail", host="127.0.0.1", port=mx.port, sender="s@example.org", to=("a@example.org",),
                         statuses=("confirmed", "closed")),
            PrefectEventsChannel(type="prefect-events", name="events"),
        )
        cfg = demo_run.cfg.model_copy(update={"store": str(store), "channels": chans})
        alerts = publish.read_feed(cfg.to_site().alerts_url)
        n_updates = sum(a.update_seq for a in alerts)
        n_mail = len(outbox.due(alerts, "mail", ("confirmed", "closed")))
        assert n_updates >= 3
        state = monitor_site(cfg, return_state=True)
        assert state.is_completed(), state.message
        s1 = state.result()
        rep = {d["channel"]: d for d in s1["deliveries"]}
        assert rep["ops-hook"]["sent"] + rep["ops-hook"]["failed"] == n_updates and rep["ops-hook"]["failed"] == 2
        assert rep["broken-hook"]["sent"] == 0 and "'SW_MISSING_SECRET' is not set" in rep["broken-hook"]["error"]
        assert rep["mail"]["sent"] == n_mail and rep["events"]["sent"] == n_updates and not rep["events"]["error"]
        # the next run: the two refused updates go out, nothing else is sent again
        s2 = monitor_site(cfg, return_state=True).result()
        rep2 = {d["channel"]: d for d in s2["deliveries"]}
        assert (rep2["ops-hook"]["sent"], rep2["ops-hook"]["skipped"]) == (2, n_updates - 2)
        assert rep2["mail"]["sent"] == 0 and rep2["events"]["sent"] == 0
    assert len(rx.effects) == n_updates and set(rx.effect_count.values()) == {1} and rx.bad_signatures == 0
    assert len(mx.messages) == n_mail
    assert s1["site_state"]["text"] and "not_observed" in s1["site_state"]
    # no secret in the summaries, the outbox records, the artifacts or the run's logs
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sitewatch-testsite", "sitewatch-testsite-open-alerts"])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    texts = [json.dumps(s1, default=str), json.dumps(s2, default=str), *(json.dumps(r) for r in outbox.records(cfg.to_site().alerts_url)),
             *(json.dumps(a.data, default=str) for a in arts), *(lg.message for lg in logs)]
    assert any("broken-hook" in t for t in texts[3:])  # the error is reported in the artifact / logs ...
    assert not any(secret in t for t in texts)  # ... and the secret nowhere
    assert {"sitewatch-testsite-open-alerts"} <= {a.key for a in arts}
