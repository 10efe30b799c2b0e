"""Run a knee-angle controller against the simulated knee (deterministic, faster than real time).

Each control period: read the sensor (:meth:`KneeModel.measure`), ask the controller for a pulse
width, deliver it to the model and integrate one period. This is the loop the Session closes in
real time (knee-angle stream -> controller -> supervisor -> stimulator); here it runs offline for
the benchmark, the tests and the logging of "past sessions" for system identification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from acquisition.validation import check_positive
from stimulation.nmes.knee_model import KneeModel

__all__ = ["AngleController", "ClosedLoopResult", "rmse_deg", "run_closed_loop"]


class AngleController(Protocol):
    """What :func:`run_closed_loop` needs: RISE and PID both fit."""

    def reset(self) -> None: ...

    def step(self, theta_ref_deg: float, theta_deg: float) -> float: ...


@dataclass(frozen=True)
class ClosedLoopResult:
    """One closed-loop run, sampled every control period.

    Attributes
    ----------
    t_s : ndarray, shape (n,)
        Time of each period's start, s.
    reference_deg, measured_deg, true_deg : ndarray, shape (n,)
        Target, sensor reading (what the controller saw) and true angle at that time, degrees.
    pulse_width_us : ndarray, shape (n,)
        Pulse width delivered from that time on, µs.
    fitness : ndarray, shape (n,)
        Muscle fitness (1 = fresh).
    """

    t_s: np.ndarray
    reference_deg: np.ndarray
    measured_deg: np.ndarray
    true_deg: np.ndarray
    pulse_width_us: np.ndarray
    fitness: np.ndarray

    def rmse_deg(self, skip_s: float = 0.0) -> float:
        """Root-mean-square tracking error of the true angle after ``skip_s`` seconds, degrees."""
        keep = self.t_s >= skip_s
        return rmse_deg(self.reference_deg[keep], self.true_deg[keep])


def rmse_deg(reference_deg: np.ndarray, angle_deg: np.ndarray) -> float:
    """RMSE between two equal-length angle traces, degrees."""
    r = np.asarray(reference_deg, dtype=float)
    a = np.asarray(angle_deg, dtype=float)
    if r.shape != a.shape or r.size == 0:
        raise ValueError(f"reference and angle must be non-empty and of the same shape, got {r.shape} and {a.shape}.")
    return float(np.sqrt(np.mean((r - a) ** 2)))


def run_closed_loop(
    controller: AngleController,
    model: KneeModel,
    reference_deg: np.ndarray,
    *,
    dt_s: float = 0.005,
    reset: bool = True,
) -> ClosedLoopResult:
    """Track ``reference_deg`` (one value per control period) with ``controller`` on ``model``.

    Parameters
    ----------
    controller : AngleController
        Reset first unless ``reset`` is False.
    model : KneeModel
        Advanced from its current state (reset it yourself for a fresh subject).
    reference_deg : ndarray, shape (n,)
        Target angle for each period, degrees.
    dt_s : float
        Control period, s (must match the controller's).
    reset : bool
        Call ``controller.reset()`` before the run.

    Returns
    -------
    ClosedLoopResult
    """
    dt_s = check_positive(dt_s, "dt_s")
    ref = np.asarray(reference_deg, dtype=float).ravel()
    if ref.size == 0 or not np.all(np.isfinite(ref)):
        raise ValueError("reference_deg must be a non-empty array of finite angles in degrees.")
    if reset:
        controller.reset()
    n = ref.size
    t = np.empty(n)
    meas = np.empty(n)
    true = np.empty(n)
    pw = np.empty(n)
    fit = np.empty(n)
    last_pw = -1.0
    for k in range(n):
        t[k] = model.time_s
        true[k] = model.angle_deg
        fit[k] = model.fitness
        meas[k] = model.measure()
        u = controller.step(float(ref[k]), float(meas[k]))
        pw[k] = u
        if u != last_pw:
            model.command(u)
            last_pw = u
        model.advance(dt_s)
    return ClosedLoopResult(t, ref.copy(), meas, true, pw, fit)
