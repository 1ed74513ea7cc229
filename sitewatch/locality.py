"""Keep each region of a site on one Dask worker.

A date's analysis combines, chunk by chunk, arrays read separately: the scene from the cube and
the baseline state from its own store. Dask's scheduler places the tasks that read them on
whichever worker is free, so chunk ``(i, j)`` of the scene and chunk ``(i, j)`` of the state
often land on different workers, and every step that combines them first copies one to the
other (about 100 MB per chunk at 2048 px and 13 bands). :func:`persist_in_regions` persists
each band of whole chunk rows (or columns) on one worker, the same band on the same worker for
every array of a site's grid, so that the steps that follow find their inputs in place;
:func:`compute_on` runs a computation region by region on the same workers (a store that
reads a large state again, for one). :func:`threads` counts the threads dask computes with.

Without a ``distributed`` client (the threaded scheduler, numpy arrays), or with a single
worker, it is a plain ``persist``. The values are never changed; only where they are held.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence, TypeVar

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


def threads() -> int:
    """Threads dask computes with now: of all workers of the current ``distributed`` client, or
    of the local scheduler (``num_workers`` in dask's config, else the CPU count)."""
    client = _client()
    if client is not None:
        return max(1, sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values()))
    return max(1, int(dask.config.get("num_workers", None) or os.cpu_count() or 1))


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


def plan(chunks: Mapping[str, tuple[int, ...]], dims: tuple[str, str] = ("y", "x")) -> tuple[str, list[tuple[int, int]], list[str]] | None:
    """The regions of a grid chunked ``chunks`` along ``dims``: ``(dim, [(start, stop), ...],
    [worker, ...])``, region ``k`` a band of whole chunks along ``dim`` (``dims[0]``, or
    ``dims[1]`` when that has more chunks) for the ``k``-th worker of the current
    ``distributed`` client by address; None without such a client, with one worker, or with one
    chunk along both dims."""
    client = _client()
    if client is None or not all(d in chunks for d in dims):
        return None
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    dim = max(dims, key=lambda d: len(chunks[d]))  # ties: the first (rows)
    if len(workers) < 2 or len(chunks[dim]) < 2:
        return None
    spans = split(tuple(chunks[dim]), len(workers))
    return dim, spans, workers[:len(spans)]


def compute_on(work: Sequence[tuple[Any, str]]) -> list[Any]:
    """Compute each ``(dask collection, worker)`` pair on its worker (where the inputs it reads
    are held), all at once on the current ``distributed`` client; the results in order. The
    first error is raised after every piece has finished or failed."""
    client = _client()
    if client is None:
        return list(dask.compute(*[c for c, _ in work]))
    from distributed import wait

    futures = [client.compute(c, workers=[w], allow_other_workers=True) for c, w in work]
    wait(futures)
    return client.gather(futures)


def persist_in_regions(obj: T, dims: tuple[str, str] = ("y", "x")) -> T:
    """``obj.persist()``, with each region of :func:`plan` held on its worker, for every array
    of the same grid and chunking alike (and computed there: the reads and steps the pieces
    need run on the worker that will hold them). Only the placement differs from ``obj.persist()``."""
    if not isinstance(obj, (xr.DataArray, xr.Dataset)):
        raise ValueError(f"persist_in_regions got {type(obj).__name__}; expected an xarray DataArray or Dataset")
    p = plan(obj.chunksizes if isinstance(obj, xr.DataArray) else obj.chunks, dims)
    if p is None:
        return obj.persist()
    dim, spans, workers = p
    pieces = [obj.isel({dim: slice(a, b)}).persist(workers=[w], allow_other_workers=True) for (a, b), w in zip(spans, workers)]
    if isinstance(obj, xr.DataArray):
        return xr.concat(pieces, dim=dim)
    return xr.concat(pieces, dim=dim, data_vars="minimal", coords="minimal", compat="override", join="override")
