"""Tests for sitewatch.kernels.objects: 8-connected labelling, per-object statistics, dilation,
grouping of nearby regions (join_px) and flag counts."""

from __future__ import annotations

import dataclasses

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from sitewatch.kernels.objects import (
    ObjectStats,
    dilate,
    grouping_mask,
    label,
    label_np,
    object_stats,
    objects,
    objects_np,
)

H, W = 300, 300
UNEVEN = {"y": (100, 37, 163), "x": (90, 120, 90)}  # borders at rows 100, 137 and cols 90, 210


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _da(a: np.ndarray) -> xr.DataArray:
    return xr.DataArray(a, dims=("y", "x"), coords={"y": np.arange(a.shape[0]) * -10.0, "x": np.arange(a.shape[1]) * 10.0})


def _scene(seed: int = 0):
    """Mask with objects crossing chunk edges and corners of UNEVEN, plus random float32
    score and delta."""
    rng = np.random.default_rng(seed)
    m = np.zeros((H, W), bool)
    m[95:105, 85:95] = True  # square over the corner (100, 90)
    m[150:160, 200:230] = True  # across col 210
    m[130:145, 20:25] = True  # across row 137
    m[136, 89] = m[137, 90] = True  # diagonal pair touching only across the corner (137, 90)
    m[99, 250] = m[100, 251] = m[101, 252] = True  # diagonal staircase across row 100
    m[10:12, 10:12] = True  # 2 x 2 ...
    m[12, 12] = True  # ... plus a diagonal neighbour
    m[200:260, 120:125] = True  # L shape
    m[255:260, 120:160] = True
    m[280:300, 280:300] = True  # touches the array corner
    # random speckle (many small objects, some touching chunk borders)
    m |= rng.random((H, W)) < 0.004
    score = (rng.random((H, W)) * 20).astype(np.float32)
    delta = ((rng.random((H, W)) - 0.5) * 0.2).astype(np.float32)
    return m, score, delta


def _scipy_stats(mask: np.ndarray, score: np.ndarray, delta: np.ndarray) -> list[ObjectStats]:
    """Reference statistics from scipy.ndimage on the whole array."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(lab), lab, idx)
    com = ndimage.center_of_mass(np.ones_like(lab, dtype=float), lab, idx)
    sl = ndimage.find_objects(lab)
    s = score.astype(np.float64)
    d = delta.astype(np.float64)
    smean = ndimage.mean(s, lab, idx)
    smax = ndimage.maximum(s, lab, idx)
    dmean = ndimage.mean(d, lab, idx)
    return [
        ObjectStats(
            label=int(i), area_px=int(area[k]), row=float(com[k][0]) + 0.5, col=float(com[k][1]) + 0.5,
            row0=sl[k][0].start, col0=sl[k][1].start, row1=sl[k][0].stop, col1=sl[k][1].stop,
            score_mean=float(smean[k]), score_max=float(smax[k]), delta_mean=float(dmean[k]),
        )
        for k, i in enumerate(idx)
    ]


def _key(o: ObjectStats):
    return (o.row0, o.col0, o.row1, o.col1, o.area_px)


def _unlabelled(objs: list[ObjectStats]) -> list[ObjectStats]:
    return [dataclasses.replace(o, label=0) for o in sorted(objs, key=_key)]


def _assert_close_stats(got: list[ObjectStats], ref: list[ObjectStats]):
    got, ref = sorted(got, key=_key), sorted(ref, key=_key)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        for f in ("area_px", "row0", "col0", "row1", "col1", "row", "col", "score_max"):
            assert getattr(g, f) == getattr(r, f), (f, g, r)
        for f in ("score_mean", "delta_mean"):
            assert getattr(g, f) == pytest.approx(getattr(r, f), rel=1e-12, abs=1e-15), (f, g, r)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True if label images a and b define the same objects (up to renumbering)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


# ---------------------------------------------------------------- hand-computed


def test_hand_computed_stats():
    mask = np.zeros((8, 10), bool)
    mask[1:3, 2:5] = True  # 2 x 3 rectangle
    mask[5, 7] = True  # single pixel
    mask[6, 8] = True  # diagonal neighbour: same object
    score = np.arange(80, dtype=np.float32).reshape(8, 10)
    delta = np.full((8, 10), -0.01, np.float32)
    delta[5, 7] = 0.03
    objs = objects_np(mask, score, delta)
    assert len(objs) == 2
    a, b = objs
    assert (a.label, a.area_px, a.row0, a.col0, a.row1, a.col1) == (1, 6, 1, 2, 3, 5)
    assert (a.row, a.col) == (2.0, 3.5)  # mean row 1.5 and col 3 -> pixel-centres 2.0 and 3.5
    assert a.score_mean == pytest.approx((12 + 13 + 14 + 22 + 23 + 24) / 6)
    assert a.score_max == 24.0
    assert a.delta_mean == pytest.approx(-0.01)
    assert (b.label, b.area_px, b.row0, b.col0, b.row1, b.col1) == (2, 2, 5, 7, 7, 9)
    assert (b.row, b.col) == (6.0, 8.0)
    assert b.score_mean == pytest.approx((57 + 68) / 2)
    assert b.score_max == 68.0
    assert b.delta_mean == pytest.approx((0.03 - 0.01) / 2)


def test_eight_connectivity_diagonal_touch_is_one_object():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # diagonal line
    mask[0, 5] = mask[1, 4] = True  # anti-diagonal
    mask[4, 0] = True  # isolated (two rows below (2, 2) is not a neighbour)
    labels, n = label_np(mask)
    assert n == 3
    assert labels.dtype == np.int32
    assert labels[0, 0] == labels[1, 1] == labels[2, 2] != 0
    assert labels[0, 5] == labels[1, 4] != labels[0, 0]
    assert labels[4, 0] not in (0, labels[0, 0], labels[0, 5])
    assert (labels[~mask] == 0).all()
    # a 4-connected labelling would split them: the test data distinguishes the two
    assert ndimage.label(mask)[1] == 6


def test_nan_score_counts_as_zero_and_no_objects():
    mask = np.zeros((5, 5), bool)
    mask[1, 1:3] = True
    score = np.full((5, 5), np.nan, np.float32)
    score[1, 1] = 8.0
    objs = objects_np(mask, score, np.zeros((5, 5), np.float32))
    assert objs[0].score_mean == 4.0 and objs[0].score_max == 8.0
    assert objects_np(np.zeros((5, 5), bool), score, score) == []
    labels, objs = objects(_da(np.zeros((5, 5), bool)), _da(score), _da(score))
    assert objs == [] and not labels.values.any()
    labels, objs = objects(_da(np.zeros((50, 50), bool)).chunk(30), _da(np.zeros((50, 50))), _da(np.zeros((50, 50))))
    assert objs == [] and not labels.values.any()


def test_stats_match_scipy_whole_array():
    mask, score, delta = _scene(seed=1)
    ref = _scipy_stats(mask, score, delta)
    got = objects_np(mask, score, delta)
    assert [o.label for o in got] == list(range(1, len(ref) + 1))
    _assert_close_stats(got, ref)
    # the shaped objects are single objects (speckle may touch them, never split them)
    labels, _ = label_np(mask)
    assert len(np.unique(labels[95:105, 85:95])) == 1
    assert len(np.unique(np.concatenate([labels[200:260, 120:125].ravel(), labels[255:260, 120:160].ravel()]))) == 1
    assert labels[136, 89] == labels[137, 90] != 0
    assert labels[99, 250] == labels[100, 251] == labels[101, 252] != 0
    ell = got[labels[200, 120] - 1]
    assert ell.area_px >= 60 * 5 + 5 * 35 and ell.row0 <= 200 and ell.col0 <= 120 and ell.row1 >= 260 and ell.col1 >= 160


# ---------------------------------------------------------------- numpy vs xarray vs dask


def test_numpy_kernel_equals_xarray_eager():
    mask, score, delta = _scene(seed=2)
    labels, objs = objects(_da(mask), _da(score), _da(delta))
    ref_labels, n = label_np(mask)
    np.testing.assert_array_equal(labels.values, ref_labels)
    assert labels.dims == ("y", "x") and labels.name == "labels"
    np.testing.assert_array_equal(labels.x.values, _da(mask).x.values)
    assert objs == objects_np(mask, score, delta)
    assert len(objs) == n


@pytest.mark.parametrize("chunks", [UNEVEN, {"y": (64, 75, 61, 100), "x": (53, 97, 150)}])
def test_dask_uneven_chunks_identical_to_numpy(chunks):
    mask, score, delta = _scene(seed=3)
    eager_labels, eager = objects(_da(mask), _da(score), _da(delta))
    lazy_labels, lazy = objects(_da(mask).chunk(chunks), _da(score).chunk(chunks), _da(delta).chunk(chunks))
    assert isinstance(lazy_labels.data, da.Array)
    lab = lazy_labels.values
    assert lab.dtype == np.int32
    assert _same_partition(lab, eager_labels.values)
    assert sorted(np.unique(lab[lab > 0]).tolist()) == sorted(o.label for o in lazy)
    # identical statistics (labels may be numbered differently)
    assert _unlabelled(lazy) == _unlabelled(eager)
    # label of each dask object matches the labels image
    for o in lazy:
        win = lab[o.row0:o.row1, o.col0:o.col1] == o.label
        assert win.sum() == o.area_px
    _assert_close_stats(lazy, _scipy_stats(mask, score, delta))


def test_dask_objects_across_chunk_edges_and_corners_are_single():
    m = np.zeros((H, W), bool)
    m[95:105, 85:95] = True  # four chunks meet at (100, 90)
    m[136, 89] = m[137, 90] = True  # only a diagonal contact across the corner (137, 90)
    m[99, 250] = m[100, 251] = True  # diagonal contact across row 100
    m[150:160, 205:215] = True  # across col 210
    score = np.arange(H * W, dtype=np.float32).reshape(H, W) / 1000
    delta = np.ones((H, W), np.float32)
    labels, objs = objects(_da(m).chunk(UNEVEN), _da(score).chunk({"y": 50, "x": 50}), _da(delta))
    assert len(objs) == 4
    assert labels.values.max() == 4
    got = {(o.row0, o.col0, o.row1, o.col1): o for o in objs}
    sq = got[(95, 85, 105, 95)]
    assert (sq.area_px, sq.row, sq.col) == (100, 100.0, 90.0)
    assert sq.score_max == score[104, 94]
    assert sq.score_mean == pytest.approx(score[95:105, 85:95].astype(np.float64).mean(), rel=1e-12)
    assert sq.delta_mean == 1.0
    diag = got[(136, 89, 138, 91)]
    assert (diag.area_px, diag.row, diag.col) == (2, 137.0, 90.0)
    stair = got[(99, 250, 101, 252)]
    assert (stair.area_px, stair.row, stair.col) == (2, 100.0, 251.0)
    band = got[(150, 205, 160, 215)]
    assert (band.area_px, band.row, band.col) == (100, 155.0, 210.0)


def test_label_wrapper_dask_count_and_eager_count():
    mask, _, _ = _scene(seed=4)
    lab_e, n_e = label(_da(mask))
    lab_d, n_d = label(_da(mask).chunk(UNEVEN))
    assert n_e == n_d == ndimage.label(mask, structure=np.ones((3, 3)))[1]
    assert _same_partition(lab_d.values, lab_e.values)


def test_object_stats_numpy_score_with_dask_labels_and_threads():
    mask, score, delta = _scene(seed=5)
    labels, _ = label(_da(mask).chunk(UNEVEN))
    with dask.config.set(scheduler="threads"):
        got = object_stats(labels.persist(), _da(score), _da(delta).chunk({"y": 64}))
    assert _unlabelled(got) == _unlabelled(objects_np(mask, score, delta))


# ---------------------------------------------------------------- dilation, grouping, flags


@pytest.mark.parametrize("px", [1, 4])
def test_dilate_numpy_equals_dask_uneven_chunks(px):
    mask, _, _ = _scene(seed=7)
    ref = ndimage.binary_dilation(mask, structure=np.ones((2 * px + 1, 2 * px + 1), bool))
    eager = dilate(_da(mask), px)
    assert eager.dims == ("y", "x") and eager.dtype == bool
    np.testing.assert_array_equal(eager.values, ref)
    np.testing.assert_array_equal(eager.x.values, _da(mask).x.values)
    for chunks in (UNEVEN, {"y": (64, 75, 61, 100), "x": (53, 97, 150)}):
        lazy = dilate(_da(mask).chunk(chunks), px)
        assert isinstance(lazy.data, da.Array)
        assert lazy.data.chunks == _da(mask).chunk(chunks).data.chunks
        np.testing.assert_array_equal(lazy.values, ref)
    # px = 0 is the identity; grouping_mask is the same dilation
    np.testing.assert_array_equal(dilate(_da(mask), 0).values, mask)
    np.testing.assert_array_equal(grouping_mask(_da(mask).chunk(UNEVEN), px).values, ref)


def test_dilate_and_grouping_reject_negative_px():
    m = _da(np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="px"):
        dilate(m, -1)
    with pytest.raises(ValueError, match="join_px"):
        grouping_mask(m, -1)
    with pytest.raises(ValueError, match="join_px"):
        objects(m, m, m, join_px=-1)


def _vehicles(h: int = 40, w: int = 50):
    """Six 2 x 3 'vehicles' in two rows of three, 1 px apart, with their top-left at (10, 20)."""
    m = np.zeros((h, w), bool)
    for r in (10, 13):
        for c in (20, 24, 28):
            m[r:r + 2, c:c + 3] = True
    return m


@pytest.mark.parametrize("lazy", [False, True])
def test_join_px_groups_nearby_vehicles_areas_cover_only_mask(lazy):
    h, w = 40, 50
    m = _vehicles(h, w)
    m[30, 40] = True  # a lone pixel far away: its own object
    score = np.arange(h * w, dtype=np.float32).reshape(h, w) / 100
    delta = np.full((h, w), 0.05, np.float32)
    delta[~m] = -1.0  # gap pixels would drag the mean down if they were counted
    xm, xs, xd = _da(m), _da(score), _da(delta)
    if lazy:
        chunks = {"y": (12, 28), "x": (22, 28)}  # borders through the group (gap row, first vehicle)
        xm, xs, xd = xm.chunk(chunks), xs.chunk(chunks), xd.chunk({"y": 15})
    labels, objs = objects(xm, xs, xd, join_px=1)
    assert len(objs) == 2
    lab = labels.values
    assert lab.dtype == np.int32
    np.testing.assert_array_equal(lab > 0, m)  # labels cover only the mask pixels
    group = next(o for o in objs if o.area_px > 1)
    assert group.area_px == 36
    assert len(np.unique(lab[m & (np.arange(h)[:, None] < 20)])) == 1
    assert (group.row0, group.col0, group.row1, group.col1) == (10, 20, 15, 31)
    rr, cc = np.nonzero(m[:20])
    assert group.row == pytest.approx(rr.mean() + 0.5) and group.col == pytest.approx(cc.mean() + 0.5)
    assert group.score_mean == pytest.approx(score[:20][m[:20]].astype(np.float64).mean(), rel=1e-12)
    assert group.score_max == score[:20][m[:20]].max()
    assert group.delta_mean == pytest.approx(0.05)
    if lazy:  # the labels kept where the caller says (a streamed analysis: a store): the same objects
        kept = []
        labels_k, objs_k = objects(xm, xs, xd, join_px=1, keep=lambda a: kept.append(a.dims) or a.persist())
        assert objs_k == objs and np.array_equal(labels_k.values, lab) and kept == [("y", "x")] * 2
    # without joining they are six vehicles (plus the lone pixel), each 6 px
    labels0, objs0 = objects(xm, xs, xd)
    assert len(objs0) == 7
    assert sorted(o.area_px for o in objs0) == [1] + [6] * 6
    np.testing.assert_array_equal(labels0.values > 0, m)


def test_join_px_gap_limit():
    # gaps of 2 * join_px pixels join (across columns and rows), one more pixel of gap does not
    z = np.zeros((20, 30), np.float32)
    for join_px in (1, 2, 3):
        for gap, n_expected in ((2 * join_px, 1), (2 * join_px + 1, 2)):
            m = np.zeros((20, 30), bool)
            m[2:5, 2:5] = True
            m[2:5, 5 + gap:8 + gap] = True  # to the right
            m[5 + gap:8 + gap, 5 + gap:8 + gap] = True  # below that
            chunked = join_px == 1  # dask: the chunk border (col 6) in the gap
            xm = _da(m).chunk({"y": 20, "x": (6, 24)}) if chunked else _da(m)
            labels, objs = objects(xm, _da(z), _da(z), join_px=join_px)
            assert len(objs) == (1 if n_expected == 1 else 3), (join_px, gap)
            assert sum(o.area_px for o in objs) == 27
            np.testing.assert_array_equal(labels.values > 0, m)


def test_flag_counts_object_pixels_inside_flag():
    mask, score, delta = _scene(seed=8)
    rng = np.random.default_rng(9)
    flag = rng.random((H, W)) < 0.3
    flag[95:105, 85:95] = True  # the corner square entirely flagged
    flag[150:160, 200:230] = False  # the band across col 210 not at all
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    ref = ndimage.sum_labels(flag, lab, np.arange(1, n + 1)).astype(int)
    _, eager = objects(_da(mask), _da(score), _da(delta), flag=_da(flag))
    assert [o.flagged_px for o in eager] == ref.tolist()
    assert sum(o.flagged_px for o in eager) == int((flag & mask).sum()) > 0
    by_box = {(o.row0, o.col0, o.row1, o.col1): o for o in eager}
    sq = next(o for k, o in by_box.items() if k[0] <= 95 and k[1] <= 85 and k[2] >= 105 and k[3] >= 95)
    assert sq.flagged_px == sq.area_px
    # without a flag nothing is counted, the other statistics are unchanged
    _, noflag = objects(_da(mask), _da(score), _da(delta))
    assert all(o.flagged_px == 0 for o in noflag)
    assert [dataclasses.replace(o, flagged_px=0) for o in eager] == noflag
    # dask: flag chunked differently from the labels, or numpy, gives the same counts
    labels, lazy = objects(_da(mask).chunk(UNEVEN), _da(score).chunk(UNEVEN), _da(delta), flag=_da(flag).chunk({"y": 64, "x": 71}))
    assert _unlabelled(lazy) == _unlabelled(eager)
    assert _unlabelled(object_stats(labels, _da(score), _da(delta), _da(flag))) == _unlabelled(eager)


def test_flag_with_join_px_counts_only_mask_pixels():
    m = _vehicles()
    flag = ~m  # flag everything except the vehicles: the gaps between them are flagged
    flag[10, 20] = flag[14, 30] = True  # and two vehicle pixels
    z = np.zeros(m.shape, np.float32)
    for xm, xf in ((_da(m), _da(flag)), (_da(m).chunk({"y": (12, 28), "x": 25}), _da(flag).chunk({"y": 7}))):
        _, objs = objects(xm, _da(z), _da(z), join_px=1, flag=xf)
        assert len(objs) == 1
        assert (objs[0].area_px, objs[0].flagged_px) == (36, 2)


# ---------------------------------------------------------------- no mutation


def test_inputs_not_mutated():
    mask, score, delta = _scene(seed=6)
    m0, s0, d0 = mask.copy(), score.copy(), delta.copy()
    objects_np(mask, score, delta)
    label_np(mask)
    np.testing.assert_array_equal(mask, m0)
    np.testing.assert_array_equal(score, s0)
    np.testing.assert_array_equal(delta, d0)
    xm, xs, xd = _da(mask), _da(score), _da(delta)
    c = [a.copy(deep=True) for a in (xm, xs, xd)]
    objects(xm, xs, xd)
    objects(xm.chunk(UNEVEN), xs.chunk(UNEVEN), xd)
    objects(xm, xs, xd, join_px=2, flag=xm)
    dilate(xm, 3)
    dilate(xm.chunk(UNEVEN), 3).compute()
    for a, b in zip((xm, xs, xd), c):
        xr.testing.assert_identical(a, b)


# ---------------------------------------------------------------- bad input


def test_bad_input():
    with pytest.raises(ValueError, match="label mask"):
        label_np(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match="label mask"):
        label_np(np.zeros(5, bool))
    m = _da(np.zeros((10, 12), bool))
    with pytest.raises(ValueError, match="dims"):
        label(m.transpose("x", "y"))
    with pytest.raises(ValueError, match="dims"):
        objects(m.expand_dims(time=1), m, m)
    with pytest.raises(ValueError, match="dims"):
        objects(m.rename(y="row"), m, m)


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
@pytest.mark.parametrize("chunks", [((1, 30, 2, 27), (13, 1, 46)), ((17, 43), (9, 9, 9, 9, 9, 15)), ((60,), (60,))])
def test_label_blocks_random_masks_equal_scipy_whole_array(density, chunks):
    """Random masks near and above the percolation density (long winding regions crossing many
    chunk edges and corners, 1 px chunks included): the chunk-wise labels define the same
    objects as scipy on the whole array, numbered 1..n in order of first appearance by chunk."""
    import dask.array as dsa

    from sitewatch.kernels.objects import label_blocks

    rng = np.random.default_rng(int(density * 100))
    mask = rng.random((60, 60)) < density
    ref, n_ref = ndimage.label(mask, structure=np.ones((3, 3)))
    lab, n = label_blocks(dsa.from_array(mask, chunks=chunks))
    got = lab.compute()
    assert n == n_ref and got.dtype == np.int32
    assert _same_partition(got, ref)
    assert sorted(np.unique(got[got > 0]).tolist()) == list(range(1, n + 1))
