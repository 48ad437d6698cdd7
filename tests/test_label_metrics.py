"""The thresholded and top-3 CP/CR/CF1/OP/OR/OF1 against plain loops written out here, with the cases
that decide them: ties in the top 3, a class without positives, a class never predicted (Np = 0)."""

from __future__ import annotations

import numpy as np
import pytest

from shards.classes import VOC, VOC_CLASSES
from trainer.evaluation.label_metrics import label_metrics, top_k
from trainer.evaluation.metrics import average_precisions


def _predicted_by_loop(scores: np.ndarray, rule: str) -> list[list[bool]]:
    rows = []
    for row in scores.tolist():
        if rule == "thresholded":
            rows.append([s >= 0.5 for s in row])
            continue
        # the 3 highest; among equal scores the lower class index first
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))[:3]
        rows.append([c in ranked for c in range(len(row))])
    return rows


def _means_by_loop(states: np.ndarray, scores: np.ndarray, rule: str) -> dict:
    predicted = _predicted_by_loop(scores, rule)
    n, classes = states.shape
    nc, np_, ng = [0] * classes, [0] * classes, [0] * classes
    for i in range(n):
        for c in range(classes):
            positive = states[i, c] == 1
            ng[c] += positive
            np_[c] += predicted[i][c]
            nc[c] += positive and predicted[i][c]
    with_positives = [c for c in range(classes) if ng[c] > 0]
    cp = sum(nc[c] / np_[c] if np_[c] else 0.0 for c in with_positives) / len(with_positives)
    cr = sum(nc[c] / ng[c] for c in with_positives) / len(with_positives)
    op = sum(nc) / sum(np_) if sum(np_) else 0.0
    or_ = sum(nc) / sum(ng)
    f1 = lambda p, r: 2 * p * r / (p + r) if p + r else 0.0  # noqa: E731
    return {"CP": cp, "CR": cr, "CF1": f1(cp, cr), "OP": op, "OR": or_, "OF1": f1(op, or_),
            "per_class": [(nc[c] / np_[c] if np_[c] else 0.0, nc[c] / ng[c]) if ng[c] else None
                          for c in range(classes)]}


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray]:
    """VOC-shaped states with difficult-only cells, ties on a coarse score grid, a class without
    positives (cow: difficult only) and a class never predicted at 0.5 (sofa)."""
    rng = np.random.default_rng(7)
    states = rng.choice([-1, 0, 1], p=[0.6, 0.1, 0.3], size=(30, VOC.num_classes)).astype(np.int8)
    scores = rng.integers(0, 5, size=states.shape) / 4  # 0, .25, .5, .75, 1: many ties, some exactly 0.5
    cow, sofa = VOC_CLASSES.index("cow"), VOC_CLASSES.index("sofa")
    states[:, cow] = np.where(states[:, cow] == 1, 0, states[:, cow])
    scores[:, sofa] = 0.25
    states[0, sofa] = 1
    return states, scores


@pytest.mark.parametrize("rule,key", [("thresholded", "thresholded"), ("top3", "top3")])
def test_means_equal_the_loops(case, rule, key):
    states, scores = case
    expected = _means_by_loop(states, scores, rule)
    got = label_metrics(states, scores, VOC_CLASSES)[key]
    assert list(got) == ["CP", "CR", "CF1", "OP", "OR", "OF1"]
    assert got == pytest.approx({k: expected[k] for k in got}, abs=1e-12)


def test_per_class_columns_are_the_thresholded_ones_and_none_without_positives(case):
    states, scores = case
    expected = _means_by_loop(states, scores, "thresholded")["per_class"]
    per_class = label_metrics(states, scores, VOC_CLASSES)["per_class"]
    cow, sofa = VOC_CLASSES.index("cow"), VOC_CLASSES.index("sofa")
    assert per_class["precision"][cow] is None and per_class["recall"][cow] is None and per_class["f1"][cow] is None
    assert (per_class["precision"][sofa], per_class["recall"][sofa], per_class["f1"][sofa]) == (0.0, 0.0, 0.0)
    for c, pair in enumerate(expected):
        if pair is not None:
            assert (per_class["precision"][c], per_class["recall"][c]) == pytest.approx(pair, abs=1e-12)


def test_top3_ties_go_to_the_lower_class_index():
    scores = np.array([[0.9, 0.2, 0.2, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.8, 0.8, 0.3]])
    chosen = top_k(scores, 3)
    assert chosen.tolist() == [[True, True, True, False, False], [True, True, True, False, False],
                               [True, False, True, True, False]]


def test_a_perfect_and_an_empty_prediction():
    states = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.int8)
    perfect = label_metrics(states, np.where(states == 1, 0.9, 0.1), ["a", "b", "c"])["thresholded"]
    assert perfect == {"CP": 1.0, "CR": 1.0, "CF1": 1.0, "OP": 1.0, "OR": 1.0, "OF1": 1.0}
    nothing = label_metrics(states, np.full((3, 3), 0.2), ["a", "b", "c"])
    assert nothing["thresholded"] == {"CP": 0.0, "CR": 0.0, "CF1": 0.0, "OP": 0.0, "OR": 0.0, "OF1": 0.0}
    # fewer classes than 3: every class of every image is in its "top 3"
    assert nothing["top3"]["CR"] == 1.0 and nothing["top3"]["OP"] == pytest.approx(1 / 3)


def test_without_any_positive_the_class_means_are_none():
    states = -np.ones((4, 3), dtype=np.int8)
    means = label_metrics(states, np.full((4, 3), 0.7), ["a", "b", "c"])["thresholded"]
    assert means == {"CP": None, "CR": None, "CF1": None, "OP": 0.0, "OR": 0.0, "OF1": 0.0}


def test_average_precisions_carries_them():
    states = np.array([[1, -1], [-1, 1], [1, 1]], dtype=np.int8)
    scores = np.array([[0.6, 0.4], [0.2, 0.7], [0.4, 0.9]])
    m = average_precisions(states, scores, ["a", "b"])
    assert m["thresholded"]["CR"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert m["thresholded"]["OP"] == pytest.approx(3 / 3) and m["thresholded"]["OR"] == pytest.approx(3 / 4)
    assert m["per_class"]["recall"] == pytest.approx([0.5, 1.0])
