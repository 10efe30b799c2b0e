"""PID knee-angle controller: the baseline RISE is compared with.

``u = kp e + ki ∫e + kd ė`` with ``e = θ_ref − θ`` (degrees), ė through the same s/(τs+1) filter
as RISE, output in µs saturated to [0, 400] and held between 25 Hz pulses, conditional
integration while saturated. Same ``step(theta_ref_deg, theta_deg) -> µs`` API as
:class:`~stimulation.nmes.rise.RiseController`.

:data:`BASELINE_PID` was tuned with the same live trial-and-error procedure as the empirical RISE
sets (:mod:`stimulation.nmes.rise`), on the nominal simulated subject: start from
(kp, ki, kd) = c · (1 µs/deg, 2.5 µs/(deg·s), 0.1 µs·s/deg) with c = 0.5 and double c until the
sine + step RMSE stops improving (c = 0.5, 1, 2, 4: 4 trials, best c = 2). It is used unchanged
for every subject, as a fixed clinical baseline would be. :data:`GRID_TUNED_PID` is, for
reference, the best of an exhaustive 64-trial grid on the nominal subject without fatigue
(kp ∈ {1, 2, 4, 8}, ki ∈ {2, 5, 10, 20}, kd ∈ {0.05, 0.1, 0.2, 0.4}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from acquisition.validation import check_positive, check_type

__all__ = ["BASELINE_PID", "GRID_TUNED_PID", "PidController", "PidGains"]


@dataclass(frozen=True)
class PidGains:
    """PID gains: ``kp`` µs/degree, ``ki`` µs/(degree·s), ``kd`` µs·s/degree (all >= 0)."""

    kp: float
    ki: float
    kd: float

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd"):
            object.__setattr__(self, name, check_positive(getattr(self, name), f"PidGains.{name}", allow_zero=True))


#: Fixed baseline gains (live trial-and-error on the nominal subject, see the module docstring).
BASELINE_PID = PidGains(kp=2.0, ki=5.0, kd=0.2)

#: Best of an exhaustive 64-trial grid on the nominal subject (reference only).
GRID_TUNED_PID = PidGains(kp=2.0, ki=10.0, kd=0.4)


class PidController:
    """PID with derivative filter, saturation, anti-windup and the 25 Hz hold.

    Parameters
    ----------
    gains : PidGains
    dt_s : float
        Control period, s.
    tau_s : float
        Derivative filter time constant, s.
    stim_frequency_hz : float
        Pulse rate; the output changes only at pulse instants (0 disables the hold).
    pw_max_us : float
        Saturation ceiling, µs.
    """

    def __init__(
        self,
        gains: PidGains = BASELINE_PID,
        dt_s: float = 0.005,
        *,
        tau_s: float = 0.04,
        stim_frequency_hz: float = 25.0,
        pw_max_us: float = 400.0,
    ) -> None:
        check_type(gains, PidGains, "gains")
        self.gains = gains
        self.dt_s = check_positive(dt_s, "dt_s")
        self.tau_s = check_positive(tau_s, "tau_s")
        f = check_positive(stim_frequency_hz, "stim_frequency_hz", allow_zero=True)
        self.hold_steps = 1 if f == 0 else max(1, round(1.0 / (f * self.dt_s)))
        self.pw_max_us = check_positive(pw_max_us, "pw_max_us")
        self.reset()

    def reset(self) -> None:
        """Start over (integral 0, derivative filter restarted, output 0 µs)."""
        self._started = False
        self._e_prev = 0.0
        self._de = 0.0
        self._integral = 0.0
        self._tick = 0
        self.output_us = 0.0
        self.unsaturated_us = 0.0

    def step(self, theta_ref_deg: float, theta_deg: float) -> float:
        """One control period; returns the pulse width to deliver, µs, in [0, pw_max_us]."""
        e = float(theta_ref_deg) - float(theta_deg)
        if not math.isfinite(e):
            raise ValueError(f"angles must be finite, got theta_ref_deg={theta_ref_deg!r}, theta_deg={theta_deg!r}.")
        if self._started:
            self._de = (self.tau_s * self._de + (e - self._e_prev)) / (self.tau_s + self.dt_s)
        self._started = True
        self._e_prev = e
        g = self.gains
        integral = self._integral + self.dt_s * e
        rest = g.kp * e + g.kd * self._de
        u = rest + g.ki * integral
        if g.ki > 0 and u > self.pw_max_us and e > 0:  # integrate only up to saturation
            integral = max(self._integral, min(integral, (self.pw_max_us - rest) / g.ki))
        elif g.ki > 0 and u < 0.0 and e < 0:
            integral = min(self._integral, max(integral, -rest / g.ki))
        u = rest + g.ki * integral
        self._integral = integral
        self.unsaturated_us = u
        if self._tick % self.hold_steps == 0:
            self.output_us = min(max(u, 0.0), self.pw_max_us)
        self._tick += 1
        return self.output_us
