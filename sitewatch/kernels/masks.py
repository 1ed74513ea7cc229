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

Then per mask, a morphological opening with a ``2 * min_width_px + 1`` square removes objects
narrower than that (aircraft, roofs and vehicles are not clouds), the surviving cores regrow by
up to ``grow_px`` into the candidate pixels (keeping thin fringes of real clouds), and a
dilation by ``buffer_px`` adds a safety buffer. The neighbourhood steps use ``map_overlap``
with depth ``2 * min_width_px + grow_px + buffer_px + 1`` so chunked results equal
whole-array results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from ._util import is_dask, require_2d_same_shape

MASK_BANDS = ("blue", "green", "red", "nir")  # required: 4-band (RGB+NIR) products work
OPTIONAL_MASK_BANDS = ("swir16",)  # used when present: snow test, shadow test


@dataclass(frozen=True)
class MaskParams:
    bright: float = 0.35
    whiteness: float = 0.7
    ndsi_snow: float = 0.4
    thin_blue: float = 0.025
    blue_red_ratio: float = 0.75
    shadow_ratio: float = 0.85
    shadow_ratio_red: float = 0.9
    rough_blue: float = 0.06
    rough_ratio: float = 0.7
    land_nir: float = 0.06
    min_obs: int = 3
    min_width_px: int = 4
    grow_px: int = 6
    buffer_px: int = 4

    def __post_init__(self) -> None:
        if self.min_width_px < 0 or self.buffer_px < 0 or self.grow_px < 0:
            raise ValueError(
                f"mask min_width_px/grow_px/buffer_px got {(self.min_width_px, self.grow_px, self.buffer_px)!r}; expected >= 0"
            )
        if self.min_obs < 1:
            raise ValueError(f"mask min_obs got {self.min_obs!r}; expected >= 1")

    @property
    def depth(self) -> int:
        return 2 * self.min_width_px + self.grow_px + self.buffer_px + 1


def _open_grow_buffer(mask: np.ndarray, r: int, grow: int, buffer_px: int) -> np.ndarray:
    """Opening with a ``2r+1`` square (drops objects narrower than that), then regrowth of the
    surviving cores by up to ``grow`` px back into ``mask`` (keeps the thin fringes and arms of
    real clouds), then a ``buffer_px`` dilation. Outside the array repeats the edge, so a cloud cut by the site edge survives if it reaches at least ``r + 1`` px into the site."""
    m = np.asarray(mask, dtype=bool).view(np.uint8)
    out = m
    if r > 0:
        size = 2 * r + 1
        out = ndimage.minimum_filter(out, size=size, mode="nearest")
        out = ndimage.maximum_filter(out, size=size, mode="nearest")
        if grow > 0:
            out = ndimage.maximum_filter(out, size=2 * grow + 1, mode="nearest") & m
    if buffer_px > 0:
        out = ndimage.maximum_filter(out, size=2 * buffer_px + 1, mode="nearest")
    return out.astype(bool)


def masks_np(
    bands: Mapping[str, np.ndarray],
    valid: np.ndarray,
    baseline: Mapping[str, np.ndarray] | None = None,
    count: np.ndarray | None = None,
    params: MaskParams = MaskParams(),
    norm: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(cloud, shadow)`` boolean ``(y, x)`` masks for one scene.

    ``bands``: uint16 reflectance x 10000 by common name (needs blue, green, red, nir; swir16
    is used when given, in the snow and shadow tests);
    ``valid``: bool; ``baseline``: clear-sky median by band name (float, same scale) and
    ``count`` of clear observations behind it, or ``None`` for single-date rules only;
    ``norm``: optional ``{band: (gain, offset)}`` (DN) applied to the scene before the temporal
    tests, so per-date radiometric differences do not read as haze or shadow.
    """
    lacking = [b for b in MASK_BANDS if b not in bands]
    if lacking:
        raise ValueError(f"cloud mask bands lack {lacking!r}; expected {MASK_BANDS!r}")
    names = MASK_BANDS + tuple(b for b in OPTIONAL_MASK_BANDS if b in bands)
    require_2d_same_shape("cloud mask", valid=valid, count=count, **{b: bands[b] for b in names})
    s = np.float32(1e-4)
    blue, green, red, nir = (np.asarray(bands[b], dtype=np.float32) * s for b in MASK_BANDS)
    swir = np.asarray(bands["swir16"], dtype=np.float32) * s if "swir16" in bands else None
    vis = (blue + green + red) / 3
    with np.errstate(divide="ignore", invalid="ignore"):
        white = (np.abs(blue - vis) + np.abs(green - vis) + np.abs(red - vis)) / vis
        snow = (green - swir) / (green + swir) > params.ndsi_snow if swir is not None else False
    thick = (vis > params.bright) & (white < params.whiteness) & (blue - 0.5 * red - 0.08 > 0) & ~snow
    cloud = thick
    shadow = np.zeros_like(thick)
    if baseline is not None:
        if count is None:
            raise ValueError("cloud mask got a baseline without its count; expected both or neither")
        lacking = [b for b in names if b not in baseline]
        if lacking:
            raise ValueError(f"cloud mask baseline lacks {lacking!r}; expected {names!r}")
        have = np.asarray(count) >= params.min_obs
        base = {b: np.nan_to_num(np.asarray(baseline[b], dtype=np.float32) * s) for b in names}
        bb, br, bn = base["blue"], base["red"], base["nir"]
        if norm is not None:
            g = {b: np.float32(norm[b][0]) if b in norm else np.float32(1) for b in names}
            o = {b: np.float32(norm[b][1] * 1e-4) if b in norm else np.float32(0) for b in names}
            blue, red, nir = (g[b] * v + o[b] for b, v in (("blue", blue), ("red", red), ("nir", nir)))
            swir = g["swir16"] * swir + o["swir16"] if swir is not None else None
        d_blue, d_red, d_nir = blue - bb, red - br, nir - bn
        thin = have & (d_blue > params.thin_blue) & (d_blue >= params.blue_red_ratio * d_red) & (d_nir > -0.02)
        cloud = cloud | thin
        land = bn > params.land_nir
        shadow = (
            have & land
            & (nir < params.shadow_ratio * bn)
            & (red < params.shadow_ratio_red * br)
        )
        if swir is not None:
            shadow &= swir < params.shadow_ratio * base["swir16"]
    valid = np.asarray(valid, dtype=bool)
    cloud = _open_grow_buffer(cloud & valid, params.min_width_px, params.grow_px, params.buffer_px) & valid
    shadow = _open_grow_buffer(shadow & valid, params.min_width_px, params.grow_px, params.buffer_px) & valid & ~cloud
    return cloud, shadow


def _block(*arrays: np.ndarray, names: tuple[str, ...], has_baseline: bool, params: MaskParams,
           norm: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    nb = len(names)
    bands = dict(zip(names, arrays[:nb]))
    valid = arrays[nb]
    baseline = dict(zip(names, arrays[nb + 1: 2 * nb + 1])) if has_baseline else None
    count = arrays[2 * nb + 1] if has_baseline else None
    cloud, shadow = masks_np(bands, valid, baseline, count, params, norm)
    return cloud.astype(np.uint8) | (shadow.astype(np.uint8) << 1)


def masks(
    scene: xr.Dataset,
    baseline: xr.Dataset | None = None,
    params: MaskParams = MaskParams(),
    norm: Mapping[str, tuple[float, float]] | None = None,
) -> xr.Dataset:
    """Cloud and shadow masks for ``scene`` (a Dataset with ``(y, x)`` band variables and
    ``valid``) against ``baseline`` (output of :func:`~sitewatch.kernels.baseline.robust_baseline`
    with a ``band`` coordinate of common names) or ``None``. Returns a Dataset with ``cloud`` and
    ``shadow``; lazy (``map_overlap``) when the scene is dask-backed. ``swir16`` is used when the
    scene (and the baseline) have it."""
    lacking = [b for b in (*MASK_BANDS, "valid") if b not in scene.data_vars]
    if lacking:
        raise ValueError(f"scene lacks {lacking!r}; expected bands {MASK_BANDS!r} and 'valid'")
    names = MASK_BANDS + tuple(
        b for b in OPTIONAL_MASK_BANDS
        if b in scene.data_vars and (baseline is None or b in baseline["median"].coords["band"].values))
    ref = scene["valid"]
    if ref.dims != ("y", "x"):
        raise ValueError(f"scene 'valid' dims got {ref.dims!r}; expected ('y', 'x')")
    inputs = [scene[b].data for b in names] + [ref.data]
    if baseline is not None:
        inputs += [baseline["median"].sel(band=b).data for b in names] + [baseline["count"].data]
    fn_kw = dict(names=names, has_baseline=baseline is not None, params=params, norm=dict(norm) if norm else None)
    if is_dask(ref):
        chunks = ref.data.chunks
        inputs = [a.rechunk(chunks) if isinstance(a, da.Array) else da.from_array(a, chunks=chunks) for a in inputs]
        code = da.map_overlap(
            _block, *inputs, depth=params.depth, boundary="none", dtype=np.uint8, trim=True, **fn_kw,
        )
    else:
        code = _block(*[np.asarray(a) for a in inputs], **fn_kw)
    coords = {k: v for k, v in ref.coords.items()}
    cloud = xr.DataArray((code & 1).astype(bool), dims=ref.dims, coords=coords, attrs={"long_name": "cloud (buffered)"})
    shadow = xr.DataArray((code & 2).astype(bool), dims=ref.dims, coords=coords, attrs={"long_name": "cloud shadow (buffered)"})
    return xr.Dataset({"cloud": cloud, "shadow": shadow})


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
