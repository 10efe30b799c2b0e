"""Registers the spindle paradigm's training method ``portiloop`` and its evaluator (imported lazily by the CLI)."""

from __future__ import annotations

from typing import Any

# Importing the runtime registers "spindle-gru" with decoders.loader.
from decoders.spindle import runtime as _runtime  # noqa: F401
from decoders.spindle.evaluation import evaluate_spindle
from decoders.training import TrainContext, register_evaluator, register_method


def _train_portiloop(ctx: TrainContext) -> dict[str, Any]:
    from decoders.spindle.training import train_portiloop  # torch only when training

    return train_portiloop(ctx)


register_method("spindle", "portiloop", _train_portiloop)
register_evaluator("spindle", evaluate_spindle)
