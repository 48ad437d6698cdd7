"""The thresholded and top-k metrics that ML-GCN, ASL and mmpretrain report beside mAP.

Where mAP ranks the scores, these decide: a class is predicted for an image when its score is at
least 0.5 (`thresholded`), or when it is among the image's 3 highest scores (`top3`, ties to the
lower class index). A class is positive for an image when its state is 1, the headline rule of
trainer.evaluation.metrics (VOC's difficult-only images count as negatives).

Per class c, with Nc correct predictions, Np predictions and Ng positives:
    CP = mean of Nc/Np (0 when Np = 0), CR = mean of Nc/Ng, over the classes with positives
         (the classes AP leaves out are left out here too);
    OP = sum Nc / sum Np, OR = sum Nc / sum Ng, over every class;
    CF1 = 2 CP CR / (CP + CR), OF1 = 2 OP OR / (OP + OR), 0 when both are 0.
CF1 is the F1 of the two means, as ML-GCN and ASL compute it, not the mean of the per-class F1s
(mmpretrain's macro "f1-score"): the two differ whenever precision and recall vary across
classes, so only a CF1 compares with those papers' tables (docs/training.md, "Metrics").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLD = 0.5  # a sigmoid probability: the point where a logit turns positive
TOP_K = 3
MEANS: tuple[str, ...] = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def thresholded(scores: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """bool [N, C]: the classes each image is predicted to show, score >= threshold."""
    return np.asarray(scores) >= threshold


def top_k(scores: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """bool [N, C]: each image's k highest-scoring classes (all of them when there are fewer); a
    stable sort of the negated scores puts equal scores in class order, so ties go to the lower index."""
    scores = np.asarray(scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    chosen = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(chosen, order, True, axis=1)
    return chosen


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def decision_metrics(positive: np.ndarray, predicted: np.ndarray) -> dict:
    """CP, CR, CF1, OP, OR, OF1 (see the module docstring) and the per-class precision, recall and F1.

    positive, predicted: bool [N, C]. Returns {"means": {CP..OF1: float | None}, "precision",
    "recall", "f1": lists of C float | None}. A class without positives has None in the lists;
    CP, CR and CF1 are None when no class has a positive (as mAP is then).
    """
    import sklearn.metrics  # deferred like metrics.py's: a run's first step needs none of it

    positive, predicted = np.asarray(positive, dtype=bool), np.asarray(predicted, dtype=bool)
    precision, recall, f1, support = sklearn.metrics.precision_recall_fscore_support(
        positive, predicted, average=None, zero_division=0)
    overall_p, overall_r, overall_f1, _ = sklearn.metrics.precision_recall_fscore_support(
        positive, predicted, average="micro", zero_division=0)
    scored = support > 0
    means: dict[str, float | None] = dict.fromkeys(("CP", "CR", "CF1"))
    if scored.any():
        cp, cr = float(np.mean(precision[scored])), float(np.mean(recall[scored]))
        means.update(CP=cp, CR=cr, CF1=_f1(cp, cr))
    means.update(OP=float(overall_p), OR=float(overall_r), OF1=float(overall_f1))

    def per_class(values: np.ndarray) -> list[float | None]:
        return [float(v) if s else None for v, s in zip(values, scored)]

    return {"means": means, "precision": per_class(precision), "recall": per_class(recall), "f1": per_class(f1)}


def label_metrics(states: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> dict:
    """The decisions' figures of one split (states int [N, C] 1/0/-1, scores float [N, C], C = len(names)).

    Returns {"thresholded": {CP..OF1}, "top3": {CP..OF1}, "per_class": {"precision", "recall", "f1"}
    at the 0.5 threshold, lists in class order}.
    """
    positive = np.asarray(states) == 1
    at_threshold = decision_metrics(positive, thresholded(scores))
    return {
        "thresholded": at_threshold["means"],
        "top3": decision_metrics(positive, top_k(scores, min(TOP_K, len(names))))["means"],
        "per_class": {key: at_threshold[key] for key in ("precision", "recall", "f1")},
    }
