"""A fixed CPU workload, timed in one process and in two processes at once: how fast, and how
parallel, the machine is right now.

This VM's speed drifts (the same 1-worker flow run took 67-83 s per date in one hour and
120-125 s in the next), and a speed-up from 1 to 2 workers is only as good as the second core
the hypervisor gives. A benchmark calls :func:`probe` before each measurement and reports:

* ``single_s``: the workload's time in one process, nothing else of ours running;
* ``pair_s``: its time in each of two processes started together (the mean);
* ``cores``: ``2 * single_s / pair_s``, the cores the two processes got between them (2.0 on an
  idle 2-core machine; less when another tenant or process takes a share).

The workload is single-threaded numpy (a sort of a fixed array of random float64, 8 MB: it
works in the caches), so BLAS threads play no part.

A second workload streams through memory: ``out = a * b + c`` on float32 arrays of 64 MB each,
far larger than the caches, as numpy's elementwise steps on a large chunk do. Two processes
share the machine's memory bandwidth, so this one tells how much a second worker can add to
memory-bound array work (``stream_single_s``, ``stream_pair_s``, ``stream_cores``). Measured on
this VM (2026-12-07): the sort 1.6-2.0 cores, a compute loop and in-cache numpy 1.98-1.99, the
stream 1.19: a second worker process speeds memory-bound steps up by about a fifth only.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from typing import Any, Iterator

import numpy as np

N = 1_000_000
ROUNDS = 10
STREAM_N = 16 * 2**20  # float32 elements per array: 64 MB, far beyond the caches
STREAM_ROUNDS = 20


def work(rounds: int = ROUNDS, n: int = N) -> float:
    """Seconds to sort a fixed array of ``n`` random float64 ``rounds`` times (a copy each time)."""
    a = np.random.default_rng(0).random(n)
    t = time.perf_counter()
    for _ in range(rounds):
        np.sort(a.copy())
    return time.perf_counter() - t


def stream_arrays(n: int = STREAM_N) -> tuple[np.ndarray, ...]:
    """The stream workload's arrays ``a, b, c, out`` (float32, touched: no page faults later)."""
    a = np.random.default_rng(0).random(n, dtype=np.float32)
    arrays = a, a[::-1].copy(), a * np.float32(0.5), np.full_like(a, 0.0)  # full, not zeros: calloc leaves pages untouched
    stream(arrays, 1)  # warm
    return arrays


def stream(arrays: tuple[np.ndarray, ...], rounds: int = STREAM_ROUNDS) -> float:
    """Seconds for ``rounds`` of ``out = a * b + c`` over ``arrays`` (:func:`stream_arrays`)."""
    a, b, c, out = arrays
    t = time.perf_counter()
    for _ in range(rounds):
        np.multiply(a, b, out=out)
        np.add(out, c, out=out)
    return time.perf_counter() - t


def _timed(start, out, kind: str, rounds: int, n: int) -> None:  # noqa: ANN001 (multiprocessing primitives)
    if kind == "sort":
        work(1, n)  # warm, as in probe()
        start.wait()
        out.put(work(rounds, n))
    else:
        arrays = stream_arrays(n)  # allocated and touched before the start: only the streaming is timed
        start.wait()
        out.put(stream(arrays, rounds))


def _pair(rounds: int, kind: str = "sort", n: int = N) -> list[float]:
    ctx = mp.get_context("spawn")  # no fork of a process holding threads (dask, Prefect)
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_timed, args=(start, out, kind, rounds, n)) for _ in range(2)]
    for p in procs:
        p.start()
    times = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return times


def probe(rounds: int = ROUNDS, stream_rounds: int = STREAM_ROUNDS, stream_n: int = STREAM_N) -> dict[str, Any]:
    """Each workload in this process, then in two processes at once; see the module's docstring."""
    if rounds < 1 or stream_rounds < 1:
        raise ValueError(f"cpu probe got rounds={rounds!r}, stream_rounds={stream_rounds!r}; expected at least 1 each")
    work(1)  # warm: page faults, the allocator
    single = work(rounds)
    pair = _pair(rounds)
    arrays = stream_arrays(stream_n)
    s_single = stream(arrays, stream_rounds)
    del arrays
    s_pair = _pair(stream_rounds, "stream", stream_n)
    mean, s_mean = float(np.mean(pair)), float(np.mean(s_pair))
    return {"single_s": single, "pair_s": pair, "cores": 2 * single / mean if mean > 0 else float("nan"),
            "stream_single_s": s_single, "stream_pair_s": s_pair,
            "stream_cores": 2 * s_single / s_mean if s_mean > 0 else float("nan")}


CO_RUNNERS = ("stream", "sort")


def _loop(kind: str, stop, out, n: int) -> None:  # noqa: ANN001 (multiprocessing primitives)
    arrays = stream_arrays(n) if kind == "stream" else None
    rounds = 0
    while not stop.is_set():
        if arrays is not None:
            stream(arrays, 1)
        else:
            work(1, n)
        rounds += 1
    out.put(rounds)


@contextlib.contextmanager
def co_runner(kind: str, n: int | None = None) -> Iterator[dict[str, Any]]:
    """A process running workload ``kind`` ("stream": :func:`stream`, "sort": :func:`work`) round
    after round on the other core while the block runs: what a measurement loses to a neighbour
    that takes the memory bandwidth, against one that takes a core but stays in the caches.
    Yields a dict that gets ``rounds`` (the rounds the neighbour ran) when the block ends."""
    if kind not in CO_RUNNERS:
        raise ValueError(f"co-runner got {kind!r}; expected one of {CO_RUNNERS!r}")
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_loop, args=(kind, stop, out, n or (STREAM_N if kind == "stream" else N)), daemon=True)
    proc.start()
    info: dict[str, Any] = {"kind": kind}
    try:
        yield info
    finally:
        stop.set()
        info["rounds"] = out.get(timeout=300)
        proc.join(timeout=60)


def describe(p: dict[str, Any]) -> str:
    """One line for a report: ``0.52 s alone, 0.55 s each of two (1.89 cores)``, and for the
    memory stream (probes of older reports have none): ``; stream 0.32 s, 0.54 s (1.19x)``."""
    line = f"{p['single_s']:.2f} s alone, {np.mean(p['pair_s']):.2f} s each of two ({p['cores']:.2f} cores)"
    if "stream_cores" in p:
        line += f"; stream {p['stream_single_s']:.2f} s, {np.mean(p['stream_pair_s']):.2f} s ({p['stream_cores']:.2f}x)"
    return line


if __name__ == "__main__":
    for _ in range(3):
        print(describe(probe()))
