"""Training of the Portiloop spindle detector (torch, CPU) and export to a ``spindle-gru`` model file.

Data: every recording goes through the causal :class:`~decoders.spindle.preprocessing.SpindleFrontEnd`
(the very code the runtime uses). A training example is a sequence of ``seq_len`` windows of 54
samples whose ends lie 42 samples apart (one network copy's view); each step's label is whether
its window's last sample lies inside a reference spindle. Loss: binary cross-entropy on every
step (positives weighted ×2), Adam, gradient clipping. Then the detection threshold is the one
that maximises the event-level F1 (IoU >= 0.2, the evaluation's own rule) on the training
recordings among the thresholds whose median detection delay there is at most ``max_delay_s``
(0.45 s), unless the spec fixes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from decoders.card import ModelCard, embed_card
from decoders.dataset import DatasetSpec
from decoders.spindle.data import SpindleOptions, SpindleRecording, load_spindle_recordings
from decoders.spindle.detector import DetectorSettings, EventTracker
from decoders.spindle.events import EventScore, labels_mask
from decoders.spindle.network import PortiloopNet, export_step, sequence_probabilities
from decoders.spindle.preprocessing import MODEL_SRATE, FrontEndSettings, SpindleFrontEnd
from decoders.training import TrainContext, code_version, now_iso

__all__ = [
    "RUNTIME_NAME",
    "build_card",
    "events_from_probabilities",
    "fit_portiloop",
    "train_network",
    "train_portiloop",
    "tune_threshold",
    "write_model",
]

RUNTIME_NAME = "spindle-gru"
#: Card window (s) and hop (s) for the session pipeline: 240 and 6 samples at 250 Hz.
CARD_WINDOW_S = 0.96
CARD_HOP_S = 0.024
THRESHOLDS = np.round(np.arange(0.1, 0.951, 0.05), 2)


def _prepared(recs: list[SpindleRecording], front: FrontEndSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """(standardised 250 Hz signal float32, label mask) per recording."""
    out = []
    for r in recs:
        z = SpindleFrontEnd(r.sfreq, front)(r.signal).astype(np.float32)
        out.append((z, labels_mask(r.reference, z.size, MODEL_SRATE)))
    return out


def train_network(
    data: list[tuple[np.ndarray, np.ndarray]],
    *,
    iterations: int,
    batch: int,
    seq_len: int,
    seed: int,
    settings: DetectorSettings,
    progress: Any = None,
) -> PortiloopNet:
    """Train a :class:`PortiloopNet` on (standardised signal, label mask) pairs; single-threaded torch."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = PortiloopNet(window=settings.window)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=2e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0))
    w, stride = settings.window, settings.stride
    span = w - 1 + stride * (seq_len - 1)  # samples before the last window's end
    usable = [i for i, (z, _) in enumerate(data) if z.size > span + 1]
    if not usable:
        raise ValueError(
            f"recordings are too short to train on: a sequence spans {span + 1} samples at 250 Hz "
            f"({(span + 1) / MODEL_SRATE:.1f} s); lower [spindle] seq_len."
        )
    weights = np.array([data[i][0].size - span for i in usable], dtype=np.float64)
    weights /= weights.sum()
    offsets = np.arange(w - 1, -1, -1)
    steps_back = stride * np.arange(seq_len - 1, -1, -1)
    net.train()
    t0 = time.monotonic()
    for it in range(iterations):
        which = rng.choice(len(usable), size=batch, p=weights)
        xb = np.empty((batch, seq_len, w), dtype=np.float32)
        yb = np.empty((batch, seq_len), dtype=np.float32)
        for b, k in enumerate(which):
            z, y = data[usable[k]]
            end = int(rng.integers(span, z.size))
            ends = end - steps_back
            xb[b] = z[ends[:, None] - offsets[None, :]]
            yb[b] = y[ends]
        logits, _ = net(torch.from_numpy(xb))
        loss = loss_fn(logits, torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress is not None and (it % 50 == 0 or it == iterations - 1):
            progress(0.1 + 0.7 * (it + 1) / iterations, f"step {it + 1}/{iterations} loss {loss.item():.3f}")
    net.eval()
    net.train_seconds = time.monotonic() - t0  # type: ignore[assignment]
    return net


def events_from_probabilities(prob: np.ndarray, settings: DetectorSettings, n_samples: int) -> list[list[float]]:
    """Detected events ``[start_s, end_s]`` for decision probabilities of one recording (as the detector does)."""
    w, hop = settings.window, settings.hop
    first = w - 1 + (-w) % hop
    tracker = EventTracker(settings)
    for k, p in enumerate(prob):
        tracker.step(first + k * hop, float(p))
    return [[a / MODEL_SRATE, b / MODEL_SRATE] for a, b in tracker.finish(n_samples - 1)]


def tune_threshold(
    net: PortiloopNet,
    data: list[tuple[np.ndarray, np.ndarray]],
    recs: list[SpindleRecording],
    settings: DetectorSettings,
    max_delay_s: float = 0.45,
) -> tuple[float, dict[str, dict[str, Any]]]:
    """Pick the detection threshold on the training recordings.

    Among thresholds 0.10-0.95 whose pooled median detection delay is at most ``max_delay_s``,
    the one with the best pooled event F1 (IoU >= 0.2); when none is fast enough, the fastest.

    Returns
    -------
    threshold : float
    table : dict
        ``{"0.50": {"f1": ..., "median_delay_s": ...}, ...}`` for the report.
    """
    probs = [sequence_probabilities(net, z, settings.hop, settings.stride) for z, _ in data]
    table: dict[str, dict[str, Any]] = {}
    for thr in THRESHOLDS:
        s = replace(settings, threshold=float(thr))
        score = EventScore()
        for p, (z, _), r in zip(probs, data, recs, strict=True):
            score.add(events_from_probabilities(p, s, z.size), r.reference)
        summary = score.summary()
        table[f"{thr:.2f}"] = {"f1": score.f1, "median_delay_s": summary["median_delay_s"]}
    fast = {k: v for k, v in table.items() if v["median_delay_s"] is not None and v["median_delay_s"] <= max_delay_s}
    if fast:
        best = max(fast, key=lambda k: fast[k]["f1"])
    else:
        timed = {k: v for k, v in table.items() if v["median_delay_s"] is not None}
        best = min(timed, key=lambda k: timed[k]["median_delay_s"]) if timed else "0.50"
    return float(best), table


def build_card(
    *,
    srate: float,
    channel: str,
    front: FrontEndSettings,
    settings: DetectorSettings,
    training_data: str,
    extra: dict[str, Any] | None = None,
) -> ModelCard:
    """The model card of a ``spindle-gru`` model (runtime, front end and detector settings included)."""
    return ModelCard(
        paradigm="spindle",
        srate=float(srate),
        channel_labels=(channel,),
        window_s=CARD_WINDOW_S,
        hop_s=CARD_HOP_S,
        output="event",
        classes=("spindle", "trigger", "probability", "active"),
        input_name="window",
        preprocessing=front.to_card(),
        provenance={
            "created_by": "closedloop",
            "created_at": now_iso(),
            "method": "portiloop",
            "runtime": RUNTIME_NAME,
            "training_data": training_data,
            "code_version": code_version(),
            "detector": settings.to_dict(),
            "network": {"window": settings.window, "hidden": 7, "conv_channels": 16, "kernel": 7},
            **(extra or {}),
        },
    )


def write_model(net: PortiloopNet, card: ModelCard, out: Path) -> None:
    """Export ``net``'s step graph with ``card`` embedded to ``out``."""
    model = export_step(net)
    embed_card(model, card)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))


def fit_portiloop(
    spec: DatasetSpec,
    options: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[PortiloopNet, ModelCard, dict[str, Any]]:
    """Train on every recording of ``spec`` and tune the threshold; return the net, its card and a summary."""
    report = progress or (lambda fraction, message: None)
    opts = SpindleOptions.from_spec(spec, options)
    report(0.02, f"reading {len(spec.recordings)} recording(s)")
    recs = load_spindle_recordings(spec, opts)
    front = FrontEndSettings(line_hz=opts.line_hz or None)
    settings = DetectorSettings(
        threshold=opts.threshold or 0.5,
        trigger=opts.trigger,
        trigger_delay_s=opts.trigger_delay_s,
        isolation_s=opts.isolation_s,
        train_gap_s=opts.train_gap_s,
    )
    data = _prepared(recs, front)
    net = train_network(
        data,
        iterations=opts.iterations,
        batch=opts.batch,
        seq_len=opts.seq_len,
        seed=seed,
        settings=settings,
        progress=report,
    )
    table: dict[str, dict[str, Any]] = {}
    if opts.threshold == 0.0:
        report(0.85, "tuning the threshold on the training recordings")
        thr, table = tune_threshold(net, data, recs, settings, opts.max_delay_s)
        settings = replace(settings, threshold=thr)
    card = build_card(
        srate=opts.input_srate,
        channel=opts.channel or recs[0].channel,
        front=front,
        settings=settings,
        training_data=", ".join(r.path.name for r in recs),
    )
    chosen = table.get(f"{settings.threshold:.2f}", {})
    summary: dict[str, Any] = {
        "recordings": len(recs),
        "reference_spindles": sum(len(r.reference) for r in recs),
        "threshold": settings.threshold,
        "train_f1": chosen.get("f1"),
        "train_median_delay_s": chosen.get("median_delay_s"),
        "network_seconds": round(float(getattr(net, "train_seconds", 0.0)), 1),
        "threshold_table": table,
    }
    return net, card, summary


def train_portiloop(ctx: TrainContext) -> dict[str, Any]:
    """``closedloop train spindle --method portiloop``: train on every recording of the spec, export."""
    net, card, summary = fit_portiloop(ctx.spec, ctx.options, seed=ctx.seed, progress=ctx.progress)
    write_model(net, card, ctx.out)
    table = summary.pop("threshold_table")
    if ctx.report_dir is not None:
        (ctx.report_dir / "threshold_table.json").write_text(json.dumps(table, indent=1), encoding="utf-8")
    return summary
