"""Per-class average precision and mAP, as docs/SPEC.md defines them (pure numpy + sklearn).

Two figures come out of the same (states, scores) arrays:

- the headline "ap"/"map": sklearn's `average_precision_score` over ALL images of the split,
  positive = devkit state 1. An image whose only instances of a class are `difficult`
  (state 0) counts as negative, as in the reference loader that dropped difficult objects.
- "ap_voc07"/"map_voc07": the VOC2007 devkit's 11-point interpolated AP (VOCevalcls.m),
  where images with state 0 are ignored for that class (neither positive nor negative),
  computed exactly as the Python ports that papers report (py-faster-rcnn
  `voc_eval.voc_ap(use_07_metric=True)`, detectron, mmdet): thresholds
  `np.arange(0., 1.1, 0.1)` compared as floats with recall = tp / npos in float64. Those
  thresholds are 3 * 0.1 = 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001,
  so a recall of exactly 0.3, 0.6 or 0.7 (e.g. 3 of 10 positives found) does not reach its
  point. Users compare this figure with papers, so we keep the quirk rather than compare
  in exact tenths.

Every AP is clipped to [0, 1]: sklearn's sum of recall steps times precision can land one ulp
above 1 (1.0000000000000002 for a perfect ranking of 9 positives among 11 images), and an AP
above 1 in summary.json or per_class_ap.csv reads as a bug. The clip moves nothing but that ulp.

Any class list works (VOC's 20 or a data set's own): `names` gives the columns. Data sets other
than VOC have no difficult flag (states 1/-1 only), so there both figures count every image.

A class with no positive image has no AP (sklearn would say 0.0 with a warning): it is
None in the lists, named in "missing" and left out of the means.

Beside the APs, the same arrays give the thresholded and top-3 figures of ML-GCN/ASL/mmpretrain
(trainer.evaluation.label_metrics), so every labelled evaluation reports both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainer.evaluation.label_metrics import label_metrics

# The ports' thresholds, float quirks included (see the module docstring): not k / 10.
VOC07_RECALL_POINTS: np.ndarray = np.arange(0.0, 1.1, 0.1)


def voc07_ap(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """11-point interpolated AP of one class, as py-faster-rcnn's voc_ap(use_07_metric=True).

    labels: devkit states 1 (positive), 0 (difficult only: ignored), -1 (negative).
    Returns None when no image is positive. Ties are ranked in input order, as the
    devkit's stable sort does.
    """
    kept = labels != 0
    labels, scores = labels[kept], scores[kept]
    num_pos = int(np.sum(labels == 1))
    if num_pos == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order] == 1)
    fp = np.cumsum(labels[order] == -1)
    recall = tp / np.float64(num_pos)
    precision = tp / (tp + fp)  # tp + fp >= 1: ignored images were removed above
    ap = 0.0
    for t in VOC07_RECALL_POINTS:
        # ap += p / 11 as py-faster-rcnn sums, not np.mean: its value to the last bit.
        ap += precision[recall >= t].max(initial=0.0) / 11.0
    return _unit(ap)


def _unit(value: float) -> float:
    """`value` clipped to [0, 1] (float rounding only: see the module docstring)."""
    return min(1.0, max(0.0, float(value)))


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _check_inputs(states: np.ndarray, scores: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    states, scores = np.asarray(states), np.asarray(scores, dtype=np.float64)
    expected = f"[N, {num_classes}] (one column per class, no background column)"
    if states.ndim != 2 or states.shape[1] != num_classes:
        raise ValueError(f"states must be {expected}, got shape {states.shape}")
    if scores.shape != states.shape:
        raise ValueError(f"scores shape {scores.shape} does not match states shape {states.shape}")
    if states.shape[0] == 0:
        raise ValueError("no images to score: states and scores are empty")
    bad_states = np.setdiff1d(np.unique(states), [-1, 0, 1])
    if bad_states.size:
        raise ValueError(f"states must be devkit labels 1/0/-1, found {bad_states.tolist()}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores hold {int(np.sum(~np.isfinite(scores)))} NaN/inf values "
                         "(diverged training or a bad checkpoint?)")
    return states, scores


def average_precisions(states: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> dict:
    """AP per class and their means for one split.

    states: int [N, C] labels (1 present, 0 difficult only, -1 absent), C = len(names).
    scores: float [N, C] any monotone score per class (sigmoid probabilities here).
    Returns {"classes": names, "ap", "ap_voc07": list of C float|None in that order, "map",
    "map_voc07": float|None (None only if no class has a positive), "missing": class names
    without a positive image, "positives": images with state 1 per class, and label_metrics's
    "thresholded", "top3" (CP, CR, CF1, OP, OR, OF1) and "per_class" (precision, recall, F1 at 0.5)}.
    """
    import sklearn.metrics  # here, not at the top: ~1 s of a run's start, and the first step needs none of it

    states, scores = _check_inputs(states, scores, len(names))
    positives = [int(n) for n in np.sum(states == 1, axis=0)]
    ap: list[float | None] = []
    ap_voc07: list[float | None] = []
    for c in range(len(names)):
        if positives[c] == 0:
            ap.append(None)
            ap_voc07.append(None)
            continue
        ap.append(_unit(sklearn.metrics.average_precision_score(states[:, c] == 1, scores[:, c])))
        ap_voc07.append(voc07_ap(states[:, c], scores[:, c]))
    return {
        "classes": list(names),
        "ap": ap,
        "map": _mean_or_none(ap),
        "ap_voc07": ap_voc07,
        "map_voc07": _mean_or_none(ap_voc07),
        "missing": [name for name, n in zip(names, positives) if n == 0],
        "positives": positives,
        **label_metrics(states, scores, names),
    }
