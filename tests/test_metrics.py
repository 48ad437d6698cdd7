"""AP/mAP as docs/SPEC.md defines them: hand-worked cases, sklearn, and the VOC07 devkit formula."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from shards.classes import VOC, VOC_CLASSES
from trainer.evaluation.metrics import average_precisions, voc07_ap


def _one_class(labels: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Put one class's labels/scores in column 0 of a [N, 20] problem; other columns get
    one positive each so that only column 0 is under test."""
    n = len(labels)
    states = np.full((n, VOC.num_classes), -1, dtype=np.int8)
    states[0, 1:] = 1
    states[:, 0] = labels
    all_scores = np.random.default_rng(0).random((n, VOC.num_classes))
    all_scores[:, 0] = scores
    return states, all_scores


def _voc_ap_07(rec: np.ndarray, prec: np.ndarray) -> float:
    """py-faster-rcnn lib/datasets/voc_eval.py voc_ap(rec, prec, use_07_metric=True), as written there."""
    ap = 0.
    for t in np.arange(0., 1.1, 0.1):
        if np.sum(rec >= t) == 0:
            p = 0
        else:
            p = np.max(prec[rec >= t])
        ap = ap + p / 11.
    return ap


def _reference_voc07(gt: np.ndarray, out: np.ndarray) -> float:
    """VOCevalcls.m's ranking (stable sort; difficult-only images stay in the ranking but count
    as neither tp nor fp) and py-faster-rcnn's float rec/prec, fed to _voc_ap_07."""
    si = np.argsort(-out, kind="stable")
    tp = np.cumsum(gt[si] > 0).astype(np.float64)
    fp = np.cumsum(gt[si] < 0).astype(np.float64)
    rec = tp / float(np.sum(gt > 0))
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)  # voc_eval's guard against 0/0
    return _voc_ap_07(rec, prec)


def test_hand_worked_example():
    # Ranked: pos, neg, pos, neg. Headline AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # 11-point: precision 1 for recall <= 0.5 (6 points), 2/3 above (5 points).
    states, scores = _one_class([1, -1, 1, -1], [0.9, 0.8, 0.7, 0.1])
    m = average_precisions(states, scores, VOC_CLASSES)
    assert m["ap"][0] == pytest.approx(5 / 6)
    assert m["ap_voc07"][0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert m["positives"][0] == 2


def test_difficult_is_negative_for_headline_and_ignored_for_voc07():
    # A difficult-only image (state 0) ranked second, between the two first images above.
    states, scores = _one_class([1, 0, -1, 1, -1], [0.9, 0.85, 0.8, 0.7, 0.1])
    m = average_precisions(states, scores, VOC_CLASSES)
    # Headline: it is a negative, so the second positive is found at rank 4: 1/2 + 1/2 * 2/4.
    assert m["ap"][0] == pytest.approx(0.75)
    # VOC07: it is ignored, so the figure equals the hand-worked example without it.
    assert m["ap_voc07"][0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_perfect_and_reversed_ranking():
    states, scores = _one_class([1, 1, -1, -1], [0.9, 0.8, 0.2, 0.1])
    assert average_precisions(states, scores, VOC_CLASSES)["ap"][0] == pytest.approx(1.0)
    assert average_precisions(states, scores, VOC_CLASSES)["ap_voc07"][0] == pytest.approx(1.0)
    states, scores = _one_class([-1, -1, 1, 1], [0.9, 0.8, 0.2, 0.1])
    # Positives at ranks 3 and 4: 1/2 * 1/3 + 1/2 * 2/4.
    assert average_precisions(states, scores, VOC_CLASSES)["ap"][0] == pytest.approx(1 / 6 + 1 / 4)


def test_ap_of_a_perfect_ranking_is_exactly_1_where_sklearn_says_more():
    # 9 positives ranked above 2 negatives: sklearn sums its recall steps to 1.0000000000000002.
    labels, scores = [1] * 9 + [-1] * 2, list(np.linspace(1, 0, 11))
    assert average_precision_score(np.array(labels) == 1, scores) > 1.0  # the rounding the clip is for
    m = average_precisions(*_one_class(labels, scores), VOC_CLASSES)
    assert m["ap"][0] == 1.0 and m["ap_voc07"][0] == 1.0
    assert all(0.0 <= ap <= 1.0 for ap in m["ap"] + m["ap_voc07"] + [m["map"], m["map_voc07"]])


def test_equals_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    states = rng.choice([-1, 0, 1], size=(200, VOC.num_classes), p=[0.7, 0.05, 0.25]).astype(np.int8)
    scores = rng.random((200, VOC.num_classes)).astype(np.float32)
    m = average_precisions(states, scores, VOC_CLASSES)
    expected = [average_precision_score(states[:, c] == 1, scores[:, c]) for c in range(VOC.num_classes)]
    assert m["ap"] == pytest.approx(expected)
    assert m["map"] == pytest.approx(np.mean(expected))
    assert m["missing"] == []


@pytest.mark.parametrize("k", [3, 6, 7])
def test_voc07_recall_of_exactly_k_tenths_misses_point_k_as_in_the_ports(k):
    # 10 positives: k ranked on top reach recall exactly k/10 at precision 1; the other
    # 10 - k come after 10 negatives, ending at precision 10/20. np.arange(0, 1.1, 0.1)[k]
    # is 0.30000000000000004 / 0.6000000000000001 / 0.7000000000000001 > k/10, so point k
    # gets 0.5, not 1: points 0 .. k-1 get 1 and points k .. 10 get 0.5. Comparing in exact
    # tenths would give point k a 1.
    labels = np.array([1] * k + [-1] * 10 + [1] * (10 - k))
    scores = np.linspace(1, 0, labels.size)
    ours = voc07_ap(labels, scores)
    assert ours == pytest.approx(_reference_voc07(labels, scores), abs=1e-12)
    assert ours == pytest.approx((k * 1 + (11 - k) * 0.5) / 11, abs=1e-12)


@pytest.mark.parametrize("num_pos", [10, 20, 30])
def test_voc07_matches_the_py_faster_rcnn_formula_on_random_data(num_pos):
    # Multiples of 10 positives put recall on exact tenths, where the float thresholds matter;
    # difficult-only images (0) are ignored, and scores rounded to 0.05 tie often (stable order).
    rng = np.random.default_rng(num_pos)
    for trial in range(30):
        gt = np.array([1] * num_pos + [0] * rng.integers(0, 8) + [-1] * rng.integers(5, 60))
        rng.shuffle(gt)
        out = rng.random(gt.size)
        if trial % 2:
            out = np.round(out * 20) / 20
        assert voc07_ap(gt, out) == pytest.approx(_reference_voc07(gt, out), abs=1e-12)


def test_class_without_positives_is_missing_and_left_out_of_the_mean():
    rng = np.random.default_rng(3)
    states = rng.choice([-1, 1], size=(30, VOC.num_classes)).astype(np.int8)
    states[:, VOC_CLASSES.index("cow")] = -1
    states[:, VOC_CLASSES.index("sofa")] = np.where(states[:, VOC_CLASSES.index("sofa")] == 1, 0, -1)  # difficult only
    scores = rng.random((30, VOC.num_classes))
    m = average_precisions(states, scores, VOC_CLASSES)
    assert m["missing"] == ["cow", "sofa"]
    for key in ("ap", "ap_voc07"):
        assert m[key][VOC_CLASSES.index("cow")] is None and m[key][VOC_CLASSES.index("sofa")] is None
    present = [ap for ap in m["ap"] if ap is not None]
    assert len(present) == 18
    assert m["map"] == pytest.approx(np.mean(present))
    assert m["map_voc07"] == pytest.approx(np.mean([ap for ap in m["ap_voc07"] if ap is not None]))


def test_no_positives_at_all_gives_no_map():
    states = np.full((5, VOC.num_classes), -1, dtype=np.int8)
    m = average_precisions(states, np.zeros((5, VOC.num_classes)), VOC_CLASSES)
    assert m["map"] is None and m["map_voc07"] is None
    assert m["missing"] == list(VOC_CLASSES)


@pytest.mark.parametrize(
    "states, scores, message",
    [
        (np.ones((4, 21)), np.zeros((4, 21)), "background"),
        (np.ones((4, 20)), np.zeros((5, 20)), "does not match"),
        (np.full((4, 20), 2), np.zeros((4, 20)), "1/0/-1"),
        (np.ones((4, 20)), np.full((4, 20), np.nan), "NaN"),
        (np.ones((0, 20)), np.zeros((0, 20)), "empty"),
    ],
)
def test_bad_input_is_refused(states, scores, message):
    with pytest.raises(ValueError, match=message):
        average_precisions(states, scores, VOC_CLASSES)
