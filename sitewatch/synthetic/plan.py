"""The per-date plan of a synthetic series: change events scheduled, clouds, haze and swath-edge nodata per date."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

import numpy as np

from ..sun import solar_position
from .spec import BANDS, Box, CLEAR_LEAD_DATES, DEPARTURE_GAP, FIRST_EVENT_INDEX, SyntheticSpec, _NOISE_BAND_FACTOR


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
