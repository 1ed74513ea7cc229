"""Object-store access through fsspec: a local folder (the default), ``s3://`` or any fsspec URL.

Credentials and endpoints never appear here as arguments that get logged: for ``s3://`` they come
from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` /
``SITEWATCH_S3_ENDPOINT``, ``AWS_REGION``) unless ``storage_options`` are passed explicitly.
:func:`configure_s3` puts an endpoint, region and credentials into the process (environment for
botocore/s3fs and GDAL, fsspec's config for ``anon``) so that every reader in the process, and
Dask worker processes started after it, reach the same server with the same keys; the tasks
layer calls it with credentials from a Prefect block. Nothing here logs or returns a secret.

Errors: :class:`StoreError` (an ``OSError``) names the object or bucket; :func:`is_transient`
tells network trouble (connection refused or reset, timeouts, HTTP 5xx, throttling) that is worth
retrying from bad input that is not.
"""

from __future__ import annotations

import errno
import json
import os
import re
from typing import Any
from urllib.parse import urlparse

import fsspec


class StoreError(OSError):
    """An object or bucket that cannot be used (missing bucket, access denied); names it."""


def protocol_of(url: str) -> str:
    scheme = urlparse(url).scheme
    if len(scheme) <= 1:  # "" or a Windows drive letter
        return "file"
    return scheme


# GDAL reads remote files with its own HTTP client: retry transient failures (GDAL retries HTTP
# 429/5xx and some connection errors) and time out instead of hanging. Users override any of
# these by setting them in the environment.
GDAL_REMOTE_DEFAULTS = {
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no LIST of the scene folder on every open
}


def _endpoint_from_env() -> str | None:
    return os.environ.get("SITEWATCH_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")


def _gdal_endpoint_env(endpoint: str) -> dict[str, str]:
    u = urlparse(endpoint)
    return {
        "AWS_S3_ENDPOINT": u.netloc or u.path,
        "AWS_HTTPS": "NO" if u.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


def configure_gdal_s3_from_env() -> dict[str, str]:
    """Make GDAL (rasterio) reach the same S3 endpoint as fsspec: when ``AWS_ENDPOINT_URL`` (or
    ``SITEWATCH_S3_ENDPOINT``) names an S3-compatible server (MinIO, Ceph, moto), set GDAL's
    ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING`` in ``os.environ`` unless
    already set; also GDAL's HTTP retry and timeout defaults (:data:`GDAL_REMOTE_DEFAULTS`).
    Environment, not ``rasterio.Env``: lazy reads happen later in Dask workers, which inherit
    the environment but not a context. Returns what it set (no secrets)."""
    wanted = dict(GDAL_REMOTE_DEFAULTS)
    endpoint = _endpoint_from_env()
    if endpoint:
        wanted.update(_gdal_endpoint_env(endpoint))
    done = {}
    for k, v in wanted.items():
        if k not in os.environ:
            os.environ[k] = v
            done[k] = v
    return done


SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def s3_environment(
    endpoint_url: str | None = None,
    region: str | None = None,
    anon: bool | None = None,
    key: str | None = None,
    secret: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """The environment variables that point botocore/s3fs and GDAL at ``endpoint_url`` with
    these credentials (only those given). Holds secrets: never log it; log its keys."""
    if (key is None) != (secret is None):
        raise ValueError("S3 credentials got only one of key and secret; expected both or neither")
    env: dict[str, str] = {}
    if endpoint_url:
        u = urlparse(endpoint_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"S3 endpoint_url got {endpoint_url!r}; expected http(s)://host[:port]")
        env["AWS_ENDPOINT_URL"] = endpoint_url
        env["AWS_ENDPOINT_URL_S3"] = endpoint_url
        env.update(_gdal_endpoint_env(endpoint_url))
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    if anon is not None:
        env["AWS_NO_SIGN_REQUEST"] = "YES" if anon else "NO"  # GDAL; s3fs gets anon via fsspec config
    if key is not None:
        env["AWS_ACCESS_KEY_ID"] = key
        env["AWS_SECRET_ACCESS_KEY"] = secret  # type: ignore[assignment]
        if token:
            env["AWS_SESSION_TOKEN"] = token
    return env


def configure_s3(env: dict[str, str]) -> list[str]:
    """Apply an :func:`s3_environment` to this process: ``os.environ`` (botocore, s3fs, GDAL,
    and child processes started later), fsspec's default ``s3`` options (``anon``), and drop
    cached s3fs instances holding older settings. Returns the names it set (no values)."""
    changed = [k for k, v in env.items() if os.environ.get(k) != v]
    for k in changed:
        os.environ[k] = env[k]
    if "AWS_ACCESS_KEY_ID" in env and "AWS_SESSION_TOKEN" not in env and "AWS_SESSION_TOKEN" in os.environ:
        del os.environ["AWS_SESSION_TOKEN"]  # a token of other credentials would be wrong
        changed.append("AWS_SESSION_TOKEN")
    if "AWS_NO_SIGN_REQUEST" in env:
        conf = fsspec.config.conf.setdefault("s3", {})
        if env["AWS_NO_SIGN_REQUEST"] == "YES":
            conf["anon"] = True
        else:
            conf.pop("anon", None)
    configure_gdal_s3_from_env()
    if changed:
        _clear_s3fs_cache()
    return sorted(changed)


def _clear_s3fs_cache() -> None:
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:  # s3fs not installed: nothing cached
        pass


# ---------------------------------------------------------------- errors

_TRANSIENT_TEXT = re.compile(
    r"CURL error|HTTP response code: (?:5\d\d|429)|\b(?:500|502|503|504) (?:Server|Internal|Bad Gateway|Service|Gateway)"
    r"|Connection (?:refused|reset|aborted)|Could not connect|Failed to connect|timed out|Timeout|"
    r"SlowDown|ServiceUnavailable|InternalError|RequestTimeout|Server disconnected|Broken pipe|"
    r"EndpointConnectionError|Remote end closed|"
    # S3's own messages for 500/503 (GDAL reports the message of the XML error body)
    r"reduce your request rate|Service is unable to handle request|We encountered an internal error|Please try again",
    re.IGNORECASE,
)
_TRANSIENT_ERRNO = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE, errno.EHOSTUNREACH}


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: the server unreachable or gone (connection refused or
    reset), timeouts, HTTP 5xx and throttling, from s3fs/botocore/aiohttp or GDAL. False for
    missing objects, access denied, corrupt files and other bad input. Looks along the
    ``__cause__``/``__context__`` chain."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (FileNotFoundError, PermissionError, StoreError)):
            return False
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNO:
            return True
        name = type(e).__name__
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError",
                    "ServerDisconnectedError", "ClientOSError", "ConnectionClosedError", "ServerTimeoutError"):
            return True
        if _TRANSIENT_TEXT.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def bucket_of(url: str) -> str | None:
    """The bucket of an object-store URL (``s3://bucket/key`` -> ``bucket``), else None."""
    if protocol_of(url) in ("s3", "s3a", "gs", "gcs"):
        return url.split("://", 1)[1].split("/", 1)[0]
    return None


def check_bucket(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Raise :class:`StoreError` naming the bucket and ``url`` when the bucket of an object-store
    URL does not exist or cannot be accessed; local paths and other URLs pass. Network errors
    propagate as they are (see :func:`is_transient`)."""
    bucket = bucket_of(url)
    if bucket is None:
        return
    fs, _ = filesystem(url, storage_options)
    try:
        if hasattr(fs, "call_s3"):  # s3fs: one cheap request; errors are mapped to OSError types
            fs.call_s3("list_objects_v2", Bucket=bucket, MaxKeys=1)
        else:
            fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        raise StoreError(errno.ENOENT, f"bucket {bucket!r} (of {url!r}) does not exist") from None
    except PermissionError as exc:
        raise StoreError(errno.EACCES, f"access denied to bucket {bucket!r} (of {url!r}): {exc}") from None


def storage_options_for(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """fsspec storage options for ``url``: explicit options win, else the environment. A
    site's ``region`` (the name site configs use) becomes s3fs's ``client_kwargs.region_name``."""
    if storage_options:
        opts = dict(storage_options)
        region = opts.pop("region", None) or opts.pop("region_name", None)
        if region and protocol_of(url) in ("s3", "s3a"):
            opts["client_kwargs"] = {**(opts.get("client_kwargs") or {}), "region_name": region}
        return opts
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
    try:
        return fs.cat_file(path)
    except PermissionError as exc:
        raise StoreError(errno.EACCES, f"access denied to {url!r}: {exc}") from None


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


def write_json(url: str, obj: Any, storage_options: dict[str, Any] | None = None) -> None:
    write_bytes(url, json.dumps(obj, indent=2, default=str).encode(), storage_options)


def read_json(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    return json.loads(read_bytes(url, storage_options))


def list_files(url: str, suffix: str = "", storage_options: dict[str, Any] | None = None) -> list[str]:
    """All files under ``url`` (recursively) ending in ``suffix``, as full URLs, sorted; none if
    the folder/prefix does not exist, :class:`StoreError` if its bucket does not."""
    fs, path = filesystem(url, storage_options)
    check_bucket(url, storage_options)
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


_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s'\"]+@", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the process's S3 secrets (secret key, session token) and any
    ``user:password@`` in URLs replaced by ``***``: for error texts that end up in logs,
    summaries and artifacts."""
    out = _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        v = os.environ.get(name)
        if v and len(v) >= 4:
            out = out.replace(v, "***")
    return out


def clear_gdal_cache() -> bool:
    """Forget what GDAL's ``/vsis3/``/``/vsicurl/`` layer cached (file sizes, headers, blocks),
    so that an object replaced on the server
    (a fixed scene) is read afresh. Best effort: False when GDAL's functions cannot be reached."""
    import ctypes
    import glob

    import rasterio

    libs = glob.glob(os.path.join(os.path.dirname(rasterio.__file__) + ".libs", "libgdal*.so*"))
    try:
        lib = ctypes.CDLL(libs[0]) if libs else ctypes.CDLL(None)  # the copy rasterio already loaded
        lib.VSICurlClearCache()
    except (OSError, AttributeError):
        return False
    return True
