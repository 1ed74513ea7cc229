"""infra/: the compose file parses, names the services infra/README.md documents, carries no
secret and has healthchecks; the Dockerfile copies files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from flows.dask_env import worker_environ_variable

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"


def _compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_compose_parses_and_names_the_documented_services():
    services = set(_compose()["services"])
    readme = (INFRA / "README.md").read_text()
    m = re.search(r"Services \(.*?\):\n(.*?)\.\n", readme, re.S)
    assert m, "infra/README.md lists no services"
    documented = set(re.findall(r"`([a-z0-9-]+)`", m.group(1)))
    assert documented == services, f"README names {sorted(documented)}, compose has {sorted(services)}"
    for needed in ("postgres", "prefect-server", "prefect-worker", "dask-scheduler", "dask-worker", "minio"):
        assert needed in services


def test_compose_services_are_wired_and_healthchecked():
    c = _compose()
    s = c["services"]
    for name, svc in s.items():
        if name != "minio-buckets":  # a one-shot job
            assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"
    assert "postgresql+asyncpg://" in s["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    env = s["prefect-worker"]["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["SITEWATCH_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
    # the workers see the same S3 settings (GDAL reads them there), and start as sitewatch starts its own
    assert s["dask-worker"]["environment"] == env | worker_environ_variable()
    assert "sitewatch-process" in s["prefect-worker"]["command"]
    assert s["prefect-worker"]["build"]["dockerfile"] == "infra/Dockerfile"
    assert s["dask-worker"]["command"][2] == "tcp://dask-scheduler:8786"


def test_compose_commits_no_secret():
    text = (INFRA / "docker-compose.yml").read_text()
    c = _compose()

    def walk(v, where):
        if isinstance(v, dict):
            for k, x in v.items():
                if re.search(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER", str(k)) and isinstance(x, str):
                    assert x.startswith("${") and ":?" in x, f"{where}.{k} = {x!r}: expected ${{VAR:?...}} from the environment"
                walk(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")

    walk(c["services"], "services")
    assert "${POSTGRES_PASSWORD:?" in text
    example = (INFRA / ".env.example").read_text()
    assert all(line.split("=", 1)[1] == "" for line in example.splitlines()
               if line and not line.startswith("#")), ".env.example must not hold values"
    assert "infra/.env" in (ROOT / ".gitignore").read_text()


def test_dockerfile_copies_files_that_exist():
    lines = (INFRA / "Dockerfile").read_text().splitlines()
    copies = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY ")]
    assert copies
    for srcs in copies:
        for src in srcs:
            assert (ROOT / src).exists(), f"Dockerfile copies {src!r}, which does not exist"
    assert any("requirements.lock" in ln for ln in lines) and any(ln.startswith("FROM python:3.11") for ln in lines)


def test_readme_kubernetes_notes_cover_work_pools_dask_and_secrets():
    readme = (INFRA / "README.md").read_text()
    for needed in ("work pool", "dask-kubernetes", "dask-gateway", "Secret", "SITEWATCH_DASK_ADDRESS"):
        assert needed in readme, needed
