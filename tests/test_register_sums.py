"""The compiled registration sums (register_sums) against their numpy references: identical integers."""

import numpy as np
import pytest

from sitewatch.kernels.register import HIST_HALF, inlier_band
from sitewatch.kernels.register_sums import _all_sums_np, all_sums, difference_hist, difference_hist_np


@pytest.mark.parametrize("trim", [False, True])
def test_compiled_sums_equal_the_numpy_reference(trim):
    """register_sums (numba) gives the very integers of the numpy reference: histogram, whole,
    inlier and box sums, with NaN medians, unusable pixels and values up to 65534."""
    rng = np.random.default_rng(21 + trim)
    nb, h, w = 3, 37, 29
    vals = rng.integers(1, 65535, (nb, h + 2, w + 2)).astype(np.float32)
    vals[:, :10] = rng.integers(900, 1100, (nb, 10, w + 2))  # a flat part: inliers
    med = (np.rint(2 * (vals + rng.normal(0, 30, vals.shape))) / 2).astype(np.float32)
    med[1, 5, 7] = np.nan
    med[:, 20:22, 3] = np.nan
    med[:, 25:30, 10:20] += 3000  # a real change: outliers of the fit
    use = (rng.random((1, h + 2, w + 2)) < 0.9).astype(np.float32)
    padded = np.concatenate([vals, med, use])
    hist = difference_hist(padded[:, 1:-1, 1:-1], nb, HIST_HALF)
    assert np.array_equal(hist, difference_hist_np(padded[:, 1:-1, 1:-1], nb, HIST_HALF))
    centre, tol = inlier_band(hist) if trim else (None, None)
    ref = _all_sums_np(padded, nb, centre, tol)
    got = all_sums(padded, nb, centre, tol)
    for r, g in zip(ref, got):
        assert r.shape == g.shape and all(int(a) == int(b) for a, b in zip(r.ravel(), g.ravel()))
    n_all, n_inl = int(got[0][0, 1, 1]), int(got[1][0, 1, 1])
    assert (n_all > n_inl > 0) if trim else (n_all == n_inl > 0)


def test_parts_in_their_own_dtypes_equal_the_stacked_block():
    """The fit passes the scene's uint16 counts, the float32 median and a bool ``use`` as separate
    arrays (no stacked float32 copy): the very integers of the stacked float32 block."""
    from sitewatch.kernels.register_sums import all_sums_parts, difference_hist_parts

    rng = np.random.default_rng(5)
    nb, h, w = 2, 23, 31
    vals = rng.integers(1, 65535, (nb, h, w)).astype(np.uint16)
    med = (np.rint(2 * (vals + rng.normal(0, 40, vals.shape))) / 2).astype(np.float32)
    med[0, 3, 4] = np.nan
    use = rng.random((h, w)) < 0.8
    block = np.concatenate([vals.astype(np.float32), med, use[None].astype(np.float32)])
    hist = difference_hist_parts(vals, med, use, HIST_HALF)
    assert np.array_equal(hist, difference_hist(block, nb, HIST_HALF))
    centre, tol = inlier_band(hist)
    for r, g in zip(all_sums(block, nb, centre, tol), all_sums_parts(vals, med, use, centre, tol)):
        assert all(int(a) == int(b) for a, b in zip(r.ravel(), g.ravel()))
    with pytest.raises(ValueError, match="registration parts got shapes"):
        difference_hist_parts(vals, med[:1], use, HIST_HALF)
