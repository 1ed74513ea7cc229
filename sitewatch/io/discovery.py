"""Scene discovery: which scenes a source holds for a site.

A source is an fsspec URL (a local folder, ``s3://bucket/prefix``, ...) holding STAC items
(the layout :func:`sitewatch.io.scenes.write_scene` writes). Discovery returns
:class:`~sitewatch.models.SceneRef` objects (references, no pixels), sorted by acquisition time,
plus a list of problems (items that could not be used), so one bad item never stops a run.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pystac
from shapely.geometry import shape

from ..models import SceneRef
from . import store
from .scenes import SceneError


def _resolve(href: str, item_url: str) -> str:
    if "://" in href or href.startswith("/"):
        return href
    base = item_url.rsplit("/", 1)[0]
    rel = href[2:] if href.startswith("./") else href
    return f"{base}/{rel}"


def scene_ref_from_item(item_dict: dict[str, Any], item_url: str) -> SceneRef:
    """A :class:`SceneRef` from a STAC item dict; asset keys are taken as band names."""
    try:
        item = pystac.Item.from_dict(item_dict)
    except Exception as exc:  # pystac raises several types for malformed items
        raise SceneError(f"STAC item {item_url!r} is not a valid STAC item: {exc}") from exc
    if item.datetime is None:
        raise SceneError(f"STAC item {item_url!r} has no datetime; expected an acquisition time")
    assets = {k: _resolve(a.href, item_url) for k, a in item.assets.items() if "data" in (a.roles or ["data"])}
    nodata = None
    for a in item.assets.values():
        rb = a.extra_fields.get("raster:bands")
        if rb and rb[0].get("nodata") is not None:
            nodata = rb[0]["nodata"]
            break
    when = item.datetime.astimezone(dt.timezone.utc)
    return SceneRef(
        scene_id=item.id, datetime=when, assets=assets, item_href=item_url,
        properties=dict(item.properties), nodata=nodata,
    )


def find_scenes(
    source: str,
    footprint: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[list[SceneRef], list[str]]:
    """STAC items under ``source`` (static layout), sorted by time, that intersect ``footprint``
    (a lon/lat GeoJSON geometry). Returns ``(scenes, problems)``: items that cannot be parsed
    are reported in ``problems`` rather than stopping discovery."""
    scenes: list[SceneRef] = []
    problems: list[str] = []
    geom = shape(footprint) if footprint else None
    for url in store.list_files(source, ".json", storage_options):
        try:
            item_dict = store.read_json(url, storage_options)
            ref = scene_ref_from_item(item_dict, url)
        except (SceneError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            problems.append(f"{url}: {exc}")
            continue
        item_geom = item_dict.get("geometry")
        if geom is not None and item_geom is not None and not shape(item_geom).intersects(geom):
            continue
        scenes.append(ref)
    scenes.sort(key=lambda s: (s.datetime, s.scene_id))
    return scenes, problems
