"""Change objects: connected regions of changed pixels and their statistics.

Labelling is 8-connected. On dask arrays it uses ``dask_image.ndmeasure.label``, which merges
regions across chunk borders (a region crossing a chunk edge is one object). Statistics are
accumulated per chunk and merged, so no step loads the whole scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr
from scipy import ndimage

from ._util import is_dask

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


def label(mask: xr.DataArray) -> tuple[xr.DataArray, int]:
    """Labels of ``mask`` (``(y, x)`` bool), lazy on dask (computed label count)."""
    if mask.dims != ("y", "x"):
        raise ValueError(f"label mask dims got {mask.dims!r}; expected ('y', 'x')")
    if is_dask(mask):
        from dask_image import ndmeasure

        if not bool(mask.data.any().compute()):
            return mask.copy(data=dask.array.zeros(mask.shape, chunks=mask.data.chunks, dtype=np.int32)).rename("labels"), 0
        labels, n = ndmeasure.label(mask.data, structure=STRUCTURE_8)
        labels, n = dask.persist(labels.astype(np.int32), n)  # one pass computes both
        n = int(n.compute())
    else:
        labels, n = label_np(mask.values)
    return mask.copy(data=labels).rename("labels"), n


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
            flag: xr.DataArray | None = None) -> tuple[xr.DataArray, list[ObjectStats]]:
    """Labels and stats of the connected regions of ``mask`` (eager or dask). With ``join_px``,
    regions separated by at most ``2 * join_px`` empty pixels form one object; labels (and so areas,
    centroids and boxes) still cover only the pixels of ``mask``."""
    labels, n = label(grouping_mask(mask, join_px))
    if n == 0:
        return labels, []
    if join_px:
        labels = labels.where(mask, 0).astype(np.int32)
        if is_dask(labels):
            labels = labels.persist()
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


def hysteresis(score: xr.DataArray, low: float, high: float) -> xr.DataArray:
    """:func:`hysteresis_np` on ``score`` (``(y, x)``): grow at ``low``, seed at ``high``. On
    dask the regions are labelled across chunks (``dask_image``), so the result equals the
    whole-array one whatever the chunking; the score is computed (persisted) first, as the
    labelling needs it and rebuilding its graph per block pair would be slow."""
    if not low <= high:
        raise ValueError(f"hysteresis thresholds got low {low!r}, high {high!r}; expected low <= high")
    if score.dims != ("y", "x"):
        raise ValueError(f"hysteresis score dims got {score.dims!r}; expected ('y', 'x')")
    if not is_dask(score):
        return score.copy(data=hysteresis_np(score.values, low, high)).rename("change")
    s = score.fillna(-np.inf).persist()
    labels, n = label(s > low)
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
