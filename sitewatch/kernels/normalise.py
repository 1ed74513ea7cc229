"""Relative radiometric normalisation of one date to another on pseudo-invariant pixels.

Pseudo-invariant features (PIFs) are pixels that did not change between the dates, typically
those IR-MAD gives a high no-change probability (:mod:`sitewatch.kernels.irmad`; IR-MAD is
itself invariant to gain/offset, so it finds them before any normalisation). On them, per band,
an orthogonal (total least squares) regression ``reference = gain * scene + offset`` -- the
major axis of the two bands' joint covariance, which treats noise in both dates alike (an
ordinary least-squares slope would be biased low by the scene's noise).

Entry points
------------
* :func:`fit_normalisation` -- gain/offset per band from ``(band, y, x)`` DataArrays and a PIF
  mask; the moments are float64 per-chunk sums merged over dask chunks (one small computed
  reduction; the scenes are never loaded whole).
* :func:`normalise_np` / :func:`normalise` -- apply a gain/offset per band (float32 result;
  ``normalise`` keeps dims, coords and attrs, lazy on dask).
* :func:`normalise_to` -- the composition: IR-MAD, PIFs ``no_change_prob > pif_threshold``, fit,
  apply. Returns the normalised scene, the fit and the IR-MAD result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ._util import is_dask
from .cva import check_pair
from .irmad import IRMADFit, IRMADParams, spatial_blocks, block_moments, irmad, weighted_moments


@dataclass(frozen=True)
class NormalisationFit:
    """``gain``/``offset`` per band (``reference ~ gain * scene + offset``), ``pixels``: PIFs used."""

    gain: np.ndarray
    offset: np.ndarray
    pixels: int


def tls_from_moments(mean: np.ndarray, cov: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band orthogonal-regression gain/offset of ``y`` on ``x`` from the joint mean (2p) and
    covariance (2p x 2p) of ``[x; y]``."""
    gain = np.ones(p)
    offset = np.zeros(p)
    for i in range(p):
        sxx, syy, sxy = cov[i, i], cov[p + i, p + i], cov[i, p + i]
        if sxy == 0 or sxx <= 0 or syy <= 0:
            raise ValueError(f"normalisation: band {i} got variances {(sxx, syy)!r} and covariance {sxy!r} on the "
                             "invariant pixels; expected both dates to vary together (too few or uniform invariant pixels?)")
        d = syy - sxx
        gain[i] = (d + np.sqrt(d * d + 4 * sxy * sxy)) / (2 * sxy)
        offset[i] = mean[p + i] - gain[i] * mean[i]
    return gain, offset


def fit_normalisation(scene: xr.DataArray, reference: xr.DataArray, pifs: xr.DataArray, min_pixels: int = 100) -> NormalisationFit:
    """Gain/offset per band mapping ``scene`` onto ``reference`` (``(band, y, x)``, same grid and
    band count) by orthogonal regression over ``pifs`` (``(y, x)`` bool) where both are finite."""
    check_pair(scene, reference, "normalisation")
    if set(pifs.dims) != {"y", "x"}:
        raise ValueError(f"normalisation pifs dims got {tuple(pifs.dims)!r}; expected ('y', 'x')")
    p = scene.sizes["band"]
    if is_dask(scene) or is_dask(reference) or is_dask(pifs):
        (W, mean, C), n = weighted_moments(spatial_blocks(scene, reference, pifs), block_moments, None)
    else:
        (W, mean, C), n = block_moments(scene.transpose("band", "y", "x").values, reference.transpose("band", "y", "x").values,
                                        pifs.transpose("y", "x").values, None)
    if n < max(min_pixels, 3):
        raise ValueError(f"normalisation: got {n} invariant pixels; expected at least {max(min_pixels, 3)}")
    gain, offset = tls_from_moments(mean, C / W, p)
    return NormalisationFit(gain, offset, n)


def normalise_np(values: np.ndarray, gain, offset) -> np.ndarray:
    """``gain * values + offset`` per band, ``values`` ``(..., band)``, float32. Not in place."""
    values = np.asarray(values)
    g = np.asarray(gain, np.float32)
    o = np.asarray(offset, np.float32)
    if g.shape != (values.shape[-1],) or o.shape != g.shape:
        raise ValueError(f"normalise: gain/offset shapes got {(g.shape, o.shape)!r}; expected ({values.shape[-1]},)")
    return (values.astype(np.float32) * g + o).astype(np.float32)


def normalise(scene: xr.DataArray, fit: NormalisationFit) -> xr.DataArray:
    """``scene`` (with a ``band`` dim) with each band mapped by ``fit``; float32, same dims,
    coords and attrs, lazy on dask."""
    if "band" not in scene.dims:
        raise ValueError(f"normalise scene dims got {tuple(scene.dims)!r}; expected a 'band' dimension")
    s = scene.chunk({"band": -1}) if is_dask(scene) else scene
    out = xr.apply_ufunc(normalise_np, s, kwargs={"gain": fit.gain, "offset": fit.offset},
                         input_core_dims=[["band"]], output_core_dims=[["band"]], dask="parallelized",
                         output_dtypes=[np.float32], keep_attrs=True)
    return out.transpose(*scene.dims)


def normalise_to(scene: xr.DataArray, reference: xr.DataArray, use: xr.DataArray | None = None,
                 params: IRMADParams = IRMADParams(), pif_threshold: float = 0.95, min_pixels: int = 100
                 ) -> tuple[xr.DataArray, NormalisationFit, tuple[xr.Dataset, IRMADFit]]:
    """Normalise ``scene`` to ``reference`` on IR-MAD's pseudo-invariant pixels
    (``no_change_prob > pif_threshold`` within ``use``)."""
    if not 0 < pif_threshold < 1:
        raise ValueError(f"normalise_to pif_threshold got {pif_threshold!r}; expected in (0, 1)")
    ds, fit = irmad(reference, scene, use, params)
    pifs = ds["no_change_prob"] > pif_threshold
    nfit = fit_normalisation(scene, reference, pifs, min_pixels)
    return normalise(scene, nfit), nfit, (ds, fit)
