"""Tune the index z-scores of the change score on the TUNING seeds 71-74 (never the scored 61-64).

    python -m benchmarks.change_tune_indices [--seeds 71 72 73 74] [--size 384] [--dates 18] [--quick]

The same series, perturbations, history (the 8 dates before each scored date, co-registered
state via ``change_baseline``) and scoring rules as ``benchmarks.change`` (method ``baseline``).
The baseline of each date is built once with every index; each configuration (which indices,
their weight, the combination, the per-index floors) re-scores the dates with ``change`` on it,
then hysteresis (seed, grow) is swept. Writes benchmarks/results/change-tuning-indices.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

import numpy as np
import xarray as xr

from ._metrics import fmt
from .change import OUT, REF_CLEAR, Score, _window, perturb

HYST = [(s, g) for s in (6.5, 7.0, 7.5, 8.0, 9.0) for g in (4.5, 5.0, 5.5, 6.0) if g <= s]
ALL = ("ndvi", "nbr", "brightness", "swir")


def configs():
    """(label, ChangeParams overrides, floor overrides {index: (floor_abs, floor_rel)})."""
    out = [("bands only", {"indices": ()}, {})]
    for w in (0.5, 1.0, 2.0):
        out.append((f"all4 rms w={w}", {"indices": ALL, "index_weight": w}, {}))
    out.append(("all4 max", {"indices": ALL, "index_combine": "max"}, {}))
    out.append(("ndvi+nbr", {"indices": ("ndvi", "nbr")}, {}))
    out.append(("brightness+swir", {"indices": ("brightness", "swir")}, {}))
    for n in ALL:
        out.append((n, {"indices": (n,)}, {}))
    for nd in (0.02, 0.08):
        out.append((f"all4 nd floor {nd}", {"indices": ALL}, {"ndvi": (nd, 0.0), "nbr": (nd, 0.0)}))
    for fa in (0.004, 0.016):
        out.append((f"all4 mean floor_abs {fa}", {"indices": ALL}, {"brightness": (fa, 0.03), "swir": (fa, 0.03)}))
    # second round, around the first round's best (ndvi or nbr alone at the default 7/5)
    out.append(("ndvi w=0.5", {"indices": ("ndvi",), "index_weight": 0.5}, {}))
    out.append(("ndvi w=2", {"indices": ("ndvi",), "index_weight": 2.0}, {}))
    out.append(("nbr w=2", {"indices": ("nbr",), "index_weight": 2.0}, {}))
    out.append(("ndvi+nbr w=0.5", {"indices": ("ndvi", "nbr"), "index_weight": 0.5}, {}))
    out.append(("ndvi+nbr nd floor 0.06", {"indices": ("ndvi", "nbr")}, {"ndvi": (0.06, 0.0), "nbr": (0.06, 0.0)}))
    out.append(("ndvi+nbr+swir", {"indices": ("ndvi", "nbr", "swir")}, {}))
    out.append(("all4 w=0.5 mean floor_abs 0.016", {"indices": ALL, "index_weight": 0.5}, {"brightness": (0.016, 0.03), "swir": (0.016, 0.03)}))
    return out


def prepare(seeds, size, dates):
    from sitewatch.kernels.change import ChangeParams, change_baseline
    from sitewatch.synthetic import BANDS, FIRST_EVENT_INDEX, SyntheticSpec, generate_series

    params = ChangeParams(indices=ALL)
    cases = []
    for seed in seeds:
        series = generate_series(SyntheticSpec(width=size, height=size, n_dates=dates, seed=seed))
        bands, clear = [], []
        for i in range(len(series)):
            sc = series.scene(i)
            b, v, _ = perturb(sc.bands, sc.valid, np.random.default_rng([seed, 6, i]))
            bands.append(b)
            clear.append(v & ~sc.cloud & ~sc.shadow)
        B, C = np.stack(bands), np.stack(clear)
        frac = C.reshape(len(series), -1).mean(1)
        for i in range(FIRST_EVENT_INDEX, len(series)):
            refs = [j for j in range(i) if frac[j] >= REF_CLEAR]
            if not refs or frac[i] == 0:
                continue
            j = refs[-1]
            use = C[i] & C[j]
            truth = [ev.mask(series.grid.shape) for ev in series.events if j < ev.date_index <= i]
            ignore = np.zeros(use.shape, bool)
            for ev in series.events:
                if j - _window() < ev.date_index <= j:
                    ignore |= ev.mask(series.grid.shape)
            h0 = max(0, i - _window())
            stack = xr.DataArray(B[h0:i], dims=("time", "band", "y", "x"), coords={"band": list(BANDS)})
            base = change_baseline(stack, xr.DataArray(C[h0:i], dims=("time", "y", "x")), params)
            scene = xr.Dataset({b: (("y", "x"), B[i][k]) for k, b in enumerate(BANDS)})
            cases.append((scene, xr.DataArray(C[i], dims=("y", "x")), base, truth, ignore, use))
        print(f"seed {seed}: {len(cases)} cases so far", flush=True)
    return cases


def evaluate(cases, overrides, floors):
    from sitewatch.kernels import indices as ix
    from sitewatch.kernels.change import ChangeParams, change
    from sitewatch.kernels.objects import hysteresis_np
    from sitewatch.synthetic import BANDS

    saved = dict(ix.INDEX_DEFS)
    try:
        for n, (fa, fr) in floors.items():
            ix.INDEX_DEFS[n] = replace(ix.INDEX_DEFS[n], floor_abs=fa, floor_rel=fr)
        params = replace(ChangeParams(), **overrides)
        scores = {c: Score() for c in HYST}
        for scene, clear, base, truth, ignore, use in cases:
            out, _ = change(scene, clear, base, list(BANDS), params)
            sc = out["change_score"].values
            for (s, g) in HYST:
                scores[(s, g)].add(hysteresis_np(sc, g, s), truth, ignore, use)
    finally:
        ix.INDEX_DEFS.clear()
        ix.INDEX_DEFS.update(saved)
    return {f"{s}/{g}": v.to_dict() for (s, g), v in scores.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[71, 72, 73, 74])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--dates", type=int, default=18)
    ap.add_argument("--only", nargs="*", help="configuration labels to run (default: all)")
    ap.add_argument("--name", default="change-tuning-indices", help="results file name under benchmarks/results/")
    a = ap.parse_args(argv)
    if set(a.seeds) & {61, 62, 63, 64}:
        raise SystemExit(f"seeds got {a.seeds!r}; expected tuning seeds, not the scored 61-64")
    t0, c0 = time.time(), time.process_time()
    load0 = os.getloadavg()[0]
    cases = prepare(a.seeds, a.size, a.dates)
    res = {}
    for label, ov, fl in configs():
        if a.only and label not in a.only:
            continue
        t = time.time()
        res[label] = evaluate(cases, ov, fl)
        best = max(res[label].items(), key=lambda kv: kv[1]["pixel"]["f1"])
        d7 = res[label]["7.0/5.0"]
        print(f"{label}: 7/5 F1 {fmt(d7['pixel']['f1'])} obj {d7['objects_correct']}/{d7['objects_correct'] + d7['objects_wrong']} "
              f"ev {d7['events_found']}/{d7['events']}; best F1 {best[0]} {fmt(best[1]['pixel']['f1'])} ({time.time() - t:.0f} s)", flush=True)
    meta = {"seeds": a.seeds, "size": a.size, "dates": a.dates, "wall_s": round(time.time() - t0), "cpu_s": round(time.process_time() - c0),
            "load_start": load0, "command": "python -m benchmarks.change_tune_indices " + " ".join(argv if argv is not None else sys.argv[1:]), "load_end": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps({"meta": meta, "results": res}, indent=1, default=float))
    L = ["# Index z-scores in the change score: tuning on seeds " + ", ".join(map(str, a.seeds)), "",
         f"{meta['date']}, {a.size} x {a.size} px, {a.dates} dates, {meta['wall_s']} s wall / {meta['cpu_s']} s CPU, load average "
         f"{load0:.1f} -> {meta['load_end']:.1f}. Command: `{meta['command']}`. Rows: configuration, "
         "hysteresis seed/grow; objects correct / all (object precision), events found / all (object recall).", "",
         "| configuration | seed/grow | pixel P | pixel R | pixel F1 | objects | object P | events | object R |", "|---|---|---|---|---|---|---|---|---|"]
    for label, rows in res.items():
        for k, d in rows.items():
            px = d["pixel"]
            L.append(f"| {label} | {k} | {fmt(px['precision'])} | {fmt(px['recall'])} | {fmt(px['f1'])} | "
                     f"{d['objects_correct']} / {d['objects_correct'] + d['objects_wrong']} | {fmt(d['object_precision'])} | "
                     f"{d['events_found']} / {d['events']} | {fmt(d['object_recall'])} |")
    (OUT / f"{a.name}.md").write_text("\n".join(L) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
