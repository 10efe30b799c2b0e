"""Spindle datasets: whole recordings as input, annotations with durations as the events.

The spec's ``[spindle]`` table (all keys optional)::

    [spindle]
    event = "spindle"              # annotation description of the reference (expert) spindles
    automatic_event = "automatic"  # annotation description of another detector's events (a benchmark peer)
    channel = "C3-A1"              # channel to use; default: the recording's first channel
    line_hz = 50.0                 # mains frequency to notch (50 or 60), or 0 for none
    input_srate = 250.0            # rate (Hz) of the live stream the model card declares
    threshold = 0.0                # detection threshold; 0 = tune on the training recordings
    max_delay_s = 0.45             # tuning: best F1 among thresholds with a median delay <= this (s)
    iterations = 2000              # training steps (batches)
    batch = 32                     # sequences per batch
    seq_len = 50                   # windows per training sequence (42 samples apart)
    trigger = "all"                # all | isolated | trains
    trigger_delay_s = 0.0          # fixed delay from onset to the stimulation trigger
    isolation_s = 3.0              # "isolated": quiet time before the onset
    train_gap_s = 4.0              # "trains": max time since the previous onset
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from decoders.dataset import DatasetError, DatasetSpec, RecordingSpec, read_recording
from decoders.spindle.events import merge_intervals
from decoders.spindle.preprocessing import UnsupportedRateError, resampling_ratio

__all__ = ["SpindleOptions", "SpindleRecording", "load_spindle_recordings", "read_spindle_recording"]

_DEFAULTS: dict[str, Any] = {
    "event": "spindle",
    "automatic_event": "automatic",
    "channel": "",
    "line_hz": 50.0,
    "input_srate": 250.0,
    "threshold": 0.0,
    "max_delay_s": 0.45,
    "iterations": 2000,
    "batch": 32,
    "seq_len": 50,
    "trigger": "all",
    "trigger_delay_s": 0.0,
    "isolation_s": 3.0,
    "train_gap_s": 4.0,
}


def _type_ok(value: Any, default: Any) -> bool:
    """Whether ``value`` has the kind of ``default``: str, int (not bool), or a finite number >= 0."""
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if isinstance(default, int):
        return isinstance(value, int)
    return isinstance(value, int | float) and bool(np.isfinite(value)) and value >= 0


@dataclass(frozen=True)
class SpindleOptions:
    """The validated ``[spindle]`` table of a dataset spec (see the module docstring)."""

    event: str
    automatic_event: str
    channel: str
    line_hz: float
    input_srate: float
    threshold: float
    max_delay_s: float
    iterations: int
    batch: int
    seq_len: int
    trigger: str
    trigger_delay_s: float
    isolation_s: float
    train_gap_s: float

    @classmethod
    def from_spec(cls, spec: DatasetSpec, overrides: dict[str, Any] | None = None) -> SpindleOptions:
        """Read ``spec.tables["spindle"]`` (plus ``overrides``); DatasetError naming the key on bad values."""
        table = {**spec.table("spindle"), **(overrides or {})}
        unknown = sorted(set(table) - set(_DEFAULTS))
        if unknown:
            raise DatasetError(
                f"dataset spec {str(spec.path)!r}: [spindle] has unknown key(s) {unknown}; known: {sorted(_DEFAULTS)}."
            )
        values = {**_DEFAULTS, **table}
        for key, default in _DEFAULTS.items():
            if not _type_ok(values[key], default):
                rule = {str: "a string", int: "an integer", float: "a number >= 0"}[type(default)]
                raise DatasetError(
                    f"dataset spec {str(spec.path)!r}: [spindle] {key} must be {rule}, got {values[key]!r}."
                )
        for key in ("iterations", "batch", "seq_len"):
            if values[key] < 1:
                raise DatasetError(f"dataset spec {str(spec.path)!r}: [spindle] {key} must be >= 1, got {values[key]}.")
        if not values["threshold"] < 1.0:
            raise DatasetError(
                f"dataset spec {str(spec.path)!r}: [spindle] threshold must be in (0, 1) or 0 (tune), "
                f"got {values['threshold']}."
            )
        try:
            resampling_ratio(float(values["input_srate"]), f"dataset spec {str(spec.path)!r}: [spindle] input_srate")
        except UnsupportedRateError as err:
            raise DatasetError(str(err)) from err
        values = {k: float(v) if isinstance(_DEFAULTS[k], float) else v for k, v in values.items()}
        return cls(**values)


@dataclass(frozen=True, eq=False)
class SpindleRecording:
    """One recording, ready for the detector.

    Attributes
    ----------
    path : Path
    signal : ndarray, shape (n_samples,), float64, µV
        The chosen channel.
    sfreq : float
        Hz.
    channel : str
    reference : list of [start_s, end_s]
        Reference (expert) spindles, overlapping annotations merged (union).
    automatic : list of [start_s, end_s]
        Events of another detector stored in the file, if any.
    """

    path: Path
    signal: np.ndarray
    sfreq: float
    channel: str
    reference: list[list[float]]
    automatic: list[list[float]]

    @property
    def duration_s(self) -> float:
        """Length in s."""
        return self.signal.size / self.sfreq


def read_spindle_recording(rec: RecordingSpec, spec: DatasetSpec, options: SpindleOptions) -> SpindleRecording:
    """Read one recording of a spindle spec; DatasetError for an unsupported rate or a missing channel."""
    r = read_recording(rec, spec)
    try:
        resampling_ratio(r.sfreq, f"dataset spec {str(spec.path)!r}, recording {str(rec.path)!r}")
    except UnsupportedRateError as err:
        raise DatasetError(str(err)) from err
    channel = rec.options.get("channel", options.channel) or r.ch_names[0]
    if channel not in r.ch_names:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}, recording {str(rec.path)!r}: channel {channel!r} "
            f"([spindle] channel) is not in it; it has {r.ch_names}."
        )
    x = r.data[:, r.ch_names.index(channel)].astype(np.float64)
    ref = [[e.onset_s, e.onset_s + e.duration_s] for e in r.events if e.description == options.event]
    if any(b <= a for a, b in ref):
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}, recording {str(rec.path)!r}: spindle annotations "
            f"({options.event!r}) need a duration > 0."
        )
    auto = [[e.onset_s, e.onset_s + e.duration_s] for e in r.events if e.description == options.automatic_event]
    return SpindleRecording(rec.path, x, r.sfreq, channel, merge_intervals(ref), merge_intervals(auto))


def load_spindle_recordings(spec: DatasetSpec, options: SpindleOptions | None = None) -> list[SpindleRecording]:
    """Every recording of a spindle spec, in spec order."""
    opts = options or SpindleOptions.from_spec(spec)
    return [read_spindle_recording(r, spec, opts) for r in spec.recordings]
