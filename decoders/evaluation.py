"""Offline evaluation of a discrete decoder file on a dataset spec, the way a live session would run it.

Each recording is passed through the causal filter the model's card asks for (the same
:class:`app.pipeline.CausalFilter` a session pipeline uses, over the whole recording), then for
every class event the window ``[onset + tmin, onset + tmin + card.window_s)`` goes through the
real decoder from :func:`decoders.loader.load_decoder`, and the argmax is the decision. Any
paradigm with discrete output (SSVEP, MI) can use :func:`evaluate_discrete`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from decoders.base import Decoder
from decoders.card import ModelCard
from decoders.dataset import DatasetError, DatasetSpec, Epochs, Recording, load_epochs, read_recording
from decoders.report import classification_metrics

__all__ = ["card_filter", "evaluate_discrete", "model_epochs", "predict_windows"]


def card_filter(card: ModelCard) -> Any:
    """A function ``(data µV samples × channels, sfreq) -> filtered float32`` applying the card's causal filters.

    Returns None when the card asks for no filtering. The filter is
    :class:`app.pipeline.CausalFilter`, exactly what a session pipeline runs.
    """
    from app.pipeline import CausalFilter, FilterSettings

    pre = card.preprocessing
    band = pre.get("bandpass_hz")
    notch = pre.get("notch_hz")
    if band is None and notch is None:
        return None
    settings = FilterSettings(
        tuple(band) if band is not None else None,  # type: ignore[arg-type]
        int(pre.get("filter_order", 4)),
        notch,
    )

    def run(data: np.ndarray, sfreq: float) -> np.ndarray:
        filt = CausalFilter(settings, sfreq, data.shape[1])
        return filt(np.asarray(data, dtype=np.float32))

    return run


def model_epochs(
    card: ModelCard,
    spec: DatasetSpec,
    *,
    recordings: list[Recording] | None = None,
    offset_s: float = 0.0,
) -> Epochs:
    """Cut one model window per class event, after the card's causal filter, channels in card order.

    Parameters
    ----------
    card : ModelCard
    spec : DatasetSpec
    recordings : list of Recording, optional
        Already loaded recordings of ``spec`` with the card's channels (saves reading again).
    offset_s : float
        Extra delay of the window start after ``onset + tmin``, in s.

    Raises
    ------
    DatasetError
        A recording misses a channel the card needs, runs at another rate than the card, a
        spec class is not one of the model's classes, or any error of :func:`load_epochs`.
    """
    spec = replace(spec, channels=tuple(card.channel_labels))
    recs = recordings if recordings is not None else [read_recording(r, spec) for r in spec.recordings]
    for rs, rec in zip(spec.recordings, recs, strict=False):
        if abs(rec.sfreq - card.srate) > 1e-6 * card.srate:
            raise DatasetError(
                f"dataset spec {str(spec.path)!r}, recording {str(rs.path)!r}: sampling-rate mismatch: the recording "
                f"runs at {rec.sfreq:g} Hz but the model expects {card.srate:g} Hz."
            )
    foreign = [c for c in spec.classes if c not in card.classes]
    if foreign:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: class(es) {foreign} are not among the model's classes "
            f"{list(card.classes)}; name the spec's classes like the model's."
        )
    tmin = spec.tmin + offset_s
    if tmin + card.window_s > spec.tmax + 1e-9:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: the model's window ({card.window_s:g} s from tmin {tmin:g} s) is longer "
            f"than the epochs ([epochs] tmax = {spec.tmax:g} s)."
        )
    win_spec = replace(spec, tmin=tmin, tmax=tmin + card.window_s)
    ep = load_epochs(win_spec, preprocess=card_filter(card), recordings=recs)
    n = card.n_window_samples
    if ep.X.shape[1] != n:  # rounding of tmin/tmax vs window_s
        ep = replace(ep, X=ep.X[:, :n] if ep.X.shape[1] > n else np.pad(ep.X, ((0, 0), (0, n - ep.X.shape[1]), (0, 0))))
    return ep


def predict_windows(decoder: Decoder, X: np.ndarray) -> np.ndarray:
    """Run ``decoder.predict`` on each window of ``X`` (n_windows × n_samples × n_channels) -> (n_windows × n_out)."""
    return np.stack([np.asarray(decoder.predict(np.ascontiguousarray(x, dtype=np.float32))) for x in X])


def evaluate_discrete(
    model: str | os.PathLike[str] | Decoder,
    spec: DatasetSpec,
    *,
    recordings: list[Recording] | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class recall and confusion of a discrete decoder on every class event of ``spec``.

    Parameters
    ----------
    model : path or Decoder
        Model file (loaded with :func:`decoders.loader.load_decoder`) or a loaded decoder.
    spec : DatasetSpec
    recordings : list of Recording, optional
        Preloaded recordings (with the card's channels).

    Returns
    -------
    dict
        ``accuracy`` (0-1), ``n_trials``, ``per_class`` (recall per model class, None without
        trials), ``confusion`` (rows true, columns predicted, model class order), ``classes``,
        ``window_s``, ``model``, ``dataset``, ``y_true``/``y_pred`` (model class indices),
        ``onset_s`` and ``recording`` per trial.
    """
    if isinstance(model, str | os.PathLike):
        from decoders.loader import load_decoder

        decoder = load_decoder(model)
        model_name = str(Path(model))
    else:
        decoder = model
        model_name = getattr(decoder, "path", type(decoder).__name__)
    card = decoder.card
    if card.output != "discrete":
        raise ValueError(
            f"model {model_name}: evaluate_discrete needs a discrete model, its card says {card.output!r}."
        )
    ep = model_epochs(card, spec, recordings=recordings)
    out = predict_windows(decoder, ep.X)
    to_model = np.array([card.classes.index(c) for c in ep.classes])
    y_true = to_model[ep.y]
    y_pred = np.argmax(out, axis=1)
    result = classification_metrics(y_true, y_pred, card.classes)
    result.update(
        window_s=card.window_s,
        model=str(model_name),
        dataset=str(spec.path),
        y_true=y_true.tolist(),
        y_pred=y_pred.tolist(),
        onset_s=ep.onset_s.tolist(),
        recording=ep.recording.tolist(),
    )
    return result
