"""sitewatch.io.scratch: whole-site arrays kept in a Zarr store instead of memory, read back lazily."""

from __future__ import annotations

import os
import threading

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sitewatch.io import scratch


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


def _counted(shape=(70, 90), chunks=((30, 30, 10), (40, 40, 10))):
    """A lazy (y, x) array whose blocks count how often they are computed."""
    calls = []
    lock = threading.Lock()

    def block(b, block_info=None):
        with lock:
            calls.append(block_info[0]["chunk-location"])
        return b * 3 + 1

    base = da.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape).rechunk(chunks)
    arr = xr.DataArray(base.map_blocks(block, dtype=np.float32), dims=("y", "x"),
                       coords={"y": np.arange(shape[0]) * -10.0, "x": np.arange(shape[1]) * 10.0},
                       attrs={"long_name": "test", "units": "1"}, name="v")
    return arr, calls


def test_a_held_array_is_the_same_array_read_from_the_store_computed_once(tmp_path):
    arr, calls = _counted()
    want = (np.arange(70 * 90, dtype=np.float32).reshape(70, 90)) * 3 + 1
    with scratch.Scratch(str(tmp_path / "_scratch")) as hold:
        held = hold(arr, "score")
        n = len(calls)
        assert n == 9  # every block once, by the write
        assert held.dims == arr.dims and held.attrs == arr.attrs and held.name == "v"
        assert held.chunks == arr.chunks
        xr.testing.assert_identical(held.coords.to_dataset(), arr.coords.to_dataset())
        np.testing.assert_array_equal(held.values, want)
        np.testing.assert_array_equal(held.isel(y=slice(25, 65)).values, want[25:65])
        assert len(calls) == n  # reading it back computes nothing again
        assert os.path.isdir(os.path.join(hold.url, "score"))
    assert not os.path.exists(hold.url)  # removed on exit


@pytest.mark.parametrize("read, stored", [({"y": 15, "x": -1}, (15, 40)),  # made in 30 x 40, read in strips: both split
                                          ({"y": 20, "x": 90}, (30, 40)),  # 30 is no multiple of 20: kept as made
                                          ({"y": 60}, (30, 40))])  # reads of two whole chunks
def test_a_held_array_is_read_back_in_the_chunks_asked_and_stored_in_chunks_that_fit_both(tmp_path, read, stored):
    import zarr

    arr, calls = _counted()
    ds = xr.Dataset({"a": arr, "b": arr.astype(np.uint16).expand_dims(band=2).transpose("band", "y", "x")})
    with scratch.Scratch(str(tmp_path / "_scratch")) as hold:
        held = hold(ds, "made", chunks=read)
        assert len(calls) == 9  # computed once, in the chunks it was made in
        for n in ("a", "b"):
            np.testing.assert_array_equal(held[n].values, ds[n].values)
            assert zarr.open_array(os.path.join(hold.url, "made", n)).chunks[-2:] == stored
            for d, edge in read.items():
                got = held[n].data.chunks[held[n].dims.index(d)]
                assert got[0] == (arr.sizes[d] if edge == -1 else min(edge, arr.sizes[d])), (n, d, got)
        assert held["b"].data.chunks[0] == ds["b"].data.chunks[0]  # a dimension not asked keeps its chunks
        with pytest.raises(ValueError, match=r"chunks got dims \['z'\]"):
            hold(arr, "other", chunks={"z": 3})
    assert scratch.in_memory(arr, "x", chunks={"y": 15}).data.chunks[0] == (15,) * 4 + (10,)


def test_a_dataset_is_held_in_one_pass_and_keeps_its_variables(tmp_path):
    arr, calls = _counted()
    ds = xr.Dataset({"a": arr, "b": (arr > 100).assign_attrs(long_name="flag"), "c": arr.astype(np.uint16),
                     "n": ("y", np.arange(70))})  # in memory: kept as it is
    with scratch.Scratch(str(tmp_path)) as hold:
        held = hold(ds, "masks")
        assert len(calls) == 9  # the three variables share one computation of the blocks
        assert list(held.data_vars) == ["a", "b", "c", "n"]
        for name in ("a", "b", "c"):
            assert held[name].dtype == ds[name].dtype and held[name].attrs == ds[name].attrs
            assert held[name].chunks == ds[name].chunks
            np.testing.assert_array_equal(held[name].values, ds[name].values)
        assert held["n"].data is ds["n"].data


def test_irregular_chunks_are_stored_regular_and_read_back_in_the_original_chunks(tmp_path):
    arr, _ = _counted(chunks=((20, 35, 15), (50, 10, 30)))
    with scratch.Scratch(str(tmp_path)) as hold:
        held = hold(arr, "x")
        assert held.chunks == arr.chunks
        np.testing.assert_array_equal(held.values, arr.values)


def test_in_memory_arrays_are_returned_as_they_are_and_nothing_is_written(tmp_path):
    a = xr.DataArray(np.ones((4, 5)), dims=("y", "x"))
    with scratch.Scratch(str(tmp_path / "s")) as hold:
        assert hold(a, "a") is a
    assert not os.path.exists(tmp_path / "s") or not os.listdir(tmp_path / "s")


def test_in_memory_hold_persists():
    arr, calls = _counted()
    held = scratch.in_memory(arr, "ignored")
    assert len(calls) == 9
    want = (np.arange(70 * 90, dtype=np.float32).reshape(70, 90)) * 3 + 1
    np.testing.assert_array_equal(held.values, want)
    assert len(calls) == 9  # held in memory: not computed again


def test_names_must_be_new_identifiers_and_objects_xarray(tmp_path):
    arr, _ = _counted()
    with scratch.Scratch(str(tmp_path)) as hold:
        hold(arr, "one")
        with pytest.raises(ValueError, match="'one'.*expected a new identifier"):
            hold(arr, "one")
        with pytest.raises(ValueError, match="'a/b'"):
            hold(arr, "a/b")
        with pytest.raises(ValueError, match="got a ndarray; expected an xarray"):
            hold(np.ones(3), "arr")


def test_the_store_is_removed_when_the_work_fails(tmp_path):
    arr, _ = _counted()
    with pytest.raises(RuntimeError, match="boom"):
        with scratch.Scratch(str(tmp_path)) as hold:
            hold(arr, "kept")
            assert os.listdir(tmp_path)
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_a_failing_computation_leaves_nothing_behind(tmp_path):
    def bad(b):
        raise ValueError("corrupt block")

    arr = xr.DataArray(da.ones((40, 40), chunks=20).map_blocks(bad, dtype=float), dims=("y", "x"))
    with pytest.raises(ValueError, match="corrupt block"):
        with scratch.Scratch(str(tmp_path)) as hold:
            hold(arr, "bad")
    assert os.listdir(tmp_path) == []


def test_each_scratch_has_a_folder_of_its_own_beside_the_cube(tmp_path):
    url = scratch.scratch_url(str(tmp_path / "site" / "cube.zarr"))
    assert url == str(tmp_path / "site" / "_scratch")
    a, b = scratch.Scratch(url), scratch.Scratch(url)
    assert a.url != b.url and a.url.startswith(url + "/")


def test_sweep_removes_only_folders_a_day_old(tmp_path):
    import time

    root = tmp_path / "_scratch"
    assert scratch.sweep(str(root)) == []  # nothing there yet
    arr, _ = _counted()
    live = scratch.Scratch(str(root))
    live(arr, "x")  # a running date's folder, named by its start
    old = root / f"{int(time.time()) - 2 * 24 * 3600}-deadbeef"
    (old / "baseline").mkdir(parents=True)
    (root / "notes").mkdir()  # not a scratch folder's name: left alone
    removed = scratch.sweep(str(root))
    assert [os.path.basename(p.rstrip("/")) for p in removed] == [old.name]
    assert sorted(os.listdir(root)) == sorted([os.path.basename(live.url), "notes"])
    assert scratch.sweep(str(root), now=time.time() + 2 * 24 * 3600) and os.listdir(root) == ["notes"]


def test_on_s3(s3_server, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="scratch-test")
    arr, calls = _counted()
    with scratch.Scratch("s3://scratch-test/site/_scratch") as hold:
        held = hold(arr, "score")
        np.testing.assert_array_equal(held.values, arr.values)
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="scratch-test").get("Contents", [])]
        assert any("/score/" in k for k in keys)
    left = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="scratch-test").get("Contents", [])
    assert left == []
    # a folder a killed run left on S3, two days old: swept by the name's time
    import time

    stale = f"site/_scratch/{int(time.time()) - 2 * 24 * 3600}-abc/baseline/zarr.json"
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket="scratch-test", Key=stale, Body=b"{}")
    assert len(scratch.sweep("s3://scratch-test/site/_scratch")) == 1
    assert boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="scratch-test").get("Contents", []) == []
