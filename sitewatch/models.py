"""Plain, Prefect-free models: a Site to watch, a Scene reference, an Alert raised at a site.

These are frozen dataclasses; validation of user-facing config (YAML files, Prefect flow
parameters) happens in :mod:`sitewatch.config` with pydantic and produces these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from pyproj import Transformer

from .grid import SiteGrid, utm_crs_for

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Site:
    """A place to watch.

    ``geometry`` is a GeoJSON geometry mapping in lon/lat (EPSG:4326). ``crs`` defaults to
    the UTM zone of the geometry's centroid. ``source`` is the fsspec URL scenes are found
    under; ``store`` the fsspec URL under which sitewatch keeps this site's outputs
    (``<store>/<name>/cube.zarr``, ``.../alerts/...``).
    """

    name: str
    geometry: dict[str, Any]
    resolution: float
    source: str
    store: str
    crs: str | None = None
    min_alert_area_m2: float = 1000.0
    chunk_size: int = 512
    bounds: tuple[float, float, float, float] | None = None  # projected (left, bottom, right, top) in ``crs``

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f"site name got {self.name!r}; expected 1-63 lowercase letters, digits, '-' or '_'"
            )
        if not (self.resolution > 0):
            raise ValueError(f"site {self.name!r}: resolution got {self.resolution!r}; expected metres > 0")
        geom = self.shape
        if geom.is_empty or geom.area == 0:
            raise ValueError(f"site {self.name!r}: geometry got an empty or zero-area shape; expected a polygon or bbox")
        minx, miny, maxx, maxy = geom.bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise ValueError(
                f"site {self.name!r}: geometry bounds got {geom.bounds!r}; expected lon/lat degrees (EPSG:4326)"
            )
        if self.bounds is not None and not self.crs:
            raise ValueError(f"site {self.name!r}: bounds got {self.bounds!r} without a crs; expected crs with projected bounds")
        if self.chunk_size < 64:
            raise ValueError(f"site {self.name!r}: chunk_size got {self.chunk_size!r}; expected >= 64")

    @classmethod
    def from_bbox(cls, name: str, bbox: tuple[float, float, float, float], **kw: Any) -> "Site":
        return cls(name=name, geometry=mapping(box(*bbox)), **kw)

    @property
    def shape(self) -> BaseGeometry:
        return shape(self.geometry)

    @property
    def site_crs(self) -> str:
        if self.crs:
            return self.crs
        c = self.shape.centroid
        return f"EPSG:{utm_crs_for(c.x, c.y).to_epsg()}"

    @property
    def grid(self) -> SiteGrid:
        crs = self.site_crs
        if self.bounds is not None:
            return SiteGrid.from_bounds(self.bounds, self.resolution, crs)
        tr = Transformer.from_crs(4326, crs, always_xy=True)
        minx, miny, maxx, maxy = self.shape.bounds
        # Densify the bbox edges so the projected bounds contain the whole geometry.
        import numpy as np

        t = np.linspace(0.0, 1.0, 21)
        xs = np.concatenate([minx + (maxx - minx) * t, np.full_like(t, maxx), maxx - (maxx - minx) * t, np.full_like(t, minx)])
        ys = np.concatenate([np.full_like(t, miny), miny + (maxy - miny) * t, np.full_like(t, maxy), maxy - (maxy - miny) * t])
        px, py = tr.transform(xs, ys)
        return SiteGrid.from_bounds((px.min(), py.min(), px.max(), py.max()), self.resolution, crs)

    @property
    def site_root(self) -> str:
        return f"{self.store.rstrip('/')}/{self.name}"

    @property
    def cube_url(self) -> str:
        return f"{self.site_root}/cube.zarr"

    @property
    def alerts_url(self) -> str:
        return f"{self.site_root}/alerts"


@dataclass(frozen=True)
class SceneRef:
    """A scene found in a source: a reference, never pixels.

    ``assets`` maps asset keys (as the source names them: ``blue``/``nir08`` at Earth Search,
    ``B02``/``B8A`` at Planetary Computer, ``SR_B4`` ...) to absolute hrefs; ``asset_meta``
    holds what the source says about each asset's pixels (``scale``, ``offset``, ``nodata``,
    ``data_type``, from STAC ``raster:bands``), which wins over a sensor profile's defaults.
    ``cloud_cover`` is the scene-level cloud percentage (``eo:cloud_cover``) when known.
    """

    scene_id: str
    datetime: datetime
    assets: dict[str, str]
    item_href: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    nodata: float | None = None
    asset_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    cloud_cover: float | None = None
    collection: str = ""


#: Alert statuses, in lifecycle order. ``first``: seen once; ``provisional``/``confirmed``:
#: seen again on later observations (counts in ``sitewatch.alerts.AlertParams``);
#: ``acknowledged``: a person has looked at it (still updated); ``closed``: its pixels returned
#: to baseline, it went unsupported too long, or a person closed it (never updated again).
ALERT_STATUSES = ("first", "provisional", "confirmed", "acknowledged", "closed")
OPEN_STATUSES = ("first", "provisional", "confirmed", "acknowledged")


@dataclass(frozen=True)
class Alert:
    """A change at a site that a person should look at.

    ``history`` holds one entry per event (opened, supported, status change, clear view
    without support, acknowledged, closed): ``{"seq", "event", "time", "scene_id", "status",
    "n_observations", ...}``; ``update_seq`` is the number of *notifiable* updates so far (the
    alert opened or its status changed): channels deliver each (alert id, update_seq) once.
    ``cube`` links into the site cube: ``{"url", "scene_id", "time", "window": [r0, c0, r1, c1]}``.
    """

    id: str
    site: str
    status: str
    first_seen: str  # ISO date of the first observation showing it
    last_seen: str
    area_m2: float
    lon: float
    lat: float
    score_max: float
    score_mean: float
    direction: str  # "brighter" or "darker"
    bbox_pixels: tuple[int, int, int, int]  # row0, col0, row1, col1 (exclusive end)
    n_observations: int = 1
    geometry: dict[str, Any] | None = None  # polygon in lon/lat
    scenes: tuple[str, ...] = ()  # ids of the scenes that showed it
    first_scene: str = ""
    description: str = ""
    images: dict[str, str] = field(default_factory=dict)  # "before"/"after" -> URL
    confidence: float = 0.0
    mask_uncertainty: float = 0.0  # mean over supporting observations, 0 (clear) .. 1
    misses: int = 0  # clear views of its footprint without support since the last support
    clear_scenes: tuple[str, ...] = ()  # scenes that viewed it clearly without support
    last_observed: str = ""  # ISO time of the latest scene applied to it (support or clear view)
    update_seq: int = 0
    history: tuple[dict[str, Any], ...] = ()
    cube: dict[str, Any] = field(default_factory=dict)
    closed_reason: str = ""
    vegetation: str | None = None  # "loss" | "gain" from its objects' NDVI change, None if neither

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_feature(self) -> dict[str, Any]:
        props = {k: v for k, v in self.__dict__.items() if k != "geometry"}
        props["bbox_pixels"] = list(self.bbox_pixels)
        props["scenes"] = list(self.scenes)
        props["clear_scenes"] = list(self.clear_scenes)
        props["history"] = [dict(h) for h in self.history]
        geom = self.geometry or {"type": "Point", "coordinates": [self.lon, self.lat]}
        return {"type": "Feature", "id": self.id, "geometry": geom, "properties": props}

    @classmethod
    def from_feature(cls, feature: dict[str, Any]) -> "Alert":
        """An alert from a feed feature; feeds written before the lifecycle (status ``open``)
        read as ``first``/``provisional``/``confirmed`` by their number of observations."""
        known = set(cls.__dataclass_fields__)
        p = {k: v for k, v in dict(feature["properties"]).items() if k in known}
        p["bbox_pixels"] = tuple(p["bbox_pixels"])
        p["scenes"] = tuple(p.get("scenes", ()))
        p["clear_scenes"] = tuple(p.get("clear_scenes", ()))
        p["history"] = tuple(dict(h) for h in p.get("history", ()))
        p["geometry"] = feature.get("geometry") if (feature.get("geometry") or {}).get("type") != "Point" else None
        if p.get("status") == "open":
            n = int(p.get("n_observations", 1))
            p["status"] = "confirmed" if n >= 3 else "provisional" if n >= 2 else "first"
        if p.get("status") not in ALERT_STATUSES:
            raise ValueError(f"alert {p.get('id')!r}: status got {p.get('status')!r}; expected one of {ALERT_STATUSES!r}")
        return cls(**p)
