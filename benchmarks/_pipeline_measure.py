"""Measuring instruments of the pipeline benchmark (benchmarks/pipeline.py):

* :class:`PeakRSS`: a background thread that samples the resident set size of a process and of
  all its descendants (Dask nannies and workers included) from ``/proc`` through psutil, and
  keeps the peak of their sum (shared pages count once per process: an upper bound);
* :class:`TaskTimer`: a dask callback (local schedulers) counting the tasks of every graph
  computed and summing task durations by task name, which :func:`stage_of` maps to a pipeline
  stage (read, write, masks, change, objects, baseline, other);
* :class:`CallTimer`: wall time of named library calls, by wrapping module attributes for the
  duration of a ``with`` block (the library's code is not changed).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

import psutil
from dask.callbacks import Callback
from dask.utils import key_split


def tree_rss(pid: int) -> int:
    """RSS in bytes of process ``pid`` plus all its descendants (processes that end while being
    read are skipped)."""
    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class PeakRSS:
    """Peak of :func:`tree_rss` of ``pid`` (default: this process) sampled every ``interval`` s
    while running (``with PeakRSS() as m: ...; m.peak``; a /proc scan per sample costs about 1 ms); ``start_rss`` is the first sample."""

    def __init__(self, pid: int | None = None, interval: float = 0.1) -> None:
        if not interval > 0:
            raise ValueError(f"PeakRSS interval got {interval!r}; expected seconds > 0")
        self.pid = psutil.Process().pid if pid is None else pid
        self.interval = interval
        self.peak = 0
        self.start_rss = 0
        self.samples = 0
        self.rises: list[tuple[float, int]] = []  # (perf_counter, new peak) each time the peak rose
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        v = tree_rss(self.pid)
        self.samples += 1
        if v > self.peak:
            self.rises.append((time.perf_counter(), v))
            self.peak = v

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakRSS":
        self.start_rss = tree_rss(self.pid)
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


# Task-name prefixes (``dask.utils.key_split`` of a key) by pipeline stage, first match wins.
# Reads are sitewatch's own ``read-<band>`` map_blocks; writes the ``da.store`` of the region
# writes; the rest by the kernel functions' names as dask names their tasks.
STAGE_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("read", ("read-", "scratch-")),
    ("write", ("store", "load-store")),
    ("objects", ("label", "relabel", "block-stats", "_block_stats", "dilate", "_dilate", "grouping", "objects", "ndmeasure",
                 "_label", "connected", "merge", "find_objects", "_find")),
    ("masks", ("mask", "_block1", "_score_block", "_stage", "shadow", "rough", "cloud", "_open_grow", "overlap", "trim",
               "_per_pixel")),
    ("change", ("change", "score", "tolerant", "normalisation", "delta", "gain", "_shifted", "fit")),
    ("baseline", ("ring", "fold", "baseline", "state", "median", "mad")),
)


def stage_of(task_name: str) -> str:
    """The pipeline stage a dask task name belongs to (``other`` when none matches)."""
    low = task_name.lower()
    if low == "read":  # read-<band> of a band whose name key_split drops (swir16, swir22: digits)
        return "read"
    for stage, prefixes in STAGE_PATTERNS:
        if any(low.startswith(p) or f"-{p}" in low or f"_{p.strip('_')}" in low for p in prefixes):
            return stage
    return "other"


class TaskTimer(Callback):
    """Counts tasks (sum of graph lengths over every compute/persist) and sums task durations
    (pretask to posttask, on the local schedulers; summed over threads) by task name.

    Use ``with timer.threaded():``: it makes dask's threaded scheduler, with this callback passed
    explicitly, the default scheduler. (A callback registered globally, ``with timer:``, is seen
    only by the first of several computes running at once in different threads, and dask's
    ``local_callbacks`` can then drop it for good: the ingest runs scenes concurrently.)"""

    @contextmanager
    def threaded(self, num_workers: int | None = None) -> Iterator["TaskTimer"]:
        import dask
        import dask.threaded

        def get(dsk: Any, keys: Any, **kw: Any) -> Any:
            kw.pop("callbacks", None)
            return dask.threaded.get(dsk, keys, callbacks=[self._callback], num_workers=num_workers, **kw)

        with dask.config.set(scheduler=get):
            yield self

    def __init__(self) -> None:
        super().__init__()
        self.n_tasks = 0
        self.n_graphs = 0
        self.by_name: dict[str, float] = defaultdict(float)
        self.count_by_name: dict[str, int] = defaultdict(int)
        self._t0: dict[Any, float] = {}
        self._lock = threading.Lock()

    def _start(self, dsk: Any) -> None:
        with self._lock:
            self.n_tasks += len(dsk)
            self.n_graphs += 1

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        with self._lock:
            self._t0[(id(state), key)] = time.perf_counter()

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        t = time.perf_counter()
        with self._lock:
            t0 = self._t0.pop((id(state), key), t)
            name = key_split(key)
            self.by_name[name] += t - t0
            self.count_by_name[name] += 1

    def by_stage(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for name, s in self.by_name.items():
            out[stage_of(name)] += s
        return dict(out)

    def top_names(self, n: int = 12) -> list[tuple[str, float, int]]:
        return sorted(((k, v, self.count_by_name[k]) for k, v in self.by_name.items()), key=lambda r: -r[1])[:n]


class CallTimer:
    """Wall time and call count of library functions, wrapped where they are looked up:
    ``targets`` maps a label to ``"module:attribute"`` (or ``"module:Class.method"``). Nested wrapped calls are each timed in
    full (a label's time includes the dask computes its call triggers)."""

    def __init__(self, targets: dict[str, str]) -> None:
        self.targets = dict(targets)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.spans: list[tuple[float, float, str]] = []  # (start, end, label) of every call

    def _wrap(self, label: str, fn: Any) -> Any:
        def timed(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                end = time.perf_counter()
                self.seconds[label] += end - t
                self.calls[label] += 1
                self.spans.append((t, end, label))
        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    @contextmanager
    def active(self) -> Iterator["CallTimer"]:
        saved = []
        try:
            for label, target in self.targets.items():
                mod_name, path = target.split(":")
                owner: Any = importlib.import_module(mod_name)
                *outer, attr = path.split(".")  # "module:Class.method" wraps a method on its class
                for name in outer:
                    owner = getattr(owner, name)
                fn = owner.__dict__[attr] if outer else getattr(owner, attr)
                saved.append((owner, attr, fn))
                setattr(owner, attr, self._wrap(label, fn))
            yield self
        finally:
            for owner, attr, fn in reversed(saved):
                setattr(owner, attr, fn)


#: where :func:`peak_growth` puts a rise that no wrapped call was running at
OUTSIDE_CALLS = "outside the wrapped calls (ingest, analyse_slot's own persists, alerts)"


def peak_growth(rises: list[tuple[float, int]], start_rss: int, spans: list[tuple[float, float, str]]) -> dict[str, int]:
    """Bytes by which the peak RSS rose (``rises``: :attr:`PeakRSS.rises`, from ``start_rss``)
    while each call ran (``spans``: :attr:`CallTimer.spans`; the innermost, i.e. shortest, span
    around a rise takes it; none: :data:`OUTSIDE_CALLS`). With memory kept by the allocator, a
    step that needs no more than an earlier one freed adds nothing: this tells which steps set
    the peak, not what each holds."""
    out: dict[str, int] = defaultdict(int)
    level = start_rss
    for t, v in rises:
        if v <= level:
            continue
        around = [s for s in spans if s[0] <= t <= s[1]]
        label = min(around, key=lambda s: s[1] - s[0])[2] if around else OUTSIDE_CALLS
        out[label] += v - level
        level = v
    return dict(out)
