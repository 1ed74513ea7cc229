"""The landscape of a synthetic site, built once per series: sea, fields, village, road and the air base with its aircraft, vehicles and buildings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .noise import _field, _noise_1d
from .spec import Box, LandCover, SyntheticSpec, _CLASS_SPECTRA, _LAYOUT_STREAM, _NEW_ROOF, _ROOFS, _SMALL_AIRCRAFT, _TRANSPORT_AIRCRAFT, _VEGETATION, _VEHICLE


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
