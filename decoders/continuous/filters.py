"""The Kalman and discriminative Kalman filter recursions (numpy, float64, one bin per step).

Kalman filter (Wu et al. 2003), information form: with the state model ``z_t = A z_{t-1} + w``,
``w ~ N(0, W)`` and the observation model ``x_t = H z_t + b + q``, ``q ~ N(0, Q)``, the ONNX
graph supplies ``y_t = Hᵀ Q⁻¹ (x_t - b)`` and the card ``J = Hᵀ Q⁻¹ H``; then::

    ν = A μ_{t-1},  M = A Σ_{t-1} Aᵀ + W
    Σ_t = (M⁻¹ + J)⁻¹,  μ_t = Σ_t (M⁻¹ ν + y_t)

which equals the textbook gain form. Discriminative Kalman filter (Burkhart, Brandman, Franco,
Hochberg & Harrison, Neural Computation 32(5):969-1017, 2020, doi:10.1162/neco_a_01275): the
graph supplies ``f(x_t) ≈ E[z_t | x_t]`` and ``Q(x_t) ≈ Var[z_t | x_t]``; with the stationary
state covariance ``S``::

    Σ_t = (M⁻¹ + Q(x)⁻¹ - S⁻¹)⁻¹,  μ_t = Σ_t (M⁻¹ ν + Q(x)⁻¹ f(x))

If ``Q(x)⁻¹ - S⁻¹`` is not positive definite, ``Q(x)`` is replaced by ``(Q(x)⁻¹ + S⁻¹)⁻¹``
(the paper's fallback; counted in ``n_fallbacks``). The *robust* variant drops the ``-S⁻¹``
term altogether (``Σ_t = (M⁻¹ + Q(x)⁻¹)⁻¹``), treating ``f(x)`` as a direct noisy measurement;
it never needs the fallback and is less sensitive to an over-confident ``Q(x)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DiscriminativeKalmanFilter", "KalmanInfoFilter", "is_positive_definite"]


def is_positive_definite(m: np.ndarray) -> bool:
    """True if the symmetric part of ``m`` has a Cholesky factor (all eigenvalues > 0)."""
    try:
        np.linalg.cholesky(0.5 * (m + m.T))
    except np.linalg.LinAlgError:
        return False
    return True


def _inv(m: np.ndarray) -> np.ndarray:
    out = np.linalg.inv(m)
    return 0.5 * (out + out.T)


class KalmanInfoFilter:
    """Kalman filter in information form (state: ``mu`` (d,), ``sigma`` (d × d)).

    Parameters
    ----------
    A, W : ndarray, shape (d, d)
        State transition and its noise covariance.
    J : ndarray, shape (d, d)
        ``Hᵀ Q⁻¹ H``.
    sigma0 : ndarray, shape (d, d)
        Initial state covariance (the stationary covariance of the training kinematics).
    """

    def __init__(self, A: np.ndarray, W: np.ndarray, J: np.ndarray, sigma0: np.ndarray) -> None:
        self.A, self.W, self.J = (np.asarray(m, dtype=np.float64) for m in (A, W, J))
        self.sigma0 = np.asarray(sigma0, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Back to ``mu = 0``, ``sigma = sigma0``."""
        self.mu = np.zeros(self.A.shape[0])
        self.sigma = self.sigma0.copy()

    def step(self, y: np.ndarray) -> np.ndarray:
        """One bin: information vector ``y = Hᵀ Q⁻¹ (x - b)`` (d,) in, posterior mean (d,) out (a copy)."""
        nu = self.A @ self.mu
        mi = _inv(self.A @ self.sigma @ self.A.T + self.W)
        self.sigma = _inv(mi + self.J)
        self.mu = self.sigma @ (mi @ nu + np.asarray(y, dtype=np.float64))
        return self.mu.copy()


class DiscriminativeKalmanFilter:
    """The DKF recursion with the paper's fallback, or the robust variant.

    Parameters
    ----------
    A, gamma : ndarray, shape (d, d)
        State model ``z_t = A z_{t-1} + v``, ``v ~ N(0, gamma)``.
    S : ndarray, shape (d, d)
        Stationary covariance of ``z`` (also the initial ``sigma``).
    robust : bool
        Use the robust update (no ``-S⁻¹`` term).
    """

    def __init__(self, A: np.ndarray, gamma: np.ndarray, S: np.ndarray, *, robust: bool = False) -> None:
        self.A, self.gamma, self.S = (np.asarray(m, dtype=np.float64) for m in (A, gamma, S))
        self.S_inv = _inv(self.S)
        self.robust = bool(robust)
        self.reset()

    def reset(self) -> None:
        """Back to ``mu = 0``, ``sigma = S``; the fallback counter restarts."""
        self.mu = np.zeros(self.A.shape[0])
        self.sigma = self.S.copy()
        self.n_fallbacks = 0

    def step(self, f: np.ndarray, Q: np.ndarray) -> np.ndarray:
        """One bin: ``f(x)`` (d,) and ``Q(x)`` (d × d) in, posterior mean (d,) out (a copy)."""
        nu = self.A @ self.mu
        mi = _inv(self.A @ self.sigma @ self.A.T + self.gamma)
        qi = _inv(np.asarray(Q, dtype=np.float64))
        if self.robust:
            precision = mi + qi
        else:
            if not is_positive_definite(qi - self.S_inv):
                qi = qi + self.S_inv  # Q <- (Q^-1 + S^-1)^-1
                self.n_fallbacks += 1
            precision = mi + qi - self.S_inv
        self.sigma = _inv(precision)
        self.mu = self.sigma @ (mi @ nu + qi @ np.asarray(f, dtype=np.float64))
        return self.mu.copy()
