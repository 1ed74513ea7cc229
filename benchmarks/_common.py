"""Measurement and report helpers shared by the benchmarks: paths, cores, peak/now RSS, CPU time,
JSON-safe values and the git state the results came from."""

from __future__ import annotations

import math
import os
import resource
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("SITEWATCH_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _status_mb(field: str) -> float | None:
    """``field`` (e.g. ``VmHWM``, ``VmRSS``) of /proc/self/status in MiB; None where unreadable."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    """Peak resident set of this process: ``VmHWM`` from /proc (per address space, so it starts
    afresh at ``exec``), else ``getrusage``'s ``ru_maxrss``, which Linux carries over from the
    forking parent when the parent was bigger (a worker started from a 500 MB parent would read
    500 MB)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_now_mb() -> float:
    now = _status_mb("VmRSS")
    return now if now is not None else float("nan")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _json_safe(x: Any) -> Any:
    """NaN -> None, so the JSON file is standard JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _git() -> dict:
    def run(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.rstrip()
        except Exception:  # no git
            return ""
    return {"commit": run("rev-parse", "--short", "HEAD"),
            "dirty": [l[3:] for l in run("status", "--porcelain", "--untracked-files=no").splitlines() if len(l) > 3]}
