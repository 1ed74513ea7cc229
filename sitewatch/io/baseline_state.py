"""The site's incremental baseline state: a Zarr (v3) group beside the cube.

``<store>/<site>/cube.zarr`` has its state at ``<store>/<site>/cube.baseline.zarr``
(:func:`state_url`). It holds the per-pixel ring of the last ``window`` clear observations
(:mod:`sitewatch.kernels.baseline_ring`):

* ``ring`` ``(k, band, y, x)`` uint16 (0 = empty), chunked ``(k, bands, cy, cx)`` with the
  cube's ``(cy, cx)`` chunks in y/x, so a fold rewrites every spatial chunk once (Blosc LZ4 with
  bit shuffling: :data:`COMPRESSORS`);
* ``n_obs`` ``(y, x)`` uint32, chunked ``(cy, cx)``;
* ``day`` ``(k, y, x)`` uint16, each slot's acquisition date in days since 1970-01-01
  (:mod:`sitewatch.kernels.season`), chunked ``(k, cy, cx)`` (since version 2: a version-1 state
  has none, is read as stale and rebuilt);
* group attributes: ``title``, ``sitewatch_baseline_state_version``, ``window``,
  ``season_days`` (``null``: the last ``window`` observations; d: a seasonal baseline), ``bands``,
  ``shape``, ``folded`` (the slots folded in, oldest first, as ``[time, scene_id]`` pairs with
  the time in ISO 8601 UTC milliseconds), ``n_before`` (analysed slots older than the first
  folded one that the last rebuild left out: a rebuild reads a bounded history), ``alignment``
  (``"registered"``: every date was co-registered to the state before it was folded, see
  :func:`sitewatch.kernels.register.fold_registered`; ``"none"``: folded as stored) and
  ``status``, the consistency marker.

Update protocol (one writer per site, as for the cube; every object write is atomic):

1. ``status`` is set to ``"updating"`` (or a fresh group is created with that status);
2. the ``ring`` and ``n_obs`` chunks are region-written (chunk-aligned);
3. the attributes are written once, ``status: "ready"`` with the new ``folded`` and ``n_before``.

A crash between 1 and 3 leaves ``"updating"``: readers (:func:`mismatch`) then refuse the state
and the analysis rebuilds it from the cube; a half-updated state is never used. A state can
also be marked ``"stale"`` (:func:`invalidate`), e.g. before a folded slot is re-analysed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from ..kernels.baseline_ring import N_OBS_DTYPE, RING_DTYPE
from ..kernels.season import DAY_DTYPE
from . import store
from .colocated import read_beside

STATE_TITLE = "sitewatch baseline state"
#: 2: the ``day`` array and the ``season_days`` attribute (version 1 had neither).
STATE_VERSION = 2
STATUSES = ("ready", "updating", "stale")
#: The state is rewritten whole at every fold: LZ4 with bit shuffling compresses band counts about
#: as well as Zarr's default Zstandard (a little better) at several times its speed.
COMPRESSORS = (BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),)

Key = tuple[str, str]  # (acquisition time, ISO 8601 UTC ms; scene id)


class StateError(ValueError):
    """The store at the state's URL is not a sitewatch baseline state (never overwritten)."""


@dataclass(frozen=True)
class StateInfo:
    """What a stored state says about itself (its group attributes)."""

    status: str
    window: int
    bands: tuple[str, ...]
    shape: tuple[int, int]
    chunks: tuple[int, int]
    folded: tuple[Key, ...]
    n_before: int
    note: str = ""
    alignment: str = "none"  # "registered": each date folded after co-registration to the state
    season_days: int | None = None  # the seasonal window the dates were registered with (None: last N)


def state_url(cube_url: str) -> str:
    """The state's URL beside the cube: ``.../cube.zarr`` -> ``.../cube.baseline.zarr``."""
    base = cube_url.rstrip("/")
    if base.endswith(".zarr"):
        base = base[: -len(".zarr")]
    return f"{base}.baseline.zarr"


def slot_key(time: Any, scene_id: str) -> Key:
    """The record of one slot: its time (ISO 8601 UTC, milliseconds) and scene id."""
    return (np.datetime_as_string(np.datetime64(time, "ms"), unit="ms") + "Z", str(scene_id))


def _open_group(url: str, storage_options: dict[str, Any] | None, mode: str, **kw: Any) -> zarr.Group:
    opts = store.storage_options_for(url, storage_options)
    return zarr.open_group(url, mode=mode, zarr_format=3, **({"storage_options": opts} if opts else {}), **kw)


def read_info(url: str, storage_options: dict[str, Any] | None = None) -> StateInfo | None:
    """The stored state's attributes, or ``None`` when there is no state (or its creation was cut
    short before any attribute). A store that is not a sitewatch baseline state is a
    :class:`StateError`."""
    if not store.exists(store.join(url, "zarr.json"), storage_options):
        return None
    try:
        attrs = dict(_open_group(url, storage_options, "r").attrs)
    except Exception as exc:
        raise StateError(f"baseline state {url!r}: group metadata unreadable ({type(exc).__name__}: {exc}); "
                         "expected a sitewatch baseline state") from exc
    if attrs.get("title") != STATE_TITLE:
        raise StateError(f"store {url!r} got a Zarr group titled {attrs.get('title')!r}; expected a sitewatch baseline "
                         "state (a store written by another tool is never overwritten: move it aside)")
    if attrs.get("sitewatch_baseline_state_version") != STATE_VERSION:
        return StateInfo("stale", 0, (), (0, 0), (0, 0), (), 0,
                         note=f"state version {attrs.get('sitewatch_baseline_state_version')!r}, expected {STATE_VERSION}")
    try:
        return StateInfo(
            status=str(attrs["status"]), window=int(attrs["window"]), bands=tuple(attrs["bands"]),
            shape=tuple(attrs["shape"]), chunks=tuple(attrs["chunks"]),  # type: ignore[arg-type]
            folded=tuple((str(t), str(s)) for t, s in attrs.get("folded", [])),
            n_before=int(attrs.get("n_before", 0)), note=str(attrs.get("note", "")),
            alignment=str(attrs.get("alignment", "none")),
            season_days=None if attrs.get("season_days") is None else int(attrs["season_days"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        return StateInfo("stale", 0, (), (0, 0), (0, 0), (), 0, note=f"attributes incomplete ({exc!r})")


def mismatch(info: StateInfo | None, earlier: Sequence[Key], window: int, bands: Sequence[str],
             shape: tuple[int, int], alignment: str = "none", season_days: int | None = None) -> str | None:
    """Why the state cannot serve as the baseline of a slot whose earlier analysed slots are
    ``earlier`` (oldest first), or ``None`` when it can: status ready, same window, seasonal
    window, bands and grid, the same ``alignment`` of the folded dates, and it folded exactly those slots (all of
    them, or the most recent ones after
    ``n_before`` older ones that its last rebuild left out)."""
    if info is None:
        return "no baseline state yet"
    if info.status != "ready":
        return f"baseline state is {info.status!r}" + (f" ({info.note})" if info.note else "") + \
            (": an update was cut short" if info.status == "updating" else "")
    if info.window != window:
        return f"baseline window changed ({info.window} -> {window})"
    if info.season_days != season_days:
        return f"baseline season_days changed ({info.season_days} -> {season_days})"
    if tuple(info.bands) != tuple(bands):
        return f"bands changed ({list(info.bands)!r} -> {list(bands)!r})"
    if tuple(info.shape) != tuple(shape):
        return f"grid shape changed ({tuple(info.shape)!r} -> {tuple(shape)!r})"
    if info.alignment != alignment:
        return f"alignment of the folded dates changed ({info.alignment!r} -> {alignment!r})"
    earlier = [tuple(k) for k in earlier]
    n = len(info.folded)
    if len(earlier) != info.n_before + n or (n and earlier[-n:] != list(info.folded)):
        extra = sorted(set(earlier) - set(info.folded))
        gone = sorted(set(info.folded) - set(earlier))
        what = []
        if gone:
            what.append(f"{len(gone)} folded slot(s) no longer analysed earlier than this one (first {gone[0]!r})")
        if extra and len(earlier) != info.n_before + n:
            what.append(f"{len(earlier) - info.n_before - n:+d} analysed earlier slot(s) (e.g. a backfill)")
        return "baseline state folded other slots than the cube's analysed history: " + ("; ".join(what) or "order differs")
    return None


def open_state(url: str, info: StateInfo, y: xr.DataArray, x: xr.DataArray,
               storage_options: dict[str, Any] | None = None,
               chunks: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> xr.Dataset:
    """The stored ``ring``, ``n_obs`` and ``day`` as a lazy Dataset with the cube's ``y``/``x``
    coordinates and the state's ``band`` names, in Dask ``chunks`` along ``(y, x)`` (default:
    the Zarr chunks; ``n_obs`` and ``day`` are read beside the ring's blocks). Dask keys are
    unique per call, so a read after a write never aliases an earlier read."""
    g = _open_group(url, storage_options, "r")
    token = uuid.uuid4().hex
    yx = tuple(g["n_obs"].chunks) if chunks is None else tuple(chunks)
    ring = da.from_array(g["ring"], chunks=(*g["ring"].chunks[:2], *yx), name=f"state-ring-{token}", asarray=True)
    # n_obs and day read beside the ring's blocks: every use of the state needs all three, and
    # read as separate root tasks they land on different workers of a cluster
    data = {"ring": ring, **_read_beside(g, ring[0, 0], ("n_obs", "day"), "")}
    return xr.Dataset({name: (_DIMS[name], d) for name, d in data.items()}, coords={"band": list(info.bands), "y": y, "x": x})


#: the state's arrays: dimensions, and the index of the leading ones for a read of whole (y, x) blocks
_DIMS = {"ring": ("k", "band", "y", "x"), "n_obs": ("y", "x"), "day": ("k", "y", "x")}
_LEAD = {"ring": (slice(None), slice(None)), "n_obs": (), "day": (slice(None),)}


def _read_beside(g: zarr.Group, anchor: da.Array, names: Sequence[str], suffix: str) -> dict[str, da.Array]:
    return {n: read_beside(g[n], anchor, _LEAD[n], name=f"state-{n}{suffix}") for n in names}


def open_state_beside(url: str, state: xr.Dataset, anchor: xr.DataArray,
                      storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """``state`` (as :func:`open_state` returned it, lazily) read again, each ``(y, x)`` block on
    the Dask worker that holds ``anchor``'s block (a persisted ``(y, x)`` array on the same grid;
    :func:`sitewatch.io.colocated.read_beside`). The analysis reads the state a second time for
    the fold when it is too large to hold; read beside the date's pixels, the fold moves no
    block of the state or of the scene between workers."""
    data = _read_beside(_open_group(url, storage_options, "r"), anchor.data, tuple(_DIMS), "-beside")
    for name, d in data.items():
        if d.shape != state[name].shape or d.dtype != state[name].dtype:
            raise ValueError(f"baseline state {name} at {url} got shape {d.shape!r} {d.dtype}; expected the open state's "
                             f"{state[name].shape!r} {state[name].dtype}")
    return state.assign({name: state[name].copy(data=d) for name, d in data.items()})


def _create(url: str, window: int, bands: Sequence[str], shape: tuple[int, int], chunks: tuple[int, int],
            storage_options: dict[str, Any] | None) -> zarr.Group:
    """A fresh group with empty arrays and ``status: "updating"`` (an existing state is replaced)."""
    cy, cx = min(chunks[0], shape[0]), min(chunks[1], shape[1])
    # the group is created with its title and the marker in one write: a creation cut short is
    # recognised as a sitewatch state that is "updating" (rebuilt), never as a foreign store
    g = _open_group(url, storage_options, "w", attributes={
        "title": STATE_TITLE, "sitewatch_baseline_state_version": STATE_VERSION, "status": "updating",
        "window": int(window), "bands": list(bands), "shape": list(shape), "chunks": [cy, cx], "folded": [], "n_before": 0})
    g.create_array("ring", shape=(window, len(bands), *shape), chunks=(window, len(bands), cy, cx), dtype=RING_DTYPE,
                   fill_value=0, dimension_names=("k", "band", "y", "x"), compressors=COMPRESSORS)
    g.create_array("n_obs", shape=shape, chunks=(cy, cx), dtype=N_OBS_DTYPE, fill_value=0, dimension_names=("y", "x"),
                   compressors=COMPRESSORS)
    g.create_array("day", shape=(window, *shape), chunks=(window, cy, cx), dtype=DAY_DTYPE, fill_value=0,
                   dimension_names=("k", "y", "x"), compressors=COMPRESSORS)
    return g


def _aligned(dask_chunks: tuple[int, ...], zarr_chunk: int) -> bool:
    return all(int(b) % zarr_chunk == 0 for b in np.cumsum(dask_chunks)[:-1])


def write_state(url: str, state: xr.Dataset, folded: Sequence[Key], n_before: int, chunks: tuple[int, int],
                storage_options: dict[str, Any] | None = None, alignment: str = "none",
                season_days: int | None = None) -> None:
    """Store ``state`` (``ring`` ``(k, band, y, x)``, ``n_obs`` ``(y, x)``, ``day`` ``(k, y, x)``,
    lazy or not) as having folded ``folded`` (oldest first) after ``n_before`` left-out older
    slots, by the update protocol of the module docstring. ``chunks``: the cube's ``(cy, cx)``;
    ``alignment`` and ``season_days``: how its dates were registered (see :func:`mismatch`)."""
    if "day" not in state.data_vars:
        raise ValueError("baseline state to store lacks 'day'; expected ring, n_obs and day (k, y, x)")
    ring, n_obs = state["ring"].transpose("k", "band", "y", "x"), state["n_obs"].transpose("y", "x")
    day = state["day"].transpose("k", "y", "x")
    window, bands, shape = ring.sizes["k"], [str(b) for b in ring["band"].values], (ring.sizes["y"], ring.sizes["x"])
    if ring.dtype != RING_DTYPE or n_obs.dtype != N_OBS_DTYPE or day.dtype != DAY_DTYPE:
        raise ValueError(f"baseline state dtypes got ring {ring.dtype}, n_obs {n_obs.dtype}, day {day.dtype}; expected "
                         f"{np.dtype(RING_DTYPE)}, {np.dtype(N_OBS_DTYPE)}, {np.dtype(DAY_DTYPE)}")
    if (n_obs.sizes["y"], n_obs.sizes["x"]) != shape or day.shape != (window, *shape):
        raise ValueError(f"baseline state n_obs, day got shapes {n_obs.shape!r}, {day.shape!r}; expected the ring's "
                         f"{shape!r}, {(window, *shape)!r}")
    if n_before < 0 or len(set(map(tuple, folded))) != len(folded):
        raise ValueError(f"baseline state record got n_before {n_before!r} and {len(folded)} folded slot(s) with "
                         "repeats; expected n_before >= 0 and each slot folded once")
    info = read_info(url, storage_options)  # a foreign store raises: never overwritten
    cy, cx = min(chunks[0], shape[0]), min(chunks[1], shape[1])
    if info is not None and (info.window, tuple(info.bands), tuple(info.shape), tuple(info.chunks)) == (window, tuple(bands), shape, (cy, cx)):
        g = _open_group(url, storage_options, "r+")
        g.attrs.update({"status": "updating"})  # 1. the marker, before any chunk changes
    else:
        g = _create(url, window, bands, shape, (cy, cx), storage_options)
    sources, targets = [], []
    for var, name, zchunks in ((ring, "ring", (window, len(bands), cy, cx)), (n_obs, "n_obs", (cy, cx)),
                               (day, "day", (window, cy, cx))):
        data = var.data
        if not isinstance(data, da.Array):
            data = da.from_array(np.asarray(data), chunks=zchunks, name=False)  # no hashing of the values
        elif not all(_aligned(c, z) for c, z in zip(data.chunks, zchunks)):
            data = data.rechunk(zchunks)
        sources.append(data)
        # every chunk is written, also an all-empty one: zarr's check whether a chunk equals the fill
        # value cost about 0.3 s per (non-contiguous) ring chunk, 20 % of the analysis at 2048^2 px
        with zarr.config.set({"array.write_empty_chunks": True}):
            targets.append(g[name])
    da.store(sources, targets, lock=False)  # 2. chunk-aligned writes
    g.attrs.update({"status": "ready", "folded": [list(k) for k in folded], "n_before": int(n_before), "note": "",
                    "alignment": alignment, "season_days": None if season_days is None else int(season_days)})  # 3.


def invalidate(url: str, note: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Mark a stored state ``"stale"`` (so it is rebuilt before use); False if there is none."""
    info = read_info(url, storage_options)
    if info is None:
        return False
    _open_group(url, storage_options, "r+").attrs.update({"status": "stale", "note": note})
    return True
