"""sitewatch: watch places on Earth in satellite imagery and raise alerts when they change.

This package is the Prefect-free library: kernels (``sitewatch.kernels``), I/O
(``sitewatch.io``: object store, scenes, the Zarr cube) and models. Prefect tasks live in the
top-level ``tasks`` package and flows in ``flows``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["open_site", "__version__"]


def open_site(name_or_url: str, store: str | None = None, storage_options: dict[str, Any] | None = None, committed_only: bool = True):
    """Open a site's datacube lazily (dask-backed, georeferenced through rioxarray).

    ``name_or_url`` is a cube URL (``.../cube.zarr``, local path or ``s3://``), a site root
    (``<store>/<site>``), or a site name together with ``store``.
    """
    from .io import cube as cube_io
    from .io import store as store_io

    url = name_or_url
    if store is not None and "/" not in name_or_url:
        url = store_io.join(store_io.normalise_url(store), name_or_url)
    url = store_io.normalise_url(url)
    if not url.rstrip("/").endswith(".zarr"):
        url = store_io.join(url, "cube.zarr")
    return cube_io.open_cube(url, committed_only=committed_only, storage_options=storage_options)
