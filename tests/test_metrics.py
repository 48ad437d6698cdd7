"""AP/mAP as docs/SPEC.md defines them: hand-worked cases, sklearn, and the VOC07 devkit formula."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from shards.classes import CLASSES, NUM_CLASSES
from trainer.metrics import average_precisions, voc07_ap


def _one_class(labels: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Put one class's labels/scores in column 0 of a [N, 20] problem; other columns get
    one positive each so that only column 0 is under test."""
    n = len(labels)
    states = np.full((n, NUM_CLASSES), -1, dtype=np.int8)
    states[0, 1:] = 1
    states[:, 0] = labels
    all_scores = np.random.default_rng(0).random((n, NUM_CLASSES))
    all_scores[:, 0] = scores
    return states, all_scores


def _devkit_voc07(gt: np.ndarray, out: np.ndarray) -> float:
    """Line-by-line port of VOCevalcls.m (VOC2007 devkit), NaN precision and all."""
    si = np.argsort(-out, kind="stable")
    tp = np.cumsum(gt[si] > 0)
    fp = np.cumsum(gt[si] < 0)
    rec = tp / np.sum(gt > 0)
    with np.errstate(invalid="ignore"):
        prec = tp / (fp + tp)  # 0/0 = NaN while only ignored images have been seen
    ap = 0.0
    for t in np.arange(0, 1.1, 0.1):
        p = prec[rec >= t - 1e-12]  # MATLAB's 0:0.1:1 hits the same floats up to rounding
        p = p[~np.isnan(p)]
        ap += (p.max() if p.size else 0.0) / 11
    return ap


def test_hand_worked_example():
    # Ranked: pos, neg, pos, neg. Headline AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # 11-point: precision 1 for recall <= 0.5 (6 points), 2/3 above (5 points).
    states, scores = _one_class([1, -1, 1, -1], [0.9, 0.8, 0.7, 0.1])
    m = average_precisions(states, scores)
    assert m["ap"][0] == pytest.approx(5 / 6)
    assert m["ap_voc07"][0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert m["positives"][0] == 2


def test_difficult_is_negative_for_headline_and_ignored_for_voc07():
    # A difficult-only image (state 0) ranked second, between the two first images above.
    states, scores = _one_class([1, 0, -1, 1, -1], [0.9, 0.85, 0.8, 0.7, 0.1])
    m = average_precisions(states, scores)
    # Headline: it is a negative, so the second positive is found at rank 4: 1/2 + 1/2 * 2/4.
    assert m["ap"][0] == pytest.approx(0.75)
    # VOC07: it is ignored, so the figure equals the hand-worked example without it.
    assert m["ap_voc07"][0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_perfect_and_reversed_ranking():
    states, scores = _one_class([1, 1, -1, -1], [0.9, 0.8, 0.2, 0.1])
    assert average_precisions(states, scores)["ap"][0] == pytest.approx(1.0)
    assert average_precisions(states, scores)["ap_voc07"][0] == pytest.approx(1.0)
    states, scores = _one_class([-1, -1, 1, 1], [0.9, 0.8, 0.2, 0.1])
    # Positives at ranks 3 and 4: 1/2 * 1/3 + 1/2 * 2/4.
    assert average_precisions(states, scores)["ap"][0] == pytest.approx(1 / 6 + 1 / 4)


def test_equals_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    states = rng.choice([-1, 0, 1], size=(200, NUM_CLASSES), p=[0.7, 0.05, 0.25]).astype(np.int8)
    scores = rng.random((200, NUM_CLASSES)).astype(np.float32)
    m = average_precisions(states, scores)
    expected = [average_precision_score(states[:, c] == 1, scores[:, c]) for c in range(NUM_CLASSES)]
    assert m["ap"] == pytest.approx(expected)
    assert m["map"] == pytest.approx(np.mean(expected))
    assert m["missing"] == []


def test_voc07_recall_points_are_exact_tenths():
    # 10 positives: the first 3 ranked on top reach recall exactly 0.3 at precision 1; the
    # other 7 come after 10 negatives, ending at precision 10/20. Points 0, .1, .2, .3 get 1,
    # points .4 ... 1.0 get 0.5. (A float t = 3 * 0.1 > 3/10 would give the 0.3 point 0.5.)
    labels = np.array([1] * 3 + [-1] * 10 + [1] * 7)
    scores = np.linspace(1, 0, labels.size)
    assert voc07_ap(labels, scores) == pytest.approx((4 * 1 + 7 * 0.5) / 11)


def test_voc07_matches_devkit_port_on_random_data():
    rng = np.random.default_rng(2)
    for _ in range(20):
        gt = rng.choice([-1, 0, 1], size=60, p=[0.6, 0.15, 0.25])
        gt[0] = 1
        out = rng.random(60)
        assert voc07_ap(gt, out) == pytest.approx(_devkit_voc07(gt, out))


def test_class_without_positives_is_missing_and_left_out_of_the_mean():
    rng = np.random.default_rng(3)
    states = rng.choice([-1, 1], size=(30, NUM_CLASSES)).astype(np.int8)
    states[:, CLASSES.index("cow")] = -1
    states[:, CLASSES.index("sofa")] = np.where(states[:, CLASSES.index("sofa")] == 1, 0, -1)  # difficult only
    scores = rng.random((30, NUM_CLASSES))
    m = average_precisions(states, scores)
    assert m["missing"] == ["cow", "sofa"]
    for key in ("ap", "ap_voc07"):
        assert m[key][CLASSES.index("cow")] is None and m[key][CLASSES.index("sofa")] is None
    present = [ap for ap in m["ap"] if ap is not None]
    assert len(present) == 18
    assert m["map"] == pytest.approx(np.mean(present))
    assert m["map_voc07"] == pytest.approx(np.mean([ap for ap in m["ap_voc07"] if ap is not None]))


def test_no_positives_at_all_gives_no_map():
    states = np.full((5, NUM_CLASSES), -1, dtype=np.int8)
    m = average_precisions(states, np.zeros((5, NUM_CLASSES)))
    assert m["map"] is None and m["map_voc07"] is None
    assert m["missing"] == list(CLASSES)


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
        average_precisions(states, scores)
