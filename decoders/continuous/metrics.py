"""Scores of a decoded trajectory, each averaged over output dimensions."""

from __future__ import annotations

import numpy as np

__all__ = ["trajectory_metrics"]


def trajectory_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """R², Pearson correlation, normalised RMSE and mean absolute angle error.

    Parameters
    ----------
    pred, true : ndarray, shape (n_bins, n_dims)

    Returns
    -------
    dict
        ``r2`` (1 - SSE/SST per dimension, averaged), ``correlation`` (Pearson r per dimension,
        averaged), ``nrmse`` (RMSE / standard deviation of the true signal per dimension,
        averaged), ``maae`` (mean absolute angle in degrees between the predicted and the true
        vector, over bins where both are non-zero; NaN for one dimension).
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2 or len(p) < 2:
        raise ValueError(f"pred and true must both be (n_bins >= 2, n_dims), got {p.shape} and {t.shape}.")
    err = p - t
    sst = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    r2 = 1.0 - (err**2).sum(axis=0) / np.where(sst > 0, sst, np.nan)
    sd_p, sd_t = p.std(axis=0), t.std(axis=0)
    cov = ((p - p.mean(axis=0)) * (t - t.mean(axis=0))).mean(axis=0)
    corr = cov / np.where(sd_p * sd_t > 0, sd_p * sd_t, np.nan)
    nrmse = np.sqrt((err**2).mean(axis=0)) / np.where(sd_t > 0, sd_t, np.nan)
    maae = float("nan")
    if p.shape[1] >= 2:
        npn, ntn = np.linalg.norm(p, axis=1), np.linalg.norm(t, axis=1)
        ok = (npn > 0) & (ntn > 0)
        if ok.any():
            cos = np.clip((p[ok] * t[ok]).sum(axis=1) / (npn[ok] * ntn[ok]), -1.0, 1.0)
            maae = float(np.degrees(np.arccos(cos)).mean())
    return {
        "r2": float(np.nanmean(r2)),
        "correlation": float(np.nanmean(corr)),
        "nrmse": float(np.nanmean(nrmse)),
        "maae": maae,
    }
