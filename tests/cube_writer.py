"""A cube writer for tests/test_cube_crash.py, killed with SIGKILL at random moments: find
scenes -> allocate slots -> write each scene -> commit it -> analyse each committed slot in time
order, exactly the library calls the monitor flow's tasks make.

    python tests/cube_writer.py serve

runs a fork server: it imports everything once (no threads started), prints ``ready``, then
for each JSON line on stdin ``{"source", "cube_url", "grid", "chunk", "capacity", "n_scenes",
"out"}`` forks a writer process (its output in the file ``out``), prints ``pid <pid>``, waits
for it and prints ``exit <pid> <code>`` (``-9`` when it was killed). Each writer is a real
process with its own memory; only the interpreter start-up and imports are shared, so the test
can afford many kills.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def main(source: str, cube_url: str, grid: dict, chunk: int, capacity: int, n_scenes: int) -> None:
    import dask

    from sitewatch.analysis import AnalysisParams, analyse_slot
    from sitewatch.grid import SiteGrid
    from sitewatch.io import cube as C
    from sitewatch.io import discovery
    from sitewatch.io import scenes as scene_io
    from sitewatch.synthetic import BANDS

    GRID = SiteGrid(**grid)
    C.CAPACITY = capacity  # small: growth happens inside the kill window too
    dask.config.set(scheduler="synchronous")
    refs, _ = discovery.find_scenes(source)
    refs = sorted(refs, key=lambda r: r.datetime)[:n_scenes]
    done = {s.scene_id for s in C.slots(cube_url) if s.ingested}
    new = [r for r in refs if r.scene_id not in done]
    for k in range(0, len(new), 2):  # two scenes per delivery: the cube grows while this runs
        batch = new[k: k + 2]
        slots = C.extend(cube_url, GRID, BANDS, [(r.scene_id, r.datetime) for r in batch], chunk=chunk)
        print("allocated", len(slots), flush=True)
        for r in batch:
            C.write_scene_slice(cube_url, slots[r.scene_id], scene_io.read_scene(r, GRID, BANDS, chunks=chunk))
            print("committed", r.scene_id, flush=True)
    for s in sorted((s for s in C.slots(cube_url) if s.ingested and not s.analysed), key=lambda s: s.time):
        analyse_slot(cube_url, s.index, GRID, BANDS, AnalysisParams(min_object_area_m2=400.0))
        print("analysed", s.scene_id, flush=True)
    print("done", flush=True)


def serve() -> None:
    # Import what the writers use before forking; no library here starts a thread on import
    # (OPENBLAS_NUM_THREADS=1 keeps numpy's BLAS from starting a pool), so forking is safe.
    import dask  # noqa: F401

    import sitewatch.analysis  # noqa: F401
    import sitewatch.io.discovery  # noqa: F401
    import sitewatch.io.scenes  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the writer
            code = 0
            try:
                fd = os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdout = os.fdopen(1, "w", buffering=1)
                sys.stderr = sys.stdout
                main(job["source"], job["cube_url"], job["grid"], job["chunk"], job["capacity"], job["n_scenes"])
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        print("pid", pid, flush=True)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print("exit", pid, code, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        raise SystemExit(__doc__)
    serve()
