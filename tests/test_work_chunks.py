"""Tests of sitewatch.work_chunks: the Dask chunks a lazy analysis works on (blocks of whole
stored chunks), and the threads of the cluster they are sized for. The analysis in work chunks
equals the in-memory analysis: tests/test_analysis.py."""

from __future__ import annotations

import datetime as dt

import dask
import numpy as np
import pytest

from sitewatch.grid import SiteGrid
from sitewatch.io import cube as cube_io
from sitewatch.synthetic import BANDS
from sitewatch.work_chunks import open_for_analysis, open_strips, strip_rows, threads, work_chunk, worker_memory


def _cube(tmp_path, width: int, height: int, chunk: int) -> str:
    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=width, height=height)
    url = str(tmp_path / "cube.zarr")
    cube_io.extend(url, grid, BANDS, [("ONLY", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))], chunk=chunk)
    return url


def test_work_chunk_is_whole_stored_chunks_and_shrinks_for_the_threads():
    # smaller, by whole stored chunks, while a site would have fewer than min_chunks chunks
    assert work_chunk(1024, 2048, (4096, 4096), 4) == 2048 and work_chunk(1024, 2048, (4096, 4096), 16) == 1024
    assert work_chunk(512, 2048, (2048, 2048), 4) == 1024 and work_chunk(512, 2048, (1024, 1024), 4) == 512
    assert work_chunk(512, 2048, (300, 200), 4) == 512  # never below one stored chunk
    assert work_chunk(64, 128) == 128 and work_chunk(64, 200) == 192 and work_chunk(64, 32) == 64 and work_chunk(64, None) == 64


def test_open_for_analysis_reads_blocks_of_stored_chunks_as_raw_counts(tmp_path):
    url = _cube(tmp_path, 256, 256, 64)
    cube = open_for_analysis(url, 128)
    assert cube["red"].data.chunksize == (1, 128, 128) and cube["red"].encoding["chunks"] == (1, 64, 64)
    assert cube["red"].dtype == np.uint16  # raw counts, not CF-decoded
    assert open_for_analysis(url, None)["red"].data.chunksize == (1, 64, 64)
    assert open_for_analysis(url, 256, min_chunks=4)["red"].data.chunksize == (1, 128, 128)


def test_work_chunks_of_a_narrow_site_stay_aligned(tmp_path):
    """A site narrower than one stored chunk along y (48 x 256 px, stored 48 x 64): work chunks
    grow along x only, by whole stored chunks."""
    url = _cube(tmp_path, 256, 48, 64)
    assert open_for_analysis(url, 128)["red"].data.chunks[1:] == ((48,), (128, 128))
    assert open_for_analysis(url, 128, min_chunks=4)["red"].data.chunks[1:] == ((48,), (64,) * 4)


def test_strips_hold_about_px_squared_pixels_full_width_and_split_for_the_threads():
    assert strip_rows((4096, 4096), 1024) == 256 and strip_rows((8192, 8192), 1024) == 128
    assert strip_rows((1024, 1024), 1024) == 1024 and strip_rows((1024, 1024), 1024, min_chunks=4) == 256
    assert strip_rows((100, 20000), 64) == 1  # never below one row
    assert strip_rows((10, 10), 1024, min_chunks=4) == 3  # ceil(10 / 4): at most 4 strips


@pytest.mark.parametrize("shape, px, stored, rows", [((4096, 4096), 1024, 512, 256), ((8192, 8192), 1024, 1024, 128),
                                                     ((10980, 10980), 1024, 1024, 64), ((3000, 3000), 1024, 512, 256),
                                                     ((2048, 2048), 1024, 512, 512), ((1024, 1024), 1024, 100, 1024), ((1024, 4096), 1024, 100, 200),
                                                     ((600, 700), 1024, 512, 600), ((10980, 10980), 1024, 1000, 50),
                                                     ((300, 300), 1024, 512, 300)])
def test_strips_fit_the_stored_rows(shape, px, stored, rows):
    # a divisor of the stored chunk height below it, a multiple above it; one strip when the site is one
    assert strip_rows(shape, px, stored=stored) == rows
    assert stored % rows == 0 or rows % stored == 0 or rows == shape[0]


def test_open_strips_reads_full_width_strips_as_raw_counts(tmp_path):
    url = _cube(tmp_path, 256, 200, 64)
    cube = open_strips(url, 64, min_chunks=2)
    assert cube["red"].data.chunks[1:] == ((16,) * 12 + (8,), (256,))
    assert cube["red"].dtype == np.uint16 and cube["red"].encoding["chunks"] == (1, 64, 64)
    # 200 / 4 = 50 rows, fitted to the stored 64 px rows: 32 (a divisor of 64), so no stored
    # chunk is cut by a strip in two unequal parts
    assert open_strips(url, 1024, min_chunks=4)["red"].data.chunks[1:] == ((32,) * 6 + (8,), (256,))


def test_threads_of_the_cluster_or_of_the_local_scheduler():
    from distributed import Client, LocalCluster

    with dask.config.set(scheduler="threads", num_workers=3):
        assert threads() == 3
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=":0") as cl, Client(cl):
        assert threads() == 4


def test_worker_memory_of_the_cluster_or_of_this_machine():
    import psutil
    from distributed import Client, LocalCluster

    with dask.config.set(scheduler="threads"):
        assert worker_memory() == psutil.virtual_memory().total
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0", memory_limit="1.5GiB") as cl, \
            Client(cl):
        assert worker_memory() == int(1.5 * 2**30)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0", memory_limit=0) as cl, Client(cl):
        assert worker_memory() == psutil.virtual_memory().total  # no limit: the machine's
