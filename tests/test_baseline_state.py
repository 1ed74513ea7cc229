"""Tests for sitewatch.io.baseline_state: the stored baseline state beside the cube, its record
of folded slots and its consistency marker, on a local path and on S3 (moto server)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from sitewatch.io import baseline_state as st
from sitewatch.kernels.baseline import BaselineParams
from sitewatch.kernels.baseline_ring import build_state, state_baseline

BANDS = ["blue", "green", "red"]
H, W = 50, 70
CHUNKS = (32, 32)


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def _state(seed=0, t=6, window=4) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    times = np.datetime64("2025-12-20T09:00") + np.arange(t) * np.timedelta64(5, "D")
    coords = {"time": times, "band": BANDS, "y": np.arange(H) * -10.0, "x": np.arange(W) * 10.0}
    stack = xr.DataArray(rng.integers(1, 5000, (t, len(BANDS), H, W), dtype=np.uint16), dims=("time", "band", "y", "x"), coords=coords)
    clear = xr.DataArray(rng.random((t, H, W)) < 0.6, dims=("time", "y", "x"), coords={k: coords[k] for k in ("time", "y", "x")})
    return build_state(stack.chunk({"y": 20, "x": 45}), clear, BaselineParams(window=window)).compute()


KEYS = [st.slot_key(np.datetime64(f"2026-01-{d:02d}T08:00:00"), f"S{d}") for d in range(1, 8)]


def test_state_url_is_beside_the_cube():
    assert st.state_url("/data/site/cube.zarr") == "/data/site/cube.baseline.zarr"
    assert st.state_url("s3://b/site/cube.zarr/") == "s3://b/site/cube.baseline.zarr"
    assert st.slot_key(np.datetime64("2026-01-02T08:00:00.123456"), "A") == ("2026-01-02T08:00:00.123Z", "A")


def _roundtrip(url, storage_options=None):
    state = _state()
    assert st.read_info(url, storage_options) is None
    st.write_state(url, state, KEYS[:6], 0, CHUNKS, storage_options)
    info = st.read_info(url, storage_options)
    assert (info.status, info.window, info.bands, info.shape, info.chunks) == ("ready", 4, tuple(BANDS), (H, W), CHUNKS)
    assert info.folded == tuple(KEYS[:6]) and info.n_before == 0
    back = st.open_state(url, info, state.y, state.x, storage_options)
    assert back["ring"].chunks == ((4,), (3,), (32, 18), (32, 32, 6))  # Zarr chunks: the cube's y/x chunks
    assert back["day"].chunks == ((4,), (32, 18), (32, 32, 6)) and info.season_days is None
    xr.testing.assert_identical(back.compute(), state)
    assert set(np.unique(back["day"].values)) > {0}  # the slots' dates round-trip
    xr.testing.assert_identical(state_baseline(back).compute(), state_baseline(state))
    g = zarr.open_group(url, mode="r", **({"storage_options": storage_options} if storage_options else {}))
    assert g["ring"].chunks == (4, 3, 32, 32) and tuple(g["ring"].metadata.dimension_names) == ("k", "band", "y", "x")
    # an update in place keeps the arrays and records the new fold
    newer = _state(seed=1)
    assert info.alignment == "none"
    st.write_state(url, newer, KEYS[1:7], 1, CHUNKS, storage_options, alignment="registered", season_days=np.int64(30))
    info = st.read_info(url, storage_options)
    assert info.folded == tuple(KEYS[1:7]) and info.n_before == 1 and info.status == "ready"
    assert info.alignment == "registered" and info.season_days == 30
    target = np.datetime64("2026-01-01")
    xr.testing.assert_identical(state_baseline(st.open_state(url, info, state.y, state.x, storage_options), target, 30).compute(),
                                state_baseline(newer, target, 30))
    xr.testing.assert_identical(st.open_state(url, info, state.y, state.x, storage_options).compute(), newer)
    # another window replaces the group
    st.write_state(url, _state(window=2), KEYS[:2], 0, CHUNKS, storage_options)
    info = st.read_info(url, storage_options)
    assert info.window == 2 and st.open_state(url, info, state.y, state.x, storage_options)["ring"].shape == (2, 3, H, W)


def test_write_read_local(tmp_path):
    _roundtrip(str(tmp_path / "site" / "cube.baseline.zarr"))


def test_write_read_s3(s3_server):
    import boto3
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="state-test")
    _roundtrip("s3://state-test/site/cube.baseline.zarr")
    _roundtrip("s3://state-test/other/cube.baseline.zarr", {"endpoint_url": s3_server})


def test_mismatch_names_the_reason():
    info = st.StateInfo("ready", 4, tuple(BANDS), (H, W), CHUNKS, tuple(KEYS[2:5]), 2)
    assert st.mismatch(info, KEYS[:5], 4, BANDS, (H, W)) is None  # the last 3 of 5, 2 left out by a rebuild
    assert st.mismatch(None, KEYS[:5], 4, BANDS, (H, W)) == "no baseline state yet"
    assert "window changed (4 -> 5)" in st.mismatch(info, KEYS[:5], 5, BANDS, (H, W))
    assert "bands changed" in st.mismatch(info, KEYS[:5], 4, BANDS[:2], (H, W))
    assert "grid shape changed" in st.mismatch(info, KEYS[:5], 4, BANDS, (H, W + 1))
    # a state folded as stored cannot serve an analysis that co-registers dates before folding them, nor the reverse
    assert "alignment of the folded dates changed ('none' -> 'registered')" in st.mismatch(info, KEYS[:5], 4, BANDS, (H, W), "registered")
    reg = st.StateInfo("ready", 4, tuple(BANDS), (H, W), CHUNKS, tuple(KEYS[2:5]), 2, alignment="registered")
    assert st.mismatch(reg, KEYS[:5], 4, BANDS, (H, W), "registered") is None
    assert "alignment" in st.mismatch(reg, KEYS[:5], 4, BANDS, (H, W))
    backfill = sorted(KEYS[:5] + [st.slot_key(np.datetime64("2026-01-01T20:00"), "OLD")])
    assert "+1 analysed earlier slot(s) (e.g. a backfill)" in st.mismatch(info, backfill, 4, BANDS, (H, W))
    assert "no longer analysed earlier" in st.mismatch(info, KEYS[:4], 4, BANDS, (H, W))  # a later slot's state
    swapped = KEYS[:3] + [("2026-01-04T08:00:00.000Z", "OTHER")] + KEYS[4:5]
    assert "folded other slots" in st.mismatch(info, swapped, 4, BANDS, (H, W))
    for status in ("updating", "stale"):
        bad = st.StateInfo(status, 4, tuple(BANDS), (H, W), CHUNKS, tuple(KEYS[2:5]), 2, note="x")
        assert status in st.mismatch(bad, KEYS[:5], 4, BANDS, (H, W))
    assert "cut short" in st.mismatch(st.StateInfo("updating", 4, tuple(BANDS), (H, W), CHUNKS, (), 0), [], 4, BANDS, (H, W))
    # a state registered to last-N baselines cannot serve a seasonal analysis, nor one of another season width
    seasonal = st.StateInfo("ready", 4, tuple(BANDS), (H, W), CHUNKS, tuple(KEYS[2:5]), 2, season_days=30)
    assert st.mismatch(seasonal, KEYS[:5], 4, BANDS, (H, W), season_days=30) is None
    assert "season_days changed (None -> 30)" in st.mismatch(info, KEYS[:5], 4, BANDS, (H, W), season_days=30)
    assert "season_days changed (30 -> 20)" in st.mismatch(seasonal, KEYS[:5], 4, BANDS, (H, W), season_days=20)
    assert "season_days changed (30 -> None)" in st.mismatch(seasonal, KEYS[:5], 4, BANDS, (H, W))


def test_update_cut_short_leaves_the_marker(tmp_path):
    """A failure between the marker and the record (here: computing one chunk of the new ring
    raises after other chunks were written) leaves status "updating" and the old record; the
    state is refused, never used half-updated."""
    url = str(tmp_path / "cube.baseline.zarr")
    good = _state()
    st.write_state(url, good, KEYS[:6], 0, CHUNKS)

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][2:] == (1, 1):
            raise RuntimeError("disk gone")
        return block + np.uint16(1)

    broken = _state(seed=3).chunk({"y": 32, "x": 32})
    broken["ring"] = broken["ring"].copy(data=da.map_blocks(boom, broken["ring"].data, dtype=np.uint16))
    with pytest.raises(RuntimeError, match="disk gone"):
        st.write_state(url, broken, KEYS[:7], 0, CHUNKS)
    info = st.read_info(url)
    assert info.status == "updating" and info.folded == tuple(KEYS[:6])
    assert "cut short" in st.mismatch(info, KEYS[:6], 4, BANDS, (H, W))
    st.write_state(url, good, KEYS[:6], 0, CHUNKS)  # the next writer rewrites it whole
    assert st.mismatch(st.read_info(url), KEYS[:6], 4, BANDS, (H, W)) is None
    assert st.invalidate(url, "slot re-analysed") and st.read_info(url).status == "stale"
    assert not st.invalidate(str(tmp_path / "none.zarr"), "x")


def test_a_creation_cut_short_is_a_state_being_updated(tmp_path):
    url = str(tmp_path / "cube.baseline.zarr")
    st._create(url, 4, BANDS, (H, W), CHUNKS, None)  # arrays made, nothing written, no record
    info = st.read_info(url)
    assert info.status == "updating" and info.folded == ()
    assert st.mismatch(info, [], 4, BANDS, (H, W)) is not None


def test_foreign_store_is_refused_never_overwritten(tmp_path):
    url = str(tmp_path / "cube.baseline.zarr")
    g = zarr.open_group(url, mode="w", zarr_format=3, attributes={"title": "someone else's"})
    g.create_array("data", shape=(3,), dtype="int8")
    with pytest.raises(st.StateError, match="titled \"someone else's\"|titled 'someone else's'"):
        st.read_info(url)
    with pytest.raises(st.StateError):
        st.write_state(url, _state(), KEYS[:6], 0, CHUNKS)
    assert "data" in zarr.open_group(url, mode="r").array_keys()


def test_other_version_is_stale(tmp_path):
    url = str(tmp_path / "cube.baseline.zarr")
    st.write_state(url, _state(), KEYS[:6], 0, CHUNKS)
    zarr.open_group(url, mode="r+").attrs.update({"sitewatch_baseline_state_version": 99})
    info = st.read_info(url)
    assert info.status == "stale" and "version 99" in info.note
    st.write_state(url, _state(), KEYS[:6], 0, CHUNKS)  # replaced by the current version
    assert st.read_info(url).status == "ready"


def _as_version_1(url):
    """Turn a stored state into what version 1 wrote: no 'day' array, no season_days."""
    g = zarr.open_group(url, mode="r+")
    del g["day"]
    attrs = dict(g.attrs)
    attrs.pop("season_days")
    attrs["sitewatch_baseline_state_version"] = 1
    g.attrs.clear()
    g.attrs.update(attrs)


def test_version_1_state_without_day_is_stale_and_replaced(tmp_path):
    url = str(tmp_path / "cube.baseline.zarr")
    st.write_state(url, _state(), KEYS[:6], 0, CHUNKS)
    _as_version_1(url)
    assert "day" not in zarr.open_group(url, mode="r").array_keys()
    info = st.read_info(url)
    assert info.status == "stale" and "state version 1, expected 2" in info.note
    assert "state version 1" in st.mismatch(info, KEYS[:6], 4, BANDS, (H, W))  # rebuilt, never read
    st.write_state(url, _state(), KEYS[:6], 0, CHUNKS, season_days=45)
    info = st.read_info(url)
    assert (info.status, info.season_days) == ("ready", 45) and "day" in zarr.open_group(url, mode="r").array_keys()
    xr.testing.assert_identical(st.open_state(url, info, _state().y, _state().x).compute(), _state())


def test_bad_records_are_refused(tmp_path):
    url = str(tmp_path / "cube.baseline.zarr")
    with pytest.raises(ValueError, match="each slot folded once"):
        st.write_state(url, _state(), [KEYS[0], KEYS[0]], 0, CHUNKS)
    with pytest.raises(ValueError, match="dtypes"):
        st.write_state(url, _state().astype(np.int32), KEYS[:1], 0, CHUNKS)
    with pytest.raises(ValueError, match="lacks 'day'"):
        st.write_state(url, _state().drop_vars("day"), KEYS[:1], 0, CHUNKS)
    assert st.read_info(url) is None


def test_open_in_dask_chunks_of_several_stored_chunks(tmp_path):
    """The analysis may work on Dask chunks of several stored chunks: the state opened in them
    reads the same values."""
    url = str(tmp_path / "cube.baseline.zarr")
    state = _state()
    st.write_state(url, state, KEYS[:6], 0, CHUNKS)
    info = st.read_info(url)
    back = st.open_state(url, info, state.y, state.x, chunks=((50,), (64, 6)))
    assert back["ring"].chunks == ((4,), (3,), (50,), (64, 6)) and back["day"].chunks == ((4,), (50,), (64, 6))
    assert back["n_obs"].chunks == ((50,), (64, 6))
    xr.testing.assert_identical(back.compute(), state)


def test_open_state_beside_reads_the_same_state_in_the_anchors_chunks(tmp_path):
    """The fold's second read of a state too large to hold: each block beside the date's pixels
    (placement itself: tests/test_colocated.py), same values, dims, coordinates."""
    url = str(tmp_path / "cube.baseline.zarr")
    state = _state()
    st.write_state(url, state, KEYS[:6], 0, CHUNKS)
    info = st.read_info(url)
    lazy = st.open_state(url, info, state.y, state.x, chunks=((50,), (64, 6)))
    anchor = xr.DataArray(da.zeros((H, W), dtype=bool, chunks=((50,), (64, 6))), dims=("y", "x"))
    back = st.open_state_beside(url, lazy, anchor)
    assert back["ring"].chunks == ((4,), (3,), (50,), (64, 6)) and back["n_obs"].chunks == ((50,), (64, 6))
    assert "beside" in back["ring"].data.name and "beside" in back["day"].data.name
    xr.testing.assert_identical(back.compute(), state)
    with pytest.raises(ValueError, match="n_obs .* got shape"):
        st.open_state_beside(url, lazy.assign(n_obs=lazy["n_obs"].astype(np.int32)), anchor)
