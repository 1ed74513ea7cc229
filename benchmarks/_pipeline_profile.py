"""Where the time goes: the full pipeline phase run under py-spy (sampling profiler, all
threads), summarised as busy thread-seconds by cost (inclusive: a sample counts for every
listed cost on its stack) and by innermost frame (self time).

Samples whose innermost frame is a thread waiting (an idle pool worker, a condition, an event,
a selector) are not busy and are left out."""

from __future__ import annotations

import collections
import re
import shutil
import sys
from pathlib import Path
from typing import Any

RATE = 40  # samples per second per thread
IDLE = ("_worker (concurrent", "Condition.wait", "Event.wait", "select (selectors", "EpollSelector.select")
# (label, frame test): the costs worth naming; a frame matches when its "function (file" text contains the substring
COSTS: tuple[tuple[str, str], ...] = (
    ("COG read and warp (scenes.warp_block)", "warp_block (sitewatch/io/scenes.py"),
    ("zarr empty-chunk check on write (NDBuffer.all_equal)", "NDBuffer.all_equal"),
    ("zarr compression (blosc encode)", "BloscCodec._encode"),
    ("zarr decompression (blosc decode)", "BloscCodec._decode"),
    ("dask concatenate3 (block concatenation inside tasks)", "concatenate3 (dask"),
    ("baseline ring fold (baseline_ring.fold_np)", "fold_np (sitewatch/kernels/baseline_ring.py"),
    ("baseline median/MAD (baseline_ring.state_baseline_np)", "state_baseline_np (sitewatch/kernels/baseline_ring.py"),
    ("objects: labels (objects.label)", "label (sitewatch/kernels/objects.py"),
    ("objects: dilation (objects._dilate_np)", "_dilate_np (sitewatch/kernels/objects.py"),
    ("objects: per-object stats (objects._block_stats)", "_block_stats (sitewatch/kernels/objects.py"),
    ("masks stage 1 (masks._block1)", "_block1 (sitewatch/kernels/masks.py"),
    ("masks stage 2 (masks._stage2)", "_stage2 (sitewatch/kernels/masks.py"),
    ("masks cloud score (masks._score_block)", "_score_block (sitewatch/kernels/masks.py"),
    ("shadow matching counts (shadow._counts_block)", "_counts_block (sitewatch/kernels/shadow.py"),
    ("change score (change.change_score_np)", "change_score_np (sitewatch/kernels/change.py"),
    ("normalisation sums (change.normalisation_sums_np)", "normalisation_sums_np (sitewatch/kernels/change.py"),
    ("dask graph building and scheduling (dask/local, order, _task_spec)", "start_state_from_dask"),
    ("alert chips (publish.render_alert_chips)", "render_alert_chips (sitewatch/publish.py"),
    ("imports", "_call_with_frames_removed"),
    ("benchmark's own RSS sampler", "tree_rss (benchmarks/_pipeline_measure.py"),
)


def py_spy() -> str | None:
    """The py-spy executable (next to this Python, or on PATH), or None."""
    near = Path(sys.executable).parent / "py-spy"
    return str(near) if near.exists() else shutil.which("py-spy")


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    path = m.group(2).split("site-packages/")[-1]
    path = re.sub(r"^.*?/(sitewatch|benchmarks)/", r"\1/", path)
    return f"{m.group(1)} ({path}:{m.group(3)})"


def summarise(raw_path: Path, rate: int = RATE, top: int = 15) -> dict[str, Any]:
    """Busy thread-seconds in total, by cost (``COSTS``) and by innermost frame, from py-spy's
    ``--format raw`` output (collapsed stacks with counts)."""
    by_cost: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    busy = total = 0
    for line in Path(raw_path).read_text().splitlines():
        if not line.strip():
            continue
        stack, n_text = line.rsplit(" ", 1)
        n = int(n_text)
        total += n
        frames = stack.split(";")
        if any(frames[-1].startswith(i) for i in IDLE):
            continue
        busy += n
        text = ";".join(_short(f) for f in frames)
        for label, test in COSTS:
            if test in text:
                by_cost[label] += n
        by_leaf[_short(frames[-1])] += n
    if total == 0:
        raise ValueError(f"py-spy profile {raw_path} got no samples; expected a profile of a run")
    return {"rate": rate, "busy_thread_s": busy / rate, "sampled_thread_s": total / rate,
            "by_cost": [(k, v / rate) for k, v in by_cost.most_common()],
            "by_leaf": [(k, v / rate) for k, v in by_leaf.most_common(top)]}


def markdown(summary: dict[str, Any], run: dict[str, Any]) -> list[str]:
    busy = summary["busy_thread_s"]
    md = [f"py-spy (`record --format raw`, {summary['rate']} Hz, all threads) on a separate full-pipeline process at "
          f"{run['size']}^2 px, {run['dates']} dates (warm-up included): wall {run['total_s']:.1f} s (ingest "
          f"{run['stages_s']['ingest']:.1f} s, analyse {run['stages_s']['analyse']:.1f} s, alerts {run['stages_s']['alerts']:.1f} s), "
          f"{busy:.0f} busy thread-seconds. Costs are inclusive (a sample counts for each cost on its stack), so they "
          "overlap where one calls another.", "",
          "| cost | busy thread-seconds | share of busy |", "|---|---|---|"]
    for label, s in summary["by_cost"]:
        md.append(f"| {label} | {s:.1f} | {100 * s / busy:.0f}% |")
    md += ["", "Innermost frames (self time):", "", "| frame | thread-seconds |", "|---|---|"]
    for frame, s in summary["by_leaf"]:
        md.append(f"| `{frame}` | {s:.1f} |")
    return md
