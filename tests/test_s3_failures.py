"""Bad input and failing storage on a real S3 protocol server (moto's server mode, its own
process on 127.0.0.1): a corrupt COG, access denied, missing buckets, transient 5xx answers and
the scene server going away mid-run. Each: a clear error naming the object, the scene skipped
and kept in the quarantine list (summary, artifact, ``quarantine.json``), nothing half-written,
the other scenes processed; credentials from a Prefect block never show up anywhere."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from discovery_sites import upload as upload_folder  # tests/ is on sys.path

pytestmark = pytest.mark.slow

BUCKET = "scenes-bkt"
SPEC = dict(width=192, height=192, n_dates=12, seed=11)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """A moto S3 server process that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Moto":
        venv_exe = os.path.join(os.path.dirname(sys.executable), "moto_server")  # not a pyenv shim's other moto
        exe = venv_exe if os.path.exists(venv_exe) else shutil.which("moto_server")
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def client(self, service: str = "s3", key: str = "admin", secret: str = "admin"):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                            region_name="us-east-1")

    def user_with_policy(self, statements: list[dict]) -> tuple[str, str]:
        """An IAM user with ``statements``, then authentication switched on; returns its keys."""
        import requests

        iam = self.client("iam")
        iam.create_user(UserName="sitewatch")
        iam.put_user_policy(UserName="sitewatch", PolicyName="p",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
        k = iam.create_access_key(UserName="sitewatch")["AccessKey"]
        requests.post(self.endpoint + "/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        return k["AccessKeyId"], k["SecretAccessKey"]


@pytest.fixture(scope="module")
def series():
    from sitewatch.synthetic import SyntheticSpec, generate_series

    return generate_series(SyntheticSpec(**SPEC))


@pytest.fixture(scope="module")
def local_scenes(series, tmp_path_factory) -> Path:
    from sitewatch.demo import write_synthetic_scenes

    root = tmp_path_factory.mktemp("scenes")
    write_synthetic_scenes(series, str(root))
    return root


def upload(moto: Moto, root: Path, bucket: str = BUCKET, prefix: str = "scenes") -> list[str]:
    """Upload a local scene folder as users do: boto3 ``upload_file`` per object."""
    s3 = moto.client()
    if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=bucket)
    return upload_folder(s3, bucket, root, prefix)


@pytest.fixture()
def env(monkeypatch):
    """Fast retries for tests; the AWS/GDAL variables recorded so that every test leaves the
    environment as it found it (the flow writes keys into os.environ)."""
    import fsspec
    import s3fs

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
              "SITEWATCH_S3_ENDPOINT", "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "AWS_REGION",
              "AWS_DEFAULT_REGION", "AWS_NO_SIGN_REQUEST"):
        monkeypatch.setenv(k, "")  # recorded (even when unset), so the test's writes are undone
        monkeypatch.delenv(k)
    monkeypatch.setenv("SITEWATCH_RETRIES", "2")
    monkeypatch.setenv("SITEWATCH_RETRY_DELAY", "0.2")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "2")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 2)
    s3fs.S3FileSystem.clear_instance_cache()
    yield monkeypatch
    s3fs.S3FileSystem.clear_instance_cache()


def point_env_at(monkeypatch, moto: Moto, key: str = "admin", secret: str = "admin") -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)


def site_cfg(series, source: str, out: str, name: str, **kw):
    from sitewatch.demo import demo_site_config

    # alerts are not the point here: a short baseline and no alert small enough keep runs quick
    kw = {"chunk_size": 96, "baseline_window": 2, "min_alert_area_m2": 1e9, **kw}
    return demo_site_config(series, source, out, name=name, **kw)


def run(cfg):
    from flows.monitor import monitor_site

    state = monitor_site(cfg, return_state=True)
    return state, state.result(raise_on_failure=False)


def run_texts(flow_run_id) -> tuple[str, str, dict]:
    """All log lines and artifacts of a flow run (through the Prefect API) and its parameters."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as c:
        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        params = c.read_flow_run(flow_run_id).parameters
    return "\n".join(l.message for l in logs), "\n".join(str(a.data) for a in arts), params


# ---------------------------------------------------------------- bad objects, access denied, secrets

def test_corrupt_and_denied_scenes_are_quarantined_and_the_rest_ingested(env, prefect_server, series, local_scenes):
    from sitewatch import open_site
    from sitewatch import quarantine
    from sitewatch.io import store
    from tasks.storage import S3Credentials

    moto = Moto().start()
    try:
        upload(moto, local_scenes)
        moto.client().create_bucket(Bucket="cube-bkt")
        ids = [series.scene(i).scene_id for i in range(len(series))]
        corrupt, denied = ids[3], ids[5]
        # a truncated COG: the header survives, most tiles are gone
        good_red = (local_scenes / corrupt / "red.tif").read_bytes()
        moto.client().put_object(Bucket=BUCKET, Key=f"scenes/{corrupt}/red.tif", Body=good_red[: len(good_red) // 3])
        key, secret = moto.user_with_policy([
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/scenes/{denied}/nir.tif"},
        ])
        # only the block holds the keys; the endpoint comes from the site's non-secret storage options
        S3Credentials(aws_access_key_id=key, aws_secret_access_key=secret).save("sitewatch-test-keys", overwrite=True)
        cfg = site_cfg(series, f"s3://{BUCKET}/scenes", "s3://cube-bkt/out", "badinput",
                       credentials_block="sitewatch-test-keys", storage_options={"endpoint_url": moto.endpoint, "region": "us-east-1"})
        assert "AWS_SECRET_ACCESS_KEY" not in os.environ

        state, s = run(cfg)
        assert state.is_failed()
        assert corrupt in state.message and denied in state.message
        rejected = {r["scene_id"]: r for r in s["scenes_rejected"]}
        assert set(rejected) == {corrupt, denied}
        assert rejected[corrupt]["object"] == f"s3://{BUCKET}/scenes/{corrupt}/red.tif"
        assert rejected[denied]["object"] == f"s3://{BUCKET}/scenes/{denied}/nir.tif"
        assert "403" in rejected[denied]["error"] or "denied" in rejected[denied]["error"].lower()
        assert sorted(s["scenes_ingested"]) == sorted(set(ids) - {corrupt, denied})
        # nothing half-written: the cube shows exactly the good scenes
        ds = open_site(s["cube"])
        assert sorted(str(v) for v in ds.scene_id.values) == sorted(s["scenes_ingested"])
        # the quarantine list: in the store, the summary and the artifact
        q = quarantine.read(s["quarantine"])
        assert {e.scene_id for e in q} == {corrupt, denied} and all(e.attempts == 1 for e in q)
        assert {e["scene_id"] for e in s["scenes_quarantined"]} == {corrupt, denied}
        logs, artifacts, params = run_texts(state.state_details.flow_run_id)
        assert "Quarantined scenes (2)" in artifacts and f"s3://{BUCKET}/scenes/{denied}/nir.tif" in artifacts
        # the secret is nowhere: logs, artifact, flow parameters, summary, quarantine list, alert feed
        blob = "\n".join([logs, artifacts, json.dumps(params, default=str), json.dumps(s, default=str),
                          store.read_bytes(s["quarantine"]).decode(), store.read_bytes(s["alert_feed"]).decode()])
        assert secret not in blob and key not in blob
        assert "sitewatch-test-keys" in json.dumps(params)  # only the block's name is a parameter

        # the corrupt object is fixed: the next run ingests it and it leaves the list; the denied one stays
        moto.client("s3", key, secret).upload_file(str(local_scenes / corrupt / "red.tif"), BUCKET, f"scenes/{corrupt}/red.tif")
        state2, s2 = run(cfg)
        assert state2.is_failed() and denied in state2.message and corrupt not in state2.message
        assert s2["scenes_ingested"] == [corrupt]
        assert [(e["scene_id"], e["attempts"]) for e in s2["scenes_quarantined"]] == [(denied, 2)]
        assert s2["scenes_quarantined"][0]["first_attempt"] <= s2["scenes_quarantined"][0]["last_attempt"]
        assert denied not in [str(v) for v in open_site(s2["cube"]).scene_id.values]
    finally:
        moto.stop()


def test_missing_buckets_fail_the_run_naming_the_bucket(env, prefect_server, series, local_scenes):
    moto = Moto().start()
    try:
        point_env_at(env, moto)
        upload(moto, local_scenes)
        state, _ = run(site_cfg(series, "s3://no-such-source/scenes", f"s3://{BUCKET}/out", "nosource"))
        assert state.is_failed() and "'no-such-source'" in state.message and "does not exist" in state.message
        state, _ = run(site_cfg(series, f"s3://{BUCKET}/scenes", "s3://no-such-store/out", "nostore"))
        assert state.is_failed() and "'no-such-store'" in state.message and "store" in state.message
        keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=BUCKET).get("Contents", [])]
        assert not any(k.startswith("out/") for k in keys)  # nothing written anywhere
    finally:
        moto.stop()


# ---------------------------------------------------------------- transient errors

def test_transient_5xx_answers_are_retried_with_backoff(env, prefect_server, series, local_scenes):
    from benchmarks.s3proxy import CountingProxy

    moto = Moto().start()
    flaky = series.scene(2).scene_id
    served = {"n": 0}

    def fail(method: str, path: str):
        # the first three GETs of one band answer 503 Service Unavailable
        if method == "GET" and path.startswith(f"/{BUCKET}/scenes/{flaky}/green.tif"):
            served["n"] += 1
            if served["n"] <= 3:
                return 503
        return None

    try:
        upload(moto, local_scenes)
        moto.client().create_bucket(Bucket="cube-bkt")
        with CountingProxy(moto.endpoint, fail=fail) as proxy:
            point_env_at(env, moto)
            env.setenv("AWS_ENDPOINT_URL", proxy.url)
            state, s = run(site_cfg(series, f"s3://{BUCKET}/scenes", "s3://cube-bkt/out", "flaky"))
        assert state.is_completed(), state.message
        assert flaky in s["scenes_ingested"] and s["scenes_quarantined"] == []
        statuses = [r.status for r in proxy.requests if f"/{flaky}/green.tif" in r.path]
        assert statuses.count(503) == 3 and statuses[-1] in (200, 206)
    finally:
        moto.stop()


def test_scene_server_going_away_mid_run(env, prefect_server, series, local_scenes):
    """Scenes on one server, the cube on another; the scene server is killed after two scenes
    are committed: those stay readable, the rest are quarantined naming their objects, the run
    fails naming them; when the server is back, a rerun completes them."""
    from sitewatch import open_site
    from sitewatch.io import cube as cube_io

    from benchmarks.s3proxy import CountingProxy

    cube_srv, scene_srv = Moto().start(), Moto().start()
    try:
        upload(scene_srv, local_scenes)
        cube_srv.client().create_bucket(Bucket="cube-bkt")
        def route(path: str) -> str:
            if path.startswith(f"/{BUCKET}"):
                time.sleep(0.2)  # a slow scene server: ingests are still under way when it dies
                return scene_srv.endpoint
            return cube_srv.endpoint

        with CountingProxy(cube_srv.endpoint, route=route) as proxy:
            # one S3 endpoint for the process (as s3fs and GDAL see it), two servers behind it
            point_env_at(env, cube_srv)
            env.setenv("AWS_ENDPOINT_URL", proxy.url)
            # no GDAL block cache for the scenes: what validation read must be read again at ingest
            env.setenv("CPL_VSIL_CURL_NON_CACHED", f"/vsis3/{BUCKET}/")
            # one chunk per layer: analysis is not under test here, and moto answers slowly
            cfg = site_cfg(series, f"s3://{BUCKET}/scenes", "s3://cube-bkt/out", "serverdies", chunk_size=SPEC["width"])
            cube_url = cfg.to_site().cube_url
            killed = threading.Event()

            def killer():
                while not killed.is_set():
                    try:
                        if sum(sl.ingested for sl in cube_io.slots(cube_url)) >= 2:
                            scene_srv.stop()
                            killed.set()
                            return
                    except Exception:
                        pass
                    time.sleep(0.05)

            t = threading.Thread(target=killer, daemon=True)
            t.start()
            state, s = run(cfg)
            killed.set()
            t.join(5)
            assert scene_srv.proc.poll() is not None, "the scene server was never stopped"
            assert state.is_failed()
            done, lost = s["scenes_ingested"], [r["scene_id"] for r in s["scenes_rejected"]]
            assert len(done) >= 2 and len(lost) >= 1 and sorted(done + lost) == sorted(series.scene(i).scene_id for i in range(len(series)))
            assert all(sid in state.message for sid in lost)
            for r in s["scenes_rejected"]:
                assert r["object"].startswith(f"s3://{BUCKET}/scenes/{r['scene_id']}/"), r
            assert {q["scene_id"] for q in s["scenes_quarantined"]} == set(lost)
            # committed scenes stay readable and hold exactly their data; nothing partial shows
            ds = open_site(s["cube"])
            assert sorted(str(v) for v in ds.scene_id.values) == sorted(done)
            k = [str(v) for v in ds.scene_id.values].index(done[0])
            i0 = [series.scene(i).scene_id for i in range(len(series))].index(done[0])
            assert int(ds.nir.isel(time=k).values.astype("int64").sum()) == int(series.scene(i0).bands[3].astype("int64").sum())

            # the server is back (empty, as a restarted moto is): re-upload, rerun completes the rest
            scene_srv.start()
            upload(scene_srv, local_scenes)
            state2, s2 = run(cfg)
        assert state2.is_completed(), state2.message
        assert sorted(s2["scenes_ingested"]) == sorted(lost) and s2["scenes_quarantined"] == []
        assert open_site(s2["cube"]).sizes["time"] == len(series)
    finally:
        cube_srv.stop()
        scene_srv.stop()
