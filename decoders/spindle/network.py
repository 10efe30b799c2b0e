"""The Portiloop network in torch: 1-D convolutions over a 54-sample window, a GRU (hidden 7) across windows.

Training runs the GRU over sequences of windows 42 samples apart; deployment exports one *step*
(one window and the hidden state in, the probability and the new hidden state out) to ONNX so the
runtime can carry the hidden state of each staggered copy between calls. Needs torch (``train`` extra).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

__all__ = ["PortiloopNet", "StepGraph", "export_step", "sequence_probabilities"]


class PortiloopNet(nn.Module):
    """Conv1d feature extractor per window + GRU across windows + linear read-out.

    Parameters
    ----------
    window : int
        Samples per window (54 at 250 Hz).
    channels : int
        Feature maps per convolution.
    hidden : int
        GRU hidden size (7 as in Portiloop).
    kernel : int
        Convolution kernel length (samples).
    dropout : float
        Dropout on the convolutional features during training.
    """

    def __init__(
        self, window: int = 54, channels: int = 16, hidden: int = 7, kernel: int = 7, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.window = window
        self.hidden_size = hidden
        self.conv = nn.Sequential(
            nn.Conv1d(1, channels, kernel),
            nn.BatchNorm1d(channels),
            nn.LeakyReLU(0.1),
            nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, kernel),
            nn.BatchNorm1d(channels),
            nn.LeakyReLU(0.1),
            nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, kernel),
            nn.BatchNorm1d(channels),
            nn.LeakyReLU(0.1),
            nn.AdaptiveMaxPool1d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, windows: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for a batch of window sequences.

        Parameters
        ----------
        windows : Tensor, shape (batch, steps, window)
            Standardised 250 Hz samples.
        h0 : Tensor, shape (1, batch, hidden), optional

        Returns
        -------
        logits : Tensor, shape (batch, steps)
        h : Tensor, shape (1, batch, hidden)
        """
        b, t, w = windows.shape
        feats = self.conv(windows.reshape(b * t, 1, w)).reshape(b, t, -1)
        out, h = self.gru(feats, h0)
        return self.head(out).squeeze(-1), h


class StepGraph(nn.Module):
    """One step of :class:`PortiloopNet` for export: (window, h_in) -> (prob, h_out)."""

    def __init__(self, net: PortiloopNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, window: torch.Tensor, h_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``window`` (batch, 54), ``h_in`` (batch, hidden) -> ``prob`` (batch,), ``h_out`` (batch, hidden)."""
        logits, h = self.net(window.unsqueeze(1), h_in.unsqueeze(0))
        return torch.sigmoid(logits[:, 0]), h[0]


def export_step(net: PortiloopNet) -> onnx.ModelProto:
    """Export the step graph to ONNX (opset 17, dynamic batch) and return the model proto.

    Uses torch's TorchScript-based exporter (the torch.export-based one needs ``onnxscript``);
    its deprecation notice is silenced here only.
    """
    step = StepGraph(net).eval()
    example = (torch.zeros(2, net.window), torch.zeros(2, net.hidden_size))
    with tempfile.TemporaryDirectory(prefix="spindle-export-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "step.onnx"
        torch.onnx.export(
            step,
            example,
            str(path),
            input_names=["window", "h_in"],
            output_names=["prob", "h_out"],
            dynamic_axes={"window": {0: "batch"}, "h_in": {0: "batch"}, "prob": {0: "batch"}, "h_out": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        return onnx.load(str(path))


def sequence_probabilities(net: PortiloopNet, z: np.ndarray, hop: int = 6, stride: int = 42) -> np.ndarray:
    """Probabilities at every decision of a whole standardised recording, in one batched torch pass.

    Same decisions as :class:`~decoders.spindle.detector.SpindleDetector` (indices ``i >= window - 1``
    with ``(i + 1) % hop == 0``, copy ``((i + 1) // hop) % (stride // hop)``), for threshold tuning.

    Parameters
    ----------
    z : ndarray, shape (n_samples,)
        Output of :class:`~decoders.spindle.preprocessing.SpindleFrontEnd` (250 Hz).

    Returns
    -------
    ndarray, shape (n_decisions,)
    """
    w = net.window
    n_copies = stride // hop
    first = w - 1 + (-(w)) % hop
    idx = np.arange(first, z.size, hop)
    if idx.size == 0:
        return np.zeros(0)
    copies = ((idx + 1) // hop) % n_copies
    zf = np.asarray(z, dtype=np.float32)
    prob = np.empty(idx.size)
    net.eval()
    with torch.no_grad():
        seqs = [np.flatnonzero(copies == c) for c in range(n_copies)]
        length = max(len(s) for s in seqs)
        batch = np.zeros((n_copies, length, w), dtype=np.float32)
        for c, s in enumerate(seqs):
            batch[c, : len(s)] = zf[idx[s][:, None] - np.arange(w - 1, -1, -1)[None, :]]
        logits, _ = net(torch.from_numpy(batch))
        p = torch.sigmoid(logits).numpy()
        for c, s in enumerate(seqs):
            prob[s] = p[c, : len(s)]
    return prob
