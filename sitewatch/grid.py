"""The site grid: the one raster grid (CRS, transform, shape) every scene of a site is put on.

A site is described by a geometry in lon/lat and a resolution in metres; its grid is the
bounding box of that geometry in the site CRS (default: the UTM zone of the centroid),
snapped outwards to whole pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer


def utm_crs_for(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone CRS containing (lon, lat)."""
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise ValueError(f"lon/lat got {(lon, lat)!r}; expected lon in [-180, 180], lat in [-90, 90]")
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    epsg = (32600 if lat >= 0 else 32700) + zone
    return CRS.from_epsg(epsg)


@dataclass(frozen=True)
class SiteGrid:
    """A north-up raster grid: ``crs`` (as an 'EPSG:n' or WKT string), origin at the top-left
    corner (``x0``, ``y0``), square pixels of ``resolution`` metres, ``height`` x ``width``."""

    crs: str
    x0: float
    y0: float
    resolution: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.resolution > 0):
            raise ValueError(f"grid resolution got {self.resolution!r}; expected a positive number of metres")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"grid shape got {(self.height, self.width)!r}; expected at least 1 x 1 pixels")
        CRS.from_user_input(self.crs)  # raises a clear pyproj error for an unknown CRS

    @classmethod
    def from_bounds(cls, bounds: tuple[float, float, float, float], resolution: float, crs: str) -> "SiteGrid":
        """Grid covering projected ``bounds`` (left, bottom, right, top). Bounds that already
        span whole pixels (a scene's or another grid's own bounds) are kept exactly; others are
        snapped outwards to multiples of ``resolution``."""
        left, bottom, right, top = bounds
        if not (right > left and top > bottom):
            raise ValueError(f"bounds got {bounds!r}; expected (left, bottom, right, top) with right > left, top > bottom")
        nx, ny = (right - left) / resolution, (top - bottom) / resolution
        if abs(nx - round(nx)) < 1e-9 and abs(ny - round(ny)) < 1e-9:
            return cls(crs=crs, x0=float(left), y0=float(top), resolution=float(resolution), width=int(round(nx)), height=int(round(ny)))
        x0 = float(math.floor(left / resolution) * resolution)
        y0 = float(math.ceil(top / resolution) * resolution)
        width = int(math.ceil((right - x0) / resolution - 1e-9))
        height = int(math.ceil((y0 - bottom) / resolution - 1e-9))
        return cls(crs=crs, x0=x0, y0=y0, resolution=float(resolution), width=width, height=height)

    @classmethod
    def centred(cls, lon: float, lat: float, width: int, height: int, resolution: float, crs: str | None = None) -> "SiteGrid":
        """A ``height`` x ``width`` grid centred on (lon, lat)."""
        crs_obj = CRS.from_user_input(crs) if crs else utm_crs_for(lon, lat)
        x, y = Transformer.from_crs(4326, crs_obj, always_xy=True).transform(lon, lat)
        cx = round(x / resolution) * resolution
        cy = round(y / resolution) * resolution
        return cls(
            crs=crs or f"EPSG:{crs_obj.to_epsg()}",
            x0=cx - width // 2 * resolution,
            y0=cy + height // 2 * resolution,
            resolution=float(resolution),
            width=int(width),
            height=int(height),
        )

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0.0, self.x0, 0.0, -self.resolution, self.y0)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0 - self.height * self.resolution, self.x0 + self.width * self.resolution, self.y0)

    @property
    def pixel_area_m2(self) -> float:
        return self.resolution * self.resolution

    def coords(self) -> dict[str, np.ndarray]:
        """Pixel-centre coordinates ``{"y": ..., "x": ...}`` (y descending: row 0 is north)."""
        r = self.resolution
        x = self.x0 + r * (np.arange(self.width) + 0.5)
        y = self.y0 - r * (np.arange(self.height) + 0.5)
        return {"y": y, "x": x}

    def to_lonlat(self, x: np.ndarray | float, y: np.ndarray | float):
        """Projected coordinates -> (lon, lat)."""
        return Transformer.from_crs(self.crs, 4326, always_xy=True).transform(x, y)

    def pixel_to_lonlat(self, row: float, col: float) -> tuple[float, float]:
        """Fractional pixel position (row, col of the pixel *centre* at +0.5) -> (lon, lat)."""
        x, y = self.transform @ (col, row)
        lon, lat = self.to_lonlat(x, y)
        return float(lon), float(lat)
