"""The SSVEP DNN of Guney, Oblokulov and Ozkan (2022, IEEE TNSRE 30:1-10, doi:10.1109/TNSRE.2021.3132162), in torch.

Input: the filter-bank tensor (batch, n_subbands = 3, n_samples, n_channels), normalised per
window by its RMS inside the network. Layers: conv over sub-bands (1 × 1, 3 -> 1) -> conv over
channels (120 filters spanning all channels) -> dropout -> conv k = 2, stride 2 over time (120)
-> dropout -> ReLU -> conv k = 10 over time (120, same padding) -> dropout -> dense -> log-softmax.

Two-stage training: a global model on every training subject's trials, then per-subject
fine-tuning of all weights on the target subject's calibration trials. Export to ONNX
(:func:`export_onnx`). torch is imported only here, i.e. only for training.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

__all__ = ["DnnSettings", "GuneyNet", "export_onnx", "torch_log_probs", "train_dnn"]


@dataclass(frozen=True)
class DnnSettings:
    """Training settings: epochs of the global and fine-tuning stages, Adam learning rate, batch size, dropouts."""

    epochs_global: int = 40
    epochs_finetune: int = 40
    lr: float = 1e-3
    lr_finetune: float = 5e-4
    batch_size: int = 32
    weight_decay: float = 1e-3
    dropout_1: float = 0.1
    dropout_2: float = 0.1
    dropout_3: float = 0.5


class GuneyNet(nn.Module):
    """The network; ``forward(bands) -> log-probabilities (batch, n_classes)``."""

    def __init__(
        self, n_subbands: int, n_samples: int, n_channels: int, n_classes: int, settings: DnnSettings | None = None
    ) -> None:
        super().__init__()
        s = settings or DnnSettings()
        self.subbands = nn.Conv2d(n_subbands, 1, kernel_size=1, bias=False)
        self.channels = nn.Conv2d(1, 120, kernel_size=(1, n_channels))
        self.drop1 = nn.Dropout(s.dropout_1)
        self.down = nn.Conv2d(120, 120, kernel_size=(2, 1), stride=(2, 1))
        self.drop2 = nn.Dropout(s.dropout_2)
        self.pad = nn.ZeroPad2d((0, 0, 4, 5))  # "same" padding of the k = 10 time conv
        self.time = nn.Conv2d(120, 120, kernel_size=(10, 1))
        self.drop3 = nn.Dropout(s.dropout_3)
        self.dense = nn.Linear(120 * (n_samples // 2), n_classes)
        with torch.no_grad():
            self.subbands.weight.fill_(1.0)

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        x = bands / torch.sqrt(torch.mean(bands * bands, dim=(1, 2, 3), keepdim=True) + 1e-6)
        x = self.subbands(x)
        x = self.drop1(self.channels(x))
        x = torch.relu(self.drop2(self.down(x)))
        x = self.drop3(self.time(self.pad(x)))
        return torch.log_softmax(self.dense(torch.flatten(x, 1)), dim=1)


def _fit(
    net: GuneyNet, bands: np.ndarray, y: np.ndarray, epochs: int, lr: float, s: DnnSettings, gen: torch.Generator
) -> None:
    x = torch.from_numpy(np.ascontiguousarray(bands, dtype=np.float32))
    t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=s.weight_decay)
    loss_fn = nn.NLLLoss()
    net.train()
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, s.batch_size):
            idx = order[i : i + s.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(x[idx]), t[idx])
            loss.backward()
            opt.step()
    net.eval()


def train_dnn(
    bands: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    pretrain: tuple[np.ndarray, np.ndarray] | None = None,
    global_net: GuneyNet | None = None,
    settings: DnnSettings | None = None,
    seed: int = 0,
) -> tuple[GuneyNet, GuneyNet | None]:
    """Train the DNN: global stage on ``pretrain`` (if given and no ``global_net``), then fine-tune on ``bands``/``y``.

    Parameters
    ----------
    bands : ndarray, shape (n_trials, n_subbands, n_samples, n_channels)
        The target subject's calibration trials (targets only).
    y : ndarray, shape (n_trials,)
    n_classes : int
    pretrain : (bands, y), optional
        Other subjects' trials for the global stage.
    global_net : GuneyNet, optional
        An already trained global model (reused across folds); copied, not modified.
    settings : DnnSettings
    seed : int

    Returns
    -------
    (fine-tuned net, global net or None)
    """
    import copy

    s = settings or DnnSettings()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    _, n_sub, n_samp, n_ch = bands.shape
    if global_net is None and pretrain is not None:
        global_net = GuneyNet(n_sub, n_samp, n_ch, n_classes, s)
        _fit(global_net, pretrain[0], pretrain[1], s.epochs_global, s.lr, s, gen)
    if global_net is not None:
        net = copy.deepcopy(global_net)
        _fit(net, bands, y, s.epochs_finetune, s.lr_finetune, s, gen)
    else:
        net = GuneyNet(n_sub, n_samp, n_ch, n_classes, s)
        _fit(net, bands, y, s.epochs_global, s.lr, s, gen)
    return net, global_net


def torch_log_probs(net: GuneyNet, bands: np.ndarray) -> np.ndarray:
    """Log-probabilities (n, K) from torch in eval mode (the reference for ONNX parity)."""
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(bands, dtype=np.float32))).numpy().astype(np.float64)


def export_onnx(
    net: GuneyNet, n_subbands: int, n_samples: int, n_channels: int, input_name: str = "bands"
) -> onnx.ModelProto:
    """Export ``net`` (eval mode) to ONNX: input (batch, n_subbands, n_samples, n_channels) -> log-probabilities."""
    net.eval()
    example = torch.zeros(1, n_subbands, n_samples, n_channels)
    buf: Any = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            net,
            (example,),
            buf,
            dynamo=False,
            input_names=[input_name],
            output_names=["scores"],
            dynamic_axes={input_name: {0: "batch"}, "scores": {0: "batch"}},
            opset_version=17,
        )
    return onnx.load_from_string(buf.getvalue())
