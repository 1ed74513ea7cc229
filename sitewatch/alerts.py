"""From change detections to alerts with a persistent identity and a lifecycle.

**Identity.** A detection that overlaps an open alert of the same direction (brighter/darker)
at the same site updates that alert (same id; last seen, observations, union bbox, largest area
and score; one ``history`` entry per event); otherwise it opens a new alert, unless it lies next
to a cloud or shadow (``near_cloud_px > 0``): cloud and shadow fringes that the masks missed
are the commonest false change, so such a detection only supports an existing alert and a real
change opens its alert on its next clear view. Alert ids are deterministic (site, first-seen
date, centroid pixel).

**Lifecycle** (counts in :class:`AlertParams`)::

    first --(provisional_at observations)--> provisional --(confirmed_at)--> confirmed
      any open status --(close_after_clear clear views without support)--> closed ("returned to baseline")
      any open status --(no support for close_after_days)--------------> closed ("no support ...")
      any open status --(a person: ack)--> acknowledged (still updated, still closable)
      any open status --(a person: close)--> closed

A *clear view* (:class:`ClearView`, computed from the cube by
:func:`sitewatch.observation.clear_views`) says that a scene saw an alert's footprint clearly
(valid, not cloud or shadow, at least ``min_clear_fraction`` of its pixels); if that scene has
no supporting detection and looks like the place before the alert (``returned`` not False) the
pixels are back to baseline. A view that still looks like the alert's first view while nothing
is detected (the rolling baseline has absorbed a lasting change) is recorded but does not count
towards closing; such an alert closes after ``close_after_days``. A support resets the count.
People's actions (:class:`UserAction`, recorded by ``sitewatch alerts ack|close``) are applied
in the same merge, so a run never overwrites them.

**Idempotent.** An alert remembers the scenes that supported it or viewed it clearly and the
actions applied, so feeding the same inputs twice changes nothing: reruns and retries are safe.

**Confidence** (0..1), :func:`confidence`::

    c_score = 1 - exp(-score_max / score_scale)         change strength (robust z RMS)
    c_size  = 1 - exp(-area_m2 / size_scale_m2)          object size
    c_obs   = 1 - 0.5 ** n_observations                  confirming observations (0.5, 0.75, 0.875 ...)
    c_mask  = 1 - mask_uncertainty                       mean over supports of max(near-cloud share
                                                         of the bbox, 1 - clear share of the footprint)
    confidence = c_score ** w_score * c_size ** w_size * c_obs ** w_obs * c_mask

non-decreasing in score, size and observations, non-increasing in mask uncertainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from .analysis import Detection
from .models import ALERT_STATUSES, OPEN_STATUSES, Alert

ACTIONS = ("ack", "close")


@dataclass(frozen=True)
class AlertParams:
    provisional_at: int = 2  # observations (supporting detections) for 'provisional'
    confirmed_at: int = 3  # ... for 'confirmed'
    close_after_clear: int = 2  # clear views of the footprint without support -> closed
    close_after_days: float = 90.0  # no support for this long -> closed
    min_clear_fraction: float = 0.9  # share of footprint pixels valid and clear for a clear view
    not_observed_days: float = 30.0  # the site is reported "not observed" after this long without a clear scene
    score_scale: float = 10.0
    size_scale_m2: float = 2000.0
    w_score: float = 0.3
    w_size: float = 0.2
    w_obs: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.provisional_at <= self.confirmed_at:
            raise ValueError(f"provisional_at/confirmed_at got {(self.provisional_at, self.confirmed_at)!r}; "
                             "expected 1 <= provisional_at <= confirmed_at")
        if self.close_after_clear < 1:
            raise ValueError(f"close_after_clear got {self.close_after_clear!r}; expected >= 1")
        if not self.close_after_days > 0 or not self.not_observed_days > 0:
            raise ValueError(f"close_after_days/not_observed_days got {(self.close_after_days, self.not_observed_days)!r}; expected > 0")
        if not 0 < self.min_clear_fraction <= 1:
            raise ValueError(f"min_clear_fraction got {self.min_clear_fraction!r}; expected in (0, 1]")
        if not (self.score_scale > 0 and self.size_scale_m2 > 0):
            raise ValueError(f"score_scale/size_scale_m2 got {(self.score_scale, self.size_scale_m2)!r}; expected > 0")
        if min(self.w_score, self.w_size, self.w_obs) < 0:
            raise ValueError(f"weights got {(self.w_score, self.w_size, self.w_obs)!r}; expected >= 0")


@dataclass(frozen=True)
class ClearView:
    """Scene ``scene_id`` (at ``time``, ISO UTC) saw alert ``alert_id``'s footprint with
    ``clear_fraction`` of its pixels valid and free of cloud and shadow."""

    alert_id: str
    scene_id: str
    time: str
    clear_fraction: float
    returned: bool | None = None  # looks like before the alert (True), still like its first view (False), unknown (None)


@dataclass(frozen=True)
class UserAction:
    """A person acknowledged (``ack``) or closed (``close``) an alert at ``time`` (ISO UTC)."""

    alert_id: str
    action: str
    time: str
    by: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"alert action got {self.action!r}; expected one of {ACTIONS!r}")

    @property
    def key(self) -> str:
        return f"{self.action}@{self.time}"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UserAction":
        return cls(**{k: d[k] for k in ("alert_id", "action", "time", "by", "note") if k in d})


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _days(a: str, b: str) -> float:
    """Days from ISO time/date ``a`` to ``b``."""
    def parse(s: str) -> datetime:
        s = s.replace("Z", "+00:00")
        d = datetime.fromisoformat(s)
        return d if d.tzinfo else d.replace(tzinfo=timezone.utc)
    return (parse(b) - parse(a)).total_seconds() / 86400.0


def _overlaps(a: Sequence[int], b: Sequence[int], margin: int = 1) -> bool:
    ar0, ac0, ar1, ac1 = a
    br0, bc0, br1, bc1 = b
    return not (ar1 + margin <= br0 or br1 + margin <= ar0 or ac1 + margin <= bc0 or bc1 + margin <= ac0)


def alert_id(site: str, det: Detection) -> str:
    return f"{site}-{det.time[:10].replace('-', '')}-r{int(det.row):05d}c{int(det.col):05d}"


def status_for(n_observations: int, params: AlertParams = AlertParams()) -> str:
    if n_observations >= params.confirmed_at:
        return "confirmed"
    if n_observations >= params.provisional_at:
        return "provisional"
    return "first"


def confidence(score_max: float, area_m2: float, n_observations: int, mask_uncertainty: float,
               params: AlertParams = AlertParams()) -> float:
    """Confidence 0..1 (formula in the module docstring)."""
    c_score = 1.0 - math.exp(-max(score_max, 0.0) / params.score_scale)
    c_size = 1.0 - math.exp(-max(area_m2, 0.0) / params.size_scale_m2)
    c_obs = 1.0 - 0.5 ** max(n_observations, 0)
    c_mask = 1.0 - min(max(mask_uncertainty, 0.0), 1.0)
    c = c_score ** params.w_score * c_size ** params.w_size * c_obs ** params.w_obs * c_mask
    return round(min(max(c, 0.0), 1.0), 4)


def _size_text(area: float) -> str:
    return f"{area / 1e4:.2f} ha" if area >= 1e4 else f"{area:.0f} m2"


def describe(det_or_alert: Detection | Alert) -> str:
    """Plain language: direction with its usual meanings, size and, for an alert, status."""
    what = {"brighter": "brighter than its usual look (e.g. something new, cleared or bare ground, vegetation loss)",
            "darker": "darker than its usual look (e.g. something removed, water, vegetation gain)"}
    veg = getattr(det_or_alert, "vegetation", None)
    meaning = f"vegetation {veg} (NDVI {'fell' if veg == 'loss' else 'rose'})" if veg in ("loss", "gain") else \
        what.get(det_or_alert.direction, det_or_alert.direction)
    text = f"{det_or_alert.direction.capitalize()} change over {_size_text(det_or_alert.area_m2)}: {meaning}"
    if isinstance(det_or_alert, Alert):
        a = det_or_alert
        seen = f"seen once on {a.first_seen}" if a.n_observations == 1 else \
            f"seen {a.n_observations} times from {a.first_seen} to {a.last_seen}"
        state = {"first": "new, not yet confirmed", "provisional": "provisional", "confirmed": "confirmed",
                 "acknowledged": "acknowledged", "closed": f"closed ({a.closed_reason or 'no reason given'})"}[a.status]
        text += f". {state.capitalize()}, {seen}, confidence {a.confidence:.2f}."
    return text


def _det_uncertainty(det: Detection, clear_fraction: float | None) -> float:
    r0, c0, r1, c1 = det.bbox_pixels
    u = min(1.0, det.near_cloud_px / max(1, (r1 - r0) * (c1 - c0)))
    if clear_fraction is not None:
        u = max(u, 1.0 - clear_fraction)
    return u


def _cube_link(a: Alert, cube_url: str, det_time: str, pad: int = 16) -> dict[str, Any]:
    r0, c0, r1, c1 = a.bbox_pixels
    first = a.cube.get("time", [det_time, det_time])[0] if a.cube else det_time
    return {"url": cube_url or a.cube.get("url", ""), "time": [first, max(det_time, a.cube.get("time", ["", ""])[1] if a.cube else det_time)],
            "first_scene": a.first_scene, "last_scene": a.scenes[-1] if a.scenes else a.first_scene,
            "window": [max(0, r0 - pad), max(0, c0 - pad), r1 + pad, c1 + pad]}


def _event(a: Alert, event: str, time: str, notify: bool, **extra: Any) -> Alert:
    seq = a.update_seq + (1 if notify else 0)
    entry = {"seq": seq, "event": event, "time": time, "status": a.status, "n_observations": a.n_observations,
             "confidence": a.confidence, "notify": notify, **extra}
    return replace(a, update_seq=seq, history=tuple(a.history) + (entry,))


def _refresh(a: Alert, params: AlertParams) -> Alert:
    a = replace(a, confidence=confidence(a.score_max, a.area_m2, a.n_observations, a.mask_uncertainty, params))
    return replace(a, description=describe(a))


def _close(a: Alert, time: str, reason: str, params: AlertParams, **extra: Any) -> Alert:
    a = _refresh(replace(a, status="closed", closed_reason=reason), params)
    return _event(a, "closed", time, True, reason=reason, **extra)


def _expire(a: Alert, time: str, params: AlertParams) -> Alert:
    """Close ``a`` if it has had no support for ``close_after_days`` at ``time``."""
    if a.is_open and _days(a.last_seen, time) > params.close_after_days:
        return _close(a, time, f"no support for {params.close_after_days:g} days", params)
    return a


def apply_action(a: Alert, action: UserAction, params: AlertParams = AlertParams()) -> Alert:
    """``a`` with a person's action applied (recorded in its history; once only)."""
    if action.alert_id != a.id:
        raise ValueError(f"alert action for {action.alert_id!r} got alert {a.id!r}; expected the same id")
    if any(h.get("action_key") == action.key for h in a.history):
        return a
    extra = {"action_key": action.key, "by": action.by, "note": action.note}
    if not a.is_open:
        return _event(a, f"{action.action}-ignored", action.time, False, **extra)  # closed stays closed, recorded
    if action.action == "close":
        return _close(a, action.time, "closed by " + (action.by or "a user"), params, **extra)
    if a.status == "acknowledged":
        return _event(a, "ack-again", action.time, False, **extra)
    a = _refresh(replace(a, status="acknowledged"), params)
    return _event(a, "acknowledged", action.time, True, **extra)


def merge(site: str, existing: Sequence[Alert], detections: Iterable[Detection], views: Iterable[ClearView] = (),
          actions: Iterable[UserAction] = (), params: AlertParams = AlertParams(), as_of: str | None = None,
          cube_url: str = "") -> tuple[list[Alert], list[str], list[str]]:
    """Apply ``detections``, clear ``views`` and people's ``actions`` (any order; applied in
    time order, detections of a scene before its views) to ``existing`` alerts; then close
    open alerts without support for ``close_after_days`` at ``as_of`` (ISO UTC; e.g. the
    latest scene's time).

    Returns ``(alerts, new_ids, updated_ids)``; ``existing`` is not modified.
    """
    alerts = {a.id: a for a in existing}
    new_ids: list[str] = []
    updated: list[str] = []
    views = list(views)
    view_of = {(v.alert_id, v.scene_id): v.clear_fraction for v in views}

    def touched(aid: str) -> None:
        if aid not in new_ids and aid not in updated:
            updated.append(aid)

    events: list[tuple[str, int, Any]] = [(d.time, 0, d) for d in detections]
    events += [(v.time, 1, v) for v in views]
    events += [(x.time, 2, x) for x in actions]
    events.sort(key=lambda e: (e[0], e[1], (e[2].row, e[2].col) if e[1] == 0 else (e[2].alert_id,)))
    for when, kind, obj in events:
        if kind == 2:
            if obj.alert_id in alerts:
                upd = apply_action(alerts[obj.alert_id], obj, params)
                if upd != alerts[obj.alert_id]:
                    alerts[obj.alert_id] = upd
                    touched(obj.alert_id)
            continue
        if kind == 1:
            a = alerts.get(obj.alert_id)
            if (a is None or not a.is_open or obj.scene_id in a.scenes or obj.scene_id in a.clear_scenes
                    or obj.time[:10] <= a.last_seen or obj.clear_fraction < params.min_clear_fraction):
                continue
            a = _expire(a, when, params)
            if a.is_open and obj.returned is False:  # still looks changed: the baseline absorbed it, not a return
                a = replace(a, clear_scenes=tuple(a.clear_scenes) + (obj.scene_id,), last_observed=max(a.last_observed, when))
                a = _event(a, "clear-view-still-changed", when, False, scene_id=obj.scene_id,
                           clear_fraction=round(obj.clear_fraction, 4))
            elif a.is_open:
                a = replace(a, misses=a.misses + 1, clear_scenes=tuple(a.clear_scenes) + (obj.scene_id,),
                            last_observed=max(a.last_observed, when))
                a = _event(a, "clear-view", when, False, scene_id=obj.scene_id, clear_fraction=round(obj.clear_fraction, 4))
                if a.misses >= params.close_after_clear:
                    a = _close(a, when, f"returned to baseline ({a.misses} clear views without change)", params,
                               scene_id=obj.scene_id)
            alerts[a.id] = a
            touched(a.id)
            continue
        det: Detection = obj
        if any(det.scene_id in a.scenes for a in alerts.values()
               if a.direction == det.direction and _overlaps(a.bbox_pixels, det.bbox_pixels)):
            continue  # this scene already supports a matching alert: a rerun
        match = None
        for aid in list(alerts):
            a = alerts[aid]
            if a.is_open and a.direction == det.direction and _overlaps(a.bbox_pixels, det.bbox_pixels) and det.time[:10] >= a.first_seen:
                a2 = _expire(a, when, params)
                if a2 is not a:
                    alerts[aid] = a2
                    touched(aid)
                    continue
                match = a
                break
        if match is None and det.near_cloud_px > 0:
            continue
        if match is None:
            aid = alert_id(site, det)
            a = Alert(
                id=aid, site=site, status=status_for(1, params), first_seen=det.time[:10], last_seen=det.time[:10],
                area_m2=det.area_m2, lon=det.lon, lat=det.lat, score_max=det.score_max, score_mean=det.score_mean,
                direction=det.direction, bbox_pixels=det.bbox_pixels, n_observations=1,
                geometry=det.polygon, scenes=(det.scene_id,), first_scene=det.scene_id,
                mask_uncertainty=_det_uncertainty(det, None), last_observed=when, vegetation=det.vegetation,
            )
            a = _refresh(replace(a, cube=_cube_link(a, cube_url, when)), params)
            alerts[aid] = _event(a, "opened", when, True, scene_id=det.scene_id)
            new_ids.append(aid)
            continue
        r0, c0, r1, c1 = match.bbox_pixels
        d0, e0, d1, e1 = det.bbox_pixels
        n = match.n_observations + 1
        u = (match.mask_uncertainty * match.n_observations + _det_uncertainty(det, view_of.get((match.id, det.scene_id)))) / n
        upd = replace(
            match, last_seen=max(match.last_seen, det.time[:10]), n_observations=n,
            area_m2=max(match.area_m2, det.area_m2), score_max=max(match.score_max, det.score_max),
            bbox_pixels=(min(r0, d0), min(c0, e0), max(r1, d1), max(c1, e1)),
            scenes=tuple(match.scenes) + (det.scene_id,), mask_uncertainty=round(u, 4), misses=0,
            last_observed=max(match.last_observed, when), vegetation=det.vegetation or match.vegetation,
        )
        if upd.status in ("first", "provisional"):
            upd = replace(upd, status=status_for(n, params))
        upd = _refresh(replace(upd, cube=_cube_link(upd, cube_url, when)), params)
        upd = _event(upd, "supported", when, False, scene_id=det.scene_id)
        if upd.status != match.status:
            upd = _event(upd, upd.status, when, True, scene_id=det.scene_id)
        alerts[match.id] = upd
        touched(match.id)
    if as_of:
        for aid, a in list(alerts.items()):
            a2 = _expire(a, as_of, params)
            if a2 is not a:
                alerts[aid] = a2
                touched(aid)
    return sorted(alerts.values(), key=lambda a: (a.first_seen, a.id)), new_ids, updated


def open_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    return [a for a in alerts if a.status in OPEN_STATUSES]


def filter_alerts(alerts: Iterable[Alert], status: str | None = None, since: str | None = None,
                  until: str | None = None) -> list[Alert]:
    """Alerts with ``status`` (one of the statuses, or ``open``) last seen on or after
    ``since`` and first seen on or before ``until`` (ISO dates)."""
    if status is not None and status not in ALERT_STATUSES + ("open",):
        raise ValueError(f"alert status got {status!r}; expected one of {ALERT_STATUSES + ('open',)!r}")
    out = []
    for a in alerts:
        if status == "open" and not a.is_open or status not in (None, "open") and a.status != status:
            continue
        if since and a.last_seen < since[:10] or until and a.first_seen > until[:10]:
            continue
        out.append(a)
    return out
