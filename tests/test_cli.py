"""The ``sitewatch`` command: config errors (fast), the demo end to end and ``serve`` (slow,
real subprocesses against the session's Prefect server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _env(api_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["SITEWATCH_DASK_THREADS"] = "2"
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def test_run_with_bad_config_names_the_field(tmp_path, capsys):
    cfg = tmp_path / "sites.yaml"
    cfg.write_text("sites:\n  - name: base-1\n    bbox: [36.0, 35.4, 35.9, 35.5]\n    source: s\n    store: t\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "base-1" in err and "bbox" in err and str(cfg) in err


def test_run_with_missing_field_and_missing_file(tmp_path, capsys):
    cfg = tmp_path / "sites.yaml"
    cfg.write_text("sites:\n  - name: port\n    bbox: [35.8, 34.8, 35.9, 34.9]\n    store: t\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "port" in err and "source" in err
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such site config file" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the malloc settings are glibc's")
def test_the_command_starts_itself_again_once_with_the_malloc_settings(monkeypatch):
    from flows import cli
    from flows.dask_env import WORKER_MALLOC_ENV

    starts = []

    def execve(path, args, env):  # what os.execve would start instead of this process
        starts.append((path, args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(sys, "argv", ["sitewatch", "site", "scenes", "--help"])
    monkeypatch.setattr(cli, "main", lambda: 0)
    for k in [*WORKER_MALLOC_ENV, "SITEWATCH_KEEP_MALLOC"]:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit):
        cli.entry()
    (path, args, env), = starts
    assert path == sys.executable and args[1:] == ["-m", "flows.cli", "site", "scenes", "--help"]
    assert {k: env[k] for k in WORKER_MALLOC_ENV} == WORKER_MALLOC_ENV and env["SITEWATCH_KEEP_MALLOC"] == "1"
    for k, v in WORKER_MALLOC_ENV.items():  # started with them: runs, no second start
        monkeypatch.setenv(k, v)
    assert cli.entry() == 0 and len(starts) == 1
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("SITEWATCH_KEEP_MALLOC", "1")  # told to leave the process as it is
    assert cli.entry() == 0 and len(starts) == 1
    # for real: the command started again answers as itself
    env = {k: v for k, v in os.environ.items() if k not in WORKER_MALLOC_ENV and k != "SITEWATCH_KEEP_MALLOC"}
    r = subprocess.run([sys.executable, "-m", "flows.cli", "site", "scenes", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: sitewatch site" in r.stdout and "scenes" in r.stdout, r.stdout + r.stderr


def test_shipped_example_config_is_valid():
    from sitewatch.config import load_sites

    sites = load_sites(ROOT / "infra" / "sites.example.yaml")
    assert [s.name for s in sites] == ["khmeimim", "tartus"]
    g = sites[0].to_site().grid
    assert g.crs == "EPSG:32636" and 300 < g.width < 1000


@pytest.mark.slow
def test_demo_command_end_to_end_and_rerun(tmp_path, prefect_server):
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "flows.cli", "demo", "--workdir", str(work), "--size", "192", "--dates", "12", "--seed", "3"]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(prefect_server), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "scenes ingested: 12" in r.stdout and "alert feed:" in r.stdout
    assert "scene 12/12 ready" in r.stderr  # progress is shown while it works
    s = json.loads((work / "summary.json").read_text())
    for key in ("scenes_ingested", "alerts", "cube", "alert_feed"):
        assert key in s
    assert len(s["scenes_ingested"]) == 12 and Path(s["cube"]).is_dir() and Path(s["alert_feed"]).is_file()
    assert (work / "truth.json").is_file()
    r2 = subprocess.run(cmd, cwd=ROOT, env=_env(prefect_server), capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    s2 = json.loads((work / "summary.json").read_text())
    assert s2["scenes_ingested"] == [] and s2["new_alert_ids"] == [] and s2["alerts"] == []
    assert "no new scenes" in r2.stdout


@pytest.mark.slow
def test_serve_creates_scheduled_deployment_and_runs_ad_hoc(tmp_path, prefect_server, small_series, sites_yaml):
    """``sitewatch serve`` registers a cron deployment per site; an ad-hoc run of it (what the
    UI's 'Run' button does) executes in the serving process and writes the cube."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from sitewatch.demo import write_synthetic_scenes

    source = tmp_path / "scenes"
    write_synthetic_scenes(small_series, str(source))
    cfg = sites_yaml("served", small_series, source, tmp_path / "store", chunk_size=128)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--config", str(cfg), "--cron", "0 3 * * *"],
        cwd=ROOT, env=_env(prefect_server), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        name = "monitor-site/served-scheduled"
        deadline = time.time() + 180
        dep = None
        with get_client(sync_client=True) as client:
            while time.time() < deadline and dep is None:
                if proc.poll() is not None:
                    pytest.fail(f"serve exited early: {proc.stdout.read()[-3000:]}")
                try:
                    dep = client.read_deployment_by_name(name)
                except Exception:
                    time.sleep(1)
        assert dep is not None, "deployment never appeared"
        crons = [getattr(s.schedule, "cron", None) for s in dep.schedules]
        assert "0 3 * * *" in crons
        assert dep.parameters["site"]["name"] == "served"
        run = run_deployment(name, timeout=600)
        assert run.state.is_completed(), run.state
        assert (tmp_path / "store" / "served" / "cube.zarr" / "zarr.json").is_file()
        assert (tmp_path / "store" / "served" / "alerts" / "alerts.geojson").is_file()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------- sitewatch alerts (fast: a feed written by the library)

def _alert_site(tmp_path) -> tuple[Path, list]:
    from sitewatch import publish
    from sitewatch.alerts import merge
    from sitewatch.analysis import Detection

    def det(scene, date, bbox, direction="brighter"):
        r0, c0, r1, c1 = bbox
        return Detection(scene_id=scene, time=f"{date}T08:30:00Z", area_m2=4900.0, lon=35.95, lat=35.4, row=(r0 + r1) / 2,
                         col=(c0 + c1) / 2, bbox_pixels=bbox, score_mean=8.0, score_max=12.0, direction=direction,
                         delta_brightness=0.1, polygon={"type": "Polygon", "coordinates": [[[35.95, 35.4], [35.951, 35.4], [35.951, 35.401], [35.95, 35.4]]]})

    dets = [det(f"S{k}", f"2026-03-{1 + 2 * k:02d}", (100, 150, 107, 157)) for k in range(3)] + [det("T1", "2026-04-20", (10, 10, 20, 20), "darker")]
    alerts, _, _ = merge("port", [], dets)
    store = tmp_path / "store"
    publish.write_feed(str(store / "port" / "alerts"), "port", alerts)
    cfg = tmp_path / "sites.yaml"
    cfg.write_text(f"sites:\n  - name: port\n    bbox: [35.8, 34.8, 35.9, 34.9]\n    source: {tmp_path / 'scenes'}\n    store: {store}\n"
                   f"  - name: other\n    bbox: [35.8, 34.8, 35.9, 34.9]\n    source: s\n    store: {store}\n")
    return cfg, alerts


def test_alerts_list_filters_and_json(tmp_path, capsys):
    cfg, alerts = _alert_site(tmp_path)
    assert main(["alerts", "--config", str(cfg), "--site", "port"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 alert(s) at site port" in out and all(a.id in out for a in alerts)
    assert main(["alerts", "list", "--config", str(cfg), "--site", "port", "--status", "confirmed", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [f["id"] for f in got] == [alerts[0].id] and got[0]["properties"]["status"] == "confirmed"
    assert main(["alerts", "--config", str(cfg), "--site", "port", "--since", "2026-04-01", "--json"]) == 0
    assert [f["id"] for f in json.loads(capsys.readouterr().out)] == [alerts[1].id]
    assert main(["alerts", "--config", str(cfg), "--site", "port", "--until", "2026-03-31", "--json"]) == 0
    assert [f["id"] for f in json.loads(capsys.readouterr().out)] == [alerts[0].id]
    # a site without a feed yet: no alerts
    assert main(["alerts", "--config", str(cfg), "--site", "other"]) == 0
    assert "0 of 0 alert(s)" in capsys.readouterr().out


def test_alerts_ack_and_close(tmp_path, capsys):
    from sitewatch import publish
    from sitewatch.alerts import merge

    cfg, alerts = _alert_site(tmp_path)
    root = str(tmp_path / "store" / "port" / "alerts")
    aid = alerts[0].id
    assert main(["alerts", "ack", aid, "--config", str(cfg), "--site", "port", "--by", "ana", "--note", "checked"]) == 0
    assert f"alert {aid}: confirmed -> acknowledged" in capsys.readouterr().out
    a = next(x for x in publish.read_feed(root) if x.id == aid)
    assert a.status == "acknowledged" and a.history[-1]["by"] == "ana" and a.history[-1]["note"] == "checked"
    # stored as an action too: a merge from the feed as it was before (a flow running meanwhile) applies it
    acts = publish.read_actions(root)
    assert len(acts) == 1 and merge("port", alerts, [], actions=acts)[0][0].status == "acknowledged"
    assert main(["alerts", "close", aid, "--config", str(cfg), "--site", "port"]) == 0
    assert next(x for x in publish.read_feed(root) if x.id == aid).status == "closed"
    capsys.readouterr()
    assert main(["alerts", "close", aid, "--config", str(cfg), "--site", "port"]) == 1
    assert "already closed" in capsys.readouterr().err
    assert main(["alerts", "--config", str(cfg), "--site", "port", "--status", "closed", "--json"]) == 0
    assert [f["id"] for f in json.loads(capsys.readouterr().out)] == [aid]


@pytest.mark.parametrize("argv, code, words", [
    (["alerts", "ack", "port-20990101-r00001c00001", "--site", "port"], 1, ["no alert 'port-20990101-r00001c00001'"]),
    (["alerts", "ack", "--site", "port"], 2, ["needs an alert id"]),
    (["alerts", "list", "X", "--site", "port"], 2, ["takes no alert id"]),
    (["alerts", "--site", "port", "--since", "yesterday"], 2, ["--since got 'yesterday'"]),
    (["alerts", "--site", "nope"], 2, ["no site named 'nope'"]),
    (["alerts"], 2, ["2 sites", "--site"]),
])
def test_alerts_bad_usage_and_not_found(tmp_path, capsys, argv, code, words):
    cfg, _ = _alert_site(tmp_path)
    assert main(argv + ["--config", str(cfg)]) == code
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)


def test_alerts_argparse_errors_exit_2(tmp_path, capsys):
    cfg, _ = _alert_site(tmp_path)
    for argv in (["alerts", "delete", "X", "--config", str(cfg)], ["alerts", "--config", str(cfg), "--status", "opne"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


# ---------------------------------------------------------------- help text and exit codes

COMMANDS = ["demo", "run", "serve", "stack", "alerts"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_with_exit_codes(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sitewatch {cmd}")
    assert "exit codes: 0 ok; 1 a run failed" in out and "2 usage or configuration error" in out
    # a description under the usage line, and help on every option (from the parser main() builds)
    assert out.splitlines()[0] != "" and out.split("\n\n")[1].strip(), out
    import argparse

    built = []
    orig = argparse.ArgumentParser.parse_args

    def spy(self, *a, **kw):
        built.append(self)
        return orig(self, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", spy)
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
    capsys.readouterr()
    sub = next(a for a in built[-1]._actions if isinstance(a, argparse._SubParsersAction)).choices[cmd]
    assert sub.description
    missing = [a.option_strings or a.dest for a in sub._actions if not a.help]
    assert not missing, f"'sitewatch {cmd}' options without help: {missing}"


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd in out
    assert "exit codes" in out


@pytest.mark.parametrize("argv", [[], ["nosuchcommand"], ["run"], ["run", "--config"], ["stack", "sideways"],
                                  ["demo", "--workdir", "x", "--size", "big"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage: sitewatch" in capsys.readouterr().err


def test_bad_group_and_unknown_site_exit_2(tmp_path, capsys):
    cfg = ROOT / "infra" / "sites.example.yaml"
    assert main(["serve", "--config", str(cfg), "--group", "syria=khmeimim,nowhere"]) == 2
    assert "unknown site(s) ['nowhere']" in capsys.readouterr().err
    assert main(["run", "--config", str(cfg), "--site", "nowhere"]) == 2
    assert "no site named" in capsys.readouterr().err


@pytest.mark.slow
def test_failed_run_exits_1(tmp_path, prefect_server, small_series, sites_yaml):
    """A site whose scenes cannot be used: the flow ends Failed, the command exits 1 and says why."""
    from sitewatch.demo import write_synthetic_scenes

    source = tmp_path / "scenes"
    write_synthetic_scenes(small_series, str(source))
    sid = small_series.scene_ids[0]
    for tif in (source / sid).glob("*.tif"):
        tif.write_bytes(b"not a tiff")  # every scene of the first date is corrupt
    for other in small_series.scene_ids[2:]:
        import shutil

        shutil.rmtree(source / other)
    cfg = sites_yaml("failing", small_series, source, tmp_path / "store", chunk_size=128)
    r = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", str(cfg)], cwd=ROOT,
                       env=_env(prefect_server), capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"REJECTED {sid}" in r.stdout


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise(capsys):
    import io

    from flows.cli import progress_reporter

    term = io.StringIO()
    with progress_reporter("writing scenes", lambda k, n, name: f"scene {k}/{n} {name}", stream=term, tty=True) as tick:
        for k in range(1, 6):
            tick(k, 5, f"s{k}")
    out = term.getvalue()
    assert "writing scenes" in out and "5/5" in out and "\x1b[" in out  # a live (ANSI) bar, completed
    with progress_reporter("writing scenes", lambda k, n, name: f"scene {k}/{n} {name}", stream=io.StringIO(), tty=False) as tick:
        for k in range(1, 3):
            tick(k, 2, f"s{k}")
    err = capsys.readouterr().err
    assert "scene 1/2 s1" in err and "scene 2/2 s2" in err


# ---------------------------------------------------------------- sitewatch site scenes (fast: a tiny cube written by the library)

def _scenes_site(tmp_path) -> Path:
    """A config with two sites; site 'port' has a cube with four slots: analysed with cloud,
    analysed but not observed (NaN cloud), ingested only, allocated only; 'other' has no cube."""
    import datetime as dt

    import numpy as np
    import xarray as xr

    from sitewatch.grid import SiteGrid
    from sitewatch.io import cube as C

    store = tmp_path / "store"
    grid = SiteGrid(crs="EPSG:32636", x0=760000.0, y0=3920000.0, resolution=10.0, width=40, height=30)
    url = str(store / "port" / "cube.zarr")
    t = [dt.datetime(2026, 3, d, 8, 30, tzinfo=dt.timezone.utc) for d in (1, 5, 9, 13)]
    idx = C.extend(url, grid, ("red", "nir"), [("S-0309", t[2]), ("S-0301", t[0]), ("S-0313", t[3]), ("S-0305", t[1])], chunk=64)
    for k, sid in enumerate(("S-0301", "S-0305", "S-0309")):
        valid = np.ones(grid.shape, bool)
        valid[: 3 * k] = False  # valid fractions 1.0, 0.9, 0.8 (30 rows)
        data = {b: (("y", "x"), np.full(grid.shape, 500 + k, np.uint16)) for b in ("red", "nir")}
        C.write_scene_slice(url, idx[sid], xr.Dataset({**data, "valid": (("y", "x"), valid)}, coords=grid.coords()))
    C.commit(url, {idx["S-0301"]: {"cloud_fraction": 0.25, "analysed": True},
                   idx["S-0305"]: {"cloud_fraction": float("nan"), "analysed": True}})
    cfg = tmp_path / "sites.yaml"
    cfg.write_text(f"sites:\n  - name: port\n    bbox: [35.8, 34.8, 35.9, 34.9]\n    source: {tmp_path / 'scenes'}\n    store: {store}\n"
                   f"  - name: other\n    bbox: [35.8, 34.8, 35.9, 34.9]\n    source: s\n    store: {store}\n")
    return cfg


def test_site_scenes_table_and_json(tmp_path, capsys):
    cfg = _scenes_site(tmp_path)
    assert main(["site", "scenes", "--config", str(cfg), "--site", "port"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 scene(s) in the cube of site port" in out
    lines = [ln for ln in out.splitlines() if "S-03" in ln]
    assert [ln.split()[1] for ln in lines] == ["S-0301", "S-0305", "S-0309", "S-0313"]  # time order, not slot order
    assert lines[0].split()[0] == "2026-03-01T08:30:00Z" and "25.0%" in lines[0] and "100.0%" in lines[0]
    assert "not observed" in lines[1] and "90.0%" in lines[1]
    assert lines[0].split()[-2:] == ["yes", "yes"] and lines[2].split()[-2:] == ["yes", "no"]
    assert lines[3].split()[-2:] == ["no", "no"] and "not observed" in lines[3]
    assert main(["site", "scenes", "--config", str(cfg), "--site", "port", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["scene_id"] for r in got] == ["S-0301", "S-0305", "S-0309", "S-0313"]
    assert got[0]["cloud_fraction"] == 0.25 and got[1]["cloud_fraction"] is None and got[3]["valid_fraction"] is None
    assert got[2]["valid_fraction"] == pytest.approx(0.8) and (got[2]["ingested"], got[2]["analysed"]) == (True, False)
    assert got[0]["time"] == "2026-03-01T08:30:00Z" and all(r["sensor"] for r in got)


def test_site_scenes_since_until(tmp_path, capsys):
    cfg = _scenes_site(tmp_path)
    assert main(["site", "scenes", "--config", str(cfg), "--site", "port", "--since", "2026-03-05", "--until",
                 "2026-03-09", "--json"]) == 0
    assert [r["scene_id"] for r in json.loads(capsys.readouterr().out)] == ["S-0305", "S-0309"]
    assert main(["site", "scenes", "--config", str(cfg), "--site", "port", "--since", "2027-01-01"]) == 0
    out = capsys.readouterr().out
    assert "0 of 4 scene(s)" in out and "S-03" not in out


@pytest.mark.parametrize("argv, code, words", [
    (["--site", "other"], 1, ["site other has no cube yet", "sitewatch run"]),
    (["--site", "nope"], 2, ["no site named 'nope'"]),
    ([], 2, ["2 sites", "--site"]),
    (["--site", "port", "--until", "March"], 2, ["--until got 'March'"]),
])
def test_site_scenes_errors(tmp_path, capsys, argv, code, words):
    cfg = _scenes_site(tmp_path)
    assert main(["site", "scenes", "--config", str(cfg)] + argv) == code
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)


def test_site_scenes_unreadable_store_and_bad_config(tmp_path, capsys):
    cfg = _scenes_site(tmp_path)
    (tmp_path / "store" / "port" / "cube.zarr" / "zarr.json").write_text("{not json")
    assert main(["site", "scenes", "--config", str(cfg), "--site", "port"]) == 1
    assert "unreadable" in capsys.readouterr().err
    assert main(["site", "scenes", "--config", str(tmp_path / "nope.yaml")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["site", "frobnicate", "--config", str(cfg)])
    assert e.value.code == 2


def test_site_help_has_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["site", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sitewatch site") and "scenes" in out and "--since" in out and "--json" in out
    assert "exit codes: 0 ok; 1 failure (the site has no cube yet" in out and "2 usage or configuration error" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "site" in capsys.readouterr().out
