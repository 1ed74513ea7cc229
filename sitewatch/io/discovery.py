"""Scene discovery: which scenes a source holds for a site.

:func:`find_scenes` (and :func:`discover`, which also counts what each filter dropped) find scenes
in one of three ways (``method``):

``"stac-static"``
    STAC items in an object store: item JSON files anywhere under a folder or bucket prefix (the
    layout :func:`sitewatch.io.scenes.write_scene` writes), a static STAC Catalog/Collection
    (``catalog.json``; child and item links followed with pystac, relative hrefs resolved against
    the document that holds them), or an ItemCollection / GeoJSON FeatureCollection file. All
    reads go through fsspec (:mod:`sitewatch.io.store`), so ``s3://`` works like a local folder.
``"stac-api"``
    A STAC API search (pystac-client; :mod:`sitewatch.io.stac_api`).
``"layout"``
    A plain folder layout without STAC, ``<source>/<scene_id>/<asset>.tif``
    (:mod:`sitewatch.io.layout`).
``"auto"``
    an ``http(s)`` URL that answers as a STAC API -> ``stac-api``; a URL ending in ``.json`` -> a
    static catalog or ItemCollection; a folder holding STAC JSON -> ``stac-static``; else
    ``layout``.

Results are :class:`~sitewatch.models.SceneRef` objects (references, no pixels) sorted by
``(datetime, scene_id)`` and deduplicated by id (the first one found wins), plus ``problems``:
one ``"<url>: <what is wrong>"`` line per item that could not be used (invalid JSON, not a STAC
item, no datetime, a search page the API failed to serve, ...), so one bad item never stops a
run. Transient storage errors (connection refused, timeouts, 5xx) propagate, for the caller to
retry; a missing or denied bucket raises :class:`~sitewatch.io.store.StoreError`.

Asset keys are kept exactly as the source names them (``blue``, ``nir08``, ``B02``, ``SR_B4``,
``QA_PIXEL``, ``scl``, ...); mapping them to bands is the sensor profiles' job.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urljoin

import pystac
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from ..models import SceneRef
from . import store
from .scenes import SceneError

METHODS = ("auto", "stac-static", "stac-api", "layout")
_RASTER_TYPES = ("image/tiff", "image/jp2", "application/x-geotiff")
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
_NOT_DATA_ROLES = {"thumbnail", "overview", "visual", "metadata"}
# Roles under which providers publish rasters a sensor profile may need (QA and class bands).
_DATA_ROLES = {"data", "reflectance", "temperature", "cloud", "cloud-shadow", "snow-ice", "water-mask",
               "land-water", "data-mask", "saturation", "quality"}
_READ_THREADS = 8


@dataclass(frozen=True)
class Discovery:
    """What a discovery found: ``scenes`` (filtered, sorted, unique), ``problems`` and how many
    scenes each filter dropped. ``matched`` counts the usable, unique scenes the source returned
    before sitewatch's own filters (for ``stac-api``, after the server's)."""

    method: str
    scenes: tuple[SceneRef, ...]
    problems: tuple[str, ...]
    matched: int = 0
    excluded: int = 0  # ids in ``exclude_ids`` (e.g. already in the cube)
    out_of_time: int = 0
    other_collection: int = 0
    cloudy: int = 0
    outside: int = 0  # footprint does not intersect the site


# ---------------------------------------------------------------- STAC items -> SceneRef

def resolve_href(href: str, base_url: str) -> str:
    """``href`` made absolute against the URL of the document holding it (``./``/``../`` resolved
    for local paths, ``s3://`` and ``http(s)://`` alike)."""
    if "://" in href or href.startswith("/"):
        return href
    proto = store.protocol_of(base_url)
    if proto in ("http", "https"):
        return urljoin(base_url, href)
    head, sep, path = base_url.partition("://") if "://" in base_url else ("", "", base_url)
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), href))
    return f"{head}{sep}{joined}"


def _is_data_asset(asset: dict[str, Any]) -> bool:
    roles = set(asset.get("roles") or ())
    if roles & _NOT_DATA_ROLES and "data" not in roles:
        return False
    media = (asset.get("type") or "").lower()
    if media:
        raster = any(media.startswith(t) for t in _RASTER_TYPES)
    else:
        raster = str(asset.get("href", "")).lower().split("?")[0].endswith(_RASTER_SUFFIXES) or "data" in roles
    if not raster:
        return False
    return not roles or bool(roles & _DATA_ROLES)


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _asset_meta(asset: dict[str, Any], item_eo_bands: Sequence[Any]) -> dict[str, Any]:
    """``scale``, ``offset``, ``nodata``, ``data_type`` (STAC 1.0 ``raster:bands``, STAC 1.1
    ``bands`` or asset-level fields) and ``common_name``/``band_name``/``center_wavelength``
    (``eo:bands``, also as indices into the item's ``eo:bands``) of an asset's first band."""
    meta: dict[str, Any] = {}
    first = (asset.get("raster:bands") or asset.get("bands") or [{}])[0] or {}
    for key, names in (("scale", ("scale", "raster:scale")), ("offset", ("offset", "raster:offset")),
                       ("nodata", ("nodata",)), ("data_type", ("data_type",))):
        for src in (first, asset):
            vals = [src[n] for n in names if src.get(n) is not None]
            if vals:
                meta[key] = vals[0]
                break
    eo = asset.get("eo:bands") or []
    band = eo[0] if eo else (first if "eo:common_name" in first else None)
    if isinstance(band, int) and 0 <= band < len(item_eo_bands):
        band = item_eo_bands[band]
    if isinstance(band, dict):
        for key, names in (("common_name", ("common_name", "eo:common_name")), ("band_name", ("name",)),
                           ("center_wavelength", ("center_wavelength", "eo:center_wavelength"))):
            v = next((band[n] for n in names if band.get(n) is not None), None)
            if v is not None:
                meta[key] = v
    return meta


def scene_ref_from_item(item_dict: dict[str, Any], item_url: str, collection: str = "") -> SceneRef:
    """A :class:`SceneRef` from a STAC item dict found at ``item_url`` (relative asset hrefs are
    resolved against it). Keeps the data assets (role ``data`` or a QA/mask role, or no roles and
    a GeoTIFF/COG/JP2 media type; never thumbnails, overviews or metadata) under their own keys,
    with ``asset_meta`` from each asset's ``raster:bands``/``eo:bands``; ``cloud_cover`` from
    ``eo:cloud_cover``; ``collection`` from the item (else ``collection``). Raises
    :class:`SceneError` naming ``item_url`` for an invalid item, one without an acquisition
    ``datetime`` or one without data assets."""
    if not isinstance(item_dict, dict) or item_dict.get("type") != "Feature":
        got = item_dict.get("type") if isinstance(item_dict, dict) else type(item_dict).__name__
        raise SceneError(f"STAC item {item_url!r} is not a STAC item: type got {got!r}; expected 'Feature'")
    props = item_dict.get("properties")
    if isinstance(props, dict) and props.get("datetime") is None:
        ranged = " (it states only a start/end range)" if props.get("start_datetime") else ""
        raise SceneError(f"STAC item {item_url!r} has no datetime{ranged}; expected an acquisition time")
    try:
        item = pystac.Item.from_dict(item_dict)
    except Exception as exc:  # pystac raises several types for malformed items
        raise SceneError(f"STAC item {item_url!r} is not a valid STAC item: {type(exc).__name__}: {exc}") from exc
    if item.datetime is None:
        raise SceneError(f"STAC item {item_url!r} has no datetime; expected an acquisition time")
    raw_assets = item_dict.get("assets") or {}
    item_eo = item_dict.get("properties", {}).get("eo:bands") or []
    assets: dict[str, str] = {}
    meta: dict[str, dict[str, Any]] = {}
    for key, a in raw_assets.items():
        if not isinstance(a, dict) or not a.get("href") or not _is_data_asset(a):
            continue
        assets[key] = resolve_href(str(a["href"]), item_url)
        meta[key] = _asset_meta(a, item_eo)
    if not assets:
        raise SceneError(f"STAC item {item_url!r} has no data assets; got assets {sorted(raw_assets)!r} "
                         "(expected GeoTIFF/COG assets with role 'data')")
    nodata = next((m["nodata"] for m in meta.values() if m.get("nodata") is not None), None)
    when = item.datetime if item.datetime.tzinfo else item.datetime.replace(tzinfo=dt.timezone.utc)
    return SceneRef(
        scene_id=item.id, datetime=when.astimezone(dt.timezone.utc), assets=assets, item_href=item_url,
        properties=dict(item.properties), nodata=nodata, asset_meta=meta,
        cloud_cover=_num(item.properties.get("eo:cloud_cover")), collection=item.collection_id or collection,
    )


Found = tuple[SceneRef, "BaseGeometry | None"]  # a scene and its lon/lat footprint (None: unknown)


def _found(item_dict: dict[str, Any], url: str, collection: str = "") -> Found:
    ref = scene_ref_from_item(item_dict, url, collection)
    g = item_dict.get("geometry")
    try:
        return ref, (shape(g) if g else None)
    except Exception as exc:
        raise SceneError(f"STAC item {url!r} has an invalid geometry: {exc}") from exc


# ---------------------------------------------------------------- static STAC

class StoreStacIO(pystac.StacIO):
    """pystac I/O through :mod:`sitewatch.io.store` (fsspec): reads ``s3://`` and any fsspec URL
    with the given storage options. Read-only."""

    def __init__(self, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.storage_options = storage_options

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = source.get_absolute_href() if isinstance(source, pystac.Link) else str(source)
        return store.read_bytes(href, self.storage_options).decode("utf-8")

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"discovery reads STAC only; refused to write {dest!r}")


def _problem(url: str, exc: BaseException) -> str:
    text = str(exc)
    if url in text:  # SceneError texts already name the item
        return f"{url}: {text}"
    return f"{url}: {type(exc).__name__}: {text}"


def _read_many(urls: Sequence[str], read: Callable[[str], Any]) -> list[tuple[str, Any, BaseException | None]]:
    """``read(url)`` for every URL on a few threads. Transient storage errors propagate (the
    caller retries the whole discovery); other errors are returned for the caller to report."""
    def one(url: str) -> tuple[str, Any, BaseException | None]:
        try:
            return url, read(url), None
        except Exception as exc:
            if store.is_transient(exc):
                raise
            return url, None, exc

    if len(urls) <= 1:
        return [one(u) for u in urls]
    with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
        return list(pool.map(one, urls))


def _refs_from_doc(doc: Any, url: str, io: StoreStacIO, problems: list[str], seen: set[str],
                   collection: str = "", depth: int = 0) -> list[Found]:
    """Scenes in one STAC document: an item, an ItemCollection/FeatureCollection, or a
    Catalog/Collection whose child and item links are followed (each document once)."""
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "Feature":
        try:
            return [_found(doc, url, collection)]
        except SceneError as exc:
            problems.append(_problem(url, exc))
            return []
    if kind == "FeatureCollection":
        out = []
        for i, feat in enumerate(doc.get("features") or []):
            fid = feat.get("id") if isinstance(feat, dict) else None
            where = f"{url}#{fid if fid else f'features[{i}]'}"
            try:
                out.append(_found(feat, url, collection))
            except SceneError as exc:
                problems.append(f"{where}: {str(exc).replace(repr(url), repr(where))}")
        return out
    if kind in ("Catalog", "Collection") and depth < 32:
        try:
            cat = pystac.read_dict(doc, href=url, stac_io=io)
        except Exception as exc:
            problems.append(_problem(url, exc))
            return []
        coll = cat.id if kind == "Collection" else collection
        hrefs = [link.get_absolute_href() or resolve_href(link.href, url)
                 for link in cat.links if link.rel in ("child", "item")]
        hrefs = [h for h in hrefs if h not in seen]
        seen.update(hrefs)
        out = []
        for href, sub, err in _read_many(hrefs, io.read_json):
            if err is not None:
                problems.append(_problem(href, err))
            else:
                out += _refs_from_doc(sub, href, io, problems, seen, coll, depth + 1)
        return out
    problems.append(f"{url}: not a STAC item, ItemCollection or catalog: type got {kind!r}")
    return []


def _static_file(url: str, storage_options: dict[str, Any] | None) -> tuple[list[Found], list[str]]:
    """A static Catalog/Collection, ItemCollection or single item at ``url`` (a ``.json`` file)."""
    io = StoreStacIO(storage_options)
    problems: list[str] = []
    try:
        doc = io.read_json(url)
    except Exception as exc:
        if store.is_transient(exc) or isinstance(exc, store.StoreError) and not isinstance(exc, PermissionError):
            raise
        return [], [_problem(url, exc)]
    return _refs_from_doc(doc, url, io, problems, {url}), problems


def _static_folder(json_urls: Sequence[str], storage_options: dict[str, Any] | None) -> tuple[list[Found], list[str]]:
    """Every STAC item (and ItemCollection) JSON file under a folder; catalogs and collections
    among them are skipped (their items are in the folder too)."""
    io = StoreStacIO(storage_options)
    refs: list[Found] = []
    in_collections: list[Found] = []  # after the item files: an item's own file wins a duplicate id
    problems: list[str] = []
    for url, doc, err in _read_many(json_urls, io.read_json):
        if err is not None:
            problems.append(_problem(url, err))
        elif isinstance(doc, dict) and doc.get("type") in ("Catalog", "Collection"):
            continue
        elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
            in_collections += _refs_from_doc(doc, url, io, problems, {url})
        else:
            refs += _refs_from_doc(doc, url, io, problems, {url})
    return refs + in_collections, problems


def _is_stac_json(doc: Any) -> bool:
    return isinstance(doc, dict) and (
        doc.get("type") in ("Catalog", "Collection") or
        (doc.get("type") in ("Feature", "FeatureCollection") and ("stac_version" in doc or "features" in doc)))


# ---------------------------------------------------------------- filters and dispatch

def _utc(v: dt.datetime | str | None, name: str) -> dt.datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{name} got {v!r}; expected an ISO 8601 date or datetime") from None
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        v = dt.datetime(v.year, v.month, v.day)
    if not isinstance(v, dt.datetime):
        raise ValueError(f"{name} got {v!r}; expected a datetime, an ISO 8601 string or None")
    return v.replace(tzinfo=dt.timezone.utc) if v.tzinfo is None else v.astimezone(dt.timezone.utc)


def _footprint(footprint: Any) -> BaseGeometry | None:
    if footprint is None:
        return None
    try:
        geom = footprint if isinstance(footprint, BaseGeometry) else shape(footprint)
    except Exception as exc:
        raise ValueError(f"footprint got {footprint!r}; expected a lon/lat GeoJSON geometry ({exc})") from None
    if geom.is_empty:
        raise ValueError(f"footprint got an empty geometry {footprint!r}; expected the site's lon/lat geometry")
    return geom


def _resolve_method(method: str, source: str, storage_options: dict[str, Any] | None,
                    files: list[str] | None) -> str:
    if method != "auto":
        return method
    proto = store.protocol_of(source)
    if source.lower().split("?")[0].endswith(".json"):
        return "stac-static"
    if proto in ("http", "https"):
        from . import stac_api

        return "stac-api" if stac_api.is_stac_api(source) else "stac-static"
    json_urls = [u for u in files or [] if u.lower().endswith(".json")]
    io = StoreStacIO(storage_options)
    for url in json_urls[:20]:  # a few reads decide: a folder of STAC items, or plain files
        try:
            if _is_stac_json(io.read_json(url)):
                return "stac-static"
        except Exception as exc:
            if store.is_transient(exc):
                raise
    return "layout" if any(u.lower().endswith(_RASTER_SUFFIXES) for u in files or []) or not json_urls else "stac-static"


def discover(
    source: str,
    footprint: dict[str, Any] | BaseGeometry | None = None,
    *,
    method: str = "auto",
    collections: Sequence[str] | str = (),
    max_cloud: float | None = None,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    storage_options: dict[str, Any] | None = None,
    exclude_ids: Iterable[str] = (),
    page_size: int = 100,
) -> Discovery:
    """Find the scenes in ``source`` for a site; see :func:`find_scenes`. Also takes
    ``exclude_ids`` (scene ids to drop before any per-scene request, e.g. those already in the
    cube) and ``page_size`` (STAC API page size), and returns a :class:`Discovery` that counts
    what each filter dropped."""
    if method not in METHODS:
        raise ValueError(f"discovery method got {method!r}; expected one of {METHODS!r}")
    if not isinstance(source, str) or not source:
        raise ValueError(f"source got {source!r}; expected a folder or URL")
    if max_cloud is not None and not (0 <= float(max_cloud) <= 100):
        raise ValueError(f"max_cloud got {max_cloud!r}; expected a percentage in [0, 100] or None")
    if page_size < 1:
        raise ValueError(f"page_size got {page_size!r}; expected >= 1")
    colls = (collections,) if isinstance(collections, str) else tuple(collections)
    t0, t1 = _utc(start, "start"), _utc(end, "end")
    if t0 and t1 and t0 > t1:
        raise ValueError(f"start got {t0.isoformat()} after end {t1.isoformat()}; expected start <= end")
    geom = _footprint(footprint)
    exclude = set(exclude_ids)

    files: list[str] | None = None
    proto = store.protocol_of(source)
    is_file = source.lower().split("?")[0].endswith(".json")
    if proto not in ("http", "https") and not is_file and method in ("auto", "stac-static", "layout"):
        files = store.list_files(source, "", storage_options)
    how = _resolve_method(method, source, storage_options, files)

    counts = dict(excluded=0, out_of_time=0, other_collection=0, cloudy=0, outside=0)

    def keep(ref: SceneRef, where: BaseGeometry | None) -> bool:
        if ref.scene_id in exclude:
            counts["excluded"] += 1
        elif (t0 and ref.datetime < t0) or (t1 and ref.datetime > t1):
            counts["out_of_time"] += 1
        elif colls and ref.collection and ref.collection not in colls:
            counts["other_collection"] += 1
        elif max_cloud is not None and ref.cloud_cover is not None and ref.cloud_cover > max_cloud:
            counts["cloudy"] += 1
        elif geom is not None and where is not None and not where.intersects(geom):
            counts["outside"] += 1  # (unknown footprint: validation checks the overlap on the COG header)
        else:
            return True
        return False

    if how == "layout":
        from . import layout

        raw, problems = layout.find_layout_scenes(
            source, files or [], storage_options, keep_early=lambda sid, when: _early_keep(sid, when, exclude, t0, t1, counts))
    elif how == "stac-api":
        from . import stac_api

        raw, problems = stac_api.search(source, geom, collections=colls, max_cloud=max_cloud, start=t0, end=t1,
                                        page_size=page_size)
    elif is_file or proto in ("http", "https"):
        raw, problems = _static_file(source, storage_options)
    else:
        raw, problems = _static_folder([u for u in files or [] if u.lower().endswith(".json")], storage_options)
    unique: dict[str, Found] = {}
    for ref, where in raw:
        unique.setdefault(ref.scene_id, (ref, where))
    refs = [ref for ref, where in unique.values() if keep(ref, where)]
    refs.sort(key=lambda s: (s.datetime, s.scene_id))
    matched = len(unique) + (counts["excluded"] + counts["out_of_time"] if how == "layout" else 0)
    return Discovery(method=how, scenes=tuple(refs), problems=tuple(problems), matched=matched, **counts)


def _early_keep(scene_id: str, when: dt.datetime | None, exclude: set[str], t0: dt.datetime | None,
                t1: dt.datetime | None, counts: dict[str, int]) -> bool:
    """Layout: drop excluded and out-of-time scenes before reading any file header."""
    if scene_id in exclude:
        counts["excluded"] += 1
        return False
    if when is not None and ((t0 and when < t0) or (t1 and when > t1)):
        counts["out_of_time"] += 1
        return False
    return True


def find_scenes(
    source: str,
    footprint: dict[str, Any] | None = None,
    *,
    method: str = "auto",
    collections: Sequence[str] = (),
    max_cloud: float | None = None,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[list[SceneRef], list[str]]:
    """Scenes in ``source`` that intersect ``footprint`` (a lon/lat GeoJSON geometry; None: all),
    sorted by ``(datetime, scene_id)`` and unique by id, and the problems met on the way
    (``"<url>: <error>"`` per item that could not be used).

    ``method``: ``"stac-static"``, ``"stac-api"``, ``"layout"`` or ``"auto"`` (module docstring).
    Filters: the scene's footprint intersects ``footprint`` (a scene with no known footprint
    passes; validation checks the overlap later); ``eo:cloud_cover <= max_cloud`` (percent;
    scenes that do not state a cloud cover pass, except where a STAC API's ``query``/``filter``
    extension filters on the server, which drops them); ``start <= datetime <= end`` (datetimes
    or ISO strings; naive ones are UTC); ``collections``: STAC API collections to search, and for
    static STAC the items that name another collection are dropped.
    Errors: ``ValueError`` for bad arguments; :class:`~sitewatch.io.store.StoreError` for a
    missing or denied bucket; transient storage errors propagate for the caller to retry.
    """
    found = discover(source, footprint, method=method, collections=collections, max_cloud=max_cloud,
                     start=start, end=end, storage_options=storage_options)
    return list(found.scenes), list(found.problems)
