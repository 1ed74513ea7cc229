"""Scenes the mask tests share (tests/test_masks.py, tests/test_masks_chunks.py): land, water,
cloud, haze, soil, shadow and snow spectra, the masks' parameters with every value explicit, and
the helpers that paint a scene and wrap it as the kernels take it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import xarray as xr
from scipy import ndimage

from sitewatch.kernels.masks import MASK_BANDS, OPTIONAL_MASK_BANDS, MaskParams

ALL_BANDS = MASK_BANDS + OPTIONAL_MASK_BANDS

# Clear-sky land reflectance x 10000 and a water surface.
LAND = {"blue": 600, "green": 900, "red": 800, "nir": 2500, "swir16": 1800}
WATER = {"blue": 500, "green": 600, "red": 400, "nir": 300, "swir16": 150}
THICK = {"blue": 5000, "green": 5000, "red": 5000, "nir": 5200, "swir16": 4000}
# Uniform brightening: blue +800, green +500, red +300 (haze: blue rises most), nir +100.
HAZE_DELTA = {"blue": 800, "green": 500, "red": 300, "nir": 100, "swir16": 50}
# Exposed soil: blue +600, red +1200 (red rises more than blue).
SOIL_DELTA = {"blue": 600, "green": 900, "red": 1200, "nir": 200, "swir16": 900}
SHADOW = {"blue": 400, "green": 500, "red": 500, "nir": 1000, "swir16": 700}
SNOW = {"blue": 6000, "green": 6000, "red": 5800, "nir": 5000, "swir16": 500}

# Every parameter explicit, so the geometry below does not follow the next default tweak:
# a 9 x 9 opening (min_width_px=4), regrowth by up to 6 px, a 4 px buffer.
P = MaskParams(
    bright=0.35, whiteness=0.7, ndsi_snow=0.4, thin_blue=0.025, blue_red_ratio=0.75,
    shadow_ratio=0.85, shadow_ratio_red=0.9, rough_blue=0.06, rough_ratio=0.7, land_nir=0.06,
    min_obs=3, min_width_px=4, grow_px=6, buffer_px=4,
)
P0 = replace(P, buffer_px=0)  # the same without the buffer: masks equal the kept pixels exactly


def _background(h: int, w: int, seed: int | None = 0, noise: float = 20.0):
    """Noisy land scene, its clear-sky baseline (exact land values) and count (5 everywhere)."""
    rng = np.random.default_rng(seed)
    bands = {}
    for b, v in LAND.items():
        n = rng.normal(0.0, noise, (h, w)) if seed is not None else np.zeros((h, w))
        bands[b] = np.rint(v + n).astype(np.uint16)
    baseline = {b: np.full((h, w), v, np.float32) for b, v in LAND.items()}
    count = np.full((h, w), 5, np.int16)
    valid = np.ones((h, w), bool)
    return bands, valid, baseline, count


def _paint(bands, rows, cols, values=None, delta=None, baseline=None):
    for b in ALL_BANDS:
        if values is not None:
            bands[b][rows, cols] = values[b]
        if delta is not None:
            bands[b][rows, cols] = (baseline[b][rows, cols] + delta[b]).astype(np.uint16)


def _rect(h, w, rows, cols):
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


def _dilate(m, b):
    if b == 0:
        return m.copy()
    return ndimage.binary_dilation(m, structure=np.ones((2 * b + 1, 2 * b + 1), bool))


def _to_ds(bands, valid, chunks=None):
    ds = xr.Dataset(
        {b: (("y", "x"), a) for b, a in bands.items()} | {"valid": (("y", "x"), valid)},
        coords={"y": np.arange(valid.shape[0]) * -10.0, "x": np.arange(valid.shape[1]) * 10.0},
    )
    return ds.chunk(chunks) if chunks else ds


def _to_baseline_ds(baseline, count, chunks=None):
    names = list(ALL_BANDS)
    med = np.stack([baseline[b] for b in names])
    ds = xr.Dataset(
        {"median": (("band", "y", "x"), med), "mad": (("band", "y", "x"), np.full_like(med, 30.0)),
         "count": (("y", "x"), count)},
        coords={"band": names},
    )
    return ds.chunk(chunks) if chunks else ds


# ---------------------------------------------------------------- spectral / temporal rules
