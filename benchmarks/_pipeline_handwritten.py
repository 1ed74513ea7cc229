"""The hand-written baseline of the pipeline benchmark: what a user might write instead of
sitewatch, plain rasterio + numpy (+ scipy for the objects), whole scenes in memory.

For each date in time order: read every band of the scene whole (``rasterio.open(...).read(1)``),
a brightness + NDSI cloud test and a dark-NIR shadow test, the median/MAD of each pixel's last
``window`` clear observations (kept in memory as float32 stacks with NaN where not clear), the
RMS of per-band robust z-scores against them, a change mask, connected objects
(``scipy.ndimage.label``), and one GeoTIFF per date with the cloud/shadow/change layers and the
score. No cube, no chunking, no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class HandParams:
    window: int = 8  # last clear observations per pixel in the baseline
    cloud_brightness: float = 0.2  # mean visible reflectance above this ...
    ndsi_max: float = 0.4  # ... and NDSI below this (snow is bright too): cloud
    shadow_nir: float = 0.1  # NIR below this, not water (NDWI < 0): shadow
    z_threshold: float = 4.0  # RMS robust z-score above this: change
    mad_floor: float = 0.01  # reflectance
    min_object_px: int = 10

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window got {self.window!r}; expected >= 1 observation")


def _read_scene(item: dict[str, Any], item_dir: Path, bands: Sequence[str]) -> tuple[np.ndarray, Any]:
    import rasterio

    arrays, profile = [], None
    for b in bands:
        href = item["assets"][b]["href"].removeprefix("file://")
        path = Path(href) if Path(href).is_absolute() else (item_dir / href)
        with rasterio.open(path) as src:
            arrays.append(src.read(1))
            profile = profile or src.profile
    return np.stack(arrays), profile


def run(items: Sequence[Path], bands: Sequence[str], out_dir: Path, params: HandParams = HandParams()) -> dict[str, Any]:
    """Process the STAC ``items`` (paths, in time order); returns per-date counts."""
    import json

    import rasterio
    from scipy import ndimage

    out_dir.mkdir(parents=True, exist_ok=True)
    idx = {b: i for i, b in enumerate(bands)}
    history: list[np.ndarray] = []
    dates = []
    for item_path in items:
        item = json.loads(Path(item_path).read_text())
        dn, profile = _read_scene(item, Path(item_path).parent, bands)
        valid = (dn > 0).all(axis=0)
        refl = dn.astype(np.float32) * np.float32(1e-4)
        blue, green, red, nir, swir = (refl[idx[b]] for b in ("blue", "green", "red", "nir", "swir16"))
        with np.errstate(divide="ignore", invalid="ignore"):
            ndsi = (green - swir) / (green + swir)
            ndwi = (green - nir) / (green + nir)
        cloud = valid & ((blue + green + red) / 3 > params.cloud_brightness) & (ndsi < params.ndsi_max)
        shadow = valid & ~cloud & (nir < params.shadow_nir) & (ndwi < 0)
        clear = valid & ~cloud & ~shadow
        score = np.full(valid.shape, np.nan, np.float32)
        n_objects = 0
        if history:
            stack = np.stack(history)  # (t, band, y, x), NaN where not clear
            z2 = np.zeros(valid.shape, np.float32)
            for b in range(len(bands)):  # band by band: one (t, y, x) stack of temporaries at a time
                with np.errstate(all="ignore"):
                    med = np.nanmedian(stack[:, b], axis=0)
                    mad = 1.4826 * np.nanmedian(np.abs(stack[:, b] - med), axis=0)
                    z2 += ((refl[b] - med) / np.maximum(mad, params.mad_floor)) ** 2
            score = np.where(clear, np.sqrt(z2 / len(bands)), np.nan).astype(np.float32)
            change = np.nan_to_num(score) > params.z_threshold
            labels, n = ndimage.label(change, structure=np.ones((3, 3)))
            sizes = np.bincount(labels.ravel())[1:]
            n_objects = int((sizes >= params.min_object_px).sum())
        else:
            change = np.zeros(valid.shape, bool)
        history.append(np.where(clear, refl, np.nan).astype(np.float32))
        history = history[-params.window:]
        prof = dict(profile, count=4, dtype="float32", nodata=None, compress="deflate", tiled=True, blockxsize=256, blockysize=256)
        prof.pop("photometric", None)
        with rasterio.open(out_dir / f"{item['id']}.tif", "w", **prof) as dst:
            dst.write(np.stack([cloud, shadow, change]).astype(np.float32), (1, 2, 3))
            dst.write(score, 4)
        dates.append({"scene_id": item["id"], "cloud_fraction": float((cloud | shadow).sum() / max(valid.sum(), 1)),
                      "objects": n_objects})
    return {"dates": dates, "objects": sum(d["objects"] for d in dates)}
