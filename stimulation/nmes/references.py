"""Target knee-angle trajectories of the benchmark and the gain tuning (degrees, 0 = hanging).

- :func:`sine_reference`: the 10-40° sine (a raised sine starting at its minimum, so the
  trajectory begins near the passive rest angle without a jump);
- :func:`step_reference`: a hold at the start angle, then a step to 40°.
"""

from __future__ import annotations

import numpy as np

from acquisition.validation import check_positive

__all__ = ["sine_reference", "step_reference"]


def sine_reference(
    t_s: np.ndarray, *, low_deg: float = 10.0, high_deg: float = 40.0, period_s: float = 6.0
) -> np.ndarray:
    """Raised sine between ``low_deg`` and ``high_deg``, at ``low_deg`` for t = 0.

    Parameters
    ----------
    t_s : ndarray, shape (n,)
        Times, s.
    low_deg, high_deg : float
        Trough and crest, degrees.
    period_s : float
        Period, s.

    Returns
    -------
    ndarray, shape (n,)
        Target angle, degrees.
    """
    check_positive(period_s, "period_s")
    t = np.asarray(t_s, dtype=float)
    mid, amp = 0.5 * (low_deg + high_deg), 0.5 * (high_deg - low_deg)
    return mid - amp * np.cos(2 * np.pi * t / period_s)


def step_reference(
    t_s: np.ndarray, *, start_deg: float = 10.0, target_deg: float = 40.0, step_at_s: float = 1.0
) -> np.ndarray:
    """``start_deg`` until ``step_at_s``, then ``target_deg`` (degrees)."""
    t = np.asarray(t_s, dtype=float)
    return np.where(t < step_at_s, start_deg, target_deg).astype(float)
