"""Scenes and baselines the change tests share (tests/test_change.py, tests/test_change_chunks.py)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from sitewatch.kernels.change import ChangeParams

BANDS = ["blue", "green", "red", "nir"]
# The gain/offset pathway and plain threshold these tests were written for (ChangeParams defaults
# before issue 6's quality work): no co-registration, no hysteresis, floor_rel 0.08, threshold 5.
# The default pathway (co-registration + hysteresis) is tested in tests/test_register.py.
LEGACY = ChangeParams(threshold=5.0, floor_rel=0.08, grow_threshold=None, coregister=False, indices=())


def _baseline(h: int, w: int, seed: int = 0):
    """Baseline with integer medians in [500, 3000), MAD 50, count 5 except a few low-count
    and zero-count pixels (NaN median/MAD there, as robust_baseline produces)."""
    rng = np.random.default_rng(seed)
    median = rng.integers(500, 3000, size=(len(BANDS), h, w)).astype(np.float32)
    mad = np.full((len(BANDS), h, w), 50.0, np.float32)
    count = np.full((h, w), 5, np.int16)
    count[0:4, :] = 2  # below min_obs
    count[4:6, 0:30] = 0
    median[:, 4:6, 0:30] = np.nan
    mad[:, 4:6, 0:30] = np.nan
    return median, mad, count


def _scene_from(values: np.ndarray, h: int, w: int):
    return xr.Dataset(
        {b: (("y", "x"), values[i]) for i, b in enumerate(BANDS)},
        coords={"y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0},
    )


def _baseline_ds(median, mad, count):
    h, w = count.shape
    return xr.Dataset(
        {"median": (("band", "y", "x"), median), "mad": (("band", "y", "x"), mad), "count": (("y", "x"), count)},
        coords={"band": BANDS, "y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0},
    )


def _clear(h: int, w: int, seed: int = 1, p: float = 0.9):
    rng = np.random.default_rng(seed)
    c = rng.random((h, w)) < p
    return xr.DataArray(c, dims=("y", "x"), coords={"y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0})


def _noisy_scene(median, seed=2, sigma=40.0, gain=1.0, offset=0.0):
    """Scene whose normalised values scatter around the baseline median: x = (m - o) / g + noise."""
    rng = np.random.default_rng(seed)
    m = np.nan_to_num(median, nan=1500.0)
    x = (m - offset) / gain + rng.normal(0.0, sigma, m.shape)
    return np.clip(np.rint(x), 0, 65535).astype(np.uint16)


# ---------------------------------------------------------------- normalisation
