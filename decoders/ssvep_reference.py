"""Training-free SSVEP decoder built as a pure ONNX graph (reference-signal projection).

For each target frequency ``f_k`` the model holds sine and cosine references at ``f_k * h``
(``h = 1..n_harmonics``) over the window, orthonormalised per target (QR) into
``Q_k`` (n_samples x 2H). For a window ``x`` (n_samples x n_channels) with each channel's
mean removed and channel weights ``w_c`` applied, the score of target ``k`` is the fraction of
window energy that lies in the target's reference subspace::

    r_k = sum_c w_c ||Q_k^T x_c||^2 / (sum_c w_c ||x_c||^2 + eps)        in [0, 1]

and the output is ``softmax(temperature * r)``. With white noise alone ``r_k`` is about
``2H / n_samples``; the default temperature ``n_samples / (2H)`` makes one logit unit equal
that chance level, so probabilities stay graded for real EEG instead of saturating.

Command line (writes the demo model)::

    python -m decoders.ssvep_reference --out models/ssvep_reference.onnx --frequencies 8 10 12 15 \
        --srate 250 --window 1.0 --channels PO7 PO3 POz PO4 PO8 O1 Oz O2
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from acquisition.validation import check_int, check_positive, check_type
from decoders.card import ModelCard, embed_card

__all__ = [
    "EPSILON",
    "METHOD",
    "OPSET",
    "build_ssvep_reference_model",
    "main",
    "reference_basis",
    "save_model",
]

OPSET = 17
#: IR version 8 (ONNX 1.12, first with opset 17) keeps the file loadable by older onnxruntime.
IR_VERSION = 8
METHOD = "ssvep-reference-projection"
#: Added to the window energy (in squared card units) so an all-zero window gives uniform output.
EPSILON = 1e-12


def _code_version() -> str:
    try:
        return metadata.version("closedloop")
    except metadata.PackageNotFoundError:
        return "unknown"


def reference_basis(frequencies: Sequence[float], srate: float, n_samples: int, n_harmonics: int) -> np.ndarray:
    """Orthonormal sine/cosine reference blocks, one per target frequency.

    Parameters
    ----------
    frequencies : sequence of float
        Target frequencies in Hz, K of them.
    srate : float
        Sampling rate in Hz.
    n_samples : int
        Window length in samples.
    n_harmonics : int
        Harmonics per target, H (``f * 1 .. f * H``).

    Returns
    -------
    ndarray, shape (K, n_samples, 2 * H), dtype float64
        ``Q[k]`` has orthonormal columns spanning sin/cos at ``f_k * h`` for ``t = arange(n_samples) / srate``.
    """
    t = np.arange(n_samples) / srate
    blocks = []
    for f in frequencies:
        cols = []
        for h in range(1, n_harmonics + 1):
            cols.append(np.sin(2 * np.pi * f * h * t))
            cols.append(np.cos(2 * np.pi * f * h * t))
        q, r = np.linalg.qr(np.stack(cols, axis=1))
        if np.min(np.abs(np.diag(r))) < 1e-8 * np.max(np.abs(np.diag(r))):
            raise ValueError(
                f"the references of {f!r} Hz are linearly dependent over {n_samples} samples at {srate!r} Hz "
                "(a harmonic falls on 0 Hz or Nyquist). Fix: change the frequency, the window or n_harmonics."
            )
        blocks.append(q)
    return np.stack(blocks)


def _check_inputs(
    frequencies: Sequence[float],
    srate: float,
    window_s: float,
    channel_labels: Sequence[str],
    n_harmonics: int,
    bandpass_hz: tuple[float, float],
) -> tuple[list[float], float, float, int]:
    srate = check_positive(srate, "srate")
    window_s = check_positive(window_s, "window_s")
    n_harmonics = check_int(n_harmonics, "n_harmonics", minimum=1)
    if isinstance(frequencies, str) or not isinstance(frequencies, Sequence) or len(frequencies) < 2:
        raise ValueError(f"frequencies must be a sequence of at least 2 target frequencies in Hz, got {frequencies!r}.")
    freqs = [check_positive(f, f"frequencies[{i}]") for i, f in enumerate(frequencies)]
    if len(set(freqs)) != len(freqs):
        raise ValueError(f"frequencies must be unique, got {freqs!r}.")
    nyquist = srate / 2
    for f in freqs:
        if f * n_harmonics >= nyquist:
            raise ValueError(
                f"harmonic {n_harmonics} of {f!r} Hz ({f * n_harmonics:g} Hz) is at or above Nyquist ({nyquist:g} Hz "
                f"at srate {srate!r} Hz). Fix: lower n_harmonics or raise srate."
            )
    if len(bandpass_hz) != 2:
        raise ValueError(f"bandpass_hz must be a (low, high) pair in Hz, got {bandpass_hz!r}.")
    lo, hi = (float(b) for b in bandpass_hz)
    outside = [f for f in freqs if not lo < f < hi]
    if outside:
        raise ValueError(f"target frequencies {outside} Hz lie outside bandpass_hz {bandpass_hz!r}; widen the band.")
    if isinstance(channel_labels, str) or not isinstance(channel_labels, Sequence):
        raise TypeError(f"channel_labels must be a sequence of str, got {channel_labels!r}.")
    n_samples = round(window_s * srate)
    if n_samples <= 2 * n_harmonics:
        raise ValueError(
            f"window_s {window_s!r} s gives {n_samples} samples at {srate!r} Hz; need more than 2 * n_harmonics "
            f"= {2 * n_harmonics}."
        )
    return freqs, srate, window_s, n_samples


def build_ssvep_reference_model(
    frequencies: Sequence[float],
    srate: float,
    window_s: float,
    channel_labels: Sequence[str],
    *,
    n_harmonics: int = 3,
    hop_s: float = 0.04,
    temperature: float | None = None,
    bandpass_hz: tuple[float, float] = (5.0, 45.0),
    channel_weights: Sequence[float] | None = None,
    created_at: str | None = None,
) -> onnx.ModelProto:
    """Build the reference-projection SSVEP decoder as an ONNX model with an embedded card.

    Graph: ``window`` float32 [batch, n_samples, n_channels] -> subtract per-channel mean over
    time -> multiply by sqrt(channel weights) -> one MatMul with the stacked ``Q^T``
    (K*2H x n_samples) -> square -> reshape [batch, K, 2H*n_channels] -> sum -> divide by
    total window energy + eps -> multiply by ``temperature`` -> Softmax -> ``probabilities``
    float32 [batch, K]. The batch dimension is symbolic, so single windows (batch 1) and
    batches both run.

    Parameters
    ----------
    frequencies : sequence of float
        Target stimulation frequencies in Hz (K >= 2, unique, inside ``bandpass_hz``).
    srate : float
        Sampling rate in Hz.
    window_s : float
        Window length in s; the graph takes ``round(window_s * srate)`` samples.
    channel_labels : sequence of str
        Channel labels in input column order.
    n_harmonics : int
        Harmonics per target (H); ``f * H`` must stay below Nyquist.
    hop_s : float
        Recommended decision hop in s, written to the card.
    temperature : float or None
        Multiplies the energy fractions before the softmax. ``None`` means ``n_samples / (2H)``
        (one logit unit per chance-level fraction of projected energy).
    bandpass_hz : (float, float)
        Band-pass the pipeline must apply before the window reaches the model, in Hz (order 4).
    channel_weights : sequence of float or None
        Non-negative weight per channel (not all zero); ``None`` means uniform. Only ratios matter.
    created_at : str or None
        ISO 8601 timestamp for the card's provenance; ``None`` means now (UTC, whole seconds).
        Pass a fixed value for a byte-identical file.

    Returns
    -------
    onnx.ModelProto
        Checked model with the card under ``decoders.card.CARD_METADATA_KEY``.
    """
    freqs, srate, window_s, n_samples = _check_inputs(
        frequencies, srate, window_s, channel_labels, n_harmonics, bandpass_hz
    )
    labels = tuple(channel_labels)
    n_channels = len(labels)
    k = len(freqs)
    if temperature is None:
        temperature = n_samples / (2 * n_harmonics)
    temperature = check_positive(temperature, "temperature")
    if channel_weights is None:
        weights = np.ones(n_channels)
    else:
        weights = np.asarray(channel_weights, dtype=np.float64)
        if weights.shape != (n_channels,) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError(
                f"channel_weights must be {n_channels} finite non-negative numbers (one per channel {list(labels)}), "
                f"got {channel_weights!r}."
            )
        if not np.any(weights > 0):
            raise ValueError(f"channel_weights must not all be zero, got {channel_weights!r}.")
    if created_at is None:
        created_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    check_type(created_at, str, "created_at")

    classes = tuple(f"{f!r}Hz" for f in freqs)
    card = ModelCard(
        paradigm="ssvep",
        srate=srate,
        channel_labels=labels,
        window_s=window_s,
        hop_s=hop_s,
        output="discrete",
        classes=classes,
        preprocessing={
            "bandpass_hz": [float(bandpass_hz[0]), float(bandpass_hz[1])],
            "filter_order": 4,
            "notch_hz": None,
            "units": "microvolts",
            "reference": "none",
        },
        provenance={
            "created_by": "closedloop",
            "created_at": created_at,
            "method": METHOD,
            "training_data": "none (training-free: sine/cosine reference signals)",
            "code_version": _code_version(),
            "parameters": {
                "frequencies_hz": freqs,
                "n_harmonics": n_harmonics,
                "temperature": temperature,
                "channel_weights": [float(w) for w in weights],
                "epsilon": EPSILON,
                "opset": OPSET,
                "score": "energy fraction in per-target orthonormal sin/cos subspace, softmax(temperature * r)",
            },
        },
    )

    basis = reference_basis(freqs, srate, n_samples, n_harmonics)  # (K, N, 2H)
    qt = np.ascontiguousarray(basis.transpose(0, 2, 1).reshape(k * 2 * n_harmonics, n_samples), dtype=np.float32)
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "time_channel_axes"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.sqrt(weights).astype(np.float32), "channel_weight_sqrt"),
        numpy_helper.from_array(qt, "reference_basis_t"),
        numpy_helper.from_array(np.array([0, k, -1], dtype=np.int64), "per_target_shape"),
        numpy_helper.from_array(np.array(EPSILON, dtype=np.float32), "epsilon"),
        numpy_helper.from_array(np.array(temperature, dtype=np.float32), "temperature"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["window"], ["channel_mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["window", "channel_mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "channel_weight_sqrt"], ["weighted"]),
        helper.make_node("MatMul", ["reference_basis_t", "weighted"], ["projections"]),  # [B, K*2H, C]
        helper.make_node("Mul", ["projections", "projections"], ["projections_sq"]),
        helper.make_node("Reshape", ["projections_sq", "per_target_shape"], ["per_target_sq"]),  # [B, K, 2H*C]
        helper.make_node("ReduceSum", ["per_target_sq", "last_axis"], ["target_energy"], keepdims=0),  # [B, K]
        helper.make_node("Mul", ["weighted", "weighted"], ["weighted_sq"]),
        helper.make_node("ReduceSum", ["weighted_sq", "time_channel_axes"], ["window_energy"], keepdims=0),
        helper.make_node("Add", ["window_energy", "epsilon"], ["window_energy_eps"]),
        helper.make_node("Unsqueeze", ["window_energy_eps", "axis_1"], ["window_energy_col"]),  # [B, 1]
        helper.make_node("Div", ["target_energy", "window_energy_col"], ["energy_fraction"]),
        helper.make_node("Mul", ["energy_fraction", "temperature"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "ssvep_reference_projection",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", n_samples, n_channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", k])],
        initializer=inits,
        doc_string=__doc__.split("\n\n")[0] if __doc__ else "",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="closedloop",
        producer_version=_code_version(),
        doc_string=f"SSVEP reference-projection decoder for {list(classes)}.",
    )
    model.ir_version = IR_VERSION
    embed_card(model, card)
    onnx.checker.check_model(model, full_check=True)
    return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Check ``model`` with ``onnx.checker`` (full check) and write it atomically to ``path``.

    Parent folders are created. The file appears complete or not at all (written to a
    temporary file in the same folder, then renamed).

    Returns
    -------
    Path
        The written file.
    """
    check_type(model, onnx.ModelProto, "model")
    onnx.checker.check_model(model, full_check=True)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: build the model and write it. Returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m decoders.ssvep_reference",
        description="Write a training-free SSVEP reference-projection decoder (ONNX with model card).",
    )
    parser.add_argument("--out", required=True, help="output .onnx path")
    parser.add_argument("--frequencies", type=float, nargs="+", required=True, help="target frequencies in Hz")
    parser.add_argument("--srate", type=float, required=True, help="sampling rate in Hz")
    parser.add_argument("--window", type=float, required=True, help="window length in s")
    parser.add_argument("--channels", nargs="+", required=True, help="channel labels in input column order")
    parser.add_argument("--harmonics", type=int, default=3, help="harmonics per target (default 3)")
    parser.add_argument("--hop", type=float, default=0.04, help="recommended decision hop in s (default 0.04)")
    parser.add_argument("--temperature", type=float, default=None, help="softmax temperature (default n_samples/2H)")
    parser.add_argument("--bandpass", type=float, nargs=2, default=(5.0, 45.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--created-at", default=None, help="ISO 8601 timestamp for provenance (default: now, UTC)")
    args = parser.parse_args(argv)
    try:
        model = build_ssvep_reference_model(
            args.frequencies,
            args.srate,
            args.window,
            args.channels,
            n_harmonics=args.harmonics,
            hop_s=args.hop,
            temperature=args.temperature,
            bandpass_hz=tuple(args.bandpass),
            created_at=args.created_at,
        )
        out = save_model(model, args.out)
    except (TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
