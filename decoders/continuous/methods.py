"""``closedloop train continuous --method kf|wiener|dkf-nn|dkf-nw`` and ``closedloop evaluate`` for them.

Every method fits on all bins of the spec's recordings (each a time-ordered sequence).
Hyper-parameters (KF observation-noise ridge, ridge penalties) are chosen on the last 20 % of
each training sequence (time-ordered), then the model is refitted on everything.

``evaluate --json`` runs the real decoder bin by bin (the runtime a session uses), restarting
the filter at each recording, and prints ``r2``, ``correlation``, ``nrmse``, ``maae`` (averaged
over output dimensions), ``n_bins``, ``per_dim`` and, for the DKF, ``n_fallbacks``.

``[continuous]`` options: ``lags`` (Wiener, bins, default 3), ``robust`` (DKF, default false),
``epochs`` / ``hidden`` (DKF-NN, defaults 200 / 64; dropout 0.3 on the input and hidden layer while
training), ``bin_s``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

import decoders.continuous.runtime  # noqa: F401  (registers the "kalman" and "dkf" runtimes)
from decoders.card import ModelCard, embed_card
from decoders.continuous.data import Sequence, load_sequences
from decoders.continuous.filters import KalmanInfoFilter
from decoders.continuous.fit import (
    Standardiser,
    fit_kalman,
    fit_state_model,
    lagged,
    nw_loo_bandwidth,
    nw_predict,
    ridge_fit,
)
from decoders.continuous.graph import affine_graph, dkf_graph
from decoders.continuous.metrics import trajectory_metrics
from decoders.dataset import DatasetError, DatasetSpec
from decoders.training import TrainContext, code_version, now_iso, register_evaluator, register_method

__all__ = ["evaluate_continuous", "train_dkf", "train_kf", "train_wiener"]

KF_RIDGES = (1e-3, 1e-2, 1e-1, 1.0)
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)
BANDWIDTHS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
VALIDATION_FRACTION = 0.2


def _split(seqs: list[Sequence]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    tr, va = [], []
    for s in seqs:
        k = round(len(s.features) * (1 - VALIDATION_FRACTION))
        tr.append((s.features[:k], s.kinematics[:k]))
        va.append((s.features[k:], s.kinematics[k:]))
    return tr, va


def _nrmse(pred: np.ndarray, true: np.ndarray) -> float:
    return trajectory_metrics(pred, true)["nrmse"]


def _card(
    ctx: TrainContext, seqs: list[Sequence], n_bins: int, method: str, runtime: str | None, extra: dict[str, Any]
) -> ModelCard:
    s0 = seqs[0]
    srate = 1.0 / s0.bin_s
    prov: dict[str, Any] = {
        "created_by": "closedloop",
        "created_at": now_iso(),
        "method": method,
        "training_data": str(ctx.spec.path),
        "code_version": code_version(),
        "seed": ctx.seed,
        "n_train_bins": int(sum(len(s.features) for s in seqs)),
    }
    if runtime is not None:
        prov["runtime"] = runtime
    prov.update(extra)
    return ModelCard(
        paradigm="continuous",
        srate=srate,
        channel_labels=tuple(s0.feature_names),
        window_s=n_bins / srate,
        hop_s=1.0 / srate,
        output="continuous",
        classes=tuple(s0.kinematics_names),
        preprocessing={"features": "binned, raw units (standardisation is inside the model)"},
        provenance=prov,
    )


def _save(model: onnx.ModelProto, card: ModelCard, out: Path) -> None:
    embed_card(model, card)
    onnx.save(model, str(out))


def _run_onnx(model: onnx.ModelProto, windows: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"window": np.ascontiguousarray(windows, dtype=np.float32)})[0], np.float64)


def _tolist(m: np.ndarray) -> list:
    return np.asarray(m, dtype=np.float64).tolist()


# ------------------------------------------------------------------------------------------------ Kalman
def _kf_predict(ss: Any, std: Standardiser, km: Any, X: np.ndarray) -> np.ndarray:
    filt = KalmanInfoFilter(ss.A, ss.gamma, km.J, ss.S)
    Y = (std(X) - km.b) @ km.C
    return np.array([filt.step(y) for y in Y]) + ss.z_mean


def train_kf(ctx: TrainContext) -> dict[str, Any]:
    """``--method kf``: Kalman filter (Wu et al. 2003) with a validated observation-noise ridge."""
    seqs = load_sequences(ctx.spec)
    tr, va = _split(seqs)
    std = Standardiser.fit(np.concatenate([x for x, _ in tr]))
    ss = fit_state_model([z for _, z in tr])
    scores = []
    for lam in KF_RIDGES:
        km = fit_kalman(np.concatenate([std(x) for x, _ in tr]), np.concatenate([z for _, z in tr]) - ss.z_mean, lam)
        scores.append(np.mean([_nrmse(_kf_predict(ss, std, km, x), z) for x, z in va]))
        ctx.progress(0.1 + 0.15 * len(scores), f"KF ridge {lam:g}: validation nRMSE {scores[-1]:.3f}")
    lam = KF_RIDGES[int(np.argmin(scores))]
    X = np.concatenate([s.features for s in seqs])
    std = Standardiser.fit(X)
    ss = fit_state_model([s.kinematics for s in seqs])
    km = fit_kalman(std(X), np.concatenate([s.kinematics for s in seqs]) - ss.z_mean, lam)
    # information vector y = C^T (x_std - b) = x (C / scale)^T ... folded into one affine map
    W = km.C / std.scale[:, None]
    c = -(std.mean / std.scale) @ km.C - km.b @ km.C
    model = affine_graph(W, c, 1, X.shape[1], "Kalman filter: information vector H^T Q^-1 (x - b)")
    ref = (std(X[:64]) - km.b) @ km.C
    diff = float(np.max(np.abs(_run_onnx(model, X[:64, None, :]) - ref)))
    state = {"A": _tolist(ss.A), "W": _tolist(ss.gamma), "J": _tolist(km.J), "S": _tolist(ss.S)}
    state["z_mean"] = _tolist(ss.z_mean)
    card = _card(ctx, seqs, 1, "kalman-filter", "kalman", {"state_space": state, "parameters": {"q_ridge": lam}})
    _save(model, card, ctx.out)
    return {"q_ridge": lam, "validation_nrmse": float(min(scores)), "onnx_max_abs_diff": diff}


# ------------------------------------------------------------------------------------------------ Wiener
def _wiener_xy(pairs: list[tuple[np.ndarray, np.ndarray]], L: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([lagged(x, L) for x, _ in pairs]),
        np.concatenate([z[L - 1 :] for _, z in pairs]),
    )


def train_wiener(ctx: TrainContext) -> dict[str, Any]:
    """``--method wiener``: ridge regression on the last ``lags`` bins (a plain ONNX graph)."""
    seqs = load_sequences(ctx.spec)
    L = int(ctx.spec.table("continuous").get("lags", 3))
    if L < 1:
        raise DatasetError(f"dataset spec {str(ctx.spec.path)!r}: [continuous] lags must be >= 1, got {L}.")
    tr, va = _split(seqs)
    std = Standardiser.fit(np.concatenate([x for x, _ in tr]))
    Xt, Zt = _wiener_xy([(std(x), z) for x, z in tr], L)
    Xv, Zv = _wiener_xy([(std(x), z) for x, z in va], L)
    scores = []
    for a in RIDGE_ALPHAS:
        W, c = ridge_fit(Xt, Zt, a)
        scores.append(_nrmse(Xv @ W + c, Zv))
    alpha = RIDGE_ALPHAS[int(np.argmin(scores))]
    X = np.concatenate([s.features for s in seqs])
    std = Standardiser.fit(X)
    Xa, Za = _wiener_xy([(std(s.features), s.kinematics) for s in seqs], L)
    W, c = ridge_fit(Xa, Za, alpha)
    scale = np.tile(std.scale, L)
    mean = np.tile(std.mean, L)
    Wf = W / scale[:, None]
    cf = c - (mean / scale) @ W
    model = affine_graph(Wf, cf, L, X.shape[1], f"Wiener filter: ridge on {L} lagged bins")
    win = np.stack([seqs[0].features[t - L + 1 : t + 1] for t in range(L - 1, min(len(seqs[0].features), 64))])
    ref = lagged(std(seqs[0].features[: min(len(seqs[0].features), 64)]), L) @ W + c
    diff = float(np.max(np.abs(_run_onnx(model, win) - ref)))
    card = _card(ctx, seqs, L, "wiener-ridge", None, {"parameters": {"lags": L, "alpha": alpha}})
    _save(model, card, ctx.out)
    return {"lags": L, "alpha": alpha, "validation_nrmse": float(min(scores)), "onnx_max_abs_diff": diff}


# ------------------------------------------------------------------------------------------------ DKF
def _nw_q_parts(f_loo: np.ndarray, Zc: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Q(x) regression pieces: scaled points, scale, LOO bandwidth, residual outer products (N × d²)."""
    q_scale = 1.0 / np.where(f_loo.std(axis=0) > 1e-9, f_loo.std(axis=0), 1.0)
    u = f_loo * q_scale
    R = Zc - f_loo
    RR = np.einsum("ni,nj->nij", R, R).reshape(len(R), -1)
    h = nw_loo_bandwidth(u, RR, BANDWIDTHS)
    return u, q_scale, h, RR


def _mlp_fit(
    Xs: np.ndarray, Zc: np.ndarray, hidden: int, epochs: int, seed: int, dropout: float = 0.3
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A tanh MLP ``x_std -> z`` (torch, AdamW); returns its layers as (W (in × out), b) in float64."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    zs = Zc.std(axis=0)
    zs = np.where(zs > 1e-9, zs, 1.0)
    net = torch.nn.Sequential(
        torch.nn.Dropout(dropout),
        torch.nn.Linear(Xs.shape[1], hidden),
        torch.nn.Tanh(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, Zc.shape[1]),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
    xt = torch.as_tensor(Xs, dtype=torch.float32)
    zt = torch.as_tensor(Zc / zs, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = ((net(xt[idx]) - zt[idx]) ** 2).mean()
            loss.backward()
            opt.step()
    net.eval()
    l1, l2 = net[1], net[4]
    assert isinstance(l1, torch.nn.Linear) and isinstance(l2, torch.nn.Linear)  # for mypy
    w1 = l1.weight.detach().double().numpy().T
    b1 = l1.bias.detach().double().numpy()
    w2 = l2.weight.detach().double().numpy().T * zs[None, :]
    b2 = l2.bias.detach().double().numpy() * zs
    return [(w1, b1), (w2, b2)]


def _mlp_apply(layers: list[tuple[np.ndarray, np.ndarray]], Xs: np.ndarray) -> np.ndarray:
    h = Xs
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.tanh(h)
    return h


def _fold_standardiser(layers: list[tuple[np.ndarray, np.ndarray]], std: Standardiser) -> list:
    (w1, b1), *rest = layers
    return [(w1 / std.scale[:, None], b1 - (std.mean / std.scale) @ w1), *rest]


def train_dkf(ctx: TrainContext, flavour: str) -> dict[str, Any]:
    """``--method dkf-nw`` / ``dkf-nn``: discriminative Kalman filter (see :mod:`decoders.continuous.filters`)."""
    seqs = load_sequences(ctx.spec)
    opts = ctx.spec.table("continuous")
    robust = bool(opts.get("robust", False))
    X = np.concatenate([s.features for s in seqs])
    std = Standardiser.fit(X)
    Xs = std(X)
    ss = fit_state_model([s.kinematics for s in seqs])
    Zc = np.concatenate([s.kinematics for s in seqs]) - ss.z_mean
    params: dict[str, Any] = {"robust": robust}
    if flavour == "nw":
        # f(x): Nadaraya-Watson on a ridge projection of the features, bandwidth by leave-one-out
        tr, va = _split(seqs)
        std_t = Standardiser.fit(np.concatenate([x for x, _ in tr]))
        xt = np.concatenate([std_t(x) for x, _ in tr])
        zt = np.concatenate([z for _, z in tr])
        scores = []
        for a in RIDGE_ALPHAS:
            W, c = ridge_fit(xt, zt, a)
            scores.append(np.mean([_nrmse(std_t(x) @ W + c, z) for x, z in va]))
        alpha = RIDGE_ALPHAS[int(np.argmin(scores))]
        ctx.progress(0.3, f"projection ridge alpha {alpha:g}")
        Wp, cp = ridge_fit(Xs, Zc, alpha)
        proj = Xs @ Wp + cp
        p_scale = 1.0 / np.where(proj.std(axis=0) > 1e-9, proj.std(axis=0), 1.0)
        Wp, cp = Wp * p_scale, cp * p_scale
        P = Xs @ Wp + cp
        h_f = nw_loo_bandwidth(P, Zc, BANDWIDTHS)
        f_loo = nw_predict(P, Zc, P, h_f, loo=True)
        layers = [(Wp, cp)]
        nw_points, nw_targets = P, Zc
        params.update(alpha=alpha, bandwidth_f=h_f)
    else:
        hidden = int(opts.get("hidden", 64))
        epochs = int(opts.get("epochs", 200))
        n_folds = 5
        f_loo = np.zeros_like(Zc)
        bounds = np.linspace(0, len(Xs), n_folds + 1).astype(int)
        for k in range(n_folds):  # out-of-fold predictions for the residuals of Q(x)
            te = np.arange(bounds[k], bounds[k + 1])
            trn = np.setdiff1d(np.arange(len(Xs)), te)
            f_loo[te] = _mlp_apply(_mlp_fit(Xs[trn], Zc[trn], hidden, epochs, ctx.seed + k), Xs[te])
            ctx.progress(0.1 + 0.12 * (k + 1), f"DKF-NN fold {k + 1}/{n_folds}")
        layers = _mlp_fit(Xs, Zc, hidden, epochs, ctx.seed)
        h_f = 0.0
        nw_points = nw_targets = None
        params.update(hidden=hidden, epochs=epochs)
    u, q_scale, h_q, RR = _nw_q_parts(f_loo, Zc)
    d = Zc.shape[1]
    q_floor = (1e-6 * float(np.trace(ss.S)) / d * np.eye(d)).ravel()
    model = dkf_graph(
        n_features=X.shape[1],
        layers=_fold_standardiser(layers, std),
        nw_points=nw_points,
        nw_targets=nw_targets,
        q_points=u,
        q_scale=q_scale,
        q_targets=RR,
        bandwidth_f=max(h_f, 1e-6),
        bandwidth_q=h_q,
        q_floor=q_floor,
        doc=f"DKF-{flavour.upper()}: f(x) and Q(x)",
    )
    params["bandwidth_q"] = h_q
    # parity with the float64 reference on training bins
    n = min(64, len(Xs))
    g = _mlp_apply(layers, Xs[:n])
    f_ref = g if nw_points is None else nw_predict(nw_points, nw_targets, g, h_f)  # type: ignore[arg-type]
    q_ref = nw_predict(u, RR, f_ref * q_scale, h_q) + q_floor
    out = _run_onnx(model, X[:n, None, :])
    diff = float(np.max(np.abs(out - np.hstack([f_ref, q_ref]))))
    state = {
        "A": _tolist(ss.A),
        "gamma": _tolist(ss.gamma),
        "S": _tolist(ss.S),
        "z_mean": _tolist(ss.z_mean),
        "robust": robust,
    }
    card = _card(ctx, seqs, 1, f"dkf-{flavour}", "dkf", {"state_space": state, "parameters": params})
    _save(model, card, ctx.out)
    return {**params, "onnx_max_abs_diff": diff}


def train_dkf_nw(ctx: TrainContext) -> dict[str, Any]:
    """``--method dkf-nw``."""
    return train_dkf(ctx, "nw")


def train_dkf_nn(ctx: TrainContext) -> dict[str, Any]:
    """``--method dkf-nn``."""
    return train_dkf(ctx, "nn")


# ------------------------------------------------------------------------------------------------ evaluate
def decode_sequences(path: Path, card: ModelCard, seqs: list[Sequence]) -> tuple[list[np.ndarray], list[int], Any]:
    """Run the model's real decoder bin by bin over each sequence (filter reset at each start).

    Returns the predictions per sequence (bins ``t >= window - 1``), the first decided bin, and the decoder.
    """
    from decoders.loader import load_decoder

    decoder = load_decoder(path)
    L = card.n_window_samples
    preds = []
    for s in seqs:
        if hasattr(decoder, "reset"):
            decoder.reset()
        X = s.features.astype(np.float32)
        preds.append(np.array([decoder.predict(X[t - L + 1 : t + 1]) for t in range(L - 1, len(X))]))
    return preds, [L - 1] * len(seqs), decoder


def evaluate_continuous(path: Path, card: ModelCard, spec: DatasetSpec) -> dict[str, Any]:
    """Decode every recording of ``spec`` with the model and score it against the kinematics.

    Raises
    ------
    DatasetError
        Missing kinematics, non-finite features, or feature names / kinematics names that differ
        from the model's card.
    """
    seqs = load_sequences(spec)
    s0 = seqs[0]
    if list(card.channel_labels) != s0.feature_names:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: its {len(s0.feature_names)} features do not match the "
            f"{card.n_channels} features of model {str(path)!r} (first: {s0.feature_names[:3]} vs "
            f"{list(card.channel_labels[:3])})."
        )
    if list(card.classes) != s0.kinematics_names:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: kinematics {s0.kinematics_names} differ from the model's "
            f"{list(card.classes)}."
        )
    preds, starts, decoder = decode_sequences(path, card, seqs)
    P = np.concatenate(preds)
    T = np.concatenate([s.kinematics[k:] for s, k in zip(seqs, starts, strict=True)])
    result: dict[str, Any] = dict(trajectory_metrics(P, T))
    per_dim = {name: trajectory_metrics(P[:, [j]], T[:, [j]]) for j, name in enumerate(card.classes)}
    for m in per_dim.values():
        m.pop("maae")
    result.update(
        n_bins=len(P),
        per_dim=per_dim,
        method=card.provenance.get("method"),
        model=str(path),
        dataset=str(spec.path),
    )
    if hasattr(decoder, "n_fallbacks"):
        result["n_fallbacks"] = int(decoder.n_fallbacks)
    return result


register_method("continuous", "kf", train_kf)
register_method("continuous", "wiener", train_wiener)
register_method("continuous", "dkf-nw", train_dkf_nw)
register_method("continuous", "dkf-nn", train_dkf_nn)
register_evaluator("continuous", evaluate_continuous)
