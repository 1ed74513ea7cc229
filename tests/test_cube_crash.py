"""Crash safety of the cube's commit protocol: a writer process (tests/cube_writer.py: the
library calls the monitor flow's tasks make) is killed with SIGKILL at random moments, at least
20 times. After every kill the store must open, hold every scene committed before the kill with
exactly its data, hold no scene twice and show nothing half-written; a rerun continues; the end
result equals an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sitewatch.io import cube as C

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KILLS = 22
CHUNK = 64
CAPACITY = 3  # the cube grows twice while the writer runs: growth is inside the kill window
SPEC = dict(width=192, height=192, n_dates=12, seed=21)
N_SCENES = 6  # the writer takes the first 6: a short run, so the kills are cheap


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from sitewatch.demo import write_synthetic_scenes
    from sitewatch.synthetic import SyntheticSpec, generate_series

    series = generate_series(SyntheticSpec(**SPEC))
    root = tmp_path_factory.mktemp("crash-scenes")
    write_synthetic_scenes(series, str(root))
    return str(root), series.grid


def _writer(source: str, cube_url: str, grid) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "cube_writer.py"), source, cube_url,
         json.dumps(dataclasses.asdict(grid)), str(CHUNK), str(CAPACITY), str(N_SCENES)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_ready(p: subprocess.Popen) -> None:
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        pytest.fail(f"writer did not start: {line!r} {p.stderr.read()[-3000:]}")


def _contents(cube_url: str) -> dict[str, dict[str, np.ndarray]]:
    """What a reader sees: per committed scene its bands, valid and (when analysed) derived layers."""
    try:
        ds = C.open_cube(cube_url).load()
    except C.CubeError as exc:
        # only before the first scene is committed: no cube yet, or its creation was cut short
        assert "no sitewatch cube" in str(exc) or "cut short" in str(exc), exc
        return {}
    ids = [str(v) for v in ds.scene_id.values]
    assert len(ids) == len(set(ids)), f"a scene twice: {ids}"
    out = {}
    for k, sid in enumerate(ids):
        sl = ds.isel(time=k)
        layers = {v: sl[v].values for v in ("red", "nir", "valid")}
        if bool(sl["analysed"]):
            layers |= {v: sl[v].values for v in ("cloud", "shadow", "change", "change_score")}
        out[sid] = layers
    return out


def _same(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], what: str) -> None:
    for v, a in got.items():
        np.testing.assert_array_equal(a, ref[v], err_msg=f"{what}: {v}")


def test_sigkill_at_random_moments_never_loses_or_corrupts_a_committed_scene(source, tmp_path):
    src, grid = source
    # the reference: one uninterrupted run
    ref_url = str(tmp_path / "ref" / "cube.zarr")
    p = _writer(src, ref_url, grid)
    _wait_ready(p)
    t0 = time.monotonic()
    out, err = p.communicate(timeout=600)
    full = time.monotonic() - t0  # the writer's work, without its start-up (imports)
    assert p.returncode == 0, err[-3000:]
    reference = _contents(ref_url)
    print(f"uninterrupted writer run: {full:.1f} s of work")
    assert len(reference) == N_SCENES and all("change_score" in r for r in reference.values())

    rng = random.Random(7)
    cube_url, episode, kills, finished = None, 0, 0, 0
    seen_progress = {"allocated": 0, "committed": 0, "analysed": 0}
    while kills < KILLS:
        if cube_url is None:  # a fresh cube: kills also land in creation and first growth
            episode += 1
            cube_url = str(tmp_path / f"ep{episode}" / "cube.zarr")
            before: dict[str, dict[str, np.ndarray]] = {}
        p = _writer(src, cube_url, grid)
        _wait_ready(p)  # kills land in the work, not in the interpreter's start-up
        time.sleep(rng.uniform(0.0, full))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        out, err = p.communicate(timeout=60)
        if p.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"writer failed (not killed) after {kills} kill(s): {err[-3000:]}")
        for line in out.splitlines():
            word = line.split(" ", 1)[0]
            if word in seen_progress:
                seen_progress[word] += 1
        now = _contents(cube_url)
        # every scene committed before the kill is still there, with the same data
        lost = set(before) - set(now)
        assert not lost, f"kill {kills}: committed scene(s) lost: {sorted(lost)}"
        for sid, layers in now.items():
            _same({v: a for v, a in layers.items() if v in ("red", "nir", "valid")}, reference[sid], f"kill {kills} {sid}")
            if "change_score" in layers:
                _same(layers, reference[sid], f"kill {kills} {sid} derived")
        before = now
        if p.returncode == 0 or len(now) == N_SCENES and all("change_score" in v for v in now.values()):
            finished += 1
            cube_url = None
    print(f"{kills} kills in {episode} episode(s), {finished} finished; progress lines seen: {seen_progress}")
    # the kills fell into every phase of the writer's work
    assert all(n > 0 for n in seen_progress.values()), seen_progress
    # and a last rerun of an interrupted cube completes it to the reference
    if cube_url is not None:
        p = _writer(src, cube_url, grid)
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        final = _contents(cube_url)
        assert set(final) == set(reference)
        for sid in reference:
            _same(final[sid], reference[sid], f"final {sid}")
