"""IR-MAD: iteratively reweighted multivariate alteration detection (Nielsen 2007).

Two co-registered images ``X`` (before) and ``Y`` (after) with ``p`` bands each. Each iteration:

1. weighted means and the joint ``2p x 2p`` covariance of ``[X; Y]`` with weights ``w`` (1 on
   the first iteration), computed as per-chunk centred moments (weight, mean, co-moment matrix
   in float64) merged with Chan's pairwise formula -- one ``dask.compute`` of per-chunk moments
   per iteration, the scene is never loaded whole;
2. canonical correlation analysis: ``Sxy Syy^-1 Syx a = rho^2 Sxx a`` (generalised symmetric
   eigenproblem), ``b = Syy^-1 Syx a / rho``, ``a' Sxx a = b' Syy b = 1``, ordered by increasing
   ``rho`` (MAD 1 = least correlated = most change);
3. MAD variates ``M_i = a_i' (x - mx) - b_i' (y - my)`` with variance ``2 (1 - rho_i)``;
   ``chi2 = sum_i M_i^2 / (2 (1 - rho_i))`` is ~ chi-square(p) on no-change pixels;
4. new weights ``w = P(chi-square(p) > chi2)``, the no-change probability.

Stop when ``max |rho - rho_previous| < tol``, after ``max_iter`` iterations, or when the weights
collapse onto a few pixels (``IRMADParams.min_no_change``). Change = ``chi2 >`` the chi-square(p)
``quantile``.

**Consistency correction** (not in Nielsen 2007): weighting by the no-change probability
down-weights the tails of the no-change distribution too, so the weighted covariances shrink and
plain IR-MAD's chi2 on unchanged Gaussian pixels is ~3x chi-square(p) at convergence (p = 4:
~20 % of them exceed the 0.999 quantile instead of 0.1 %). The reported ``chi2`` (and the
no-change probability and change mask derived from it) is multiplied by the factor ``k_n`` that
the same iteration gives on Gaussian data (:func:`consistency`); the weights used inside the
iteration are Nielsen's. The MAD variates, hence chi2, are invariant to any per-band
(indeed any invertible affine) transform of either image.

Pixels where ``use`` is False or any band is not finite get no weight, and NaN outputs.

Entry points: :func:`irmad` (xarray, numpy or dask) returns ``(Dataset, IRMADFit)``;
:func:`irmad_np` on plain arrays; :func:`apply_fit_np` applies a fit to other pixels;
:func:`weighted_moments` is reused by :mod:`sitewatch.kernels.normalise`.

Numerics: per-chunk moments are float64 and merged in a fixed (row-major chunk) order, so the
result depends on the chunking only through float64 rounding: canonical correlations agree to
~1e-12 and chi2 to ~1e-6 relative (float32 output) between chunkings.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.special
import xarray as xr

from ._util import is_dask
from .cva import check_pair


@dataclass(frozen=True)
class IRMADParams:
    """``max_iter``/``tol``: iteration stop on the canonical correlations; ``quantile``: change
    where chi2 exceeds this chi-square quantile; ``min_pixels``: fewest usable pixels (also at
    least ``10 * 2p``); ``reg``: ridge added to the covariance diagonals, relative to their
    mean (0 = plain CCA)."""

    max_iter: int = 50
    tol: float = 1e-4
    quantile: float = 0.999
    min_pixels: int = 100
    reg: float = 0.0
    min_no_change: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"IR-MAD max_iter got {self.max_iter!r}; expected an integer >= 1")
        if not self.tol > 0:
            raise ValueError(f"IR-MAD tol got {self.tol!r}; expected > 0")
        if not 0 < self.quantile < 1:
            raise ValueError(f"IR-MAD quantile got {self.quantile!r}; expected in (0, 1)")
        if self.min_pixels < 1:
            raise ValueError(f"IR-MAD min_pixels got {self.min_pixels!r}; expected >= 1")
        if not 0 <= self.min_no_change < 1:
            raise ValueError(f"IR-MAD min_no_change got {self.min_no_change!r}; expected in [0, 1)")
        if not self.reg >= 0:
            raise ValueError(f"IR-MAD reg got {self.reg!r}; expected >= 0")


@dataclass(frozen=True, eq=False)
class IRMADFit:
    """A fitted transform: ``mean_x``/``mean_y`` (p), ``a``/``b`` (p x p, column i = MAD i),
    ``rho`` (p, increasing), ``iterations``, ``converged``, ``pixels`` (usable), ``weight``
    (sum of the final weights)."""

    mean_x: np.ndarray
    mean_y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    rho: np.ndarray
    iterations: int
    converged: bool
    pixels: int
    weight: float
    chi2_scale: float = 1.0
    collapsed: bool = False

    @property
    def sigma(self) -> np.ndarray:
        """Standard deviation of each MAD variate, ``sqrt(2 (1 - rho))``."""
        return np.sqrt(np.maximum(2.0 * (1.0 - self.rho), 1e-12))


# ---------------------------------------------------------------- moments

Moments = tuple[float, np.ndarray, np.ndarray]  # (sum of weights, weighted mean (k,), co-moment (k, k))


def moments_np(z: np.ndarray, w: np.ndarray) -> Moments:
    """Weighted moments of the rows of ``z`` ``(n, k)`` with weights ``w`` ``(n,)`` (>= 0), float64:
    ``(W, mean, C)`` with ``C = sum w (z - mean)(z - mean)'``."""
    z = np.asarray(z, np.float64)
    w = np.asarray(w, np.float64)
    k = z.shape[1]
    W = float(w.sum())
    if W <= 0:
        return 0.0, np.zeros(k), np.zeros((k, k))
    mean = (w @ z) / W
    d = z - mean
    return W, mean, (d * w[:, None]).T @ d


def merge_moments(m1: Moments, m2: Moments) -> Moments:
    """Chan et al.'s pairwise merge of two :func:`moments_np` results."""
    w1, a1, c1 = m1
    w2, a2, c2 = m2
    if w1 == 0:
        return m2
    if w2 == 0:
        return m1
    w = w1 + w2
    delta = a2 - a1
    return w, a1 + delta * (w2 / w), c1 + c2 + np.outer(delta, delta) * (w1 * w2 / w)


def _pixels(x: np.ndarray, y: np.ndarray, use: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 2p)`` float64 rows of usable pixels and their flat indices, from band-first blocks."""
    p = x.shape[0]
    z = np.concatenate([np.asarray(x, np.float64).reshape(p, -1), np.asarray(y, np.float64).reshape(p, -1)]).T
    ok = np.all(np.isfinite(z), axis=1)
    if use is not None:
        ok &= np.asarray(use, bool).reshape(-1)
    idx = np.flatnonzero(ok)
    return z[idx], idx


def _chi2_rows(z: np.ndarray, fit: IRMADFit) -> tuple[np.ndarray, np.ndarray]:
    """MAD variates ``(n, p)`` and the uncorrected chi2 ``(n,)`` of rows ``z = [x, y]``: one
    ``(n, 2p) @ (2p, p)`` product, ``M = x a - y b - (mean_x a - mean_y b)``."""
    coef = np.concatenate([fit.a, -fit.b])
    mad = z @ coef
    mad -= fit.mean_x @ fit.a - fit.mean_y @ fit.b
    std = mad / fit.sigma
    return mad, np.einsum("ij,ij->i", std, std)


def block_moments(x: np.ndarray, y: np.ndarray, use: np.ndarray | None, fit: IRMADFit | None) -> tuple[Moments, int]:
    """Moments of one block (``x``/``y`` ``(p, ...)``, ``use`` ``(...)``) weighted by the no-change
    probability under ``fit`` (1 when ``fit`` is None), and the number of usable pixels."""
    z, _ = _pixels(x, y, use)
    if fit is None:
        w = np.ones(z.shape[0])
    else:
        _, chi2 = _chi2_rows(z, fit)
        w = scipy.special.chdtrc(fit.a.shape[0], chi2)
    return moments_np(z, w), int(z.shape[0])


# ---------------------------------------------------------------- CCA

def cca(mom: Moments, p: int, reg: float = 0.0, iterations: int = 0, converged: bool = False, pixels: int = 0) -> IRMADFit:
    """Canonical correlation analysis of the joint moments of ``[X; Y]`` (``2p`` variables)."""
    W, mean, C = mom
    S = C / W
    if reg > 0:
        S = S + np.eye(2 * p) * reg * float(np.mean(np.diag(S)))
    sxx, sxy, syy = S[:p, :p], S[:p, p:], S[p:, p:]
    try:
        syy_inv_syx = np.linalg.solve(syy, sxy.T)
        lam, a = scipy.linalg.eigh(sxy @ syy_inv_syx, sxx)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ValueError(f"IR-MAD: covariance got singular or not positive definite ({exc}); expected bands that vary "
                         "and are not linear combinations of each other (set reg > 0 to regularise)") from None
    rho = np.sqrt(np.clip(lam, 0.0, 1.0 - 1e-12))
    b = syy_inv_syx @ a / np.where(rho > 0, rho, 1.0)
    # Deterministic signs: the largest-magnitude coefficient of each a_i is positive.
    sign = np.sign(a[np.argmax(np.abs(a), axis=0), np.arange(p)])
    sign[sign == 0] = 1.0
    return IRMADFit(mean[:p].copy(), mean[p:].copy(), a * sign, b * sign, rho, iterations, converged, pixels, float(W))


# ---------------------------------------------------------------- iteration

def _iterate(moments_of, p: int, params: IRMADParams) -> IRMADFit:
    """Run IR-MAD given ``moments_of(fit | None) -> (Moments, usable pixels)``."""
    mom, n = moments_of(None)
    need = max(params.min_pixels, 20 * p)
    if n < need:
        raise ValueError(f"IR-MAD: got {n} usable pixels; expected at least {need} (valid, in `use`, finite in every band)")
    fit = cca(mom, p, params.reg, 1, False, n)
    done = collapsed = False
    for it in range(2, params.max_iter + 1):
        mom, _ = moments_of(fit)
        if mom[0] < params.min_no_change * n * _gauss_state(p, it)[1] or mom[0] <= 0:
            collapsed = True
            break
        new = cca(mom, p, params.reg, it, False, n)
        done = float(np.max(np.abs(new.rho - fit.rho))) < params.tol
        fit = new
        if done:
            break
    converged = done or (not collapsed and fit.iterations < params.max_iter)
    return IRMADFit(fit.mean_x, fit.mean_y, fit.a, fit.b, fit.rho, fit.iterations, converged,
                    n, fit.weight, consistency(p, fit.iterations), collapsed)


@functools.lru_cache(maxsize=256)
def _gauss_state(p: int, iterations: int) -> tuple[float, float]:
    """``(k_n, e_n)`` for Gaussian no-change pixels after ``n`` iterations: the covariance
    shrink factor (see :func:`consistency`) and the mean weight of the fit of iteration ``n``
    (the weights used to compute iteration ``n + 1``... as ``E[P(chi-square(p) > z / k_{n-1})]``
    with ``k_0 = 1``: ``e_2`` is the mean weight after the first, unweighted fit)."""
    # Expectations over z ~ chi-square(p) as means over its quantiles at 50000 midpoints.
    u = (np.arange(50_000) + 0.5) / 50_000
    z = scipy.special.chdtri(p, u)
    k, e = 1.0, 1.0
    for _ in range(iterations - 1):
        w = scipy.special.chdtrc(p, z / k)
        e = float(w.mean())
        k = float((w * z).mean() / (p * e))
    return k, e


def consistency(p: int, iterations: int) -> float:
    """Factor ``k_n`` that makes chi2 ~ chi-square(p) on Gaussian no-change pixels after ``n``
    iterations. Weighting by the no-change probability down-weights the tails, so each weighted
    covariance is ``k`` times the true one: ``k_1 = 1``, ``k_{n+1} = E[w z] / (p E[w])`` with
    ``z ~ chi-square(p)`` and ``w = P(chi-square(p) > z / k_n)`` (about 0.30 at the fixed point
    for p = 4, so uncorrected chi2 would be ~3x too large and flag ~20 % of unchanged pixels at
    the 0.999 quantile). Multiplying the fitted chi2 by ``k_n`` restores the nominal false-alarm
    rate."""
    return _gauss_state(p, min(iterations, 400))[0]


def apply_fit_np(x: np.ndarray, y: np.ndarray, use: np.ndarray | None, fit: IRMADFit, quantile: float = 0.999
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MAD variates ``(p, ...)``, chi2, no-change probability (float32, ``(...)``, NaN where not
    usable) and change (bool) of band-first blocks ``x``/``y`` under ``fit``."""
    x = np.asarray(x)
    y = np.asarray(y)
    p = x.shape[0]
    if y.shape != x.shape or fit.a.shape != (p, p):
        raise ValueError(f"IR-MAD apply: shapes got x {x.shape!r}, y {y.shape!r}, fit {fit.a.shape!r}; expected equal (p, ...) and (p, p)")
    z, idx = _pixels(x, y, use)
    mad_rows, chi2_rows = _chi2_rows(z, fit)
    chi2_rows = chi2_rows * fit.chi2_scale
    npx = int(np.prod(x.shape[1:]))
    mad = np.full((npx, p), np.nan, np.float32)
    chi2 = np.full(npx, np.nan, np.float32)
    mad[idx] = mad_rows
    chi2[idx] = chi2_rows
    pnc = np.full(npx, np.nan, np.float32)
    pnc[idx] = scipy.special.chdtrc(p, chi2_rows)
    change = np.zeros(npx, bool)
    change[idx] = chi2_rows > scipy.special.chdtri(p, 1.0 - quantile)
    shp = x.shape[1:]
    return mad.T.reshape((p,) + shp), chi2.reshape(shp), pnc.reshape(shp), change.reshape(shp)


def irmad_np(x: np.ndarray, y: np.ndarray, use: np.ndarray | None = None, params: IRMADParams = IRMADParams()
             ) -> tuple[IRMADFit, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """IR-MAD of band-first arrays ``x``/``y`` ``(p, H, W)`` over ``use`` ``(H, W)``: the fit and
    :func:`apply_fit_np`'s outputs."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 3 or y.ndim != 3:
        raise ValueError(f"IR-MAD: arrays got shapes {x.shape!r} and {y.shape!r}; expected (band, y, x)")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"IR-MAD: band counts got {x.shape[0]} and {y.shape[0]}; expected equal")
    if x.shape != y.shape:
        raise ValueError(f"IR-MAD: inputs on different grids: {x.shape[1:]!r} vs {y.shape[1:]!r}")
    if use is not None and np.shape(use) != x.shape[1:]:
        raise ValueError(f"IR-MAD: use shape got {np.shape(use)!r}; expected {x.shape[1:]!r}")
    fit = _iterate(lambda f: block_moments(x, y, use, f), x.shape[0], params)
    return fit, apply_fit_np(x, y, use, fit, params.quantile)


# ---------------------------------------------------------------- xarray / dask

def spatial_blocks(x: xr.DataArray, y: xr.DataArray, use: xr.DataArray | None):
    """Aligned ``(x, y, use)`` delayed blocks over the spatial chunks of ``x`` (band single-chunked)."""
    import dask.array as da

    xd = da.asarray(x.transpose("band", "y", "x").data)
    xd = xd.rechunk({0: -1})
    yd = da.asarray(y.transpose("band", "y", "x").data).rechunk(xd.chunks)
    xb, yb = xd.to_delayed(), yd.to_delayed()
    if use is not None:
        ub = da.asarray(use.transpose("y", "x").data).rechunk(xd.chunks[1:]).to_delayed()
    out = []
    for i in range(xb.shape[1]):
        for j in range(xb.shape[2]):
            out.append((xb[0, i, j], yb[0, i, j], ub[i, j] if use is not None else None))
    return out


def weighted_moments(parts: list, fn, *args) -> tuple[Moments, int]:
    """Compute ``fn(x_block, y_block, use_block, *args) -> (Moments, n)`` over delayed block
    triples in one ``dask.compute`` and merge them in order."""
    import dask

    res = dask.compute(*[dask.delayed(fn)(xb, yb, ub, *args) for xb, yb, ub in parts])
    mom: Moments = (0.0, None, None)  # type: ignore[assignment]
    n = 0
    for m, k in res:
        n += k
        mom = m if mom[1] is None else merge_moments(mom, m)
    return mom, n


def irmad(before: xr.DataArray, after: xr.DataArray, use: xr.DataArray | None = None,
          params: IRMADParams = IRMADParams()) -> tuple[xr.Dataset, IRMADFit]:
    """IR-MAD of ``after`` against ``before`` (``(band, y, x)`` DataArrays on one grid, same band
    count; ``use`` ``(y, x)`` bool excludes nodata/cloud). Returns a Dataset with ``mad``
    (``mad``, ``y``, ``x``), ``chi2``, ``no_change_prob`` (float32) and ``change`` (bool), lazy on
    dask (the iterations compute only per-chunk moments), and the :class:`IRMADFit`."""
    check_pair(before, after, "IR-MAD")
    if use is not None and set(use.dims) != {"y", "x"}:
        raise ValueError(f"IR-MAD use dims got {tuple(use.dims)!r}; expected ('y', 'x')")
    p = before.sizes["band"]
    lazy = is_dask(before) or is_dask(after) or (use is not None and is_dask(use))
    if lazy:
        parts = spatial_blocks(before, after, use)
        fit = _iterate(lambda f: weighted_moments(parts, block_moments, f), p, params)
    else:
        x = before.transpose("band", "y", "x").values
        y = after.transpose("band", "y", "x").values
        u = None if use is None else use.transpose("y", "x").values
        fit = _iterate(lambda f: block_moments(x, y, u, f), p, params)

    def _apply(xb, yb, ub):
        mad, chi2, pnc, chg = apply_fit_np(np.moveaxis(xb, -1, 0), np.moveaxis(yb, -1, 0), ub, fit, params.quantile)
        return np.moveaxis(mad, 0, -1), chi2, pnc, chg

    b = before.transpose("y", "x", "band").drop_vars("band", errors="ignore")
    a = after.transpose("y", "x", "band").drop_vars("band", errors="ignore")
    a = a.assign_coords({d: before[d] for d in ("y", "x") if d in before.coords})
    if lazy:
        b, a = b.chunk({"band": -1}), a.chunk({"band": -1})
    u = xr.ones_like(b.isel(band=0), dtype=bool) if use is None else use
    mad, chi2, pnc, chg = xr.apply_ufunc(
        _apply, b, a, u, input_core_dims=[["band"], ["band"], []], output_core_dims=[["mad"], [], [], []],
        dask="parallelized", output_dtypes=[np.float32, np.float32, np.float32, bool],
        dask_gufunc_kwargs={"output_sizes": {"mad": p}},
    )
    out = xr.Dataset({
        "mad": mad.transpose("mad", "y", "x").assign_coords(mad=np.arange(1, p + 1)).assign_attrs(long_name="MAD variates"),
        "chi2": chi2.transpose("y", "x").assign_attrs(long_name="sum of squared standardised MAD variates"),
        "no_change_prob": pnc.transpose("y", "x").assign_attrs(long_name="no-change probability (chi-square survival)"),
        "change": chg.transpose("y", "x").assign_attrs(long_name=f"changed pixel (chi2 above the {params.quantile} quantile)"),
    })
    out.attrs.update({"rho": fit.rho.tolist(), "iterations": fit.iterations, "converged": int(fit.converged),
                      "pixels": fit.pixels, "quantile": params.quantile})
    return out, fit
