"""Bytes requested vs file size when sitewatch reads a small site out of a large COG on S3.

    python -m benchmarks.s3_reads [--size 10980] [--site 256]

A Sentinel-2-tile-sized scene (``--size`` x ``--size`` uint16, deflate, internal 512 x 512 tiles,
overviews: the layout providers publish) is uploaded to a real S3 protocol server (moto's server
mode, its own process on 127.0.0.1). sitewatch's own reader (``sitewatch.io.scenes.read_scene``
onto a site grid inside the scene, computed) then reads it through GDAL's ``/vsis3/``, with a
counting HTTP proxy (``benchmarks/s3proxy.py``) between GDAL and the server that records every
request and the bytes it returned. Cases: a small site inside one COG tile, a small site across
tile corners, a larger site, and (for comparison) the whole object's size. Writes
``benchmarks/results/s3_reads.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto() -> tuple[subprocess.Popen, str]:
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    port = _free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def _scene_cog(size: int, x0: float, y0: float, crs: str) -> bytes:
    """A size x size uint16 COG (deflate, 512 tiles, overviews) with texture that compresses
    like real reflectance (smooth field plus sensor noise), built in strips to bound memory."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint16", crs=crs,
                   transform=from_origin(x0, y0, 10.0, 10.0), nodata=0, tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate")
    yy = np.arange(size, dtype=np.float32)
    with MemoryFile() as tmp:
        with tmp.open(**profile) as dst:
            for r0 in range(0, size, 1024):
                h = min(1024, size - r0)
                xx = np.arange(size, dtype=np.float32)[None, :]
                field = 1500 + 600 * np.sin(yy[r0:r0 + h, None] / 300.0) * np.cos(xx / 450.0)
                strip = (field + rng.normal(0, 60, (h, size))).clip(1, 65535).astype("uint16")
                dst.write(strip, 1, window=Window(0, r0, size, h))
        with tmp.open() as src, MemoryFile() as out:
            cog = dict(src.profile, driver="COG", blocksize=512, overview_resampling="average")
            for k in ("tiled", "blockxsize", "blockysize", "interleave"):
                cog.pop(k, None)
            with out.open(**cog) as dst:
                dst.write(src.read(1), 1)
            return out.read()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=10980, help="scene width and height in pixels (default 10980, a Sentinel-2 tile)")
    p.add_argument("--site", type=int, default=256, help="small site width and height in pixels (default 256)")
    args = p.parse_args(argv)
    if args.size < 2048 or args.site < 16 or args.site * 4 > args.size:
        raise SystemExit(f"--size got {args.size!r} and --site {args.site!r}; expected size >= 2048 and site <= size / 4")

    proc, endpoint = _start_moto()
    try:
        import boto3

        from benchmarks.s3proxy import CountingProxy

        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        crs, x0, y0 = "EPSG:32636", 300000.0, 3900000.0
        t = time.perf_counter()
        data = _scene_cog(args.size, x0, y0, crs)
        t_write = time.perf_counter() - t
        file_size = len(data)

        with CountingProxy(endpoint) as proxy:
            # Point GDAL (and s3fs) at the proxy; the library maps the endpoint for GDAL.
            for k in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING"):
                os.environ.pop(k, None)
            os.environ["AWS_ENDPOINT_URL"] = proxy.url
            from sitewatch.grid import SiteGrid
            from sitewatch.io import scenes as scene_io
            from sitewatch.io import store
            from sitewatch.models import SceneRef

            store.configure_gdal_s3_from_env()
            n = args.site
            mid = args.size // 2
            cases = [
                ("small site inside one 512 px tile", f"{n} x {n}", 512 * 2 + 64, 512 * 2 + 64, n),
                ("small site across a tile corner", f"{n} x {n}", mid - n // 2, mid - n // 2, n),
                ("larger site (2048 px)", "2048 x 2048", 1024, 1024, 2048),
            ]
            rows = []
            for k, (name, shape, col, row, w) in enumerate(cases):
                key = f"scenes/case{k}/red.tif"  # one object per case: no GDAL cache carried over
                s3.put_object(Bucket="bench", Key=key, Body=data)
                ref = SceneRef(scene_id=f"bench{k}", datetime=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                               assets={"red": f"s3://bench/{key}"})
                grid = SiteGrid(crs=crs, x0=x0 + col * 10.0, y0=y0 - row * 10.0, resolution=10.0, width=w, height=w)
                proxy.reset()
                t = time.perf_counter()
                ds = scene_io.read_scene(ref, grid, ["red"], chunks=256)
                arr = ds["red"].values
                secs = time.perf_counter() - t
                if arr.shape != (w, w) or not (arr > 0).all():
                    raise RuntimeError(f"case {name!r}: read got shape {arr.shape} with {(arr == 0).sum()} empty pixels; "
                                       "expected a full window of data")
                reqs = [r for r in proxy.requests if r.method in ("GET", "HEAD")]
                got = sum(r.bytes_out for r in reqs)
                rows.append({
                    "case": name, "site_px": shape, "requests": len(reqs),
                    "ranged_gets": sum(1 for r in reqs if r.method == "GET" and r.range),
                    "whole_object_gets": sum(1 for r in reqs if r.method == "GET" and not r.range),
                    "bytes_requested": got, "file_size": file_size, "fraction_of_file": got / file_size,
                    "window_raw_bytes": w * w * 2, "seconds": round(secs, 3),
                })
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    result = {
        "scene_px": f"{args.size} x {args.size}", "dtype": "uint16", "layout": "COG, deflate, 512 x 512 tiles, overviews",
        "file_size": file_size, "cog_build_seconds": round(t_write, 1), "cases": rows,
        "reader": "sitewatch.io.scenes.read_scene (GDAL /vsis3/, WarpedVRT onto the site grid, dask chunks 256)",
        "server": "moto server mode (own process) behind a counting HTTP proxy on 127.0.0.1",
        "gdal": {k: os.environ.get(k) for k in ("GDAL_DISABLE_READDIR_ON_OPEN", "GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_RETRY_DELAY")},
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "s3_reads.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Byte ranges: a small site out of a large COG on S3", "",
        f"Scene: {result['scene_px']} px uint16, {result['layout']}; object size {file_size / 1e6:.1f} MB. "
        f"Read with {result['reader']}; every request counted by a proxy in front of {result['server'].split(' behind')[0]}.",
        f"Produced by `python -m benchmarks.s3_reads --size {args.size} --site {args.site}` on a 2-core machine shared with other work (times are indicative).", "",
        "| case | site px | requests | ranged GETs | whole-object GETs | bytes requested | of file | raw window | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['site_px']} | {r['requests']} | {r['ranged_gets']} | {r['whole_object_gets']} | "
                     f"{r['bytes_requested'] / 1e3:,.0f} kB | {r['fraction_of_file']:.3%} | {r['window_raw_bytes'] / 1e3:,.0f} kB | {r['seconds']} |")
    lines += ["", f"GDAL settings: {result['gdal']}.", f"Measured {result['measured']}."]
    (RESULTS / "s3_reads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
