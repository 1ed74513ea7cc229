"""Tests of sitewatch.io.colocated: blocks of a Zarr array read beside the blocks of another Dask
array, with the same values as a plain read, on the local scheduler and on a real 2-worker
LocalCluster (where each read must land on the worker holding the anchor's block)."""

from __future__ import annotations

from collections import Counter

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from sitewatch.io.colocated import read_beside, slot_beside


@pytest.fixture()
def arr(tmp_path):
    z = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(3, 2, 96, 80), chunks=(3, 2, 32, 16), dtype="uint16")
    z[:] = np.random.default_rng(0).integers(0, 10000, z.shape)
    return z


def test_read_beside_equals_a_plain_read_in_the_anchors_uneven_chunks(arr):
    anchor = da.zeros((96, 80), chunks=((40, 56), (16, 64)))  # uneven, not the stored chunks
    with dask.config.set(scheduler="synchronous"):
        x = read_beside(arr, anchor, (1, slice(None)))
        assert x.shape == (2, 96, 80) and x.chunks == ((2,), (40, 56), (16, 64)) and x.dtype == np.uint16
        np.testing.assert_array_equal(x.compute(), arr[1])
        y = read_beside(arr, anchor, (slice(None), slice(None)), dtype=np.float32)
        assert y.chunks[:2] == ((3,), (2,)) and y.dtype == np.float32
        np.testing.assert_array_equal(y.compute(), arr[:].astype(np.float32))
        z2 = read_beside(arr, anchor, (2, 0))
        np.testing.assert_array_equal(z2.compute(), arr[2, 0])
    assert read_beside(arr, anchor, (0, 0)).name != read_beside(arr, anchor, (0, 0)).name  # never aliases an earlier read


def test_read_beside_refuses_mismatched_shapes_and_leads(arr):
    with pytest.raises(ValueError, match=r"anchor of shape \(96, 79\)"):
        read_beside(arr, da.zeros((96, 79)), (0, 0))
    with pytest.raises(ValueError, match="lead"):
        read_beside(arr, da.zeros((96, 80)), (0,))
    with pytest.raises(ValueError, match="lead got 3 for a dimension of 3"):
        read_beside(arr, da.zeros((96, 80)), (3, 0))
    with pytest.raises(ValueError, match=r"lead got slice\(0, 1"):
        read_beside(arr, da.zeros((96, 80)), (slice(0, 1), 0))


def test_slot_beside_keeps_values_dtypes_coords_and_attrs(tmp_path):
    rng = np.random.default_rng(1)
    cube = xr.Dataset({"red": (("time", "y", "x"), rng.integers(0, 9, (2, 64, 48)).astype("uint16"), {"units": "1"}),
                       "valid": (("time", "y", "x"), rng.random((2, 64, 48)) > 0.3)},
                      coords={"time": np.array(["2026-01-01", "2026-01-02"], "datetime64[ns]"), "y": np.arange(64.0), "x": np.arange(48.0)})
    url = str(tmp_path / "c.zarr")
    cube.chunk({"time": 1, "y": 32, "x": 16}).to_zarr(url, mode="w")
    lazy = xr.open_zarr(url, mask_and_scale=False, chunks={"y": 32, "x": 16})
    slot = lazy[["red", "valid"]].isel(time=1, drop=True)
    anchor = xr.DataArray(da.zeros((64, 48), chunks=(32, 16)), dims=("y", "x"))
    got = slot_beside(zarr.open_group(url, mode="r"), slot, 1, anchor)
    xr.testing.assert_identical(got.compute(), slot.compute())
    assert got["valid"].dtype == bool and got["red"].attrs == slot["red"].attrs
    with pytest.raises(ValueError, match="expected a \\('y', 'x'\\) Dask array"):
        slot_beside(zarr.open_group(url, mode="r"), slot, 1, anchor.compute())


def test_reads_land_on_the_workers_holding_the_anchor(arr):
    from distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, Client(cl) as c:
        anchor = da.random.random((96, 80), chunks=(24, 20)).persist()  # 16 blocks
        wait(anchor)
        x = read_beside(arr, anchor, (0, slice(None))).persist()
        wait(x)
        where_anchor = {k[1:]: next(iter(w)) for k, w in c.who_has(anchor).items()}
        where_read = {k[-2:]: next(iter(w)) for k, w in c.who_has(x).items()}
        assert len(where_read) == 16 and where_read == where_anchor
        assert len(Counter(where_anchor.values())) == 2  # both workers hold blocks: the test can tell placements apart
        np.testing.assert_array_equal(x.compute(), arr[0])
