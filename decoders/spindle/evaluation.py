"""``closedloop evaluate`` for spindle models: the causal online detector run over whole recordings.

Every recording of the spec is fed, in 1 s chunks and at its own rate, to a fresh
:class:`~decoders.spindle.detector.SpindleDetector` built from the model file — the same object a
session's ``spindle-gru`` decoder runs (chunk invariance is tested, so this equals feeding it
sample by sample). Its events are scored against the reference annotations with one-to-one
matching at IoU >= 0.2.

JSON keys: ``precision``, ``recall``, ``f1``, ``median_delay_s`` and ``p90_delay_s`` (detection
start minus expert onset, s, over matched events), ``n_detected``, ``n_reference``, ``n_matched``,
``per_recording`` (the same scores per recording path) and ``detections`` (per recording path,
the ``[start_s, end_s]`` of every detected event).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from decoders.card import ModelCard
from decoders.dataset import DatasetSpec
from decoders.spindle.data import SpindleOptions, load_spindle_recordings
from decoders.spindle.detector import OrtStepModel, SpindleDetector, StepModel, detector_from_card
from decoders.spindle.events import EventScore, score_events

__all__ = ["detect_causally", "evaluate_spindle"]


def detect_causally(
    model: StepModel,
    path: str | os.PathLike[str],
    card: ModelCard,
    signal: np.ndarray,
    sfreq: float,
    chunk_s: float = 1.0,
) -> list[list[float]]:
    """Run the online detector over one recording (µV, ``sfreq`` Hz) in chunks; return ``[start_s, end_s]`` events."""
    front, settings = detector_from_card(path, card)
    det = SpindleDetector(model, sfreq, front, settings)
    step = max(1, round(chunk_s * sfreq))
    for i in range(0, signal.size, step):
        det.process(signal[i : i + step])
    return det.events_s()


def evaluate_spindle(path: Path, card: ModelCard, spec: DatasetSpec) -> dict[str, Any]:
    """Evaluator registered for paradigm ``spindle`` (see the module docstring)."""
    opts = SpindleOptions.from_spec(spec)
    recs = load_spindle_recordings(spec, opts)
    model = OrtStepModel(path)
    total = EventScore()
    detections: dict[str, list[list[float]]] = {}
    per_recording: dict[str, Any] = {}
    for r in recs:
        events = detect_causally(model, path, card, r.signal, r.sfreq)
        total.add(events, r.reference)
        key = str(r.path)
        detections[key] = [[round(a, 4), round(b, 4)] for a, b in events]
        per_recording[key] = score_events(events, r.reference)
    return {**total.summary(), "per_recording": per_recording, "detections": detections}
