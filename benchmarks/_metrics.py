"""Shared mask metrics for the benchmarks: pixel counts (true positives, false positives, false
negatives) of a predicted boolean mask against a truth mask over the pixels that count, and
precision / recall / F1 from pooled counts.

Conventions (also tested in tests/test_benchmark_masks.py):

* precision = TP / (TP + FP), NaN when nothing was predicted (TP + FP = 0);
* recall = TP / (TP + FN), NaN when there is no truth (TP + FN = 0);
* F1 = 2 TP / (2 TP + FP + FN), the harmonic mean of the two where both exist; 0 when there is
  truth or prediction but no overlap (one of precision/recall is then 0 or NaN); NaN only when
  truth and prediction are both empty (nothing to score).

Counts pool over dates and sites before the ratios are taken (micro-averaging), so large cloudy
dates weigh more than small ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n: int = 0  # pixels scored (valid in both)

    def add(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> "Counts":
        """Add the counts of one ``pred`` vs ``truth`` pair, over ``valid`` pixels only (all if None)."""
        c = confusion(pred, truth, valid)
        self.tp += c.tp
        self.fp += c.fp
        self.fn += c.fn
        self.n += c.n
        return self

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.n + other.n)

    def prf(self) -> dict[str, float]:
        return prf(self.tp, self.fp, self.fn)

    def to_dict(self) -> dict[str, float]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "pixels": self.n, **self.prf()}


def confusion(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> Counts:
    """Counts of ``pred`` against ``truth`` (boolean arrays of one shape) over ``valid``."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask metrics: prediction shape got {pred.shape!r}; expected the truth shape {truth.shape!r}")
    if valid is None:
        valid = np.ones(truth.shape, dtype=bool)
    else:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != truth.shape:
            raise ValueError(f"mask metrics: valid shape got {valid.shape!r}; expected the truth shape {truth.shape!r}")
    p, t = pred & valid, truth & valid
    return Counts(int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()), int(valid.sum()))


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from pooled counts (see the module docstring for empty cases)."""
    if min(tp, fp, fn) < 0:
        raise ValueError(f"mask metrics: counts got {(tp, fp, fn)!r}; expected non-negative integers")
    p = tp / (tp + fp) if tp + fp else math.nan
    r = tp / (tp + fn) if tp + fn else math.nan
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return {"precision": p, "recall": r, "f1": f}


def cube_mask_counts(cube, series) -> dict[str, Counts]:
    """Pooled counts of the ``cloud`` and ``shadow`` masks stored in an open cube (Dataset with a
    ``time`` dimension, slot ``i`` = scene ``i`` of ``series``) against the synthetic truth, over
    each scene's valid pixels."""
    out = {"cloud": Counts(), "shadow": Counts()}
    for i in range(len(series)):
        sc = series.scene(i)
        for name, truth in (("cloud", sc.cloud), ("shadow", sc.shadow)):
            out[name].add(cube[name].isel(time=i).values, truth, sc.valid)
    return out


def fmt(x: float, digits: int = 2) -> str:
    """A ratio for a report table: ``-`` for NaN."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
