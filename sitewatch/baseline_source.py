"""Where the baseline of one cube slot comes from: the site's stored baseline state, or a
rebuild from the cube; and the fold of the slot into the state once its masks are committed.

The baseline of a slot is the median/MAD of each pixel's last ``BaselineParams.window`` (W) clear
observations in the scenes analysed before it. The stored state
(:mod:`sitewatch.io.baseline_state`) is used when it folded exactly the cube's analysed slots
earlier than this one (same window, bands and grid, status ready); otherwise it is rebuilt from
the cube's last ``REBUILD_SCENES_PER_WINDOW * W`` analysed scenes, and :class:`SlotBaseline`
says why. With co-registration (the default), every date is registered to the state before it
is folded (:func:`~sitewatch.kernels.register.fold_registered`), in the analysis and in a
rebuild alike, so a state rebuilt from the cube equals the one folded scene after scene (while
the history fits in the rebuild's scenes). A date's fit uses its clear pixels
(:func:`fold_clear`) with ``min(min_obs, earlier scenes seen)`` observations (:func:`n_seen`). Prefect-free, like :mod:`sitewatch.analysis` which uses it.

Seasonal baseline (``BaselineParams.season_days``): the state is the same ring of the last W
clear observations with their dates; each date's baseline (for its change and for its
registration before the fold) is the median/MAD of the observations in season around it
(``state_baseline(state, date, season_days)``). A rebuild reads the same ``REBUILD_SCENES_PER_WINDOW * W`` scenes as in
the last-N mode: the ring to rebuild is the same last W clear observations, whichever of them are
in season, so W itself must reach back a year plus ``season_days`` (about 60 at a 5-day revisit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import xarray as xr

from .io import baseline_state as state_io
from .io import scratch
from .io.scratch import Hold
from .kernels.baseline import BaselineParams
from .kernels.baseline_ring import build_state, empty_state, fold
from .kernels.register import MAX_GAIN_RATIO, Registration, fold_registered

#: A baseline rebuilt from the cube (no usable stored state) reads at most this many times
#: ``BaselineParams.window`` of the most recent analysed scenes.
REBUILD_SCENES_PER_WINDOW = 3
#: The baseline state is held in memory (read or rebuilt once for the baseline and the fold) up to
#: this size; a larger one (a long window on a large site) is read, or rebuilt, a second time instead.
PERSIST_STATE_BYTES = 512 * 2**20


def analysed_earlier(cube: xr.Dataset, index: int) -> list[int]:
    """Indices of every analysed scene acquired before slot ``index``, oldest first."""
    times = cube.time.values
    ok = cube["ingested"].values & cube["analysed"].values
    earlier = [i for i in range(len(times)) if ok[i] and times[i] < times[index] and i != index]
    earlier.sort(key=lambda i: times[i])
    return earlier


def n_seen(cube: xr.Dataset, indices: Sequence[int]) -> int:
    """How many of the slots ``indices`` had any clear pixel (valid, and not all cloud)."""
    vf, cf = cube["valid_fraction"].values, cube["cloud_fraction"].values
    return sum(1 for i in indices if vf[i] > 0 and not (cf[i] >= 1.0))


def fold_clear(valid: xr.DataArray, cloud: xr.DataArray, shadow: xr.DataArray, values: xr.DataArray,
               saturation_dn: int = 65535) -> xr.DataArray:
    """The pixels of one date that are folded into the baseline state: valid, not cloud or
    shadow as committed, and no band (``values`` ``(band, y, x)``) saturated. Computable from the
    cube alone, so a rebuild folds exactly what the analysis folded."""
    return valid & ~cloud & ~shadow & ~(values >= saturation_dn).any("band")


@dataclass
class SlotBaseline:
    """The baseline state before one slot, and where it came from."""

    state: xr.Dataset  # ring (k, band, y, x) and n_obs (y, x): the last W clear observations
    folded: list[tuple[str, str]]  # slots folded into it (time, scene id), oldest first
    indices: list[int]  # their cube slots
    n_before: int  # older analysed slots a rebuild left out
    source: str  # "state" | "rebuilt" | "none" (no earlier analysed scene)
    note: str  # why it was rebuilt
    writable: bool  # the stored state may be replaced after this slot
    alignment: str = "none"  # "registered ..." (dates co-registered before folding) or "none"
    max_gain_ratio: float = MAX_GAIN_RATIO  # a date beyond it is not comparable: folded as not clear
    season_days: int | None = None  # BaselineParams.season_days: a seasonal baseline around each date


def slot_baseline(cube: xr.Dataset, cube_url: str, index: int, bands: Sequence[str], params: BaselineParams,
                  storage_options: dict[str, Any] | None = None, use_state: bool = True,
                  register_min_obs: int | None = None, in_memory: bool = False,
                  max_gain_ratio: float = MAX_GAIN_RATIO, hold: Hold = scratch.in_memory) -> SlotBaseline:
    """The baseline state before slot ``index`` of ``cube`` (opened lazily with raw counts). A
    stored state that folded this very slot is marked stale first (the slot's masks are about
    to be rewritten); ``use_state=False`` always rebuilds and never stores.
    ``register_min_obs``: the dates are co-registered before they are folded, each fit on pixels
    with ``min(register_min_obs, earlier scenes seen)`` observations (``None``: folded as
    stored); a date whose gain is beyond ``max_gain_ratio`` is not comparable and adds no
    observation. ``in_memory``: a rebuild runs on numpy arrays (a small site) instead of dask;
    otherwise ``hold`` keeps the state between the rebuild's dates (in the cluster's memory, or a
    :class:`sitewatch.io.scratch.Scratch` store)."""
    alignment = "none" if register_min_obs is None else f"registered, max gain ratio {max_gain_ratio:g}"
    window = params.window
    earlier = analysed_earlier(cube, index)
    keys = [state_io.slot_key(cube.time.values[i], cube.scene_id.values[i]) for i in earlier]
    url = state_io.state_url(cube_url)
    shape = (cube.sizes["y"], cube.sizes["x"])
    writable = use_state
    try:
        info = state_io.read_info(url, storage_options)
        reason = (state_io.mismatch(info, keys, window, bands, shape, alignment, params.season_days) if use_state
                  else "stored state not used (asked)")
    except state_io.StateError as exc:
        info, reason, writable = None, f"{exc}; not replaced", False
    this = state_io.slot_key(cube.time.values[index], cube.scene_id.values[index])
    if info is not None and this in info.folded:
        state_io.invalidate(url, f"slot {this[1]!r} ({this[0]}) re-analysed", storage_options)
    if reason is None:
        # in the cube's Dask chunks (the analysis may work on blocks of several stored chunks)
        state = state_io.open_state(url, info, cube.y, cube.x, storage_options,  # type: ignore[arg-type]
                                    chunks=cube["valid"].data.chunks[-2:] if cube["valid"].chunks else None)
        return SlotBaseline(state, list(info.folded), earlier[info.n_before:], info.n_before, "state", "", writable,  # type: ignore[union-attr]
                            alignment, max_gain_ratio, params.season_days)
    hist = earlier[-REBUILD_SCENES_PER_WINDOW * window:]
    if hist:
        h = cube.isel(time=hist)
        stack = h[list(bands)].to_dataarray("band").transpose("time", "band", "y", "x")
        clear = fold_clear(h["valid"], h["cloud"], h["shadow"], stack)
        if register_min_obs is None:
            state = build_state(stack, clear, params)
        else:
            state = _rebuild_registered(cube, hist, stack, clear, params, register_min_obs, in_memory, max_gain_ratio, hold)
        source, note = "rebuilt", f"rebuilt from the cube's last {len(hist)} analysed scene(s): {reason}"
    else:
        state = empty_state(cube["valid"].isel(time=index, drop=True), bands, params)
        source, note = "none", ""
    n_before = len(earlier) - len(hist)
    return SlotBaseline(state, keys[n_before:], earlier[n_before:], n_before, source, note, writable, alignment,
                        max_gain_ratio, params.season_days)


def _rebuild_registered(cube: xr.Dataset, hist: list[int], stack: xr.DataArray, clear: xr.DataArray,
                        params: BaselineParams, min_obs: int, in_memory: bool, max_gain_ratio: float,
                        hold: Hold = scratch.in_memory) -> xr.Dataset:
    """The state after folding the history slots ``hist`` date by date, each registered to the
    state so far, as the analysis folded them (one fit and fold per date: the state is held in
    memory, or held by ``hold`` on the cluster, between dates)."""
    state = empty_state(stack.isel(time=0, band=0, drop=True), list(stack["band"].values), params)
    if in_memory:
        state = state.load()
    for t in range(len(hist)):
        x = stack.isel(time=t, drop=True)
        c = clear.isel(time=t, drop=True)
        if in_memory:
            x, c = x.load(), c.load()
        k = max(1, min(min_obs, n_seen(cube, hist[:t])))
        state, _ = fold_registered(state, x, c, k, max_gain_ratio=max_gain_ratio, day=cube.time.values[hist[t]],
                                   season_days=params.season_days)
        state = state.compute() if in_memory else hold(state, f"rebuilt_{t}")
    return state


def fold_slot(cube: xr.Dataset, cube_url: str, index: int, base: SlotBaseline, values: xr.DataArray, clear: xr.DataArray,
              storage_options: dict[str, Any] | None = None, registration: Registration | None = None) -> bool:
    """After slot ``index``'s masks are committed: fold its ``clear`` (``y, x``, see
    :func:`fold_clear`) ``values`` (``band, y, x`` uint16), moved by ``registration`` (the
    slot's fit against ``base``; required when ``base.alignment`` is "registered", where
    ``None`` means no earlier observation to register to), into ``base.state`` and store the result, if the stored state may be
    replaced and no other analysed slot is as recent (a backfilled older slot leaves the stored
    state alone: later slots then rebuild). ``cube`` is the view opened before the slot's commit.
    Returns whether the state was stored."""
    times, done = cube.time.values, cube["ingested"].values & cube["analysed"].values
    latest = not any(done[j] and j != index and times[j] >= times[index] for j in range(len(times)))
    if not (base.writable and latest):
        return False
    chunks = cube["valid"].encoding.get("chunks") or cube["valid"].data.chunksize
    this = state_io.slot_key(times[index], cube.scene_id.values[index])
    day = times[index]
    if registration is None:
        new = fold(base.state, values, clear, day)
    else:  # the fold a rebuild makes: moved onto the baseline, or nothing added if not comparable
        new, _ = fold_registered(base.state, values, clear, 1, registration, base.max_gain_ratio, day, base.season_days)
    state_io.write_state(state_io.state_url(cube_url), new, base.folded + [this],
                         base.n_before, (int(chunks[-2]), int(chunks[-1])), storage_options, base.alignment, base.season_days)
    return True


def stored_chunks(cube: xr.Dataset) -> dict[str, int]:
    """The cube's stored chunk edges by dimension (``{"y": cy, "x": cx}``): those of the state too."""
    return dict(zip(("y", "x"), cube["valid"].encoding["chunks"][-2:]))


def state_in_stored_chunks(cube: xr.Dataset, cube_url: str, index: int, bands: Sequence[str], params: BaselineParams,
                           base: SlotBaseline, storage_options: dict[str, Any] | None) -> None:
    """Set ``base.state`` to the state in its stored chunks for a streamed site: re-opened (a
    stored state), made empty in them (none yet) or rechunked (a rebuilt one, in the scratch
    store in strips: the rare case). Read in strips instead, each strip decodes every stored
    chunk of the state it meets whole (96 bytes per pixel of ring) to use a part of it."""
    stored = stored_chunks(cube)
    if base.source == "state":
        url = state_io.state_url(cube_url)
        base.state = state_io.open_state(url, state_io.read_info(url, storage_options), cube.y, cube.x, storage_options)
    elif base.source == "none":
        base.state = empty_state(cube["valid"].isel(time=index, drop=True).chunk(stored), list(bands), params)
    else:
        base.state = base.state.chunk(stored)


def fold_in_stored_chunks(cube: xr.Dataset, cube_url: str, index: int, bands: Sequence[str], params: BaselineParams,
                          base: SlotBaseline, values: xr.DataArray, folded_clear: xr.DataArray,
                          storage_options: dict[str, Any] | None) -> tuple[xr.DataArray, xr.DataArray]:
    """A streamed site's fold works in the state's stored chunks, not in strips: the state is
    read (or made empty) in them (:func:`state_in_stored_chunks`: a lazy re-open, metadata
    only), and the date's values and pixels are rechunked to them (a few bytes per pixel). In
    strips, the store would regroup the new ring (96 bytes per pixel) from several strips per
    stored chunk: a whole row of stored chunks of it in memory at once. Returns the values and
    pixels to fold."""
    state_in_stored_chunks(cube, cube_url, index, bands, params, base, storage_options)
    stored = stored_chunks(cube)
    return values.chunk(stored), folded_clear.chunk(stored)
