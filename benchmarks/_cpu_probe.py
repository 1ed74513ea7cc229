"""A fixed CPU workload, timed in one process and in two processes at once: how fast, and how
parallel, the machine is right now.

This VM's speed drifts (the same 1-worker flow run took 67-83 s per date in one hour and
120-125 s in the next), and a speed-up from 1 to 2 workers is only as good as the second core
the hypervisor gives. A benchmark calls :func:`probe` before each measurement and reports:

* ``single_s``: the workload's time in one process, nothing else of ours running;
* ``pair_s``: its time in each of two processes started together (the mean);
* ``cores``: ``2 * single_s / pair_s``, the cores the two processes got between them (2.0 on an
  idle 2-core machine; less when another tenant or process takes a share).

The workload is single-threaded numpy (a sort of a fixed array of random float64), so BLAS
threads play no part.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import numpy as np

N = 1_000_000
ROUNDS = 10


def work(rounds: int = ROUNDS, n: int = N) -> float:
    """Seconds to sort a fixed array of ``n`` random float64 ``rounds`` times (a copy each time)."""
    a = np.random.default_rng(0).random(n)
    t = time.perf_counter()
    for _ in range(rounds):
        np.sort(a.copy())
    return time.perf_counter() - t


def _timed(start, out, rounds: int) -> None:  # noqa: ANN001 (multiprocessing primitives)
    start.wait()
    out.put(work(rounds))


def _pair(rounds: int) -> list[float]:
    ctx = mp.get_context("spawn")  # no fork of a process holding threads (dask, Prefect)
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_timed, args=(start, out, rounds)) for _ in range(2)]
    for p in procs:
        p.start()
    times = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return times


def probe(rounds: int = ROUNDS) -> dict[str, Any]:
    """The workload in this process, then in two processes at once; see the module's docstring."""
    if rounds < 1:
        raise ValueError(f"cpu probe got rounds={rounds!r}; expected at least 1")
    work(1)  # warm: page faults, the allocator
    single = work(rounds)
    pair = _pair(rounds)
    mean = float(np.mean(pair))
    return {"single_s": single, "pair_s": pair, "cores": 2 * single / mean if mean > 0 else float("nan")}


def describe(p: dict[str, Any]) -> str:
    """One line for a report: ``0.52 s alone, 0.55 s each of two (1.89 cores)``."""
    return f"{p['single_s']:.2f} s alone, {np.mean(p['pair_s']):.2f} s each of two ({p['cores']:.2f} cores)"


if __name__ == "__main__":
    for _ in range(3):
        print(describe(probe()))
