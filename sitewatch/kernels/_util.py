"""Small helpers shared by the kernels."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_dask(x: Any) -> bool:
    """True if ``x`` (an ndarray, dask array or DataArray) is backed by dask."""
    data = getattr(x, "data", x)
    return type(data).__module__.startswith("dask")


def require_dims(da: Any, dims: tuple[str, ...], what: str) -> None:
    if set(da.dims) != set(dims):
        raise ValueError(f"{what} dims got {tuple(da.dims)!r}; expected {dims!r}")


def require_2d_same_shape(what: str, **arrays: np.ndarray) -> tuple[int, int]:
    shape = None
    for name, a in arrays.items():
        if a is None:
            continue
        if a.ndim != 2:
            raise ValueError(f"{what}: {name} got {a.ndim}-d array of shape {a.shape!r}; expected 2-d (y, x)")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"{what}: {name} shape got {a.shape!r}; expected {shape!r} like the other inputs")
    if shape is None:
        raise ValueError(f"{what}: got no input arrays; expected at least one")
    return shape


def require_same_grid(a: Any, b: Any, what: str, names: tuple[str, str] = ("scene", "baseline")) -> None:
    """``a`` and ``b`` (DataArrays or Datasets) on the same ``y``/``x`` grid: equal sizes and,
    where both carry them, equal coordinates; else a ValueError naming the difference."""
    for d in ("y", "x"):
        na, nb = a.sizes.get(d), b.sizes.get(d)
        if na != nb:
            raise ValueError(f"{what}: {names[0]} and {names[1]} on different grids: {d} sizes got {na} and {nb}; expected equal")
        if d in a.coords and d in b.coords and not np.array_equal(a[d].values, b[d].values):
            ca, cb = a[d].values, b[d].values
            raise ValueError(f"{what}: {names[0]} and {names[1]} on different grids: {d} coordinates got "
                             f"{ca[0]!r}..{ca[-1]!r} and {cb[0]!r}..{cb[-1]!r}; expected equal")
