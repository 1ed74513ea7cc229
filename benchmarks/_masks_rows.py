"""Report rows and data helpers of the mask benchmark (:mod:`benchmarks.masks`), shared by its synthetic and real-data parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._metrics import Counts

# Every Landsat 8 OLI L1 MTL file (pre-Collection and Collection 1) carries these for bands 1-9.
OLI_REFLECTANCE_MULT, OLI_REFLECTANCE_ADD = 2.0e-5, -0.1


def _row(dataset: str, method: str, truth: tuple[str, str], cloud: Counts | None, shadow: Counts | None, note: str = "",
         status: str = "ok", **extra: Any) -> dict:
    """One report row; ``truth`` = (short label, exact definition)."""
    return {"dataset": dataset, "method": method, "truth": truth[0], "truth_definition": truth[1], "status": status, "note": note,
            "cloud": cloud.to_dict() if cloud is not None else None,
            "shadow": shadow.to_dict() if shadow is not None else None, **extra}


def _missing(dataset: str, path: Path) -> dict:
    return _row(dataset, "-", ("-", "-"), None, None, note=f"data not found at {path}", status="data not found")


def _to_dn(reflectance: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Reflectance (0-1) as the kernels' uint16 reflectance x 10000, >= 1 where valid, 0 elsewhere."""
    dn = np.clip(np.rint(np.nan_to_num(reflectance) * 1e4), 1, 65535).astype(np.uint16)
    dn[~valid] = 0
    return dn


def _buffer(mask: np.ndarray, px: int) -> np.ndarray:
    """The library's own buffer (sitewatch.kernels.objects.dilate, as analysis applies it to
    provider flags), on a numpy mask."""
    import xarray as xr

    from sitewatch.kernels.objects import dilate

    return dilate(xr.DataArray(np.asarray(mask, dtype=bool), dims=("y", "x")), px).values
