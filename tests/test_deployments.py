"""Deployments: per-site and per-group monitor deployments on a cron schedule, backfill
deployments over a date range (pydantic parameters -> the UI's form), prefect.yaml for
``prefect deploy``; the backfill runs the monitor flow on the scenes of its window only, holding
the site's run slot."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from flows.backfill import DateRange, backfill_site
from flows.deployments import backfill_deployments, deployments_for, group_deployments, parse_groups
from sitewatch.config import SiteConfig, load_sites

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "infra" / "sites.example.yaml"


def _schema(dep) -> dict:
    return dep._parameter_openapi_schema.model_dump()


def test_date_range_is_validated():
    w = DateRange(start="2026-01-05", end="2026-01-05")
    t0, t1 = w.bounds()
    assert t0 == dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
    assert t1.date() == dt.date(2026, 1, 5) and t1.hour == 23 and t1 > t0
    with pytest.raises(ValidationError, match="end 2026-01-01 before start 2026-02-01"):
        DateRange(start="2026-02-01", end="2026-01-01")
    with pytest.raises(ValidationError, match="start"):
        DateRange(start="2026-13-45", end="2026-01-01")
    with pytest.raises(ValidationError, match="extra"):
        DateRange(start="2026-01-01", end="2026-01-02", until="x")


def test_backfill_deployment_parameters_are_a_form_with_defaults():
    sites = load_sites(EXAMPLE)
    dep = backfill_deployments(sites[:1])[0]
    assert dep.name == "khmeimim-backfill" and not dep.schedules and dep.enforce_parameter_schema
    s = _schema(dep)
    assert s["required"] == ["site", "window"]
    rng = s["definitions"]["DateRange"]
    assert rng["required"] == ["start", "end"] and rng["properties"]["start"]["format"] == "date"
    site = s["definitions"]["SiteConfig"]["properties"]
    assert site["resolution"]["default"] == 10.0 and site["sensor"]["default"] == "generic"
    assert site["name"]["pattern"] == r"^[a-z0-9][a-z0-9_-]{0,62}$"
    assert dep.parameters["site"]["name"] == "khmeimim" and "window" not in dep.parameters
    # a bad window never reaches the flow body: Prefect validates parameters through the models
    with pytest.raises(Exception, match="before start"):
        backfill_site.validate_parameters({"site": dep.parameters["site"], "window": {"start": "2026-02-01", "end": "2026-01-01"}})


def test_group_and_site_deployments_are_scheduled():
    sites = load_sites(EXAMPLE)
    groups = parse_groups(["syria=khmeimim,tartus", "coast=tartus"], sites)
    deps = group_deployments(groups, cron="15 */3 * * *")
    assert [d.name for d in deps] == ["syria-scheduled", "coast-scheduled"]
    assert [x["name"] for x in deps[0].parameters["sites"]] == ["khmeimim", "tartus"]
    assert all(d.schedules[0].schedule.cron == "15 */3 * * *" for d in deps)
    assert all(d.concurrency_limit == 1 for d in deps)
    assert "SiteConfig" in _schema(deps[0])["definitions"]
    per_site = deployments_for(sites, cron="0 1 * * *")
    assert [d.name for d in per_site] == ["khmeimim-scheduled", "tartus-scheduled"]


@pytest.mark.parametrize("spec, msg", [
    ("syria", "expected NAME=SITE"), ("Syria=khmeimim", "expected NAME=SITE"), ("syria=", "expected NAME=SITE"),
    ("syria=khmeimim,nowhere", "unknown site"),
])
def test_bad_group_spec_is_named(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_groups([spec], load_sites(EXAMPLE))


def test_prefect_yaml_deployments_load_and_validate():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in doc["deployments"]}
    assert set(deps) == {"syria-scheduled", "khmeimim-backfill", "tartus-backfill"}
    for name, d in deps.items():
        flow = load_flow_from_entrypoint(d["entrypoint"], use_placeholder_flow=False)
        params = flow.validate_parameters(d["parameters"])  # through SiteConfig / DateRange
        assert d["work_pool"]["name"] == "sitewatch-process", name
        for s in d.get("schedules", []):
            CronSchedule(cron=s["cron"], timezone=s.get("timezone"))
        text = yaml.safe_dump(d).lower()
        assert "secret" not in text and "aws_" not in text, f"{name} carries credentials"
    assert deps["syria-scheduled"]["schedules"][0]["cron"] == "0 */6 * * *"
    sites = flow_sites = load_flow_from_entrypoint(deps["syria-scheduled"]["entrypoint"]).validate_parameters(
        deps["syria-scheduled"]["parameters"])["sites"]
    assert [s.name for s in flow_sites] == ["khmeimim", "tartus"] and isinstance(sites[0], SiteConfig)
    assert isinstance(params["window"], DateRange)


# ------------------------------------------------------------------ against a real Prefect server

@pytest.fixture(scope="module")
def short_series():
    from sitewatch.synthetic import SyntheticSpec, generate_series

    return generate_series(SyntheticSpec(width=192, height=192, n_dates=12, seed=11, cloudy_fraction=0.0))


@pytest.mark.slow
def test_a_run_waiting_too_long_for_the_site_slot_fails_naming_it(prefect_server, monkeypatch):
    """A stuck run holds the site's slot: the next run gives up after SITEWATCH_SITE_WAIT_SECONDS
    with an error naming the slot, instead of waiting without end; the slot is then free again."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from tasks.concurrency import ensure_site_limit, limit_name, site_concurrency

    @flow(name="slot-waiter")
    def waiter() -> str:
        with site_concurrency("stuck"):
            return "ran"

    name = ensure_site_limit("stuck")
    monkeypatch.setenv("SITEWATCH_SITE_WAIT_SECONDS", "2")
    with concurrency(name, occupy=1, strict=True):  # the stuck run
        t0 = time.monotonic()
        state = waiter(return_state=True)
        waited = time.monotonic() - t0
    assert state.is_failed() and waited < 60
    with pytest.raises(TimeoutError, match="site stuck: run slot sitewatch-site-stuck still held by another run after 2 s"):
        state.result()
    assert waiter() == "ran"  # released: the next run gets it at once
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(limit_name("stuck")).active_slots == 0


@pytest.mark.slow
def test_backfill_runs_the_window_only_and_holds_the_site_slot(tmp_path, prefect_server, short_series):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, LogFilter, LogFilterFlowRunId

    from sitewatch import open_site
    from sitewatch.demo import demo_site_config, write_synthetic_scenes
    from tasks.concurrency import limit_name

    write_synthetic_scenes(short_series, str(tmp_path / "scenes"))
    cfg = demo_site_config(short_series, str(tmp_path / "scenes"), str(tmp_path / "store"), name="backfilled", chunk_size=96)
    dates = [d.date() if hasattr(d, "date") else d for d in short_series.dates]

    # the deployment as the server stores it: the UI's form comes from parameter_openapi_schema
    dep = backfill_deployments([cfg])[0]
    dep_id = dep.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(dep_id)
        assert stored.parameter_openapi_schema["definitions"]["DateRange"]["required"] == ["start", "end"]
        assert stored.enforce_parameter_schema

    window = DateRange(start=dates[1], end=dates[3])
    state = backfill_site(cfg, window, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["window"] == [dates[1].isoformat(), dates[3].isoformat()]
    ds = open_site(summary["cube"])
    got = sorted(str(t)[:10] for t in ds.time.values)
    assert got == [d.isoformat() for d in dates[1:4]], got

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(limit_name("backfilled"))
        assert limit.limit == 1 and limit.active_slots == 0  # taken by the run, released at its end
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])))
        assert len(children) == 1
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[children[0].id])))
        assert any("run slot sitewatch-site-backfilled acquired" in lg.message for lg in logs)

    # an overlapping window adds only what is new: the scenes already in the cube are not ingested again
    state2 = backfill_site(cfg, DateRange(start=dates[2], end=dates[4]), return_state=True)
    assert state2.is_completed(), state2.message
    assert state2.result()["scenes_ingested"] == [short_series.scene_ids[4]]


@pytest.mark.slow
def test_prefect_deploy_registers_the_yaml_deployments(prefect_server, tmp_path):
    """``prefect deploy --all`` from the repository root, against a real server and work pool."""
    from prefect.client.orchestration import get_client

    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               SITEWATCH_HOME=str(ROOT), PREFECT_CLI_PROMPT="false")
    prefect = [sys.executable, "-m", "prefect"]
    r = subprocess.run(prefect + ["work-pool", "create", "sitewatch-process", "--type", "process", "--overwrite"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run(prefect + ["--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with get_client(sync_client=True) as client:
        group = client.read_deployment_by_name("monitor-sites/syria-scheduled")
        assert [s.schedule.cron for s in group.schedules] == ["0 */6 * * *"]
        assert [s["name"] for s in group.parameters["sites"]] == ["khmeimim", "tartus"]
        assert group.work_pool_name == "sitewatch-process"
        assert "SiteConfig" in group.parameter_openapi_schema["definitions"]
        bf = client.read_deployment_by_name("backfill-site/khmeimim-backfill")
        assert bf.parameters["window"] == {"start": "2026-01-01", "end": "2026-03-31"}
        assert "DateRange" in bf.parameter_openapi_schema["definitions"]
        assert bf.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)
