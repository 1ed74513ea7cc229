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
