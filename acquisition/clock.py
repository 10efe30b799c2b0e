"""Map a foreign clock (e.g. BrainFlow's UNIX timestamps) onto ``pylsl.local_clock``.

Every sample in closedloop carries a timestamp on ``pylsl.local_clock`` (DESIGN: "Timestamps
are facts"). Devices that stamp samples on another clock are mapped onto it at ingestion by a
:class:`ClockMapper`.

Method
------
One *measurement* reads the clocks as ``local, foreign, local`` ``n_reads`` times and keeps
the triple with the narrowest bracket; its estimate is ``offset = midpoint(local) - foreign``
with an error of at most half the bracket (the foreign read happened somewhere inside it).
Measurements are repeated every ``interval_s`` (absolute deadlines on the local clock).
The model over the last ``window`` estimates is robust to outliers (a thread preempted
between reads, a slow clock read):

* without drift: ``offset = median(estimates)``;
* with drift (once the estimates span ``min_drift_span_s``): a Theil-Sen line (median of
  pairwise slopes, median intercept), i.e. a linear regression that ignores up to ~29 %
  outliers.

A *step* of the foreign clock (e.g. NTP setting the wall clock) shows up as estimates that
disagree with the model by more than ``step_threshold_s`` beyond their own brackets. After
``step_confirm`` consecutive such estimates that agree with each other, the older history is
dropped and the mapper follows the new offset (counted in :attr:`ClockMapper.n_steps`).

The class is pure and synchronous: both clocks are injectable callables, nothing runs in the
background, so it is unit-tested with fake clocks. It is driven from one thread (the
acquisition thread calls :meth:`ClockMapper.update` and :meth:`ClockMapper.map`); other threads
may read :attr:`ClockMapper.offset` and friends, which read one immutable model swapped by
reference.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl

from acquisition.validation import check_int, check_positive, check_type

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""A clock: a callable returning the current time in seconds."""


@dataclass(frozen=True)
class ClockEstimate:
    """One bracketed offset measurement.

    Attributes
    ----------
    local_time : float
        Local-clock time of the measurement (midpoint of the best bracket), s.
    offset : float
        ``local - foreign`` at ``local_time``, s.
    half_bracket : float
        Half the width of the best bracket, s: the largest possible error of ``offset``.
    """

    local_time: float
    offset: float
    half_bracket: float


@dataclass(frozen=True)
class _Model:
    """``offset(t) = intercept + slope * (t - t_ref)``; immutable, swapped by reference."""

    intercept: float  # s
    slope: float  # s/s (drift of local relative to foreign)
    t_ref: float  # s, local clock
    uncertainty: float  # s


class ClockMapper:
    """Map timestamps of a foreign clock onto the local (``pylsl.local_clock``) clock.

    Parameters
    ----------
    foreign_clock : callable
        Returns the foreign clock's current time in s; default ``time.time`` (UNIX time, the
        clock BrainFlow stamps samples with).
    local_clock : callable
        Returns the local time in s; default ``pylsl.local_clock``.
    n_reads : int
        Bracketed reads per measurement; the narrowest bracket wins.
    interval_s : float
        Period of re-estimation by :meth:`update`, s.
    window : int
        Number of most recent estimates the model is fitted over (>= 1).
    fit_drift : bool
        Fit a linear drift term (Theil-Sen) once the window spans ``min_drift_span_s``.
    min_drift_span_s : float
        Minimum time spanned by the estimates before a drift is fitted, s.
    step_threshold_s : float
        An estimate is inconsistent with the model if it differs by more than this plus
        the brackets, s.
    step_confirm : int
        Consecutive mutually consistent, model-inconsistent estimates that confirm a step.

    Examples
    --------
    >>> mapper = ClockMapper()
    >>> mapper.update(force=True)
    True
    >>> local_ts = mapper.map(np.array([time.time()]))
    """

    def __init__(
        self,
        foreign_clock: Clock = time.time,
        local_clock: Clock = pylsl.local_clock,
        *,
        n_reads: int = 16,
        interval_s: float = 5.0,
        window: int = 12,
        fit_drift: bool = True,
        min_drift_span_s: float = 30.0,
        step_threshold_s: float = 0.010,
        step_confirm: int = 2,
    ) -> None:
        if not callable(foreign_clock):
            raise TypeError(f"foreign_clock must be callable returning seconds, got {foreign_clock!r}.")
        if not callable(local_clock):
            raise TypeError(f"local_clock must be callable returning seconds, got {local_clock!r}.")
        self._foreign = foreign_clock
        self._local = local_clock
        self.n_reads = check_int(n_reads, "n_reads", minimum=1)
        self.interval_s = check_positive(interval_s, "interval_s")
        self.window = check_int(window, "window", minimum=1)
        self.fit_drift = bool(check_type(fit_drift, bool, "fit_drift"))
        self.min_drift_span_s = check_positive(min_drift_span_s, "min_drift_span_s")
        self.step_threshold_s = check_positive(step_threshold_s, "step_threshold_s")
        self.step_confirm = check_int(step_confirm, "step_confirm", minimum=1)
        self._estimates: deque[ClockEstimate] = deque(maxlen=self.window)
        self._suspects: list[ClockEstimate] = []  # recent estimates inconsistent with the model
        self._model: _Model | None = None
        self._next_due = -math.inf
        self.n_steps = 0
        self.n_rejected = 0  # estimates held back as step suspects that did not confirm

    # ------------------------------------------------------------------ measuring
    def measure(self) -> ClockEstimate:
        """Read both clocks ``n_reads`` times; return the estimate of the narrowest bracket.

        Does not change the model (see :meth:`add`).
        """
        best: tuple[float, float, float] | None = None  # (width, local mid, foreign)
        for _ in range(self.n_reads):
            t0 = self._local()
            f = self._foreign()
            t1 = self._local()
            width = t1 - t0
            if width < 0:
                raise RuntimeError(
                    f"local clock went backwards by {-width:.6g} s during a clock read; "
                    "local_clock must be monotonic (use pylsl.local_clock)."
                )
            if best is None or width < best[0]:
                best = (width, 0.5 * (t0 + t1), f)
        width, mid, f = best  # type: ignore[misc]  # n_reads >= 1
        return ClockEstimate(local_time=mid, offset=mid - f, half_bracket=0.5 * width)

    def update(self, *, force: bool = False) -> bool:
        """Measure and add an estimate if the next deadline passed (or ``force``).

        Deadlines are absolute (``interval_s`` apart on the local clock); a late call does
        not shift the schedule, a very late one restarts it from now.

        Returns
        -------
        bool
            True if a measurement was taken.
        """
        now = self._local()
        if not force and now < self._next_due:
            return False
        self.add(self.measure())
        self._next_due = self._next_due + self.interval_s if math.isfinite(self._next_due) else now + self.interval_s
        if self._next_due <= now:
            self._next_due = now + self.interval_s
        return True

    def add(self, estimate: ClockEstimate) -> None:
        """Add one estimate, handling outliers and clock steps, and refit the model."""
        check_type(estimate, ClockEstimate, "estimate")
        if not (math.isfinite(estimate.offset) and math.isfinite(estimate.local_time)):
            raise ValueError(f"estimate must be finite, got {estimate!r}; check the clock functions.")
        model = self._model
        if model is not None and len(self._estimates) > 0:
            residual = estimate.offset - float(self._eval(model, estimate.local_time))
            tolerance = self.step_threshold_s + estimate.half_bracket + model.uncertainty
            if abs(residual) > tolerance:
                self._suspects.append(estimate)
                if self._step_confirmed():
                    log.warning(
                        "foreign clock stepped by %+.6f s relative to the local clock; mapping follows the new offset",
                        residual,
                    )
                    self.n_steps += 1
                    self._estimates.clear()
                    self._estimates.extend(self._suspects)
                    self._suspects.clear()
                    self._refit()
                return
        # Consistent estimate: suspects were isolated outliers; drop them.
        self.n_rejected += len(self._suspects)
        self._suspects.clear()
        self._estimates.append(estimate)
        self._refit()

    def _step_confirmed(self) -> bool:
        s = self._suspects[-self.step_confirm :]
        if len(s) < self.step_confirm:
            return False
        offsets = np.array([e.offset for e in s])
        slack = self.step_threshold_s + 2 * max(e.half_bracket for e in s)
        if float(offsets.max() - offsets.min()) > slack:
            # Suspects disagree with each other: keep only the newest ones as candidates.
            self._suspects = s[-1:]
            return False
        self._suspects = s
        return True

    # ------------------------------------------------------------------ model
    def _refit(self) -> None:
        est = list(self._estimates)
        t = np.array([e.local_time for e in est])
        y = np.array([e.offset for e in est])
        t_ref = float(t[-1])
        slope = 0.0
        if self.fit_drift and len(est) >= 3 and float(t[-1] - t[0]) >= self.min_drift_span_s:
            i, j = np.triu_indices(len(est), k=1)
            dt = t[j] - t[i]
            ok = dt > 0
            if np.any(ok):
                slope = float(np.median((y[j] - y[i])[ok] / dt[ok]))
        intercept = float(np.median(y - slope * (t - t_ref)))
        uncertainty = float(min(e.half_bracket for e in est))
        self._model = _Model(intercept, slope, t_ref, uncertainty)

    @staticmethod
    def _eval(model: _Model, local_time: float | np.ndarray) -> float | np.ndarray:
        return model.intercept + model.slope * (local_time - model.t_ref)

    def _require_model(self) -> _Model:
        model = self._model
        if model is None:
            raise RuntimeError("ClockMapper has no estimate yet; call update(force=True) before map() or offset.")
        return model

    @property
    def ready(self) -> bool:
        """True once at least one estimate was added."""
        return self._model is not None

    @property
    def offset(self) -> float:
        """Current ``local - foreign`` offset in s (model at the newest estimate)."""
        return float(self._require_model().intercept)

    @property
    def drift(self) -> float:
        """Fitted drift of the offset in s per s of local time (0 when not fitted)."""
        return float(self._require_model().slope)

    @property
    def uncertainty_s(self) -> float:
        """Half the narrowest bracket among the estimates in the window, s."""
        return float(self._require_model().uncertainty)

    @property
    def estimates(self) -> list[ClockEstimate]:
        """Estimates the model is fitted over, oldest first (a copy)."""
        return list(self._estimates)

    @property
    def next_due(self) -> float:
        """Local-clock time of the next scheduled measurement, s (``-inf`` before the first)."""
        return self._next_due

    def offset_at(self, local_time: float) -> float:
        """Offset ``local - foreign`` in s at local time ``local_time`` (s)."""
        return float(self._eval(self._require_model(), float(local_time)))

    def map(self, foreign_ts: np.ndarray) -> np.ndarray:
        """Map foreign-clock timestamps onto the local clock.

        Parameters
        ----------
        foreign_ts : array_like, shape (n_samples,)
            Timestamps on the foreign clock, s.

        Returns
        -------
        ndarray, shape (n_samples,), float64
            The same instants on the local clock, s.
        """
        model = self._require_model()
        f = np.asarray(foreign_ts, dtype=np.float64)
        approx_local = f + model.intercept
        return f + self._eval(model, approx_local)
