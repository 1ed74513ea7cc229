"""Alert channels that are plain HTTP or SMTP (no Prefect): generic webhook, Slack-compatible
incoming webhook, email. Each sender takes a resolved channel spec (secrets already read from
the environment, or from a Prefect block by ``tasks/``) and a :class:`Delivery`, and raises
:class:`ChannelError` with a message that names the channel and never holds a secret.

Every delivery carries its idempotency key (``Idempotency-Key`` header for HTTP, a
deterministic ``Message-ID`` plus ``X-Sitewatch-Idempotency-Key`` for mail): see
:mod:`sitewatch.outbox` for what that guarantees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..models import ALERT_STATUSES, Alert


class ChannelError(RuntimeError):
    """A channel that could not deliver or is misconfigured; the message names the channel and
    holds no secret."""


@dataclass(frozen=True)
class Delivery:
    """One alert update (``seq``) to one channel, with its idempotency key and the payload."""

    channel: str
    alert_id: str
    seq: int
    key: str
    event: dict[str, Any]
    alert: Alert

    def payload(self) -> dict[str, Any]:
        """The JSON body for webhooks: the alert as a GeoJSON Feature, the event and the key."""
        return {"idempotency_key": self.key, "channel": self.channel, "event": self.event, "alert": self.alert.to_feature()}


def delivery_key(channel: str, alert_id: str, seq: int) -> str:
    return f"sitewatch:{channel}:{alert_id}:{seq}"


def env_secret(channel: str, env_name: str | None, what: str = "secret") -> str | None:
    """The value of environment variable ``env_name`` (None if no name); a ChannelError naming the
    variable (not its value) if it is unset or empty."""
    if not env_name:
        return None
    v = os.environ.get(env_name)
    if not v:
        raise ChannelError(f"channel {channel!r}: {what} environment variable {env_name!r} is not set; "
                           f"expected it to hold the {what}")
    return v


def check_statuses(channel: str, statuses: tuple[str, ...]) -> None:
    bad = [s for s in statuses if s not in ALERT_STATUSES]
    if bad:
        raise ValueError(f"channel {channel!r}: statuses got {bad!r}; expected some of {ALERT_STATUSES!r}")


def alert_text(d: Delivery) -> tuple[str, str]:
    """(subject, plain text body) for people: what, where, how sure, pictures, cube link."""
    a = d.alert
    event = d.event.get("event", "update")
    subject = f"[sitewatch] {a.site}: {a.direction} change {a.status} ({a.id})"
    lines = [
        f"Alert {a.id} at site {a.site}: {event} -> {a.status}",
        a.description,
        f"Confidence {a.confidence:.2f}; area {a.area_m2:,.0f} m2; centroid {a.lat:.5f} N, {a.lon:.5f} E "
        f"(lat/lon); first seen {a.first_seen}, last seen {a.last_seen}; {a.n_observations} observation(s).",
    ]
    if a.images.get("before"):
        lines.append(f"Before: {a.images['before']}")
    if a.images.get("after"):
        lines.append(f"After: {a.images['after']}")
    if a.cube:
        w = a.cube["window"]
        lines.append(f"Cube: {a.cube['url']} time {a.cube['time'][0]} .. {a.cube['time'][1]}, rows {w[0]}:{w[2]}, cols {w[1]}:{w[3]}")
    if a.closed_reason:
        lines.append(f"Closed: {a.closed_reason}")
    return subject, "\n".join(lines)


@dataclass(frozen=True)
class WebhookSpec:
    name: str
    url: str
    secret: str | None = field(default=None, repr=False)
    statuses: tuple[str, ...] = ALERT_STATUSES
    timeout: float = 10.0


@dataclass(frozen=True)
class SlackSpec:
    name: str
    url: str = field(repr=False)  # an incoming-webhook URL is itself a secret
    statuses: tuple[str, ...] = ALERT_STATUSES
    timeout: float = 10.0


@dataclass(frozen=True)
class EmailSpec:
    name: str
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    statuses: tuple[str, ...] = ALERT_STATUSES
    timeout: float = 10.0


def send(spec: Any, d: Delivery) -> None:
    """Deliver ``d`` through the channel ``spec`` describes."""
    from .http import send_slack, send_webhook
    from .mail import send_email

    if isinstance(spec, WebhookSpec):
        return send_webhook(spec, d)
    if isinstance(spec, SlackSpec):
        return send_slack(spec, d)
    if isinstance(spec, EmailSpec):
        return send_email(spec, d)
    raise ValueError(f"channel spec got {type(spec).__name__}; expected WebhookSpec, SlackSpec or EmailSpec")
