"""A small CNN over the electrode grid (torch), exported as a features + conv ONNX graph.

Input: the standardised TD feature maps of one window, ``5 × rows × cols`` (RMS, MAV, WL, ZC,
SSC at each electrode position of the grid; a 1 × n strip without a grid). Two 3 × 3
convolutions (same padding) with ReLU, dropout, then a linear layer to the class logits.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from decoders.emg.features import FEATURES
from decoders.emg.graph import build_cnn_graph

__all__ = ["GridCNN", "export_cnn", "train_cnn"]


class GridCNN(nn.Module):
    """Conv(5→h, 3×3) → ReLU → Conv(h→h, 3×3) → ReLU → Dropout → Linear(h·rows·cols → n_classes).

    The input is ``(batch, 5 * n_channels)`` standardised features (feature-major); the module
    gathers them onto the grid with the fixed ``grid_index`` (rows × cols channel indices).
    """

    def __init__(self, grid_index: np.ndarray, n_classes: int, hidden: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        gi = np.asarray(grid_index, dtype=np.int64)
        self.rows, self.cols = gi.shape
        self.grid_index: torch.Tensor
        self.register_buffer("grid_index", torch.as_tensor(gi.reshape(-1)))
        self.conv1 = nn.Conv2d(len(FEATURES), hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden * self.rows * self.cols, n_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch, n_classes), from standardised features (batch, 5, n_channels)."""
        g = z.index_select(2, self.grid_index).reshape(z.shape[0], len(FEATURES), self.rows, self.cols)
        h = torch.relu(self.conv1(g))
        h = torch.relu(self.conv2(h))
        return self.dense(self.drop(h.flatten(1)))


def train_cnn(
    z: np.ndarray,
    y: np.ndarray,
    grid_index: np.ndarray,
    n_classes: int,
    *,
    epochs: int = 30,
    lr: float = 3e-3,
    hidden: int = 16,
    seed: int = 0,
    progress: object = None,
) -> GridCNN:
    """Fit :class:`GridCNN` with Adam + cross-entropy on standardised features.

    Parameters
    ----------
    z : ndarray, shape (n_windows, 5, n_channels)
        Standardised classifier input.
    y : ndarray, shape (n_windows,)
        Class indices.
    progress : callable, optional
        ``progress(fraction, message)`` once per epoch.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = GridCNN(grid_index, n_classes, hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    zt = torch.as_tensor(np.asarray(z, np.float32))
    yt = torch.as_tensor(np.asarray(y, np.int64))
    n = len(yt)
    batch = 64
    loss_fn = nn.CrossEntropyLoss()
    for ep in range(epochs):
        model.train()
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch):
            idx = torch.as_tensor(order[i : i + batch])
            opt.zero_grad()
            loss = loss_fn(model(zt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if callable(progress):
            progress((ep + 1) / epochs, f"epoch {ep + 1}/{epochs} loss {total / n:.4f}")
    model.eval()
    return model


def predict_proba(model: GridCNN, z: np.ndarray) -> np.ndarray:
    """Class probabilities (n_windows, n_classes) of the torch model, float64."""
    with torch.no_grad():
        logits = model(torch.as_tensor(np.asarray(z, np.float32)))
        return torch.softmax(logits, dim=1).double().numpy()


def export_cnn(
    model: GridCNN,
    *,
    n_samples: int,
    n_channels: int,
    threshold_uv: float,
    common_average: bool,
    mean: np.ndarray,
    scale: np.ndarray,
) -> onnx.ModelProto:
    """The trained CNN with its feature extraction as one ONNX graph (weights copied layer by layer)."""

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    return build_cnn_graph(
        n_samples=n_samples,
        n_channels=n_channels,
        threshold_uv=threshold_uv,
        common_average=common_average,
        mean=mean,
        scale=scale,
        grid_index=np_(model.grid_index).reshape(model.rows, model.cols),
        convs=[(np_(c.weight), np_(c.bias)) for c in (model.conv1, model.conv2) if c.bias is not None],
        dense_weight=np_(model.dense.weight),
        dense_bias=np_(model.dense.bias),
    )
