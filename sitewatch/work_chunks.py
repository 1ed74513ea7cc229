"""The Dask chunks a lazy analysis works on: blocks of whole stored chunks of the cube.

A cube is stored in chunks of ``SiteConfig.chunk_size`` (1024 px by default): that is what a
region write and a read of a small window touch. The analysis of a large site works on larger
Dask chunks (``AnalysisParams.work_chunk_px``, 2048 px by default) made of whole stored chunks,
so each Dask chunk is read in one task and the scheduler handles a quarter of the tasks, but
never so large that a thread of the cluster is left without a chunk to work on (:func:`threads`).
Prefect-free.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import dask
import xarray as xr

from .io import cube as cube_io


def threads() -> int:
    """Threads dask computes with now: of all workers of the current ``distributed`` client, or
    of the local scheduler (``num_workers`` in dask's config, else the CPU count)."""
    from distributed import Client

    client = getattr(dask.base.get_scheduler(), "__self__", None)
    if isinstance(client, Client):
        return max(1, sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values()))
    return max(1, int(dask.config.get("num_workers", None) or os.cpu_count() or 1))


def worker_memory() -> int:
    """Bytes of memory one worker computes with now: the smallest ``memory_limit`` of the current
    ``distributed`` client's workers (where they have one), else this machine's RAM."""
    from distributed import Client

    client = getattr(dask.base.get_scheduler(), "__self__", None)
    if isinstance(client, Client):
        limits = [int(w.get("memory_limit") or 0) for w in client.scheduler_info(n_workers=-1)["workers"].values()]
        if limits and min(limits) > 0:
            return min(limits)
    import psutil

    return int(psutil.virtual_memory().total)


def work_chunk(stored: int, work_px: int | None, shape: tuple[int, int] | None = None, min_chunks: int = 1) -> int:
    """The Dask chunk edge the analysis works on: ``work_px`` rounded down to a multiple of the
    ``stored`` chunk edge (at least one stored chunk; ``None``: the stored edge), and smaller
    (by whole stored chunks) while a site of ``shape`` holds fewer than ``min_chunks`` chunks'
    worth of pixels: every thread of the cluster then has a full chunk to work on (counting
    area, not chunks: a 2048 px site is not four chunks of 1536 px, one of them 9x the last)."""
    edge = stored if work_px is None else max(1, work_px // stored) * stored

    def n(e: int) -> float:
        return 1.0 if shape is None else shape[0] * shape[1] / (min(e, shape[0]) * min(e, shape[1]))

    while edge > stored and n(edge) < min_chunks:
        edge -= stored
    return edge


def strip_rows(shape: tuple[int, int], px: int, min_chunks: int = 1, stored: int | None = None) -> int:
    """Rows of a full-width strip that holds about ``px * px`` pixels of a site of ``shape``
    (``(height, width)``): at least 1, and fewer while the site would hold fewer than
    ``min_chunks`` strips. With ``stored`` (the height of the stored chunks) the strips fit the
    stored rows: a divisor of ``stored`` when smaller, a multiple when larger. An array made in
    the stored chunks can then be kept in chunks that are whole parts of both (see
    :class:`sitewatch.io.scratch.Scratch`) and read back strip by strip without decoding a
    chunk for each strip it meets."""
    height, width = shape
    rows = max(1, (px * px) // max(1, width))
    rows = max(1, min(rows, -(-height // max(1, min_chunks))))
    if stored is None or stored <= 1 or rows >= height:
        return rows
    if rows >= stored:
        return rows // stored * stored
    return max(d for d in range(1, rows + 1) if stored % d == 0)


def open_strips(cube_url: str, px: int, storage_options: dict[str, Any] | None = None, min_chunks: int = 1) -> xr.Dataset:
    """The cube as raw counts, lazily, in full-width strips of about ``px * px`` pixels that fit
    its stored rows (:func:`strip_rows`). A computation over overlapping neighbourhoods (``map_overlap``) holds
    the blocks of about three rows of chunks at a time; in strips that is three strips, whatever
    the site's width, where square chunks hold three rows of the site's whole width."""
    valid = cube_io._group(cube_url, storage_options)["valid"]  # metadata only
    rows = strip_rows(tuple(valid.shape[-2:]), px, min_chunks, stored=valid.chunks[-2])
    with warnings.catch_warnings():  # strips cut across the stored chunks: a stored chunk is read by each strip it meets
        warnings.simplefilter("ignore", UserWarning)
        return xr.open_zarr(cube_url, mask_and_scale=False, chunks={"y": rows, "x": -1},
                            **cube_io._zarr_kwargs(cube_url, storage_options))


def open_for_analysis(cube_url: str, work_chunk_px: int | None = None,
                      storage_options: dict[str, Any] | None = None, min_chunks: int = 1) -> xr.Dataset:
    """The cube as raw counts (no CF decoding), lazily, in Dask chunks of :func:`work_chunk`
    edge (with at least ``min_chunks`` chunks where the stored chunks allow): every Dask chunk is
    a block of whole stored chunks, read in one task."""
    valid = cube_io._group(cube_url, storage_options)["valid"]  # the stored chunks: metadata only
    (cy, cx), shape = valid.chunks[-2:], valid.shape[-2:]
    whole_y, whole_x = cy >= shape[0], cx >= shape[1]  # one stored chunk spans the axis
    open_kw: dict[str, Any] = {}  # {}: the stored chunks
    # a cube sitewatch made has square chunks (but at the edges); another is opened as stored
    if whole_y or whole_x or cy == cx:
        edge = work_chunk(cx if whole_y else cy, work_chunk_px, shape, min_chunks)
        wy, wx = (cy if whole_y else edge), (cx if whole_x else edge)
        if (wy, wx) != (cy, cx):
            open_kw = {"chunks": {"y": wy, "x": wx}}
    return xr.open_zarr(cube_url, mask_and_scale=False, **open_kw, **cube_io._zarr_kwargs(cube_url, storage_options))
