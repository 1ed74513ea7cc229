"""The registration fit's exact integer sums in one compiled pass per block (numba).

:func:`sitewatch.kernels.register.fit_once` needs, per block, the histogram of the doubled
scene-minus-median differences and then three sets of sums: the 5 x 5 products of ``[M2, 1, Gy,
Gx, x]`` over all usable pixels and over the inliers, and the 3 x 3 box sums of the inliers. The
numpy versions (:func:`~sitewatch.kernels.register.difference_hist_np`,
:func:`~sitewatch.kernels.register.registration_sums_np`,
:func:`~sitewatch.kernels.register.box_sums_np`) stay the reference; these loops give identical
integers (tests/test_register.py) at a fraction of the cost (the numpy versions were about 60 %
of the analysis of one new 2048^2 px scene). Sums are accumulated per row in int64 (a row
cannot overflow) and the rows are added as Python ints.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def _hist_loop(block, nb, half):  # pragma: no cover - compiled
    h, w = block.shape[1], block.shape[2]
    out = np.zeros((nb, 2 * half), np.int64)
    for y in range(h):
        for x in range(w):
            if not block[2 * nb, y, x] > 0.5:
                continue
            ok = True
            for b in range(nb):
                if not np.isfinite(block[nb + b, y, x]):
                    ok = False
                    break
            if not ok:
                continue
            for b in range(nb):
                d = np.int64(np.rint(2.0 * np.float64(block[b, y, x]))) - np.int64(np.rint(2.0 * np.float64(block[nb + b, y, x])))
                d = min(max(d, -half), half - 1)
                out[b, d + half] += 1
    return out


def difference_hist(block: np.ndarray, nb: int, half: int) -> np.ndarray:
    """:func:`~sitewatch.kernels.register.difference_hist_np`, compiled."""
    if block.ndim != 3 or block.shape[0] != 2 * nb + 1:
        raise ValueError(f"registration block got shape {block.shape!r}; expected ({2 * nb + 1}, y, x)")
    return _hist_loop(np.ascontiguousarray(block, np.float32), nb, half)


@numba.njit(nogil=True, cache=True)
def _sums_loop(p, nb, centre, tol, trim):  # pragma: no cover - compiled
    h, w = p.shape[1] - 2, p.shape[2] - 2
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
                mv = p[nb + b, y, x]
                if np.isfinite(mv):
                    m2[b, y, x] = np.int64(np.rint(2.0 * np.float64(mv)))
                else:
                    f = False
                xi[b, y, x] = np.int64(np.rint(np.float64(p[b, y, x])))
            fin[y, x] = f
            g = f and p[2 * nb, y, x] > 0.5
            if g and trim:
                for b in range(nb):
                    d = np.int64(np.rint(2.0 * np.float64(p[b, y, x]))) - m2[b, y, x]
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
            if not (p[2 * nb, py, px] > 0.5 and fin[py, px] and fin[py + 1, px] and fin[py - 1, px]
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


def all_sums(padded: np.ndarray, nb: int, centre: np.ndarray | None, tol: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """``(whole, inliers, box)`` as :func:`~sitewatch.kernels.register._all_sums_np` returns
    them (Python-int object arrays ``(nb, 5, 5)``, ``(nb, 5, 5)``, ``(nb, 5)``), compiled."""
    if padded.ndim != 3 or padded.shape[0] != 2 * nb + 1:
        raise ValueError(f"registration block got shape {padded.shape!r}; expected ({2 * nb + 1}, y + 2, x + 2)")
    trim = centre is not None
    c = np.asarray(centre if trim else np.zeros(nb), np.int64)
    t = np.asarray(tol if trim else np.zeros(nb), np.int64)
    whole, inl, box = _sums_loop(np.ascontiguousarray(padded, np.float32), nb, c, t, trim)
    w = _rows_to_int(whole)
    for b in range(nb):  # the loop fills the upper triangle
        for r in range(5):
            for cc in range(r):
                w[b, r, cc] = w[b, cc, r]
    if trim:
        i = _rows_to_int(inl)
        for b in range(nb):
            for r in range(5):
                for cc in range(r):
                    i[b, r, cc] = i[b, cc, r]
    else:
        i = w
    return w, i, _rows_to_int(box)
