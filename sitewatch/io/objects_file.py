"""Change objects of each analysed date, stored next to the cube as GeoJSON.

One file per analysed slot: ``<site>/objects/<YYYYMMDDTHHMMSSZ>_<scene_id>.geojson``, a
FeatureCollection of the date's change objects (at least the minimum mapping unit) in lon/lat
(RFC 7946), each with its area, centroid, bounding box (lon/lat and site-grid pixels), mean and
max change score, direction (brighter/darker) and vegetation change (loss/gain, from NDVI where
the site has red and NIR). The collection's ``sitewatch:`` members record the date's analysis
state: ``change_state`` is ``"ok"``, ``"not enough history"``, ``"no clear pixels"`` or ``"not
comparable"`` (the scene unlike its baseline as a whole: snow, thick haze; no change computed, no
objects), with the number of baseline scenes and the share of the date's clear pixels that had
enough clear history.

The file is written before the slot is marked analysed, atomically (object stores replace an
object on PUT; local files are renamed into place), so an analysed date always has its file and
a reader never sees half of one. Re-analysing a date replaces its file.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from . import store

OBJECTS_DIR = "objects"
CHANGE_STATES = ("ok", "not enough history", "no clear pixels", "not comparable")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def objects_dir(site_root: str) -> str:
    return store.join(site_root, OBJECTS_DIR)


def objects_url(site_root: str, time: str, scene_id: str) -> str:
    """The objects file of the scene acquired at ``time`` (ISO 8601 UTC, e.g.
    ``2024-01-05T08:33:41Z``): named by time first, so a listing is in date order."""
    stamp = re.sub(r"[-:]", "", time.rstrip("Z").split(".")[0]) + "Z"
    if not re.fullmatch(r"\d{8}T\d{6}Z", stamp):
        raise ValueError(f"objects file time got {time!r}; expected ISO 8601 UTC like '2024-01-05T08:33:41Z'")
    if not scene_id:
        raise ValueError(f"objects file scene_id got {scene_id!r}; expected a scene id")
    return store.join(objects_dir(site_root), f"{stamp}_{_UNSAFE.sub('_', scene_id)}.geojson")


def feature_collection(
    scene_id: str,
    time: str,
    objects: Iterable[dict[str, Any]],
    change_state: str,
    n_baseline_scenes: int,
    history_fraction: float | None,
    min_area_m2: float,
) -> dict[str, Any]:
    """The date's FeatureCollection. ``objects``: dicts with a ``polygon`` (GeoJSON geometry in
    lon/lat) and the object's properties."""
    if change_state not in CHANGE_STATES:
        raise ValueError(f"change_state got {change_state!r}; expected one of {CHANGE_STATES!r}")
    feats = []
    for i, o in enumerate(objects, 1):
        props = {k: v for k, v in o.items() if k != "polygon"}
        feats.append({"type": "Feature", "id": f"{scene_id}-{i}", "geometry": o["polygon"], "properties": props})
    if change_state != "ok" and feats:
        raise ValueError(f"objects got {len(feats)} object(s) with change_state {change_state!r}; expected none")
    return {
        "type": "FeatureCollection",
        "features": feats,
        "sitewatch:scene_id": scene_id,
        "sitewatch:time": time,
        "sitewatch:change_state": change_state,
        "sitewatch:n_baseline_scenes": int(n_baseline_scenes),
        "sitewatch:history_fraction": None if history_fraction is None else round(float(history_fraction), 4),
        "sitewatch:min_area_m2": float(min_area_m2),
    }


def write(url: str, collection: dict[str, Any], storage_options: dict[str, Any] | None = None) -> None:
    if collection.get("type") != "FeatureCollection":
        raise ValueError(f"objects file got type {collection.get('type')!r}; expected 'FeatureCollection'")
    store.write_bytes(url, json.dumps(collection, separators=(",", ":"), allow_nan=False).encode(), storage_options)


def read(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        data = json.loads(store.read_bytes(url, storage_options))
    except json.JSONDecodeError as exc:
        raise ValueError(f"objects file {url!r} is not JSON: {exc}") from None
    if data.get("type") != "FeatureCollection":
        raise ValueError(f"objects file {url!r} got type {data.get('type')!r}; expected 'FeatureCollection'")
    return data


def list_dates(site_root: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The site's objects files, in date order."""
    return sorted(store.list_files(objects_dir(site_root), ".geojson", storage_options))
