"""sitewatch.locality: regions of a site held on one worker each, on a real distributed cluster."""
import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster, wait

from sitewatch.locality import compute_on, persist_in_regions, plan, split, threads


def _ds(seed: int = 0, chunks: tuple[int, int] = (32, 32)) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 10000, (3, 96, 128), dtype=np.uint16)
    return xr.Dataset(
        {"bands": (("band", "y", "x"), da.from_array(a, chunks=(3, *chunks))),
         "valid": (("y", "x"), da.from_array(a[0] > 100, chunks=chunks)),
         "n": ((), 7)},
        coords={"band": ["red", "nir", "swir16"], "y": np.arange(96) * -10.0, "x": np.arange(128) * 10.0},
        attrs={"site": "test"})


def test_split_into_contiguous_groups_of_whole_chunks():
    assert split((32, 32, 32), 2) == [(0, 64), (64, 96)]
    assert split((32, 32, 32, 32), 2) == [(0, 64), (64, 128)]
    assert split((10, 20, 30), 5) == [(0, 10), (10, 30), (30, 60)]  # no more groups than chunks
    assert split((7,), 3) == [(0, 7)]
    with pytest.raises(ValueError, match="n=0"):
        split((1, 2), 0)


def test_without_a_distributed_client_a_plain_persist():
    ds = _ds()
    with dask.config.set(scheduler="threads"):
        out = persist_in_regions(ds)
    xr.testing.assert_identical(out.compute(), ds.compute())
    assert out.chunks == ds.chunks
    with pytest.raises(ValueError, match="got ndarray"):
        persist_in_regions(np.zeros(3))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cl, Client(cl) as c:
        yield c


def _holders(client, arr: xr.DataArray) -> np.ndarray:
    """The worker holding each chunk of a 2-D (y, x) array (persisted here: a persisted
    concatenation's chunks are aliases, computed where their pieces are), as addresses."""
    data = arr.data.persist()
    wait(data)
    who = client.who_has(data)
    return np.array([[who[k][0] if len(who[k]) == 1 else "several" for k in row] for row in data.__dask_keys__()])


def test_row_bands_held_by_one_worker_each_and_the_same_for_every_array(client):
    ds, other = _ds(1), _ds(2)["valid"]
    out = persist_in_regions(ds)
    o2 = persist_in_regions(other)
    xr.testing.assert_identical(out.compute(), ds.compute())  # only the placement differs
    assert out.chunks == ds.chunks and out.attrs == ds.attrs and int(out["n"]) == 7
    workers = sorted(client.scheduler_info()["workers"])
    held = _holders(client, out["valid"])
    # 3 chunk rows, 4 chunk columns: split along x (more chunks), 2 columns per worker
    assert (held[:, :2] == workers[0]).all() and (held[:, 2:] == workers[1]).all(), held
    assert (_holders(client, o2) == held).all()
    # a step combining the two arrays chunk by chunk runs where both are: nothing is copied
    assert (_holders(client, out["valid"] & o2) == held).all()


def test_one_chunk_along_both_dims_is_a_plain_persist(client):
    ds = _ds(3, chunks=(96, 128))
    out = persist_in_regions(ds)
    xr.testing.assert_identical(out.compute(), ds.compute())
    assert out.chunks == ds.chunks


def test_threads_of_the_cluster_or_of_the_local_scheduler(client):
    assert threads() == 2  # the fixture's 2 workers x 1 thread


def test_threads_without_a_cluster():
    with dask.config.set(scheduler="threads", num_workers=3):
        assert threads() == 3


def test_plan_and_compute_on_the_planned_workers(client):
    assert plan({"y": (32, 32, 32), "x": (128,)})[:2] == ("y", [(0, 64), (64, 96)])
    assert plan({"y": (96,), "x": (128,)}) is None  # one chunk: nothing to place
    dim, spans, workers = plan({"y": (32, 32, 32), "x": (32,) * 4})
    assert dim == "x" and spans == [(0, 64), (64, 128)] and workers == sorted(client.scheduler_info()["workers"])
    from distributed import get_worker

    def where(x):
        return get_worker().address

    out = compute_on([(dask.delayed(where)(k), w) for k, w in enumerate(workers)])
    assert out == workers
    with pytest.raises(ZeroDivisionError):
        compute_on([(dask.delayed(lambda: 1 / 0)(), workers[0]), (dask.delayed(where)(1), workers[1])])


def test_plan_without_a_cluster():
    with dask.config.set(scheduler="threads"):
        assert plan({"y": (32, 32), "x": (32, 32)}) is None
        assert compute_on([(dask.delayed(sum)([1, 2]), "nowhere")]) == [3]
