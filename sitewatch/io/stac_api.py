"""Scene discovery through a STAC API (STAC API - Core + Item Search) with pystac-client.

The search asks the server for items that intersect the site footprint, within the datetime
range and collections, with ``eo:cloud_cover <= max_cloud`` through the ``query`` extension (or
a CQL2 ``filter`` when the server declares that instead; neither declared: the caller filters),
and follows ``next`` links page by page. HTTP requests are retried with exponential backoff on
connection errors, timeouts, 429 and 5xx (``SITEWATCH_RETRIES``, default 3;
``SITEWATCH_RETRY_DELAY``, default 2 s); a failure that outlives them becomes a problem naming
the URL, and the items already received are kept.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Sequence

from pystac_client import Client, ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry
from urllib3.util.retry import Retry

from ..models import SceneRef
from .scenes import SceneError

TIMEOUT = (10.0, 60.0)  # connect, read (seconds)


def _retry() -> Retry:
    n = int(os.environ.get("SITEWATCH_RETRIES", "3"))
    delay = float(os.environ.get("SITEWATCH_RETRY_DELAY", "2"))
    # urllib3 sleeps 0, 2f, 4f, ... between attempts for backoff_factor f: the second wait is ``delay``
    return Retry(total=n, connect=n, read=n, status=n, other=0, status_forcelist=(429, 500, 502, 503, 504),
                 allowed_methods=None, backoff_factor=delay / 2, raise_on_status=False)


def open_client(url: str) -> Client:
    """A pystac-client :class:`Client` for the STAC API at ``url`` (its landing page is read)."""
    return Client.open(url, stac_io=StacApiIO(timeout=TIMEOUT, max_retries=_retry()))


def is_stac_api(url: str) -> bool:
    """True when ``url`` answers as a STAC API with item search (landing page with
    ``conformsTo``)."""
    try:
        return open_client(url).conforms_to(ConformanceClasses.ITEM_SEARCH)
    except Exception:
        return False


def _api_error(url: str, what: str, exc: BaseException) -> str:
    code = getattr(exc, "status_code", None)
    text = " ".join(str(exc).split())[:300]
    return f"{url}: {what}{f' (HTTP {code})' if code else ''}: {type(exc).__name__}: {text}"


def _item_url(feature: dict[str, Any], api_url: str) -> str:
    for link in feature.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    coll, fid = feature.get("collection"), feature.get("id")
    if coll and fid:
        return f"{api_url.rstrip('/')}/collections/{coll}/items/{fid}"
    return f"{api_url.rstrip('/')}/search#{fid}"


def search(
    url: str,
    footprint: BaseGeometry | None,
    *,
    collections: Sequence[str] = (),
    max_cloud: float | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    page_size: int = 100,
) -> tuple[list[tuple[SceneRef, BaseGeometry | None]], list[str]]:
    """``(scene, footprint)`` pairs for the items a STAC API search returns, and problems
    (``"<url>: <error>"``: the API unreachable or failing after retries, an item that is not
    usable). Only POST is used when the landing page advertises it, else GET."""
    from .discovery import _found  # shared with static STAC; imported here to avoid a cycle

    try:
        client = open_client(url)
    except Exception as exc:
        return [], [_api_error(url, "STAC API landing page cannot be read", exc)]
    if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
        return [], [f"{url}: not a STAC API with item search; conformsTo lacks "
                    f"{ConformanceClasses.ITEM_SEARCH.valid_uri!r}"]
    kw: dict[str, Any] = {}
    if max_cloud is not None:
        if client.conforms_to(ConformanceClasses.QUERY):
            kw["query"] = {"eo:cloud_cover": {"lte": max_cloud}}
        elif client.conforms_to(ConformanceClasses.FILTER):
            kw["filter"] = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_cloud]}
            kw["filter_lang"] = "cql2-json"
    if start is not None or end is not None:
        kw["datetime"] = [start, end]
    methods = {(link.extra_fields.get("method") or "GET").upper() for link in client.links if link.rel == "search"}
    item_search = client.search(
        method="POST" if "POST" in methods or not methods else "GET",
        intersects=mapping(footprint) if footprint is not None else None,
        collections=list(collections) or None, limit=page_size, **kw,
    )
    found: list[tuple[SceneRef, BaseGeometry | None]] = []
    problems: list[str] = []
    page_no = 0
    try:
        for page in item_search.pages_as_dicts():
            page_no += 1
            for i, feat in enumerate(page.get("features") or []):
                item_url = _item_url(feat, url) if isinstance(feat, dict) else f"{item_search.url}#page{page_no}[{i}]"
                try:
                    found.append(_found(feat, item_url))
                except SceneError as exc:
                    problems.append(f"{item_url}: {exc}")
    except (APIError, OSError, ValueError) as exc:  # after the HTTP retries; invalid JSON is a ValueError
        problems.append(_api_error(item_search.url, f"STAC API search failed on page {page_no + 1}", exc))
    return found, problems
