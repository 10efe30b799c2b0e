"""EEG-SimpleConv (El Ouahidi et al. 2024, J. Neural Eng. 21:026006, doi:10.1088/1741-2552/ad31ae) in torch.

The network takes the card's window (batch, n_samples, n_channels, µV, band-passed) and applies:

1. Euclidean alignment: ``x @ A`` with the target subject's ``A = R^-1/2`` (a constant buffer, so
   it travels inside the ONNX graph); during training the inputs are aligned per group beforehand
   and ``A`` is the identity.
2. Resampling to ``resample_hz``: a constant (n_samples × n_out) polyphase matrix.
3. A 1-D convolution over time with all channels as input features (``feature_maps`` filters,
   kernel ``kernel_size``), BatchNorm, ReLU.
4. ``n_blocks`` blocks of conv -> BN -> max-pool 2 -> ReLU -> conv -> BN -> ReLU; the width grows
   by a factor 1.414 from the second block on.
5. Mean over time -> linear layer -> class scores (softmax in the exported graph).

Training follows the paper: Adam, cross-entropy, mixup, learning rate divided by 10 after 4/5 of
the epochs. With other subjects' data (``--pretrain``) a global model is trained first, then all
weights are fine-tuned on the target subject. torch is imported only here, i.e. only for training.
"""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from decoders.card import ModelCard, embed_card
from decoders.mi.alignment import align_by_group, alignment_matrix, resample_matrix
from decoders.mi.options import SimpleConvSettings

__all__ = [
    "SimpleConvNet",
    "SimpleConvSettings",
    "export_simpleconv_onnx",
    "torch_probabilities",
    "train_simpleconv",
]


class SimpleConvNet(nn.Module):
    """EEG-SimpleConv with the alignment and resampling matrices as buffers; ``forward`` returns class scores.

    Parameters
    ----------
    n_channels, n_samples, n_classes : int
        Input window (n_samples at ``srate``, n_channels) and output size.
    srate : float
        Input rate in Hz.
    settings : SimpleConvSettings
    """

    alignment: torch.Tensor
    resample: torch.Tensor

    def __init__(
        self, n_channels: int, n_samples: int, n_classes: int, srate: float, settings: SimpleConvSettings
    ) -> None:
        super().__init__()
        res, self.net_rate = resample_matrix(n_samples, srate, settings.resample_hz)
        self.register_buffer("alignment", torch.eye(n_channels, dtype=torch.float32))
        self.register_buffer("resample", torch.from_numpy(res.astype(np.float32)))
        k = settings.kernel_size
        fm = settings.feature_maps
        self.conv = nn.Conv1d(n_channels, fm, kernel_size=k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm1d(fm)
        blocks = []
        old, new = fm, fm
        for i in range(settings.n_blocks):
            if i > 0:
                new = int(1.414 * new)
            blocks.append(
                nn.Sequential(
                    nn.Conv1d(old, new, kernel_size=k, padding=k // 2, bias=False),
                    nn.BatchNorm1d(new),
                    nn.MaxPool1d(2),
                    nn.ReLU(),
                    nn.Conv1d(new, new, kernel_size=k, padding=k // 2, bias=False),
                    nn.BatchNorm1d(new),
                    nn.ReLU(),
                )
            )
            old = new
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(old, n_classes)

    def set_alignment(self, matrix: np.ndarray) -> None:
        """Put the target subject's alignment matrix (n_channels × n_channels) into the network."""
        with torch.no_grad():
            self.alignment.copy_(torch.from_numpy(np.asarray(matrix, dtype=np.float32)))

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        x = torch.matmul(window, self.alignment)  # (B, N, C), aligned
        x = torch.matmul(x.transpose(1, 2), self.resample)  # (B, C, N_out)
        y = torch.relu(self.bn(self.conv(x)))
        for block in self.blocks:
            y = block(y)
        return self.fc(y.mean(dim=2))


class _WithSoftmax(nn.Module):
    def __init__(self, net: SimpleConvNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(window), dim=1)


def _fit(
    net: SimpleConvNet,
    X: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    s: SimpleConvSettings,
    gen: torch.Generator,
) -> None:
    if epochs == 0:
        return
    x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, (4 * epochs) // 5), gamma=0.1)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, s.batch_size):
            idx = order[i : i + s.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two windows
            xb, tb = x[idx], t[idx]
            opt.zero_grad()
            if s.mixup:
                lam = float(torch.rand(1, generator=gen))
                perm = torch.randperm(len(idx), generator=gen)
                out = net(lam * xb + (1 - lam) * xb[perm])
                loss = lam * loss_fn(out, tb) + (1 - lam) * loss_fn(out, tb[perm])
            else:
                loss = loss_fn(net(xb), tb)
            loss.backward()
            opt.step()
        sched.step()
    net.eval()


def train_simpleconv(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    srate: float,
    *,
    settings: SimpleConvSettings | None = None,
    pretrain: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    global_net: SimpleConvNet | None = None,
    seed: int = 0,
) -> tuple[SimpleConvNet, SimpleConvNet | None]:
    """Train EEG-SimpleConv on the target subject's trials, after a global stage on ``pretrain`` if given.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_samples, n_channels)
        Band-passed calibration trials of the target subject, µV.
    y : ndarray of int, shape (n_trials,)
    n_classes : int
    srate : float
        Rate of ``X`` in Hz.
    settings : SimpleConvSettings
    pretrain : (X, y, groups), optional
        Other subjects' trials for the global stage; each group (subject/session) is aligned
        with its own matrix.
    global_net : SimpleConvNet, optional
        An already trained global model (reused across folds); copied, not modified.
    seed : int
        Seeds weight initialisation, batch order and mixup.

    Returns
    -------
    (net, global net or None)
        ``net`` is in eval mode and holds the target's alignment matrix (from ``X``).
    """
    s = settings or SimpleConvSettings()
    torch.set_num_threads(s.threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    _, n_samp, n_ch = X.shape
    target_alignment = alignment_matrix(X)
    Xa = (np.asarray(X, dtype=np.float64) @ target_alignment).astype(np.float32)
    if global_net is None and pretrain is not None:
        px, py, pg = pretrain
        global_net = SimpleConvNet(n_ch, n_samp, n_classes, srate, s)
        _fit(global_net, align_by_group(px, pg), py, s.epochs, s.lr, s, gen)
    if global_net is not None:
        net = copy.deepcopy(global_net)
        _fit(net, Xa, y, s.epochs_finetune, s.lr_finetune, s, gen)
    else:
        net = SimpleConvNet(n_ch, n_samp, n_classes, srate, s)
        _fit(net, Xa, y, s.epochs, s.lr, s, gen)
    net.set_alignment(target_alignment)
    net.eval()
    return net, global_net


def torch_probabilities(net: SimpleConvNet, X: np.ndarray) -> np.ndarray:
    """Class probabilities (n_trials × n_classes, float64) from torch in eval mode (the ONNX parity reference)."""
    net.eval()
    with torch.no_grad():
        out = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))), dim=1)
    return out.numpy().astype(np.float64)


def export_simpleconv_onnx(net: SimpleConvNet, card: ModelCard) -> onnx.ModelProto:
    """Export ``net`` (eval mode) with a softmax head: ``window`` [batch, n_samples, n_channels] -> probabilities.

    The alignment and resampling matrices are constants of the graph; ``card`` is embedded.
    """
    net.eval()
    example = torch.zeros(1, card.n_window_samples, card.n_channels)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy (TorchScript) exporter announces its deprecation
        torch.onnx.export(
            _WithSoftmax(net),
            (example,),
            buf,  # type: ignore[arg-type]  # torch accepts a binary file object
            dynamo=False,
            input_names=[card.input_name],
            output_names=["probabilities"],
            dynamic_axes={card.input_name: {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
        )
    model = onnx.load_from_string(buf.getvalue())
    embed_card(model, card)
    onnx.checker.check_model(model, full_check=True)
    return model
