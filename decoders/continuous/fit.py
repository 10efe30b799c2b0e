"""Fitting the continuous decoders (numpy / scikit-learn / torch); everything is float64 here.

Shapes: features ``X`` (n_bins × n_features), kinematics ``Z`` (n_bins × d), lists of them are
separate time-ordered sequences. Kinematics are centred on their training mean (kept in the card).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Standardiser",
    "StateModel",
    "fit_kalman",
    "fit_state_model",
    "lagged",
    "nw_loo_bandwidth",
    "nw_predict",
    "ridge_fit",
]


@dataclass(frozen=True)
class Standardiser:
    """Feature mean and scale (constant features get scale 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardiser:
        sd = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(sd > 1e-9, sd, 1.0))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale


@dataclass(frozen=True)
class StateModel:
    """``z_t = A z_{t-1} + v``, ``v ~ N(0, gamma)``; ``S`` the stationary covariance; ``z_mean`` the centring."""

    A: np.ndarray
    gamma: np.ndarray
    S: np.ndarray
    z_mean: np.ndarray


def fit_state_model(Z: Sequence[np.ndarray]) -> StateModel:
    """A and Γ by least squares of ``z_t`` on ``z_{t-1}`` within each sequence; S = cov(z)."""
    z_mean = np.concatenate(Z).mean(axis=0)
    prev = np.concatenate([z[:-1] - z_mean for z in Z])
    nxt = np.concatenate([z[1:] - z_mean for z in Z])
    A = np.linalg.lstsq(prev, nxt, rcond=None)[0].T
    resid = nxt - prev @ A.T
    gamma = resid.T @ resid / max(1, len(resid) - A.shape[0])
    allz = np.concatenate(Z) - z_mean
    S = allz.T @ allz / max(1, len(allz) - 1)
    return StateModel(A, gamma, S, z_mean)


def ridge_fit(X: np.ndarray, Y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with intercept: returns (W (p × d), c (d,)) with ``Y ≈ X W + c``."""
    xm, ym = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - xm, Y - ym
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
    return W, ym - xm @ W


def lagged(X: np.ndarray, n_lags: int) -> np.ndarray:
    """Rows ``t >= n_lags - 1`` of the lag matrix ``[x_{t-L+1}, ..., x_t]`` (oldest first), shape (n - L + 1, L·p)."""
    n = len(X)
    return np.hstack([X[j : n - n_lags + 1 + j] for j in range(n_lags)])


@dataclass(frozen=True)
class KalmanModel:
    """Observation model ``x_std = H z + b + q``, ``q ~ N(0, Q)`` and its information-form pieces."""

    H: np.ndarray
    b: np.ndarray
    Q: np.ndarray
    C: np.ndarray  # Q^-1 H  (p × d)
    J: np.ndarray  # H^T Q^-1 H  (d × d)


def fit_kalman(Xs: np.ndarray, Zc: np.ndarray, ridge: float) -> KalmanModel:
    """H, b by least squares of standardised features on centred kinematics; Q = residual covariance.

    ``Q`` gets ``ridge × mean(diag Q)`` added on its diagonal so it stays invertible with many
    features and few bins (Wu et al. 2003 use it unregularised).
    """
    Zi = np.column_stack([Zc, np.ones(len(Zc))])
    Hb = np.linalg.lstsq(Zi, Xs, rcond=None)[0].T
    H, b = Hb[:, :-1], Hb[:, -1]
    R = Xs - Zi @ Hb.T
    Q = R.T @ R / max(1, len(R) - Zi.shape[1])
    Q = Q + ridge * float(np.mean(np.diag(Q))) * np.eye(len(Q))
    C = np.linalg.solve(Q, H)
    return KalmanModel(H, b, Q, C, H.T @ C)


def _sq_dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.maximum((A**2).sum(1)[:, None] - 2 * A @ B.T + (B**2).sum(1)[None, :], 0.0)


def nw_predict(
    points: np.ndarray, targets: np.ndarray, query: np.ndarray, h: float, *, loo: bool = False
) -> np.ndarray:
    """Nadaraya-Watson regression with a Gaussian kernel of bandwidth ``h`` (leave-one-out when ``loo``)."""
    logits = -_sq_dist(query, points) / (2 * h * h)
    if loo:
        np.fill_diagonal(logits, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    return w @ targets


def nw_loo_bandwidth(points: np.ndarray, targets: np.ndarray, grid: Sequence[float]) -> float:
    """The bandwidth from ``grid`` with the smallest leave-one-out squared error."""
    errs = [float(np.mean((nw_predict(points, targets, points, h, loo=True) - targets) ** 2)) for h in grid]
    return float(grid[int(np.argmin(errs))])
