"""Turn a model file into a runnable :class:`~decoders.base.Decoder`, whatever runs it.

Most decoders are plain ONNX graphs run by :class:`~decoders.onnx_decoder.OnnxDecoder`. Some
need a small runtime around the graph: a training-free method stored as a card-only file
(e.g. FBCCA, whose canonical correlations are computed in numpy from the card's reference
frequencies), or a recurrent network whose hidden state is carried between calls (the spindle
detector). Such a model names its runtime in the card's provenance, ``provenance["runtime"]``,
and the module implementing it registers a factory here with :func:`register_runtime`.

Runtime modules are imported lazily from :data:`RUNTIME_MODULES` so that loading an ONNX model
does not import torch, scikit-learn or any paradigm code it does not need.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from decoders.base import Decoder
from decoders.card import ModelCard, read_card

__all__ = ["RUNTIME_MODULES", "load_decoder", "register_runtime", "runtime_of"]

DecoderFactory = Callable[[Path, ModelCard], Decoder]

_FACTORIES: dict[str, DecoderFactory] = {}

#: Runtime name -> module that calls :func:`register_runtime` for it when imported.
RUNTIME_MODULES: dict[str, str] = {
    "fbcca": "decoders.ssvep.runtime",
    "ssvep-onnx": "decoders.ssvep.runtime",
    "kalman": "decoders.continuous.runtime",
    "dkf": "decoders.continuous.runtime",
    "spindle-gru": "decoders.spindle.runtime",
}


def register_runtime(name: str, factory: DecoderFactory, module: str | None = None) -> None:
    """Register how to build a decoder for models whose card says ``provenance["runtime"] == name``.

    Parameters
    ----------
    name : str
        Runtime name stored in the card (e.g. ``"fbcca"``, ``"spindle-gru"``).
    factory : callable
        ``factory(path, card) -> Decoder``; raises ``ValueError`` on a model it cannot run.
    module : str, optional
        Module to import lazily next time (recorded in :data:`RUNTIME_MODULES`).
    """
    _FACTORIES[name] = factory
    if module is not None:
        RUNTIME_MODULES[name] = module


def runtime_of(card: ModelCard) -> str:
    """The runtime a card asks for (``"onnx"`` when it names none)."""
    return str(card.provenance.get("runtime", "onnx"))


def load_decoder(path: str | os.PathLike[str]) -> Decoder:
    """Load a model file (ONNX with an embedded card) as a decoder.

    Parameters
    ----------
    path : str or path-like
        The model file.

    Returns
    -------
    Decoder
        Ready to ``predict``; its ``card`` is the file's card.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file holds no valid card, or its card names a runtime closedloop does not know.
    """
    path = Path(path)
    card = read_card(path)
    runtime = runtime_of(card)
    if runtime == "onnx":
        from decoders.onnx_decoder import OnnxDecoder

        return OnnxDecoder(path)
    if runtime not in _FACTORIES and runtime in RUNTIME_MODULES:
        importlib.import_module(RUNTIME_MODULES[runtime])
    factory = _FACTORIES.get(runtime)
    if factory is None:
        known = ", ".join(sorted({"onnx", *_FACTORIES, *RUNTIME_MODULES}))
        raise ValueError(
            f"{path}: the model card asks for runtime {runtime!r}, which closedloop does not know ({known})."
        )
    return factory(path, card)
