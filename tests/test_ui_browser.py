"""The real Prefect UI in a real browser: a monitor-site deployment is run (its flow run executed
by ``prefect flow-run execute``, what a process worker does), then headless Chromium (Debian's
chromium + chromium-driver, driven by Selenium) opens the session server's UI and must show the
flow run, its Completed state and the run's artifacts. Screenshots go to ``tests/artifacts/``.

Skipped, saying why, when chromium/chromedriver or selenium are not installed (``.ci/run``
installs them with apt-get where it can).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "tests" / "artifacts"


def _browser_paths() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip(f"headless Chromium not available (chromium: {chrome}, chromedriver: {driver}); "
                    "install Debian's chromium and chromium-driver (.ci/run does when it can)")
    return chrome, driver


@pytest.fixture()
def browser():
    chrome, driver_path = _browser_paths()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (test extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1000",
              "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _wait_text(drv, texts: list[str], timeout: float = 60) -> str:
    """Wait until the page's visible text holds every one of ``texts``; returns the text."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            body = drv.find_element(By.TAG_NAME, "body").text
        except Exception:
            body = ""
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    missing = [t for t in texts if t not in body]
    raise AssertionError(f"page {drv.current_url} never showed {missing!r}; it showed:\n{body[:1500]}")


def _shot(drv, tmp_path: Path, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    drv.save_screenshot(str(path))
    shutil.copy(path, tmp_path / path.name)
    return path


@pytest.fixture()
def ui_server(tmp_path):
    """A real ``prefect server start`` (UI included) on a free port, with its own database: the
    session fixture's test server (``prefect_test_harness``) runs with the UI turned off."""
    import socket
    import urllib.request

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api")  # where the browser's UI finds the API
    log = open(tmp_path / "prefect-server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2):
                    break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prefect server did not start: {(tmp_path / 'prefect-server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        with temporary_settings({PREFECT_API_URL: f"{url}/api"}):
            yield f"{url}/api"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_prefect_ui_shows_the_deployment_run_its_state_and_artifacts(tmp_path, browser, ui_server):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    prefect_server = ui_server

    from flows.deployments import deployments_for
    from sitewatch.demo import demo_site_config, write_synthetic_scenes
    from sitewatch.synthetic import SyntheticSpec, generate_series

    series = generate_series(SyntheticSpec(width=192, height=192, n_dates=12, seed=8, cloudy_fraction=0.0))
    write_synthetic_scenes(series, str(tmp_path / "scenes"))
    for sid in series.scene_ids[3:]:
        shutil.rmtree(tmp_path / "scenes" / sid)
    cfg = demo_site_config(series, str(tmp_path / "scenes"), str(tmp_path / "store"), name="uisite", chunk_size=96)
    dep = deployments_for([cfg], cron="0 4 * * *", name="ui")[0]
    dep.apply()

    # the deployment's run, executed as a process worker executes it
    run = run_deployment("monitor-site/uisite-ui", timeout=0)
    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               SITEWATCH_DASK_THREADS="2")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "flow-run", "execute", str(run.id)], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "execute.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    with get_client(sync_client=True) as client:
        while proc.poll() is None and not client.read_flow_run(run.id).state.is_final() and time.monotonic() - t0 < 600:
            time.sleep(1)
        print(f"flow run final after {time.monotonic() - t0:.1f} s")
        fr = client.read_flow_run(run.id)
        assert fr.state.is_completed(), f"{fr.state}: {(tmp_path / 'execute.log').read_text()[-3000:]}"
        arts = client.read_artifacts()
    mine = {a.key: a for a in arts if a.flow_run_id == run.id and a.key}
    assert {"sitewatch-uisite", "sitewatch-uisite-open-alerts"} <= set(mine), set(mine)
    report_id = mine["sitewatch-uisite"].id

    try:
        _look_at_the_ui(browser, tmp_path, prefect_server.removesuffix("/api"), run.id, fr.name, report_id,
                        [series.scene_ids[i] for i in range(3)])
    finally:  # the executing process exits on its own some time after the run is final
        try:
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _look_at_the_ui(browser, tmp_path: Path, ui: str, run_id, run_name: str, report_id, scene_ids: list[str]) -> None:
    browser.get(f"{ui}/runs/flow-run/{run_id}")
    # the flow's name loads after the run's own fields: wait for it too instead of reading early
    body = _wait_text(browser, [run_name, "Completed", "monitor-site"])
    assert "monitor-site" in body
    _shot(browser, tmp_path, "ui-flow-run")

    # the run's artifacts tab
    from selenium.webdriver.common.by import By

    tabs = browser.find_elements(By.XPATH, "//*[normalize-space(.)='Artifacts' and not(*[normalize-space(.)='Artifacts'])]")
    assert tabs, "flow run page has no Artifacts tab"
    browser.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", tabs[0])
    body = _wait_text(browser, ["sitewatch-uisite", "sitewatch-uisite-open-alerts"])
    assert "Artifacts" in browser.current_url or "artifact" in body.lower()
    _shot(browser, tmp_path, "ui-flow-run-artifacts")

    # the artifacts page lists them, and the markdown artifact renders the run report
    browser.get(f"{ui}/artifacts")
    _wait_text(browser, ["sitewatch-uisite", "sitewatch-uisite-open-alerts"])
    _shot(browser, tmp_path, "ui-artifacts")
    browser.get(f"{ui}/artifacts/key/sitewatch-uisite")
    _wait_text(browser, ["sitewatch-uisite", "sitewatch run for uisite", run_name])
    _shot(browser, tmp_path, "ui-artifact-versions")
    browser.get(f"{ui}/artifacts/artifact/{report_id}")  # the markdown report, rendered
    _wait_text(browser, ["sitewatch: uisite", "Scenes analysed", *scene_ids])
    path = _shot(browser, tmp_path, "ui-artifact-report")
    assert path.stat().st_size > 10_000
