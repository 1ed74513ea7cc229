"""Smooth value-noise fields (fractal octaves on a lattice) for textures, clouds and drifts."""

from __future__ import annotations

import math

import numpy as np



# ---------------------------------------------------------------- noise fields

def _smoothstep_coords(n: int, cell: float) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(n, dtype=np.float64) + 0.5) / cell
    i = np.floor(t).astype(np.intp)
    f = t - i
    return i, (f * f * (3.0 - 2.0 * f)).astype(np.float32)


def _eval_lattice(vals: np.ndarray, cell_r: float, cell_c: float, h: int, w: int) -> np.ndarray:
    """Smoothstep value noise of ``vals`` (nodes every ``cell_r`` x ``cell_c`` px, node (0, 0)
    at the grid's top-left corner) on the ``h`` x ``w`` grid. Separable: interpolate along
    columns on the few lattice rows, then along rows (a few full-array passes, float32)."""
    iy, fy = _smoothstep_coords(h, cell_r)
    ix, fx = _smoothstep_coords(w, cell_c)
    a = vals[:, ix]
    a += (vals[:, ix + 1] - a) * fx
    d = a[1:] - a[:-1]
    out = a[iy]
    out += d[iy] * fy[:, None]
    return out


def _octaves(cell0: float, n: int, min_cell: float = 2.0) -> list[float]:
    cells = [cell0 / 2**k for k in range(n) if cell0 / 2**k >= min_cell]
    return cells or [max(cell0, min_cell)]


def _field(rng: np.random.Generator, shape: tuple[int, int], cell0: float, n_octaves: int,
           persistence: float = 0.55, periodic: bool = False) -> np.ndarray:
    """A float32 fractal value-noise field on the grid (octave ``k`` has cells of ``cell0 / 2**k``
    px and amplitude ``persistence**k``), normalised to ~zero mean and unit std. ``periodic``
    makes it seamless with period (H, W): cells are adjusted so a whole number fits."""
    h, w = shape

    def octave(cell: float) -> np.ndarray:
        if periodic:
            nr, nc = max(2, round(h / cell)), max(2, round(w / cell))
            vals = np.pad(rng.standard_normal((nr, nc), dtype=np.float32), ((0, 1), (0, 1)), mode="wrap")
            return _eval_lattice(vals, h / nr, w / nc, h, w)
        nr, nc = int(math.ceil(h / cell)) + 2, int(math.ceil(w / cell)) + 2
        return _eval_lattice(rng.standard_normal((nr, nc), dtype=np.float32), cell, cell, h, w)

    cells = _octaves(cell0, n_octaves)
    total = octave(cells[0])
    for k, cell in enumerate(cells[1:], start=1):
        layer = octave(cell)
        layer *= np.float32(persistence**k)
        total += layer
    sub = total[::4, ::4]
    total -= np.float32(sub.mean())
    total *= np.float32(1.0 / max(float(sub.std()), 1e-6))
    return total


def _noise_1d(rng: np.random.Generator, n: int, cell: float) -> np.ndarray:
    k = int(math.ceil(n / cell)) + 2
    knots = rng.uniform(-1.0, 1.0, k)
    t = (np.arange(n) + 0.5) / cell
    i = np.floor(t).astype(np.intp)
    f = t - i
    f = f * f * (3 - 2 * f)
    return knots[i] + (knots[i + 1] - knots[i]) * f
