"""The exploration notebook runs end to end on the cube and alert feed of a real monitor run.

Executes ``notebooks/explore_site.ipynb`` headless with nbclient (kernel ``python3``, working
directory ``notebooks/``) against the ``demo_run`` site, passing its cube and alerts folder
through ``SITEWATCH_CUBE`` / ``SITEWATCH_ALERTS``. Cells are found by their tags.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_site.ipynb"
KERNEL = "python3"


def _ensure_python3_kernel_is_this_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make kernel ``python3`` start ``sys.executable`` (the interpreter running the tests, which
    has sitewatch installed) and return its command line.

    jupyter_client replaces a kernelspec argv[0] of ``python``/``python3`` by ``sys.executable``,
    so the venv's own ``python3`` spec already does; if another ``python3`` spec wins (a user or
    system one pointing elsewhere), write one into a temporary folder put first on JUPYTER_PATH.
    """
    from jupyter_client.manager import KernelManager

    def cmd() -> list[str]:
        try:
            return KernelManager(kernel_name=KERNEL).format_kernel_cmd()
        except Exception:  # no such kernelspec
            return []

    found = cmd()
    if found and os.path.abspath(found[0]) == os.path.abspath(sys.executable):
        return found
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (sitewatch tests)", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH", "")]).rstrip(os.pathsep))
    found = cmd()
    assert found and os.path.abspath(found[0]) == os.path.abspath(sys.executable), (
        f"kernel {KERNEL!r} command got {found!r}; expected it to start {sys.executable!r}")
    return found


def _tagged(nb, tag: str):
    cells = [c for c in nb.cells if c.cell_type == "code" and tag in c.get("metadata", {}).get("tags", [])]
    assert cells, f"notebook has no code cell tagged {tag!r}"
    return cells


def _text(cell) -> str:
    """All text of a cell's outputs (streams, text/plain, text/html)."""
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        for mime in ("text/plain", "text/html"):
            v = o.get("data", {}).get(mime)
            if v:
                parts.append(v if isinstance(v, str) else "".join(v))
    return "\n".join(parts)


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == KERNEL
    stored = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"cells {stored} of {NOTEBOOK.name} have stored outputs; expected a cleared notebook"


@pytest.mark.slow
def test_explore_site_notebook_runs_on_demo_run(demo_run, tmp_path, monkeypatch):
    summary = demo_run.summary
    assert isinstance(summary, dict) and "cube" in summary, (
        f"monitor flow gave no usable summary (state {demo_run.state.type}: {demo_run.state.message}): {summary!r}")
    cube = summary["cube"]
    alerts_folder = str(Path(summary["alert_feed"]).parent)
    monkeypatch.setenv("SITEWATCH_CUBE", cube)
    monkeypatch.setenv("SITEWATCH_ALERTS", alerts_folder)
    _ensure_python3_kernel_is_this_interpreter(tmp_path, monkeypatch)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=600, startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"notebook cell failed:\n{exc}")

    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, f"error outputs in the executed notebook: {errors!r}"

    params = _text(_tagged(nb, "parameters")[0])
    assert cube in params and alerts_folder in params, f"parameters cell got {params!r}; expected the environment's URLs"

    ba = _tagged(nb, "before-after")
    assert any("image/png" in o.get("data", {}) for c in ba for o in c.outputs), "before/after cell showed no image"
    assert any("image/png" in o.get("data", {}) for c in _tagged(nb, "timeseries") for o in c.outputs), "time series cell showed no plot"

    ids = [a["id"] for a in summary.get("alerts", [])]
    alert_text = "\n".join(_text(c) for tag in ("alerts-map", "alerts-table") for c in _tagged(nb, tag))
    if ids:
        shown = [i for i in ids if i in alert_text]
        assert shown, f"alerts map/table output mentions none of the run's alert ids {ids[:5]!r}...: {alert_text[:500]!r}"

    end = _text(_tagged(nb, "summary")[-1])
    m = re.search(r"dates:\s+(\d+)", end)
    assert m and int(m.group(1)) == len(summary["scenes_ingested"]), (
        f"summary cell got {end!r}; expected {len(summary['scenes_ingested'])} dates")
    assert f"({summary['open_alerts']} open)" in end, f"summary cell got {end!r}; expected {summary['open_alerts']} open alerts"


def _execute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _ensure_python3_kernel_is_this_interpreter(tmp_path, monkeypatch)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600, startup_timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"notebook cell failed:\n{exc}")
    return nb


@pytest.mark.slow
def test_explore_site_notebook_reads_the_cube_on_s3(demo_run, tmp_path, monkeypatch, s3_server):
    """The same notebook on a copy of the run's site folder in a real S3 server (moto, own
    process): cube and alert feed read through s3:// URLs, endpoint and keys from the
    environment; the folium alert map is built offline (no tile is fetched)."""
    import boto3
    import s3fs

    summary = demo_run.summary
    assert isinstance(summary, dict) and "cube" in summary, f"monitor flow gave no usable summary: {summary!r}"
    site_folder = Path(summary["cube"]).parent
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="nb-cubes")
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    fs.put(str(site_folder), "nb-cubes/sites/", recursive=True)
    cube = f"s3://nb-cubes/sites/{site_folder.name}/cube.zarr"
    assert fs.exists(cube.removeprefix("s3://") + "/zarr.json")
    monkeypatch.setenv("SITEWATCH_CUBE", cube)
    monkeypatch.delenv("SITEWATCH_ALERTS", raising=False)  # default: <site folder>/alerts, on S3 too

    nb = _execute(tmp_path, monkeypatch)
    params = _text(_tagged(nb, "parameters")[0])
    assert cube in params and f"s3://nb-cubes/sites/{site_folder.name}/alerts" in params, params
    opened = _text(_tagged(nb, "open")[0])
    assert f"dates:      {len(summary['scenes_ingested'])} " in opened, opened
    end = _text(_tagged(nb, "summary")[-1])
    assert f"({summary['open_alerts']} open)" in end, end
    assert any("image/png" in o.get("data", {}) for c in _tagged(nb, "before-after") for o in c.outputs)
    fmap = _text(_tagged(nb, "folium")[0])
    assert "folium is not installed" not in fmap, "folium (notebooks extra) is not installed"
    ids = [a["id"] for a in summary.get("alerts", [])]
    if ids:
        assert any(i in fmap for i in ids), "folium map names none of the run's alerts"
