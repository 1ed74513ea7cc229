"""Tests for sitewatch.kernels.s2cloud: s2cloudless on Sentinel-2 L1C, chunk-exact on dask."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sitewatch.kernels import s2cloud
from sitewatch.kernels.s2cloud import (
    ALL_BANDS,
    MODEL_BANDS,
    S2CloudlessParams,
    cloud_mask_np,
    cloud_probability_np,
    engine,
    parse_forest,
    s2cloudless,
    s2cloudless_np,
)


@pytest.fixture(scope="module")
def reference(shared_data):
    f = shared_data / "s2cloudless-reference" / "input_arrays.npz"
    if not f.exists():
        pytest.skip(f"s2cloudless reference not found at {f}")
    d = np.load(f)
    im = d["s2_im"][0]  # (856, 512, 13) TOA reflectance, all 13 bands
    assert im.shape == (856, 512, 13) and im.dtype == np.float32
    bands = np.moveaxis(im, -1, 0)  # (13, y, x) in ALL_BANDS order
    return bands, d["cl_probs"][0], d["cl_mask"][0].astype(bool)


def _model_bands(bands13: np.ndarray) -> np.ndarray:
    return bands13[[ALL_BANDS.index(b) for b in MODEL_BANDS]]


def test_reproduces_the_s2cloudless_reference(reference):
    """The reference was made with s2cloudless's default post-processing (threshold 0.4,
    average_over 1, dilation_size 1): with (4, 2), as the data's README says, the package itself
    reproduces only 96.4 % of it; with its defaults, every pixel."""
    bands13, ref_prob, ref_mask = reference
    prob, mask = s2cloudless_np(_model_bands(bands13))
    assert prob.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_allclose(prob, ref_prob, atol=1e-6)
    agree = (mask == ref_mask).mean()
    assert agree >= 0.999, agree
    assert 0.2 < mask.mean() < 0.8  # a partly cloudy scene: the test can fail both ways


def test_xarray_all_13_bands_eager_and_dask_uneven_chunks_identical(reference):
    bands13, _, _ = reference
    crop = bands13[:, 300:520, 100:310].copy()  # 220 x 210 px keeps the test quick
    before = crop.copy()
    coords = {"band": list(ALL_BANDS), "y": np.arange(220.0), "x": np.arange(210.0)}
    params = S2CloudlessParams(threshold=0.4, average_over=4, dilation_size=2)  # wide neighbourhood: overlap matters
    eager = s2cloudless(xr.DataArray(crop, dims=("band", "y", "x"), coords=coords, attrs={"a": 1}), params)
    lazy_in = xr.DataArray(da.from_array(crop, chunks=(5, (60, 100, 60), (47, 90, 73))), dims=("band", "y", "x"), coords=coords)
    lazy = s2cloudless(lazy_in, params)
    assert lazy["cloud"].chunks is not None
    whole_prob, whole_mask = s2cloudless_np(_model_bands(crop), params)
    np.testing.assert_array_equal(eager["cloud"].values, whole_mask)
    np.testing.assert_array_equal(lazy["cloud"].values, whole_mask)
    np.testing.assert_array_equal(lazy["cloud_probability"].values, whole_prob)
    assert 0.05 < whole_mask.mean() < 0.95
    np.testing.assert_array_equal(crop, before)
    assert eager["cloud"].dims == ("y", "x") and np.all(eager.y.values == coords["y"])


def test_mask_postprocessing_steps():
    p = np.zeros((21, 21), np.float32)
    p[10, 10] = 1.0
    assert cloud_mask_np(p, S2CloudlessParams(0.4, 0, 0)).sum() == 1
    assert cloud_mask_np(p, S2CloudlessParams(0.4, 0, 2)).sum() == 13  # a radius-2 disk
    assert cloud_mask_np(p, S2CloudlessParams(0.4, 1, 0)).sum() == 0  # averaged below the threshold
    p[np.isnan(p)] = 0
    q = p.copy()
    q[0, 0] = np.nan
    assert not cloud_mask_np(q, S2CloudlessParams(0.4, 0, 0))[0, 0]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="lacks band"):
        s2cloudless(xr.DataArray(np.zeros((3, 4, 4), np.float32), dims=("band", "y", "x"), coords={"band": ["B01", "B02", "B04"]}))
    with pytest.raises(ValueError, match="dims got"):
        s2cloudless(xr.DataArray(np.zeros((4, 4), np.float32), dims=("y", "x")))
    with pytest.raises(ValueError, match="threshold got 1.5"):
        S2CloudlessParams(threshold=1.5)
    with pytest.raises(ValueError, match="bands shape got"):
        s2cloudless_np(np.zeros((3, 4, 4), np.float32))


# ------------------------------------------------------------------ the numba forest engine vs LightGBM


def _lightgbm_probability(bands: np.ndarray) -> np.ndarray:
    """LightGBM's own Booster.predict on the model bands (float64 of the input, as s2cloudless)."""
    px = np.moveaxis(bands, 0, -1).reshape(-1, bands.shape[0]).astype(np.float64)
    return s2cloud._booster().predict(px).astype(np.float32).reshape(bands.shape[1:])


def test_forest_engine_equals_lightgbm_on_the_reference(reference):
    bands13, ref_prob, ref_mask = reference
    bands = _model_bands(bands13)
    assert engine() == "forest"  # numba is a dependency: the fast path must be the one that runs
    prob = cloud_probability_np(bands)  # whole scene (438k px): split over threads
    rows = bands[:, ::4]  # LightGBM on every 4th row (110k px) keeps the test quick on 2 cores
    lgb = _lightgbm_probability(rows)
    np.testing.assert_array_equal(prob[::4], lgb)  # bit for bit, not just within tolerance
    np.testing.assert_array_equal(cloud_probability_np(rows, n_threads=1), lgb)
    assert np.abs(prob - ref_prob).max() < 1e-6
    assert (cloud_mask_np(prob) != ref_mask).sum() == 0  # the package's own mask, every pixel


def test_forest_engine_equals_lightgbm_on_the_slovenia_patch(shared_data):
    f = shared_data / "sentinel2-slovenia-patch" / "bands_5dates_chronological.npz"
    if not f.exists():
        pytest.skip(f"Sentinel-2 Slovenia patch not found at {f}")
    z = np.load(f)
    names = [str(b) for b in z["band_names"]]
    assert tuple(names) == ALL_BANDS
    for t in range(z["bands"].shape[0]):
        bands = np.moveaxis(z["bands"][t], -1, 0)[[names.index(b) for b in MODEL_BANDS]]
        prob, lgb = cloud_probability_np(bands), _lightgbm_probability(bands)
        np.testing.assert_array_equal(prob, lgb)
        np.testing.assert_array_equal(cloud_mask_np(prob), cloud_mask_np(lgb))


def test_forest_engine_equals_lightgbm_on_random_and_edge_values():
    """Random valid reflectances, zeros, values exactly at split thresholds (float64 input) and
    the float32 neighbours of thresholds: the decision rule (<= goes left) must match LightGBM's."""
    forest = parse_forest(s2cloud.model_path())
    rng = np.random.default_rng(7)
    nf = len(MODEL_BANDS)
    rand = rng.uniform(0.0, 1.2, size=(4000, nf))
    zeros = np.zeros((1, nf))
    thr = forest.threshold[forest.left != forest.right]  # real split nodes
    feat = forest.feature[forest.left != forest.right]
    pick = rng.choice(thr.size, 3000, replace=False)
    at = rng.uniform(0.0, 1.2, size=(3000, nf))
    at[np.arange(3000), feat[pick]] = thr[pick]  # exactly on a threshold
    px64 = np.concatenate([rand, zeros, at])
    bands64 = np.ascontiguousarray(px64.T.reshape(nf, 1, -1))
    np.testing.assert_array_equal(cloud_probability_np(bands64), _lightgbm_probability(bands64))
    t32 = thr[pick].astype(np.float32)
    near = np.concatenate([at, at]).astype(np.float32)
    near[np.arange(6000), np.concatenate([feat[pick]] * 2)] = np.concatenate([np.nextafter(t32, np.float32(-1)), np.nextafter(t32, np.float32(9))])
    bands32 = np.ascontiguousarray(np.concatenate([near, rand.astype(np.float32), zeros.astype(np.float32)]).T.reshape(nf, 1, -1))
    before = bands32.copy()
    np.testing.assert_array_equal(cloud_probability_np(bands32, n_threads=2), _lightgbm_probability(bands32))
    np.testing.assert_array_equal(bands32, before)
    nan = bands32[:, :, :5].copy()
    nan[3, 0, :] = np.nan
    assert np.isnan(cloud_probability_np(nan)).all()


def test_engine_choice_and_fallback(monkeypatch, reference):
    bands13, _, _ = reference
    crop = bands13[:, :40, :50]
    coords = {"band": list(ALL_BANDS)}
    fast = s2cloudless(xr.DataArray(crop, dims=("band", "y", "x"), coords=coords))
    assert fast["cloud_probability"].attrs["engine"] == "forest"
    monkeypatch.setenv("SITEWATCH_S2CLOUD_ENGINE", "lightgbm")
    slow = s2cloudless(xr.DataArray(crop, dims=("band", "y", "x"), coords=coords))
    assert slow["cloud_probability"].attrs["engine"] == "lightgbm"
    np.testing.assert_array_equal(slow["cloud_probability"].values, fast["cloud_probability"].values)
    monkeypatch.setenv("SITEWATCH_S2CLOUD_ENGINE", "gpu")
    with pytest.raises(ValueError, match="engine got 'gpu'"):
        engine()


def _tiny_model(tmp_path, name, **params):
    import lightgbm

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    x[rng.random(400) < 0.1, 1] = np.nan  # NaN in training: missing type NaN splits
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) > 0).astype(int)
    p = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1, "seed": 1, **params}
    b = lightgbm.train(p, lightgbm.Dataset(x, y, params={"verbose": -1}), num_boost_round=25)
    path = tmp_path / f"{name}.txt"
    b.save_model(str(path))
    return b, path, x


def test_parse_forest_on_other_lightgbm_models(tmp_path):
    b, path, x = _tiny_model(tmp_path, "nan_missing", sigmoid=0.7)
    forest = parse_forest(str(path))
    assert forest.sigmoid == 0.7 and forest.n_features == 3
    ok = ~np.isnan(x).any(axis=1)
    prob = s2cloud._forest_predict(np.ascontiguousarray(x), 1, forest)
    np.testing.assert_array_equal(prob[ok], b.predict(x[ok]).astype(np.float32))
    assert np.isnan(prob[~ok]).all()
    _, zpath, _ = _tiny_model(tmp_path, "zero_missing", zero_as_missing=True)
    with pytest.raises(ValueError, match="zero-as-missing"):
        parse_forest(str(zpath))
    bad = tmp_path / "regression.txt"
    bad.write_text(path.read_text().replace("objective=binary sigmoid:0.7", "objective=regression"))
    with pytest.raises(ValueError, match="objective got 'regression'"):
        parse_forest(str(bad))
    bad.write_text(path.read_text().replace("max_feature_idx=2", "max_feature_idx=0"))  # the trees split on feature 1 too
    with pytest.raises(ValueError, match="out of range"):
        parse_forest(str(bad))
    bad.write_text(path.read_text().replace("tree_sizes=", "average_output\ntree_sizes="))
    with pytest.raises(ValueError, match="averaged output"):
        parse_forest(str(bad))
