"""Run by tests/test_cube_schema.py under a separate interpreter whose rasterio bundles a GDAL
that reads Zarr v3 (>= 3.11): prints what GDAL's Zarr driver reports for one or more
``ZARR:"<cube>":/<array>[:<slot>]`` paths, as JSON. Only rasterio and numpy are needed."""

import hashlib
import json
import sys

import rasterio

out = {"gdal": rasterio.__gdal_version__, "rasterio": rasterio.__version__, "paths": {}}
for path in sys.argv[1:]:
    with rasterio.open(path) as src:
        data = src.read(1)
        out["paths"][path] = {
            "epsg": src.crs.to_epsg() if src.crs else None, "transform": list(src.transform)[:6],
            "shape": [src.height, src.width], "count": src.count, "dtype": src.dtypes[0], "nodata": src.nodata,
            "scale": src.scales[0], "offset": src.offsets[0], "sha256_band1": hashlib.sha256(data.tobytes()).hexdigest(),
        }
print(json.dumps(out))
