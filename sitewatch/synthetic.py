"""Seeded synthetic time series of one site: six-band surface reflectance scenes with clouds,
cloud shadows, swath-edge nodata and known surface changes, plus pixel-exact truth.

Used by the demo, the tests and the benchmarks. Everything is pure numpy (no prefect, dask or
xarray) and deterministic: the same :class:`SyntheticSpec` gives byte-identical arrays, and
scene ``i`` is built from its own random streams, so it does not depend on which scenes were
built before it.

The model
---------
**Landscape** (built once per series and cached; the layout is seeded by ``spec.seed`` too):
the Mediterranean sea along the west edge (with a sand beach and turbid near-shore water), a
patchwork of rectangular field parcels (crops with their own phenology, fallow soil, olive
orchards) separated by dirt tracks, a village with streets and small roofs, a road, and an air
base: a long concrete runway (30 m wide, tilted ~5 degrees like a 17/35 runway), a parallel
taxiway with connectors, an apron with parked small aircraft, hangars, a vehicle park and dry
grass inside a perimeter track. Each class has a plausible reflectance spectrum per band
(``BANDS`` order; e.g. vegetation 0.04/0.08/0.05/0.35/0.20/0.10, bare soil
0.12/0.16/0.20/0.26/0.32/0.28, concrete ~0.25-0.31, water nir/swir ~0.01), modulated by
smoothed low-frequency noise, fine texture and per-parcel brightness.

**Surface on a date** = the landscape, with crop parcels mixing a soil and a vegetation
endmember by a vegetation fraction ``f(day of year)`` (a Gaussian bump per parcel, width 55-80
days, so the drift between consecutive dates is gentle), plus the *change objects* present on
that date. Only crop pixels drift; every other pixel (water, soil, concrete, roofs, ...) has
exactly the same surface on every date unless an event changes it.

**Change events** (:class:`ChangeEvent`), all between date index 5 and the end, each with a
rectangular footprint (``parts``) fully inside the grid:

* ``aircraft_arrival`` -- two or three large transport aircraft (~70 m, e.g. An-124: 7 x 7 px
  at 10 m, at least 3 x 3 px; white tops ~0.5 reflectance over ~0.27 concrete) appear on the
  apron, one event per aircraft so each bbox is tight (aircraft of one group share a date,
  except that a third one may come a date later). They stay in the surface of the following
  dates;
* ``aircraft_departure`` -- the same aircraft leave together at least 6 dates later;
* ``vehicles_removed`` -- a group of six dark green vehicles (~20 x 30 m each) parked on a
  concrete pad since the first date disappear (one event; ``parts`` lists the six vehicles,
  ``bbox`` is their union bounding box and includes the gaps between them, which do not
  change);
* ``field_cleared`` -- one well-vegetated field (~400 x 250 m; a perennial forage crop with a
  stable, dense canopy, f ~0.8) becomes light bare soil: NIR drops, red and SWIR rise;
* ``building_appeared`` -- a new bright roof (~80 x 120 m) on bare soil inside the base.

``SyntheticScene.change`` is the union of the ``parts`` of the events starting on that date;
these are exactly the pixels whose surface differs from the previous date's other than by the
slow crop drift.

**Observation** of the surface on a date, in this order: cloud shadows darken the surface
(multiplier ``1 - s * (1 - k_band)`` with shadow strength ``s = min(1, 2 * opacity of the
casting cloud)`` and ``k`` 0.35-0.55 per date, a little darker in nir/swir than blue); clouds
are alpha-blended over it (``obs = (1 - a) * obs + a * cloud``, cloud spectrum flat/white,
0.45-0.8 in the visible and lower in the SWIR); then a per-band gain (0.93-1.07) and offset
(+-150 DN) and Gaussian sensor noise (sigma 50-80 DN) are applied; values are rounded to
uint16 reflectance x 10000, clipped to >= 1 so that ``NODATA`` (0) only marks pixels outside
the swath.

**Clouds**: thresholded fractal value noise. Thick clouds have opacity rising from 0 at their
edge to 1 within a short ramp; thin clouds (haze/cirrus, some dates have only these) have a
maximum opacity of 0.15-0.5. The cloud truth is ``opacity >= CLOUD_OPACITY_THRESHOLD`` (0.1)
on valid pixels. About ``cloudy_fraction`` of the dates are cloudy (3-60 % of the site), one
or two of them mostly cloudy (> 85 %); the first four dates are clear except for at most one
small (1-3 %) cloud. The shadow of the opacity field is cast ``h * tan(sun zenith) /
resolution`` pixels away from the sun (cloud height ``h`` 800-2500 m per date, sun position
from the date, overpass time and site lon/lat with the NOAA/Spencer approximation); shadow
truth = the shifted cloud truth that is not cloud itself. The cloud field is seamlessly
periodic over the site, so the clouds shading the site from beyond an edge are those leaving
it at the opposite edge (the shadowed fraction follows the cloud fraction). On an event date
the cloud field is cleared (with a soft edge) around the event footprints and around the
places whose clouds would shade them, so every event footprint is cloud- and shadow-free on
its date (clouds elsewhere are fine; mostly cloudy dates never carry events).

**Nodata**: on ~15 % of the dates (never the first four) a diagonal swath edge cuts off one
corner of the site (a triangle of up to 25 % of it); it never covers the footprint of an
event starting that date. ``bands`` are ``NODATA`` there in every band; all truth masks are
False there.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, replace
from datetime import date
from enum import IntEnum
from typing import Iterator

import numpy as np
from pyproj import CRS

from .grid import SiteGrid
from .sun import solar_position  # noqa: F401  (re-exported: tests and benchmarks import it from here)

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


# ---------------------------------------------------------------- noise fields

def _smoothstep_coords(n: int, cell: float) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(n, dtype=np.float64) + 0.5) / cell
    i = np.floor(t).astype(np.intp)
    f = t - i
    return i, (f * f * (3.0 - 2.0 * f)).astype(np.float32)


def _eval_lattice(vals: np.ndarray, cell_r: float, cell_c: float, h: int, w: int) -> np.ndarray:
    """Smoothstep value noise of ``vals`` (nodes every ``cell_r`` x ``cell_c`` px, node (0, 0)
    at the grid's top-left corner) on the ``h`` x ``w`` grid. Separable: interpolate along
    columns on the few lattice rows, then along rows (a few full-array passes, float32)."""
    iy, fy = _smoothstep_coords(h, cell_r)
    ix, fx = _smoothstep_coords(w, cell_c)
    a = vals[:, ix]
    a += (vals[:, ix + 1] - a) * fx
    d = a[1:] - a[:-1]
    out = a[iy]
    out += d[iy] * fy[:, None]
    return out


def _octaves(cell0: float, n: int, min_cell: float = 2.0) -> list[float]:
    cells = [cell0 / 2**k for k in range(n) if cell0 / 2**k >= min_cell]
    return cells or [max(cell0, min_cell)]


def _field(rng: np.random.Generator, shape: tuple[int, int], cell0: float, n_octaves: int,
           persistence: float = 0.55, periodic: bool = False) -> np.ndarray:
    """A float32 fractal value-noise field on the grid (octave ``k`` has cells of ``cell0 / 2**k``
    px and amplitude ``persistence**k``), normalised to ~zero mean and unit std. ``periodic``
    makes it seamless with period (H, W): cells are adjusted so a whole number fits."""
    h, w = shape

    def octave(cell: float) -> np.ndarray:
        if periodic:
            nr, nc = max(2, round(h / cell)), max(2, round(w / cell))
            vals = np.pad(rng.standard_normal((nr, nc), dtype=np.float32), ((0, 1), (0, 1)), mode="wrap")
            return _eval_lattice(vals, h / nr, w / nc, h, w)
        nr, nc = int(math.ceil(h / cell)) + 2, int(math.ceil(w / cell)) + 2
        return _eval_lattice(rng.standard_normal((nr, nc), dtype=np.float32), cell, cell, h, w)

    cells = _octaves(cell0, n_octaves)
    total = octave(cells[0])
    for k, cell in enumerate(cells[1:], start=1):
        layer = octave(cell)
        layer *= np.float32(persistence**k)
        total += layer
    sub = total[::4, ::4]
    total -= np.float32(sub.mean())
    total *= np.float32(1.0 / max(float(sub.std()), 1e-6))
    return total


def _noise_1d(rng: np.random.Generator, n: int, cell: float) -> np.ndarray:
    k = int(math.ceil(n / cell)) + 2
    knots = rng.uniform(-1.0, 1.0, k)
    t = (np.arange(n) + 0.5) / cell
    i = np.floor(t).astype(np.intp)
    f = t - i
    f = f * f * (3 - 2 * f)
    return knots[i] + (knots[i + 1] - knots[i]) * f


# ---------------------------------------------------------------- landscape layout

@dataclass(frozen=True, eq=False)
class _Transient:
    """A change object painted into the surface on dates ``start <= i < end``."""

    name: str
    boxes: tuple[Box, ...]
    patches: tuple[np.ndarray, ...]  # (6, h, w) float32 reflectance per box
    start: int
    end: int


@dataclass(frozen=True, eq=False)
class _Layout:
    cover: np.ndarray  # (H, W) uint8 LandCover
    crop_id: np.ndarray  # (H, W) int32 index into crop_params; n_crops where not a crop
    base: np.ndarray  # (6, H, W) float32 surface with crop vegetation fraction 0
    delta: np.ndarray  # (6, H, W) float32 vegetation minus soil endmember on crop pixels, else 0
    crop_params: np.ndarray  # (n_crops, 4) float64: peak day of year, width days, fmin, fmax
    cleared_crop: int
    cleared_box: Box
    aircraft_boxes: tuple[Box, ...]
    aircraft_patches: tuple[np.ndarray, ...]
    vehicle_boxes: tuple[Box, ...]
    vehicle_patches: tuple[np.ndarray, ...]
    building_box: Box
    building_patch: np.ndarray


class _Canvas:
    """Mutable per-pixel maps the layout is painted into."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.cover = np.full(shape, LandCover.SOIL, dtype=np.uint8)
        self.crop = np.full(shape, -1, dtype=np.int32)
        self.fveg = np.zeros(shape, dtype=np.float32)  # static vegetation fraction
        self.bright = np.ones(shape, dtype=np.float32)  # background brightness factor
        self.vigor = np.ones(shape, dtype=np.float32)  # vegetation brightness factor
        self.overrides: list[tuple[Box, LandCover, tuple[float, ...]]] = []  # fixed spectra (roofs, aircraft)

    def rect(self, box: Box, cover: LandCover, fveg: float = 0.0, bright: float = 1.0, crop: int = -1, vigor: float = 1.0) -> None:
        h, w = self.shape
        r0, c0, r1, c1 = max(box[0], 0), max(box[1], 0), min(box[2], h), min(box[3], w)
        if r1 <= r0 or c1 <= c0:
            return
        self.cover[r0:r1, c0:c1] = cover
        self.crop[r0:r1, c0:c1] = crop
        self.fveg[r0:r1, c0:c1] = fveg
        self.bright[r0:r1, c0:c1] = bright
        self.vigor[r0:r1, c0:c1] = vigor

    def mask(self, mask: np.ndarray, window: Box, cover: LandCover, bright: float = 1.0) -> None:
        r0, c0, r1, c1 = window
        for arr, value in ((self.cover, cover), (self.crop, -1), (self.fveg, 0.0), (self.bright, bright), (self.vigor, 1.0)):
            arr[r0:r1, c0:c1][mask] = value

    def fixed(self, box: Box, cover: LandCover, spectrum: tuple[float, ...]) -> None:
        self.rect(box, cover)
        self.overrides.append((box, cover, spectrum))


def _box_cover(cover: np.ndarray, box: Box) -> np.ndarray:
    return cover[box[0]:box[2], box[1]:box[3]]


def _layout_error(spec: SyntheticSpec, what: str) -> ValueError:
    return ValueError(
        f"synthetic spec width/height/resolution got {(spec.width, spec.height, spec.resolution)!r}; "
        f"expected a site where the synthetic layout fits ({what})"
    )


def _build_layout(spec: SyntheticSpec) -> _Layout:
    """Paint the static landscape and place the change objects (pixel units, row 0 = north)."""
    rng = np.random.default_rng([spec.seed, 1, _LAYOUT_STREAM])
    H, W, res = spec.height, spec.width, float(spec.resolution)
    S = min(H, W)

    def px(metres: float, lo: int, hi: int) -> int:
        return int(min(max(round(metres / res), lo), max(lo, hi)))

    cv = _Canvas((H, W))
    natural = _field(rng, (H, W), S / 5, 3)
    cv.fveg[:] = np.clip(0.12 + 0.06 * natural, 0.02, 0.25)  # dry grass / scrub

    # --- sizes of the air base and of the change objects
    ac = px(70, 3, S // 24)  # transport aircraft footprint (square)
    gap = max(1, round(ac / 2))
    gap2 = max(2, gap)
    n_ac = int(rng.integers(2, 4))
    rw_w, tx_w = px(30, 1, S // 64), px(20, 1, S // 96)
    tx_off = max(px(150, 1, S // 10), rw_w + tx_w + 3)
    sa = px(20, 1, max(1, ac // 3))  # small aircraft
    apron_rows = max(px(600, 1, S // 3), n_ac * ac + (n_ac + 1) * gap)
    apron_cols = max(px(300, 1, S // 6), 2 * ac + 3 * gap)
    hangar_w, hangar_h = px(40, 2, S // 40), px(60, 2, S // 30)
    vr, vc = px(20, 1, S // 96), px(30, 2, S // 64)
    veh_rows, veh_cols = 2 * vr + 1, 3 * vc + 2
    pad_rows, pad_cols = veh_rows + 2 * gap2, veh_cols + 2 * gap2
    bh, bw = px(80, 4, S // 16), px(120, 6, S // 12)
    fr, fc = px(400, 10, S // 5), px(250, 8, S // 8)
    margin = px(100, 2, S // 40)
    tilt = math.tan(math.radians(float(rng.uniform(3.5, 6.0))))
    tilt_margin = int(math.ceil(tilt * apron_rows / 2)) + 1

    # columns inside the base zone, relative to its west edge
    rw_c = margin + rw_w / 2
    tx_c = rw_c + tx_off
    apron_c0_rel = int(math.ceil(tx_c + tx_w / 2)) + 1 + tilt_margin
    apron_c1_rel = apron_c0_rel + apron_cols
    hangar_c0_rel = apron_c1_rel + gap2
    zone_w = hangar_c0_rel + hangar_w + margin + 1
    need_rows = apron_rows + 2 * (2 * gap2 + max(pad_rows, bh)) + 2 * margin + 2
    zone_h = min(round(0.84 * H), max(px(3000, 1, H), need_rows))
    if need_rows > zone_h or max(pad_cols, bw + gap2) > apron_cols + hangar_w:
        raise _layout_error(spec, "the air base does not fit vertically")

    coast = max(6, round(0.08 * W))
    coast_amp = max(2.0, 0.02 * W)
    beach = px(30, 1, 3)
    coast_col = np.round(coast + coast_amp * _noise_1d(rng, H, max(8.0, S / 6))).astype(np.intp)
    coast_max = int(coast_col.max())

    zone_c1 = min(W - fc - 8, (W + zone_w) // 2 + W // 10)
    zone_c0 = zone_c1 - zone_w
    if zone_c0 < coast_max + 6:
        raise _layout_error(spec, "the air base does not fit between the sea and the field east of it")
    zone_r0 = (H - zone_h) // 2
    zone_r1 = zone_r0 + zone_h
    rc = (zone_r0 + zone_r1) / 2.0

    # --- field parcels everywhere (later features paint over them)
    crop_params: list[tuple[float, float, float, float]] = []
    r = 0
    while r < H:
        r1 = min(H, r + int(rng.integers(px(150, 3, H), px(450, 6, H) + 1)))
        c = 0
        while c < W:
            c1 = min(W, c + int(rng.integers(px(150, 3, W), px(600, 8, W) + 1)))
            kind = rng.choice(3, p=[0.6, 0.25, 0.15])
            box = (r, c, r1, c1)
            if kind == 0:
                winter = rng.random() < 0.55
                peak = rng.uniform(70, 115) if winter else rng.uniform(170, 230)
                fmin = rng.uniform(0.03, 0.12)
                crop_params.append((peak, rng.uniform(55, 80), fmin, min(0.88, fmin + rng.uniform(0.45, 0.75))))
                cv.rect(box, LandCover.CROP, bright=rng.uniform(0.85, 1.1), crop=len(crop_params) - 1, vigor=rng.uniform(0.9, 1.1))
            elif kind == 1:
                cv.rect(box, LandCover.SOIL, fveg=rng.uniform(0.0, 0.12), bright=rng.uniform(0.85, 1.15))
            else:
                cv.rect(box, LandCover.ORCHARD, fveg=rng.uniform(0.28, 0.45), bright=rng.uniform(0.9, 1.05))
            if rng.random() < 0.6:  # dirt tracks along the south and east edges of the parcel
                cv.rect((r1 - 1, c, r1, c1), LandCover.SOIL, fveg=0.03, bright=0.92)
                cv.rect((r, c1 - 1, r1, c1), LandCover.SOIL, fveg=0.03, bright=0.92)
            c = c1
        r = r1

    # --- an east-west road in the north (it ends at the base perimeter)
    road_w = px(8, 1, 2)
    road_r = round(0.2 * H)
    cv.rect((road_r, 0, road_r + road_w, W), LandCover.ROAD)

    # --- village between the coast and the base
    v_h = min(round(0.28 * H), px(1200, 12, H))
    v_r0 = round(0.5 * H - v_h / 2)
    v_r1 = v_r0 + v_h
    v_c0 = coast_max + 4
    v_c1 = min(zone_c0 - 4, v_c0 + px(1600, 12, W))
    if v_c1 - v_c0 >= 12:
        cv.rect((v_r0, v_c0, v_r1, v_c1), LandCover.SOIL, fveg=0.2, bright=0.95)
        block = px(120, 6, S // 8)
        for rr in range(v_r0, v_r1, block):
            cv.rect((rr, v_c0, rr + 1, v_c1), LandCover.ROAD)
        for cc in range(v_c0, v_c1, block):
            cv.rect((v_r0, cc, v_r1, cc + 1), LandCover.ROAD)
        n_b = int((v_r1 - v_r0) * (v_c1 - v_c0) * 0.3 / max(1, px(20, 1, 3)) ** 2 / 3)
        for _ in range(n_b):
            h_b, w_b = int(rng.integers(1, px(30, 1, 3) + 1)), int(rng.integers(1, px(30, 1, 3) + 1))
            br = int(rng.integers(v_r0 + 1, max(v_r0 + 2, v_r1 - h_b)))
            bc = int(rng.integers(v_c0 + 1, max(v_c0 + 2, v_c1 - w_b)))
            roof = _ROOFS[int(rng.choice(3, p=[0.45, 0.35, 0.2]))]
            k = rng.uniform(0.9, 1.1)
            cv.fixed((br, bc, br + h_b, bc + w_b), LandCover.BUILDING, tuple(k * v for v in roof))

    # --- the air base
    cv.rect((zone_r0, zone_c0, zone_r1, zone_c1), LandCover.SOIL, fveg=0.08, bright=1.05)
    for box in ((zone_r0, zone_c0, zone_r0 + 1, zone_c1), (zone_r1 - 1, zone_c0, zone_r1, zone_c1),
                (zone_r0, zone_c0, zone_r1, zone_c0 + 1), (zone_r0, zone_c1 - 1, zone_r1, zone_c1)):
        cv.rect(box, LandCover.SOIL, fveg=0.02, bright=0.8)  # perimeter track
    rw_r0, rw_r1 = zone_r0 + margin, zone_r1 - margin

    def centreline(rows: np.ndarray, col_rel: float) -> np.ndarray:
        return zone_c0 + col_rel + tilt * (rows + 0.5 - rc)

    def strip(r0: int, r1: int, col_rel: float, width: int, bright: float) -> None:
        rows = np.arange(r0, r1)
        lo = int(math.floor(centreline(rows, col_rel).min() - width)) - 1
        hi = int(math.ceil(centreline(rows, col_rel).max() + width)) + 2
        cols = np.arange(lo, hi) + 0.5
        dist = np.abs(cols[None, :] - centreline(rows, col_rel)[:, None]) / math.sqrt(1 + tilt * tilt)
        cv.mask(dist <= width / 2.0, (r0, lo, r1, hi), LandCover.CONCRETE, bright)

    strip(rw_r0, rw_r1, rw_c, rw_w, 0.95)  # runway
    tx_r0, tx_r1 = rw_r0 + 2 * margin, rw_r1 - 2 * margin
    strip(tx_r0, tx_r1, tx_c, tx_w, 0.9)  # parallel taxiway
    for k in range(4):  # connectors
        rr = tx_r0 + round(k * (tx_r1 - tx_r0 - tx_w) / 3)
        c_lo = int(centreline(np.array([rr]), rw_c)[0])
        c_hi = int(centreline(np.array([rr]), tx_c)[0]) + 1
        cv.rect((rr, c_lo, rr + tx_w, c_hi), LandCover.CONCRETE, bright=0.9)

    ar0 = int(round(rc - apron_rows / 2 + rng.integers(-2, 3)))
    ar1 = ar0 + apron_rows
    ac0, ac1 = zone_c0 + apron_c0_rel, zone_c0 + apron_c1_rel
    rows = np.arange(ar0, ar1)
    tx_edge = np.floor(centreline(rows, tx_c)).astype(np.intp)
    apron_mask = np.arange(tx_edge.min(), ac1)[None, :] >= tx_edge[:, None]
    cv.mask(apron_mask, (ar0, int(tx_edge.min()), ar1, ac1), LandCover.CONCRETE, 1.0)

    # transient transport-aircraft spots in the west column, small aircraft in the east column
    aircraft_boxes = tuple(
        (ar0 + gap + k * (ac + gap), ac0 + gap, ar0 + gap + k * (ac + gap) + ac, ac0 + gap + ac) for k in range(n_ac)
    )
    sc0 = ac1 - gap - sa
    for rr in range(ar0 + gap, ar1 - sa - gap + 1, sa + max(1, gap)):
        if rng.random() < 0.6:
            cv.fixed((rr, sc0, rr + sa, sc0 + sa), LandCover.AIRCRAFT, tuple(rng.uniform(0.9, 1.1) * v for v in _SMALL_AIRCRAFT))
    # hangars east of the apron
    hc0 = zone_c0 + hangar_c0_rel
    for rr in range(ar0, ar1 - hangar_h + 1, hangar_h + gap2):
        cv.fixed((rr, hc0, rr + hangar_h, hc0 + hangar_w), LandCover.BUILDING, tuple(rng.uniform(0.95, 1.05) * v for v in _ROOFS[0]))
    # barracks: small roofs north and south of the hangars
    for rr in (zone_r0 + margin + 1, ar1 + gap2, zone_r1 - margin - hangar_h - 1):
        if zone_r0 < rr and rr + hangar_h < zone_r1 and not (ar0 - gap2 <= rr < ar1):
            for k in range(2):
                cc = hc0 + k * (hangar_w // 2 + 1)
                box = (rr, cc, rr + max(1, hangar_h // 2), cc + max(1, hangar_w // 2))
                if box[3] < zone_c1 - 1:
                    cv.fixed(box, LandCover.BUILDING, _ROOFS[int(rng.integers(0, 3))])
    # vehicle pad (concrete) south of the apron with six vehicles in two rows of three
    pr0 = ar1 + gap2
    cv.rect((pr0, ac0, pr0 + pad_rows, ac0 + pad_cols), LandCover.CONCRETE, bright=0.97)
    vehicle_boxes = tuple(
        (pr0 + gap2 + i * (vr + 1), ac0 + gap2 + j * (vc + 1), pr0 + gap2 + i * (vr + 1) + vr, ac0 + gap2 + j * (vc + 1) + vc)
        for i in range(2) for j in range(3)
    )
    # site of the new building: bare soil north of the apron
    building_box = (ar0 - gap2 - bh, ac0 + gap2, ar0 - gap2, ac0 + gap2 + bw)

    # --- the field that will be cleared, east of the base, with a track around it
    fr0 = min(round(0.55 * H), H - fr - 3)
    fc0 = zone_c1 + 3 + max(0, (W - zone_c1 - 5 - fc) // 2)
    cleared_box = (fr0, fc0, fr0 + fr, fc0 + fc)
    cv.rect((fr0 - 1, fc0 - 1, fr0 + fr + 1, fc0 + fc + 1), LandCover.SOIL, fveg=0.03, bright=0.92)
    crop_params.append((120.0, 65.0, 0.08, 0.86))  # replaced once the clearing date is known
    cleared_crop = len(crop_params) - 1
    # dry, light soil once cleared (residue and fresh tillage), so the change is clear-cut
    cv.rect(cleared_box, LandCover.CROP, bright=rng.uniform(1.05, 1.15), crop=cleared_crop, vigor=rng.uniform(1.0, 1.1))

    # --- the sea and its beach, last (nothing else reaches the west edge)
    cols = np.arange(coast_max + 1)
    dist = coast_col[:, None] - cols[None, :]  # > 0 west of the coastline
    cv.mask(dist > beach, (0, 0, H, coast_max + 1), LandCover.WATER)
    cv.mask((dist > 0) & (dist <= beach), (0, 0, H, coast_max + 1), LandCover.SAND, 1.0)

    # --- checks: every event object sits on the cover it is meant to change
    grid_box = (0, 0, H, W)
    for box, want in [(b, LandCover.CONCRETE) for b in aircraft_boxes + vehicle_boxes] + [
            (building_box, LandCover.SOIL), (cleared_box, LandCover.CROP)]:
        inside = box[0] >= grid_box[0] and box[1] >= grid_box[1] and box[2] <= H and box[3] <= W
        if not inside or not np.all(_box_cover(cv.cover, box) == want):
            raise _layout_error(spec, f"an event footprint {box!r} does not fit on {want.name.lower()}")

    # --- spectra
    n_crops = len(crop_params)
    crop_id = np.where(cv.crop < 0, n_crops, cv.crop).astype(np.int32)
    tex_lo = _field(rng, (H, W), S / 3, 3, 0.6)
    tex_hi = _field(rng, (H, W), 6.0, 2, 0.5)
    tex_v = _field(rng, (H, W), S / 8, 3, 0.6)
    micro = rng.standard_normal((H, W), dtype=np.float32)
    mult = 1.0 + 0.06 * tex_lo + 0.025 * tex_hi + 0.012 * micro
    water = cv.cover == LandCover.WATER
    mult[water] = (1.0 + 0.015 * tex_lo + 0.005 * micro)[water]
    concrete = (cv.cover == LandCover.CONCRETE) | (cv.cover == LandCover.ROAD)
    mult[concrete] = (1.0 + 0.03 * tex_lo + 0.015 * tex_hi + 0.01 * micro)[concrete]
    mult *= cv.bright
    background = _CLASS_SPECTRA.T[:, cv.cover]  # (6, H, W)
    background *= mult[None]
    # turbid near-shore water: a little brighter in blue/green within ~4 % of the site of the coast
    turb = np.exp(-np.maximum(dist, 0) / max(3.0, 0.04 * W)).astype(np.float32)
    for b, add in enumerate((0.012, 0.012, 0.006, 0.001, 0.0, 0.0)):
        if add:
            background[b, :, : coast_max + 1][water[:, : coast_max + 1]] += (add * turb)[water[:, : coast_max + 1]]
    vmult = cv.vigor * (1.0 + 0.08 * tex_v + 0.02 * tex_hi + 0.012 * micro)
    veg = np.asarray(_VEGETATION, np.float32)[:, None, None] * vmult[None]
    veg -= background  # now vegetation minus background
    base = background
    base += veg * cv.fveg[None]
    is_crop = crop_id < n_crops
    veg *= is_crop[None]
    delta = veg
    for box, cover, spectrum in cv.overrides:
        r0, c0, r1, c1 = max(box[0], 0), max(box[1], 0), min(box[2], H), min(box[3], W)
        if r1 > r0 and c1 > c0:
            keep = cv.cover[r0:r1, c0:c1] == cover  # unless painted over later
            value = np.asarray(spectrum, np.float32)[:, None, None] * (1.0 + 0.015 * micro[r0:r1, c0:c1])[None]
            base[:, r0:r1, c0:c1] = np.where(keep, value, base[:, r0:r1, c0:c1])

    def patch(spectrum: tuple[float, ...], h: int, w: int, shape_fn=None) -> np.ndarray:
        mod = 1.0 + 0.015 * rng.standard_normal((h, w)).astype(np.float32)
        if shape_fn is not None:
            mod *= shape_fn(h, w)
        return (np.asarray(spectrum, np.float32)[:, None, None] * mod[None]).astype(np.float32)

    def aircraft_shape(h: int, w: int) -> np.ndarray:
        # fuselage and wings (a cross) slightly brighter than the mixed corner pixels
        m = np.full((h, w), 0.96, np.float32)
        m[h // 2 - (h // 6): h // 2 + (h // 6) + 1, :] = 1.0
        m[:, w // 2 - (w // 6): w // 2 + (w // 6) + 1] = 1.02
        return m

    def roof_shape(h: int, w: int) -> np.ndarray:
        m = np.ones((h, w), np.float32)
        m[h // 2:, :] = 0.96  # the ridge splits two roof faces lit differently
        return m

    for arr in (cv.cover, crop_id, base, delta):
        arr.flags.writeable = False  # shared by every scene of the series
    return _Layout(
        cover=cv.cover,
        crop_id=crop_id,
        base=base,
        delta=delta,
        crop_params=np.asarray(crop_params, dtype=np.float64),
        cleared_crop=cleared_crop,
        cleared_box=cleared_box,
        aircraft_boxes=aircraft_boxes,
        aircraft_patches=tuple(patch(_TRANSPORT_AIRCRAFT, ac, ac, aircraft_shape) for _ in aircraft_boxes),
        vehicle_boxes=vehicle_boxes,
        vehicle_patches=tuple(patch(_VEHICLE, vr, vc) for _ in vehicle_boxes),
        building_box=building_box,
        building_patch=patch(_NEW_ROOF, bh, bw, roof_shape),
    )


# ---------------------------------------------------------------- per-date plan

@dataclass(frozen=True)
class _CloudPlan:
    cover: float  # target fraction of valid pixels with cloud truth
    thick_share: float  # fraction of ``cover`` from thick cloud (rest thin)
    thin_opacity: float  # maximum opacity of thin cloud
    level: float  # visible reflectance of thick cloud
    height_m: float
    cell: float  # largest noise cell, pixels
    shadow_k: float  # reflectance multiplier in full shadow (red band)
    shift: tuple[int, int]  # shadow displacement from its cloud, pixels (rows, cols)


@dataclass(frozen=True)
class _NodataPlan:
    corner: int  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    leg_rows: float
    leg_cols: float


@dataclass(frozen=True)
class _DatePlan:
    index: int
    date: datetime.date
    when: datetime.datetime
    sun_azimuth: float
    sun_elevation: float
    cloud: _CloudPlan | None
    nodata: _NodataPlan | None
    gain: tuple[float, ...]
    offset: tuple[float, ...]
    sigma: tuple[float, ...]


def _schedule_events(n: int, rng: np.random.Generator, n_aircraft: int) -> dict[str, object]:
    """Date indices of the events: arrival(s), departure, and the three one-off events."""
    lo = FIRST_EVENT_INDEX if n < 13 else FIRST_EVENT_INDEX + 1
    hi = max(lo + 3, n - 3)
    arrive = lo + (1 if lo + 1 + DEPARTURE_GAP <= n - 2 and rng.random() < 0.5 else 0)
    earliest_departure = arrive + DEPARTURE_GAP
    depart = min(n - 1, earliest_departure + int(rng.integers(0, max(0, min(2, hi - earliest_departure)) + 1)))
    arrivals = [arrive] * n_aircraft
    if n_aircraft == 3 and arrive + 1 + DEPARTURE_GAP <= depart and rng.random() < 0.6:
        arrivals[2] = arrive + 1  # the third aircraft comes a date later
    taken = set(arrivals) | {depart}
    free = [k for k in range(lo, hi + 1) if k not in taken]
    picks: list[int] = []
    for q in (0.2, 0.5, 0.8):
        order = sorted(free, key=lambda k: (abs(k - (lo + q * (hi - lo))), k))
        choice = next((k for k in order if k not in picks), order[0])
        picks.append(choice)
    kinds = ["vehicles_removed", "field_cleared", "building_appeared"]
    rng.shuffle(kinds)
    out: dict[str, object] = {"arrivals": arrivals, "departure": depart}
    out.update(dict(zip(kinds, picks)))
    return out


def _box_in_corner(box: Box, nd: _NodataPlan, shape: tuple[int, int], margin: float) -> bool:
    """Whether ``box`` (grown by ``margin``) touches the nodata triangle of ``nd``."""
    h, w = shape
    r0, c0, r1, c1 = box
    near_r = (r0 + 0.5) if nd.corner in (0, 1) else (h - r1 + 0.5)
    near_c = (c0 + 0.5) if nd.corner in (0, 2) else (w - c1 + 0.5)
    return (max(near_r - margin, 0.0) / nd.leg_rows + max(near_c - margin, 0.0) / nd.leg_cols) < 1.0


def _valid_mask(nd: _NodataPlan | None, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if nd is None:
        return np.ones(shape, dtype=bool)
    rr = np.arange(h, dtype=np.float64) + 0.5
    cc = np.arange(w, dtype=np.float64) + 0.5
    if nd.corner in (2, 3):
        rr = h - rr
    if nd.corner in (1, 3):
        cc = w - cc
    return (rr[:, None] / nd.leg_rows + cc[None, :] / nd.leg_cols) >= 1.0


def _plan_dates(spec: SyntheticSpec, rng: np.random.Generator, dates: list[datetime.date],
                event_boxes: dict[int, list[Box]]) -> list[_DatePlan]:
    n = spec.n_dates
    shape = (spec.height, spec.width)
    S = min(shape)
    event_dates = set(event_boxes)

    # which dates are cloudy, mostly cloudy, or have a nodata corner
    late = list(range(CLEAR_LEAD_DATES, n))
    n_cloudy = min(len(late), int(round(spec.cloudy_fraction * n)))
    cloudy: dict[int, str] = {}
    if n_cloudy > 0:
        n_mostly = 1 if (n_cloudy < 4 or n < 20) else int(rng.integers(1, 3))
        calm = [k for k in late if k not in event_dates]
        for k in rng.choice(calm, size=min(n_mostly, len(calm)), replace=False):
            cloudy[int(k)] = "mostly"
        rest = [k for k in late if k not in cloudy]
        for k in rng.choice(rest, size=max(0, n_cloudy - len(cloudy)), replace=False):
            cloudy[int(k)] = "cloudy"
        cloudy[int(rng.integers(1, CLEAR_LEAD_DATES))] = "small"
    n_nodata = max(1, int(round(0.15 * n)))
    nodata_dates = {int(k) for k in rng.choice(late, size=min(n_nodata, len(late)), replace=False)}

    # local mean solar time of the overpass: 10:45, i.e. ~08:21 UTC at the demo site
    overpass = datetime.timedelta(hours=10, minutes=45) - datetime.timedelta(minutes=4.0 * spec.lon)
    plans = []
    for i, d in enumerate(dates):
        jitter = datetime.timedelta(seconds=int(rng.integers(-240, 241)))
        when = datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc) + overpass + jitter
        azimuth, elevation = solar_position(when, spec.lon, spec.lat)

        cloud = None
        kind = cloudy.get(i)
        if kind is not None:
            if kind == "mostly":
                cover, thick = rng.uniform(0.9, 0.97), rng.uniform(0.8, 0.95)
            elif kind == "small":
                cover, thick = rng.uniform(0.01, 0.03), 1.0
            else:
                cover = 0.03 + 0.57 * rng.random() ** 1.5
                thick = 0.0 if rng.random() < 0.2 else rng.uniform(0.5, 0.9)
            height = rng.uniform(800.0, 2500.0)
            zenith = min(80.0, 90.0 - elevation)
            length = height * math.tan(math.radians(zenith)) / float(spec.resolution)
            az = math.radians(azimuth)
            shift = (int(round(length * math.cos(az))), int(round(-length * math.sin(az))))  # away from the sun
            cloud = _CloudPlan(
                cover=float(cover), thick_share=float(thick), thin_opacity=float(rng.uniform(0.15, 0.5)),
                level=float(rng.uniform(0.45, 0.8)), height_m=float(height),
                cell=float(max(8.0, S * rng.uniform(0.12, 0.35))), shadow_k=float(rng.uniform(0.35, 0.55)), shift=shift,
            )

        nodata = None
        if i in nodata_dates:
            corners = rng.permutation(4)
            legs = rng.uniform(0.3, 0.7, 2)
            for scale in (1.0, 0.6, 0.35):
                for corner in corners:
                    cand = _NodataPlan(int(corner), float(legs[0] * scale * shape[0]), float(legs[1] * scale * shape[1]))
                    if not any(_box_in_corner(b, cand, shape, 2.0) for b in event_boxes.get(i, [])):
                        nodata = cand
                        break
                if nodata is not None:
                    break

        g_common, o_common, sigma = rng.uniform(0.95, 1.05), rng.uniform(-100, 100), rng.uniform(50, 68)
        gain = tuple(float(g_common + rng.uniform(-0.02, 0.02)) for _ in BANDS)
        offset = tuple(float(o_common + rng.uniform(-50, 50)) for _ in BANDS)
        plans.append(_DatePlan(
            index=i, date=d, when=when, sun_azimuth=float(azimuth), sun_elevation=float(elevation), cloud=cloud,
            nodata=nodata, gain=gain, offset=offset, sigma=tuple(float(sigma * f) for f in _NOISE_BAND_FACTOR),
        ))
    return plans


# ---------------------------------------------------------------- clouds

def _clear_around(arr: np.ndarray, boxes: list[Box], shift: tuple[int, int], margin: float, ramp: float) -> None:
    """``arr[p] *= h(p + shift)`` in place, with ``h`` 0 within ``margin`` px of any box and
    rising linearly to 1 over the next ``ramp`` px."""
    h, w = arr.shape
    for r0, c0, r1, c1 in boxes:
        r0, r1, c0, c1 = r0 - shift[0], r1 - shift[0], c0 - shift[1], c1 - shift[1]
        reach = int(math.ceil(margin + ramp)) + 1
        w0, w1 = max(0, r0 - reach), min(h, r1 + reach)
        v0, v1 = max(0, c0 - reach), min(w, c1 + reach)
        if w1 <= w0 or v1 <= v0:
            continue
        rr = np.arange(w0, w1) + 0.5
        cc = np.arange(v0, v1) + 0.5
        dr = np.maximum(np.maximum(r0 + 0.5 - rr, rr - (r1 - 0.5)), 0.0)
        dc = np.maximum(np.maximum(c0 + 0.5 - cc, cc - (c1 - 0.5)), 0.0)
        d = np.hypot(dr[:, None], dc[None, :])
        arr[w0:w1, v0:v1] *= np.clip((d - margin) / ramp, 0.0, 1.0).astype(np.float32)


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, min(max(q, 0.0), 1.0)))


def _cloud_fields(cp: _CloudPlan, rng: np.random.Generator, valid: np.ndarray,
                  boxes: list[Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cloud opacity, opacity of the cloud casting a shadow on each pixel, cloud brightness
    modulation), all (H, W) float32.

    The cloud field is periodic over the site, so the clouds that shade the site from beyond
    its edge are the ones that leave it on the opposite edge and the shadowed fraction follows
    the cloud fraction (no seams: the noise itself is periodic)."""
    h, w = valid.shape
    step = 2 if h * w > 300_000 else 1
    sub_valid = valid[::step, ::step]
    n_valid = max(1, int(sub_valid.sum()))
    thr = CLOUD_OPACITY_THRESHOLD

    alpha = np.zeros((h, w), np.float32)
    mod = np.full((h, w), np.float32(0.92))
    thick_cover = 0.0
    if cp.thick_share > 0:
        n1 = _field(rng, (h, w), cp.cell, 5, 0.55, periodic=True)
        ramp = 0.3  # opacity 0 -> 1 over 0.3 std of the noise: a narrow soft edge
        q = _quantile(n1[::step, ::step][sub_valid], 1.0 - cp.cover * cp.thick_share)
        t = q - thr * ramp  # so that opacity >= thr exactly where n1 >= q
        mod = (0.9 + 0.1 * np.tanh(n1 - np.float32(q))).astype(np.float32)
        n1 -= np.float32(t)
        n1 *= np.float32(1.0 / ramp)
        alpha = np.clip(n1, 0.0, 1.0, out=n1)
        thick_cover = float((alpha[::step, ::step][sub_valid] >= thr).sum()) / n_valid
    remaining = cp.cover - thick_cover
    if remaining > 0.0:
        n2 = _field(rng, (h, w), cp.cell * 1.3, 4, 0.5, periodic=True)
        ramp, a_max = 0.6, cp.thin_opacity
        free = sub_valid & (alpha[::step, ::step] < thr)
        n_free = int(free.sum())
        if n_free > 0:
            q = _quantile(n2[::step, ::step][free], 1.0 - min(1.0, remaining * n_valid / n_free))
            t = q - ramp * thr / a_max  # opacity >= thr exactly where n2 >= q
            n2 -= np.float32(t)
            n2 *= np.float32(a_max / ramp)
            np.maximum(alpha, np.clip(n2, 0.0, a_max, out=n2), out=alpha)
    sr, sc = cp.shift[0] % h, cp.shift[1] % w
    if boxes:
        margin, ramp = max(3.0, min(h, w) / 80), max(4.0, min(h, w) / 40)
        # no cloud near the footprints, nor where it would shade them (footprint - shift)
        _clear_around(alpha, boxes, (0, 0), margin, ramp)
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                _clear_around(alpha, boxes, (sr + a * h, sc + b * w), margin, ramp)
    alpha_cast = np.roll(alpha, (sr, sc), axis=(0, 1))  # alpha_cast[p] = alpha[p - shift]
    return alpha, alpha_cast, mod


# ---------------------------------------------------------------- the series

def _to_dn(reflectance: np.ndarray) -> np.ndarray:
    dn = reflectance * np.float32(10000.0)
    np.rint(dn, out=dn)
    np.clip(dn, 1, 65535, out=dn)
    return dn.astype(np.uint16)


class SyntheticSeries:
    """A seeded synthetic time series of one site. The landscape is built once; scenes are built
    on demand by :meth:`scene` (deterministic, independent of call order)."""

    def __init__(self, spec: SyntheticSpec) -> None:
        if not isinstance(spec, SyntheticSpec):
            raise ValueError(f"synthetic series spec got {spec!r}; expected a SyntheticSpec")
        self.spec = spec
        self.grid = SiteGrid.centred(spec.lon, spec.lat, spec.width, spec.height, spec.resolution, spec.crs)
        plan_rng = np.random.default_rng([spec.seed, 1, _PLAN_STREAM])
        jitter = min(2, (spec.interval_days - 1) // 2)
        self.dates: list[datetime.date] = [
            spec.start + datetime.timedelta(days=i * spec.interval_days + (int(plan_rng.integers(-jitter, jitter + 1)) if i else 0))
            for i in range(spec.n_dates)
        ]
        self._layout = _build_layout(spec)
        L = self._layout
        sched = _schedule_events(spec.n_dates, plan_rng, len(L.aircraft_boxes))
        self._cleared_index = int(sched["field_cleared"])  # type: ignore[arg-type]
        params = L.crop_params.copy()
        doy = self.dates[self._cleared_index].timetuple().tm_yday
        # a perennial forage crop (alfalfa-like): dense all season, so its baseline is stable
        params[L.cleared_crop] = (doy - plan_rng.uniform(30, 50), plan_rng.uniform(110, 130), 0.55, 0.86)
        self._crop_params = params
        n = spec.n_dates
        arrivals: list[int] = sched["arrivals"]  # type: ignore[assignment]
        depart = int(sched["departure"])  # type: ignore[arg-type]
        self._transients = [
            _Transient(f"aircraft-{k + 1}", (box,), (L.aircraft_patches[k],), arrivals[k], depart)
            for k, box in enumerate(L.aircraft_boxes)
        ] + [
            _Transient("vehicles", L.vehicle_boxes, L.vehicle_patches, 0, int(sched["vehicles_removed"])),  # type: ignore[arg-type]
            _Transient("building", (L.building_box,), (L.building_patch,), int(sched["building_appeared"]), n),  # type: ignore[arg-type]
        ]
        self.events: list[ChangeEvent] = self._make_events()
        boxes: dict[int, list[Box]] = {}
        for e in self.events:
            boxes.setdefault(e.date_index, []).append(e.bbox)
        self._event_boxes = boxes
        self._plans = _plan_dates(spec, plan_rng, self.dates, boxes)

    # -- descriptive helpers

    def _make_events(self) -> list[ChangeEvent]:
        L, res = self._layout, float(self.spec.resolution)
        g = self.grid
        raw: list[tuple[str, int, tuple[Box, ...], str, str, str]] = []
        for t in self._transients:
            if t.name.startswith("aircraft"):
                what = f"a large transport aircraft (~70 m, An-124 class; {t.name})"
                raw.append(("aircraft_arrival", t.start, t.boxes, "brighter", f"{what.capitalize()} parks on the apron", t.name))
                raw.append(("aircraft_departure", t.end, t.boxes, "darker", f"{what.capitalize()} leaves the apron; bare concrete returns", t.name))
            elif t.name == "vehicles":
                raw.append(("vehicles_removed", t.end, t.boxes, "brighter",
                            f"A group of {len(t.boxes)} dark green vehicles parked on a concrete pad since the first date leaves", "vehicles"))
            else:
                raw.append(("building_appeared", t.start, t.boxes, "brighter", "A new building with a bright roof appears on bare soil inside the base", "building"))
        raw.append(("field_cleared", self._cleared_index, (L.cleared_box,), "brighter",
                    "A vegetated field is cleared to bare soil (NIR drops; red and SWIR rise)", "field"))
        raw.sort(key=lambda e: (e[1], EVENT_KINDS.index(e[0]), e[5]))
        bboxes = [(min(b[0] for b in bx), min(b[1] for b in bx), max(b[2] for b in bx), max(b[3] for b in bx)) for _, _, bx, _, _, _ in raw]
        xs = np.array([g.x0 + res * (b[1] + b[3]) / 2 for b in bboxes])
        ys = np.array([g.y0 - res * (b[0] + b[2]) / 2 for b in bboxes])
        lons, lats = g.to_lonlat(xs, ys)
        events = []
        for (kind, idx, bx, direction, text, obj), bbox, lon, lat in zip(raw, bboxes, np.atleast_1d(lons), np.atleast_1d(lats)):
            hgt, wid = (bbox[2] - bbox[0]) * res, (bbox[3] - bbox[1]) * res
            events.append(ChangeEvent(
                kind=kind, date_index=idx, date=self.dates[idx], bbox=bbox, direction=direction,
                description=f"{text} on {self.dates[idx].isoformat()} ({hgt:.0f} x {wid:.0f} m at lon {lon:.5f}, lat {lat:.5f}; "
                            f"rows {bbox[0]}-{bbox[2] - 1}, cols {bbox[1]}-{bbox[3] - 1}).",
                parts=tuple(bx), object_id=obj,
            ))
        return events

    def __len__(self) -> int:
        return self.spec.n_dates

    def __iter__(self) -> Iterator[SyntheticScene]:
        for i in range(len(self)):
            yield self.scene(i)

    def __getitem__(self, i: int) -> SyntheticScene:
        return self.scene(i)

    def __repr__(self) -> str:
        s = self.spec
        return (f"SyntheticSeries(seed={s.seed}, {s.height}x{s.width} px at {s.resolution:g} m, {s.n_dates} dates "
                f"{self.dates[0].isoformat()}..{self.dates[-1].isoformat()}, {len(self.events)} events)")

    def __reduce__(self):
        # pickles as its spec: the arrays are rebuilt deterministically
        return (generate_series, (self.spec,))

    @property
    def datetimes(self) -> list[datetime.datetime]:
        """Acquisition times (UTC) of the dates."""
        return [p.when for p in self._plans]

    @property
    def scene_ids(self) -> list[str]:
        return [self._scene_id(i) for i in range(len(self))]

    @property
    def land_cover(self) -> np.ndarray:
        """(H, W) uint8 :class:`LandCover` of the static landscape (read-only; events not included)."""
        view = self._layout.cover.view()
        view.flags.writeable = False
        return view

    def events_on(self, i: int) -> list[ChangeEvent]:
        """Events whose ``date_index`` is ``i``."""
        i = self._index(i)
        return [e for e in self.events if e.date_index == i]

    def change_mask(self, i: int) -> np.ndarray:
        """The change truth of date ``i`` without building the scene."""
        out = np.zeros(self.grid.shape, dtype=bool)
        for e in self.events_on(i):
            for r0, c0, r1, c1 in e.boxes:
                out[r0:r1, c0:c1] = True
        return out

    def _scene_id(self, i: int) -> str:
        return f"SYN_{self.spec.seed}_{self.dates[i].strftime('%Y%m%d')}"

    def _index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"scene index got {i!r}; expected an integer")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"scene index got {i!r}; expected -{n} <= i < {n}")
        return int(i) % n

    # -- scene construction

    def _crop_fraction(self, i: int) -> np.ndarray:
        """Vegetation fraction per crop parcel on date ``i`` (+ a trailing 0 for non-crops)."""
        p = self._crop_params
        doy = float(self.dates[i].timetuple().tm_yday)
        dd = (doy - p[:, 0] + 182.5) % 365.0 - 182.5
        f = p[:, 2] + (p[:, 3] - p[:, 2]) * np.exp(-0.5 * (dd / p[:, 1]) ** 2)
        if i >= self._cleared_index:
            f[self._layout.cleared_crop] = 0.0
        return np.append(f, 0.0).astype(np.float32)

    def _surface(self, i: int) -> np.ndarray:
        L = self._layout
        surf = L.delta * self._crop_fraction(i)[L.crop_id][None]
        surf += L.base
        for t in self._transients:
            if t.start <= i < t.end:
                for (r0, c0, r1, c1), patch in zip(t.boxes, t.patches):
                    surf[:, r0:r1, c0:c1] = patch
        return surf

    def surface(self, i: int) -> np.ndarray:
        """The (6, H, W) uint16 surface of date ``i`` alone (cheaper than :meth:`scene`)."""
        return _to_dn(self._surface(self._index(i)))

    def scene(self, i: int) -> SyntheticScene:
        """Scene ``i`` with its truth; the same (spec, i) always gives identical arrays."""
        i = self._index(i)
        plan = self._plans[i]
        shape = self.grid.shape
        rng = np.random.default_rng([self.spec.seed, 0, i])

        obs = self._surface(i)
        surface = _to_dn(obs)
        valid = _valid_mask(plan.nodata, shape)
        cloud = np.zeros(shape, dtype=bool)
        shadow = np.zeros(shape, dtype=bool)

        cp = plan.cloud
        if cp is not None:
            alpha, alpha_cast, mod = _cloud_fields(cp, rng, valid, self._event_boxes.get(i, []))
            strength = np.minimum(alpha_cast * np.float32(2.0), np.float32(1.0))
            for b, f in enumerate(_SHADOW_BAND_FACTOR):
                k = min(0.85, cp.shadow_k * f)
                obs[b] *= 1.0 - np.float32(1.0 - k) * strength
            cloud = (alpha >= np.float32(CLOUD_OPACITY_THRESHOLD)) & valid
            one_minus = 1.0 - alpha
            alpha *= mod  # now opacity x brightness modulation
            for b, f in enumerate(_CLOUD_SHAPE):
                obs[b] *= one_minus
                obs[b] += np.float32(cp.level * f) * alpha
            shadow = (alpha_cast >= np.float32(CLOUD_OPACITY_THRESHOLD)) & ~cloud & valid

        noise = rng.standard_normal(obs.shape, dtype=np.float32)
        for b in range(len(BANDS)):
            obs[b] *= np.float32(10000.0 * plan.gain[b])
            obs[b] += np.float32(plan.offset[b])
            noise[b] *= np.float32(plan.sigma[b])
        obs += noise
        del noise
        np.rint(obs, out=obs)
        np.clip(obs, 1, 65535, out=obs)
        bands = obs.astype(np.uint16)
        del obs
        if plan.nodata is not None:
            bands[:, ~valid] = NODATA
        change = self.change_mask(i) & valid
        n_valid = int(valid.sum())
        return SyntheticScene(
            index=i,
            scene_id=self._scene_id(i),
            datetime=plan.when,
            bands=bands,
            valid=valid,
            cloud=cloud,
            shadow=shadow,
            change=change,
            surface=surface,
            sun_azimuth=plan.sun_azimuth,
            sun_elevation=plan.sun_elevation,
            cloud_fraction=float(cloud.sum()) / n_valid if n_valid else 0.0,
        )


def generate_series(spec: SyntheticSpec | None = None, **overrides) -> SyntheticSeries:
    """A :class:`SyntheticSeries` for ``spec`` (default :class:`SyntheticSpec`) with any field
    replaced by ``overrides``, e.g. ``generate_series(width=256, height=256, seed=3)``."""
    if spec is None:
        spec = SyntheticSpec(**overrides)
    elif not isinstance(spec, SyntheticSpec):
        raise ValueError(f"generate_series spec got {spec!r}; expected a SyntheticSpec or None")
    elif overrides:
        spec = replace(spec, **overrides)
    return SyntheticSeries(spec)
