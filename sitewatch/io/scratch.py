"""Where one date's analysis keeps the whole-site arrays that several of its steps read.

The analysis of a date makes whole-site arrays (the baseline, the masks, the change score) that
later steps read again: the registration, the change, the objects, the fold. A small site holds
them in the cluster's memory (:func:`in_memory`: ``persist``). On a large one they would take
about 120 bytes per pixel, 2 GB for a 4096 x 4096 px site, 14 GB for a Sentinel-2 tile; there
:class:`Scratch` writes each, chunk by chunk, to a Zarr store of its own (beside the cube by
default, so every worker of a cluster reaches it) and hands back the same array read lazily
from there. Every later step then reads only the chunks it works on, not the whole array. The
store is removed when the date is done (``with Scratch(...) as hold``), also when it fails. A
process killed outright (out of memory, SIGKILL) leaves its folder behind; nothing reads it again,
and :func:`sweep` (run before each streamed date) removes such folders once they are a day old.
Prefect-free.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Mapping, Optional, TypeVar

import dask.array as da
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from . import store

T = TypeVar("T", xr.DataArray, xr.Dataset)
Hold = Callable[..., T]  # hold(obj, name, chunks=None) -> obj held
COMPRESSORS = (ZstdCodec(level=1),)  # fast: the store is written once and read a few times, then removed
STALE_S = 24 * 3600  # a scratch folder this old belongs to no running analysis (a date takes minutes)


def in_memory(obj: T, name: str, chunks: Optional[Mapping[str, int]] = None) -> T:
    """``obj`` computed and held in the cluster's memory (``persist``), in Dask ``chunks`` (by
    dimension) when given; ``name`` is unused."""
    held = obj.persist()
    return held if chunks is None else held.chunk(dict(chunks))


def _kept_edge(made: int, read: int | None) -> int:
    """The stored chunk edge along one axis for an array made in chunks of ``made`` and read in
    chunks of ``read``: one that both split into whole chunks where it exists (each made chunk
    then writes whole stored chunks; each read takes whole stored chunks), else ``made``."""
    if read is None or read == made:
        return made
    if made % read == 0:
        return read
    return made  # read % made == 0: reads take several whole chunks; otherwise a read decodes a chunk it only partly needs


def _regular(a: da.Array) -> da.Array:
    """``a`` in chunks a Zarr array can take one to one: all the same along each axis, but the last."""
    if all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in a.chunks):
        return a
    return a.rechunk(tuple(max(c) for c in a.chunks))


class Scratch:
    """Call it as :func:`in_memory` is called: ``held = hold(obj, name)`` computes ``obj`` (an
    ``xr.DataArray`` or ``xr.Dataset`` of Dask arrays) into ``<url>/<name>`` and returns it with
    the same dims, coordinates, attributes and chunks, its data read back lazily from there.

    ``url``: a folder or ``s3://`` prefix of its own (each instance adds a folder below it named
    ``<unix seconds>-<uuid>``: unique, and its age readable on any store); ``storage_options`` as
    for the cube. Use it as a context manager: on exit the folder is
    removed."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = store.join(url, f"{int(time.time())}-{uuid.uuid4().hex}")
        self.storage_options = storage_options
        self.names: list[str] = []
        self._group: zarr.Group | None = None

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> zarr.Group:
        if self._group is None:
            opts = store.storage_options_for(self.url, self.storage_options)
            self._group = zarr.open_group(self.url, mode="w", zarr_format=3, **({"storage_options": opts} if opts else {}))
        return self._group

    def __call__(self, obj: T, name: str, chunks: Optional[Mapping[str, int]] = None) -> T:
        """``chunks``: the Dask chunks (edge by dimension) to read it back in, when not those it
        is made in, e.g. strips for an array made in the state's stored chunks. It is stored in
        chunks that are whole parts of both where the edges divide, so neither the write nor
        a read touches part of a stored chunk."""
        if not name.isidentifier() or name in self.names:
            raise ValueError(f"scratch name got {name!r}; expected a new identifier (held so far: {self.names!r})")
        if isinstance(obj, xr.DataArray):
            arrays, dims = {"data": obj.data}, {"data": obj.dims}
        elif isinstance(obj, xr.Dataset):
            arrays, dims = {n: v.data for n, v in obj.data_vars.items()}, {n: v.dims for n, v in obj.data_vars.items()}
        else:
            raise ValueError(f"scratch {name!r} got a {type(obj).__name__}; expected an xarray DataArray or Dataset")
        lazy = {n: a for n, a in arrays.items() if isinstance(a, da.Array)}
        unknown = set(chunks or {}) - {d for ds in dims.values() for d in ds}
        if unknown:
            raise ValueError(f"scratch {name!r} chunks got dims {sorted(unknown)!r}; expected some of {sorted(obj.dims)!r}")
        if not lazy:
            return obj if chunks is None else obj.chunk(dict(chunks))  # in memory: nothing to gain by writing it out
        group = self._open().create_group(name)
        self.names.append(name)
        sources, targets, read_as = [], [], {}
        for n, a in lazy.items():
            a = _regular(a)
            want = [None if chunks is None or d not in chunks else (size if chunks[d] == -1 else min(int(chunks[d]), size))
                    for d, size in zip(dims[n], a.shape)]
            edges = tuple(_kept_edge(c[0], w) for c, w in zip(a.chunks, want))
            z = group.create_array(n, shape=a.shape, chunks=edges or (), dtype=a.dtype,
                                   compressors=COMPRESSORS, fill_value=None, overwrite=True)
            sources.append(a)
            targets.append(z)
            read_as[n] = tuple(arrays[n].chunks[i] if w is None else w for i, w in enumerate(want))
        da.store(sources, targets, lock=False, compute=True)
        read = {n: da.from_zarr(z, chunks=read_as[n], name=f"scratch-{name}-{n}-{uuid.uuid4().hex[:8]}")
                for n, z in zip(lazy, targets)}
        if isinstance(obj, xr.DataArray):
            return obj.copy(data=read["data"])
        return obj.assign({n: obj[n].copy(data=a) for n, a in read.items()})

    def close(self) -> None:
        """Remove the store (no error if nothing was written)."""
        self._group = None
        fs, path = store.filesystem(self.url, self.storage_options)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def sweep(url: str, storage_options: dict[str, Any] | None = None, older_than_s: float = STALE_S,
          now: float | None = None) -> list[str]:
    """Remove the folders :class:`Scratch` left under ``url`` (a process killed mid-date) that are
    older than ``older_than_s``, by the time in their names; others are left alone. Returns the
    removed paths."""
    fs, root = store.filesystem(url, storage_options)
    if not fs.exists(root):
        return []
    now = time.time() if now is None else now
    removed = []
    for path in fs.ls(root, detail=False):
        stamp = path.rstrip("/").rsplit("/", 1)[-1].split("-", 1)[0]
        if stamp.isdigit() and now - int(stamp) > older_than_s:
            fs.rm(path, recursive=True)
            removed.append(path)
    return removed


def scratch_url(cube_url: str) -> str:
    """Where a cube's analysis keeps its scratch arrays: ``_scratch`` beside the cube."""
    return store.join(cube_url.rstrip("/").rsplit("/", 1)[0], "_scratch")


__all__ = ["COMPRESSORS", "Hold", "STALE_S", "Scratch", "in_memory", "scratch_url", "sweep"]
