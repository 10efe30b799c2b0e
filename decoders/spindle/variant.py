"""Change a spindle model's detector settings (threshold, trigger variant, fixed delay) without retraining.

The detector settings live in the model card (``provenance["detector"]``); this rewrites them and
saves a copy of the model::

    python -m decoders.spindle.variant spindle.onnx --out isolated.onnx --trigger isolated --isolation-s 3
    python -m decoders.spindle.variant spindle.onnx --out delayed.onnx --trigger-delay-s 0.25
    python -m decoders.spindle.variant spindle.onnx --out live200.onnx --srate 200   # card's stream rate
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import onnx

from decoders.card import ModelCard, embed_card, read_card
from decoders.spindle.detector import DetectorSettings
from decoders.spindle.preprocessing import resampling_ratio

__all__ = ["main", "with_detector_settings"]


def with_detector_settings(
    model: str | os.PathLike[str], out: str | os.PathLike[str], *, srate: float | None = None, **changes: Any
) -> ModelCard:
    """Save a copy of ``model`` at ``out`` whose card carries changed detector settings (and stream rate).

    Parameters
    ----------
    model, out : path-like
        Source and destination ONNX files.
    srate : float, optional
        New stream rate (Hz) for the card; the runtime resamples it to 250 Hz.
    **changes
        :class:`~decoders.spindle.detector.DetectorSettings` fields, e.g. ``trigger="trains"``.

    Returns
    -------
    ModelCard
        The new card. ValueError names an unknown setting or a bad value.
    """
    card = read_card(model)
    if card.provenance.get("runtime") != "spindle-gru":
        raise ValueError(
            f"model {str(model)!r} is not a spindle-gru model (runtime {card.provenance.get('runtime')!r})."
        )
    d = card.to_dict()
    settings = DetectorSettings.from_dict({**d["provenance"]["detector"], **changes}, f"model {str(model)!r}")
    d["provenance"]["detector"] = settings.to_dict()
    if srate is not None:
        resampling_ratio(srate, f"new card rate for {str(model)!r}")
        d["srate"] = float(srate)
    new = ModelCard.from_dict(d)
    proto = onnx.load(str(model))
    embed_card(proto, new)
    onnx.save(proto, str(out))
    return new


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit code 2 on bad input."""
    ap = argparse.ArgumentParser(description="Change a spindle model's detector settings without retraining.")
    ap.add_argument("model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--trigger", choices=["all", "isolated", "trains"])
    ap.add_argument("--trigger-delay-s", type=float)
    ap.add_argument("--isolation-s", type=float)
    ap.add_argument("--train-gap-s", type=float)
    ap.add_argument("--refractory-s", type=float)
    ap.add_argument("--srate", type=float, help="stream rate (Hz) the card declares")
    args = ap.parse_args(argv)
    keys = ("threshold", "trigger", "trigger_delay_s", "isolation_s", "train_gap_s", "refractory_s")
    changes = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    try:
        card = with_detector_settings(Path(args.model), Path(args.out), srate=args.srate, **changes)
    except (OSError, ValueError, TypeError) as err:
        print(f"spindle variant: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: srate {card.srate:g} Hz, detector {card.provenance['detector']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
