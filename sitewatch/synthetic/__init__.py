"""Seeded synthetic time series of one site: six-band surface reflectance scenes with clouds,
cloud shadows, swath-edge nodata and known surface changes, plus pixel-exact truth.

Used by the demo, the tests and the benchmarks. The package: :mod:`.spec` (constants, spectra,
the public dataclasses), :mod:`.noise` (value-noise fields), :mod:`.layout` (the landscape),
:mod:`.plan` (events, clouds and nodata per date), :mod:`.clouds` (cloud and shadow fields) and
:mod:`.series` (:class:`SyntheticSeries`, :func:`generate_series`). Everything is pure numpy (no prefect, dask or
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

from ..sun import solar_position  # re-exported: tests and benchmarks import it from here
from .series import SyntheticSeries, generate_series
from .spec import (
    BANDS,
    CLEAR_LEAD_DATES,
    CLOUD_OPACITY_THRESHOLD,
    DEPARTURE_GAP,
    EVENT_KINDS,
    FIRST_EVENT_INDEX,
    MIN_DATES,
    MIN_SITE_PIXELS,
    NODATA,
    Box,
    ChangeEvent,
    LandCover,
    SyntheticScene,
    SyntheticSpec,
)

__all__ = [
    "BANDS", "CLEAR_LEAD_DATES", "CLOUD_OPACITY_THRESHOLD", "DEPARTURE_GAP", "EVENT_KINDS", "FIRST_EVENT_INDEX",
    "MIN_DATES", "MIN_SITE_PIXELS", "NODATA", "Box", "ChangeEvent", "LandCover", "SyntheticScene", "SyntheticSeries",
    "SyntheticSpec", "generate_series", "solar_position",
]
