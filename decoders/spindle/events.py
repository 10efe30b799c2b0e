"""Event-level scoring of spindle detections: one-to-one matching at IoU >= 0.2, precision/recall/F1, delays.

Events are ``[start_s, end_s]`` pairs in s from the start of a recording. A detection and an
expert event *match* when their intersection over union is at least ``min_iou``; matching is
one-to-one and maximises the summed IoU (Hungarian assignment, ``scipy.optimize``). The delay of
a matched detection is ``detection start - expert onset`` (negative when it fires early).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["MIN_IOU", "EventScore", "iou_matrix", "labels_mask", "match_events", "merge_intervals", "score_events"]

#: Default IoU needed for a detection to count as finding an expert event.
MIN_IOU = 0.2


def merge_intervals(intervals: Sequence[Sequence[float]]) -> list[list[float]]:
    """Union of intervals ``[start, end]`` (overlapping or touching ones merged), sorted by start."""
    out: list[list[float]] = []
    for a, b in sorted((float(a), float(b)) for a, b in intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def labels_mask(intervals: Sequence[Sequence[float]], n_samples: int, srate: float) -> np.ndarray:
    """Boolean mask of length ``n_samples`` at ``srate`` Hz, true inside any interval (s)."""
    mask = np.zeros(n_samples, dtype=bool)
    for a, b in intervals:
        i0 = max(0, int(np.ceil(a * srate)))
        i1 = min(n_samples, int(np.floor(b * srate)) + 1)
        if i1 > i0:
            mask[i0:i1] = True
    return mask


def iou_matrix(detected: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]) -> np.ndarray:
    """IoU of every detection (rows) with every reference event (columns)."""
    d = np.asarray(detected, dtype=np.float64).reshape(-1, 2)
    r = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(d[:, None, 1], r[None, :, 1]) - np.maximum(d[:, None, 0], r[None, :, 0]), 0, None)
    union = np.maximum(d[:, None, 1], r[None, :, 1]) - np.minimum(d[:, None, 0], r[None, :, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def match_events(
    detected: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], min_iou: float = MIN_IOU
) -> list[tuple[int, int]]:
    """One-to-one pairs ``(detection index, reference index)`` with IoU >= ``min_iou``, maximising total IoU."""
    if len(detected) == 0 or len(reference) == 0:
        return []
    iou = iou_matrix(detected, reference)
    weight = np.where(iou >= min_iou, iou, 0.0)
    rows, cols = linear_sum_assignment(-weight)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if iou[i, j] >= min_iou]


@dataclass
class EventScore:
    """Counts and delays pooled over recordings; ``add`` one recording at a time."""

    n_true_positive: int = 0
    n_detected: int = 0
    n_reference: int = 0
    delays_s: list[float] = field(default_factory=list)

    def add(
        self, detected: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], min_iou: float = MIN_IOU
    ) -> list[tuple[int, int]]:
        """Score one recording; return its matches."""
        pairs = match_events(detected, reference, min_iou)
        self.n_true_positive += len(pairs)
        self.n_detected += len(detected)
        self.n_reference += len(reference)
        self.delays_s.extend(float(detected[i][0]) - float(reference[j][0]) for i, j in pairs)
        return pairs

    @property
    def precision(self) -> float:
        """Matched detections / detections (0 when nothing was detected)."""
        return self.n_true_positive / self.n_detected if self.n_detected else 0.0

    @property
    def recall(self) -> float:
        """Matched reference events / reference events."""
        return self.n_true_positive / self.n_reference if self.n_reference else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def summary(self) -> dict[str, float | int | None]:
        """precision, recall, f1, median/p90 delay (s; None without matches) and counts."""
        d = np.asarray(self.delays_s)
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "median_delay_s": float(np.median(d)) if d.size else None,
            "p90_delay_s": float(np.percentile(d, 90)) if d.size else None,
            "n_detected": self.n_detected,
            "n_reference": self.n_reference,
            "n_matched": self.n_true_positive,
        }


def score_events(
    detected: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], min_iou: float = MIN_IOU
) -> dict[str, float | int | None]:
    """:meth:`EventScore.summary` for one recording."""
    s = EventScore()
    s.add(detected, reference, min_iou)
    return s.summary()
