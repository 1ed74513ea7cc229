"""A cube writer run as its own process by tests/test_cube_crash.py (and killed with SIGKILL
at random moments): find scenes -> allocate slots -> write and commit each scene -> analyse
each committed slot in time order, exactly the library calls the monitor flow's tasks make.

    python tests/cube_writer.py SOURCE CUBE_URL GRID_JSON CHUNK CAPACITY N_SCENES
"""

from __future__ import annotations

import sys


def main(source: str, cube_url: str, grid_json: str, chunk: int, capacity: int, n_scenes: int) -> None:
    import json

    import dask

    from sitewatch.analysis import AnalysisParams, analyse_slot
    from sitewatch.io import cube as C
    from sitewatch.io import discovery
    from sitewatch.io import scenes as scene_io
    from sitewatch.synthetic import BANDS
    from sitewatch.grid import SiteGrid

    GRID = SiteGrid(**json.loads(grid_json))
    C.CAPACITY = capacity  # small: growth happens inside the kill window too
    dask.config.set(scheduler="synchronous")
    print("ready", flush=True)  # imports done: the test's kill window starts here
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
