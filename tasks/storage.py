"""Object-store credentials and the retry policy for storage work.

Credentials come from one of three places, first match wins per setting:

* a Prefect block named by ``SiteConfig.credentials_block`` (resolved here, never in
  ``sitewatch/``): a :class:`S3Credentials` block (``"my-creds"``), or any block given as
  ``"block-type-slug/name"`` that has ``aws_access_key_id`` / ``aws_secret_access_key`` fields
  (e.g. prefect-aws's ``AwsCredentials``);
* non-secret ``SiteConfig.storage_options`` (``endpoint_url``, ``region``, ``anon``);
* the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...).

The block's keys never become flow or task parameters (only the block's name does), and are never
logged: :func:`use_storage` puts them into the process environment and fsspec's config
(:func:`sitewatch.io.store.configure_s3`) where s3fs, botocore and GDAL find them, and
:func:`configure_storage` does the same on every Dask worker, where lazy reads run.

Retries: transient storage errors (connection refused or reset, timeouts, HTTP 5xx) are retried
with exponential backoff and jitter; bad input (:class:`~sitewatch.io.scenes.SceneError`, a
missing bucket, access denied) is not. ``SITEWATCH_RETRIES`` (default 3) and
``SITEWATCH_RETRY_DELAY`` (first delay in seconds, default 2; doubles each time) tune it; tests set
small values.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Callable, Optional, TypeVar

from prefect import task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import Field, SecretStr

from sitewatch.config import SiteConfig
from sitewatch.io import store

T = TypeVar("T")


class S3Credentials(Block):
    """Keys for an S3-compatible object store (AWS, MinIO, Ceph). Secrets are stored encrypted
    by the Prefect server and shown masked in the UI."""

    _block_type_name = "sitewatch S3 credentials"
    _block_type_slug = "sitewatch-s3-credentials"
    _description = "Access key, secret and optional endpoint for the object store holding a site's scenes and cube."

    aws_access_key_id: SecretStr = Field(description="Access key id")
    aws_secret_access_key: SecretStr = Field(description="Secret access key")
    aws_session_token: Optional[SecretStr] = Field(None, description="Session token (temporary credentials)")
    endpoint_url: Optional[str] = Field(None, description="S3-compatible endpoint, e.g. http://minio:9000 (default AWS)")
    region_name: Optional[str] = Field(None, description="Region, e.g. eu-central-1")


def _secret(v: Any) -> Optional[str]:
    if v is None:
        return None
    return v.get_secret_value() if isinstance(v, SecretStr) else str(v)


def load_block(name: str) -> Block:
    """The credentials block ``name`` (an :class:`S3Credentials`), or ``"type-slug/name"``."""
    if "/" in name:
        return Block.load(name)
    return S3Credentials.load(name)


def block_settings(block: Block) -> dict[str, Any]:
    """key/secret/token/endpoint_url/region from a credentials block (duck-typed field names)."""
    key = _secret(getattr(block, "aws_access_key_id", None))
    secret = _secret(getattr(block, "aws_secret_access_key", None))
    if not key or not secret:
        raise ValueError(f"credentials block {type(block).__name__!r} got no aws_access_key_id/aws_secret_access_key; "
                         "expected both")
    endpoint = getattr(block, "endpoint_url", None)
    params = getattr(block, "aws_client_parameters", None)  # prefect-aws AwsCredentials
    if endpoint is None and params is not None:
        endpoint = getattr(params, "endpoint_url", None)
    return {"key": key, "secret": secret, "token": _secret(getattr(block, "aws_session_token", None)),
            "endpoint_url": endpoint, "region": getattr(block, "region_name", None)}


def storage_environment(cfg: SiteConfig) -> dict[str, str]:
    """The S3 environment for ``cfg``: the site's non-secret ``storage_options`` and, when
    ``credentials_block`` names one, the block's keys. Empty when neither is given (the
    environment as it is applies). Holds secrets: never log or return it from a task."""
    opts = dict(cfg.storage_options or {})
    client_kwargs = opts.get("client_kwargs") or {}
    settings: dict[str, Any] = {
        "endpoint_url": opts.get("endpoint_url"),
        "region": opts.get("region") or opts.get("region_name") or client_kwargs.get("region_name"),
        "anon": opts.get("anon"),
    }
    if cfg.credentials_block:
        try:
            block = load_block(cfg.credentials_block)
        except ValueError as exc:  # Prefect: "Unable to find block document named ..."
            raise ValueError(f"site {cfg.name!r}: credentials_block got {cfg.credentials_block!r}, which cannot be "
                             f"loaded: {exc}") from None
        b = block_settings(block)
        settings.update(key=b["key"], secret=b["secret"], token=b["token"])
        settings["endpoint_url"] = settings["endpoint_url"] or b["endpoint_url"]
        settings["region"] = settings["region"] or b["region"]
    return store.s3_environment(**settings)


def use_storage(cfg: SiteConfig) -> list[str]:
    """Apply ``cfg``'s storage settings to this process; returns the variable names set."""
    store.configure_gdal_s3_from_env()
    env = storage_environment(cfg)
    return store.configure_s3(env) if env else []


@task(name="configure-storage", cache_policy=NO_CACHE)
def configure_storage(cfg: SiteConfig) -> list[str]:
    """Apply ``cfg``'s storage settings on every Dask worker of the flow's cluster (lazy COG
    reads and Zarr writes run there). Returns the names of the variables set, never values."""
    names = use_storage(cfg)
    store.clear_gdal_cache()  # each run sees objects as they are now (e.g. a re-uploaded scene)
    try:
        from distributed import get_worker

        worker_address = get_worker().address
    except (ImportError, ValueError):
        worker_address = None
    # Worker processes (a local process cluster or a remote one) need the same settings; an
    # in-process cluster (the default) shares this process and has them already.
    if worker_address and not worker_address.startswith("inproc://"):
        from distributed import worker_client

        env = storage_environment(cfg)
        with worker_client() as client:
            client.run(store.clear_gdal_cache)
            if env:
                client.run(store.configure_s3, env)
    if names:
        get_run_logger().info("site %s: object store settings applied: %s", cfg.name, ", ".join(names))
    return names


# ---------------------------------------------------------------- retries

def retry_policy() -> tuple[int, float]:
    """``(retries, first delay in seconds)`` from ``SITEWATCH_RETRIES`` / ``SITEWATCH_RETRY_DELAY``."""
    raw_n, raw_d = os.environ.get("SITEWATCH_RETRIES", "3"), os.environ.get("SITEWATCH_RETRY_DELAY", "2")
    try:
        n, d = int(raw_n), float(raw_d)
    except ValueError:
        raise ValueError(f"SITEWATCH_RETRIES/SITEWATCH_RETRY_DELAY got {raw_n!r}/{raw_d!r}; expected an integer "
                         "and a number of seconds") from None
    if n < 0 or d < 0:
        raise ValueError(f"SITEWATCH_RETRIES/SITEWATCH_RETRY_DELAY got {n!r}/{d!r}; expected values >= 0")
    return n, d


def backoff_delays(retries: int, first: float) -> list[float]:
    """Exponential backoff: ``first, 2*first, 4*first, ...`` (``retries`` values)."""
    return [first * 2 ** k for k in range(retries)]


def task_retry_options() -> dict[str, Any]:
    """Options for ``task.with_options(...)``: retries with exponential backoff and jitter."""
    n, d = retry_policy()
    return {"retries": n, "retry_delay_seconds": backoff_delays(n, d), "retry_jitter_factor": 0.5}


def call_with_retries(fn: Callable[[], T], on_retry: Callable[[int, float, BaseException], None] | None = None) -> T:
    """``fn()``, retried on transient errors (:func:`sitewatch.io.store.is_transient`) with the
    same backoff as the tasks; other errors propagate at once."""
    delays = backoff_delays(*retry_policy())
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= len(delays) or not store.is_transient(exc):
                raise
            wait = delays[attempt] * (1 + 0.5 * random.random())
            attempt += 1
            if on_retry:
                on_retry(attempt, wait, exc)
            time.sleep(wait)


@task(name="check-storage", cache_policy=NO_CACHE, retry_condition_fn=lambda t, r, state: _transient_state(state))
def check_storage(cfg: SiteConfig) -> None:
    """Fail early, naming the bucket, when the site's source or store bucket is missing or
    denied (a missing store bucket would otherwise surface as a half-made cube)."""
    site = cfg.to_site()
    for what, url in (("source", site.source), ("store", site.store)):
        try:
            store.check_bucket(url)
        except store.StoreError as exc:
            raise store.StoreError(exc.errno, f"site {cfg.name!r} {what}: {exc.strerror}") from None


def _transient_state(state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:
        return store.is_transient(exc)
    return False
