""":class:`SyntheticSeries` (the scenes of one site, built on demand) and :func:`generate_series`."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Iterator

import numpy as np

from ..grid import SiteGrid
from .clouds import _cloud_fields
from .layout import _Transient, _build_layout
from .plan import _plan_dates, _schedule_events, _valid_mask
from .spec import (BANDS, CLOUD_OPACITY_THRESHOLD, EVENT_KINDS, NODATA, _CLOUD_SHAPE, _PLAN_STREAM, _SHADOW_BAND_FACTOR, Box,
                   ChangeEvent, SyntheticScene, SyntheticSpec)


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
