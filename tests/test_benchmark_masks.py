"""Tests of the mask metric helper used by the benchmarks (benchmarks/_metrics.py): precision,
recall and F1 on hand-made masks, including empty truth and empty prediction. No data needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks._metrics import Counts, confusion, fmt, prf


def _mask(shape, *cells):
    m = np.zeros(shape, dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


def test_hand_made_masks_give_the_expected_counts_and_ratios():
    truth = _mask((4, 4), (0, 0), (0, 1), (1, 0), (1, 1))
    pred = _mask((4, 4), (0, 0), (0, 1), (1, 1), (3, 3), (2, 3))
    c = confusion(pred, truth)
    assert (c.tp, c.fp, c.fn, c.n) == (3, 2, 1, 16)
    m = c.prf()
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))


def test_perfect_prediction_scores_one():
    truth = _mask((3, 3), (1, 1), (2, 2))
    assert confusion(truth.copy(), truth).prf() == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_empty_truth_with_predictions_gives_zero_precision_and_f1_and_undefined_recall():
    truth = np.zeros((3, 3), dtype=bool)
    pred = _mask((3, 3), (0, 0))
    m = confusion(pred, truth).prf()
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and math.isnan(m["recall"])


def test_empty_prediction_with_truth_gives_zero_recall_and_f1_and_undefined_precision():
    truth = _mask((3, 3), (0, 0), (1, 1))
    m = confusion(np.zeros((3, 3), dtype=bool), truth).prf()
    assert m["recall"] == 0.0 and m["f1"] == 0.0 and math.isnan(m["precision"])


def test_both_empty_is_undefined_everywhere():
    z = np.zeros((2, 2), dtype=bool)
    m = confusion(z, z).prf()
    assert all(math.isnan(v) for v in m.values())
    assert fmt(m["f1"]) == "-"


def test_no_overlap_gives_zero_f1():
    m = confusion(_mask((2, 2), (0, 0)), _mask((2, 2), (1, 1))).prf()
    assert m == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_only_valid_pixels_count():
    truth = _mask((2, 3), (0, 0), (0, 2))
    pred = _mask((2, 3), (0, 0), (1, 1), (1, 2))
    valid = _mask((2, 3), (0, 0), (0, 1), (1, 1))  # excludes the missed (0, 2) and the false (1, 2)
    c = confusion(pred, truth, valid)
    assert (c.tp, c.fp, c.fn, c.n) == (1, 1, 0, 3)


def test_counts_pool_before_the_ratios():
    a = confusion(_mask((2, 2), (0, 0)), _mask((2, 2), (0, 0)))  # 1 TP
    b = confusion(_mask((2, 2), (0, 0), (0, 1), (1, 0)), _mask((2, 2), (1, 1)))  # 3 FP, 1 FN
    pooled = Counts().add(_mask((2, 2), (0, 0)), _mask((2, 2), (0, 0)))
    pooled.add(_mask((2, 2), (0, 0), (0, 1), (1, 0)), _mask((2, 2), (1, 1)))
    assert (pooled.tp, pooled.fp, pooled.fn, pooled.n) == (1, 3, 1, 8)
    assert (a + b).to_dict() == pooled.to_dict()
    assert pooled.prf()["f1"] == pytest.approx(2 / (2 + 3 + 1))  # micro-average, not the mean of per-date F1s


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="valid shape"):
        confusion(np.zeros((2, 2), bool), np.zeros((2, 2), bool), np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="non-negative"):
        prf(-1, 0, 0)
