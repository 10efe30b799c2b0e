"""What every motor-imagery method shares: the ``[mi]`` spec table, causal preprocessing, folds and the card.

The ``[mi]`` table of a dataset spec (all keys optional)::

    [mi]
    bandpass_hz = [8.0, 30.0]   # causal Butterworth band-pass in Hz (default: 8-30 for csp-lda, 4-38 for simpleconv)
    filter_order = 4            # Butterworth order
    hop_s = 0.1                 # recommended decision hop written to the card, s
    folds = 5                   # cross-validation folds (folds never split a recording group)
    window_s = 2.0              # model window, s (default: the epoch, tmax - tmin); shorter windows train on crops
    crop_step_s = 0.25          # step between training crops when window_s < tmax - tmin, s
    csp_components = 4          # CSP filters per binary problem (one-vs-rest for > 2 classes)
    csp_reg = "ledoit_wolf"     # covariance shrinkage of CSP: "ledoit_wolf", "oas", "none" or a number in [0, 1]
    resample_hz = 80.0          # simpleconv: rate the network runs at, Hz
    feature_maps = 32           # simpleconv: width of the first convolution
    n_blocks = 2                # simpleconv: blocks of two convolutions
    kernel_size = 8             # simpleconv: convolution kernel, samples at resample_hz
    epochs = 60                 # simpleconv: training epochs (global stage with --pretrain)
    epochs_finetune = 40        # simpleconv: fine-tuning epochs on the target subject (with --pretrain)
    lr = 1e-3                   # simpleconv: Adam learning rate
    lr_finetune = 5e-4          # simpleconv: Adam learning rate of the fine-tuning stage
    batch_size = 16             # simpleconv
    mixup = true                # simpleconv: mixup augmentation (El Ouahidi et al. 2024)
    threads = 1                 # simpleconv: torch intra-op threads while training

Preprocessing is causal and identical to what a session pipeline does before the window reaches
the model: :class:`app.pipeline.CausalFilter` over each whole recording, the band-pass the card
names. Training data go through the same filter, so online and offline windows match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from decoders.card import ModelCard
from decoders.dataset import DatasetError, DatasetSpec, Epochs, load_epochs
from decoders.training import code_version, now_iso

__all__ = [
    "DEFAULT_BANDS",
    "MiOptions",
    "causal_preprocess",
    "crop_windows",
    "group_folds",
    "load_mi_epochs",
    "make_card",
    "parse_options",
    "window_samples",
]

#: Default band-pass per method, Hz.
DEFAULT_BANDS: dict[str, tuple[float, float]] = {"csp-lda": (8.0, 30.0), "simpleconv": (4.0, 38.0)}

_CSP_REGS = ("ledoit_wolf", "oas", "none")


@dataclass(frozen=True)
class SimpleConvSettings:
    """EEG-SimpleConv network and training settings (CPU-sized defaults; the paper tunes width and depth).

    Torch-free, so parsing a spec's ``[mi]`` table (:class:`MiOptions` extends it) needs no torch.

    Attributes
    ----------
    resample_hz : float
        Rate the convolutions run at, Hz.
    feature_maps, n_blocks, kernel_size : int
        Width of the first convolution, number of two-convolution blocks, kernel length in samples.
    epochs, epochs_finetune : int
        Epochs of training (global stage with pretraining data) and of fine-tuning.
    lr, lr_finetune : float
        Adam learning rates.
    batch_size : int
    mixup : bool
        Mixup of random pairs within each batch (weight uniform in [0, 1]).
    threads : int
        torch intra-op threads used while training.
    """

    resample_hz: float = 80.0
    feature_maps: int = 32
    n_blocks: int = 2
    kernel_size: int = 8
    epochs: int = 60
    epochs_finetune: int = 40
    lr: float = 1e-3
    lr_finetune: float = 5e-4
    batch_size: int = 16
    mixup: bool = True
    threads: int = 1


@dataclass(frozen=True)
class MiOptions(SimpleConvSettings):
    """Validated ``[mi]`` table (see the module docstring for the meaning and units of each key)."""

    bandpass_hz: tuple[float, float] | None = None
    filter_order: int = 4
    hop_s: float = 0.1
    folds: int = 5
    window_s: float | None = None
    crop_step_s: float = 0.25
    csp_components: int = 4
    csp_reg: str | float = "ledoit_wolf"

    def band(self, method: str) -> tuple[float, float]:
        """The band-pass in Hz for ``method`` (the spec's, else the method's default)."""
        return self.bandpass_hz if self.bandpass_hz is not None else DEFAULT_BANDS[method]


_INT_KEYS = {"filter_order": 1, "folds": 2, "csp_components": 1, "feature_maps": 1, "n_blocks": 1, "kernel_size": 1}
_INT_KEYS |= {"epochs": 1, "epochs_finetune": 0, "batch_size": 1, "threads": 1}
_POSITIVE_KEYS = ("hop_s", "resample_hz", "lr", "lr_finetune", "window_s", "crop_step_s")


def parse_options(table: Mapping[str, Any], where: str) -> MiOptions:
    """Validate the ``[mi]`` table of a spec.

    Parameters
    ----------
    table : mapping
        The raw table (``spec.table("mi")``).
    where : str
        The spec file, named in messages.

    Raises
    ------
    DatasetError
        Unknown key or a value of the wrong type/range; the message names the spec, the key,
        the rule and the value.
    """
    known = [f.name for f in fields(MiOptions)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise DatasetError(f"dataset spec {where!r}: unknown key(s) {unknown} in [mi]; known keys: {known}.")
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = f"dataset spec {where!r}: key 'mi.{key}'"
        if key == "bandpass_hz":
            ok = isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
            if not ok or not 0 < float(value[0]) < float(value[1]):
                raise DatasetError(f"{name} must be [low, high] in Hz with 0 < low < high, got {value!r}.")
            values[key] = (float(value[0]), float(value[1]))
        elif key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < _INT_KEYS[key]:
                raise DatasetError(f"{name} must be an integer >= {_INT_KEYS[key]}, got {value!r}.")
            values[key] = int(value)
        elif key in _POSITIVE_KEYS:
            if not _is_number(value) or float(value) <= 0:
                raise DatasetError(f"{name} must be a number > 0, got {value!r}.")
            values[key] = float(value)
        elif key == "csp_reg":
            if isinstance(value, str) and value in _CSP_REGS:
                values[key] = value
            elif _is_number(value) and 0.0 <= float(value) <= 1.0:
                values[key] = float(value)
            else:
                raise DatasetError(f"{name} must be one of {list(_CSP_REGS)} or a number in [0, 1], got {value!r}.")
        elif key == "mixup":
            if not isinstance(value, bool):
                raise DatasetError(f"{name} must be true or false, got {value!r}.")
            values[key] = value
    return MiOptions(**values)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and bool(np.isfinite(value))


def causal_preprocess(band_hz: tuple[float, float], order: int) -> Callable[[np.ndarray, float], np.ndarray]:
    """``(data µV samples × channels, sfreq Hz) -> float32`` through the session pipeline's causal band-pass.

    The filter is :class:`app.pipeline.CausalFilter` (state initialised at the first sample's steady
    state), run over the whole recording exactly as a live pipeline would.
    """
    from app.pipeline import CausalFilter, FilterSettings

    settings = FilterSettings((float(band_hz[0]), float(band_hz[1])), int(order), None)

    def run(data: np.ndarray, sfreq: float) -> np.ndarray:
        return CausalFilter(settings, sfreq, data.shape[1])(np.asarray(data, dtype=np.float32))

    return run


def load_mi_epochs(spec: DatasetSpec, band_hz: tuple[float, float], order: int) -> Epochs:
    """Epochs of ``spec`` cut from causally band-passed recordings (µV, n_trials × n_samples × n_channels).

    Raises
    ------
    DatasetError
        From :func:`decoders.dataset.load_epochs`, or a band edge at or above Nyquist.
    """
    if spec.paradigm != "mi":
        raise DatasetError(f"dataset spec {str(spec.path)!r}: paradigm is {spec.paradigm!r}, need 'mi'.")
    try:
        return load_epochs(spec, preprocess=causal_preprocess(band_hz, order))
    except DatasetError:
        raise
    except ValueError as err:  # filter design (band above Nyquist)
        raise DatasetError(f"dataset spec {str(spec.path)!r}: key 'mi.bandpass_hz' {list(band_hz)}: {err}") from err


def crop_windows(X: np.ndarray, n_window: int, step: int) -> np.ndarray:
    """All windows of ``n_window`` samples every ``step`` samples inside each epoch, the first at the epoch start.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_samples, n_channels)
    n_window, step : int
        Window length and step in samples (``1 <= n_window <= n_samples``, ``step >= 1``).

    Returns
    -------
    ndarray, shape (n_trials, n_crops, n_window, n_channels)
        A copy; crop 0 of each trial is ``X[:, :n_window]``.
    """
    if not 1 <= n_window <= X.shape[1] or step < 1:
        raise ValueError(f"need 1 <= n_window <= {X.shape[1]} and step >= 1 samples, got {n_window} and {step}.")
    starts = range(0, X.shape[1] - n_window + 1, step)
    return np.stack([X[:, s : s + n_window] for s in starts], axis=1)


def window_samples(ep: Epochs, spec: DatasetSpec, opts: MiOptions) -> int:
    """The model window in samples: ``mi.window_s`` (default the epoch); DatasetError if longer than the epoch."""
    n_epoch = ep.X.shape[1]
    if opts.window_s is None:
        return n_epoch
    n = round(opts.window_s * ep.sfreq)
    if not 1 <= n <= n_epoch:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: key 'mi.window_s' ({opts.window_s:g} s = {n} samples) must fit in the "
            f"epochs ([epochs] tmax - tmin = {n_epoch / ep.sfreq:g} s)."
        )
    return n


def group_folds(y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds (train indices, test indices).

    With two or more recording groups, folds never split a group (``GroupKFold`` with
    ``min(n_folds, n_groups)`` splits, i.e. leave-one-group-out when there are few groups); with
    one group, stratified k-fold shuffled with ``seed`` (``k = min(n_folds, smallest class)``).
    """
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    idx = np.arange(len(y))
    n_groups = len(np.unique(groups))
    if n_groups >= 2:
        return [(tr, te) for tr, te in GroupKFold(n_splits=min(n_folds, n_groups)).split(idx, y, groups)]
    k = int(min(n_folds, np.bincount(y).min()))
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 trials per class, the smallest class has {k}.")
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(idx, y)]


def make_card(
    epochs: Epochs,
    spec: DatasetSpec,
    method: str,
    opts: MiOptions,
    parameters: dict[str, Any],
    *,
    pretrain: DatasetSpec | None = None,
    n_window: int | None = None,
) -> ModelCard:
    """The model card of an MI model trained on ``epochs`` (window: ``n_window`` samples, default the epoch)."""
    band = opts.band(method)
    training = str(spec.path) if pretrain is None else f"{spec.path} (fine-tuning); {pretrain.path} (global stage)"
    return ModelCard(
        paradigm="mi",
        srate=float(epochs.sfreq),
        channel_labels=tuple(epochs.ch_names),
        window_s=(n_window or epochs.X.shape[1]) / float(epochs.sfreq),
        hop_s=opts.hop_s,
        output="discrete",
        classes=tuple(epochs.classes),
        preprocessing={
            "bandpass_hz": [band[0], band[1]],
            "filter_order": opts.filter_order,
            "notch_hz": None,
            "units": "microvolts",
            "reference": "none",
        },
        provenance={
            "created_by": "closedloop",
            "created_at": now_iso(),
            "method": method,
            "training_data": training,
            "n_trials": int(epochs.n_trials),
            "epochs_tmin_s": float(spec.tmin),
            "code_version": code_version(),
            "parameters": parameters,
        },
    )
