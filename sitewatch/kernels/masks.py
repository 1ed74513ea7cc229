"""Cloud and cloud-shadow masks from spectral rules plus a temporal test against the site's
clear-sky baseline.

Per pixel (reflectance = DN / 10000):

* **thick cloud** (single date, Fmask-like): bright in the visible (mean of blue, green, red
  above ``bright``), spectrally flat (Fmask whiteness below ``whiteness``), positive
  haze-optimised transform (``blue - 0.5 red - 0.08 > 0``) and not snow (NDSI below
  ``ndsi_snow``; skipped without a SWIR band, so bright snow can read as cloud there);
* **thin cloud** (temporal, needs a baseline): blue at least ``thin_blue`` brighter than its
  clear-sky median, brightening in blue at least ``blue_red_ratio`` times that in red (haze
  scatters blue most; exposed soil brightens red more than blue) and no NIR darkening;
* **shadow** (temporal, needs a baseline): NIR and SWIR-1.6 (when the sensor has it) below
  ``shadow_ratio`` times their clear-sky median and red below ``shadow_ratio_red`` times its median, over land (baseline
  NIR above ``land_nir``).

Flagged separately (never counted as cloud): **snow** (NDSI above ``ndsi_snow`` with NIR and
green bright enough, as Fmask), **water** (Fmask's NDVI/NIR water test) and **saturated**
pixels (any band at ``saturation_dn``; they stay eligible for cloud, and the analysis keeps them
out of the change). A per-pixel **cloud score** (0-1, :func:`cloud_score_np`) rises through 0.5
where a cloud test passes.

Then per mask, a morphological opening with a ``2 * min_width_px + 1`` square removes objects
narrower than that (aircraft, roofs and vehicles are not clouds), the surviving cores regrow by
up to ``grow_px`` into the candidate pixels (keeping thin fringes of real clouds), and a
dilation by ``buffer_px`` adds a safety buffer. Cloud cores also regrow into *weak* haze
(blue at least ``thin_blue_weak`` above its baseline; hysteresis), which recovers the thin
edges of clouds.

**Projected shadows** (with a baseline and the sun's position, :mod:`sitewatch.kernels.shadow`):
the cloud mask is shifted away from the sun over the range of cloud heights, the shadow length
that lands on the most darkened pixels is kept, and inside that projection a looser darkening
test (``shadow_weak_ratio`` in NIR, SWIR and red) marks shadow, which catches the faint shadows
of thin clouds. Dark objects away from any projection still count when they pass the strong
test (their cloud may be beyond the site edge).

The neighbourhood steps use ``map_overlap`` (the first stage with depth
``2 * min_width_px + grow_px + 1`` and the array edge repeated; the shadow projection and
buffer stage with the longest shadow plus ``grow_px + buffer_px + 3``, ``False`` beyond the
edge), so chunked results equal whole-array results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from . import shadow as shadow_k
from ._util import is_dask, require_2d_same_shape

MASK_BANDS = ("blue", "green", "red", "nir")  # the visible rule set: 4-band (RGB+NIR) products work
OPTIONAL_MASK_BANDS = ("swir16",)  # used when present: snow test, shadow test
RNS_BANDS = ("red", "nir", "swir16")  # the reduced rule set for sensors without blue/green (see below)
#: The band sets the spectral rules can run on, preferred first.
MASK_BAND_SETS = (MASK_BANDS, RNS_BANDS)


def rule_set(bands) -> tuple[str, ...] | None:
    """The first of :data:`MASK_BAND_SETS` that ``bands`` hold, or ``None``."""
    for rs in MASK_BAND_SETS:
        if all(b in bands for b in rs):
            return rs
    return None

# Bits of the per-pixel flag layer (``mask_flags`` in the cube; CF flag_masks).
FLAG_CLOUD = 1  # cloud, before the buffer
FLAG_SHADOW = 2  # cloud shadow, before the buffer
FLAG_SNOW = 4
FLAG_WATER = 8
FLAG_SATURATED = 16
FLAG_MEANINGS = {FLAG_CLOUD: "cloud", FLAG_SHADOW: "cloud_shadow", FLAG_SNOW: "snow", FLAG_WATER: "water",
                 FLAG_SATURATED: "saturated"}

_DARK_WEAK = 32  # internal bit between the two stages: loose darkening for the shadow projection


@dataclass(frozen=True)
class MaskParams:
    bright: float = 0.35
    whiteness: float = 0.7
    ndsi_snow: float = 0.4
    snow_nir: float = 0.11
    snow_green: float = 0.1
    thin_blue: float = 0.025
    thin_blue_weak: float = 0.025  # = thin_blue: no hysteresis by default (it cost precision on the benchmark seeds)
    blue_red_ratio: float = 0.75
    thin_nir_drop: float = 1.5  # haze may lower NIR by up to this times its blue brightening (or 0.02)
    shadow_ratio: float = 0.85
    shadow_ratio_red: float = 0.9
    shadow_weak_ratio: float = 0.95
    rns_red: float = 0.1  # red/NIR/SWIR rules: cloud is bright in red ...
    rns_red_rise: float = 0.08  # ... at least this much brighter than its clear-sky red ...
    rns_swir_rise: float = -0.01  # ... and not darker in SWIR (snow is: it absorbs at 1.6 um)
    rns_single_red: float = 0.15  # single date, no baseline: red and SWIR above this, NDSI(red) below 0.3
    rough_blue: float = 0.03  # rough guess for the normalisation fit: generous (0.06 / 0.7 let haze and faint shadow bias the fit)
    rough_ratio: float = 0.85
    land_nir: float = 0.06
    saturation_dn: int = 65535
    min_obs: int = 3
    min_width_px: int = 4
    grow_px: int = 6
    buffer_px: int = 4
    project_shadows: bool = True
    shadow: shadow_k.ShadowParams = field(default_factory=shadow_k.ShadowParams)

    def __post_init__(self) -> None:
        if self.min_width_px < 0 or self.buffer_px < 0 or self.grow_px < 0:
            raise ValueError(
                f"mask min_width_px/grow_px/buffer_px got {(self.min_width_px, self.grow_px, self.buffer_px)!r}; expected >= 0"
            )
        if self.min_obs < 1:
            raise ValueError(f"mask min_obs got {self.min_obs!r}; expected >= 1")
        if not 0 < self.shadow_weak_ratio <= 1:
            raise ValueError(f"mask shadow_weak_ratio got {self.shadow_weak_ratio!r}; expected 0 < ratio <= 1")
        if not 0 < self.saturation_dn <= 65535:
            raise ValueError(f"mask saturation_dn got {self.saturation_dn!r}; expected 1..65535 (uint16 counts)")

    @property
    def depth(self) -> int:
        """Overlap of the first (per-mask morphology) stage."""
        return 2 * self.min_width_px + self.grow_px + 1

    @property
    def margin(self) -> int:
        """Overlap of the second (shadow clean-up and buffer) stage, beyond the longest shadow."""
        return self.grow_px + self.buffer_px + 3


def _open_grow_buffer(mask: np.ndarray, r: int, grow: int, buffer_px: int, grow_into: np.ndarray | None = None) -> np.ndarray:
    """Opening with a ``2r+1`` square (drops objects narrower than that), then regrowth of the
    surviving cores by up to ``grow`` px back into ``grow_into`` (default ``mask``: keeps the
    thin fringes and arms of real clouds), then a ``buffer_px`` dilation. Outside the array
    repeats the edge, so a cloud cut by the site edge survives if it reaches at least ``r + 1``
    px into the site."""
    m = np.asarray(mask, dtype=bool).view(np.uint8)
    into = m if grow_into is None else (np.asarray(grow_into, dtype=bool) | np.asarray(mask, dtype=bool)).view(np.uint8)
    out = m
    if r > 0:
        size = 2 * r + 1
        out = ndimage.minimum_filter(out, size=size, mode="nearest")
        out = ndimage.maximum_filter(out, size=size, mode="nearest")
        if grow > 0:
            out = ndimage.maximum_filter(out, size=2 * grow + 1, mode="nearest") & into
    if buffer_px > 0:
        out = ndimage.maximum_filter(out, size=2 * buffer_px + 1, mode="nearest")
    return out.astype(bool)


def _inputs(bands: Mapping[str, np.ndarray], valid: np.ndarray, baseline, count, params: MaskParams, norm):
    """Validated float reflectances (normalised where ``norm`` says), baseline and helpers."""
    rs = rule_set(bands)
    if rs is None:
        lacking = [b for b in MASK_BANDS if b not in bands]
        raise ValueError(f"cloud mask bands lack {lacking!r}; expected {MASK_BANDS!r} (or {RNS_BANDS!r} for the "
                         f"red/NIR/SWIR rules), got {sorted(bands)!r}")
    names = tuple(b for b in (*MASK_BANDS, *OPTIONAL_MASK_BANDS) if b in bands and (b in rs or b in OPTIONAL_MASK_BANDS))
    require_2d_same_shape("cloud mask", valid=valid, count=count, **{b: bands[b] for b in names})
    s = np.float32(1e-4)
    raw = {b: np.asarray(bands[b]) for b in names}
    x = {b: raw[b].astype(np.float32) * s for b in names}
    saturated = np.zeros(raw[names[0]].shape, dtype=bool)
    for b in names:
        saturated |= raw[b] >= params.saturation_dn
    base = None
    have = None
    if baseline is not None:
        if count is None:
            raise ValueError("cloud mask got a baseline without its count; expected both or neither")
        lacking = [b for b in names if b not in baseline]
        if lacking:
            raise ValueError(f"cloud mask baseline lacks {lacking!r}; expected {names!r}")
        have = np.asarray(count) >= params.min_obs
        base = {b: np.nan_to_num(np.asarray(baseline[b], dtype=np.float32) * s) for b in names}
    return rs, names, x, saturated, base, have


def _normalised(x: dict[str, np.ndarray], norm: Mapping[str, tuple[float, float]] | None) -> dict[str, np.ndarray]:
    if norm is None:
        return x
    return {b: np.float32(norm[b][0]) * v + np.float32(norm[b][1] * 1e-4) if b in norm else v for b, v in x.items()}


def _per_pixel(bands, valid, baseline, count, params: MaskParams, norm):
    """Per-pixel tests: ``thick``, ``thin``, ``thin_weak``, ``dark``, ``dark_weak``, ``snow``,
    ``water``, ``saturated`` (bool) and the score terms."""
    rs, names, x, saturated, base, have = _inputs(bands, valid, baseline, count, params, norm)
    if rs is RNS_BANDS:
        return _per_pixel_rns(x, saturated, base, have, params, norm)
    blue, green, red, nir = (x[b] for b in MASK_BANDS)
    swir = x.get("swir16")
    vis = (blue + green + red) / 3
    with np.errstate(divide="ignore", invalid="ignore"):
        white = (np.abs(blue - vis) + np.abs(green - vis) + np.abs(red - vis)) / vis
        if swir is not None:
            snow = ((green - swir) / (green + swir) > params.ndsi_snow) & (nir > params.snow_nir) & (green > params.snow_green)
        else:
            snow = np.zeros(blue.shape, dtype=bool)
        ndvi = (nir - red) / (nir + red)
    water = ((ndvi < 0.01) & (nir < 0.11)) | ((ndvi < 0.1) & (ndvi > 0) & (nir < 0.05))
    hot = blue - 0.5 * red - 0.08
    thick = (vis > params.bright) & (white < params.whiteness) & (hot > 0) & ~snow
    out = {"thick": thick, "snow": snow, "water": water & ~thick, "saturated": saturated,
           "thick_term": np.where((white < params.whiteness) & (hot > 0) & ~snow, vis - params.bright, -np.inf)}
    false = np.zeros(blue.shape, dtype=bool)
    out.update(thin=false, thin_weak=false, dark=false, dark_weak=false, thin_term=np.full(blue.shape, -np.inf, np.float32))
    if base is not None:
        n = _normalised(x, norm)
        bb, br, bn = base["blue"], base["red"], base["nir"]
        d_blue, d_red, d_nir = n["blue"] - bb, n["red"] - br, n["nir"] - bn
        # haze brightens blue at least as much as red; over dense vegetation it lowers NIR
        # (the cloud is darker there than the canopy), but by less than it raises blue
        hazy = have & (d_blue >= params.blue_red_ratio * d_red) & (d_nir > -np.maximum(0.02, params.thin_nir_drop * d_blue))
        out["thin"] = hazy & (d_blue > params.thin_blue)
        out["thin_weak"] = hazy & (d_blue > params.thin_blue_weak)
        out["thin_term"] = np.where(hazy, d_blue - params.thin_blue, -np.inf).astype(np.float32)
        out["dark"], out["dark_weak"] = _dark(n, base, have, params)
    return out


def _dark(n: dict[str, np.ndarray], base: dict[str, np.ndarray], have: np.ndarray, params: MaskParams):
    """Strong and loose darkening against the clear-sky baseline, over land."""
    br, bn = base["red"], base["nir"]
    land = have & (bn > params.land_nir)
    dark = land & (n["nir"] < params.shadow_ratio * bn) & (n["red"] < params.shadow_ratio_red * br)
    weak = params.shadow_weak_ratio
    dark_weak = land & (n["nir"] < weak * bn) & (n["red"] < weak * br)
    if "swir16" in n:
        dark &= n["swir16"] < params.shadow_ratio * base["swir16"]
        dark_weak &= n["swir16"] < weak * base["swir16"]
    return dark, dark_weak


def _per_pixel_rns(x, saturated, base, have, params: MaskParams, norm):
    """The red/NIR/SWIR-1.6 rules (Landsat TM/ETM+ subsets, any sensor without blue and green):
    no haze-optimised transform or visible whiteness is possible, so cloud is *temporal*: red
    above ``rns_red`` and at least ``rns_red_rise`` above its clear-sky median while SWIR-1.6
    does not drop by more than ``-rns_swir_rise`` (snow darkens SWIR-1.6, cloud, ice cloud
    included, does not). Without a baseline, a cautious single-date test: red and SWIR above
    ``rns_single_red`` and NDSI computed with red below 0.3. Snow: NDSI(red) above
    ``ndsi_snow`` with red above ``snow_green``; water and shadow as in the visible rules."""
    red, nir, swir = x["red"], x["nir"], x["swir16"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ndsi = (red - swir) / (red + swir)
        ndvi = (nir - red) / (nir + red)
    snow = (ndsi > params.ndsi_snow) & (red > params.snow_green)
    water = ((ndvi < 0.01) & (nir < 0.11)) | ((ndvi < 0.1) & (ndvi > 0) & (nir < 0.05))
    single = (red > params.rns_single_red) & (swir > params.rns_single_red) & (ndsi < 0.3)
    false = np.zeros(red.shape, dtype=bool)
    out = {"snow": snow, "water": water, "saturated": saturated, "thin": false, "thin_weak": false,
           "dark": false, "dark_weak": false, "thin_term": np.full(red.shape, -np.inf, np.float32)}
    if base is None:
        out["thick"] = single
        out["thick_term"] = np.where(ndsi < 0.3, np.minimum(red, swir) - params.rns_single_red, -np.inf)
    else:
        n = _normalised(x, norm)
        d_red, d_swir = n["red"] - base["red"], n["swir16"] - base["swir16"]
        rises = have & (d_swir > params.rns_swir_rise) & (n["red"] > params.rns_red)
        cloud = rises & (d_red > params.rns_red_rise)
        out["thick"] = cloud | (single & ~have)
        out["thick_term"] = np.where(rises, d_red - params.rns_red_rise, -np.inf)
        out["dark"], out["dark_weak"] = _dark(n, base, have, params)
        out["snow"] = snow & ~cloud
    out["water"] = water & ~out["thick"]
    return out


def cloud_score_np(bands: Mapping[str, np.ndarray], valid: np.ndarray, baseline: Mapping[str, np.ndarray] | None = None,
                   count: np.ndarray | None = None, params: MaskParams = MaskParams(),
                   norm: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """Cloud score in [0, 1] per pixel (float32, NaN where not valid): ``0.5 + 5 x`` the larger
    margin by which a pixel passes the thick test (visible brightness above ``bright``, when
    flat, hazy and not snow) or the thin test (blue brightening above ``thin_blue``, when
    haze-like), clipped. A pixel scores above 0.5 exactly where one of the per-pixel cloud tests
    passes (before the opening, regrowth and buffer)."""
    t = _per_pixel(bands, valid, baseline, count, params, norm)
    margin = np.maximum(t["thick_term"], t["thin_term"])
    score = np.clip(0.5 + 5.0 * margin, 0.0, 1.0).astype(np.float32)
    return np.where(np.asarray(valid, dtype=bool), score, np.float32(np.nan))


def _stage1(bands, valid, baseline, count, params: MaskParams, norm) -> np.ndarray:
    """uint8 flags: raw cloud and the strong (unprojected) shadow after opening and regrowth,
    snow, water, saturated, and the loose darkening for the projection."""
    t = _per_pixel(bands, valid, baseline, count, params, norm)
    valid = np.asarray(valid, dtype=bool)
    r, g = params.min_width_px, params.grow_px
    cloud = _open_grow_buffer((t["thick"] | t["thin"]) & valid, r, g, 0, grow_into=t["thin_weak"] & valid) & valid
    dark = _open_grow_buffer(t["dark"] & valid, r, g, 0) & valid & ~cloud
    code = cloud.astype(np.uint8) * FLAG_CLOUD
    code |= dark.astype(np.uint8) * FLAG_SHADOW
    code |= (t["snow"] & valid & ~cloud).astype(np.uint8) * FLAG_SNOW
    code |= (t["water"] & valid & ~cloud).astype(np.uint8) * FLAG_WATER
    code |= (t["saturated"] & valid).astype(np.uint8) * FLAG_SATURATED
    code |= (t["dark_weak"] & valid & ~cloud).astype(np.uint8) * _DARK_WEAK
    return code


def _stage2(code: np.ndarray, valid: np.ndarray, depth: tuple[int, int], geom: shadow_k.Geometry | None,
            lengths: tuple[int, ...], params: MaskParams) -> np.ndarray:
    """On a block padded by ``depth`` (longest shadow + margin): projected shadows (loose
    darkening inside the projection, specks removed, regrown by ``grow_px``) joined with the
    strong ones, then the buffer. Returns a block of the same shape: bits 0/1 the buffered
    cloud/shadow, bits 2-6 the flags (raw cloud/shadow, snow, water, saturated) shifted by 2."""
    valid = np.asarray(valid, dtype=bool)
    cloud = (code & FLAG_CLOUD) > 0
    shadow = (code & FLAG_SHADOW) > 0
    if geom is not None and lengths:
        m = params.margin
        shift_depth = (depth[0] - m, depth[1] - m)
        area = (code.shape[0] - 2 * shift_depth[0], code.shape[1] - 2 * shift_depth[1])
        region = np.zeros(code.shape, dtype=bool)
        region[shift_depth[0]:shift_depth[0] + area[0], shift_depth[1]:shift_depth[1] + area[1]] = \
            shadow_k._region_block(cloud, shift_depth, geom, lengths, area)
        proj = region & ((code & _DARK_WEAK) > 0) & valid & ~cloud
        proj = _open_grow_buffer(proj, 1, params.grow_px, 0)
        shadow = (shadow | proj) & ~cloud
    b = params.buffer_px
    cloud_b = _open_grow_buffer(cloud, 0, 0, b) & valid
    shadow_b = _open_grow_buffer(shadow, 0, 0, b) & valid & ~cloud_b
    flags = (code & (FLAG_SNOW | FLAG_WATER | FLAG_SATURATED)) | cloud.astype(np.uint8) * FLAG_CLOUD | shadow.astype(np.uint8) * FLAG_SHADOW
    return cloud_b.astype(np.uint8) | (shadow_b.astype(np.uint8) << 1) | (flags << 2)


def _stage2_whole(code: np.ndarray, valid: np.ndarray, depth: tuple[int, int], **kw) -> np.ndarray:
    """:func:`_stage2` on a whole array: padded with ``False`` by ``depth``, then trimmed."""
    pad = ((depth[0], depth[0]), (depth[1], depth[1]))
    out = _stage2(np.pad(code, pad), np.pad(np.asarray(valid, dtype=bool), pad), depth, **kw)
    return out[depth[0]:depth[0] + code.shape[0], depth[1]:depth[1] + code.shape[1]]


def _stage2_depth(params: MaskParams, geom: shadow_k.Geometry | None, shape: tuple[int, int]) -> tuple[int, int]:
    m = params.margin
    if geom is None:
        return m, m
    dy, dx = shadow_k._depth(geom, shape)
    return dy + m, dx + m


def _geometry(sun: tuple[float, float] | None, resolution: float | None, params: MaskParams, has_baseline: bool):
    if sun is None or not params.project_shadows or not has_baseline:
        return None
    if resolution is None:
        raise ValueError("cloud mask got a sun position without the pixel resolution; expected resolution in metres")
    return shadow_k.Geometry.from_sun(sun[0], sun[1], resolution, params.shadow)


def mask_layers_np(
    bands: Mapping[str, np.ndarray],
    valid: np.ndarray,
    baseline: Mapping[str, np.ndarray] | None = None,
    count: np.ndarray | None = None,
    params: MaskParams = MaskParams(),
    norm: Mapping[str, tuple[float, float]] | None = None,
    sun: tuple[float, float] | None = None,
    resolution: float | None = None,
) -> dict[str, object]:
    """Every mask layer of one scene as numpy arrays: ``cloud``, ``shadow`` (buffered),
    ``flags`` (uint8, :data:`FLAG_MEANINGS` bits: raw cloud and shadow, snow, water, saturated)
    and ``shadow_length_px`` (the matched projection, or ``None``). ``sun`` = ``(azimuth,
    elevation)`` degrees and ``resolution`` (m) switch on the projected shadows (with a baseline)."""
    geom = _geometry(sun, resolution, params, baseline is not None)
    code1 = _stage1(bands, valid, baseline, count, params, norm)
    valid = np.asarray(valid, dtype=bool)
    lengths: tuple[int, ...] = ()
    best = None
    if geom is not None:
        best, _ = shadow_k.match_np((code1 & FLAG_CLOUD) > 0, (code1 & _DARK_WEAK) > 0, valid, geom, params.shadow)
        lengths = shadow_k.window(best, geom, params.shadow) if best is not None else ()
    depth = _stage2_depth(params, geom if lengths else None, code1.shape)
    out = _stage2_whole(code1, valid, depth, geom=geom, lengths=lengths, params=params)
    return {"cloud": (out & 1) > 0, "shadow": (out & 2) > 0, "flags": (out >> 2).astype(np.uint8), "shadow_length_px": best}


def masks_np(
    bands: Mapping[str, np.ndarray],
    valid: np.ndarray,
    baseline: Mapping[str, np.ndarray] | None = None,
    count: np.ndarray | None = None,
    params: MaskParams = MaskParams(),
    norm: Mapping[str, tuple[float, float]] | None = None,
    sun: tuple[float, float] | None = None,
    resolution: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(cloud, shadow)`` boolean ``(y, x)`` masks (buffered) for one scene.

    ``bands``: uint16 reflectance x 10000 by common name (needs blue, green, red, nir; swir16
    is used when given, in the snow and shadow tests);
    ``valid``: bool; ``baseline``: clear-sky median by band name (float, same scale) and
    ``count`` of clear observations behind it, or ``None`` for single-date rules only;
    ``norm``: optional ``{band: (gain, offset)}`` (DN) applied to the scene before the temporal
    tests, so per-date radiometric differences do not read as haze or shadow; ``sun`` and
    ``resolution``: see :func:`mask_layers_np`.
    """
    layers = mask_layers_np(bands, valid, baseline, count, params, norm, sun, resolution)
    return layers["cloud"], layers["shadow"]  # type: ignore[return-value]


def _unpack(arrays: tuple[np.ndarray, ...], names: tuple[str, ...], has_baseline: bool):
    """``(bands, valid, baseline, count)`` from the flat block inputs of :func:`masks`."""
    nb = len(names)
    baseline = dict(zip(names, arrays[nb + 1: 2 * nb + 1])) if has_baseline else None
    return dict(zip(names, arrays[:nb])), arrays[nb], baseline, arrays[2 * nb + 1] if has_baseline else None


def _block1(*arrays: np.ndarray, names: tuple[str, ...], has_baseline: bool, params: MaskParams,
            norm: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    return _stage1(*_unpack(arrays, names, has_baseline), params, norm)


def _score_block(*arrays: np.ndarray, names: tuple[str, ...], has_baseline: bool, params: MaskParams,
                 norm: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    return cloud_score_np(*_unpack(arrays, names, has_baseline), params, norm)


def _flat(bands: np.ndarray, valid: np.ndarray, base: tuple[np.ndarray, ...], has_baseline: bool) -> tuple[np.ndarray, ...]:
    """The flat block inputs of :func:`_block1` from the lazy path's stacked blocks (``(band, y,
    x)`` bands and median, ``(1, y, x)`` valid and count)."""
    return (*bands, valid[0], *((*base[0], base[1][0]) if has_baseline else ()))


def _on_stacked(bands: np.ndarray, valid: np.ndarray, *base: np.ndarray, fn, names: tuple[str, ...], has_baseline: bool,
                params: MaskParams, norm: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """``fn`` (:func:`_block1` or :func:`_score_block`) on the stacked blocks (:func:`_flat`); returns ``(1, y, x)``."""
    return fn(*_flat(bands, valid, base, has_baseline), names=names, has_baseline=has_baseline, params=params, norm=norm)[None]


def _stacked_inputs(scene: xr.Dataset, baseline: xr.Dataset | None, names: tuple[str, ...], ref: xr.DataArray) -> list[da.Array]:
    """The lazy path's inputs as four dask arrays with ``ref``'s (y, x) chunks and one block over
    their first axis: the bands ``(band, y, x)``, valid ``(1, y, x)`` and, with a baseline, its
    median ``(band, y, x)`` and count ``(1, y, x)``. Through ``map_overlap`` four arrays cost a
    quarter of the halo-slicing tasks of the fourteen single-band arrays they replace."""
    chunks = ref.data.chunks

    def as_dask(a: object, lead: tuple = ()) -> da.Array:
        a = a if isinstance(a, da.Array) else da.from_array(np.asarray(a), chunks=lead + chunks)
        return a.rechunk(lead + chunks)

    out = [da.stack([as_dask(scene[b].data) for b in names]).rechunk((-1,) + chunks), as_dask(ref.data)[None]]
    if baseline is not None:
        med = baseline["median"].sel(band=list(names)).transpose("band", "y", "x").data
        out += [as_dask(med, (-1,)), as_dask(baseline["count"].data)[None]]
    return out


def masks(
    scene: xr.Dataset,
    baseline: xr.Dataset | None = None,
    params: MaskParams = MaskParams(),
    norm: Mapping[str, tuple[float, float]] | None = None,
    sun: tuple[float, float] | None = None,
    resolution: float | None = None,
) -> xr.Dataset:
    """Cloud and shadow masks for ``scene`` (a Dataset with ``(y, x)`` band variables and
    ``valid``) against ``baseline`` (output of :func:`~sitewatch.kernels.baseline.robust_baseline`
    with a ``band`` coordinate of common names) or ``None``. Returns a Dataset with ``cloud`` and
    ``shadow`` (buffered), ``flags`` (uint8, :data:`FLAG_MEANINGS`) and ``cloud_score``
    (float32); the matched shadow length is the ``shadow_length_px`` attribute of ``shadow``.
    Lazy (``map_overlap``) when the scene is dask-backed; with a sun position (projected
    shadows) the first stage is persisted and two small computes of per-chunk counts choose the
    shadow length. ``swir16`` is used when the scene (and the baseline) have it."""
    rs = rule_set(scene.data_vars)
    lacking = [b for b in (*(rs or MASK_BANDS), "valid") if b not in scene.data_vars]
    if lacking:
        raise ValueError(f"scene lacks {lacking!r}; expected bands {MASK_BANDS!r} (or {RNS_BANDS!r}) and 'valid'")
    in_base = (lambda b: True) if baseline is None else (lambda b: b in baseline["median"].coords["band"].values)  # noqa: E731
    names = tuple(b for b in (*MASK_BANDS, *OPTIONAL_MASK_BANDS)
                  if b in scene.data_vars and (b in rs or (b in OPTIONAL_MASK_BANDS and in_base(b))))
    ref = scene["valid"]
    if ref.dims != ("y", "x"):
        raise ValueError(f"scene 'valid' dims got {ref.dims!r}; expected ('y', 'x')")
    geom = _geometry(sun, resolution, params, baseline is not None)
    fn_kw = dict(names=names, has_baseline=baseline is not None, params=params, norm=dict(norm) if norm else None)
    lazy = is_dask(ref)
    if lazy:
        stacked = _stacked_inputs(scene, baseline, names, ref)
        d = params.depth
        code1 = da.map_overlap(_on_stacked, *stacked, fn=_block1, depth={0: 0, 1: d, 2: d}, boundary="none", dtype=np.uint8,
                               trim=True, **fn_kw)[0]
        score = da.map_blocks(_on_stacked, *stacked, fn=_score_block, dtype=np.float32, **fn_kw)[0]
        valid = stacked[1][0].astype(bool)
    else:
        inputs = [scene[b].data for b in names] + [ref.data]
        if baseline is not None:
            inputs += [baseline["median"].sel(band=b).data for b in names] + [baseline["count"].data]
        code1 = _block1(*[np.asarray(a) for a in inputs], **fn_kw)
        score = _score_block(*[np.asarray(a) for a in inputs], **fn_kw)
        valid = np.asarray(ref.data, dtype=bool)
    lengths: tuple[int, ...] = ()
    best = None
    coords = {k: v for k, v in ref.coords.items()}
    if geom is not None:
        if lazy:
            code1 = code1.persist()
        wrap = lambda a: xr.DataArray(a, dims=ref.dims)  # noqa: E731
        best, _ = shadow_k.match(wrap(code1 & FLAG_CLOUD), wrap(code1 & _DARK_WEAK), wrap(valid), geom, params.shadow)
        lengths = shadow_k.window(best, geom, params.shadow) if best is not None else ()
    depth = _stage2_depth(params, geom if lengths else None, tuple(ref.shape))
    kw2 = dict(depth=depth, geom=geom, lengths=lengths, params=params)
    if lazy and depth[0] <= ref.shape[0] and depth[1] <= ref.shape[1]:
        code2 = da.map_overlap(lambda c, v: _stage2(c, v, **kw2), code1, valid, depth={0: depth[0], 1: depth[1]},
                               boundary={0: 0, 1: 0}, dtype=np.uint8, trim=True).rechunk(ref.data.chunks)
    elif lazy:  # a site smaller than the longest shadow: one block, padded like the numpy path
        code2 = da.map_blocks(_stage2_whole, code1.rechunk(-1), valid.rechunk(-1), dtype=np.uint8, **kw2).rechunk(ref.data.chunks)
    else:
        code2 = _stage2_whole(code1, valid, **kw2)
    cloud = xr.DataArray((code2 & 1).astype(bool), dims=ref.dims, coords=coords, attrs={"long_name": "cloud (buffered)"})
    shadow = xr.DataArray((code2 & 2).astype(bool), dims=ref.dims, coords=coords,
                          attrs={"long_name": "cloud shadow (buffered)", "shadow_length_px": -1 if best is None else int(best)})
    flags = xr.DataArray((code2 >> 2).astype(np.uint8), dims=ref.dims, coords=coords, attrs={
        "long_name": "mask flags", "flag_masks": list(FLAG_MEANINGS), "flag_meanings": " ".join(FLAG_MEANINGS.values())})
    score_da = xr.DataArray(score, dims=ref.dims, coords=coords, attrs={"long_name": "cloud score (0.5 = test threshold)", "units": "1"})
    return xr.Dataset({"cloud": cloud, "shadow": shadow, "flags": flags, "cloud_score": score_da})


def rough_obscured(scene: xr.Dataset, baseline: xr.Dataset, params: MaskParams = MaskParams()) -> xr.DataArray:
    """A quick, per-pixel, deliberately generous cloud-or-shadow guess without normalisation:
    used only to pick pixels for fitting the per-date radiometric normalisation. Works eagerly
    and lazily (plain xarray arithmetic)."""
    s = 1e-4
    blue, green, red, nir = (scene[b].astype("float32") * s for b in ("blue", "green", "red", "nir"))
    vis = (blue + green + red) / 3
    med = baseline["median"]
    bb, bn = med.sel(band="blue", drop=True) * s, med.sel(band="nir", drop=True) * s
    thick = vis > params.bright
    hazy = (blue - bb) > params.rough_blue
    dark = nir < params.rough_ratio * bn
    return (thick | hazy | dark).fillna(False).astype(bool).rename("rough_obscured")
