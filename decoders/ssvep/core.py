"""Shared SSVEP training machinery: options, epochs as filter-bank tensors, scorers, cross-validation, model files.

Used by :mod:`decoders.ssvep.methods` (``closedloop train``) and ``benchmarks/ssvep_real.py``
so both run the same code on the same folds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from decoders.card import ModelCard, embed_card
from decoders.dataset import DatasetError, DatasetSpec, Epochs, Recording, load_epochs, read_recording
from decoders.ssvep.fbcca import fbcca_scores, reference_signals, subband_weights
from decoders.ssvep.filterbank import apply_filter_bank, design_filter_bank, subband_edges
from decoders.ssvep.rest import REST_STATISTICS, calibrate_threshold, rest_statistic, scores_to_probabilities
from decoders.ssvep.trca import build_etrca_onnx, etrca_scores, fit_etrca
from decoders.training import code_version, now_iso

__all__ = [
    "METHODS",
    "SsvepData",
    "SsvepOptions",
    "cross_validate",
    "cv_folds",
    "fit_scorer",
    "load_ssvep_data",
    "write_model",
]

METHODS = ("fbcca", "etrca", "dnn")
#: Softmax temperature per method (scores are in [0, 1] for FBCCA/eTRCA, log-probabilities for the DNN).
TEMPERATURE = {"fbcca": 50.0, "etrca": 20.0, "dnn": 1.0}
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SsvepOptions:
    """Options from the spec's ``[ssvep]`` table (all optional).

    Attributes
    ----------
    window_s : float or None
        Model decision window in s (default: the epoch length ``tmax - tmin``).
    gaze_shift_s : float
        Gaze-shift time added to each selection in the ITR, s (default 0.5, as Chen et al. 2015).
    false_activation_rate : float
        Share of rest windows allowed to issue a command (default 0.1).
    rest_statistic : str
        ``"top"`` (best target score, default) or ``"margin"`` (best minus second best).
    n_subbands : int or None
        Filter-bank sub-bands (default 5 for FBCCA/eTRCA, 3 for the DNN).
    fb_start_hz, fb_high_hz : float
        Sub-band n passes [n * fb_start_hz, fb_high_hz] Hz (defaults 8 and 88).
    n_harmonics : int
        FBCCA reference harmonics (default 3).
    hop_s : float
        Recommended decision hop written to the card, s (default 0.1).
    folds : int
        Cross-validation folds (default 5).
    report_windows : list of float or None
        Windows (s) for the accuracy/ITR-vs-window figure (default 0.5, 1, 2, 4 s up to the epoch length;
        the DNN's default is its own window only, to bound training time).
    epochs_global, epochs_finetune : int
        DNN training epochs per stage (defaults 40 and 40).
    """

    window_s: float | None = None
    gaze_shift_s: float = 0.5
    false_activation_rate: float = 0.1
    rest_statistic: str = "top"
    n_subbands: int | None = None
    fb_start_hz: float = 8.0
    fb_high_hz: float = 88.0
    n_harmonics: int = 3
    hop_s: float = 0.1
    folds: int = 5
    report_windows: tuple[float, ...] | None = None
    epochs_global: int = 40
    epochs_finetune: int = 40
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: dict[str, Any], spec_path: Path) -> SsvepOptions:
        """Validate the ``[ssvep]`` table; DatasetError naming the spec and key on a bad value."""
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise DatasetError(
                f"dataset spec {str(spec_path)!r}: unknown [ssvep] key(s) {unknown}; known: {sorted(known)}."
            )
        kw: dict[str, Any] = {}
        for k, v in table.items():
            if k == "report_windows":
                if not isinstance(v, list) or not all(isinstance(x, int | float) and x > 0 for x in v):
                    raise DatasetError(
                        f"dataset spec {str(spec_path)!r}: [ssvep] report_windows must be a list of s > 0."
                    )
                kw[k] = tuple(float(x) for x in v)
            elif k == "rest_statistic":
                if v not in REST_STATISTICS:
                    raise DatasetError(
                        f"dataset spec {str(spec_path)!r}: [ssvep] rest_statistic must be one of "
                        f"{list(REST_STATISTICS)}, got {v!r}."
                    )
                kw[k] = v
            elif k in ("n_subbands", "n_harmonics", "folds", "epochs_global", "epochs_finetune"):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise DatasetError(
                        f"dataset spec {str(spec_path)!r}: [ssvep] {k} must be an integer >= 1, got {v!r}."
                    )
                kw[k] = v
            else:
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise DatasetError(
                        f"dataset spec {str(spec_path)!r}: [ssvep] {k} must be a number >= 0, got {v!r}."
                    )
                kw[k] = float(v)
        if not 0.0 <= kw.get("false_activation_rate", 0.1) < 1.0:
            raise DatasetError(f"dataset spec {str(spec_path)!r}: [ssvep] false_activation_rate must be in [0, 1).")
        return cls(**kw)

    def subbands_for(self, method: str) -> int:
        """Number of sub-bands ``method`` uses."""
        return self.n_subbands or (3 if method == "dnn" else 5)


@dataclass(frozen=True, eq=False)
class SsvepData:
    """A spec's recordings loaded once, with its target and rest classes.

    Attributes
    ----------
    spec : DatasetSpec
    recordings : list of Recording
    targets : tuple of str
        Classes with a stimulus frequency, in spec order.
    frequencies : tuple of float
        Their frequencies in Hz.
    rest : str or None
        The class without a frequency (no-control), if any.
    options : SsvepOptions
    """

    spec: DatasetSpec
    recordings: list[Recording]
    targets: tuple[str, ...]
    frequencies: tuple[float, ...]
    rest: str | None
    options: SsvepOptions

    @property
    def sfreq(self) -> float:
        """Hz."""
        return self.recordings[0].sfreq

    @property
    def ch_names(self) -> list[str]:
        """Channel labels (of the first recording; the others are reordered to them)."""
        return list(self.recordings[0].ch_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Model classes: targets, then rest if any."""
        return self.targets + ((self.rest,) if self.rest else ())

    def epoch_length_s(self) -> float:
        """``tmax - tmin`` in s."""
        return self.spec.tmax - self.spec.tmin

    def epochs(self, window_s: float) -> Epochs:
        """One window of ``window_s`` s per class event, starting at ``onset + tmin``; classes in model order."""
        if window_s > self.epoch_length_s() + 1e-9:
            raise DatasetError(
                f"dataset spec {str(self.spec.path)!r}: window {window_s:g} s is longer than the epochs "
                f"([epochs] {self.spec.tmin:g} to {self.spec.tmax:g} s)."
            )
        spec = replace(self.spec, tmax=self.spec.tmin + window_s).with_classes(self.class_names)
        return load_epochs(spec, recordings=self.recordings)


def load_ssvep_data(spec: DatasetSpec, *, channels: Sequence[str] | None = None) -> SsvepData:
    """Read a SSVEP spec's recordings and split its classes into targets and rest.

    Raises
    ------
    DatasetError
        Fewer than 2 target classes, more than one class without a frequency, bad ``[ssvep]``
        options, or any error reading the recordings.
    """
    opts = SsvepOptions.from_table(spec.table("ssvep"), spec.path)
    if channels is not None:
        spec = replace(spec, channels=tuple(channels))
    targets = tuple(n for n, c in spec.classes.items() if c.frequency is not None)
    rests = [n for n, c in spec.classes.items() if c.frequency is None]
    if len(targets) < 2:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: SSVEP needs at least 2 classes with a 'frequency', got {list(targets)}."
        )
    if len(rests) > 1:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: at most one class may lack a 'frequency' (the rest / no-control "
            f"class), got {rests}."
        )
    freqs = tuple(float(spec.classes[n].frequency or 0.0) for n in targets)
    recs = [read_recording(r, spec) for r in spec.recordings]
    data = SsvepData(spec, recs, targets, freqs, rests[0] if rests else None, opts)
    data.epochs(opts.window_s or data.epoch_length_s())  # surfaces event-code / trial-count errors now
    return data


# ---------------------------------------------------------------------------------------------- scorers
@dataclass
class FilterBankSpec:
    """Sub-band edges (Hz), their SOS filters and the weights ``n^-1.25 + 0.25``."""

    edges: list[tuple[float, float]]
    bank: list[np.ndarray]
    weights: np.ndarray

    @classmethod
    def make(cls, n_subbands: int, sfreq: float, opts: SsvepOptions) -> FilterBankSpec:
        edges = subband_edges(n_subbands, sfreq, opts.fb_start_hz, opts.fb_high_hz)
        return cls(edges, design_filter_bank(edges, sfreq), subband_weights(n_subbands))

    def apply(self, X: np.ndarray) -> np.ndarray:
        """(n, samples, channels) -> (n, sub-bands, samples, channels)."""
        return apply_filter_bank(X, self.bank)


@dataclass
class FittedScorer:
    """A fitted scoring function on filter-bank tensors plus what is needed to write it as a model."""

    score: Scorer
    onnx_model: onnx.ModelProto | None = None
    params: dict[str, Any] = field(default_factory=dict)
    torch_net: Any = None
    global_net: Any = None


def fit_scorer(
    method: str,
    bands: np.ndarray,
    y: np.ndarray,
    n_targets: int,
    fb: FilterBankSpec,
    data: SsvepData,
    *,
    seed: int = 0,
    pretrain: tuple[np.ndarray, np.ndarray] | None = None,
    global_net: Any = None,
) -> FittedScorer:
    """Fit ``method`` on target trials.

    Parameters
    ----------
    method : str
        ``fbcca`` | ``etrca`` | ``dnn``.
    bands : ndarray, shape (n_trials, n_subbands, n_samples, n_channels)
        Target trials only.
    y : ndarray, shape (n_trials,), target indices
    n_targets : int
    fb : FilterBankSpec
    data : SsvepData
    seed : int
    pretrain : (bands, y), optional
        DNN global stage data.
    global_net : optional
        A trained global DNN to fine-tune (reused across folds).
    """
    n_samples = bands.shape[2]
    if method == "fbcca":
        qy = reference_signals(data.frequencies, data.sfreq, n_samples, data.options.n_harmonics)

        def score(b: np.ndarray) -> np.ndarray:
            return np.stack([fbcca_scores(x, qy, fb.weights) for x in b])

        return FittedScorer(score, None, {"n_harmonics": data.options.n_harmonics})
    if method == "etrca":
        model = fit_etrca(bands, y, n_targets, fb.weights)
        return FittedScorer(lambda b: np.stack([etrca_scores(model, x) for x in b]), build_etrca_onnx(model))
    if method == "dnn":
        from decoders.ssvep.dnn import DnnSettings, export_onnx, torch_log_probs, train_dnn

        settings = DnnSettings(epochs_global=data.options.epochs_global, epochs_finetune=data.options.epochs_finetune)
        net, gnet = train_dnn(
            bands, y, n_targets, pretrain=pretrain, global_net=global_net, settings=settings, seed=seed
        )
        return FittedScorer(
            lambda b: torch_log_probs(net, b),
            export_onnx(net, bands.shape[1], n_samples, bands.shape[3]),
            {"stages": "global+finetune" if gnet is not None else "single"},
            net,
            gnet,
        )
    raise ValueError(f"unknown SSVEP method {method!r}; known: {list(METHODS)}.")


# ---------------------------------------------------------------------------------------------- cross-validation
def cv_folds(y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds that never split a group when there are >= 2 groups; else stratified k-fold (shuffled with ``seed``)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    idx = np.arange(len(y))
    n_groups = len(set(groups.tolist()))
    if n_groups >= 2:
        return list(GroupKFold(n_splits=min(n_folds, n_groups)).split(idx, y, groups))
    k = int(min(n_folds, np.bincount(y).min()))
    if k < 2:
        raise DatasetError("cross-validation needs at least 2 trials per class.")
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, y))


def cross_validate(
    method: str,
    data: SsvepData,
    window_s: float,
    *,
    seed: int = 0,
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
    pretrain: tuple[np.ndarray, np.ndarray] | None = None,
    global_net: Any = None,
    epochs: Epochs | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Cross-validated decisions of ``method`` at ``window_s``.

    Each fold fits on its training target trials, calibrates the rest threshold on its training
    rest trials (if the spec has a rest class), then decides the test trials.

    Returns
    -------
    dict
        ``y_true`` (model class indices, rest last), ``y_pred`` (with rest detection), and for
        target trials only ``y_true_targets`` / ``y_pred_targets`` (argmax of the target scores),
        ``classes``, ``window_s``, ``folds``.
    """
    ep = epochs if epochs is not None else data.epochs(window_s)
    fb = FilterBankSpec.make(data.options.subbands_for(method), data.sfreq, data.options)
    bands = fb.apply(ep.X)
    n_t = len(data.targets)
    rest_idx = n_t if data.rest else None
    y = ep.y
    splits = folds if folds is not None else cv_folds(y, ep.groups, data.options.folds, seed)
    y_pred = np.full(len(y), -1)
    y_pred_targets = np.full(len(y), -1)
    for i, (tr, te) in enumerate(splits):
        if progress is not None:
            progress(i / len(splits), f"{method} {window_s:g} s fold {i + 1}/{len(splits)}")
        tr_t = tr[y[tr] < n_t]
        scorer = fit_scorer(
            method, bands[tr_t], y[tr_t], n_t, fb, data, seed=seed + i, pretrain=pretrain, global_net=global_net
        )
        thr = None
        if rest_idx is not None:
            tr_r = tr[y[tr] == rest_idx]
            if len(tr_r):
                stat = rest_statistic(scorer.score(bands[tr_r]), data.options.rest_statistic)
                thr = calibrate_threshold(stat, data.options.false_activation_rate)
        probs = scores_to_probabilities(scorer.score(bands[te]), TEMPERATURE[method], thr, data.options.rest_statistic)
        y_pred[te] = np.argmax(probs, axis=1)
        # target-only decision (3-class): argmax over targets
        y_pred_t = np.argmax(probs[:, :n_t], axis=1)
        y_pred_targets[te] = y_pred_t
    tmask = y < n_t
    return {
        "classes": list(data.class_names),
        "window_s": window_s,
        "y_true": y.tolist(),
        "y_pred": y_pred.tolist(),
        "y_true_targets": y[tmask].tolist(),
        "y_pred_targets": y_pred_targets[tmask].tolist(),
        "folds": len(splits),
    }


# ---------------------------------------------------------------------------------------------- model files
def write_model(
    out: Path,
    method: str,
    data: SsvepData,
    window_s: float,
    fb: FilterBankSpec,
    scorer: FittedScorer,
    rest_threshold: float | None,
    *,
    training_data: str,
    extra: dict[str, Any] | None = None,
) -> ModelCard:
    """Write the model file (card-only for FBCCA, ONNX scorer otherwise) and return its card."""
    from decoders.ssvep.runtime import FBCCA_RUNTIME, ONNX_RUNTIME, card_only_graph

    n_samples = round(window_s * data.sfreq)
    runtime = FBCCA_RUNTIME if scorer.onnx_model is None else ONNX_RUNTIME
    params: dict[str, Any] = {
        "frequencies": list(data.frequencies),
        "targets": list(data.targets),
        "rest_class": data.rest,
        "rest_threshold": rest_threshold,
        "rest_statistic": data.options.rest_statistic,
        "false_activation_rate": data.options.false_activation_rate if rest_threshold is not None else None,
        "subbands": [list(e) for e in fb.edges],
        "filter": "Chebyshev I, 0.5 dB ripple, 40 dB stop 4 Hz below and 10 Hz above, zero phase in the window",
        "weights": fb.weights.tolist(),
        "temperature": TEMPERATURE[method],
        "gaze_shift_s": data.options.gaze_shift_s,
        **scorer.params,
        **(extra or {}),
    }
    card = ModelCard(
        paradigm="ssvep",
        srate=data.sfreq,
        channel_labels=tuple(data.ch_names),
        window_s=n_samples / data.sfreq,
        hop_s=data.options.hop_s,
        output="discrete",
        classes=data.class_names,
        preprocessing={"units": "microvolts", "reference": "none", "internal_filter_bank": True},
        provenance={
            "created_by": "closedloop train ssvep",
            "created_at": now_iso(),
            "method": method,
            "runtime": runtime,
            "training_data": training_data,
            "code_version": code_version(),
            "parameters": params,
        },
        input_name="window" if scorer.onnx_model is None else scorer.onnx_model.graph.input[0].name,
    )
    model = scorer.onnx_model if scorer.onnx_model is not None else card_only_graph(n_samples, len(data.ch_names))
    embed_card(model, card)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return card
