"""From change detections to alerts with a persistent identity.

A detection that overlaps an open alert of the same direction (brighter/darker) at the same site
updates that alert (last seen, number of observations, largest area and score); otherwise it
opens a new alert, unless it lies next to a cloud or shadow (``near_cloud_px > 0``): cloud and
shadow fringes that the masks missed are the commonest false change, so such a detection only
supports an existing alert and a real change opens its alert on its next clear view. Alert ids are deterministic (site, first-seen date, centroid pixel), and an
alert remembers which scenes support it, so feeding the same detections twice changes nothing:
reruns and retries are idempotent.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Sequence

from .analysis import Detection
from .models import Alert


def _overlaps(a: Sequence[int], b: Sequence[int], margin: int = 1) -> bool:
    ar0, ac0, ar1, ac1 = a
    br0, bc0, br1, bc1 = b
    return not (ar1 + margin <= br0 or br1 + margin <= ar0 or ac1 + margin <= bc0 or bc1 + margin <= ac0)


def alert_id(site: str, det: Detection) -> str:
    return f"{site}-{det.time[:10].replace('-', '')}-r{int(det.row):05d}c{int(det.col):05d}"


def describe(det_or_alert: Detection | Alert) -> str:
    area = det_or_alert.area_m2
    size = f"{area / 1e4:.2f} ha" if area >= 1e4 else f"{area:.0f} m2"
    return f"{det_or_alert.direction} change over {size}"


def merge(site: str, existing: Sequence[Alert], detections: Iterable[Detection]) -> tuple[list[Alert], list[str], list[str]]:
    """Apply ``detections`` (any order; applied in time order) to ``existing`` alerts.

    Returns ``(alerts, new_ids, updated_ids)``; ``existing`` is not modified.
    """
    alerts = {a.id: a for a in existing}
    observed: dict[str, set[str]] = {a.id: set(a.scenes) for a in existing}
    new_ids: list[str] = []
    updated: list[str] = []
    for det in sorted(detections, key=lambda d: (d.time, d.row, d.col)):
        if any(det.scene_id in s for aid, s in observed.items() if _overlaps(alerts[aid].bbox_pixels, det.bbox_pixels) and alerts[aid].direction == det.direction):
            continue  # this scene already supports a matching alert: a rerun
        match = None
        for a in alerts.values():
            if a.status == "open" and a.direction == det.direction and _overlaps(a.bbox_pixels, det.bbox_pixels):
                if det.time[:10] >= a.first_seen:
                    match = a
                    break
        if match is None and det.near_cloud_px > 0:
            continue
        if match is None:
            aid = alert_id(site, det)
            alerts[aid] = Alert(
                id=aid, site=site, status="open", first_seen=det.time[:10], last_seen=det.time[:10],
                area_m2=det.area_m2, lon=det.lon, lat=det.lat, score_max=det.score_max, score_mean=det.score_mean,
                direction=det.direction, bbox_pixels=det.bbox_pixels, n_observations=1,
                geometry=det.polygon, scenes=(det.scene_id,), first_scene=det.scene_id,
                description=describe(det),
            )
            observed[aid] = {det.scene_id}
            new_ids.append(aid)
        else:
            r0, c0, r1, c1 = match.bbox_pixels
            d0, e0, d1, e1 = det.bbox_pixels
            upd = replace(
                match, last_seen=max(match.last_seen, det.time[:10]), n_observations=match.n_observations + 1,
                area_m2=max(match.area_m2, det.area_m2), score_max=max(match.score_max, det.score_max),
                bbox_pixels=(min(r0, d0), min(c0, e0), max(r1, d1), max(c1, e1)),
                scenes=tuple(match.scenes) + (det.scene_id,),
            )
            upd = replace(upd, description=describe(upd))
            alerts[match.id] = upd
            observed[match.id].add(det.scene_id)
            if match.id not in new_ids and match.id not in updated:
                updated.append(match.id)
    return sorted(alerts.values(), key=lambda a: (a.first_seen, a.id)), new_ids, updated
