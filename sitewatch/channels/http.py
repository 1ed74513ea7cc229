"""HTTP channels: a generic JSON webhook signed with HMAC-SHA256, and a Slack-compatible
incoming webhook. Standard library only (urllib)."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.parse
import urllib.request

from . import ChannelError, Delivery, SlackSpec, WebhookSpec, alert_text

SIGNATURE_HEADER = "X-Sitewatch-Signature"


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``: what receivers compare (constant time) with the header."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _where(url: str, secret_url: bool) -> str:
    """How errors name the endpoint: scheme://host[:port]/path, or without the path when the URL is a secret."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{host}{port}" + ("/***" if secret_url else p.path)


def _check_url(channel: str, url: str, secret_url: bool) -> None:
    try:
        p = urllib.parse.urlsplit(url)
        ok = p.scheme in ("http", "https") and bool(p.hostname)
        p.port  # noqa: B018 - raises on a bad port
    except ValueError:
        ok = False
    if not ok:
        shown = "(hidden: the URL is a secret)" if secret_url else repr(url)
        raise ChannelError(f"channel {channel!r}: url got {shown}; expected an http:// or https:// URL with a host")


def post(channel: str, url: str, body: bytes, headers: dict[str, str], timeout: float, secret_url: bool = False) -> int:
    """POST ``body``; the HTTP status (2xx) or a ChannelError naming the channel and the endpoint."""
    _check_url(channel, url, secret_url)
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **headers})
    where = _where(url, secret_url)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        raise ChannelError(f"channel {channel!r}: {where} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ChannelError(f"channel {channel!r}: could not reach {where}: {reason}") from None


def send_webhook(spec: WebhookSpec, d: Delivery) -> None:
    body = json.dumps(d.payload(), sort_keys=True, default=str).encode()
    headers = {"Idempotency-Key": d.key, "User-Agent": "sitewatch"}
    if spec.secret:
        headers[SIGNATURE_HEADER] = signature(spec.secret, body)
    post(spec.name, spec.url, body, headers, spec.timeout)


def slack_body(d: Delivery) -> dict:
    """``{"text", "blocks"}`` for a Slack-compatible incoming webhook."""
    subject, text = alert_text(d)
    a = d.alert
    fields = [f"*Status:* {a.status}", f"*Confidence:* {a.confidence:.2f}", f"*Area:* {a.area_m2:,.0f} m2",
              f"*Where:* {a.lat:.5f}, {a.lon:.5f}", f"*First seen:* {a.first_seen}", f"*Last seen:* {a.last_seen}"]
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": subject[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": a.description}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    links = [f"<{a.images[k]}|{k}>" if a.images[k].startswith("http") else f"{k}: {a.images[k]}"
             for k in ("before", "after") if a.images.get(k)]
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " | ".join(links)}]})
    return {"text": f"{subject}\n{text}", "blocks": blocks}


def send_slack(spec: SlackSpec, d: Delivery) -> None:
    body = json.dumps(slack_body(d), default=str).encode()
    post(spec.name, spec.url, body, {"Idempotency-Key": d.key, "User-Agent": "sitewatch"}, spec.timeout, secret_url=True)
