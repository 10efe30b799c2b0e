"""CSP + LDA for motor imagery, and its ONNX graph (spatial filter -> log-variance -> linear layer -> softmax).

Common spatial patterns (Ramoser, Müller & Pfurtscheller 2000, doi:10.1109/86.895946; Blankertz et
al. 2008, doi:10.1109/MSP.2008.4408441) are fitted with :class:`mne.decoding.CSP` on band-passed
windows. Two classes: one CSP problem. More classes: one-vs-rest, one CSP problem per class, the
filters of all problems stacked. The features are the log mean power of each spatially filtered
signal over the window, ``log(mean_t z_f(t)^2 + eps)``; one linear discriminant (scikit-learn LDA with
Ledoit-Wolf shrinkage) maps them to class scores, and softmax gives probabilities, which is exactly scikit-learn's
``LinearDiscriminantAnalysis.predict_proba`` (a sigmoid of the single score for two classes, which
the graph writes as a softmax over ``[0, score]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from decoders.card import ModelCard, embed_card

__all__ = ["LOG_EPSILON", "CspLda", "build_csp_lda_onnx", "fit_csp_lda", "log_power_features"]

#: Added to the mean power (µV²) before the log, so an all-zero window stays finite.
LOG_EPSILON = 1e-6
OPSET = 17
IR_VERSION = 8


def log_power_features(X: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Log mean power of each spatially filtered signal.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_samples, n_channels)
        Band-passed windows in µV.
    filters : ndarray, shape (n_channels, n_features)
        Spatial filters (columns).

    Returns
    -------
    ndarray, shape (n_trials, n_features), float64
        ``log(mean_t (X @ filters)^2 + LOG_EPSILON)``.
    """
    z = np.asarray(X, dtype=np.float64) @ filters
    return np.log(np.mean(z * z, axis=1) + LOG_EPSILON)


@dataclass(frozen=True, eq=False)
class CspLda:
    """A fitted CSP + LDA model.

    Attributes
    ----------
    filters : ndarray, shape (n_channels, n_features)
        Stacked CSP filters (``n_components`` per binary problem).
    lda : LinearDiscriminantAnalysis
        Fitted on :func:`log_power_features`.
    n_classes : int
    """

    filters: np.ndarray
    lda: LinearDiscriminantAnalysis
    n_classes: int

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n_trials × n_classes): numpy features + scikit-learn's LDA (the ONNX reference)."""
        return np.asarray(self.lda.predict_proba(log_power_features(X, self.filters)), dtype=np.float64)

    def linear_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights (n_features × n_classes) and bias (n_classes,) whose softmax equals ``lda.predict_proba``."""
        coef = np.asarray(self.lda.coef_, dtype=np.float64)
        intercept = np.asarray(self.lda.intercept_, dtype=np.float64)
        if self.n_classes == 2:  # sklearn keeps one score s for two classes: p = [1 - sigmoid(s), sigmoid(s)]
            weights = np.stack([np.zeros(coef.shape[1]), coef[0]], axis=1)
            bias = np.array([0.0, intercept[0]])
            return weights, bias
        return coef.T.copy(), intercept.copy()


def _csp_filters(Xc: np.ndarray, labels: np.ndarray, n_components: int, reg: str | float | None) -> np.ndarray:
    from mne.decoding import CSP
    from mne.utils import use_log_level

    csp = CSP(n_components=n_components, reg=reg, log=True, norm_trace=False)
    with use_log_level("error"):
        csp.fit(Xc, labels)
    return np.asarray(csp.filters_[:n_components], dtype=np.float64).T  # (n_channels, n_components)


def fit_csp_lda(
    X: np.ndarray, y: np.ndarray, n_classes: int, *, n_components: int = 4, reg: str | float | None = "ledoit_wolf"
) -> CspLda:
    """Fit CSP (one-vs-rest for more than two classes) and an LDA on the log-power features.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_samples, n_channels)
        Band-passed training windows in µV.
    y : ndarray of int, shape (n_trials,)
        Class indices ``0 .. n_classes - 1``; every class needs at least 2 trials.
    n_classes : int
        Number of classes (>= 2).
    n_components : int
        CSP filters per binary problem (at most ``n_channels``).
    reg : str, float or None
        Covariance regularisation passed to :class:`mne.decoding.CSP` (``"ledoit_wolf"``,
        ``"oas"``, a shrinkage in [0, 1], or None).

    Raises
    ------
    ValueError
        Wrong shapes, non-finite data, a class with fewer than 2 trials, ``n_components`` larger
        than the channel count.
    """
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 3 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n_trials, n_samples, n_channels) and y (n_trials,), got {X.shape} and {y.shape}.")
    if not np.isfinite(X).all():
        raise ValueError("X holds NaN or infinite samples; CSP cannot be fitted.")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}.")
    counts = np.bincount(y, minlength=n_classes)
    if y.min() < 0 or y.max() >= n_classes or counts.min() < 2:
        raise ValueError(
            f"every class 0..{n_classes - 1} needs at least 2 trials, counts per class: {counts.tolist()}."
        )
    if not 1 <= n_components <= X.shape[2]:
        raise ValueError(f"n_components must be in 1..{X.shape[2]} (the channel count), got {n_components}.")
    Xc = np.ascontiguousarray(X.transpose(0, 2, 1), dtype=np.float64)
    problems = [y] if n_classes == 2 else [(y == k).astype(np.int64) for k in range(n_classes)]
    filters = np.concatenate([_csp_filters(Xc, labels, n_components, reg) for labels in problems], axis=1)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    lda.fit(log_power_features(X, filters), y)
    return CspLda(filters=filters, lda=lda, n_classes=n_classes)


def build_csp_lda_onnx(model: CspLda, card: ModelCard) -> onnx.ModelProto:
    """The ONNX graph of ``model`` with ``card`` embedded.

    Graph: ``window`` float32 [batch, n_samples, n_channels] -> float64 (the log-power features
    feed large LDA weights, so the graph computes in double) -> MatMul spatial filters
    [n_channels, F] -> square -> mean over time -> + eps -> log -> Gemm (linear layer, F × K) ->
    Softmax -> ``probabilities`` float32 [batch, K].
    """
    weights, bias = model.linear_layer()
    n_ch, n_feat = model.filters.shape
    if card.n_channels != n_ch or card.n_outputs != model.n_classes:
        raise ValueError(
            f"card has {card.n_channels} channels and {card.n_outputs} classes, the model {n_ch} and {model.n_classes}."
        )
    inits = [
        numpy_helper.from_array(model.filters.astype(np.float64), "spatial_filters"),
        numpy_helper.from_array(np.array(LOG_EPSILON, dtype=np.float64), "log_epsilon"),
        numpy_helper.from_array(weights.astype(np.float64), "lda_weights"),
        numpy_helper.from_array(bias.astype(np.float64), "lda_bias"),
    ]
    nodes = [
        helper.make_node("Cast", [card.input_name], ["window_f64"], to=TensorProto.DOUBLE),
        helper.make_node("MatMul", ["window_f64", "spatial_filters"], ["csp_signals"]),  # [B, N, F]
        helper.make_node("Mul", ["csp_signals", "csp_signals"], ["csp_power"]),
        helper.make_node("ReduceMean", ["csp_power"], ["mean_power"], axes=[1], keepdims=0),  # [B, F]
        helper.make_node("Add", ["mean_power", "log_epsilon"], ["mean_power_eps"]),
        helper.make_node("Log", ["mean_power_eps"], ["log_power"]),
        helper.make_node("Gemm", ["log_power", "lda_weights", "lda_bias"], ["logits"]),  # [B, K]
        helper.make_node("Softmax", ["logits"], ["probabilities_f64"], axis=-1),
        helper.make_node("Cast", ["probabilities_f64"], ["probabilities"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "mi_csp_lda",
        [helper.make_tensor_value_info(card.input_name, TensorProto.FLOAT, ["batch", card.n_window_samples, n_ch])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", model.n_classes])],
        initializer=inits,
        doc_string=f"CSP ({n_feat} filters) + LDA motor-imagery decoder",
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="closedloop", doc_string=graph.doc_string
    )
    onnx_model.ir_version = IR_VERSION
    embed_card(onnx_model, card)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model
