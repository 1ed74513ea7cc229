"""Tests for tasks/storage.py: credential resolution (no server needed for in-memory blocks) and
the retry policy. The block saved to and loaded from a real Prefect server is exercised in
tests/test_s3_failures.py."""

from __future__ import annotations

import pytest

from sitewatch.config import SiteConfig
from tasks import storage


def _cfg(**kw):
    return SiteConfig(name="a", bbox=(0, 0, 1, 1), source="s3://b/s", store="s3://b/o", **kw)


def test_backoff_is_exponential():
    assert storage.backoff_delays(4, 0.5) == [0.5, 1.0, 2.0, 4.0]
    assert storage.backoff_delays(0, 2) == []


def test_retry_policy_from_environment(monkeypatch):
    monkeypatch.setenv("SITEWATCH_RETRIES", "4")
    monkeypatch.setenv("SITEWATCH_RETRY_DELAY", "0.25")
    assert storage.retry_policy() == (4, 0.25)
    opts = storage.task_retry_options()
    assert opts["retries"] == 4 and opts["retry_delay_seconds"] == [0.25, 0.5, 1.0, 2.0] and opts["retry_jitter_factor"] > 0
    monkeypatch.setenv("SITEWATCH_RETRIES", "many")
    with pytest.raises(ValueError, match="SITEWATCH_RETRIES/SITEWATCH_RETRY_DELAY got 'many'"):
        storage.retry_policy()


def test_call_with_retries_retries_transient_errors_only(monkeypatch):
    monkeypatch.setenv("SITEWATCH_RETRIES", "3")
    monkeypatch.setenv("SITEWATCH_RETRY_DELAY", "0.01")
    calls, seen = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(104, "Connection reset by peer")
        return "ok"

    assert storage.call_with_retries(flaky, on_retry=lambda n, wait, exc: seen.append((n, wait))) == "ok"
    assert len(calls) == 3 and [n for n, _ in seen] == [1, 2] and seen[1][1] >= 0.02  # doubled

    bad = []

    def corrupt():
        bad.append(1)
        raise ValueError("not a TIFF file")

    with pytest.raises(ValueError):
        storage.call_with_retries(corrupt)
    assert len(bad) == 1  # bad input: no retry

    down = []

    def dead():
        down.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ConnectionRefusedError):
        storage.call_with_retries(dead)
    assert len(down) == 4  # first try + 3 retries


def test_storage_environment_from_site_options_only():
    assert storage.storage_environment(_cfg()) == {}
    env = storage.storage_environment(_cfg(storage_options={"endpoint_url": "http://127.0.0.1:9000", "region": "eu-west-1"}))
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and env["AWS_REGION"] == "eu-west-1"
    assert "AWS_ACCESS_KEY_ID" not in env


def test_block_settings_duck_typed():
    blk = storage.S3Credentials(aws_access_key_id="AK", aws_secret_access_key="SK", endpoint_url="http://h:1", region_name="r")
    got = storage.block_settings(blk)
    assert got == {"key": "AK", "secret": "SK", "token": None, "endpoint_url": "http://h:1", "region": "r"}
    assert "SK" not in repr(blk)  # secrets are masked in the block's repr

    class NotCredentials:
        aws_access_key_id = "AK"

    with pytest.raises(ValueError, match="aws_secret_access_key"):
        storage.block_settings(NotCredentials())  # type: ignore[arg-type]


def test_unknown_block_is_a_clear_error(prefect_server):
    with pytest.raises(ValueError, match="credentials_block got 'no-such-block'"):
        storage.storage_environment(_cfg(credentials_block="no-such-block"))
