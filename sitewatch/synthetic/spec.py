"""Constants, land-cover spectra and the public dataclasses of the synthetic series: :class:`SyntheticSpec`, :class:`ChangeEvent`, :class:`SyntheticScene`."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from datetime import date
from enum import IntEnum

import numpy as np
from pyproj import CRS



BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")  # STAC eo common names
NODATA = 0  # uint16 nodata value

#: Cloud truth threshold: a pixel is cloud where the blended cloud opacity is at least this.
#: Shadow truth uses the same threshold on the opacity of the cloud casting the shadow.
CLOUD_OPACITY_THRESHOLD = 0.1

EVENT_KINDS = ("aircraft_arrival", "aircraft_departure", "vehicles_removed", "field_cleared", "building_appeared")
MIN_SITE_PIXELS = 192
MIN_DATES = 12
CLEAR_LEAD_DATES = 4  # the first dates are (nearly) clear so a baseline exists
FIRST_EVENT_INDEX = 5  # no event before this date index
DEPARTURE_GAP = 6  # aircraft leave at least this many dates after they arrive

Box = tuple[int, int, int, int]  # row0, col0, row1, col1 (end exclusive)


class LandCover(IntEnum):
    """Static land-cover classes of the synthetic landscape (``SyntheticSeries.land_cover``)."""

    WATER = 0
    SAND = 1
    SOIL = 2  # bare soil, dry grass, fallow parcels, dirt tracks
    CROP = 3  # crop parcels whose vegetation fraction follows a phenology curve
    ORCHARD = 4
    CONCRETE = 5  # runway, taxiways, apron, pads
    ROAD = 6  # asphalt
    BUILDING = 7
    AIRCRAFT = 8  # permanently parked small aircraft


# ---------------------------------------------------------------- spectra (reflectance, BANDS order)

_WATER = (0.055, 0.045, 0.028, 0.015, 0.012, 0.008)
_SAND = (0.20, 0.25, 0.30, 0.34, 0.40, 0.34)
_SOIL = (0.12, 0.16, 0.20, 0.26, 0.32, 0.28)
_VEGETATION = (0.04, 0.08, 0.05, 0.35, 0.20, 0.10)
_CONCRETE = (0.25, 0.27, 0.28, 0.30, 0.31, 0.28)
_ASPHALT = (0.08, 0.09, 0.10, 0.12, 0.14, 0.13)
_ROOFS = (
    (0.30, 0.32, 0.34, 0.36, 0.38, 0.34),  # light concrete / metal
    (0.10, 0.12, 0.20, 0.26, 0.32, 0.28),  # red tiles
    (0.36, 0.38, 0.39, 0.41, 0.41, 0.37),  # white
)
_SMALL_AIRCRAFT = (0.17, 0.18, 0.19, 0.21, 0.22, 0.20)  # grey combat aircraft
_TRANSPORT_AIRCRAFT = (0.54, 0.54, 0.53, 0.51, 0.46, 0.40)  # white/light grey top surfaces
_VEHICLE = (0.04, 0.06, 0.05, 0.10, 0.09, 0.06)  # dark green paint
_NEW_ROOF = (0.40, 0.42, 0.43, 0.45, 0.44, 0.40)
_CLOUD_SHAPE = (1.0, 0.99, 0.98, 0.96, 0.82, 0.68)  # relative to the visible cloud level
_SHADOW_BAND_FACTOR = (1.12, 1.06, 1.0, 0.93, 0.9, 0.9)  # multiplies the per-date shadow factor k
_NOISE_BAND_FACTOR = (1.0, 0.95, 0.95, 1.0, 1.1, 1.15)

_CLASS_SPECTRA = np.array(
    [_WATER, _SAND, _SOIL, _SOIL, _SOIL, _CONCRETE, _ASPHALT, _ROOFS[0], _SMALL_AIRCRAFT], dtype=np.float32
)  # background ("A") endmember per LandCover; crops and orchards mix in vegetation

# Random-stream tags: scene i uses default_rng([seed, 0, i]); the others [seed, 1, tag].
_LAYOUT_STREAM = 1
_PLAN_STREAM = 2


# ---------------------------------------------------------------- public dataclasses

def _require_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"synthetic spec {name} got {value!r}; expected an integer >= {minimum}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"synthetic spec {name} got {value!r}; expected an integer >= {minimum}{upper}")


def _require_real(name: str, value: object, lo: float, hi: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"synthetic spec {name} got {value!r}; expected {what}")
    if not (math.isfinite(float(value)) and lo <= float(value) <= hi):
        raise ValueError(f"synthetic spec {name} got {value!r}; expected {what}")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Sizes in pixels, ``resolution`` in metres (of ``crs``).

    ``cloudy_fraction``: the fraction of all dates that carry clouds (3-60 % of the site, or
    > 85 % on the one or two mostly cloudy dates), drawn from the dates after the first four;
    when it is above 0, one of dates 1-3 also gets a small (1-3 %) cloud. 0 gives no clouds.
    """

    width: int = 1024
    height: int = 1024
    resolution: float = 10.0
    n_dates: int = 24
    start: datetime.date = date(2026, 1, 4)
    interval_days: int = 10  # nominal revisit; dates jitter by up to +-2 days with the seed
    lon: float = 35.95  # demo site: Khmeimim air base, Syria
    lat: float = 35.40
    crs: str = "EPSG:32636"
    seed: int = 0
    cloudy_fraction: float = 0.4

    def __post_init__(self) -> None:
        _require_int("width", self.width, MIN_SITE_PIXELS, 16384)
        _require_int("height", self.height, MIN_SITE_PIXELS, 16384)
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(float(self.resolution)) and float(self.resolution) > 0):
            raise ValueError(f"synthetic spec resolution got {self.resolution!r}; expected a positive number of metres")
        _require_int("n_dates", self.n_dates, MIN_DATES, 5000)
        if not isinstance(self.start, date) or isinstance(self.start, datetime.datetime):
            raise ValueError(f"synthetic spec start got {self.start!r}; expected a datetime.date")
        _require_int("interval_days", self.interval_days, 1, 366)
        _require_real("lon", self.lon, -180.0, 180.0, "a longitude in [-180, 180] degrees")
        _require_real("lat", self.lat, -80.0, 80.0, "a latitude in [-80, 80] degrees")
        if not isinstance(self.crs, str) or not self.crs:
            raise ValueError(f"synthetic spec crs got {self.crs!r}; expected a projected CRS string such as 'EPSG:32636'")
        try:
            crs = CRS.from_user_input(self.crs)
        except Exception as exc:  # pyproj.exceptions.CRSError
            raise ValueError(f"synthetic spec crs got {self.crs!r}; expected a CRS pyproj understands ({exc})") from None
        if not crs.is_projected:
            raise ValueError(f"synthetic spec crs got {self.crs!r}; expected a projected CRS in metres (e.g. UTM)")
        _require_int("seed", self.seed, 0, 2**63 - 1)
        _require_real("cloudy_fraction", self.cloudy_fraction, 0.0, 1.0, "a fraction in [0, 1]")


@dataclass(frozen=True)
class ChangeEvent:
    """A known surface change. ``bbox`` (row0, col0, row1, col1; end exclusive) bounds the
    changed footprint, which is the union of the rectangles in ``parts``; ``direction`` is in
    visible / total brightness terms. ``object_id`` links the arrival and departure of the same
    aircraft."""

    kind: str
    date_index: int
    date: datetime.date
    bbox: Box
    direction: str
    description: str
    parts: tuple[Box, ...] = ()
    object_id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"change event kind got {self.kind!r}; expected one of {EVENT_KINDS!r}")
        if self.direction not in ("brighter", "darker"):
            raise ValueError(f"change event direction got {self.direction!r}; expected 'brighter' or 'darker'")
        r0, c0, r1, c1 = self.bbox
        if not (r1 > r0 and c1 > c0):
            raise ValueError(f"change event bbox got {self.bbox!r}; expected (row0, col0, row1, col1) with row1 > row0, col1 > col0")

    @property
    def boxes(self) -> tuple[Box, ...]:
        """The footprint rectangles (``parts``, or the bbox when ``parts`` is empty)."""
        return self.parts or (self.bbox,)

    @property
    def area_px(self) -> int:
        """Number of changed pixels (the parts do not overlap)."""
        return sum((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in self.boxes)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The changed footprint as a boolean ``shape`` array."""
        out = np.zeros(shape, dtype=bool)
        for r0, c0, r1, c1 in self.boxes:
            out[r0:r1, c0:c1] = True
        return out


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """One synthetic acquisition with its truth. Arrays are fresh copies owned by the caller."""

    index: int
    scene_id: str
    datetime: datetime.datetime  # timezone-aware UTC
    bands: np.ndarray  # (6, H, W) uint16 reflectance x 10000, NODATA where not valid
    valid: np.ndarray  # (H, W) bool
    cloud: np.ndarray  # (H, W) bool: opacity >= CLOUD_OPACITY_THRESHOLD, valid only
    shadow: np.ndarray  # (H, W) bool: shadow of such cloud, not under cloud, valid only
    change: np.ndarray  # (H, W) bool: footprints of the events starting on this date
    surface: np.ndarray  # (6, H, W) uint16 surface before shadows, clouds, radiometry and nodata
    sun_azimuth: float  # degrees clockwise from north
    sun_elevation: float  # degrees
    cloud_fraction: float  # of valid pixels

    @property
    def date(self) -> datetime.date:
        return self.datetime.date()

    def band(self, name: str) -> np.ndarray:
        """One band (a view into ``bands``) by its eo common name."""
        if name not in BANDS:
            raise ValueError(f"band name got {name!r}; expected one of {BANDS!r}")
        return self.bands[BANDS.index(name)]
