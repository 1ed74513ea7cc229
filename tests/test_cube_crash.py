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
CHUNK = 96
CAPACITY = 3  # the cube grows (to 6) while the writer runs: growth is inside the kill window
SPEC = dict(width=192, height=192, n_dates=12, seed=21)
N_SCENES = 4  # the writer takes the first 4 (2 x 2 chunks of 96 px each): a short run, so the kills are cheap


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from sitewatch.demo import write_synthetic_scenes
    from sitewatch.synthetic import SyntheticSpec, generate_series

    series = generate_series(SyntheticSpec(**SPEC))
    root = tmp_path_factory.mktemp("crash-scenes")
    write_synthetic_scenes(series, str(root))
    return str(root), series.grid


class WriterServer:
    """tests/cube_writer.py's fork server: imports once, then one forked writer process per run."""

    def __init__(self, tmp: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.tmp = tmp
        self.n = 0
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "cube_writer.py"), "serve"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._expect("ready")

    def _expect(self, word: str) -> list[str]:
        line = self.proc.stdout.readline().split()
        if not line or line[0] != word:
            self.proc.kill()
            pytest.fail(f"writer server: expected {word!r}, got {line!r}")
        return line[1:]

    def start(self, source: str, cube_url: str, grid) -> tuple[int, Path]:
        """Fork a writer; returns its pid and the file its output goes to."""
        self.n += 1
        out = self.tmp / f"writer-{self.n}.log"
        job = dict(source=source, cube_url=cube_url, grid=dataclasses.asdict(grid), chunk=CHUNK, capacity=CAPACITY,
                   n_scenes=N_SCENES, out=str(out))
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return int(self._expect("pid")[0]), out

    def wait(self, pid: int) -> int:
        """The writer's exit code (-9: killed)."""
        got_pid, code = self._expect("exit")
        if int(got_pid) != pid:
            pytest.fail(f"writer server: exit of {got_pid}, expected {pid}")
        return int(code)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


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
    server = WriterServer(tmp_path)
    # the reference: one uninterrupted run
    ref_url = str(tmp_path / "ref" / "cube.zarr")
    t0 = time.monotonic()
    pid, log = server.start(src, ref_url, grid)
    code = server.wait(pid)
    full = time.monotonic() - t0  # the writer's work (forked: no interpreter start-up)
    assert code == 0, log.read_text()[-3000:]
    reference = _contents(ref_url)
    print(f"uninterrupted writer run: {full:.1f} s")
    assert len(reference) == N_SCENES and all("change_score" in r for r in reference.values())

    rng = random.Random(7)
    cube_url, episode, kills, finished = None, 0, 0, 0
    seen_progress = {"allocated": 0, "committed": 0, "analysed": 0}
    while kills < KILLS:
        if cube_url is None:  # a fresh cube: kills also land in creation and first growth
            episode += 1
            cube_url = str(tmp_path / f"ep{episode}" / "cube.zarr")
            before: dict[str, dict[str, np.ndarray]] = {}
        pid, log = server.start(src, cube_url, grid)
        time.sleep(rng.uniform(0.0, full))
        try:
            os.kill(pid, signal.SIGKILL)  # a writer that has just finished is a zombie: no effect
        except ProcessLookupError:  # ... or already reaped by the server
            pass
        code = server.wait(pid)
        if code == -signal.SIGKILL:
            kills += 1
        elif code != 0:
            pytest.fail(f"writer failed (not killed) after {kills} kill(s): {log.read_text()[-3000:]}")
        for line in log.read_text().splitlines():
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
        if code == 0 or len(now) == N_SCENES and all("change_score" in v for v in now.values()):
            finished += 1
            cube_url = None
    print(f"{kills} kills in {episode} episode(s), {finished} finished; progress lines seen: {seen_progress}")
    # the kills fell into every phase of the writer's work
    assert all(n > 0 for n in seen_progress.values()), seen_progress
    # and a last rerun of an interrupted cube completes it to the reference
    if cube_url is not None:
        pid, log = server.start(src, cube_url, grid)
        assert server.wait(pid) == 0, log.read_text()[-3000:]
        final = _contents(cube_url)
        assert set(final) == set(reference)
        for sid in reference:
            _same(final[sid], reference[sid], f"final {sid}")
    server.close()
