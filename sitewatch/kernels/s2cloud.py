"""s2cloudless cloud probability and mask for Sentinel-2 L1C, chunk-exact on dask.

The LightGBM model that ships inside the ``s2cloudless`` wheel is loaded directly (importing the
``s2cloudless`` package would pull in ``sentinelhub`` at import time, about 3 s) and applied per
pixel to the 10 model bands (B01, B02, B04, B05, B08, B8A, B09, B10, B11, B12; TOA reflectance
0-1). The mask then follows s2cloudless exactly: probability averaged over a disk of radius
``average_over`` (OpenCV ``filter2D``, reflected border), thresholded (``> threshold``) and
dilated by a disk of radius ``dilation_size``.

On dask the probability is a per-pixel ``map_blocks``; averaging and dilation are one
``map_overlap`` with depth ``average_over + dilation_size`` and no boundary padding, so each
chunk sees the true image edge where the whole-array run does, and chunked masks equal
whole-array masks.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ._util import is_dask

MODEL_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
ALL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
MODEL_FILENAME = "pixel_s2_cloud_detector_lightGBM_v0.1.txt"


@dataclass(frozen=True)
class S2CloudlessParams:
    """s2cloudless post-processing: ``threshold`` on the averaged probability, ``average_over``
    and ``dilation_size`` disk radii in pixels (0 switches a step off). Defaults are the
    s2cloudless package's own (0.4, 1, 1); they reproduce the reference mask in
    ../shared/data/s2cloudless-reference exactly (Sentinel Hub's docs suggest 4 and 2 at 10 m)."""

    threshold: float = 0.4
    average_over: int = 1
    dilation_size: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"s2cloudless threshold got {self.threshold!r}; expected a probability in [0, 1]")
        if self.average_over < 0 or self.dilation_size < 0:
            raise ValueError(
                f"s2cloudless average_over/dilation_size got {(self.average_over, self.dilation_size)!r}; expected >= 0"
            )

    @property
    def depth(self) -> int:
        return self.average_over + self.dilation_size


def model_path() -> str:
    """Path of the LightGBM model inside the installed s2cloudless wheel (not imported)."""
    spec = importlib.util.find_spec("s2cloudless")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("s2cloudless is not installed; expected the s2cloudless package (pip install s2cloudless)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", MODEL_FILENAME)
    if not os.path.exists(path):
        raise ImportError(f"s2cloudless model file got none at {path!r}; expected the model shipped in the wheel")
    return path


@functools.lru_cache(maxsize=1)
def _booster():
    from lightgbm import Booster

    return Booster(model_file=model_path())


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.circle(np.zeros((2 * radius + 1, 2 * radius + 1), np.uint8), (radius, radius), radius, color=1, thickness=-1)


def cloud_probability_np(bands: np.ndarray) -> np.ndarray:
    """Cloud probability ``(y, x)`` float32 from ``bands`` ``(10, y, x)``: the model bands in
    :data:`MODEL_BANDS` order as TOA reflectance (0-1). NaN where any band is NaN."""
    bands = np.asarray(bands)
    if bands.ndim != 3 or bands.shape[0] != len(MODEL_BANDS):
        raise ValueError(f"s2cloudless bands shape got {bands.shape!r}; expected ({len(MODEL_BANDS)}, y, x) in order {MODEL_BANDS!r}")
    _, h, w = bands.shape
    pixels = np.moveaxis(bands, 0, -1).reshape(-1, len(MODEL_BANDS))
    nan = np.isnan(pixels).any(axis=1)
    prob = np.full(h * w, np.nan, dtype=np.float32)
    if (~nan).any():
        prob[~nan] = _booster().predict(pixels[~nan].astype(np.float64, copy=False))
    return prob.reshape(h, w)


def cloud_mask_np(probability: np.ndarray, params: S2CloudlessParams = S2CloudlessParams()) -> np.ndarray:
    """s2cloudless's mask from a probability ``(y, x)``: disk average (reflected border),
    ``> threshold``, disk dilation. NaN probability counts as 0 (not cloud)."""
    import cv2

    p = np.nan_to_num(np.asarray(probability, dtype=np.float32), nan=0.0)
    if p.ndim != 2:
        raise ValueError(f"s2cloudless probability got {p.ndim}-d array; expected 2-d (y, x)")
    if params.average_over > 0:
        disk = _disk(params.average_over).astype(np.float64)
        p = cv2.filter2D(p, -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT)
    mask = (p > params.threshold).astype(np.uint8)
    if params.dilation_size > 0:
        mask = cv2.dilate(mask, _disk(params.dilation_size))
    return mask.astype(bool)


def s2cloudless_np(bands: np.ndarray, params: S2CloudlessParams = S2CloudlessParams()) -> tuple[np.ndarray, np.ndarray]:
    """``(probability, mask)`` for one scene: see :func:`cloud_probability_np` and :func:`cloud_mask_np`."""
    prob = cloud_probability_np(bands)
    return prob, cloud_mask_np(prob, params)


def s2cloudless(bands: xr.DataArray, params: S2CloudlessParams = S2CloudlessParams()) -> xr.Dataset:
    """:func:`s2cloudless_np` on a ``(band, y, x)`` DataArray whose ``band`` coordinate names
    Sentinel-2 bands (``B01`` ... ``B12``, ``B8A``; the 10 model bands or all 13), eager or dask.
    Returns a Dataset with ``cloud_probability`` (float32) and ``cloud`` (bool) over ``(y, x)``."""
    if set(bands.dims) != {"band", "y", "x"}:
        raise ValueError(f"s2cloudless input dims got {bands.dims!r}; expected ('band', 'y', 'x')")
    names = [str(b) for b in bands["band"].values] if "band" in bands.coords else []
    lacking = [b for b in MODEL_BANDS if b not in names]
    if lacking:
        raise ValueError(f"s2cloudless input lacks band(s) {lacking!r}; expected all of {MODEL_BANDS!r} in the 'band' coordinate")
    x = bands.sel(band=list(MODEL_BANDS)).transpose("band", "y", "x")
    template = x.isel(band=0, drop=True)
    if is_dask(x):
        data = x.data.astype(np.float32).rechunk({0: -1})
        prob = data.map_blocks(lambda b: cloud_probability_np(b), drop_axis=0, dtype=np.float32)
        if params.depth > 0:
            mask = prob.map_overlap(cloud_mask_np, depth=params.depth, boundary="none", dtype=bool, params=params)
        else:
            mask = prob.map_blocks(cloud_mask_np, dtype=bool, params=params)
    else:
        prob, mask = s2cloudless_np(x.values.astype(np.float32, copy=False), params)
    out = xr.Dataset({
        "cloud_probability": template.copy(data=prob).astype(np.float32),
        "cloud": template.copy(data=mask),
    })
    out["cloud_probability"].attrs = {"long_name": "s2cloudless cloud probability", "units": "1"}
    out["cloud"].attrs = {"long_name": "s2cloudless cloud mask", "threshold": params.threshold,
                          "average_over": params.average_over, "dilation_size": params.dilation_size}
    return out


__all__ = ["ALL_BANDS", "MODEL_BANDS", "S2CloudlessParams", "cloud_mask_np", "cloud_probability_np", "s2cloudless", "s2cloudless_np"]
