"""Mask speed and memory on tiled synthetic scenes, each method in its own process, for :mod:`benchmarks.masks`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import ROOT, SHARED, _cores, _cpu_s, _maxrss_mb, _rss_now_mb


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
