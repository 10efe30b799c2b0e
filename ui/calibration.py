"""SSVEP calibration block: cue targets on the flicker grid, record them, write a dataset spec.

The block runs on the GUI thread from a :class:`~PyQt6.QtCore.QTimer` (nothing slow: every tick
compares ``pylsl.local_clock`` with the schedule). It uses only the engine's public parts:

- the recording is the GUI's record button path, :meth:`ui.engine.SessionController.start_recording`
  / :meth:`~ui.engine.SessionController.stop_recording` (an XDF with every stream of the session);
- each trial onset is written with ``Session.recorder.add_event("calibration_cue", {...}, timestamp)``,
  so it lands in the recording's ``closedloop-events`` marker stream as the JSON string
  :func:`cue_marker` returns — the ``event`` of each class in the spec :func:`write_spec` writes,
  read back by ``decoders.dataset`` (``marker_stream = "closedloop-events"``).

Two cue schedules:

- **own schedule** (any real source): ``trials_per_target`` rounds, each a random permutation of
  the targets; every trial is ``trial_s`` s of cue followed by ``rest_s`` s without a cue.
- **simulator schedule**: the simulator's SSVEP scenario decides by itself which frequency it
  answers to (its ground-truth schedule; it cannot be driven by a cue). When the session's source
  is the simulated SSVEP scenario the block therefore follows the simulator: it cues the target the
  simulator is answering to at each of its trial onsets (stamped at the simulator's onset time) and
  stops once every target has ``trials_per_target`` trials. Trial and rest durations are then the
  simulator's (``trial_s`` / ``rest_s`` of the source config).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pylsl
from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from ui.engine import SessionController

log = logging.getLogger(__name__)

CUE_EVENT = "calibration_cue"
EVENTS_STREAM_NAME = "closedloop-events"  # app.recorder.EVENTS_STREAM
TICK_MS = 20
TAIL_S = 0.4  # data kept after the last trial before the recording is closed


def target_label(freq_hz: float) -> str:
    """Class name of a target, e.g. ``"8Hz"``, ``"12.5Hz"``."""
    return f"{freq_hz:g}Hz"


def cue_details(freq_hz: float) -> dict[str, Any]:
    """The details written with each ``calibration_cue`` event."""
    return {"target": target_label(freq_hz), "frequency_hz": float(freq_hz)}


def cue_marker(freq_hz: float) -> str:
    """The marker string of a cue as the recorder writes it (``json.dumps({"event": kind, **details})``)."""
    return json.dumps({"event": CUE_EVENT, **cue_details(freq_hz)}, default=str)


def _toml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_spec(
    path: str | Path,
    xdf: str | Path,
    frequencies: Sequence[float],
    trial_s: float,
    *,
    stream: str | None = None,
    window_s: float | None = None,
) -> Path:
    """Write the dataset spec (TOML) of a calibration recording.

    Parameters
    ----------
    path : str or Path
        The spec file to write.
    xdf : str or Path
        The calibration recording (XDF); written relative to the spec when it sits next to it.
    frequencies : sequence of float
        Target frequencies (Hz), one class each (class ``"<f>Hz"``, event :func:`cue_marker`).
    trial_s : float
        Trial length in s: the epochs are ``[0, trial_s)`` after each cue.
    stream : str, optional
        Name of the signal stream in the XDF (the session's EEG stream).
    window_s : float, optional
        ``[ssvep] window_s`` (model decision window, s); the epoch length when None.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    xdf = Path(xdf)
    rel = xdf.name if xdf.parent.resolve() == path.parent.resolve() else str(xdf.resolve())
    lines = [
        "# written by the closedloop GUI's calibration block",
        'paradigm = "ssvep"',
        "",
        "[epochs]",
        "tmin = 0.0",
        f"tmax = {float(trial_s)!r}",
        "",
    ]
    for f in frequencies:
        lines += [
            f"[classes.{_toml_str(target_label(f))}]",
            f"event = {_toml_str(cue_marker(f))}",
            f"frequency = {float(f)!r}",
            "",
        ]
    lines += ["[[recordings]]", f"path = {_toml_str(rel)}", 'group = "calibration"']
    if stream:
        lines.append(f"stream = {_toml_str(stream)}")
    lines += [f"marker_stream = {_toml_str(EVENTS_STREAM_NAME)}", ""]
    if window_s is not None:
        lines += ["[ssvep]", f"window_s = {float(window_s)!r}", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class CalibrationPlan:
    """What the block runs.

    Attributes
    ----------
    frequencies : list of float
        Targets (Hz), in the flicker grid's order.
    trials_per_target : int
    trial_s, rest_s : float
        Cue and rest durations (s) of the own schedule.
    out_dir : Path
        Folder for ``calibration-<time>.xdf`` and its ``.toml`` spec.
    """

    frequencies: list[float]
    trials_per_target: int
    trial_s: float
    rest_s: float
    out_dir: Path
    seed: int | None = None
    stem: str = field(default_factory=lambda: f"calibration-{time.strftime('%Y%m%d-%H%M%S')}")

    @property
    def xdf_path(self) -> Path:
        """The recording."""
        return self.out_dir / f"{self.stem}.xdf"

    @property
    def spec_path(self) -> Path:
        """The dataset spec written next to the recording."""
        return self.out_dir / f"{self.stem}.toml"


def simulated_ssvep_source(session: Any) -> Any | None:
    """The session's simulated SSVEP source (``acquisition.simulator.SimulatedSource``), or None."""
    from acquisition.simulator import SimulatedSource

    if session is None:
        return None
    for src in session.sources.values():
        if isinstance(src, SimulatedSource) and src.settings.scenario == "ssvep" and src.streams:
            return src
    return None


class CalibrationBlock(QObject):
    """Run one calibration block on the running session (GUI thread; see the module docstring).

    Signals
    -------
    cue(int)
        Index of the cued target in ``plan.frequencies``; -1 for rest / no cue.
    progress(int, int)
        Trials done, trials planned.
    finished(object)
        The spec path (:class:`~pathlib.Path`) once the recording is closed and the spec written.
    failed(str)
        Why the block stopped.
    """

    cue = pyqtSignal(int)
    progress = pyqtSignal(int, int)
    finished = pyqtSignal(object)
    failed = pyqtSignal(str)

    def __init__(self, controller: SessionController, plan: CalibrationPlan, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctl = controller
        self.plan = plan
        self.phase = "idle"  # idle | recording | running | closing | done | failed
        self.mode = "own"
        self.counts = [0] * len(plan.frequencies)
        self.n_marked = 0
        self.trial_s = plan.trial_s
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._tick)
        self._source: Any = None
        self._stream_name: str | None = None
        self._schedule: list[tuple[float, float, int]] = []  # (onset, end, target) on local_clock, own mode
        self._next = 0
        self._rec_t0 = math.nan
        self._seen_onsets: set[int] = set()
        self._end_t = math.inf
        self._cue_until = -math.inf
        self._current = -1

    @property
    def n_planned(self) -> int:
        """Number of trials the block needs."""
        return self.plan.trials_per_target * len(self.plan.frequencies)

    def start(self) -> bool:
        """Start recording, then cue; False (and ``failed``) when the session cannot run a block."""
        plan = self.plan
        if not self.ctl.running:
            return self._fail("calibration needs a running session; press Start first.")
        if len(plan.frequencies) < 2:
            return self._fail(f"calibration needs at least 2 targets, got {plan.frequencies}.")
        if plan.trials_per_target < 2:
            return self._fail("calibration needs at least 2 trials per target (cross-validation).")
        if self.ctl.recording_path is not None:
            return self._fail(f"already recording to {self.ctl.recording_path}; stop that recording first.")
        s = self.ctl.session
        src = simulated_ssvep_source(s)
        if src is not None:
            sim_freqs = [float(f) for f in src.settings.ssvep_frequencies]
            missing = [f for f in plan.frequencies if not any(abs(f - g) < 1e-6 for g in sim_freqs)]
            if missing:
                return self._fail(f"the simulator answers to {sim_freqs} Hz; targets {missing} Hz never occur.")
            self.mode = "simulator"
            self._source = src
            self.trial_s = float(src.settings.trial_s)
            self._stream_name = src.generator.info.name
        else:
            streams = [v for v in self.ctl.streams() if v.numeric and v.srate > 0]
            self._stream_name = streams[0].name if streams else None
        if not self.ctl.start_recording(plan.xdf_path):
            return self._fail("could not start the recording (another operation is running).")
        self.phase = "recording"
        self._timer.start(TICK_MS)
        return True

    def abort(self, reason: str = "aborted") -> None:
        """Stop cueing and close the recording (no spec is written)."""
        if self.phase in ("recording", "running"):
            self._timer.stop()
            self.cue.emit(-1)
            self.ctl.stop_recording()
            self._fail(reason)

    def _fail(self, message: str) -> bool:
        self._timer.stop()
        self.phase = "failed"
        self.failed.emit(message)
        return False

    def _tick(self) -> None:
        try:
            self._step()
        except Exception as exc:  # a failing block must not take the GUI down
            log.debug("calibration failed", exc_info=True)
            if self.phase in ("recording", "running"):
                self.abort(f"calibration failed: {exc!r}")
            else:
                self._fail(f"calibration failed: {exc!r}")

    def _step(self) -> None:
        now = pylsl.local_clock()
        if self.phase == "recording":
            if not self.ctl.running:
                self._fail("the session stopped before the calibration began.")
            elif self.ctl.recording_path == self.plan.xdf_path and not self.ctl.busy:
                self._rec_t0 = now
                self.phase = "running"
                if self.mode == "own":
                    self._build_schedule(now + 0.5)
                self.progress.emit(0, self.n_planned)
            elif not self.ctl.busy:
                self._fail(f"the calibration recording {self.plan.xdf_path} did not start (see the session log).")
            return
        if self.phase == "running":
            if not self.ctl.running:
                self._fail("the session stopped during the calibration block.")
                return
            if self.mode == "own":
                self._step_own(now)
            else:
                self._step_simulator(now)
            if now >= self._end_t and not self.ctl.busy:
                self._set_cue(-1)
                self.phase = "closing"
                self.ctl.stop_recording()
            return
        if self.phase == "closing" and not self.ctl.busy:
            self._timer.stop()
            if self.ctl.recording_path is not None or not self.plan.xdf_path.is_file():
                self._fail(f"the calibration recording {self.plan.xdf_path} was not closed.")
                return
            spec = write_spec(
                self.plan.spec_path, self.plan.xdf_path, self.plan.frequencies, self.trial_s, stream=self._stream_name
            )
            self.phase = "done"
            self.finished.emit(spec)

    def _set_cue(self, index: int) -> None:
        if index != self._current:
            self._current = index
            self.cue.emit(index)

    def _mark(self, target: int, onset: float) -> None:
        s = self.ctl.session
        rec = s.recorder if s is not None else None
        if rec is None or rec.closed:
            raise RuntimeError("the calibration recording closed during the block.")
        rec.add_event(CUE_EVENT, cue_details(self.plan.frequencies[target]), timestamp=onset)
        self.counts[target] += 1
        self.n_marked += 1
        self.progress.emit(self.n_marked, self.n_planned)

    # -------------------------------------------------------------- own schedule
    def _build_schedule(self, t0: float) -> None:
        rng = random.Random(self.plan.seed)
        n = len(self.plan.frequencies)
        t = t0
        for _ in range(self.plan.trials_per_target):
            order = list(range(n))
            rng.shuffle(order)
            for k in order:
                self._schedule.append((t, t + self.plan.trial_s, k))
                t += self.plan.trial_s + self.plan.rest_s
        self._end_t = self._schedule[-1][1] + TAIL_S

    def _step_own(self, now: float) -> None:
        while self._next < len(self._schedule) and now >= self._schedule[self._next][0]:
            _onset, end, k = self._schedule[self._next]
            self._next += 1
            self._cue_until = end
            self._set_cue(k)
            self._mark(k, pylsl.local_clock())  # the frame the cue appears on
        if now >= self._cue_until:
            self._set_cue(-1)

    # -------------------------------------------------------------- simulator schedule
    def _step_simulator(self, now: float) -> None:
        src = self._source
        gen = src.generator
        k = math.floor((now - src.t0) * gen.srate + 1e-6)
        trial = gen.trial_at(k) if k >= 0 else None
        if trial is None or trial.event != "trial":
            self._set_cue(-1)
            return
        onset_t = src.t0 + trial.onset_sample / gen.srate
        freq = float(trial.params["frequency_hz"])
        idx = next((i for i, f in enumerate(self.plan.frequencies) if abs(f - freq) < 1e-6), -1)
        self._set_cue(idx)
        if trial.onset_sample in self._seen_onsets or idx < 0:
            return
        self._seen_onsets.add(trial.onset_sample)
        if onset_t < self._rec_t0 + 0.05 or math.isfinite(self._end_t):
            return  # began before the recording, or the block has all its trials
        self._mark(idx, onset_t)
        if min(self.counts) >= self.plan.trials_per_target:
            self._end_t = onset_t + trial.n_samples / gen.srate + TAIL_S
