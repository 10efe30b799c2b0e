"""The SSVEP DNN of Guney, Oblokulov and Ozkan (2022, IEEE TNSRE 30:1-10, doi:10.1109/TNSRE.2021.3132162), in torch.

Input: the filter-bank tensor (batch, n_subbands = 3, n_samples, n_channels), normalised per
window by its RMS inside the network. Layers: conv over sub-bands (1 × 1, 3 -> 1) -> conv over
channels (120 filters spanning all channels) -> dropout -> conv k = 2, stride 2 over time (120)
-> dropout -> ReLU -> conv k = 10 over time (120, same padding) -> dropout -> dense -> log-softmax.

Two-stage training: a global model on every training subject's trials, then per-subject
fine-tuning of all weights on the target subject's calibration trials. Export to ONNX
(:func:`export_onnx`). torch is imported only here, i.e. only for training.

Deployment graph: in eval mode (dropout = identity) the network is affine up to the ReLU and
affine after it, so :func:`export_onnx` folds the layers into two (an exact re-parameterisation,
like folding batch norm into a convolution; the products are formed in float64):

- conv over channels (1 × C) then conv k = 2 s = 2 -> one conv (2 × C, stride 2, 120 filters);
- conv k = 10 (same padding) then dense -> one dense layer on the ReLU output.

The conv k = 10 over 120 × 120 channels is ~90 % of the layer-by-layer cost (74 M multiply-adds
at a 4 s window at 256 Hz); the folded graph needs ~1.3 M. ``export_onnx(..., fused=False)``
exports the layers as trained (torch.onnx), for reference.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

__all__ = ["DnnSettings", "GuneyNet", "export_onnx", "folded_weights", "torch_log_probs", "train_dnn"]

OPSET = 17
IR_VERSION = 8
#: Samples of zero padding before / after the window of the k = 10 time convolution ("same" output length).
TIME_PAD = (4, 5)


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
        self.pad = nn.ZeroPad2d((0, 0, *TIME_PAD))  # "same" padding of the k = 10 time conv
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


def folded_weights(net: GuneyNet) -> dict[str, np.ndarray]:
    """The eval-mode network folded into its deployment layers (float64).

    Returns
    -------
    dict
        ``subbands`` (n_subbands,): sub-band weights; ``conv`` (120, 1, 2, C) and ``conv_bias`` (120,):
        the conv over channels composed with the k = 2, s = 2 conv; ``dense`` (K, 120 * n_samples // 2)
        and ``dense_bias`` (K,): the k = 10 conv (zero padding ``TIME_PAD``) composed with the dense
        layer, over the ReLU output flattened filter-major as torch flattens it.
    """

    def arr(t: torch.Tensor | None) -> np.ndarray:
        if t is None:
            raise ValueError("GuneyNet layer without bias; cannot fold it for export.")
        return t.detach().cpu().numpy().astype(np.float64)

    wc, bc = arr(net.channels.weight)[:, 0, 0, :], arr(net.channels.bias)  # (P, C), (P,)
    wd, bd = arr(net.down.weight)[:, :, :, 0], arr(net.down.bias)  # (O, P, 2), (O,)
    conv = np.einsum("opj,pc->ojc", wd, wc)[:, None]  # (O, 1, 2, C)
    conv_bias = bd + np.einsum("opj,p->o", wd, bc)
    w3, b3 = arr(net.time.weight)[:, :, :, 0], arr(net.time.bias)  # (O, I, k), (O,)
    dense, dense_b = arr(net.dense.weight), arr(net.dense.bias)  # (K, O * T), (K,)
    n_out, n_filters = dense.shape[0], w3.shape[0]
    n_t = dense.shape[1] // n_filters
    d = dense.reshape(n_out, n_filters, n_t)
    folded = np.zeros((n_out, w3.shape[1], n_t))
    for j in range(w3.shape[2]):  # output t reads input s = t + j - pad_before
        shift = TIME_PAD[0] - j
        s0, s1 = max(0, -shift), min(n_t, n_t - shift)
        if s1 > s0:
            folded[:, :, s0:s1] += np.einsum("kot,oi->kit", d[:, :, s0 + shift : s1 + shift], w3[:, :, j])
    return {
        "subbands": arr(net.subbands.weight).reshape(-1),
        "conv": conv,
        "conv_bias": conv_bias,
        "dense": folded.reshape(n_out, -1),
        "dense_bias": dense_b + np.einsum("kot,o->k", d, b3),
    }


def _folded_onnx(net: GuneyNet, n_subbands: int, n_samples: int, n_channels: int, input_name: str) -> onnx.ModelProto:
    f = folded_weights(net)
    n_out = f["dense"].shape[0]

    def init(name: str, a: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.ascontiguousarray(a, dtype=np.float32), name)

    inits = [
        init("eps", np.array(1e-6)),
        init("subbands", f["subbands"].reshape(1, n_subbands, 1, 1)),
        init("conv", f["conv"]),
        init("conv_bias", f["conv_bias"]),
        init("dense", f["dense"]),
        init("dense_bias", f["dense_bias"]),
    ]
    nodes = [
        # per-window RMS normalisation over (sub-bands, samples, channels), as GuneyNet.forward
        helper.make_node("Mul", [input_name, input_name], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
        helper.make_node("Div", [input_name, "rms"], ["xn"]),
        helper.make_node("Conv", ["xn", "subbands"], ["u"], kernel_shape=[1, 1]),  # (b, 1, n, C)
        helper.make_node("Conv", ["u", "conv", "conv_bias"], ["v"], kernel_shape=[2, n_channels], strides=[2, 1]),
        helper.make_node("Relu", ["v"], ["h"]),  # (b, 120, n // 2, 1)
        helper.make_node("Flatten", ["h"], ["hf"], axis=1),
        helper.make_node("Gemm", ["hf", "dense", "dense_bias"], ["logits"], transB=1),
        helper.make_node("LogSoftmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "guney_dnn_folded",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_subbands, n_samples, n_channels])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_out])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="closedloop")
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m)
    return m


def export_onnx(
    net: GuneyNet, n_subbands: int, n_samples: int, n_channels: int, input_name: str = "bands", *, fused: bool = True
) -> onnx.ModelProto:
    """Export ``net`` (eval mode) to ONNX: input (batch, n_subbands, n_samples, n_channels) -> log-probabilities.

    ``fused`` (default): the folded deployment graph of :func:`folded_weights`; else the layers as trained.
    """
    net.eval()
    if fused:
        return _folded_onnx(net, n_subbands, n_samples, n_channels, input_name)
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
