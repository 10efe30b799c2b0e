"""Euclidean alignment and window resampling as plain matrices (numpy; no torch needed).

Euclidean alignment (He & Wu 2019, IEEE TBME 67(2):399-410, doi:10.1109/TBME.2019.2913914)
whitens one subject's (or session's) trials with the inverse square root of their mean spatial
covariance, ``x_aligned(t) = R^-1/2 x(t)``, so the mean covariance of every aligned subject is the
identity. EEG-SimpleConv (El Ouahidi et al. 2024, J. Neural Eng. 21:026006,
doi:10.1088/1741-2552/ad31ae) aligns per subject/session and resamples before its convolutions;
both steps are linear, so the exported graph holds them as two constant matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from scipy import signal

__all__ = ["align_by_group", "alignment_matrix", "resample_matrix"]

#: Eigenvalues of the mean covariance below this fraction of the largest are floored (rank-deficient data).
EIGEN_FLOOR = 1e-10


def alignment_matrix(X: np.ndarray) -> np.ndarray:
    """``R^-1/2`` of the trials' mean spatial covariance.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_samples, n_channels)
        Band-passed trials in µV.

    Returns
    -------
    ndarray, shape (n_channels, n_channels), float64
        Symmetric; ``X @ A`` gives aligned trials whose mean covariance is the identity.

    Raises
    ------
    ValueError
        Wrong shape, no trials, non-finite data or an all-zero covariance.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3 or X.shape[0] == 0:
        raise ValueError(f"X must be (n_trials >= 1, n_samples, n_channels), got {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError("X holds NaN or infinite samples; cannot compute the alignment.")
    cov = np.einsum("nti,ntj->ij", X, X) / (X.shape[0] * X.shape[1])
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    if vals[-1] <= 0:
        raise ValueError("the trials' mean covariance is zero (flat signals); cannot align.")
    vals = np.maximum(vals, EIGEN_FLOOR * vals[-1])
    return (vecs / np.sqrt(vals)) @ vecs.T


def align_by_group(X: np.ndarray, groups: Sequence[str] | np.ndarray) -> np.ndarray:
    """Align every group (subject or session) of trials with its own :func:`alignment_matrix`.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_samples, n_channels)
    groups : sequence of str, length n_trials

    Returns
    -------
    ndarray, shape like ``X``, float32
    """
    groups = np.asarray(groups)
    out = np.empty(X.shape, dtype=np.float32)
    for g in np.unique(groups):
        sel = groups == g
        out[sel] = np.asarray(X[sel], dtype=np.float64) @ alignment_matrix(X[sel])
    return out


def resample_matrix(n_samples: int, srate: float, target_hz: float) -> tuple[np.ndarray, float]:
    """The linear map that resamples one window from ``srate`` to about ``target_hz``.

    Built by running :func:`scipy.signal.resample_poly` (polyphase FIR with a Kaiser window) on
    the identity, so ``window_time_axis @ M`` equals ``resample_poly`` of the window.

    Parameters
    ----------
    n_samples : int
        Window length at ``srate``.
    srate, target_hz : float
        Input rate and wanted rate in Hz (``target_hz <= srate``).

    Returns
    -------
    (ndarray of shape (n_samples, n_out), float)
        The matrix and the exact output rate in Hz (``srate * up / down``).
    """
    if not 0 < target_hz <= srate:
        raise ValueError(f"resample rate must be in (0, {srate:g}] Hz (the recording rate), got {target_hz!r}.")
    ratio = Fraction(target_hz / srate).limit_denominator(64)
    up, down = ratio.numerator, ratio.denominator
    if up == down:
        return np.eye(n_samples), float(srate)
    m = signal.resample_poly(np.eye(n_samples), up, down, axis=0)  # (n_out, n_samples)
    return np.ascontiguousarray(m.T), float(srate) * up / down
