"""Online post-processing of EMG gesture decisions into discrete commands for the teleop bridge.

:class:`GesturePostprocessor` is pure and synchronous (settings + state + :meth:`process`): it
takes each window decision (an :class:`app.pipeline.Command` from an EMG pipeline) and returns a
smoothed command, or None while nothing should change. Steps, per decision:

1. **confidence threshold** - a window whose top probability is below ``min_confidence`` votes
   for "unknown";
2. **rest gating** - a window whose rest probability is at least ``rest_gate`` votes for rest,
   whatever else is likely (so weak co-contractions never move the robot);
3. **majority vote** over the last ``vote_k`` votes: the label with a strict majority wins,
   otherwise the output is unknown (label None, which the teleop controller treats as stop);
4. **debounced mode switch** - the ``mode_switch`` gesture only becomes the output after it has
   won the vote ``switch_hold`` times in a row; it then stays the output while held and can
   only switch again after a different label has won ``release_hold`` times (``n_switches``
   counts confirmed switches), so holding the gesture does not cycle modes repeatedly;
5. **change only** - a command is emitted when the output label changes (one mode-switch command
   per hold), and with ``repeat_every`` > 0 repeated every that many decisions as a keep-alive.
   For :class:`stimulation.teleop.controller.TeleopController`, whose dwell needs a continuous
   stream of the same label and whose one-shot actions fire once per hold, use
   ``repeat_every = 1``.

The output command keeps the input's timing fields, carries the mean probabilities of the voting
windows in ``values``, and its ``pipeline`` is the input's plus ``"/gesture"``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from app.pipeline import Command

__all__ = ["GesturePostprocessor", "GestureSettings"]


@dataclass(frozen=True)
class GestureSettings:
    """Parameters of :class:`GesturePostprocessor`.

    Parameters
    ----------
    classes : tuple of str
        The model's classes (card ``classes``).
    rest_class : str or None
        The rest class (card ``provenance.emg.rest_class``); None disables rest gating.
    vote_k : int
        Majority vote over this many latest windows (5 × 50 ms hop = 250 ms).
    min_confidence : float
        Windows below this top probability vote "unknown" (0-1).
    rest_gate : float
        Windows whose rest probability is at least this vote rest (0-1; > 1 disables).
    mode_switch : str or None
        The gesture that switches mode (passed on once per hold), or None.
    switch_hold : int
        Consecutive winning votes needed before the mode switch is passed on.
    release_hold : int
        Consecutive votes for another label that re-arm the mode switch.
    repeat_every : int
        Re-emit the current label every this many decisions (0: only on change).
    """

    classes: tuple[str, ...]
    rest_class: str | None = "rest"
    vote_k: int = 5
    min_confidence: float = 0.6
    rest_gate: float = 0.5
    mode_switch: str | None = None
    switch_hold: int = 6
    release_hold: int = 4
    repeat_every: int = 0

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError(f"GestureSettings.classes must list at least 2 classes, got {self.classes!r}.")
        for name, value in (("rest_class", self.rest_class), ("mode_switch", self.mode_switch)):
            if value is not None and value not in self.classes:
                raise ValueError(f"GestureSettings.{name} {value!r} is not one of the classes {list(self.classes)}.")
        for name in ("vote_k", "switch_hold", "release_hold"):
            if getattr(self, name) < 1:
                raise ValueError(f"GestureSettings.{name} must be >= 1, got {getattr(self, name)}.")
        if self.repeat_every < 0:
            raise ValueError(f"GestureSettings.repeat_every must be >= 0, got {self.repeat_every}.")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"GestureSettings.min_confidence must be in [0, 1], got {self.min_confidence}.")


_UNKNOWN = -1


class GesturePostprocessor:
    """Majority vote + rest gating + confidence threshold + debounced mode switch (see module doc).

    Threading: call :meth:`process` from one thread (the session's command callback thread).
    """

    def __init__(self, settings: GestureSettings) -> None:
        self.settings = settings
        s = settings
        self._rest = s.classes.index(s.rest_class) if s.rest_class is not None else None
        self._switch = s.classes.index(s.mode_switch) if s.mode_switch is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget the vote history and the mode-switch state."""
        self._votes: deque[int] = deque(maxlen=self.settings.vote_k)
        self._probs: deque[np.ndarray] = deque(maxlen=self.settings.vote_k)
        self._last: int | None = None  # last emitted label index (or _UNKNOWN); None: nothing emitted yet
        self._streak_label = _UNKNOWN
        self._streak = 0
        self._armed = True
        self._since_emit = 0
        self.n_switches = 0

    def vote(self, probabilities: np.ndarray) -> int:
        """The vote of one window: class index, or -1 for unknown (below the confidence threshold)."""
        p = np.asarray(probabilities, dtype=np.float64)
        if self._rest is not None and p[self._rest] >= self.settings.rest_gate:
            return self._rest
        k = int(np.argmax(p))
        return k if p[k] >= self.settings.min_confidence else _UNKNOWN

    def _majority(self) -> int:
        counts: dict[int, int] = {}
        for v in self._votes:
            counts[v] = counts.get(v, 0) + 1
        best = max(counts, key=lambda c: counts[c])
        return best if counts[best] * 2 > len(self._votes) else _UNKNOWN

    def process(self, cmd: Command) -> Command | None:
        """Feed one window decision; return the command to pass on, or None.

        Raises
        ------
        ValueError
            The command is not discrete or its classes differ from the settings'.
        """
        s = self.settings
        if cmd.kind != "discrete" or tuple(cmd.classes) != s.classes:
            raise ValueError(
                f"GesturePostprocessor expects discrete commands over {list(s.classes)}, got kind {cmd.kind!r} "
                f"with classes {list(cmd.classes)}."
            )
        p = np.asarray(cmd.values, dtype=np.float64)
        self._votes.append(self.vote(p))
        self._probs.append(p)
        label = self._majority()
        if label == self._streak_label:
            self._streak += 1
        else:
            self._streak_label, self._streak = label, 1
        if self._switch is not None:
            if label == self._switch:
                if self._armed and self._streak >= s.switch_hold:
                    self._armed = False
                    self.n_switches += 1
                    return self._emit(cmd, label)
                if self._armed:
                    label = _UNKNOWN  # not yet confirmed: no motion, no switch
            elif self._streak >= s.release_hold:
                self._armed = True
        return self._emit_if_changed(cmd, label)

    def _emit_if_changed(self, cmd: Command, label: int) -> Command | None:
        if label != self._last:
            return self._emit(cmd, label)
        return self._keepalive(cmd, label)

    def _keepalive(self, cmd: Command, label: int) -> Command | None:
        self._since_emit += 1
        if self.settings.repeat_every and self._since_emit >= self.settings.repeat_every:
            return self._emit(cmd, label)
        return None

    def _emit(self, cmd: Command, label: int) -> Command:
        self._last = label
        self._since_emit = 0
        mean = np.mean(np.stack(self._probs), axis=0)
        return replace(
            cmd,
            pipeline=f"{cmd.pipeline}/gesture",
            label=None if label == _UNKNOWN else self.settings.classes[label],
            values=tuple(float(v) for v in mean),
        )
