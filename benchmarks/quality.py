"""Detection quality on synthetic sites with seeds the tests do not use.

    python -m benchmarks.quality [--size 256] [--seeds 21 22 23 24] [--dates 14]

For each seed: cloud and shadow precision/recall/F1 of the stored masks against the generator's
truth (all dates), and for alerts: events found (an alert overlapping the event's footprint, in
its direction, first seen between the event date and the first date its footprint and a 10 px
ring are free of truth cloud/shadow), events missed, and false alerts (alerts that overlap no
event). Writes benchmarks/results/quality.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from sitewatch import alerts as alert_lib
from sitewatch.io import cube as cube_io
from sitewatch.synthetic import SyntheticSpec

from ._metrics import cube_mask_counts
from ._site import build

OUT = Path(__file__).resolve().parent / "results"


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _first_clear(series, ev, ring=10) -> int:
    r0, c0, r1, c1 = ev.bbox
    h, w = series.grid.shape
    win = (slice(max(0, r0 - ring), min(h, r1 + ring)), slice(max(0, c0 - ring), min(w, c1 + ring)))
    for i in range(ev.date_index, len(series)):
        sc = series.scene(i)
        if not (sc.cloud[win].any() or sc.shadow[win].any()) and sc.valid[win].all():
            return i
    return len(series)


def evaluate(size: int, dates: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        series, cube, results, tm = build(d, SyntheticSpec(width=size, height=size, n_dates=dates, seed=seed), chunk=min(512, size))
        ds = cube_io.open_cube(cube)
        counts = cube_mask_counts(ds, series)
        ds.close()
    detections = [d for r in results for d in r.detections]
    alerts, _, _ = alert_lib.merge("bench", [], detections)
    dates_iso = [x.isoformat() for x in series.dates]
    found, missed, checkable = [], [], 0
    matched: set[str] = set()
    for ev in series.events:
        matched |= {a.id for a in alerts if _overlaps(a.bbox_pixels, ev.bbox)}
        dl = _first_clear(series, ev)
        if dl >= len(series):
            continue
        checkable += 1
        ok = any(_overlaps(a.bbox_pixels, ev.bbox) and a.direction == ev.direction and dates_iso[ev.date_index] <= a.first_seen <= dates_iso[dl] for a in alerts)
        (found if ok else missed).append(f"{ev.kind}@{ev.date_index}")
    false = [a for a in alerts if a.id not in matched]
    return {
        "seed": seed, "size": size, "dates": dates,
        "cloud": counts["cloud"].prf(), "shadow": counts["shadow"].prf(),
        "events": len(series.events), "events_checkable": checkable, "events_found": found, "events_missed": missed,
        "alerts": len(alerts), "false_alerts": len(false),
        "analyse_s_per_scene": float(np.mean(tm.analyse)), "ingest_s_per_scene": float(np.mean(tm.ingest)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dates", type=int, default=14)
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22, 23, 24])
    a = ap.parse_args(argv)
    t0 = time.time()
    rows = [evaluate(a.size, a.dates, s) for s in a.seeds]
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runtime_s": round(time.time() - t0, 1)}
    (OUT / "quality.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# Detection quality on synthetic sites ({a.size} x {a.size} px, {a.dates} dates)", "",
             f"{meta['date']}, {meta['machine']}, Python {meta['python']}; seeds not used by the tests.", "",
             "| seed | cloud P / R / F1 | shadow P / R / F1 | events found / checkable | missed | alerts | false alerts |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c, s = r["cloud"], r["shadow"]
        lines.append(f"| {r['seed']} | {c['precision']:.2f} / {c['recall']:.2f} / {c['f1']:.2f} | {s['precision']:.2f} / {s['recall']:.2f} / {s['f1']:.2f} "
                     f"| {len(r['events_found'])} / {r['events_checkable']} | {', '.join(r['events_missed']) or '-'} | {r['alerts']} | {r['false_alerts']} |")
    tot_found = sum(len(r["events_found"]) for r in rows)
    tot_check = sum(r["events_checkable"] for r in rows)
    lines += ["", f"Events found: {tot_found} / {tot_check}; false alerts: {sum(r['false_alerts'] for r in rows)} over {len(rows)} sites."]
    (OUT / "quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
