"""Seasonal baseline window: what the ring's ``day`` array and the in-season selection cost, and
what a seasonal baseline changes on synthetic crops with a yearly phenology.

    python -m benchmarks.season [--size 1024] [--window 30] [--before 5677d08] [--repeat 3]
                                [--quality] [--q-size 256] [--q-dates 60] [--seeds 81 82]

**Kernels** (numpy, one thread, CPU seconds of this process, best of ``--repeat``): a full ring of
``--window`` observations x 6 bands on ``--size``^2 px, dates every 5 days over the last
``5 * window`` days: ``state_baseline_np`` last-N and seasonal (+-30 days), ``slot_use_np`` (the
selection alone) and ``fold_np`` of one scene; with ``--before REV`` the same calls of
``sitewatch/kernels/baseline_ring.py`` at git revision REV (no ``day`` array) for comparison.

**Quality** (``--quality``): synthetic series (``sitewatch.synthetic``, 10-day revisit, seeds not
used by the tests), perturbed as benchmarks/change.py does (misregistration, haze, gain/offset),
clear masks from the generator's truth; dates analysed in order as the analysis does them
(baseline of the date from the state, co-registration fit, ``change``, then the registered fold
of the date). Methods: the default (last 8 clear observations) and seasonal baselines. Scored on
dates >= 5: the truth is the footprints of events starting since the previous date with >= 50 %
clear; footprints of every earlier event are left out (a seasonal baseline keeps reporting an
old change until its season holds post-change views; counted apart as "old-event pixels
flagged"). False alarms on crop parcels (whose reflectance follows the phenology) are counted
apart.

Writes benchmarks/results/season.md and season.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def _cpu(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        c0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - c0)
    return best, out


def _module_at(rev: str):
    """``sitewatch/kernels/baseline_ring.py`` as it was at ``rev`` (numba caching off)."""
    src = subprocess.run(["git", "show", f"{rev}:sitewatch/kernels/baseline_ring.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.replace("cache=True", "cache=False")
    spec = importlib.util.spec_from_loader("sitewatch.kernels._baseline_ring_before", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "sitewatch.kernels"
    exec(compile(src, f"baseline_ring.py@{rev}", "exec"), mod.__dict__)
    return mod


def kernels(size: int, window: int, repeat: int, before: str | None) -> dict:
    from sitewatch.kernels import baseline_ring as ring_mod
    from sitewatch.kernels.season import epoch_day

    nb = 6
    rng = np.random.default_rng(0)
    ring = rng.integers(1, 6000, (size, size, window, nb), dtype=np.uint16)
    n_obs = np.full((size, size), window + 3, np.uint32)
    today = epoch_day("2026-07-01")
    day = np.ascontiguousarray(np.broadcast_to((today - 5 * (1 + np.arange(window)))[::-1].astype(np.uint16), (size, size, window)))
    values = rng.integers(1, 6000, (size, size, nb), dtype=np.uint16)
    clear = rng.random((size, size)) < 0.7
    ring_mod.state_baseline_np(ring[:2, :2], n_obs[:2, :2], day[:2, :2], today, 30)  # compile
    ring_mod.fold_np(ring[:2, :2], n_obs[:2, :2], day[:2, :2], values[:2, :2], clear[:2, :2], today)
    out: dict = {"size": size, "window": window, "bands": nb,
                 "bytes": {"ring": ring.nbytes, "day": day.nbytes, "n_obs": n_obs.nbytes}}
    t, res = _cpu(lambda: ring_mod.state_baseline_np(ring, n_obs, day), repeat)
    out["state_baseline_last_n_s"] = t
    t, sres = _cpu(lambda: ring_mod.state_baseline_np(ring, n_obs, day, today, 30), repeat)
    out["state_baseline_seasonal_s"] = t
    out["seasonal_mean_count"] = float(sres[2].mean())
    out["slot_use_seasonal_s"], _ = _cpu(lambda: ring_mod.slot_use_np(day, n_obs, today, 30), repeat)
    out["slot_use_last_n_s"], _ = _cpu(lambda: ring_mod.slot_use_np(day, n_obs), repeat)
    out["fold_s"], _ = _cpu(lambda: ring_mod.fold_np(ring, n_obs, day, values, clear, today), repeat)
    if before:
        old = _module_at(before)
        old.state_baseline_np(ring[:2, :2], n_obs[:2, :2])
        old.fold_np(ring[:2, :2], n_obs[:2, :2], values[:2, :2], clear[:2, :2])
        t, ores = _cpu(lambda: old.state_baseline_np(ring, n_obs), repeat)
        out["before"] = {"rev": before, "state_baseline_s": t, "fold_s": _cpu(lambda: old.fold_np(ring, n_obs, values, clear), repeat)[0]}
        out["before"]["identical_last_n"] = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(res, ores))
    return out


def quality(seeds: list[int], size: int, dates: int, modes: dict) -> dict:
    import xarray as xr

    from benchmarks._metrics import Counts
    from benchmarks.change import perturb
    from sitewatch.kernels.baseline_ring import empty_state, state_baseline
    from sitewatch.kernels.change import ChangeParams, change
    from sitewatch.kernels.register import comparable, fit_registration, fold_registered
    from sitewatch.synthetic import BANDS, FIRST_EVENT_INDEX, LandCover, SyntheticSpec, generate_series

    params = ChangeParams()
    res: dict = {}
    for name, bp in modes.items():
        px, crop_fp, old_flag, second = Counts(), 0, 0, Counts()
        notc, per_date = 0, []
        for seed in seeds:
            series = generate_series(SyntheticSpec(width=size, height=size, n_dates=dates, seed=seed))
            crop = series.land_cover == LandCover.CROP
            start = series.scene(0).datetime
            state = empty_state(xr.DataArray(np.zeros((size, size), bool), dims=("y", "x")), list(BANDS), bp).load()
            seen, fracs = 0, []
            for i in range(len(series)):
                sc = series.scene(i)
                b, v, _ = perturb(sc.bands, sc.valid, np.random.default_rng([seed, 6, i]))
                clear = v & ~sc.cloud & ~sc.shadow
                fracs.append(clear.mean())
                when = np.datetime64(sc.datetime.replace(tzinfo=None), "s")
                x = xr.DataArray(b, dims=("band", "y", "x"), coords={"band": list(BANDS)})
                c = xr.DataArray(clear, dims=("y", "x"))
                k = max(1, min(params.min_obs, seen))
                reg = None
                if seen:
                    base = state_baseline(state, when, bp.season_days, params.indices)
                    reg = fit_registration(x, base["median"], c & (base["count"] >= k))
                    refs = [j for j in range(i) if fracs[j] >= 0.5]
                    if i >= FIRST_EVENT_INDEX and refs and clear.any():
                        if not comparable(reg, params.max_gain_ratio):
                            notc += 1
                        else:
                            ds = xr.Dataset({bn: (("y", "x"), b[q]) for q, bn in enumerate(BANDS)})
                            out, _ = change(ds, c, base, list(BANDS), params, registration=reg)
                            pred = out["change"].values.astype(bool)
                            j = refs[-1]
                            truth = np.zeros(clear.shape, bool)
                            old = np.zeros(clear.shape, bool)
                            for ev in series.events:
                                if j < ev.date_index <= i:
                                    truth |= ev.mask(series.grid.shape)
                                elif ev.date_index <= j:
                                    old |= ev.mask(series.grid.shape)
                            region = clear & ~(old & ~truth)
                            px.add(pred & region, truth, region)
                            d = Counts().add(pred & region, truth, region)
                            per_date.append({"seed": seed, "date": i, "tp": d.tp, "fp": d.fp, "fn": d.fn,
                                             "events": [f"{ev.kind}@{ev.date_index}" for ev in series.events if j < ev.date_index <= i]})
                            if (sc.datetime - start).days >= 365:
                                second.add(pred & region, truth, region)
                            crop_fp += int((pred & region & ~truth & crop).sum())
                            old_flag += int((pred & clear & old & ~truth).sum())
                state, _ = fold_registered(state, x, c, k, reg, params.max_gain_ratio, day=when, season_days=bp.season_days)
                state = state.compute()
                seen += int(clear.any())
            print(f"{name} seed {seed}: F1 so far {px.prf()['f1']:.3f}", flush=True)
        res[name] = {"pixel": px.to_dict(), "second_year": second.to_dict(), "crop_false_alarm_px": crop_fp,
                     "old_event_px_flagged": old_flag, "not_comparable_dates": notc,
                     "window": bp.window, "season_days": bp.season_days, "per_date": per_date}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", default=None, help="git revision whose baseline_ring.py to time as well")
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--q-size", type=int, default=256)
    ap.add_argument("--q-dates", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[81, 82])
    ap.add_argument("--out", default=str(OUT / "season"))
    a = ap.parse_args()
    from sitewatch.kernels.baseline import BaselineParams

    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    k = kernels(a.size, a.window, a.repeat, a.before)
    load1 = os.getloadavg()
    q = None
    if a.quality:
        q = quality(a.seeds, a.q_size, a.q_dates, {
            "last 8 (default)": BaselineParams(window=8),
            "seasonal W=40, +-30 d": BaselineParams(window=40, season_days=30),
            "seasonal W=40, +-60 d": BaselineParams(window=40, season_days=60),
        })
    load2 = os.getloadavg()
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta = {"started": started, "machine": f"{platform.node()}, {os.cpu_count()} cores", "commit": sha,
            "load_average": [load0, load1, load2], "argv": vars(a)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "kernels": k, "quality": q}, indent=1))
    mb = {n: v / 2**20 for n, v in k["bytes"].items()}
    la = lambda t: "(" + ", ".join(f"{x:.2f}" for x in t) + ")"  # noqa: E731
    lines = [f"# Seasonal baseline window (`python -m benchmarks.season`)", "",
             f"{started}, {meta['machine']}, commit {sha}; load average (1, 5, 15 min) {la(load0)} before, "
             f"{la(load1)} after the kernels" + (f", {la(load2)} after the quality runs" if q else "") + ".", "",
             f"## Kernels: {a.size} x {a.size} px, W = {a.window}, 6 bands, numpy, one thread (CPU s, best of {a.repeat})", "",
             f"Memory: ring {mb['ring']:.0f} MiB, day {mb['day']:.0f} MiB (+{100 * k['bytes']['day'] / k['bytes']['ring']:.1f} %, "
             f"1/bands), n_obs {mb['n_obs']:.0f} MiB.", "",
             "| call | CPU s |", "|---|---|",
             f"| state_baseline_np, last N | {k['state_baseline_last_n_s']:.3f} |",
             f"| state_baseline_np, seasonal +-30 d (mean count {k['seasonal_mean_count']:.1f}) | {k['state_baseline_seasonal_s']:.3f} |",
             f"| slot_use_np, last N (inside the line above) | {k['slot_use_last_n_s']:.3f} |",
             f"| slot_use_np, seasonal (inside the line above) | {k['slot_use_seasonal_s']:.3f} |",
             f"| fold_np (one scene, with day) | {k['fold_s']:.3f} |"]
    if "before" in k:
        b = k["before"]
        lines += [f"| state_baseline_np at {b['rev']} (no day) | {b['state_baseline_s']:.3f} |",
                  f"| fold_np at {b['rev']} (no day) | {b['fold_s']:.3f} |", "",
                  f"Last-N results identical to {b['rev']}: {b['identical_last_n']}."]
    if q:
        lines += ["", f"## Quality: synthetic {a.q_size} x {a.q_size} px, {a.q_dates} dates (10-day revisit, about "
                  f"{a.q_dates * 10 // 30} months), seeds {a.seeds}, perturbed", "",
                  "| baseline | pixel P / R / F1 | second year P / R / F1 | false-alarm px on crops | old-event px flagged | not comparable dates |",
                  "|---|---|---|---|---|---|"]
        for name, r in q.items():
            p, s = r["pixel"], r["second_year"]
            lines.append(f"| {name} | {p['precision']:.3f} / {p['recall']:.3f} / {p['f1']:.3f} | "
                         f"{s['precision']:.3f} / {s['recall']:.3f} / {s['f1']:.3f} | {r['crop_false_alarm_px']} | "
                         f"{r['old_event_px_flagged']} | {r['not_comparable_dates']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
