"""Registry of training methods and evaluators per paradigm, and the context a method trains in.

Each paradigm package has a module ``decoders/<paradigm>/methods.py`` which, when imported,
calls :func:`register_method` for each of its methods and :func:`register_evaluator` once.
``closedloop train`` / ``closedloop evaluate`` import it lazily through :data:`PARADIGM_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from decoders.card import ModelCard
from decoders.dataset import DatasetSpec

__all__ = [
    "PARADIGM_MODULES",
    "Evaluator",
    "TrainContext",
    "TrainMethod",
    "code_version",
    "evaluator_for",
    "method_for",
    "methods_of",
    "now_iso",
    "register_evaluator",
    "register_method",
]

#: Paradigm -> module that registers its methods and evaluator when imported.
PARADIGM_MODULES: dict[str, str] = {
    "ssvep": "decoders.ssvep.methods",
    "mi": "decoders.mi.methods",
    "emg": "decoders.emg.methods",
    "continuous": "decoders.continuous.methods",
    "spindle": "decoders.spindle.methods",
}


def _no_progress(fraction: float, message: str) -> None:
    """Default progress sink: discard."""


@dataclass
class TrainContext:
    """Everything a training method gets.

    Attributes
    ----------
    paradigm, method : str
    spec : DatasetSpec
        The training data (for deep methods with ``pretrain``: the target subject's calibration data).
    out : Path
        Where to write the model file (ONNX with an embedded card).
    report_dir : Path or None
        Folder for report files (created by the CLI); None: write no report.
    pretrain : DatasetSpec or None
        Other subjects' data for a global training stage.
    seed : int
    progress : callable
        ``progress(fraction 0-1, message)``; the CLI prints it on stderr.
    options : dict
        Extra method options (from the spec's ``[<paradigm>]`` table or the caller).
    """

    paradigm: str
    method: str
    spec: DatasetSpec
    out: Path
    report_dir: Path | None = None
    pretrain: DatasetSpec | None = None
    seed: int = 0
    progress: Callable[[float, str], None] = _no_progress
    options: dict[str, Any] = field(default_factory=dict)


TrainMethod = Callable[[TrainContext], dict[str, Any]]
Evaluator = Callable[[Path, ModelCard, DatasetSpec], dict[str, Any]]

_METHODS: dict[str, dict[str, TrainMethod]] = {}
_EVALUATORS: dict[str, Evaluator] = {}


def register_method(paradigm: str, method: str, fn: TrainMethod) -> None:
    """Register ``fn(ctx) -> summary dict`` as ``closedloop train PARADIGM --method METHOD``.

    ``fn`` writes the model at ``ctx.out``, its report files into ``ctx.report_dir`` when given,
    and returns a JSON-able summary that the CLI prints.
    """
    _METHODS.setdefault(paradigm, {})[method] = fn


def register_evaluator(paradigm: str, fn: Evaluator) -> None:
    """Register ``fn(model_path, card, spec) -> dict`` for ``closedloop evaluate`` on models of ``paradigm``."""
    _EVALUATORS[paradigm] = fn


def _import_paradigm(paradigm: str) -> None:
    module = PARADIGM_MODULES.get(paradigm)
    if module is None:
        raise ValueError(f"unknown paradigm {paradigm!r}; known: {sorted(PARADIGM_MODULES)}.")
    if paradigm in _METHODS or paradigm in _EVALUATORS:
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and module.startswith(err.name):
            raise ValueError(
                f"paradigm {paradigm!r} has no training code installed (module {module} missing)."
            ) from err
        raise


def methods_of(paradigm: str) -> list[str]:
    """Method names registered for ``paradigm`` (imports its module)."""
    _import_paradigm(paradigm)
    return sorted(_METHODS.get(paradigm, {}))


def method_for(paradigm: str, method: str) -> TrainMethod:
    """The training function of ``paradigm``/``method``; ValueError listing the known ones."""
    _import_paradigm(paradigm)
    fn = _METHODS.get(paradigm, {}).get(method)
    if fn is None:
        known = sorted(_METHODS.get(paradigm, {}))
        raise ValueError(f"unknown method {method!r} for paradigm {paradigm!r}; known methods: {known}.")
    return fn


def evaluator_for(paradigm: str) -> Evaluator:
    """The evaluator of ``paradigm``; ValueError when it has none."""
    _import_paradigm(paradigm)
    fn = _EVALUATORS.get(paradigm)
    if fn is None:
        raise ValueError(f"paradigm {paradigm!r} has no evaluator registered.")
    return fn


def now_iso() -> str:
    """The current UTC time as ISO 8601 (for card provenance)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def code_version() -> str:
    """closedloop's installed version, or ``"unknown"``."""
    try:
        return metadata.version("closedloop")
    except metadata.PackageNotFoundError:
        return "unknown"
