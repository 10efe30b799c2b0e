"""LDA on standardised TD features (scikit-learn), exported as a features + linear + softmax ONNX graph."""

from __future__ import annotations

import numpy as np
import onnx
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from decoders.emg.graph import build_linear_graph

__all__ = ["export_lda", "fit_lda"]


def fit_lda(features: np.ndarray, y: np.ndarray) -> Pipeline:
    """Fit ``StandardScaler -> LinearDiscriminantAnalysis(lsqr, Ledoit-Wolf shrinkage)``.

    Parameters
    ----------
    features : ndarray, shape (n_windows, n_features)
        Flattened classifier input (:func:`decoders.emg.graph.classifier_input`, feature-major).
    y : ndarray, shape (n_windows,)
        Class indices.
    """
    clf = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
    return clf.fit(np.asarray(features, dtype=np.float64), np.asarray(y))


def export_lda(
    clf: Pipeline,
    *,
    n_samples: int,
    n_channels: int,
    threshold_uv: float,
    common_average: bool,
    n_classes: int,
) -> onnx.ModelProto:
    """The fitted pipeline as an ONNX graph: window -> features -> standardise -> linear -> softmax.

    ``predict_proba`` of a multi-class LDA is the softmax of its decision function; for two
    classes it is ``expit(d)``, i.e. the softmax of ``[0, d]``. Classes absent from training get
    a logit of -1e4 (probability ~0) so the output still has ``n_classes`` entries.
    """
    scaler: StandardScaler = clf[0]
    lda: LinearDiscriminantAnalysis = clf[-1]
    coef = np.asarray(lda.coef_, dtype=np.float64)
    icpt = np.asarray(lda.intercept_, dtype=np.float64)
    seen = [int(c) for c in lda.classes_]
    if len(seen) == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        icpt = np.concatenate([[0.0], icpt])
    weights = np.zeros((coef.shape[1], n_classes))
    bias = np.full(n_classes, -1e4)
    for row, k in enumerate(seen):
        weights[:, k] = coef[row]
        bias[k] = icpt[row]
    return build_linear_graph(
        n_samples=n_samples,
        n_channels=n_channels,
        threshold_uv=threshold_uv,
        common_average=common_average,
        mean=scaler.mean_,
        scale=scaler.scale_,
        weights=weights,
        bias=bias,
    )
