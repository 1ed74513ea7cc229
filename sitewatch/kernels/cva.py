"""Change vector analysis (CVA) between two dates with an automatic threshold.

Entry points
------------
* :func:`cva_magnitude_np` / :func:`cva_magnitude` -- per-pixel length of the spectral change
  vector ``|(gain * after + offset - before) / scale|`` over the bands (float32; NaN where not
  ``use``). ``gain``/``offset`` (per band, applied to ``after``) come from a radiometric
  normalisation such as :func:`sitewatch.kernels.normalise.fit_normalisation`; ``scale``
  (per band) weighs the bands, e.g. by their noise.
* :func:`histogram` -- the magnitude histogram with a fixed range and bin count, computed as a
  sum over dask chunks (``dask.array.histogram``; the scene is never loaded whole). Values
  above the range count in the top bin.
* :func:`otsu_threshold` and :func:`gmm_threshold` -- thresholds from that histogram: Otsu's
  between-class-variance maximum, or the crossing of the two weighted components of a 1-d
  Gaussian mixture fitted by EM to the binned values.
* :func:`cva` -- the composition: magnitude, threshold (one small reduction is computed) and
  ``change = magnitude > threshold``, as a Dataset with the threshold in the attributes.

Histogram counts are integers, so the threshold is identical whatever the chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import xarray as xr

from ._util import is_dask

METHODS = ("otsu", "gmm")


@dataclass(frozen=True)
class CVAParams:
    """``method``: ``"otsu"`` or ``"gmm"``; ``bins``: histogram bins over ``[0, hist_max]``;
    ``hist_max``: upper end of the histogram (magnitude units; ``None``: the scene's maximum,
    one extra reduction); ``gmm_iter``: EM iterations of the mixture."""

    method: str = "otsu"
    bins: int = 1024
    hist_max: float | None = None
    gmm_iter: int = 200

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"CVA method got {self.method!r}; expected one of {METHODS!r}")
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 8:
            raise ValueError(f"CVA bins got {self.bins!r}; expected an integer >= 8")
        if self.hist_max is not None and not (math.isfinite(self.hist_max) and self.hist_max > 0):
            raise ValueError(f"CVA hist_max got {self.hist_max!r}; expected None or a positive number")
        if self.gmm_iter < 1:
            raise ValueError(f"CVA gmm_iter got {self.gmm_iter!r}; expected >= 1")


# ---------------------------------------------------------------- magnitude

def _per_band(name: str, v, nb: int, default: float) -> np.ndarray:
    if v is None:
        return np.full(nb, default, np.float32)
    a = np.asarray(v, dtype=np.float32)
    if a.shape != (nb,):
        raise ValueError(f"CVA {name} got shape {a.shape!r}; expected ({nb},), one value per band")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"CVA {name} got {a.tolist()!r}; expected finite values")
    return a


def cva_magnitude_np(before: np.ndarray, after: np.ndarray, use: np.ndarray | None = None,
                     gain=None, offset=None, scale=None) -> np.ndarray:
    """Change-vector length (float32, ``(...)``) of ``before``/``after`` shaped ``(..., band)``;
    ``use`` ``(...)`` bool (NaN where False or where any band is not finite). Inputs are not
    modified."""
    before = np.asarray(before)
    after = np.asarray(after)
    if before.shape != after.shape or before.ndim < 1:
        raise ValueError(f"CVA before/after shapes got {(before.shape, after.shape)!r}; expected equal (..., band)")
    nb = before.shape[-1]
    g, o, s = _per_band("gain", gain, nb, 1.0), _per_band("offset", offset, nb, 0.0), _per_band("scale", scale, nb, 1.0)
    if np.any(s <= 0):
        raise ValueError(f"CVA scale got {s.tolist()!r}; expected positive values")
    d = (after.astype(np.float32) * g + o - before.astype(np.float32)) / s
    mag = np.sqrt(np.sum(d * d, axis=-1, dtype=np.float32)).astype(np.float32)
    if use is not None:
        use = np.asarray(use, bool)
        if use.shape != mag.shape:
            raise ValueError(f"CVA use shape got {use.shape!r}; expected {mag.shape!r}")
        mag = np.where(use, mag, np.float32(np.nan))
    return mag


def check_pair(before: xr.DataArray, after: xr.DataArray, what: str) -> None:
    """Both ``(band, y, x)`` DataArrays on the same grid with the same number of bands."""
    for name, a in (("before", before), ("after", after)):
        if set(a.dims) != {"band", "y", "x"}:
            raise ValueError(f"{what} {name} dims got {tuple(a.dims)!r}; expected ('band', 'y', 'x')")
    if before.sizes["band"] != after.sizes["band"]:
        raise ValueError(f"{what}: band counts got before={before.sizes['band']} and after={after.sizes['band']}; expected equal")
    for d in ("y", "x"):
        if before.sizes[d] != after.sizes[d]:
            raise ValueError(f"{what}: inputs on different grids: {d} sizes {before.sizes[d]} vs {after.sizes[d]}")
        if d in before.coords and d in after.coords and not np.array_equal(before[d].values, after[d].values):
            raise ValueError(f"{what}: inputs on different grids: {d} coordinates differ")


def _band_last(a: xr.DataArray) -> xr.DataArray:
    a = a.transpose("y", "x", "band")
    return a.chunk({"band": -1}) if is_dask(a) else a


def cva_magnitude(before: xr.DataArray, after: xr.DataArray, use: xr.DataArray | None = None,
                  gain=None, offset=None, scale=None) -> xr.DataArray:
    """:func:`cva_magnitude_np` on ``(band, y, x)`` DataArrays (lazy on dask); result ``(y, x)``
    float32 with ``before``'s coordinates."""
    check_pair(before, after, "CVA")
    b = _band_last(before)
    a = _band_last(after.assign_coords({d: before[d] for d in ("band", "y", "x") if d in before.coords}))
    if use is None:
        use = xr.ones_like(b.isel(band=0, drop=True), dtype=bool)
    if set(use.dims) != {"y", "x"}:
        raise ValueError(f"CVA use dims got {tuple(use.dims)!r}; expected ('y', 'x')")
    mag = xr.apply_ufunc(
        cva_magnitude_np, b, a, use,
        kwargs={"gain": gain, "offset": offset, "scale": scale},
        input_core_dims=[["band"], ["band"], []], output_core_dims=[[]],
        dask="parallelized", output_dtypes=[np.float32],
    )
    return mag.transpose("y", "x").rename("cva_magnitude").assign_attrs(long_name="change vector magnitude")


# ---------------------------------------------------------------- histogram and thresholds

def histogram(values: xr.DataArray, bins: int, hist_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer counts (``bins``) and edges (``bins + 1``) of the finite ``values`` over
    ``[0, hist_max]``; values above ``hist_max`` count in the top bin, NaN is left out. Summed
    over dask chunks when ``values`` is dask-backed (a small computed reduction)."""
    if not (math.isfinite(hist_max) and hist_max > 0):
        raise ValueError(f"histogram hist_max got {hist_max!r}; expected a positive number")
    edges = np.linspace(0.0, float(hist_max), bins + 1)
    top = np.nextafter(np.float32(hist_max), np.float32(0))
    data = values.data
    if is_dask(values):
        import dask.array as da

        clipped = da.where(da.isfinite(data), da.minimum(data, top), np.float32(-1))
        counts, _ = da.histogram(clipped, bins=edges)
        counts = np.asarray(counts.compute())
    else:
        data = np.asarray(data)
        clipped = np.where(np.isfinite(data), np.minimum(data, top), np.float32(-1))
        counts, _ = np.histogram(clipped, bins=edges)
    return counts.astype(np.int64), edges


def otsu_threshold(counts: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's threshold (the upper edge of the last bin of the lower class) maximising the
    between-class variance of a histogram."""
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or edges.shape != (counts.size + 1,):
        raise ValueError(f"otsu: counts/edges shapes got {(counts.shape, edges.shape)!r}; expected (n,) and (n + 1,)")
    total = counts.sum()
    if total <= 0:
        raise ValueError("otsu: got an empty histogram; expected counted values (no usable pixel?)")
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts)
    m0 = np.cumsum(counts * centres)
    w1 = total - w0
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 / total - m0) ** 2 / (w0 * w1 / total)
    between = np.where((w0 > 0) & (w1 > 0), between, -np.inf)
    k = int(np.argmax(between))
    return float(edges[k + 1])


def gmm_threshold(counts: np.ndarray, edges: np.ndarray, n_iter: int = 200) -> float:
    """Threshold between the two components of a 1-d Gaussian mixture fitted by EM to the binned
    values (initialised by the Otsu split): the first value above the lower mean where the
    upper component's weighted density exceeds the lower one's. Falls back to Otsu when the
    mixture collapses (a component with no weight or no spread)."""
    counts = np.asarray(counts, np.float64)
    t0 = otsu_threshold(counts, edges)
    x = 0.5 * (edges[:-1] + edges[1:])
    lo = x < t0
    if counts[lo].sum() == 0 or counts[~lo].sum() == 0:
        return t0
    width = float(edges[1] - edges[0])
    pi = np.array([counts[lo].sum(), counts[~lo].sum()]) / counts.sum()
    mu = np.array([np.average(x[lo], weights=counts[lo]), np.average(x[~lo], weights=counts[~lo])])
    var = np.array([np.average((x[lo] - mu[0]) ** 2, weights=counts[lo]),
                    np.average((x[~lo] - mu[1]) ** 2, weights=counts[~lo])]) + width * width / 12
    for _ in range(n_iter):
        dens = pi[:, None] * np.exp(-0.5 * (x[None] - mu[:, None]) ** 2 / var[:, None]) / np.sqrt(2 * np.pi * var[:, None])
        tot = dens.sum(0)
        tot[tot == 0] = 1e-300
        r = dens / tot * counts[None]
        nk = r.sum(1)
        if np.any(nk <= 0):
            return t0
        new_mu = (r * x[None]).sum(1) / nk
        var = (r * (x[None] - new_mu[:, None]) ** 2).sum(1) / nk + width * width / 12
        pi = nk / nk.sum()
        done = np.allclose(new_mu, mu, rtol=0, atol=width * 1e-3)
        mu = new_mu
        if done:
            break
    order = np.argsort(mu)
    pi, mu, var = pi[order], mu[order], var[order]
    dens = pi[:, None] * np.exp(-0.5 * (x[None] - mu[:, None]) ** 2 / var[:, None]) / np.sqrt(2 * np.pi * var[:, None])
    above = (x > mu[0]) & (dens[1] > dens[0])
    if not above.any():
        return t0
    return float(edges[int(np.argmax(above))])


def threshold(magnitude: xr.DataArray, params: CVAParams = CVAParams()) -> tuple[float, dict]:
    """Automatic threshold of ``magnitude`` by ``params.method``; also returns the histogram
    summary (``hist_max``, ``pixels``)."""
    hist_max = params.hist_max
    if hist_max is None:
        m = magnitude.max(skipna=True)
        hist_max = float(m.compute() if is_dask(m) else m)
        if not math.isfinite(hist_max):
            raise ValueError("CVA: got no usable pixel (magnitude is NaN everywhere); expected some pixels in `use`")
        hist_max = max(hist_max, 1e-6)
    counts, edges = histogram(magnitude, params.bins, hist_max)
    if counts.sum() == 0:
        raise ValueError("CVA: got no usable pixel (magnitude is NaN everywhere); expected some pixels in `use`")
    t = otsu_threshold(counts, edges) if params.method == "otsu" else gmm_threshold(counts, edges, params.gmm_iter)
    return t, {"hist_max": hist_max, "pixels": int(counts.sum()), "bins": params.bins}


def cva(before: xr.DataArray, after: xr.DataArray, use: xr.DataArray | None = None, params: CVAParams = CVAParams(),
        gain: Sequence[float] | None = None, offset: Sequence[float] | None = None,
        scale: Sequence[float] | None = None) -> xr.Dataset:
    """CVA change of ``after`` against ``before`` (``(band, y, x)`` DataArrays on one grid):
    Dataset with ``magnitude`` (float32) and ``change`` (bool, ``magnitude > threshold``), lazy
    on dask except for the small threshold reduction; attrs ``threshold``, ``method``,
    ``hist_max``, ``pixels``."""
    mag = cva_magnitude(before, after, use, gain, offset, scale)
    t, info = threshold(mag, params)
    out = xr.Dataset({"magnitude": mag, "change": (mag > t).assign_attrs(long_name="changed pixel (CVA)")})
    out.attrs.update({"threshold": t, "method": params.method, **info})
    return out
