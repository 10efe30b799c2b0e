"""Filter-bank canonical correlation analysis (Chen et al. 2015, J. Neural Eng. 12:046008,
doi:10.1088/1741-2560/12/4/046008).

For each sub-band n and target frequency f_k, ``rho_{n,k}`` is the largest canonical
correlation between the sub-band window (samples × channels) and sine/cosine references at
``f_k * h`` (h = 1..Nh). The score of target k is ``sum_n w_n * rho_{n,k}^2`` with
``w_n = n^-a + b`` (a = 1.25, b = 0.25). No training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["cca_max_corr", "fbcca_scores", "reference_signals", "subband_weights"]


def subband_weights(n_subbands: int, a: float = 1.25, b: float = 0.25) -> np.ndarray:
    """``w_n = n^-a + b`` for n = 1..n_subbands."""
    n = np.arange(1, n_subbands + 1, dtype=np.float64)
    return n**-a + b


def reference_signals(frequencies: Sequence[float], srate: float, n_samples: int, n_harmonics: int) -> np.ndarray:
    """Orthonormal bases of the sine/cosine references, shape (K, n_samples, 2 * n_harmonics).

    Columns are mean-free before orthonormalisation (CCA works on centred data).
    """
    t = np.arange(n_samples) / srate
    out = []
    for f in frequencies:
        cols = []
        for h in range(1, n_harmonics + 1):
            cols += [np.sin(2 * np.pi * f * h * t), np.cos(2 * np.pi * f * h * t)]
        y = np.stack(cols, axis=1)
        y -= y.mean(axis=0)
        q, _ = np.linalg.qr(y)
        out.append(q)
    return np.stack(out)


def cca_max_corr(x: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Largest canonical correlation between centred data and each reference basis.

    Parameters
    ----------
    x : ndarray, shape (n_samples, n_channels)
    qy : ndarray, shape (K, n_samples, m), orthonormal columns

    Returns
    -------
    ndarray, shape (K,)
    """
    xc = x - x.mean(axis=0)
    qx, r = np.linalg.qr(xc)
    keep = np.abs(np.diag(r)) > 1e-10 * max(float(np.abs(np.diag(r)).max()), 1e-300)
    qx = qx[:, keep]
    if qx.shape[1] == 0:
        return np.zeros(qy.shape[0])
    m = np.matmul(qx.T, qy)  # (K, n_components, m); matmul is ~30x faster than einsum here
    s = np.linalg.svd(m, compute_uv=False)
    return np.clip(s[:, 0], 0.0, 1.0)


def fbcca_scores(bands: np.ndarray, qy: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """FBCCA scores ``sum_n w_n rho_{n,k}^2`` normalised by ``sum_n w_n`` (so in [0, 1]).

    Parameters
    ----------
    bands : ndarray, shape (n_subbands, n_samples, n_channels)
    qy : ndarray, shape (K, n_samples, m)
    weights : ndarray, shape (n_subbands,)

    Returns
    -------
    ndarray, shape (K,)
    """
    rho = _batched_max_corr(bands, qy)
    if rho is None:  # a rank-deficient sub-band: per sub-band, dropping its null directions
        rho = np.stack([cca_max_corr(b, qy) for b in bands])  # (n_subbands, K)
    return (weights[:, None] * rho**2).sum(axis=0) / weights.sum()


def _batched_max_corr(bands: np.ndarray, qy: np.ndarray) -> np.ndarray | None:
    """:func:`cca_max_corr` of all sub-bands in one batched QR / SVD, (n_subbands, K); None if one is rank-deficient."""
    xc = bands - bands.mean(axis=1, keepdims=True)
    qx, r = np.linalg.qr(xc)  # batched over sub-bands
    d = np.abs(np.diagonal(r, axis1=-2, axis2=-1))  # (n_subbands, n_channels)
    if not (d > 1e-10 * np.maximum(d.max(axis=1, keepdims=True), 1e-300)).all():
        return None
    m = np.matmul(np.swapaxes(qx, -1, -2)[:, None], qy[None])  # (n_subbands, K, n_channels, m)
    return np.clip(np.linalg.svd(m, compute_uv=False)[..., 0], 0.0, 1.0)
