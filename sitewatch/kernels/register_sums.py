"""The registration fit's exact integer sums in one compiled pass per block (numba).

:func:`sitewatch.kernels.register.fit_once` needs, per block, the histogram of the doubled
scene-minus-median differences and then three sets of sums: the 5 x 5 products of ``[M2, 1, Gy,
Gx, x]`` over all usable pixels and over the inliers, and the 3 x 3 box sums of the inliers. The
numpy versions at the end of this module (:func:`difference_hist_np`,
:func:`registration_sums_np`, :func:`box_sums_np`) stay the reference; these loops give identical
integers (tests/test_register.py) at a fraction of the cost (the numpy versions were about 60 %
of the analysis of one new 2048^2 px scene). Sums are accumulated per row in int64 (a row
cannot overflow) and the rows are added as Python ints.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def _hist_loop(v, m, u, half):  # pragma: no cover - compiled
    nb, h, w = v.shape
    out = np.zeros((nb, 2 * half), np.int64)
    for y in range(h):
        for x in range(w):
            if not u[y, x]:
                continue
            ok = True
            for b in range(nb):
                if not np.isfinite(m[b, y, x]):
                    ok = False
                    break
            if not ok:
                continue
            for b in range(nb):
                d = np.int64(np.rint(2.0 * np.float64(v[b, y, x]))) - np.int64(np.rint(2.0 * np.float64(m[b, y, x])))
                d = min(max(d, -half), half - 1)
                out[b, d + half] += 1
    return out


def _parts(values: np.ndarray, median: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The loops' inputs: ``values`` as they are when 8/16-bit integers (exact), else float32 (as
    the stacked block had them); ``median`` float32; ``use`` bool (``> 0.5``)."""
    v = np.asarray(values)
    v = np.ascontiguousarray(v if v.dtype.kind in "ui" and v.dtype.itemsize <= 2 else v.astype(np.float32, copy=False))
    m = np.ascontiguousarray(median, np.float32)
    u = np.asarray(use)
    u = np.ascontiguousarray(u if u.dtype == np.bool_ else u > 0.5)
    if v.ndim != 3 or m.shape != v.shape or u.shape != v.shape[1:]:
        raise ValueError(f"registration parts got shapes {v.shape!r}, {m.shape!r}, {u.shape!r}; expected (band, y, x) "
                         "twice and (y, x)")
    return v, m, u


def difference_hist_parts(values: np.ndarray, median: np.ndarray, use: np.ndarray, half: int) -> np.ndarray:
    """:func:`difference_hist` on the scene's values, the median and ``use`` as separate arrays
    (``(band, y, x)``, ``(band, y, x)``, ``(y, x)``): no stacked float32 copy of the inputs."""
    return _hist_loop(*_parts(values, median, use), half)


def difference_hist(block: np.ndarray, nb: int, half: int) -> np.ndarray:
    """:func:`difference_hist_np`, compiled."""
    if block.ndim != 3 or block.shape[0] != 2 * nb + 1:
        raise ValueError(f"registration block got shape {block.shape!r}; expected ({2 * nb + 1}, y, x)")
    block = np.asarray(block, np.float32)
    return difference_hist_parts(block[:nb], block[nb:2 * nb], block[2 * nb], half)


@numba.njit(nogil=True, cache=True)
def _sums_loop(v, m, u, centre, tol, trim):  # pragma: no cover - compiled
    nb = v.shape[0]
    h, w = v.shape[1] - 2, v.shape[2] - 2
    hp, wp = h + 2, w + 2
    # per padded pixel: usable (use, a median in every band) and, with trim, an inlier
    fin = np.zeros((hp, wp), np.bool_)
    good = np.zeros((hp, wp), np.bool_)
    m2 = np.zeros((nb, hp, wp), np.int64)
    xi = np.zeros((nb, hp, wp), np.int64)
    for y in range(hp):
        for x in range(wp):
            f = True
            for b in range(nb):
                mv = m[b, y, x]
                if np.isfinite(mv):
                    m2[b, y, x] = np.int64(np.rint(2.0 * np.float64(mv)))
                else:
                    f = False
                xi[b, y, x] = np.int64(np.rint(np.float64(v[b, y, x])))
            fin[y, x] = f
            g = f and u[y, x]
            if g and trim:
                for b in range(nb):
                    d = np.int64(np.rint(2.0 * np.float64(v[b, y, x]))) - m2[b, y, x]
                    if abs(d - centre[b]) > tol[b]:
                        g = False
                        break
            good[y, x] = g
    whole = np.zeros((h, nb, 5, 5), np.int64)
    inl = np.zeros((h, nb, 5, 5), np.int64)
    box = np.zeros((h, nb, 5), np.int64)
    feats = np.zeros(5, np.int64)
    for y in range(h):
        py = y + 1
        for x in range(w):
            px = x + 1
            if not (u[py, px] and fin[py, px] and fin[py + 1, px] and fin[py - 1, px]
                    and fin[py, px + 1] and fin[py, px - 1]):
                continue
            inlier = good[py, px]
            for b in range(nb):
                feats[0] = m2[b, py, px]
                feats[1] = 1
                feats[2] = m2[b, py + 1, px] - m2[b, py - 1, px]
                feats[3] = m2[b, py, px + 1] - m2[b, py, px - 1]
                feats[4] = xi[b, py, px]
                for r in range(5):
                    for c in range(r, 5):
                        v = feats[r] * feats[c]
                        whole[y, b, r, c] += v
                        if inlier:
                            inl[y, b, r, c] += v
            all_good = True
            for dy in range(3):
                for dx in range(3):
                    if not good[y + dy, x + dx]:
                        all_good = False
            if all_good:
                for b in range(nb):
                    bx = np.int64(0)
                    bm = np.int64(0)
                    for dy in range(3):
                        for dx in range(3):
                            bx += xi[b, y + dy, x + dx]
                            bm += m2[b, y + dy, x + dx]
                    box[y, b, 0] += 1
                    box[y, b, 1] += bx
                    box[y, b, 2] += bx * bx
                    box[y, b, 3] += bm
                    box[y, b, 4] += bm * bm
    return whole, inl, box


def _rows_to_int(rows: np.ndarray) -> np.ndarray:
    """Sum the per-row int64 partials exactly (Python ints, object array)."""
    return rows.astype(object).sum(axis=0) if rows.shape[0] else np.zeros(rows.shape[1:], object)


def all_sums_parts(values: np.ndarray, median: np.ndarray, use: np.ndarray, centre: np.ndarray | None,
                   tol: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """:func:`all_sums` on the padded values, median and ``use`` as separate arrays (``(band, y +
    2, x + 2)`` twice and ``(y + 2, x + 2)``): no stacked float32 copy of the inputs."""
    v, m, u = _parts(values, median, use)
    nb = v.shape[0]
    trim = centre is not None
    c = np.asarray(centre if trim else np.zeros(nb), np.int64)
    t = np.asarray(tol if trim else np.zeros(nb), np.int64)
    whole, inl, box = _sums_loop(v, m, u, c, t, trim)
    w = _symmetric(_rows_to_int(whole))
    return w, _symmetric(_rows_to_int(inl)) if trim else w, _rows_to_int(box)


def _symmetric(a: np.ndarray) -> np.ndarray:
    """``a`` (``(nb, 5, 5)``, upper triangle filled by the loop) with its lower triangle mirrored in place."""
    for b in range(a.shape[0]):
        for r in range(a.shape[1]):
            for cc in range(r):
                a[b, r, cc] = a[b, cc, r]
    return a


def all_sums(padded: np.ndarray, nb: int, centre: np.ndarray | None, tol: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """``(whole, inliers, box)`` as :func:`_all_sums_np` returns
    them (Python-int object arrays ``(nb, 5, 5)``, ``(nb, 5, 5)``, ``(nb, 5)``), compiled."""
    if padded.ndim != 3 or padded.shape[0] != 2 * nb + 1:
        raise ValueError(f"registration block got shape {padded.shape!r}; expected ({2 * nb + 1}, y + 2, x + 2)")
    padded = np.asarray(padded, np.float32)
    return all_sums_parts(padded[:nb], padded[nb:2 * nb], padded[2 * nb], centre, tol)


# ---------------------------------------------------------------- numpy references

def _doubled_difference(values: np.ndarray, median: np.ndarray) -> np.ndarray:
    """``rint(2 x) - rint(2 m)`` per band (int64; exact, as counts are integers and medians halves)."""
    return np.rint(2.0 * values.astype(np.float64)).astype(np.int64) - \
        np.rint(2.0 * np.nan_to_num(median.astype(np.float64), nan=0.0)).astype(np.int64)


def difference_hist_np(block: np.ndarray, nb: int, half: int) -> np.ndarray:
    """Histogram ``(nb, 2 * half)`` int64 of the doubled scene-minus-median difference
    (:func:`_doubled_difference`, clipped to ``[-half, half - 1]``) over the pixels of
    ``block`` (``(2 * nb + 1, y, x)`` as :func:`registration_sums_np` takes it, unpadded) where
    ``use`` and a median in every band."""
    if block.ndim != 3 or block.shape[0] != 2 * nb + 1:
        raise ValueError(f"registration block got shape {block.shape!r}; expected ({2 * nb + 1}, y, x)")
    ok = (block[2 * nb] > 0.5) & np.isfinite(block[nb:2 * nb]).all(axis=0)
    out = np.zeros((nb, 2 * half), np.int64)
    if ok.any():
        d = np.clip(_doubled_difference(block[:nb][:, ok], block[nb:2 * nb][:, ok]), -half, half - 1) + half
        for b in range(nb):
            out[b] = np.bincount(d[b], minlength=2 * half)
    return out


def registration_sums_np(padded: np.ndarray, nb: int, centre: np.ndarray | None = None,
                         tol: np.ndarray | None = None) -> np.ndarray:
    """Exact int64 sums ``(nb, 5, 5)`` of the products of ``[M2, 1, Gy, Gx, x]`` per band.

    ``padded`` is ``(2 * nb + 1, y + 2, x + 2)`` float32, padded by one pixel on y and x:
    values (nb bands, integer counts), median (nb, NaN where none) and use (0/1). ``M2 =
    rint(2 * median)``, ``Gy``/``Gx`` its central differences. A pixel counts where ``use`` and
    the median of it and its four neighbours is finite in every band, and, given ``centre`` and
    ``tol`` (per band, doubled counts, :func:`~sitewatch.kernels.register.inlier_band`), its doubled difference is within
    ``tol`` of ``centre`` in every band (real change and missed cloud stay out of the fit)."""
    if padded.ndim != 3 or padded.shape[0] != 2 * nb + 1:
        raise ValueError(f"registration block got shape {padded.shape!r}; expected ({2 * nb + 1}, y + 2, x + 2)")
    med = padded[nb:2 * nb]
    fin = np.isfinite(med).all(axis=0)
    ok = (padded[2 * nb, 1:-1, 1:-1] > 0.5) & fin[1:-1, 1:-1] & fin[2:, 1:-1] & fin[:-2, 1:-1] & fin[1:-1, 2:] & fin[1:-1, :-2]
    if centre is not None and ok.any():
        d = _doubled_difference(padded[:nb, 1:-1, 1:-1], med[:, 1:-1, 1:-1])
        ok &= (np.abs(d - np.asarray(centre, np.int64)[:, None, None]) <= np.asarray(tol, np.int64)[:, None, None]).all(axis=0)
    out = np.zeros((nb, 5, 5), np.int64)
    if not ok.any():
        return out
    m2 = np.rint(2.0 * np.nan_to_num(med.astype(np.float64), nan=0.0)).astype(np.int64)
    for b in range(nb):
        f = [m2[b, 1:-1, 1:-1][ok], None, (m2[b, 2:, 1:-1] - m2[b, :-2, 1:-1])[ok], (m2[b, 1:-1, 2:] - m2[b, 1:-1, :-2])[ok],
             np.rint(padded[b, 1:-1, 1:-1][ok].astype(np.float64)).astype(np.int64)]
        n = int(ok.sum())
        for r in range(5):
            for c in range(r, 5):
                if r == 1:
                    v = n if c == 1 else int(f[c].sum())
                else:
                    v = int(f[r].sum()) if c == 1 else int((f[r] * f[c]).sum())
                out[b, r, c] = v
                out[b, c, r] = v
    return out


def _exact_sum(a: np.ndarray) -> int:
    """Exact sum of a non-negative int64 array as a Python int (summed in row blocks that cannot
    overflow int64)."""
    a = a.reshape(-1)
    if a.size == 0:
        return 0
    top = int(a.max())
    step = max(1, (2**62) // max(top, 1))
    return sum(int(a[k:k + step].sum()) for k in range(0, a.size, step))


def box_sums_np(padded: np.ndarray, nb: int, centre: np.ndarray | None = None, tol: np.ndarray | None = None) -> np.ndarray:
    """Exact sums ``(nb, 5)`` (Python ints, object array) ``[n, sum Bx, sum Bx^2, sum Bm,
    sum Bm^2]`` of the 3 x 3 box sums ``Bx`` of the values and ``Bm`` of ``M2 = rint(2 * median)``
    over the pixels whose whole 3 x 3 neighbourhood is usable (``use``, a median in every band)
    and, given ``centre``/``tol``, made of inliers (as :func:`registration_sums_np`). The gain is the ratio of the standard deviations of these
    local means: neither the noise nor the smoothing of a baseline whose dates were resampled
    by sub-pixel shifts biases it (a plain pixel ratio would be inflated by that smoothing)."""
    if padded.ndim != 3 or padded.shape[0] != 2 * nb + 1:
        raise ValueError(f"registration block got shape {padded.shape!r}; expected ({2 * nb + 1}, y + 2, x + 2)")
    h, w = padded.shape[1] - 2, padded.shape[2] - 2
    med = padded[nb:2 * nb]
    good = (padded[2 * nb] > 0.5) & np.isfinite(med).all(axis=0)
    if centre is not None and good.any():
        d = _doubled_difference(padded[:nb], med)
        good &= (np.abs(d - np.asarray(centre, np.int64)[:, None, None]) <= np.asarray(tol, np.int64)[:, None, None]).all(axis=0)
    ok = np.ones((h, w), bool)
    for dy in range(3):
        for dx in range(3):
            ok &= good[dy:dy + h, dx:dx + w]
    out = np.zeros((nb, 5), object)
    out[:] = 0
    if not ok.any():
        return out
    xi = np.rint(padded[:nb].astype(np.float64)).astype(np.int64)
    m2 = np.rint(2.0 * np.nan_to_num(med.astype(np.float64), nan=0.0)).astype(np.int64)
    n = int(ok.sum())
    for b in range(nb):
        bx = sum(xi[b, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))[ok]
        bm = sum(m2[b, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))[ok]
        out[b] = [n, _exact_sum(bx), _exact_sum(bx * bx), _exact_sum(bm), _exact_sum(bm * bm)]
    return out


def _all_sums_np(padded: np.ndarray, nb: int, centre: np.ndarray | None, tol: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """The sums over all usable pixels, over the inliers (``(nb, 5, 5)`` each) and the inliers'
    3 x 3 box sums (``(nb, 5)``), as Python-int object arrays (the numpy reference of
    :func:`~sitewatch.kernels.register_sums.all_sums`, which the fit uses)."""
    whole = registration_sums_np(padded, nb).astype(object)
    inl = whole if centre is None else registration_sums_np(padded, nb, centre, tol).astype(object)
    return whole, inl, box_sums_np(padded, nb, centre, tol)
