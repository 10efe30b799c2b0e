"""The stateful online spindle detector: front end -> staggered GRU copies -> threshold -> events and triggers.

Timing (all at the network's 250 Hz): a *decision* is taken after every ``hop`` = 6 samples
(24 ms) once ``window`` = 54 samples have been seen, on the newest 54 standardised samples.
Decisions cycle through ``stride // hop`` = 7 copies of the network; each copy carries its own
GRU hidden state and so advances every ``stride`` = 42 samples, as in Portiloop, while the
copies together give a decision every 24 ms. Decision ``k`` is taken at 250 Hz sample index
``i = window - 1 + ... `` such that ``(i + 1) % hop == 0`` and uses copy ``((i + 1) // hop) % n_copies``.

Event logic per decision (probability ``p``, time ``t = i / 250`` s):

- **onset** when ``p >= threshold``, no event is active, at least ``refractory_s`` (0.4 s)
  passed since the previous onset and the stream is past its ``warmup_s`` (1 s); the event is
  then *active*;
- **end** at the ``end_hold``-th consecutive decision with ``p < threshold`` (7 decisions = 168 ms,
  one output of every copy, so one copy's dip does not split a spindle); the detected event is
  ``[onset, end]``;
- **trigger** (the stimulation cue) depends on the variant: ``"all"`` every onset,
  ``"isolated"`` only onsets at least ``isolation_s`` after the previous event ended,
  ``"trains"`` only onsets within ``train_gap_s`` of the previous onset; with
  ``trigger_delay_s > 0`` the trigger fires at the first decision ``trigger_delay_s`` after the
  onset (a fixed delay, e.g. to aim at a spindle's later phase).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from acquisition.validation import check_int, check_option, check_positive
from decoders.spindle.preprocessing import MODEL_SRATE, FrontEndSettings, SpindleFrontEnd

__all__ = [
    "TRIGGER_VARIANTS",
    "DecisionLog",
    "DetectorSettings",
    "EventTracker",
    "OrtStepModel",
    "SpindleDetector",
    "StepModel",
    "detector_from_card",
]

TRIGGER_VARIANTS = ("all", "isolated", "trains")


@dataclass(frozen=True)
class DetectorSettings:
    """Decision cadence, threshold and trigger variant (stored in the card's ``provenance["detector"]``).

    Parameters
    ----------
    threshold : float
        Probability at or above which a spindle is detected (0-1).
    refractory_s : float
        Minimum time between two onsets (s).
    window : int
        Network input length in 250 Hz samples (54 = 216 ms).
    stride : int
        Samples between two steps of one network copy (42 = 168 ms).
    hop : int
        Samples between two decisions (6 = 24 ms); must divide ``stride``.
    trigger : str
        ``"all"``, ``"isolated"`` or ``"trains"`` (see the module docstring).
    trigger_delay_s : float
        Fixed delay from onset to trigger (s, >= 0).
    isolation_s : float
        ``"isolated"``: minimum quiet time before the onset (s).
    train_gap_s : float
        ``"trains"``: maximum time from the previous onset (s).
    end_hold : int
        Consecutive decisions below the threshold that end an event.
    warmup_s : float
        No onset during the first ``warmup_s`` s of a stream, while the running standardisation
        settles (1 s, longer than the session window of 0.96 s, so a live pipeline's first call
        and an offline run agree).
    """

    threshold: float = 0.5
    refractory_s: float = 0.4
    window: int = 54
    stride: int = 42
    hop: int = 6
    trigger: str = "all"
    trigger_delay_s: float = 0.0
    isolation_s: float = 3.0
    train_gap_s: float = 4.0
    end_hold: int = 7
    warmup_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"detector threshold must lie in (0, 1), got {self.threshold!r}.")
        check_positive(self.refractory_s, "detector refractory_s", allow_zero=True)
        check_int(self.window, "detector window", minimum=2)
        check_int(self.stride, "detector stride", minimum=1)
        check_int(self.hop, "detector hop", minimum=1)
        if self.stride % self.hop:
            raise ValueError(f"detector hop ({self.hop}) must divide stride ({self.stride}).")
        check_option(self.trigger, TRIGGER_VARIANTS, "detector trigger")
        check_positive(self.trigger_delay_s, "detector trigger_delay_s", allow_zero=True)
        check_positive(self.isolation_s, "detector isolation_s", allow_zero=True)
        check_positive(self.train_gap_s, "detector train_gap_s", allow_zero=True)
        check_int(self.end_hold, "detector end_hold", minimum=1)
        check_positive(self.warmup_s, "detector warmup_s", allow_zero=True)

    @property
    def n_copies(self) -> int:
        """Staggered network copies, ``stride // hop``."""
        return self.stride // self.hop

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for the model card."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> DetectorSettings:
        """Inverse of :meth:`to_dict`; ValueError naming ``where`` on unknown keys."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"{where}: unknown detector setting(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**d)


class StepModel(Protocol):
    """One step of the network for a batch of copies."""

    hidden_size: int

    def step(self, windows: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``windows`` (batch, window) float32 and ``hidden`` (batch, hidden) -> (prob (batch,), new hidden)."""
        ...


class OrtStepModel:
    """The exported step graph run by onnxruntime on one CPU thread.

    Graph inputs ``window`` (batch, 54) float32 and ``h_in`` (batch, hidden) float32; outputs
    ``prob`` (batch,) and ``h_out`` (batch, hidden).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.path = Path(path)
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        names = {i.name: i for i in self._session.get_inputs()}
        if set(names) != {"window", "h_in"}:
            raise ValueError(
                f"model {str(path)!r}: a spindle-gru graph must have inputs 'window' and 'h_in', found {sorted(names)}."
            )
        self.hidden_size = int(names["h_in"].shape[1])
        self.window = int(names["window"].shape[1])

    def step(self, windows: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one step; see :class:`StepModel`."""
        prob, h = self._session.run(["prob", "h_out"], {"window": windows, "h_in": hidden})
        return np.asarray(prob, dtype=np.float64).reshape(-1), np.asarray(h, dtype=np.float32)


@dataclass
class DecisionLog:
    """Decisions of one :meth:`SpindleDetector.process` call (arrays of equal length).

    Attributes
    ----------
    index : ndarray of int
        250 Hz sample index of each decision's last sample (time ``index / 250`` s from the start).
    prob : ndarray of float
        Network output (0-1).
    onset, trigger, active : ndarray of bool
        Event onset at this decision; stimulation trigger; an event is active after it.
    """

    index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    prob: np.ndarray = field(default_factory=lambda: np.zeros(0))
    onset: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    trigger: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return int(self.index.size)

    @staticmethod
    def concat(logs: list[DecisionLog]) -> DecisionLog:
        """Join several logs in order."""
        if not logs:
            return DecisionLog()
        return DecisionLog(*(np.concatenate([getattr(g, k) for g in logs]) for k in DecisionLog.__dataclass_fields__))


class EventTracker:
    """Threshold, refractory period, event extent and trigger variants, one decision at a time.

    Times are 250 Hz sample indices (ints) so that online and offline runs agree exactly.
    ``events`` lists ``[onset_index, end_index]`` of finished events; ``open_onset`` the onset of
    an active one.
    """

    def __init__(self, settings: DetectorSettings) -> None:
        self.s = settings
        self._refractory = round(settings.refractory_s * MODEL_SRATE)
        self._delay = round(settings.trigger_delay_s * MODEL_SRATE)
        self._isolation = round(settings.isolation_s * MODEL_SRATE)
        self._train_gap = round(settings.train_gap_s * MODEL_SRATE)
        self._warmup = round(settings.warmup_s * MODEL_SRATE)
        self.events: list[tuple[int, int]] = []
        self.open_onset: int | None = None
        self._last_onset: int | None = None
        self._last_end: int | None = None
        self._pending_trigger: int | None = None  # index at or after which a delayed trigger fires
        self._below = 0  # consecutive decisions below the threshold while an event is active

    def step(self, index: int, prob: float) -> tuple[bool, bool, bool]:
        """Feed one decision; return ``(onset, trigger, active)``."""
        onset = trigger = False
        if self.open_onset is not None:
            self._below = self._below + 1 if prob < self.s.threshold else 0
            if self._below >= self.s.end_hold:
                self.events.append((self.open_onset, index))
                self._last_end = index
                self.open_onset = None
        elif (
            prob >= self.s.threshold
            and index >= self._warmup
            and (self._last_onset is None or index - self._last_onset >= self._refractory)
        ):
            onset = True
            eligible = True
            if self.s.trigger == "isolated":
                eligible = self._last_end is None or index - self._last_end >= self._isolation
            elif self.s.trigger == "trains":
                eligible = self._last_onset is not None and index - self._last_onset <= self._train_gap
            self.open_onset = index
            self._last_onset = index
            self._below = 0
            if eligible:
                self._pending_trigger = index + self._delay
        if self._pending_trigger is not None and index >= self._pending_trigger:
            trigger = True
            self._pending_trigger = None
        return onset, trigger, self.open_onset is not None

    def finish(self, last_index: int) -> list[tuple[int, int]]:
        """Close an active event at ``last_index`` (end of the recording) and return all events."""
        if self.open_onset is not None:
            self.events.append((self.open_onset, max(last_index, self.open_onset)))
            self.open_onset = None
        return list(self.events)


class SpindleDetector:
    """Raw µV samples in, decisions, events and triggers out; causal and chunk invariant.

    Parameters
    ----------
    model : StepModel
        The network step (normally :class:`OrtStepModel`).
    srate : float
        Input rate in Hz (resampled to 250 Hz; UnsupportedRateError when impossible).
    front_end : FrontEndSettings
    settings : DetectorSettings

    Notes
    -----
    Feeding a signal in chunks of any size gives the same decisions as one call on the whole
    signal: up to ``n_copies`` consecutive decisions (all of different copies) are batched into
    one network call, which changes nothing but the batch size.
    """

    def __init__(
        self,
        model: StepModel,
        srate: float,
        front_end: FrontEndSettings | None = None,
        settings: DetectorSettings | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or DetectorSettings()
        self.front = SpindleFrontEnd(srate, front_end)
        self.srate = float(srate)
        s = self.settings
        self._hidden = np.zeros((s.n_copies, model.hidden_size), dtype=np.float32)
        self._tail = np.zeros(0, dtype=np.float32)  # last window - 1 standardised samples
        self.tracker = EventTracker(s)
        self.last_prob = 0.0

    @property
    def n_model_samples(self) -> int:
        """250 Hz samples produced so far (the next one has this index)."""
        return self.front.n_output

    def process(self, x: np.ndarray) -> DecisionLog:
        """Consume the next raw chunk, shape (n_samples,) in µV; return the decisions taken within it."""
        s = self.settings
        start = self.front.n_output
        z = self.front(np.asarray(x, dtype=np.float64).reshape(-1)).astype(np.float32)
        if z.size == 0:
            return DecisionLog()
        buf = np.concatenate([self._tail, z])
        buf_start = start - self._tail.size  # 250 Hz index of buf[0]
        end = start + z.size
        first = max(start, s.window - 1)
        first += (-(first + 1)) % s.hop
        idx = np.arange(first, end, s.hop, dtype=np.int64)
        self._tail = buf[-(s.window - 1) :].copy()
        if idx.size == 0:
            return DecisionLog()
        rel = idx - buf_start
        windows = buf[rel[:, None] - np.arange(s.window - 1, -1, -1)[None, :]]
        copies = ((idx + 1) // s.hop) % s.n_copies
        prob = np.empty(idx.size)
        for g in range(0, idx.size, s.n_copies):
            c = copies[g : g + s.n_copies]
            p, h = self.model.step(np.ascontiguousarray(windows[g : g + s.n_copies]), self._hidden[c])
            self._hidden[c] = h
            prob[g : g + s.n_copies] = p
        onset = np.zeros(idx.size, dtype=bool)
        trigger = np.zeros(idx.size, dtype=bool)
        active = np.zeros(idx.size, dtype=bool)
        for k in range(idx.size):
            onset[k], trigger[k], active[k] = self.tracker.step(int(idx[k]), float(prob[k]))
        self.last_prob = float(prob[-1])
        return DecisionLog(idx, prob, onset, trigger, active)

    def events_s(self) -> list[list[float]]:
        """Detected events so far as ``[start_s, end_s]`` (an active event closes at the newest sample)."""
        events = list(self.tracker.events)
        if self.tracker.open_onset is not None:
            events.append((self.tracker.open_onset, max(self.front.n_output - 1, self.tracker.open_onset)))
        return [[a / MODEL_SRATE, b / MODEL_SRATE] for a, b in events]


def detector_from_card(path: str | os.PathLike[str], card: Any) -> tuple[FrontEndSettings, DetectorSettings]:
    """Front-end and detector settings stored in a spindle model's card; ValueError naming the file."""
    where = f"model {str(path)!r}"
    front = FrontEndSettings.from_card(dict(card.preprocessing), where)
    det = card.provenance.get("detector")
    if not isinstance(det, dict):
        raise ValueError(f"{where}: a spindle-gru card needs provenance['detector'] (a table), found {det!r}.")
    return front, DetectorSettings.from_dict(det, where)
