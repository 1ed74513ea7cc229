"""Cloud opacity fields of one date and their shadows, cleared around the date's event footprints."""

from __future__ import annotations

import math

import numpy as np

from .noise import _field
from .plan import _CloudPlan
from .spec import Box, CLOUD_OPACITY_THRESHOLD


# ---------------------------------------------------------------- clouds

def _clear_around(arr: np.ndarray, boxes: list[Box], shift: tuple[int, int], margin: float, ramp: float) -> None:
    """``arr[p] *= h(p + shift)`` in place, with ``h`` 0 within ``margin`` px of any box and
    rising linearly to 1 over the next ``ramp`` px."""
    h, w = arr.shape
    for r0, c0, r1, c1 in boxes:
        r0, r1, c0, c1 = r0 - shift[0], r1 - shift[0], c0 - shift[1], c1 - shift[1]
        reach = int(math.ceil(margin + ramp)) + 1
        w0, w1 = max(0, r0 - reach), min(h, r1 + reach)
        v0, v1 = max(0, c0 - reach), min(w, c1 + reach)
        if w1 <= w0 or v1 <= v0:
            continue
        rr = np.arange(w0, w1) + 0.5
        cc = np.arange(v0, v1) + 0.5
        dr = np.maximum(np.maximum(r0 + 0.5 - rr, rr - (r1 - 0.5)), 0.0)
        dc = np.maximum(np.maximum(c0 + 0.5 - cc, cc - (c1 - 0.5)), 0.0)
        d = np.hypot(dr[:, None], dc[None, :])
        arr[w0:w1, v0:v1] *= np.clip((d - margin) / ramp, 0.0, 1.0).astype(np.float32)


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, min(max(q, 0.0), 1.0)))


def _cloud_fields(cp: _CloudPlan, rng: np.random.Generator, valid: np.ndarray,
                  boxes: list[Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cloud opacity, opacity of the cloud casting a shadow on each pixel, cloud brightness
    modulation), all (H, W) float32.

    The cloud field is periodic over the site, so the clouds that shade the site from beyond
    its edge are the ones that leave it on the opposite edge and the shadowed fraction follows
    the cloud fraction (no seams: the noise itself is periodic)."""
    h, w = valid.shape
    step = 2 if h * w > 300_000 else 1
    sub_valid = valid[::step, ::step]
    n_valid = max(1, int(sub_valid.sum()))
    thr = CLOUD_OPACITY_THRESHOLD

    alpha = np.zeros((h, w), np.float32)
    mod = np.full((h, w), np.float32(0.92))
    thick_cover = 0.0
    if cp.thick_share > 0:
        n1 = _field(rng, (h, w), cp.cell, 5, 0.55, periodic=True)
        ramp = 0.3  # opacity 0 -> 1 over 0.3 std of the noise: a narrow soft edge
        q = _quantile(n1[::step, ::step][sub_valid], 1.0 - cp.cover * cp.thick_share)
        t = q - thr * ramp  # so that opacity >= thr exactly where n1 >= q
        mod = (0.9 + 0.1 * np.tanh(n1 - np.float32(q))).astype(np.float32)
        n1 -= np.float32(t)
        n1 *= np.float32(1.0 / ramp)
        alpha = np.clip(n1, 0.0, 1.0, out=n1)
        thick_cover = float((alpha[::step, ::step][sub_valid] >= thr).sum()) / n_valid
    remaining = cp.cover - thick_cover
    if remaining > 0.0:
        n2 = _field(rng, (h, w), cp.cell * 1.3, 4, 0.5, periodic=True)
        ramp, a_max = 0.6, cp.thin_opacity
        free = sub_valid & (alpha[::step, ::step] < thr)
        n_free = int(free.sum())
        if n_free > 0:
            q = _quantile(n2[::step, ::step][free], 1.0 - min(1.0, remaining * n_valid / n_free))
            t = q - ramp * thr / a_max  # opacity >= thr exactly where n2 >= q
            n2 -= np.float32(t)
            n2 *= np.float32(a_max / ramp)
            np.maximum(alpha, np.clip(n2, 0.0, a_max, out=n2), out=alpha)
    sr, sc = cp.shift[0] % h, cp.shift[1] % w
    if boxes:
        margin, ramp = max(3.0, min(h, w) / 80), max(4.0, min(h, w) / 40)
        # no cloud near the footprints, nor where it would shade them (footprint - shift)
        _clear_around(alpha, boxes, (0, 0), margin, ramp)
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                _clear_around(alpha, boxes, (sr + a * h, sc + b * w), margin, ramp)
    alpha_cast = np.roll(alpha, (sr, sc), axis=(0, 1))  # alpha_cast[p] = alpha[p - shift]
    return alpha, alpha_cast, mod
