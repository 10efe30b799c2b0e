"""RISE (robust integral of the sign of the error) knee-angle controller for NMES.

Control law (Xian et al. 2004; for NMES Stegath et al. 2007, Sharma et al. 2009; as run by
Arcolezi et al. 2021 at 5 ms with pulse-width output)::

    e1 = θ_ref − θ                       (rad; the API takes degrees)
    e2 = ė1 + α1 e1                      (ė1 through the filter s / (τ s + 1))
    u(t) = (ks + 1) e2(t) − (ks + 1) e2(0) + ∫₀ᵗ [ (ks + 1) α2 e2(σ) + β sgn(e2(σ)) ] dσ

``u`` is the quadriceps pulse width in µs, saturated to [0, ``pw_max_us``] (400 µs) and
delivered at the stimulation rate (25 Hz): the law is evaluated every ``dt_s`` (5 ms) and the
value at each pulse instant is held until the next pulse. Errors are in radians inside the law
(SI units, as in the stability analysis), so ks + 1 is in µs·s/rad, α1 and α2 in 1/s and β in
µs/s. Written as a PID on e1 the law has kd = ks + 1, kp = (ks + 1)(α1 + α2) and
ki = (ks + 1) α1 α2 (plus the β sgn term).

Stability conditions
--------------------
The Lyapunov analysis of RISE for the knee (Sharma et al. 2009, Theorem 1; Stegath et al. 2007)
gives semi-global asymptotic tracking when::

    α1 > 1/2,   α2 > 1,   β > ζ_Nd + ζ_Ṅd / α2,   ks > 0 large enough

where ζ_Nd, ζ_Ṅd bound the unmodelled dynamics and disturbance and their rate of change.
:func:`check_stability_conditions` enforces the first three with the bounds when they are given
(β > 0 otherwise) and ks > 0; the genetic algorithm (:mod:`stimulation.nmes.ga`) searches only
inside this region, as Arcolezi et al. constrain their search. Saturation and the 25 Hz hold are
outside the theory: the conditions are necessary, not sufficient, for the real loop.

Anti-windup (an addition): the integral grows in the saturating direction only until the output
reaches the saturation limit (conditional integration); without it a long saturation at 0 µs (knee above
the target) winds the integral far negative. ``anti_windup=False`` gives the literal law.

The empirical gain sets
-----------------------
:data:`EMPIRICAL_GAINS` stands for the hand-tuned gains the paper compares against (trial and
error during sessions, 8-11° RMSE there). The paper's exact numbers were not available offline
when this module was written, so the sets come from the trial-and-error procedure itself, run on
the *nominal* simulated subject (sine + step RMSE, fatigue on): start from a conservative set
(ks = 2.5, α1 = α2 = 2 1/s, β = 20 µs/s) and double the overall gain ks each trial until the
RMSE stops improving — 6 live trials (ks 2.5, 5, 10, 20, 40, 80; 80 was worse).
``empirical_a`` is the best trial (ks = 40), ``empirical_b`` the rung below (ks = 20), what an
experimenter keeps when backing off for margin. Few live trials is the point: each one fatigues
the patient (the paper's motivation for tuning offline on a model).

:data:`GRID_TUNED_RISE` is, for reference, the best of an exhaustive 72-trial round-number grid
on the nominal subject (ks ∈ {5, 10, 20, 40}, α1 ∈ {1, 2, 4}, α2 ∈ {1.5, 3, 6}, β ∈ {20, 80}) —
more live trials than a clinic can afford, shown by the benchmark as an upper reference.

References
----------
- B. Xian, D. M. Dawson, M. S. de Queiroz, J. Chen, "A continuous asymptotic tracking control
  strategy for uncertain nonlinear systems," IEEE Trans. Autom. Control 49(7):1206-1211, 2004.
- K. Stegath, N. Sharma, C. M. Gregory, W. E. Dixon, "Nonlinear tracking control of a human limb
  via neuromuscular electrical stimulation," Proc. American Control Conf., 2007.
- N. Sharma, K. Stegath, C. M. Gregory, W. E. Dixon, "Nonlinear neuromuscular electrical
  stimulation tracking control of a human limb," IEEE TNSRE 17(6):576-584, 2009.
- H. H. Arcolezi et al., "RISE controller tuning and system identification through machine
  learning for human lower limb rehabilitation via neuromuscular electrical stimulation," Eng.
  Appl. Artif. Intell. 102:104294, 2021 (arXiv:2006.15605).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from acquisition.validation import check_positive, check_type

__all__ = [
    "EMPIRICAL_GAINS",
    "GRID_TUNED_RISE",
    "RiseBank",
    "RiseController",
    "RiseGains",
    "check_stability_conditions",
    "stability_violations",
]

PW_MAX_US = 400.0  #: Output ceiling, µs (the paper's stimulator range).
STIM_FREQUENCY_HZ = 25.0  #: Pulse rate, Hz.
_RAD_PER_DEG = math.pi / 180.0


@dataclass(frozen=True)
class RiseGains:
    """RISE gains (errors in rad inside the law, output in µs).

    Parameters
    ----------
    ks : float
        Gain on e2 (the law uses ks + 1, µs·s/rad).
    alpha1 : float
        Weight of e1 in the filtered error e2 = ė1 + α1 e1, 1/s.
    alpha2 : float
        Integral gain on e2 (times ks + 1), 1/s.
    beta : float
        Gain of the integrated sign of e2, µs/s.
    """

    ks: float
    alpha1: float
    alpha2: float
    beta: float

    def __post_init__(self) -> None:
        for name in ("ks", "alpha1", "alpha2", "beta"):
            check_type(getattr(self, name), (int, float), f"RiseGains.{name}")
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"RiseGains.{name} must be finite, got {v!r}.")
            object.__setattr__(self, name, v)

    def as_array(self) -> np.ndarray:
        """``[ks, alpha1, alpha2, beta]`` as a float array."""
        return np.array([self.ks, self.alpha1, self.alpha2, self.beta])

    @classmethod
    def from_array(cls, x: np.ndarray) -> RiseGains:
        """Inverse of :meth:`as_array`."""
        ks, a1, a2, b = (float(v) for v in np.asarray(x, dtype=float).ravel()[:4])
        return cls(ks, a1, a2, b)


#: Empirical (trial-and-error) gain sets; see the module docstring for where they come from.
EMPIRICAL_GAINS: dict[str, RiseGains] = {
    "empirical_a": RiseGains(ks=40.0, alpha1=2.0, alpha2=2.0, beta=20.0),
    "empirical_b": RiseGains(ks=20.0, alpha1=2.0, alpha2=2.0, beta=20.0),
}

#: Best of an exhaustive 72-trial grid on the nominal subject (reference only; see the module docstring).
GRID_TUNED_RISE = RiseGains(ks=20.0, alpha1=4.0, alpha2=3.0, beta=20.0)


def stability_violations(
    gains: RiseGains, *, disturbance_bound: float | None = None, disturbance_rate_bound: float | None = None
) -> list[str]:
    """The RISE stability conditions that ``gains`` breaks (empty list = all met).

    Parameters
    ----------
    gains : RiseGains
    disturbance_bound, disturbance_rate_bound : float, optional
        ζ_Nd and ζ_Ṅd; when both are given β must exceed ζ_Nd + ζ_Ṅd / α2, else only β > 0.
    """
    out: list[str] = []
    if gains.ks <= 0:
        out.append(f"ks must be > 0, got {gains.ks:g}")
    if gains.alpha1 <= 0.5:
        out.append(f"alpha1 must be > 1/2, got {gains.alpha1:g}")
    if gains.alpha2 <= 1.0:
        out.append(f"alpha2 must be > 1, got {gains.alpha2:g}")
    if disturbance_bound is not None and disturbance_rate_bound is not None:
        need = disturbance_bound + disturbance_rate_bound / max(gains.alpha2, 1e-12)
        if gains.beta <= need:
            out.append(f"beta must be > zeta_Nd + zeta_dNd/alpha2 = {need:g}, got {gains.beta:g}")
    elif gains.beta <= 0:
        out.append(f"beta must be > 0, got {gains.beta:g}")
    return out


def check_stability_conditions(
    gains: RiseGains, *, disturbance_bound: float | None = None, disturbance_rate_bound: float | None = None
) -> None:
    """Raise ``ValueError`` listing every broken RISE stability condition (see :func:`stability_violations`)."""
    bad = stability_violations(
        gains, disturbance_bound=disturbance_bound, disturbance_rate_bound=disturbance_rate_bound
    )
    if bad:
        raise ValueError(
            f"RISE gains {gains} break the stability conditions (Sharma et al. 2009): {'; '.join(bad)}. "
            "Choose alpha1 > 0.5, alpha2 > 1, beta > 0 (above the disturbance bound) and ks > 0."
        )


class RiseBank:
    """``n`` RISE controllers stepped together (one per gain set), vectorised with numpy.

    The genetic algorithm evaluates a whole population at once with it;
    :class:`RiseController` is the single-controller front.

    Parameters
    ----------
    gains : ndarray, shape (n, 4)
        Rows ``[ks, alpha1, alpha2, beta]``.
    dt_s : float
        Control period, s (5 ms).
    tau_s : float
        Time constant of the derivative filter s / (τ s + 1), s.
    stim_frequency_hz : float
        Pulse rate; the output is latched every ``round(1 / (f dt))`` steps. 0 disables the hold.
    pw_max_us : float
        Output ceiling, µs.
    anti_windup : bool
        Conditional integration while saturated (see the module docstring).
    """

    def __init__(
        self,
        gains: np.ndarray,
        *,
        dt_s: float = 0.005,
        tau_s: float = 0.04,
        stim_frequency_hz: float = STIM_FREQUENCY_HZ,
        pw_max_us: float = PW_MAX_US,
        anti_windup: bool = True,
    ) -> None:
        g = np.asarray(gains, dtype=float)
        if g.ndim != 2 or g.shape[1] != 4 or g.shape[0] < 1:
            raise ValueError(f"gains must have shape (n, 4) [ks, alpha1, alpha2, beta], got {g.shape}.")
        if not np.all(np.isfinite(g)):
            raise ValueError("gains must be finite.")
        self.dt_s = check_positive(dt_s, "dt_s")
        self.tau_s = check_positive(tau_s, "tau_s")
        f = check_positive(stim_frequency_hz, "stim_frequency_hz", allow_zero=True)
        self.hold_steps = 1 if f == 0 else max(1, round(1.0 / (f * self.dt_s)))
        self.pw_max_us = check_positive(pw_max_us, "pw_max_us")
        self.anti_windup = bool(anti_windup)
        self._k1 = g[:, 0] + 1.0
        self._a1 = g[:, 1].copy()
        self._a2 = g[:, 2].copy()
        self._beta = g[:, 3].copy()
        self.n = g.shape[0]
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next step is t = 0 (it sets e2(0) and starts the integral at 0)."""
        n = self.n
        self._started = False
        self._e1_prev = np.zeros(n)
        self._de1 = np.zeros(n)
        self._e2_0 = np.zeros(n)
        self._integral = np.zeros(n)
        self._tick = 0
        self.u_us = np.zeros(n)  # last unsaturated law output
        self.output_us = np.zeros(n)  # held, saturated output

    def step(self, theta_ref_deg: float | np.ndarray, theta_deg: float | np.ndarray) -> np.ndarray:
        """One control period: returns the held pulse widths, µs, shape (n,)."""
        e1 = (np.asarray(theta_ref_deg, dtype=float) - np.asarray(theta_deg, dtype=float)) * _RAD_PER_DEG
        if e1.shape != (self.n,):
            e1 = np.broadcast_to(e1, (self.n,)).astype(float)
        if not self._started:
            self._e1_prev = e1.copy()
            self._de1 = np.zeros(self.n)
        else:
            self._de1 = (self.tau_s * self._de1 + (e1 - self._e1_prev)) / (self.tau_s + self.dt_s)
            self._e1_prev = e1
        e2 = self._de1 + self._a1 * e1
        if not self._started:
            self._e2_0 = e2.copy()
            self._started = True
        prop = self._k1 * (e2 - self._e2_0)
        rate = self._k1 * self._a2 * e2 + self._beta * np.sign(e2)
        integral = self._integral + self.dt_s * rate
        u = prop + integral
        if self.anti_windup:  # integrate only up to the point where the output saturates
            up = (u > self.pw_max_us) & (rate > 0)
            down = (u < 0.0) & (rate < 0)
            capped_up = np.maximum(self._integral, np.minimum(integral, self.pw_max_us - prop))
            capped_down = np.minimum(self._integral, np.maximum(integral, -prop))
            integral = np.where(up, capped_up, np.where(down, capped_down, integral))
            u = prop + integral
        self._integral = integral
        self.u_us = u
        if self._tick % self.hold_steps == 0:
            self.output_us = np.clip(u, 0.0, self.pw_max_us)
        self._tick += 1
        return self.output_us


class RiseController:
    """One RISE controller: ``step(theta_ref_deg, theta_deg) -> pulse width (µs)`` every ``dt_s``.

    Parameters
    ----------
    gains : RiseGains
        Checked against the stability conditions unless ``check_stability`` is False.
    dt_s : float
        Control period, s (the paper's 5 ms).
    tau_s : float
        Derivative filter time constant, s.
    stim_frequency_hz : float
        Pulse rate (25 Hz): the returned pulse width changes only at pulse instants.
    pw_max_us : float
        Saturation ceiling, µs (400).
    anti_windup : bool
        Conditional integration while saturated.
    check_stability : bool
        Refuse gains outside the RISE stability conditions (ValueError).

    Notes
    -----
    Call :meth:`step` from one thread at the control rate with the newest measured angle; the
    caller owns the timing (the Session's control loop, a simulator, a benchmark).
    """

    def __init__(
        self,
        gains: RiseGains,
        dt_s: float = 0.005,
        *,
        tau_s: float = 0.04,
        stim_frequency_hz: float = STIM_FREQUENCY_HZ,
        pw_max_us: float = PW_MAX_US,
        anti_windup: bool = True,
        check_stability: bool = True,
    ) -> None:
        check_type(gains, RiseGains, "gains")
        if check_stability:
            check_stability_conditions(gains)
        self.gains = gains
        self._bank = RiseBank(
            gains.as_array()[None, :],
            dt_s=dt_s,
            tau_s=tau_s,
            stim_frequency_hz=stim_frequency_hz,
            pw_max_us=pw_max_us,
            anti_windup=anti_windup,
        )
        self.dt_s = self._bank.dt_s

    def reset(self) -> None:
        """Start over: the next step is t = 0 (output 0 µs, integral 0)."""
        self._bank.reset()

    def step(self, theta_ref_deg: float, theta_deg: float) -> float:
        """One control period.

        Parameters
        ----------
        theta_ref_deg : float
            Target knee angle, degrees.
        theta_deg : float
            Measured knee angle, degrees.

        Returns
        -------
        float
            Pulse width to deliver, µs, in [0, pw_max_us] (held between pulses).
        """
        return float(self._bank.step(theta_ref_deg, theta_deg)[0])

    @property
    def unsaturated_us(self) -> float:
        """The law's last output before saturation and hold, µs."""
        return float(self._bank.u_us[0])
