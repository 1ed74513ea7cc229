"""Report of the pipeline benchmark: markdown, JSON and two PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

RATIO_TARGET = 0.7
GROWTH_TARGET = 1.3
TASKS_LIMIT = 100_000
STAGES = ("read", "write", "baseline", "masks", "change", "objects", "other")
SECTIONS = ("## Machine and load", "## 1-3. I/O floor, full pipeline, ratio", "## 4. Hand-written baseline",
            "## 5. Peak memory against site size", "## 6. Scaling on a LocalCluster",
            "## 7. Per-stage breakdown and dask tasks", "## Goals")
PROFILE_SECTION = "## Where the time goes (profile)"
WHAT_IF_SECTION = "## What-if: zarr without the empty-chunk check"


def _mib(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"


def _get(runs: list[dict[str, Any]], phase: str, size: int) -> dict[str, Any] | None:
    return next((r for r in runs if r["phase"] == phase and r["size"] == size), None)


def _verdict(ok: bool | None) -> str:
    return "not evaluated" if ok is None else ("**met**" if ok else "**NOT met**")


def machine() -> str:
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:  # pragma: no cover
        mem = ""
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} ({cpu}, {os.cpu_count()} cores{mem}), Linux {platform.release()}, Python {platform.python_version()}"


def summarise(meta: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = meta["sizes"]
    rows = []
    for s in sizes:
        fl, fu, ha = _get(runs, "floor", s), _get(runs, "full", s), _get(runs, "hand", s)
        px = s * s * meta["dates"] / 1e6
        rows.append({"size": s, "floor_s": fl["total_s"], "full_s": fu["total_s"], "hand_s": ha["total_s"],
                     "ratio": fl["total_s"] / fu["total_s"],
                     "mpx_per_s": {k: px / r["total_s"] for k, r in (("floor", fl), ("full", fu), ("hand", ha))},
                     "peak": {k: r["peak_rss_bytes"] for k, r in (("floor", fl), ("full", fu), ("hand", ha))},
                     "start": {k: r["start_rss_bytes"] for k, r in (("floor", fl), ("full", fu), ("hand", ha))},
                     "tasks": {k: r["n_tasks"] for k, r in (("floor", fl), ("full", fu))}})
        st = _get(runs, "full-streamed", s)
        if st is not None:  # reports from before the streamed phase have none
            rows[-1]["streamed"] = {"s": st["total_s"], "ratio": fl["total_s"] / st["total_s"], "peak": st["peak_rss_bytes"],
                                    "start": st["start_rss_bytes"], "tasks": st["n_tasks"]}
    growth: dict[str, Any] = {}
    lo, hi = (1024, 4096) if {1024, 4096} <= set(sizes) else (sizes[0], sizes[-1])
    for k in ("floor", "full", "hand", "full-streamed"):
        a, b = _get(runs, k, lo), _get(runs, k, hi)
        growth[k] = b["peak_rss_bytes"] / a["peak_rss_bytes"] if a and b and lo != hi else math.nan
    cluster = []
    for s in meta["cluster_sizes"]:
        one, two = _get(runs, "cluster-1", s), _get(runs, "cluster-2", s)
        if one and two:
            cluster.append({"size": s, "one_s": one["total_s"], "two_s": two["total_s"], "speedup": one["total_s"] / two["total_s"],
                            "one_peak": one["peak_rss_bytes"], "two_peak": two["peak_rss_bytes"]})
    # the streamed runs cover --sizes and --streamed-sizes: their growth over all of them
    st_sizes = sorted(r["size"] for r in runs if r["phase"] == "full-streamed")
    st_lo, st_hi = (1024, 4096) if {1024, 4096} <= set(st_sizes) else ((st_sizes[0], st_sizes[-1]) if st_sizes else (0, 0))
    st_growth = (_get(runs, "full-streamed", st_hi)["peak_rss_bytes"] / _get(runs, "full-streamed", st_lo)["peak_rss_bytes"]
                 if st_hi > st_lo else math.nan)
    worst_ratio = min(r["ratio"] for r in rows)
    max_tasks = max(r["n_tasks"] for r in runs if "n_tasks" in r)
    goals = {
        "ratio": {"value": worst_ratio, "target": f">= {RATIO_TARGET}", "met": worst_ratio >= RATIO_TARGET},
        "growth": {"value": growth["full"], "sizes": [lo, hi], "target": f"<= {GROWTH_TARGET}x (1024 -> 4096 px)",
                   "met": (growth["full"] <= GROWTH_TARGET) if (lo, hi) == (1024, 4096) else None},
        "streamed_growth": {"value": st_growth, "sizes": [st_lo, st_hi], "target": f"<= {GROWTH_TARGET}x (1024 -> 4096 px)",
                            "met": (st_growth <= GROWTH_TARGET) if (st_lo, st_hi) == (1024, 4096) else None},
        "tasks": {"value": max_tasks, "target": f"< {TASKS_LIMIT} per run", "met": max_tasks < TASKS_LIMIT},
    }
    return {"rows": rows, "growth": growth, "growth_sizes": [lo, hi], "cluster": cluster, "goals": goals}


def plots(results: Path, name: str, meta: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size"] for r in summary["rows"]]
    labels = {"floor": "I/O floor (ingest)", "full": "full pipeline", "hand": "hand-written rasterio + numpy"}
    out = []
    for kind, ylabel, get in (("throughput", "megapixels x dates per second", lambda r, k: r["mpx_per_s"][k]),
                              ("memory", "peak RSS, all processes (MiB)", lambda r, k: r["peak"][k] / 2**20)):
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, lab in labels.items():
            ax.plot(sizes, [get(r, k) for r in summary["rows"]], marker="o", label=lab)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s}" for s in sizes])
        ax.set_xlabel("site width = height (px)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"sitewatch pipeline: {kind} ({meta['dates']} dates, {meta['started']})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = results / f"{name}-{kind}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path.name)
    return out


def markdown(meta: dict[str, Any], runs: list[dict[str, Any]], summary: dict[str, Any], pngs: list[str],
             profile: dict[str, Any] | None = None, what_if: list[dict[str, Any]] | None = None) -> str:
    d = meta["dates"]
    ls, le = meta["load_start"], meta["load_end"]
    loads = [r.get("load_before", math.nan) for r in runs] + [r.get("load_after", math.nan) for r in runs]
    peak_load = max([x for x in loads if x == x] + [ls[0], le[0]])
    md = ["# Pipeline throughput against the I/O floor, memory against site size", "",
          f"`python -m benchmarks.pipeline --sizes {' '.join(map(str, meta['sizes']))} --dates {d} --chunk {meta['chunk']}"
          + (f" --cluster-sizes {' '.join(map(str, meta['cluster_sizes']))}" if meta["cluster_sizes"] else " --no-cluster")
          + (f" --streamed-sizes {' '.join(map(str, meta['streamed_sizes']))}" if meta.get("streamed_sizes") else "")
          + (" --allow-8192" if max(meta["sizes"] + (meta.get("streamed_sizes") or [])) > 4096 else "")
          + (f" --profile {meta['profile']}" if meta.get("profile") else "") + (" --what-if" if meta.get("what_if") else "")
          + (" --quick" if meta.get("quick") else "") + (" --default-malloc" if meta.get("default_malloc") else "")
          + (f" --strip-px {meta['strip_px']}" if meta.get("strip_px") else "") + "`", "",
          "Synthetic scenes (sitewatch.synthetic: six uint16 bands as COGs + STAC items in a local folder, on the site grid) "
          "written once per size, not timed. Each measurement ran in a fresh Python process (dask's threaded scheduler, "
          f"{os.cpu_count()} threads, unless a LocalCluster is named), "
          + ("after the same work on a 256 px warm-up site (imports, numba), not measured. " if meta["warmup"] else
             "without warm-up (times include numba compilation). ")
          + "Library path, no Prefect: the calls the monitor flow's tasks make. "
          + ("Each measured process started with glibc's default malloc settings (LocalCluster workers still as "
             "sitewatch starts them)." if meta.get("default_malloc") else
             "Each process (and each LocalCluster worker) started as the `sitewatch` command starts its own: with "
             "`flows.dask_env.WORKER_MALLOC_ENV` (malloc keeps freed memory)."), "",
          SECTIONS[0], "",
          f"- machine: {machine()}",
          f"- run: {meta['started']} to {meta['finished']}",
          f"- 1/5/15-min load average at start {ls[0]:.2f} / {ls[1]:.2f} / {ls[2]:.2f}, at end {le[0]:.2f} / {le[1]:.2f} / {le[2]:.2f}; "
          f"highest 1-min load seen around a measurement {peak_load:.2f}",
          "- the machine is shared with another engineer's work: " + (
              "a figure taken under load is what this run got, not the machine's capacity."
              if peak_load > 0.5 * (os.cpu_count() or 1) else "load stayed low while this ran.")]
    if meta.get("note"):
        md.append(f"- note: {meta['note']}")
    md += ["",
          SECTIONS[1], "",
          "Floor: `cube.extend` + `scenes.read_scene` (lazy: one read per chunk, straight from the file for bands on the "
          "site's pixel lattice, else through a WarpedVRT) + "
          "`cube.write_scene_slice` per scene (4 scenes at a time, as the flow's mapped ingest) + one `cube.commit`. "
          "Full: the same ingest, then `analysis.analyse_slot` per date in time order, then the alert update "
          "(`alerts.merge` with `observation.clear_views`, `publish.render_alert_chips`, `write_feed`, `write_stac_items`). "
          "Throughput = pixels x dates / wall time.", "",
          "| size | floor | full (ingest + analyse + alerts) | ratio floor / full | throughput floor / full | objects, alerts |",
          "|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        fu = _get(runs, "full", r["size"])
        st = fu["stages_s"]
        md.append(f"| {r['size']}^2 px | {r['floor_s']:.1f} s | {r['full_s']:.1f} s ({st['ingest']:.1f} + {st['analyse']:.1f} + "
                  f"{st['alerts']:.1f}) | **{r['ratio']:.2f}** | {r['mpx_per_s']['floor']:.2f} / {r['mpx_per_s']['full']:.2f} Mpx/s | "
                  f"{fu['objects']}, {fu['alerts']} |")
    g = summary["goals"]
    md += ["", f"Ratio goal >= {RATIO_TARGET}: {_verdict(g['ratio']['met'])} (worst {g['ratio']['value']:.2f}).", "",
           SECTIONS[2], "",
           "benchmarks/_pipeline_handwritten.py: per date, every band read whole with `rasterio.open(...).read(1)`, a "
           "brightness + NDSI cloud test and a dark-NIR shadow test, per-band median/MAD of the last 8 clear observations "
           "(float32 stacks in memory, `np.nanmedian`), RMS robust z-score, change mask, `scipy.ndimage.label`, one GeoTIFF per "
           "date. Simpler masks than sitewatch's (no temporal cloud/shadow rules, no opening/buffer, no normalisation).", "",
           "| size | hand-written time | sitewatch full time | hand-written peak RSS | sitewatch full peak RSS | hand-written throughput |",
           "|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        md.append(f"| {r['size']}^2 px | {r['hand_s']:.1f} s | {r['full_s']:.1f} s | {_mib(r['peak']['hand'])} | "
                  f"{_mib(r['peak']['full'])} | {r['mpx_per_s']['hand']:.2f} Mpx/s |")
    lo, hi = summary["growth_sizes"]
    md += ["", SECTIONS[3], "",
           "Peak of the summed RSS of the measuring process and all its descendants (psutil, every 100 ms; shared pages "
           "count once per process). \"at start\" is the RSS when the measured work began (imports, warm-up leftovers).", "",
           "| size | floor peak (at start) | full peak (at start) | hand-written peak (at start) |", "|---|---|---|---|"]
    for r in summary["rows"]:
        md.append(f"| {r['size']}^2 px | " + " | ".join(f"{_mib(r['peak'][k])} ({_mib(r['start'][k])})" for k in ("floor", "full", "hand")) + " |")
    gr = summary["growth"]
    if hi > lo:
        md += ["", f"Growth of the peak from {lo}^2 to {hi}^2 px ({(hi / lo) ** 2:.0f}x the area): full {gr['full']:.2f}x, "
               f"floor {gr['floor']:.2f}x, hand-written {gr['hand']:.2f}x. Goal <= {GROWTH_TARGET}x for 1024 -> 4096: "
               f"{_verdict(g['growth']['met'])}.", ""]
    else:
        md += ["", "One size in --sizes: no growth of the held peak to report.", ""]
    if all("streamed" in r for r in summary["rows"]):
        strips = f"{meta['strip_px']}^2 px (`--strip-px`)" if meta.get("strip_px") else "1024^2 px (the default)"
        md += [f"Streamed: the full pipeline again with every site streamed (`AnalysisParams(hold_max_bytes=0)`), in strips of "
               f"about {strips}, fitted to the stored rows (`streamed_chunk_px`): a date's "
               "whole-site arrays (baseline, masks, change) go to a scratch Zarr store beside the cube and are read back "
               "chunk by chunk instead of being held in memory (sitewatch.io.scratch). By default only sites whose arrays "
               "would take more than `hold_max_bytes` are streamed.", "",
               "| size | streamed full time | ratio floor / streamed | streamed peak (at start) | full peak | dask tasks |",
               "|---|---|---|---|---|---|"]
        for r in summary["rows"]:
            x = r["streamed"]
            md.append(f"| {r['size']}^2 px | {x['s']:.1f} s | {x['ratio']:.2f} | {_mib(x['peak'])} ({_mib(x['start'])}) | "
                      f"{_mib(r['peak']['full'])} | {x['tasks']:,} |")
        for size in meta.get("streamed_sizes") or []:  # floor and streamed only
            fl, x = _get(runs, "floor", size), _get(runs, "full-streamed", size)
            if fl and x:
                md.append(f"| {size}^2 px | {x['total_s']:.1f} s | {fl['total_s'] / x['total_s']:.2f} | "
                          f"{_mib(x['peak_rss_bytes'])} ({_mib(x['start_rss_bytes'])}) | not run | {x['n_tasks']:,} |")
        sg = g["streamed_growth"]
        s_lo, s_hi = sg["sizes"]
        md += [""]
        if s_hi > s_lo:
            md[-1] = (f"Growth of the streamed peak from {s_lo}^2 to {s_hi}^2 px ({(s_hi / s_lo) ** 2:.0f}x the area): "
                      f"{sg['value']:.2f}x. Goal <= {GROWTH_TARGET}x for 1024 -> 4096: {_verdict(sg['met'])}.")
        far = max(meta.get("streamed_sizes") or [0])
        if far > s_hi and _get(runs, "full-streamed", far) and _get(runs, "full-streamed", s_lo):
            md[-1] += (f" From {s_lo}^2 to {far}^2 px ({(far / s_lo) ** 2:.0f}x the area): "
                       f"{_get(runs, 'full-streamed', far)['peak_rss_bytes'] / _get(runs, 'full-streamed', s_lo)['peak_rss_bytes']:.2f}x.")
        md.append("")
    md += [SECTIONS[4], ""]
    if summary["cluster"]:
        md += ["benchmarks/scaleout.run_config (its monitor work: ingest + analyse_slot per date, no alerts) on a "
               "`distributed.LocalCluster` of 1 and of 2 worker processes x 1 thread; peak RSS of the client process and every "
               "nanny and worker process together.", "",
               "| size | 1 worker | 2 workers | speed-up | peak RSS 1 worker / 2 workers (all processes) | load before / after (1w, 2w) |",
               "|---|---|---|---|---|---|"]
        for c in summary["cluster"]:
            one, two = _get(runs, "cluster-1", c["size"]), _get(runs, "cluster-2", c["size"])
            md.append(f"| {c['size']}^2 px | {c['one_s']:.1f} s | {c['two_s']:.1f} s | {c['speedup']:.2f}x | "
                      f"{_mib(c['one_peak'])} / {_mib(c['two_peak'])} | {one['load_before']:.1f}/{one['load_after']:.1f}, "
                      f"{two['load_before']:.1f}/{two['load_after']:.1f} |")
    else:
        md.append("Not run (--no-cluster).")
    md += ["", SECTIONS[5], "",
           "Dask task time by stage: every task's duration (pretask to posttask callback, threaded scheduler) summed by "
           "task name and mapped to a stage by name (benchmarks/_pipeline_measure.STAGE_PATTERNS); summed over threads, so "
           "it can exceed the wall time. Tasks: the sum of graph lengths over every compute/persist of the run.", "",
           "| size | run | wall | " + " | ".join(STAGES) + " | dask tasks (graphs) | tasks per date |",
           "|---|---|---|" + "---|" * len(STAGES) + "---|---|"]
    for r in summary["rows"]:
        for k in ("floor", "full"):
            x = _get(runs, k, r["size"])
            ts = x["task_s_by_stage"]
            md.append(f"| {r['size']}^2 px | {k} | {x['total_s']:.1f} s | " + " | ".join(f"{ts.get(s, 0.0):.1f}" for s in STAGES)
                      + f" | {x['n_tasks']} ({x['n_graphs']}) | {x['n_tasks'] / x['dates']:.0f} |")
    md += ["", f"Tasks per run goal < {TASKS_LIMIT}: {_verdict(g['tasks']['met'])} (largest run {g['tasks']['value']}).", "",
           "Wall time inside the library calls analyse_slot makes (wrapped from outside; a call's time includes the dask "
           "computes it triggers: graph-building calls are cheap, their work lands in the persists inside analyse_slot, in "
           "`_change_state` and in `write_derived`; \"rest\" is analyse_slot's own time, mostly the scene/mask/change persists), "
           "and the alert update:", "",
           "| size | " + " | ".join(["call", "calls", "seconds"]) + " |", "|---|---|---|---|"]
    for r in summary["rows"]:
        x = _get(runs, "full", r["size"])
        for label, s in sorted(x["call_s"].items(), key=lambda kv: -kv[1]):
            md.append(f"| {r['size']}^2 px | {label} | {x['call_n'][label]} | {s:.2f} |")
        md.append(f"| {r['size']}^2 px | rest of analyse_slot (persists) | | "
                  f"{x['stages_s']['analyse'] - sum(x['call_s'].values()):.2f} |")
        md.append(f"| {r['size']}^2 px | alert update (merge, clear views, chips, feed) | 1 | {x['stages_s']['alerts']:.2f} |")
    grown = [(r["size"], _get(runs, "full", r["size"]).get("peak_growth_bytes")) for r in summary["rows"]]
    if any(rise for _, rise in grown):
        md += ["", "Which calls set the full run's peak: the rises of the peak RSS (sampled every 100 ms) by the wrapped call "
               "running at the time (the innermost). Malloc keeps freed memory, so a step that needs no more than an "
               "earlier one freed adds nothing: this tells which steps push the peak up, not what each holds.", "",
               "| size | call | peak rise |", "|---|---|---|"]
        for size, rise in grown:
            for label, b in sorted((rise or {}).items(), key=lambda kv: -kv[1]):
                md.append(f"| {size}^2 px | {label} | {b / 2**20:.0f} MiB |")
    big = _get(runs, "full", summary["rows"][-1]["size"])
    md += ["", f"Top dask task names of the full run at {big['size']}^2 px (task-seconds, count):", "",
           "| task name | stage | task-seconds | tasks |", "|---|---|---|---|"]
    from ._pipeline_measure import stage_of

    for name, s, n in big["top_tasks"]:
        md.append(f"| `{name}` | {stage_of(name)} | {s:.1f} | {n} |")
    if what_if:
        plain = [r for r in what_if if r["phase"] == "full"]
        wec = [r for r in what_if if r["phase"] == "full-write-empty-chunks"]
        key = lambda r: (r["cloud_fractions"], r["objects"], r["change_states"])  # noqa: E731
        same = all(key(r) == key(plain[0]) for r in what_if)
        md += ["", WHAT_IF_SECTION, "",
               f"The full pipeline at {what_if[0]['size']}^2 px as is and in a process where `zarr.config` sets "
               "`array.write_empty_chunks = True` (zarr then stores every chunk without first comparing it with the fill "
               "value; the library unchanged), alternately, back to back:", "",
               "| run | ingest | analyse | alerts | total | load before / after |", "|---|---|---|---|---|---|"]
        for r in what_if:
            st = r["stages_s"]
            lab = "as is" if r["phase"] == "full" else "write_empty_chunks"
            md.append(f"| {lab} #{r.get('repeat', 0) + 1} | {st['ingest']:.1f} s | {st['analyse']:.1f} s | {st['alerts']:.1f} s | "
                      f"{r['total_s']:.1f} s | {r['load_before']:.2f} / {r['load_after']:.2f} |")
        mean = lambda rs, f: sum(f(r) for r in rs) / len(rs)  # noqa: E731
        md += ["", f"Mean analyse {mean(plain, lambda r: r['stages_s']['analyse']):.1f} s as is vs "
               f"{mean(wec, lambda r: r['stages_s']['analyse']):.1f} s; total {mean(plain, lambda r: r['total_s']):.1f} s vs "
               f"{mean(wec, lambda r: r['total_s']):.1f} s. Results identical (cloud fractions, objects, change states): "
               f"{'yes' if same else 'NO'}."]
    if profile is not None:
        from ._pipeline_profile import markdown as profile_md

        md += ["", PROFILE_SECTION, ""] + profile_md(profile["summary"], profile["run"])
    md += ["", SECTIONS[6], "", "| goal | target | measured | verdict |", "|---|---|---|---|",
           f"| floor / full | >= {RATIO_TARGET} | {g['ratio']['value']:.2f} (worst size) | {_verdict(g['ratio']['met'])} |",
           (f"| peak RSS growth | {g['growth']['target']} | {g['growth']['value']:.2f}x ({lo} -> {hi} px) | {_verdict(g['growth']['met'])} |"
            if hi > lo else f"| peak RSS growth | {g['growth']['target']} | one size | not evaluated |")]
    sg = g.get("streamed_growth")
    if sg and sg["sizes"][1] > sg["sizes"][0]:
        md.append(f"| streamed peak RSS growth | {sg['target']} | {sg['value']:.2f}x ({sg['sizes'][0]} -> {sg['sizes'][1]} px, "
                  f"strips of about {meta.get('strip_px') or 1024}^2 px) | {_verdict(sg['met'])} |")
    md += [
           f"| dask tasks per run | < {TASKS_LIMIT} | {g['tasks']['value']} | {_verdict(g['tasks']['met'])} |"]
    if summary["cluster"]:
        c = summary["cluster"][-1]
        md.append(f"| 2-worker speed-up | reported (scaleout's own target 1.7x) | {c['speedup']:.2f}x at {c['size']} px | "
                  f"{_verdict(c['speedup'] >= 1.7)} |")
    md += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in pngs), ""]
    return "\n".join(md)


def write_report(results: Path, name: str, meta: dict[str, Any], runs: list[dict[str, Any]],
                 profile: dict[str, Any] | None = None, what_if: list[dict[str, Any]] | None = None) -> str:
    results.mkdir(parents=True, exist_ok=True)
    summary = summarise(meta, runs)
    pngs = plots(results, name, meta, summary)
    md = markdown(meta, runs, summary, pngs, profile, what_if)
    meta = dict(meta, machine=machine())
    (results / f"{name}.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs, "profile": profile, "what_if": what_if or []},
                                                     indent=1, default=str))
    (results / f"{name}.md").write_text(md)
    return md
