"""Provider quality masks: the cloud, shadow, snow, water and fill flags that scene producers
ship with their products, decoded into boolean layers.

Decoders (``kind``):

* ``"fmask"``: Fmask class rasters (0 clear land, 1 water, 2 cloud shadow, 3 snow, 4 cloud,
  255 fill), as in the Landsat surface-reflectance products Fmask was run on;
* ``"scl"``: Sentinel-2 L2A Scene Classification (0 no data, 1 saturated or defective, 2 dark
  area / topographic shadow, 3 cloud shadow, 4 vegetation, 5 not vegetated, 6 water,
  7 unclassified, 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus,
  11 snow or ice);
* ``"qa_pixel"``: Landsat Collection 2 ``QA_PIXEL`` bits (0 fill, 1 dilated cloud, 2 cirrus,
  3 cloud, 4 cloud shadow, 5 snow, 6 clear, 7 water; 8-9 cloud, 10-11 shadow, 12-13 snow,
  14-15 cirrus confidence);
* ``"bqa-pre"``: the pre-Collection Landsat 8 ``BQA`` band (bit 0 fill; two-bit confidences:
  4-5 water, 10-11 snow/ice, 12-13 cirrus, 14-15 cloud; 0 not determined, 1 low, 2 medium,
  3 high). It has no shadow flag.

Snow and water are flagged separately and never counted as cloud. Every layer is a per-pixel
bit/class test, so chunked and whole-array results are identical; :func:`decode` runs through
``xr.apply_ufunc(..., dask="parallelized")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

LAYERS = ("fill", "cloud", "shadow", "snow", "water")
KINDS = ("fmask", "scl", "qa_pixel", "bqa-pre")


@dataclass(frozen=True)
class QAParams:
    """How provider flags map to sitewatch's layers.

    ``cirrus_as_cloud``: thin cirrus counts as cloud (SCL 10, QA_PIXEL bit 2, BQA cirrus
    confidence >= ``min_confidence``). ``dilated_as_cloud``: QA_PIXEL's dilated-cloud bit
    counts as cloud. ``min_confidence``: the lowest two-bit confidence (1 low, 2 medium,
    3 high) that sets a flag in ``bqa-pre``. ``scl_dark_as_shadow``: SCL class 2 (dark area
    pixels, cast shadows in newer processing baselines) counts as shadow.
    """

    cirrus_as_cloud: bool = True
    dilated_as_cloud: bool = True
    min_confidence: int = 2
    scl_dark_as_shadow: bool = False

    def __post_init__(self) -> None:
        if self.min_confidence not in (1, 2, 3):
            raise ValueError(f"QA min_confidence got {self.min_confidence!r}; expected 1 (low), 2 (medium) or 3 (high)")


def _bit(qa: np.ndarray, n: int) -> np.ndarray:
    return (qa >> n) & 1 == 1


def _conf(qa: np.ndarray, n: int) -> np.ndarray:
    return (qa >> n) & 3


def _fmask(qa: np.ndarray, p: QAParams) -> tuple[np.ndarray, ...]:
    return qa == 255, qa == 4, qa == 2, qa == 3, qa == 1


def _scl(qa: np.ndarray, p: QAParams) -> tuple[np.ndarray, ...]:
    cloud_classes = [8, 9, 10] if p.cirrus_as_cloud else [8, 9]
    shadow_classes = [2, 3] if p.scl_dark_as_shadow else [3]
    return qa == 0, np.isin(qa, cloud_classes), np.isin(qa, shadow_classes), qa == 11, qa == 6


def _qa_pixel(qa: np.ndarray, p: QAParams) -> tuple[np.ndarray, ...]:
    fill = _bit(qa, 0)
    cloud = _bit(qa, 3)
    if p.dilated_as_cloud:
        cloud = cloud | _bit(qa, 1)
    if p.cirrus_as_cloud:
        cloud = cloud | _bit(qa, 2)
    return fill, cloud & ~fill, _bit(qa, 4) & ~fill, _bit(qa, 5) & ~fill, _bit(qa, 7) & ~fill


def _bqa_pre(qa: np.ndarray, p: QAParams) -> tuple[np.ndarray, ...]:
    fill = _bit(qa, 0)
    k = p.min_confidence
    cloud = _conf(qa, 14) >= k
    if p.cirrus_as_cloud:
        cloud = cloud | (_conf(qa, 12) >= k)
    no_shadow = np.zeros(qa.shape, dtype=bool)
    return fill, cloud & ~fill, no_shadow, (_conf(qa, 10) >= k) & ~fill, (_conf(qa, 4) >= k) & ~fill


_DECODERS = {"fmask": _fmask, "scl": _scl, "qa_pixel": _qa_pixel, "bqa-pre": _bqa_pre}


def decode_np(qa: np.ndarray, kind: str, params: QAParams = QAParams()) -> dict[str, np.ndarray]:
    """Boolean ``fill``, ``cloud``, ``shadow``, ``snow``, ``water`` layers from a provider QA
    array (any shape, integer dtype). The input is not modified."""
    if kind not in _DECODERS:
        raise ValueError(f"QA kind got {kind!r}; expected one of {KINDS!r}")
    qa = np.asarray(qa)
    if not np.issubdtype(qa.dtype, np.integer):
        raise ValueError(f"QA array dtype got {qa.dtype}; expected an integer QA/class band")
    q = qa.astype(np.int64, copy=False) if qa.dtype.kind == "i" else qa
    return dict(zip(LAYERS, (np.asarray(a, dtype=bool) for a in _DECODERS[kind](q, params))))


def decode(qa: xr.DataArray, kind: str, params: QAParams = QAParams()) -> xr.Dataset:
    """:func:`decode_np` over a DataArray (eager or dask): a Dataset of boolean layers with
    ``qa``'s dims and coords."""
    if kind not in _DECODERS:
        raise ValueError(f"QA kind got {kind!r}; expected one of {KINDS!r}")
    if not np.issubdtype(qa.dtype, np.integer):
        raise ValueError(f"QA array {qa.name!r} dtype got {qa.dtype}; expected an integer QA/class band")

    def stacked(a: np.ndarray) -> tuple[np.ndarray, ...]:
        out = decode_np(a, kind, params)
        return tuple(out[name] for name in LAYERS)

    layers = xr.apply_ufunc(
        stacked, qa, dask="parallelized", output_dtypes=[bool] * len(LAYERS),
        output_core_dims=[[] for _ in LAYERS], keep_attrs=False,
    )
    ds = xr.Dataset(dict(zip(LAYERS, layers)))
    for name in LAYERS:
        ds[name].attrs = {"long_name": f"{name} ({kind} provider flag)"}
    return ds
