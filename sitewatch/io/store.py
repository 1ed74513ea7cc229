"""Object-store access through fsspec: a local folder (the default), ``s3://`` or any fsspec URL.

Credentials and endpoints never appear here as arguments that get logged: for ``s3://`` they come
from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` /
``SITEWATCH_S3_ENDPOINT``, ``AWS_REGION``) unless ``storage_options`` are passed explicitly.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlparse

import fsspec


def protocol_of(url: str) -> str:
    scheme = urlparse(url).scheme
    if len(scheme) <= 1:  # "" or a Windows drive letter
        return "file"
    return scheme


def configure_gdal_s3_from_env() -> dict[str, str]:
    """Make GDAL (rasterio) reach the same S3 endpoint as fsspec: when ``AWS_ENDPOINT_URL`` (or
    ``SITEWATCH_S3_ENDPOINT``) names an S3-compatible server (MinIO, Ceph, moto), set GDAL's
    ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING`` in ``os.environ`` unless
    already set. Environment, not ``rasterio.Env``: lazy reads happen later in Dask workers,
    which inherit the environment but not a context. Returns what it set (no secrets)."""
    endpoint = os.environ.get("SITEWATCH_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    u = urlparse(endpoint)
    wanted = {
        "AWS_S3_ENDPOINT": u.netloc or u.path,
        "AWS_HTTPS": "NO" if u.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    done = {}
    for k, v in wanted.items():
        if k not in os.environ:
            os.environ[k] = v
            done[k] = v
    return done


def storage_options_for(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """fsspec storage options for ``url``: explicit options win, else the environment."""
    if storage_options:
        return dict(storage_options)
    if protocol_of(url) in ("s3", "s3a"):
        opts: dict[str, Any] = {}
        endpoint = os.environ.get("SITEWATCH_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            opts.setdefault("client_kwargs", {})["region_name"] = region
        return opts
    return {}


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path within it."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options_for(url, storage_options))
    return fs, path


def normalise_url(url: str) -> str:
    """Absolute URL: local paths become absolute ``file://`` free paths; others stay as given."""
    if protocol_of(url) == "file":
        p = url[len("file://"):] if url.startswith("file://") else url
        return os.path.abspath(os.path.expanduser(p))
    return url.rstrip("/")


def join(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def write_bytes(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` to ``url`` atomically where the store allows it.

    Object stores replace an object atomically on PUT; on a local filesystem the bytes go to a
    temporary file that is renamed over the target, so a reader never sees half a file.
    """
    fs, path = filesystem(url, storage_options)
    if protocol_of(url) == "file":
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    fs, path = filesystem(url, storage_options)
    return fs.cat_file(path)


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


def write_json(url: str, obj: Any, storage_options: dict[str, Any] | None = None) -> None:
    write_bytes(url, json.dumps(obj, indent=2, default=str).encode(), storage_options)


def read_json(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    return json.loads(read_bytes(url, storage_options))


def list_files(url: str, suffix: str = "", storage_options: dict[str, Any] | None = None) -> list[str]:
    """All files under ``url`` (recursively) ending in ``suffix``, as full URLs, sorted."""
    fs, path = filesystem(url, storage_options)
    if not fs.exists(path):
        return []
    found = [p for p in fs.find(path) if p.endswith(suffix)]
    proto = protocol_of(url)
    if proto == "file":
        return sorted(found)
    return sorted(f"{proto}://{p}" for p in found)


def gdal_path(url: str) -> str:
    """A path GDAL/rasterio can open: local paths as they are, ``s3://`` as ``/vsis3/``,
    ``http(s)://`` through ``/vsicurl/``."""
    proto = protocol_of(url)
    if proto == "file":
        return url[len("file://"):] if url.startswith("file://") else url
    if proto in ("s3", "s3a"):
        return "/vsis3/" + url.split("://", 1)[1]
    if proto in ("http", "https"):
        return "/vsicurl/" + url
    if proto in ("gs", "gcs"):
        return "/vsigs/" + url.split("://", 1)[1]
    return url
