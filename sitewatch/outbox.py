"""The alert outbox: each alert update is delivered to each channel once in effect, never lost.

An alert's notifiable updates are numbered (``Alert.update_seq``; history entries with
``notify``: opened, provisional, confirmed, acknowledged, closed). For every (channel, alert id,
update seq) there is one record in the object store next to the feed::

    <site>/alerts/outbox/<channel>/<alert id>/<seq>.pending.json   {"state": "pending", "key", "attempts", "last_error", ...}
    <site>/alerts/outbox/<channel>/<alert id>/<seq>.sent.json      {"state": "sent", "sent_at", ...}

Protocol, per due update: (1) write the ``pending`` record (attempts + 1), (2) send, with the
idempotency key ``sitewatch:<channel>:<alert id>:<seq>`` (HTTP ``Idempotency-Key`` header; a
mail's ``Message-ID`` is derived from it), (3) write the ``sent`` record, then remove the
pending one. An update with a ``sent`` record is never sent again (one listing of the channel's
folder per run tells which: no per-record read); one without, or only ``pending``, is sent on
this run and, if that fails, again on the next run (a failed channel is retried on every run
until it takes the update).

**What holds.** Records are written atomically (one object PUT, or rename on a local disk) and
one run per site at a time writes them (the site's Prefect concurrency slot), so:

- a rerun or a retry after a recorded send sends nothing again (exactly once);
- no update is lost: the record is ``pending`` before anything is sent, and only a receiver's
  2xx (an SMTP server's acceptance) turns it ``sent``;
- a crash *after* a send and *before* its ``sent`` record leaves it ``pending``, and the next run
  sends it again **with the same idempotency key**. The send is then at-least-once; the *effect*
  is exactly once where the receiver dedupes on the key (the generic webhook contract:
  receivers must ignore a repeated ``Idempotency-Key``; tested). Slack incoming webhooks and
  SMTP servers do not dedupe: there, the only possible duplicate is this one crash window, and
  mail clients that thread/dedupe on ``Message-ID`` show it once. A two-phase record cannot
  remove that window without the receiver's help, so sitewatch relies on the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

from .channels import ChannelError, Delivery, delivery_key
from .io import store
from .models import ALERT_STATUSES, Alert

OUTBOX_DIR = "outbox"
PENDING, SENT = "pending", "sent"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def outbox_url(alerts_root: str) -> str:
    return store.join(alerts_root, OUTBOX_DIR)


def record_url(alerts_root: str, channel: str, alert_id: str, seq: int, state: str = PENDING) -> str:
    if state not in (PENDING, SENT):
        raise ValueError(f"outbox record state got {state!r}; expected {PENDING!r} or {SENT!r}")
    return store.join(outbox_url(alerts_root), channel, alert_id, f"{seq:06d}.{state}.json")


def _remove(url: str, storage_options: dict[str, Any] | None) -> None:
    fs, path = store.filesystem(url, storage_options)
    try:
        fs.rm(path)
    except FileNotFoundError:
        pass


def due(alerts: Iterable[Alert], channel: str, statuses: Sequence[str] = ALERT_STATUSES) -> list[Delivery]:
    """Every notifiable update of ``alerts`` whose resulting status is in ``statuses``, as a
    Delivery to ``channel`` (whether or not already sent: :func:`deliver` checks the records)."""
    out = []
    for a in alerts:
        for h in a.history:
            if h.get("notify") and h.get("seq", 0) > 0 and h.get("status") in statuses:
                out.append(Delivery(channel, a.id, int(h["seq"]), delivery_key(channel, a.id, int(h["seq"])), dict(h), a))
    return out


@dataclass(frozen=True)
class ChannelReport:
    channel: str
    sent: int = 0
    skipped: int = 0  # already sent earlier
    failed: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def deliver(alerts_root: str, channel: str, deliveries: Sequence[Delivery], send: Callable[[Delivery], None],
            storage_options: dict[str, Any] | None = None, max_failures: int = 3,
            after_send: Callable[[Delivery], None] | None = None) -> ChannelReport:
    """Send each delivery not yet recorded as sent through ``send`` (raising ChannelError on
    failure), following the protocol in the module docstring. After ``max_failures``
    consecutive failures the channel is left for the next run. ``after_send`` runs between a
    send and its record (a hook for crash tests). Errors are redacted; the first is reported."""
    sent = skipped = failed = consecutive = 0
    first_error: str | None = None
    done = {u for u in store.list_files(store.join(outbox_url(alerts_root), channel), ".json", storage_options)}
    for d in deliveries:
        if d.channel != channel:
            raise ValueError(f"delivery channel got {d.channel!r}; expected {channel!r}")
        url = record_url(alerts_root, channel, d.alert_id, d.seq)
        sent_url = record_url(alerts_root, channel, d.alert_id, d.seq, SENT)
        if sent_url in done:
            skipped += 1
            continue
        rec: dict[str, Any] = store.read_json(url, storage_options) if url in done else {}
        if consecutive >= max_failures:
            failed += 1
            continue
        rec = {"state": PENDING, "channel": channel, "alert_id": d.alert_id, "seq": d.seq, "key": d.key,
               "event": d.event.get("event"), "status": d.event.get("status"),
               "attempts": int(rec.get("attempts", 0)) + 1, "first_attempt": rec.get("first_attempt") or _now(),
               "last_attempt": _now()}
        store.write_json(url, rec, storage_options)
        try:
            send(d)
        except ChannelError as exc:
            msg = store.redact(str(exc))
            store.write_json(url, {**rec, "last_error": msg}, storage_options)
            failed += 1
            consecutive += 1
            first_error = first_error or msg
            continue
        consecutive = 0
        if after_send is not None:
            after_send(d)
        store.write_json(sent_url, {**rec, "state": SENT, "sent_at": _now()}, storage_options)
        _remove(url, storage_options)  # a crash before this leaves both: 'sent' wins
        sent += 1
    return ChannelReport(channel, sent, skipped, failed, first_error)


def records(alerts_root: str, channel: str | None = None, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every outbox record (of ``channel``, or all), for reports and tests (an update sent
    leaves one ``sent`` record; one not yet sent, a ``pending`` record)."""
    root = outbox_url(alerts_root) if channel is None else store.join(outbox_url(alerts_root), channel)
    return [store.read_json(u, storage_options) for u in store.list_files(root, ".json", storage_options)]
