"""Shared set-up for the benchmarks: a synthetic site written as COG + STAC and ingested into a
cube with the library (no Prefect), so stages can be timed one by one."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sitewatch.analysis import AnalysisParams, SlotResult, analyse_slot
from sitewatch.demo import write_synthetic_scenes
from sitewatch.io import cube as cube_io
from sitewatch.io import discovery
from sitewatch.io import scenes as scene_io
from sitewatch.synthetic import BANDS, SyntheticSeries, SyntheticSpec, generate_series


@dataclass
class Timings:
    write_scenes: float = 0.0
    ingest: list[float] = field(default_factory=list)
    analyse: list[float] = field(default_factory=list)


def build(workdir: str, spec: SyntheticSpec, chunk: int = 512, params: AnalysisParams = AnalysisParams()) -> tuple[SyntheticSeries, str, list[SlotResult], Timings]:
    series = generate_series(spec)
    tm = Timings()
    t = time.perf_counter()
    source = f"{workdir}/scenes"
    write_synthetic_scenes(series, source)
    tm.write_scenes = time.perf_counter() - t
    refs, problems = discovery.find_scenes(source)
    if problems:
        raise RuntimeError(problems)
    cube = f"{workdir}/cube.zarr"
    slots = cube_io.extend(cube, series.grid, BANDS, [(r.scene_id, r.datetime) for r in refs], chunk=chunk)
    for r in refs:
        t = time.perf_counter()
        cube_io.write_scene_slice(cube, slots[r.scene_id], scene_io.read_scene(r, series.grid, BANDS, chunk))
        tm.ingest.append(time.perf_counter() - t)
    results = []
    for r in refs:
        t = time.perf_counter()
        results.append(analyse_slot(cube, slots[r.scene_id], series.grid, BANDS, params))
        tm.analyse.append(time.perf_counter() - t)
    return series, cube, results, tm
