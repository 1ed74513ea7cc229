"""Change objects: connected regions of changed pixels and their statistics.

Labelling is 8-connected. On dask arrays each chunk is labelled on its own and labels that
touch across a chunk edge or corner are joined (:func:`label_blocks`), so a region crossing a
chunk edge is one object. Statistics are
accumulated per chunk and merged, so no step loads the whole scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import dask
import numpy as np
import xarray as xr
from scipy import ndimage

from ._util import is_dask

#: how a dask computation keeps an array that later steps read: ``persist`` by default
Keep = Callable[[xr.DataArray], xr.DataArray]

STRUCTURE_8 = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ObjectStats:
    """One connected change region, in pixel coordinates of the site grid."""

    label: int
    area_px: int
    row: float  # centroid (pixel-centre convention: row + 0.5 is the centre of the row)
    col: float
    row0: int
    col0: int
    row1: int  # exclusive
    col1: int  # exclusive
    score_mean: float
    score_max: float
    delta_mean: float
    flagged_px: int = 0  # pixels of the object where the optional ``flag`` layer is set


def label_np(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels (int32, 0 = background) and the number of objects."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"label mask got shape {mask.shape!r}; expected 2-d (y, x)")
    labels, n = ndimage.label(mask, structure=STRUCTURE_8)
    return labels.astype(np.int32), int(n)


def _persist(a: xr.DataArray) -> xr.DataArray:
    return a.persist()


def label(mask: xr.DataArray, keep: Keep = _persist) -> tuple[xr.DataArray, int]:
    """Labels of ``mask`` (``(y, x)`` bool), lazy on dask (computed label count); there the
    labels are computed once and kept by ``keep`` (default: ``persist``, in the cluster's memory;
    a streamed analysis passes a store)."""
    if mask.dims != ("y", "x"):
        raise ValueError(f"label mask dims got {mask.dims!r}; expected ('y', 'x')")
    if is_dask(mask):
        labels, n = label_blocks(mask.data)
        labels = keep(mask.copy(data=labels)).data
    else:
        labels, n = label_np(mask.values)
    return mask.copy(data=labels).rename("labels"), n


def _block_summary(block: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A block's number of local objects and the local labels on its four edges (top, bottom, left, right)."""
    lab, n = label_np(block)
    return n, lab[0].copy(), lab[-1].copy(), lab[:, 0].copy(), lab[:, -1].copy()


def _edge_pairs(a: np.ndarray, b: np.ndarray, oa: int, ob: int) -> np.ndarray:
    """Global label pairs joined across a shared edge: ``a`` and ``b`` are the two facing pixel
    lines (equal length), 8-connected (a pixel touches the 3 facing pixels)."""
    out = []
    for d in (-1, 0, 1):
        x = a[max(0, -d):len(a) - max(0, d)]
        y = b[max(0, d):len(b) - max(0, -d)]
        k = (x > 0) & (y > 0)
        if k.any():
            out.append(np.stack([x[k].astype(np.int64) + oa, y[k].astype(np.int64) + ob], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def label_blocks(mask: "dask.array.Array") -> tuple["dask.array.Array", int]:
    """8-connected labels of a 2-d dask boolean array, merged across chunk borders, with one
    task per chunk for each of two passes (``dask_image.ndmeasure.label``, used before, built
    about 580 000 tasks for one 4096^2 px site in 512 px chunks). Pass 1
    labels every chunk (scipy) and returns its object count and edge labels; the client joins
    labels that touch across a chunk edge or corner (connected components of that small graph);
    pass 2 (lazy) relabels every chunk to the global, consecutive numbering."""
    import dask.array as dsa
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if mask.ndim != 2:
        raise ValueError(f"label mask got {mask.ndim} dims; expected 2 (y, x)")
    blocks = mask.to_delayed()
    ny, nx = blocks.shape
    summaries = dask.compute(*[dask.delayed(_block_summary)(blocks[i, j]) for i in range(ny) for j in range(nx)])
    info = {(i, j): summaries[i * nx + j] for i in range(ny) for j in range(nx)}
    counts = np.array([info[(i, j)][0] for i in range(ny) for j in range(nx)], np.int64)
    offs = np.concatenate([[0], np.cumsum(counts)[:-1]])
    off = {(i, j): int(offs[i * nx + j]) for i in range(ny) for j in range(nx)}
    total = int(counts.sum())
    if total == 0:
        return dsa.zeros(mask.shape, chunks=mask.chunks, dtype=np.int32), 0
    pairs = [np.zeros((0, 2), np.int64)]
    for i in range(ny):
        for j in range(nx):
            _, top, bottom, left, right = info[(i, j)]
            if i + 1 < ny:  # the block below: its top row faces this block's bottom row
                pairs.append(_edge_pairs(bottom, info[(i + 1, j)][1], off[(i, j)], off[(i + 1, j)]))
            if j + 1 < nx:  # the block to the right: its left column faces this block's right column
                pairs.append(_edge_pairs(right, info[(i, j + 1)][3], off[(i, j)], off[(i, j + 1)]))
            if i + 1 < ny and j + 1 < nx and bottom[-1] > 0 and info[(i + 1, j + 1)][1][0] > 0:  # diagonal corners
                pairs.append(np.array([[bottom[-1] + off[(i, j)], info[(i + 1, j + 1)][1][0] + off[(i + 1, j + 1)]]], np.int64))
            if i + 1 < ny and j > 0 and bottom[0] > 0 and info[(i + 1, j - 1)][1][-1] > 0:
                pairs.append(np.array([[bottom[0] + off[(i, j)], info[(i + 1, j - 1)][1][-1] + off[(i + 1, j - 1)]]], np.int64))
    p = np.concatenate(pairs) - 1  # global labels 1..total -> nodes 0..total-1
    graph = coo_matrix((np.ones(len(p), np.int8), (p[:, 0], p[:, 1])), shape=(total, total))
    n, comp = connected_components(graph, directed=False)
    # consecutive numbering in order of first appearance (block by block, row-major)
    _, first = np.unique(comp, return_index=True)
    rank = np.empty(n, np.int32)
    rank[np.argsort(first)] = np.arange(1, n + 1, dtype=np.int32)
    glob = rank[comp]
    luts = {(i, j): np.concatenate([[0], glob[off[(i, j)]:off[(i, j)] + int(info[(i, j)][0])]]).astype(np.int32)
            for i in range(ny) for j in range(nx)}

    def relabel(block: np.ndarray, block_id=None) -> np.ndarray:
        return luts[block_id][label_np(block)[0]]

    return mask.map_blocks(relabel, dtype=np.int32), int(n)


def _block_stats(labels: np.ndarray, score: np.ndarray, delta: np.ndarray, r_off: int, c_off: int,
                 flag: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Per-label partial sums in one block: [n, sum_r, sum_c, r0, c0, r1, c1, sum_s, max_s, sum_d, n_flag]."""
    lab = np.asarray(labels)
    fg = lab > 0
    if not fg.any():
        return {}
    rr, cc = np.nonzero(fg)
    ll = lab[fg]
    s = np.nan_to_num(np.asarray(score, np.float64)[fg])
    d = np.nan_to_num(np.asarray(delta, np.float64)[fg])
    uniq, inv = np.unique(ll, return_inverse=True)
    k = len(uniq)
    n = np.bincount(inv, minlength=k)
    out = np.zeros((k, 11))
    out[:, 0] = n
    out[:, 1] = np.bincount(inv, rr + r_off + 0.5, minlength=k)
    out[:, 2] = np.bincount(inv, cc + c_off + 0.5, minlength=k)
    out[:, 3] = np.full(k, np.inf)
    out[:, 4] = np.full(k, np.inf)
    np.minimum.at(out[:, 3], inv, rr + r_off)
    np.minimum.at(out[:, 4], inv, cc + c_off)
    out[:, 5] = -np.inf
    out[:, 6] = -np.inf
    np.maximum.at(out[:, 5], inv, rr + r_off + 1)
    np.maximum.at(out[:, 6], inv, cc + c_off + 1)
    out[:, 7] = np.bincount(inv, s, minlength=k)
    out[:, 8] = -np.inf
    np.maximum.at(out[:, 8], inv, s)
    out[:, 9] = np.bincount(inv, d, minlength=k)
    if flag is not None:
        out[:, 10] = np.bincount(inv, np.asarray(flag, bool)[fg].astype(np.float64), minlength=k)
    return {int(u): out[i] for i, u in enumerate(uniq)}


def _merge(parts: list[dict[int, np.ndarray]]) -> list[ObjectStats]:
    acc: dict[int, np.ndarray] = {}
    for part in parts:
        for lab, v in part.items():
            if lab not in acc:
                acc[lab] = v.copy()
                continue
            a = acc[lab]
            a[0] += v[0]; a[1] += v[1]; a[2] += v[2]  # noqa: E702
            a[3] = min(a[3], v[3]); a[4] = min(a[4], v[4])  # noqa: E702
            a[5] = max(a[5], v[5]); a[6] = max(a[6], v[6])  # noqa: E702
            a[7] += v[7]; a[8] = max(a[8], v[8]); a[9] += v[9]; a[10] += v[10]  # noqa: E702
    out = []
    for lab in sorted(acc):
        a = acc[lab]
        n = a[0]
        out.append(ObjectStats(
            label=lab, area_px=int(n), row=float(a[1] / n), col=float(a[2] / n),
            row0=int(a[3]), col0=int(a[4]), row1=int(a[5]), col1=int(a[6]),
            score_mean=float(a[7] / n), score_max=float(a[8]), delta_mean=float(a[9] / n),
            flagged_px=int(a[10]),
        ))
    return out


def object_stats(labels: xr.DataArray, score: xr.DataArray, delta: xr.DataArray, flag: xr.DataArray | None = None) -> list[ObjectStats]:
    """Statistics of every labelled object, merged across chunks. ``flag`` (optional, bool)
    is counted per object (``flagged_px``), e.g. pixels close to a cloud."""
    if is_dask(labels):
        lab = labels.data

        def blocks(x):
            arr = x.data if isinstance(x, xr.DataArray) else x
            arr = arr.rechunk(lab.chunks) if is_dask(x) else dask.array.from_array(np.asarray(arr), chunks=lab.chunks)
            return arr.to_delayed()

        lb, sb, db = lab.to_delayed(), blocks(score), blocks(delta)
        fb = blocks(flag) if flag is not None else None
        r_offs = np.concatenate([[0], np.cumsum(lab.chunks[0])[:-1]])
        c_offs = np.concatenate([[0], np.cumsum(lab.chunks[1])[:-1]])
        parts = [
            dask.delayed(_block_stats)(lb[i, j], sb[i, j], db[i, j], int(r_offs[i]), int(c_offs[j]), None if fb is None else fb[i, j])
            for i in range(lb.shape[0]) for j in range(lb.shape[1])
        ]
        return _merge(list(dask.compute(*parts)))
    return _merge([_block_stats(labels.values, np.asarray(score), np.asarray(delta), 0, 0, None if flag is None else np.asarray(flag))])


def objects_np(mask: np.ndarray, score: np.ndarray, delta: np.ndarray) -> list[ObjectStats]:
    """Label ``mask`` and return the stats of each object (numpy in, plain objects out)."""
    labels, _ = label_np(mask)
    return _merge([_block_stats(labels, score, delta, 0, 0)])


def _dilate_np(mask: np.ndarray, join_px: int) -> np.ndarray:
    return ndimage.maximum_filter(np.asarray(mask, bool).view(np.uint8), size=2 * join_px + 1, mode="constant", cval=0).astype(bool)


def dilate(mask: xr.DataArray, px: int) -> xr.DataArray:
    """``mask`` (``(y, x)`` bool) dilated by a ``2 * px + 1`` square; ``map_overlap`` with depth
    ``px`` on dask, so chunked and whole-array results are identical."""
    if px < 0:
        raise ValueError(f"dilation px got {px!r}; expected >= 0")
    if px == 0:
        return mask
    if is_dask(mask):
        data = mask.data.map_overlap(_dilate_np, depth=px, boundary="none", dtype=bool, join_px=px)
    else:
        data = _dilate_np(mask.values, px)
    return mask.copy(data=data)


def grouping_mask(mask: xr.DataArray, join_px: int) -> xr.DataArray:
    """``mask`` dilated by ``join_px`` pixels, so changed pixels up to ``2 * join_px`` apart (a
    group of vehicles, a broken outline) label as one object."""
    if join_px < 0:
        raise ValueError(f"join_px got {join_px!r}; expected >= 0")
    return dilate(mask, join_px)


def objects(mask: xr.DataArray, score: xr.DataArray, delta: xr.DataArray, join_px: int = 0,
            flag: xr.DataArray | None = None, keep: Keep = _persist) -> tuple[xr.DataArray, list[ObjectStats]]:
    """Labels and stats of the connected regions of ``mask`` (eager or dask). With ``join_px``,
    regions separated by at most ``2 * join_px`` empty pixels form one object; labels (and so areas,
    centroids and boxes) still cover only the pixels of ``mask``. On dask the labels are kept by
    ``keep`` (see :func:`label`)."""
    labels, n = label(grouping_mask(mask, join_px), keep)
    if n == 0:
        return labels, []
    if join_px:
        labels = labels.where(mask, 0).astype(np.int32)
        if is_dask(labels):
            labels = keep(labels)
    return labels, object_stats(labels, score, delta, flag)


def _seeded_labels_np(labels: np.ndarray, seed: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    return np.unique(lab[np.asarray(seed, bool) & (lab > 0)]).astype(np.int64)


def hysteresis_np(score: np.ndarray, low: float, high: float) -> np.ndarray:
    """Pixels above ``low`` whose 8-connected region of ``score > low`` holds a pixel above
    ``high`` (NaN counts as below both)."""
    s = np.nan_to_num(np.asarray(score, np.float32), nan=-np.inf)
    labels, n = label_np(s > low)
    if n == 0:
        return np.zeros(s.shape, bool)
    keep = np.zeros(n + 1, bool)
    keep[_seeded_labels_np(labels, s > high)] = True
    keep[0] = False
    return keep[labels]


def hysteresis(score: xr.DataArray, low: float, high: float, keep: Keep = _persist) -> xr.DataArray:
    """:func:`hysteresis_np` on ``score`` (``(y, x)``): grow at ``low``, seed at ``high``. On
    dask the regions are labelled across chunks (:func:`label_blocks`), so the result equals the
    whole-array one whatever the chunking; the score is computed (persisted) first, as the
    labelling needs it and rebuilding its graph per block pair would be slow. Both the score and
    the labels are kept by ``keep`` (default: ``persist``; a streamed analysis passes a store)."""
    if not low <= high:
        raise ValueError(f"hysteresis thresholds got low {low!r}, high {high!r}; expected low <= high")
    if score.dims != ("y", "x"):
        raise ValueError(f"hysteresis score dims got {score.dims!r}; expected ('y', 'x')")
    if not is_dask(score):
        return score.copy(data=hysteresis_np(score.values, low, high)).rename("change")
    s = keep(score.fillna(-np.inf))
    labels, n = label(s > low, keep)
    if n == 0:
        return xr.zeros_like(score, dtype=bool).rename("change")
    lb, sb = labels.data.to_delayed().ravel(), (s > high).data.rechunk(labels.data.chunks).to_delayed().ravel()
    seeds = dask.compute(*[dask.delayed(_seeded_labels_np)(a, b) for a, b in zip(lb, sb)])
    keep = np.zeros(n + 1, bool)
    for k in seeds:
        keep[k] = True
    keep[0] = False
    data = labels.data.map_blocks(lambda b: keep[b], dtype=bool)
    return score.copy(data=data).rename("change")
