"""Where one date's analysis keeps the whole-site arrays that several of its steps read.

The analysis of a date makes whole-site arrays (the baseline, the masks, the change score) that
later steps read again: the registration, the change, the objects, the fold. A small site holds
them in the cluster's memory (:func:`in_memory`: ``persist``). On a large one they would take
about 120 bytes per pixel, 2 GB for a 4096 x 4096 px site, 14 GB for a Sentinel-2 tile; there
:class:`Scratch` writes each, chunk by chunk, to a Zarr store of its own (beside the cube by
default, so every worker of a cluster reaches it) and hands back the same array read lazily
from there. Every later step then reads only the chunks it works on, not the whole array. The
store is removed when the date is done (``with Scratch(...) as hold``), also when it fails; only
a process killed outright (out of memory, SIGKILL) leaves its folder behind, and nothing reads
it again. Prefect-free.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, TypeVar

import dask.array as da
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from . import store

T = TypeVar("T", xr.DataArray, xr.Dataset)
Hold = Callable[[T, str], T]
COMPRESSORS = (ZstdCodec(level=1),)  # fast: the store is written once and read a few times, then removed


def in_memory(obj: T, name: str) -> T:
    """``obj`` computed and held in the cluster's memory (``persist``); ``name`` is unused."""
    return obj.persist()


def _regular(a: da.Array) -> da.Array:
    """``a`` in chunks a Zarr array can take one to one: all the same along each axis, but the last."""
    if all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in a.chunks):
        return a
    return a.rechunk(tuple(max(c) for c in a.chunks))


class Scratch:
    """Call it as :func:`in_memory` is called: ``held = hold(obj, name)`` computes ``obj`` (an
    ``xr.DataArray`` or ``xr.Dataset`` of Dask arrays) into ``<url>/<name>`` and returns it with
    the same dims, coordinates, attributes and chunks, its data read back lazily from there.

    ``url``: a folder or ``s3://`` prefix of its own (each instance adds a unique folder below
    it); ``storage_options`` as for the cube. Use it as a context manager: on exit the folder is
    removed."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = store.join(url, uuid.uuid4().hex)
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

    def __call__(self, obj: T, name: str) -> T:
        if not name.isidentifier() or name in self.names:
            raise ValueError(f"scratch name got {name!r}; expected a new identifier (held so far: {self.names!r})")
        if isinstance(obj, xr.DataArray):
            arrays = {"data": obj.data}
        elif isinstance(obj, xr.Dataset):
            arrays = {n: v.data for n, v in obj.data_vars.items()}
        else:
            raise ValueError(f"scratch {name!r} got a {type(obj).__name__}; expected an xarray DataArray or Dataset")
        lazy = {n: a for n, a in arrays.items() if isinstance(a, da.Array)}
        if not lazy:
            return obj  # already in memory: nothing to gain by writing it out
        group = self._open().create_group(name)
        self.names.append(name)
        sources, targets = [], []
        for n, a in lazy.items():
            a = _regular(a)
            z = group.create_array(n, shape=a.shape, chunks=tuple(c[0] for c in a.chunks) or (), dtype=a.dtype,
                                   compressors=COMPRESSORS, fill_value=None, overwrite=True)
            sources.append(a)
            targets.append(z)
        da.store(sources, targets, lock=False, compute=True)
        read = {n: da.from_zarr(z, chunks=arrays[n].chunks, name=f"scratch-{name}-{n}-{uuid.uuid4().hex[:8]}")
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


def scratch_url(cube_url: str) -> str:
    """Where a cube's analysis keeps its scratch arrays: ``_scratch`` beside the cube."""
    return store.join(cube_url.rstrip("/").rsplit("/", 1)[0], "_scratch")


__all__ = ["COMPRESSORS", "Hold", "Scratch", "in_memory", "scratch_url"]
