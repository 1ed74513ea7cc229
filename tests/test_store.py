"""Tests for sitewatch.io.store: URL helpers and atomic local writes through fsspec."""

from __future__ import annotations

import os

import pytest

from sitewatch.io import store


# ---------------------------------------------------------------- URL helpers

@pytest.mark.parametrize(
    "url, proto",
    [
        ("/data/x", "file"),
        ("relative/path", "file"),
        ("file:///data/x", "file"),
        ("C:\\data\\x", "file"),  # a Windows drive letter is not a scheme
        ("s3://bucket/key", "s3"),
        ("https://example.com/a.tif", "https"),
        ("gs://bucket/k", "gs"),
        ("memory://x", "memory"),
    ],
)
def test_protocol_of(url, proto):
    assert store.protocol_of(url) == proto


@pytest.mark.parametrize(
    "base, parts, expected",
    [
        ("s3://bucket/", ("/site/", "cube.zarr"), "s3://bucket/site/cube.zarr"),
        ("/data", ("a", "b/", "/c.json"), "/data/a/b/c.json"),
        ("/data/", (), "/data"),
        ("s3://bucket/prefix", ("x",), "s3://bucket/prefix/x"),
    ],
)
def test_join(base, parts, expected):
    assert store.join(base, *parts) == expected


def test_normalise_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store.normalise_url("sub/dir") == str(tmp_path / "sub" / "dir")
    assert store.normalise_url("file:///data/x") == "/data/x"
    assert store.normalise_url("/data/x/") == "/data/x"
    assert store.normalise_url("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert store.normalise_url("s3://bucket/prefix") == "s3://bucket/prefix"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store.normalise_url("~/x") == str(tmp_path / "home" / "x")


@pytest.mark.parametrize(
    "url, expected",
    [
        ("/data/scene/red.tif", "/data/scene/red.tif"),
        ("file:///data/scene/red.tif", "/data/scene/red.tif"),
        ("s3://bucket/scene/red.tif", "/vsis3/bucket/scene/red.tif"),
        ("https://example.com/scene/red.tif", "/vsicurl/https://example.com/scene/red.tif"),
        ("http://example.com/red.tif", "/vsicurl/http://example.com/red.tif"),
        ("gs://bucket/red.tif", "/vsigs/bucket/red.tif"),
    ],
)
def test_gdal_path(url, expected):
    assert store.gdal_path(url) == expected


def test_storage_options_explicit_win(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:9000")
    assert store.storage_options_for("s3://b/k", {"anon": True}) == {"anon": True}


def test_storage_options_from_environment(monkeypatch):
    for k in ("SITEWATCH_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    assert store.storage_options_for("s3://b/k") == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws:9000")
    monkeypatch.setenv("SITEWATCH_S3_ENDPOINT", "http://sitewatch:9000")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    opts = store.storage_options_for("s3://b/k")
    assert opts == {"endpoint_url": "http://sitewatch:9000", "client_kwargs": {"region_name": "eu-central-1"}}
    # local paths never get S3 options
    assert store.storage_options_for("/data/x") == {}


# ---------------------------------------------------------------- local reads and writes

def test_write_bytes_creates_folders_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    store.write_bytes(str(target), b"hello")
    assert target.read_bytes() == b"hello"
    assert sorted(os.listdir(target.parent)) == ["file.bin"]


def test_write_bytes_replaces_target(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old contents that are longer")
    ino_before = target.stat().st_ino
    store.write_bytes(str(target), b"new")
    assert target.read_bytes() == b"new"  # not b"new contents..." (no partial overwrite)
    assert sorted(os.listdir(tmp_path)) == ["file.bin"]
    # replaced by rename, not rewritten in place: a reader holding the old file keeps old bytes
    assert target.stat().st_ino != ino_before


def test_write_bytes_is_atomic_for_an_open_reader(tmp_path):
    target = tmp_path / "feed.json"
    store.write_bytes(str(target), b"version 1")
    with open(target, "rb") as reader:
        store.write_bytes(str(target), b"version 2, longer")
        assert reader.read() == b"version 1"
    assert target.read_bytes() == b"version 2, longer"


def test_write_bytes_failure_keeps_old_target(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    store.write_bytes(str(target), b"good")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes(str(target), b"bad")
    assert target.read_bytes() == b"good"


def test_file_url_write_and_read(tmp_path):
    url = f"file://{tmp_path}/x/y.bin"
    store.write_bytes(url, b"\x00\x01")
    assert (tmp_path / "x" / "y.bin").read_bytes() == b"\x00\x01"
    assert store.read_bytes(url) == b"\x00\x01"
    assert store.exists(url)
    assert not store.exists(f"file://{tmp_path}/x/z.bin")


def test_json_round_trip(tmp_path):
    url = str(tmp_path / "d" / "obj.json")
    obj = {"a": 1, "b": [1.5, "x", None], "nested": {"t": True}}
    store.write_json(url, obj)
    assert store.read_json(url) == obj
    # non-JSON values are written with str()
    import datetime as dt

    store.write_json(url, {"when": dt.date(2026, 1, 2)})
    assert store.read_json(url) == {"when": "2026-01-02"}


def test_read_missing_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        store.read_bytes(str(tmp_path / "missing.bin"))


def test_list_files_recursive_with_suffix(tmp_path):
    for rel in ["s1/s1.json", "s1/red.tif", "s2/s2.json", "s2/deep/x.json", "top.json", "notes.txt"]:
        store.write_bytes(str(tmp_path / rel), b"{}")
    found = store.list_files(str(tmp_path), ".json")
    expected = sorted(str(tmp_path / r) for r in ["s1/s1.json", "s2/s2.json", "s2/deep/x.json", "top.json"])
    assert found == expected
    assert store.list_files(str(tmp_path), ".tif") == [str(tmp_path / "s1" / "red.tif")]
    assert len(store.list_files(str(tmp_path))) == 6  # no suffix: everything
    assert store.list_files(str(tmp_path / "does-not-exist"), ".json") == []


def test_list_files_memory_filesystem_gives_full_urls():
    import fsspec

    fs = fsspec.filesystem("memory")
    root = "memory://sitewatch-test-list"
    try:
        store.write_bytes(f"{root}/b/item.json", b"{}")
        store.write_bytes(f"{root}/a/item.json", b"{}")
        store.write_bytes(f"{root}/a/red.tif", b"xx")
        found = store.list_files(root, ".json")
        # the memory filesystem roots its paths at "/", so URLs may come back as memory:///...
        assert [u.replace(":///", "://") for u in found] == [f"{root}/a/item.json", f"{root}/b/item.json"]
        assert all(u.startswith("memory://") for u in found)
        assert [store.read_bytes(u) for u in found] == [b"{}", b"{}"]
    finally:
        fs.rm("/sitewatch-test-list", recursive=True)


# ---------------------------------------------------------------- S3 settings, errors, retries

def test_storage_options_region_becomes_client_kwargs():
    opts = store.storage_options_for("s3://b/k", {"endpoint_url": "http://h:1", "region": "eu-west-1"})
    assert opts == {"endpoint_url": "http://h:1", "client_kwargs": {"region_name": "eu-west-1"}}


def test_s3_environment_for_fsspec_and_gdal():
    env = store.s3_environment(endpoint_url="http://127.0.0.1:9000", region="eu-west-1", key="K", secret="S")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert (env["AWS_S3_ENDPOINT"], env["AWS_HTTPS"], env["AWS_VIRTUAL_HOSTING"]) == ("127.0.0.1:9000", "NO", "FALSE")
    assert env["AWS_REGION"] == "eu-west-1" and env["AWS_ACCESS_KEY_ID"] == "K" and env["AWS_SECRET_ACCESS_KEY"] == "S"
    assert store.s3_environment(anon=True) == {"AWS_NO_SIGN_REQUEST": "YES"}
    with pytest.raises(ValueError, match="only one of key and secret"):
        store.s3_environment(key="K")
    with pytest.raises(ValueError, match="endpoint_url got 'minio:9000'"):
        store.s3_environment(endpoint_url="minio:9000")


def test_configure_s3_sets_the_process_and_reports_names_only(monkeypatch):
    import fsspec

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
              "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "AWS_NO_SIGN_REQUEST", "AWS_REGION", "AWS_DEFAULT_REGION"):
        # set then delete: monkeypatch records each variable, so what configure_s3 writes into
        # os.environ is undone after the test (a left-over AWS_NO_SIGN_REQUEST=YES made later
        # S3 tests in the same worker process send unsigned requests: 403)
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "old-token")
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    names = store.configure_s3(store.s3_environment(endpoint_url="http://127.0.0.1:9", key="K", secret="S3CR3T", anon=False))
    assert "AWS_SECRET_ACCESS_KEY" in names and "S3CR3T" not in repr(names)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "S3CR3T" and os.environ["AWS_S3_ENDPOINT"] == "127.0.0.1:9"
    assert "AWS_SESSION_TOKEN" not in os.environ  # another credential's token is dropped
    store.configure_s3(store.s3_environment(anon=True))
    assert fsspec.config.conf["s3"]["anon"] is True


@pytest.mark.parametrize("exc, transient", [
    (ConnectionRefusedError(111, "Connection refused"), True),
    (TimeoutError("read timed out"), True),
    (OSError("CURL error: Failed to connect to 127.0.0.1 port 9: Could not connect to server"), True),
    (OSError("HTTP response code: 503"), True),
    (RuntimeError("An error occurred (SlowDown) when calling GetObject"), True),
    (ValueError("band 'green' object 's3://b/g.tif' cannot be opened as a raster: Please reduce your request rate."), True),
    (FileNotFoundError("s3://b/x.tif"), False),
    (PermissionError("Access Denied"), False),
    (OSError("HTTP response code: 403"), False),
    (ValueError("not a TIFF file"), False),
])
def test_is_transient(exc, transient):
    assert store.is_transient(exc) is transient


def test_is_transient_follows_the_cause_chain():
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as inner:
            raise ValueError("scene 'A': band 'red' cannot be read") from inner
    except ValueError as exc:
        assert store.is_transient(exc)


def test_redact_hides_secrets_and_url_passwords(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    text = "failed with secret wJalrXUtnFEMI at https://user:pa55@minio.local/b/x.tif"
    out = store.redact(text)
    assert "wJalrXUtnFEMI" not in out and "pa55" not in out and "https://***@minio.local/b/x.tif" in out


def test_bucket_of_and_check_bucket_passes_local(tmp_path):
    assert store.bucket_of("s3://bkt/a/b") == "bkt" and store.bucket_of("/data/x") is None
    store.check_bucket(str(tmp_path / "anything"))  # local paths: nothing to check


def test_missing_bucket_is_a_clear_error_on_a_real_s3_server(s3_server):
    import boto3
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="present")
    store.check_bucket("s3://present/x")
    with pytest.raises(store.StoreError, match="bucket 'absent' \\(of 's3://absent/scenes'\\) does not exist"):
        store.check_bucket("s3://absent/scenes")
    with pytest.raises(store.StoreError, match="'absent'"):
        store.list_files("s3://absent/scenes", ".json")
    assert store.list_files("s3://present/nothing-here", ".json") == []


def test_configure_gdal_sets_retry_defaults_without_overriding(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "7")
    monkeypatch.delenv("GDAL_HTTP_RETRY_DELAY", raising=False)
    monkeypatch.delenv("GDAL_HTTP_TIMEOUT", raising=False)
    done = store.configure_gdal_s3_from_env()
    assert os.environ["GDAL_HTTP_MAX_RETRY"] == "7" and "GDAL_HTTP_MAX_RETRY" not in done
    assert os.environ["GDAL_HTTP_RETRY_DELAY"] == store.GDAL_REMOTE_DEFAULTS["GDAL_HTTP_RETRY_DELAY"]
    monkeypatch.delenv("GDAL_HTTP_RETRY_DELAY")
    monkeypatch.delenv("GDAL_HTTP_TIMEOUT")


def test_clear_gdal_cache_reaches_gdal():
    assert store.clear_gdal_cache() is True
