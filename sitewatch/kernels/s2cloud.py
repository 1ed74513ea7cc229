"""s2cloudless cloud probability and mask for Sentinel-2 L1C, chunk-exact on dask.

The LightGBM model that ships inside the ``s2cloudless`` wheel is loaded directly (importing the
``s2cloudless`` package would pull in ``sentinelhub`` at import time, about 3 s) and applied per
pixel to the 10 model bands (B01, B02, B04, B05, B08, B8A, B09, B10, B11, B12; TOA reflectance
0-1). The mask then follows s2cloudless exactly: probability averaged over a disk of radius
``average_over`` (OpenCV ``filter2D``, reflected border), thresholded (``> threshold``) and
dilated by a disk of radius ``dilation_size``.

On dask the probability is a per-pixel ``map_blocks``; averaging and dilation are one
``map_overlap`` with depth ``average_over + dilation_size`` and no boundary padding, so each
chunk sees the true image edge where the whole-array run does, and chunked masks equal
whole-array masks.

Engine: the model's 170 trees are parsed from the text file into flat arrays and evaluated by a
numba kernel (:func:`_forest_probability`), tree by tree over all pixels of a chunk, with
LightGBM's decision rule (``float64(x) <= threshold`` goes left), float64 accumulation in tree
order and its sigmoid, so the probability equals ``Booster.predict`` bit for bit on the reference
data, about 3x faster per core (benchmarks/masks.py). If that engine is unavailable (numba missing,
or a model using features it does not implement: categorical splits, zero-as-missing, linear
trees, a non-binary objective), LightGBM's ``Booster.predict`` runs instead, with a warning; the
engine that ran is in the probability's ``engine`` attribute. ``SITEWATCH_S2CLOUD_ENGINE``
(``auto``, ``forest``, ``lightgbm``) forces one.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ._util import is_dask

MODEL_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
ALL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
MODEL_FILENAME = "pixel_s2_cloud_detector_lightGBM_v0.1.txt"
ENGINES = ("auto", "forest", "lightgbm")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S2CloudlessParams:
    """s2cloudless post-processing: ``threshold`` on the averaged probability, ``average_over``
    and ``dilation_size`` disk radii in pixels (0 switches a step off). Defaults are the
    s2cloudless package's own (0.4, 1, 1); they reproduce the reference mask in
    ../shared/data/s2cloudless-reference exactly (Sentinel Hub's docs suggest 4 and 2 at 10 m)."""

    threshold: float = 0.4
    average_over: int = 1
    dilation_size: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"s2cloudless threshold got {self.threshold!r}; expected a probability in [0, 1]")
        if self.average_over < 0 or self.dilation_size < 0:
            raise ValueError(
                f"s2cloudless average_over/dilation_size got {(self.average_over, self.dilation_size)!r}; expected >= 0"
            )

    @property
    def depth(self) -> int:
        return self.average_over + self.dilation_size


def model_path() -> str:
    """Path of the LightGBM model inside the installed s2cloudless wheel (not imported)."""
    spec = importlib.util.find_spec("s2cloudless")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("s2cloudless is not installed; expected the s2cloudless package (pip install s2cloudless)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", MODEL_FILENAME)
    if not os.path.exists(path):
        raise ImportError(f"s2cloudless model file got none at {path!r}; expected the model shipped in the wheel")
    return path


@functools.lru_cache(maxsize=1)
def _booster():
    from lightgbm import Booster

    return Booster(model_file=model_path())


@dataclass(frozen=True)
class Forest:
    """A LightGBM binary model as flat arrays (trees padded to the largest): ``feature``,
    ``threshold``, ``left``, ``right`` per internal node (a child < 0 is leaf ``~child``; a
    single-leaf tree gets one node whose children are both leaf 0), ``leaf`` values and the
    ``sigmoid`` slope."""

    feature: np.ndarray  # (trees, nodes) int32
    threshold: np.ndarray  # (trees, nodes) float64
    left: np.ndarray  # (trees, nodes) int32
    right: np.ndarray  # (trees, nodes) int32
    leaf: np.ndarray  # (trees, leaves) float64
    sigmoid: float
    n_features: int


def _fields(text: str, what: str, n: int, dtype) -> np.ndarray:
    a = np.array(text.split(), dtype=np.float64 if dtype is np.float64 else np.int64)
    if a.size != n:
        raise ValueError(f"LightGBM model {what} got {a.size} values; expected {n}")
    return a.astype(dtype)


def parse_forest(path: str) -> Forest:
    """Parse a LightGBM text model into a :class:`Forest`. Raises ``ValueError`` naming the
    feature for models the numba engine does not evaluate exactly like LightGBM."""
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("Tree="):
                trees.append({})
            elif line == "end of trees":
                break
            elif line:  # "key=value", or a bare flag such as "average_output"
                k, _, v = line.partition("=")
                (trees[-1] if trees else header)[k] = v
    objective = header.get("objective", "").split()
    if not objective or objective[0] != "binary":
        raise ValueError(f"LightGBM model objective got {header.get('objective')!r}; expected 'binary sigmoid:...'")
    sig = [float(o.split(":", 1)[1]) for o in objective[1:] if o.startswith("sigmoid:")]
    if header.get("num_class", "1") != "1" or header.get("num_tree_per_iteration", "1") != "1" or "average_output" in header:
        raise ValueError("LightGBM model got several classes per iteration or averaged output; expected one binary tree per iteration")
    if not trees:
        raise ValueError(f"LightGBM model {path!r} got no trees; expected a trained model")
    n_features = int(header.get("max_feature_idx", "-1")) + 1
    n_int = [int(t["num_leaves"]) - 1 for t in trees]
    nt, nn = len(trees), max(1, max(n_int))
    feature, left, right = (np.zeros((nt, nn), np.int32) for _ in range(3))
    threshold, leaf = np.zeros((nt, nn)), np.zeros((nt, nn + 1))
    for i, (t, n) in enumerate(zip(trees, n_int)):
        if t.get("is_linear", "0") != "0" or t.get("num_cat", "0") != "0":
            raise ValueError(f"LightGBM tree {i} got linear leaves or categorical splits; expected numerical splits only")
        leaf[i, : n + 1] = _fields(t["leaf_value"], "leaf_value", n + 1, np.float64)
        if n == 0:
            left[i, 0] = right[i, 0] = -1  # both ways to leaf 0
            continue
        dt = _fields(t["decision_type"], "decision_type", n, np.int64)
        if np.any(dt & 1) or np.any(((dt >> 2) & 3) == 1):
            raise ValueError(f"LightGBM tree {i} got categorical or zero-as-missing splits; expected numerical splits, missing type None or NaN")
        feature[i, :n] = _fields(t["split_feature"], "split_feature", n, np.int32)
        threshold[i, :n] = _fields(t["threshold"], "threshold", n, np.float64)
        left[i, :n] = _fields(t["left_child"], "left_child", n, np.int32)
        right[i, :n] = _fields(t["right_child"], "right_child", n, np.int32)
        kids = np.concatenate([left[i, :n], right[i, :n]])
        if feature[i, :n].min() < 0 or feature[i, :n].max() >= n_features or kids.min() < -(n + 1) or kids.max() >= n or (kids == 0).any():
            raise ValueError(f"LightGBM tree {i} got a split feature or child index out of range; expected features < {n_features}, "
                             f"children in [-{n + 1}, {n}) and not the root")  # the numba walk does not bounds-check
    return Forest(feature, threshold, left, right, leaf, sig[0] if sig else 1.0, n_features)


@functools.lru_cache(maxsize=1)
def _forest() -> Forest:
    return parse_forest(model_path())


def _numba_kernel():
    """The compiled forest evaluator (numba; compiled on first use, cached on disk)."""
    import numba

    @numba.njit(nogil=True, cache=True)
    def forest_probability(x, feature, threshold, left, right, leaf, sigmoid, out):
        # x (n, features) float32/float64 -> out (n,) float32: NaN if any feature is NaN, else
        # LightGBM's sigmoid(sigmoid * sum of the trees' leaves). Tree-major: each tree stays in
        # cache while every pixel walks it. Valid pixels have no NaN, so missing-value routing (type
        # None or NaN; parse_forest refuses zero-as-missing) never applies: float64(x) <= threshold.
        # Keep the walk a plain if/else: LLVM then emits branches; a select (cmov) form measured
        # 3x slower (a serial load chain per node).
        n, nf = x.shape
        score = np.zeros(n)
        for t in range(feature.shape[0]):
            ft, th, lt, rt, lv = feature[t], threshold[t], left[t], right[t], leaf[t]
            for p in range(n):  # NaN pixels walk to some leaf too; their output is NaN below
                node = 0
                while node >= 0:
                    if np.float64(x[p, ft[node]]) <= th[node]:
                        node = lt[node]
                    else:
                        node = rt[node]
                score[p] += lv[~node]
        for p in range(n):
            valid = True
            for j in range(nf):
                if math.isnan(x[p, j]):
                    valid = False
            out[p] = 1.0 / (1.0 + math.exp(-sigmoid * score[p])) if valid else np.nan
        return out

    return forest_probability


_kernel = functools.lru_cache(maxsize=1)(_numba_kernel)


def engine(requested: str | None = None) -> str:
    """The engine that computes the probability: ``"forest"`` (numba) or ``"lightgbm"``.
    ``requested`` (default ``$SITEWATCH_S2CLOUD_ENGINE`` or ``auto``) picks one; ``auto`` takes
    the forest and falls back to LightGBM with a warning if it cannot run this model."""
    req = requested or os.environ.get("SITEWATCH_S2CLOUD_ENGINE") or "auto"
    if req not in ENGINES:
        raise ValueError(f"s2cloudless engine got {req!r}; expected one of {ENGINES!r}")
    return _resolve(req)


@functools.lru_cache(maxsize=None)
def _resolve(req: str) -> str:
    if req == "lightgbm":
        return "lightgbm"
    try:
        f = _forest()
        if f.n_features != len(MODEL_BANDS):
            raise ValueError(f"LightGBM model got {f.n_features} features; expected {len(MODEL_BANDS)}")
        _forest_predict(np.full((1, f.n_features), 0.5, np.float32), 1, f)  # compiles (or loads the cached build) once
    except Exception as e:  # any failure of the fast path (import, parse, compile) -> LightGBM, said so
        if req == "forest":
            raise
        log.warning("s2cloudless: numba forest engine unavailable (%s); using LightGBM Booster.predict", e)
        return "lightgbm"
    return "forest"


def _forest_predict(pixels: np.ndarray, n_threads: int, forest: Forest | None = None) -> np.ndarray:
    """Probability ``(n,)`` float32 of ``pixels`` ``(n, features)`` (C-contiguous float32 or
    float64) under ``forest`` (default: the s2cloudless model), over ``n_threads`` threads."""
    f, kernel = forest or _forest(), _kernel()
    if pixels.ndim != 2 or pixels.shape[1] != f.n_features:
        raise ValueError(f"forest pixels shape got {pixels.shape!r}; expected (n, {f.n_features})")
    out = np.empty(pixels.shape[0], np.float32)
    args = (f.feature, f.threshold, f.left, f.right, f.leaf, f.sigmoid)
    n_threads = max(1, min(n_threads, pixels.shape[0] // 65536))  # small inputs: one thread
    if n_threads == 1:
        return kernel(pixels, *args, out)
    edges = np.linspace(0, pixels.shape[0], n_threads + 1).astype(int)
    with ThreadPoolExecutor(n_threads) as ex:  # the kernel releases the GIL
        list(ex.map(lambda i: kernel(pixels[edges[i]:edges[i + 1]], *args, out[edges[i]:edges[i + 1]]), range(n_threads)))
    return out


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.circle(np.zeros((2 * radius + 1, 2 * radius + 1), np.uint8), (radius, radius), radius, color=1, thickness=-1)


def cloud_probability_np(bands: np.ndarray, n_threads: int | None = None) -> np.ndarray:
    """Cloud probability ``(y, x)`` float32 from ``bands`` ``(10, y, x)``: the model bands in
    :data:`MODEL_BANDS` order as TOA reflectance (0-1). NaN where any band is NaN. ``n_threads``
    (default: the cores this process may use) splits large inputs over threads (forest engine)."""
    bands = np.asarray(bands)
    if bands.ndim != 3 or bands.shape[0] != len(MODEL_BANDS):
        raise ValueError(f"s2cloudless bands shape got {bands.shape!r}; expected ({len(MODEL_BANDS)}, y, x) in order {MODEL_BANDS!r}")
    if n_threads is not None and n_threads < 1:
        raise ValueError(f"s2cloudless n_threads got {n_threads!r}; expected >= 1 or None")
    _, h, w = bands.shape
    pixels = np.moveaxis(bands, 0, -1).reshape(-1, len(MODEL_BANDS))
    if engine() == "forest":
        # float32 stays float32 (its float64 is exact, as LightGBM sees it); anything else -> float64
        px = np.ascontiguousarray(pixels, dtype=pixels.dtype if pixels.dtype in (np.float32, np.float64) else np.float64)
        return _forest_predict(px, n_threads or len(os.sched_getaffinity(0))).reshape(h, w)
    nan = np.isnan(pixels).any(axis=1)
    prob = np.full(h * w, np.nan, dtype=np.float32)
    if (~nan).any():
        prob[~nan] = _booster().predict(pixels[~nan].astype(np.float64, copy=False))
    return prob.reshape(h, w)


def cloud_mask_np(probability: np.ndarray, params: S2CloudlessParams = S2CloudlessParams()) -> np.ndarray:
    """s2cloudless's mask from a probability ``(y, x)``: disk average (reflected border),
    ``> threshold``, disk dilation. NaN probability counts as 0 (not cloud)."""
    import cv2

    p = np.nan_to_num(np.asarray(probability, dtype=np.float32), nan=0.0)
    if p.ndim != 2:
        raise ValueError(f"s2cloudless probability got {p.ndim}-d array; expected 2-d (y, x)")
    if params.average_over > 0:
        disk = _disk(params.average_over).astype(np.float64)
        p = cv2.filter2D(p, -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT)
    mask = (p > params.threshold).astype(np.uint8)
    if params.dilation_size > 0:
        mask = cv2.dilate(mask, _disk(params.dilation_size))
    return mask.astype(bool)


def s2cloudless_np(bands: np.ndarray, params: S2CloudlessParams = S2CloudlessParams()) -> tuple[np.ndarray, np.ndarray]:
    """``(probability, mask)`` for one scene: see :func:`cloud_probability_np` and :func:`cloud_mask_np`."""
    prob = cloud_probability_np(bands)
    return prob, cloud_mask_np(prob, params)


def s2cloudless(bands: xr.DataArray, params: S2CloudlessParams = S2CloudlessParams()) -> xr.Dataset:
    """:func:`s2cloudless_np` on a ``(band, y, x)`` DataArray whose ``band`` coordinate names
    Sentinel-2 bands (``B01`` ... ``B12``, ``B8A``; the 10 model bands or all 13), eager or dask.
    Returns a Dataset with ``cloud_probability`` (float32) and ``cloud`` (bool) over ``(y, x)``."""
    if set(bands.dims) != {"band", "y", "x"}:
        raise ValueError(f"s2cloudless input dims got {bands.dims!r}; expected ('band', 'y', 'x')")
    names = [str(b) for b in bands["band"].values] if "band" in bands.coords else []
    lacking = [b for b in MODEL_BANDS if b not in names]
    if lacking:
        raise ValueError(f"s2cloudless input lacks band(s) {lacking!r}; expected all of {MODEL_BANDS!r} in the 'band' coordinate")
    x = bands.sel(band=list(MODEL_BANDS)).transpose("band", "y", "x")
    template = x.isel(band=0, drop=True)
    if is_dask(x):
        data = x.data.astype(np.float32).rechunk({0: -1})
        prob = data.map_blocks(cloud_probability_np, n_threads=1, drop_axis=0, dtype=np.float32)  # dask threads go over chunks
        if params.depth > 0:
            mask = prob.map_overlap(cloud_mask_np, depth=params.depth, boundary="none", dtype=bool, params=params)
        else:
            mask = prob.map_blocks(cloud_mask_np, dtype=bool, params=params)
    else:
        prob, mask = s2cloudless_np(x.values.astype(np.float32, copy=False), params)
    out = xr.Dataset({
        "cloud_probability": template.copy(data=prob).astype(np.float32),
        "cloud": template.copy(data=mask),
    })
    out["cloud_probability"].attrs = {"long_name": "s2cloudless cloud probability", "units": "1", "engine": engine()}
    out["cloud"].attrs = {"long_name": "s2cloudless cloud mask", "threshold": params.threshold,
                          "average_over": params.average_over, "dilation_size": params.dilation_size}
    return out


__all__ = ["ALL_BANDS", "MODEL_BANDS", "Forest", "S2CloudlessParams", "cloud_mask_np", "cloud_probability_np", "engine", "parse_forest",
           "s2cloudless", "s2cloudless_np"]
