"""Keep each region of a site on one Dask worker.

A date's analysis combines, chunk by chunk, arrays read separately: the scene from the cube and
the baseline state from its own store. Dask's scheduler places the tasks that read them on
whichever worker is free, so chunk ``(i, j)`` of the scene and chunk ``(i, j)`` of the state
often land on different workers, and every step that combines them first copies one to the
other (about 100 MB per chunk at 2048 px and 13 bands). :func:`persist_in_regions` persists
each band of whole chunk rows (or columns) on one worker, the same band on the same worker for
every array of a site's grid, so that the steps that follow find their inputs in place.

Without a ``distributed`` client (the threaded scheduler, numpy arrays), or with a single
worker, it is a plain ``persist``. The values are never changed; only where they are held.
"""
from __future__ import annotations

from typing import Any, TypeVar

import dask
import xarray as xr

T = TypeVar("T", xr.DataArray, xr.Dataset)


def _client() -> Any:
    """The ``distributed`` client dask computes on now, or None."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency; kept optional here
        return None
    owner = getattr(dask.base.get_scheduler(), "__self__", None)
    return owner if isinstance(owner, Client) else None


def split(chunks: tuple[int, ...], n: int) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges of at most ``n`` contiguous groups of whole ``chunks``, the
    chunks spread as evenly as they divide (the first groups take one more)."""
    if n < 1:
        raise ValueError(f"split got n={n!r}; expected >= 1 group")
    n = min(n, len(chunks))
    sizes = [len(chunks) // n + (1 if k < len(chunks) % n else 0) for k in range(n)]
    out, c, start = [], 0, 0
    for s in sizes:
        stop = start + sum(chunks[c:c + s])
        out.append((start, stop))
        c, start = c + s, stop
    return out


def persist_in_regions(obj: T, dims: tuple[str, str] = ("y", "x")) -> T:
    """``obj.persist()``, with each band of whole chunks along ``dims[0]`` (or along ``dims[1]``
    when that has more chunks) held on one worker of the current ``distributed`` client: band
    ``k`` of ``n`` on the ``k``-th worker by address, for every array of the same grid and
    chunking alike. Only the placement differs from ``obj.persist()``."""
    if not isinstance(obj, (xr.DataArray, xr.Dataset)):
        raise ValueError(f"persist_in_regions got {type(obj).__name__}; expected an xarray DataArray or Dataset")
    client = _client()
    chunks = obj.chunksizes if isinstance(obj, xr.DataArray) else obj.chunks
    if client is None or not all(d in chunks for d in dims):
        return obj.persist()
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    dim = max(dims, key=lambda d: len(chunks[d]))  # ties: the first (rows)
    if len(workers) < 2 or len(chunks[dim]) < 2:
        return obj.persist()
    pieces = [obj.isel({dim: slice(a, b)}).persist(workers=[w], allow_other_workers=True)
              for (a, b), w in zip(split(tuple(chunks[dim]), len(workers)), workers)]
    if isinstance(obj, xr.DataArray):
        return xr.concat(pieces, dim=dim)
    return xr.concat(pieces, dim=dim, data_vars="minimal", coords="minimal", compat="override", join="override")
