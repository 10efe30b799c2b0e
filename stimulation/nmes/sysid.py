"""System identification of a subject's knee: a NARX MLP trained with torch, run through ONNX.

Arcolezi et al. (2021) identify each subject from the data of past NMES sessions with a NARX
neural network and tune the RISE gains against it. Here:

- **Data** (:func:`log_sessions`): "past sessions" are simulated on the subject's
  :class:`~stimulation.nmes.knee_model.KneeModel` (fatigue and noise on): closed-loop runs with
  the empirical RISE gains, the PID baseline and trial-and-error RISE gains (drawn log-uniformly
  over a wide range, as an experimenter tuning by hand would try) on sines, steps and target
  staircases of varied level and period, plus open-loop pulse-width staircases. They are logged
  at the stimulation rate (25 Hz, one sample per pulse): the measured angle at each pulse and
  the pulse width delivered from it.
- **Model** (:class:`NarxMlp`): ``θ(k) = θ(k−1) + s · MLP([θ(k−1..k−n)], [PW(k−1..k−n)])`` —
  the paper's inputs PW(k−1), θ(k−1) plus more lags (``n_lags``, 6 by default: 240 ms, enough to
  span the electromechanical delay and the activation and deactivation time constants; with 4
  lags the model missed the oscillation of subjects with a long delay), with fixed input scaling
  and a residual output (the network predicts the change of angle).
- **Training** (:func:`train_narx`): one-step-ahead (series-parallel) epochs, then free-run
  (parallel) rollouts over short windows so the model stays accurate when it is simulated on its
  own predictions, as the GA does.
- **Export** (:func:`export_narx_onnx`): the MLP is written as a plain ONNX graph (Gemm/Tanh;
  built with ``onnx.helper``, so no exporter dependency) with a :class:`~decoders.card.ModelCard`
  (paradigm ``other``, channels ``knee_angle`` (deg) and ``pulse_width`` (µs), input
  ``window`` of shape (batch, n_lags, 2), output ``knee_angle`` (batch, 1)).
- **Inference** (:class:`NarxOnnx`): onnxruntime, batched, for the GA's closed-loop simulations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from acquisition.validation import check_int, check_positive, check_type
from decoders.card import ModelCard, embed_card, read_card
from stimulation.nmes.closed_loop import run_closed_loop
from stimulation.nmes.knee_model import KneeModel, KneeParams
from stimulation.nmes.pid import BASELINE_PID, PidController
from stimulation.nmes.references import sine_reference, step_reference
from stimulation.nmes.rise import EMPIRICAL_GAINS, RiseController, RiseGains

__all__ = [
    "NARX_DT_S",
    "NarxConfig",
    "NarxMlp",
    "NarxOnnx",
    "SessionLog",
    "export_narx_onnx",
    "free_run_rmse",
    "log_sessions",
    "train_narx",
]

NARX_DT_S = 0.04  #: NARX sample period = one stimulation pulse at 25 Hz, s.
_THETA_CENTER, _THETA_SCALE = 30.0, 30.0  # input scaling, degrees
_PW_CENTER, _PW_SCALE = 200.0, 200.0  # input scaling, µs
_DELTA_SCALE = 5.0  # output scaling of the predicted change, degrees per sample
# Range of the gains tried in the simulated trial-and-error sessions [ks, alpha1, alpha2, beta].
_TRIAL_GAINS_LOW = np.array([2.0, 0.6, 1.1, 1.0])
_TRIAL_GAINS_HIGH = np.array([60.0, 12.0, 12.0, 200.0])


@dataclass(frozen=True)
class SessionLog:
    """Logged sessions at the pulse rate: one row per pulse.

    Attributes
    ----------
    theta_deg : ndarray, shape (n,)
        Measured knee angle at each pulse, degrees.
    pulse_width_us : ndarray, shape (n,)
        Pulse width delivered from that pulse on, µs.
    segment : ndarray of int, shape (n,)
        Session index: windows never straddle two sessions.
    """

    theta_deg: np.ndarray
    pulse_width_us: np.ndarray
    segment: np.ndarray

    def __post_init__(self) -> None:
        n = self.theta_deg.shape
        if self.pulse_width_us.shape != n or self.segment.shape != n or len(n) != 1:
            raise ValueError(
                "SessionLog arrays must be 1-D and of equal length, got "
                f"{self.theta_deg.shape}, {self.pulse_width_us.shape}, {self.segment.shape}."
            )

    @classmethod
    def from_recording(
        cls,
        angle_time_s: np.ndarray,
        angle_deg: np.ndarray,
        pulse_time_s: np.ndarray,
        pulse_width_us: np.ndarray,
        *,
        max_gap_s: float = 2.5 * NARX_DT_S,
    ) -> SessionLog:
        """Build a log from a recorded session (e.g. the knee-angle stream and the stimulation events of an XDF).

        Parameters
        ----------
        angle_time_s, angle_deg : ndarray, shape (n,)
            Knee-angle samples (any rate >= 25 Hz) and their timestamps, s (one clock for both inputs).
        pulse_time_s, pulse_width_us : ndarray, shape (p,)
            Time of every delivered pulse (or pulse-width update at the 25 Hz pulse rate), s, and its width, µs.
        max_gap_s : float
            A gap between consecutive pulses longer than this starts a new session segment.

        Returns
        -------
        SessionLog
            One row per pulse: the angle interpolated at the pulse time, the pulse width.
        """
        ta, th = np.asarray(angle_time_s, dtype=float), np.asarray(angle_deg, dtype=float)
        tp, pw = np.asarray(pulse_time_s, dtype=float), np.asarray(pulse_width_us, dtype=float)
        if ta.shape != th.shape or tp.shape != pw.shape or ta.ndim != 1 or tp.ndim != 1 or ta.size < 2:
            raise ValueError(
                f"angle times/values and pulse times/widths must be 1-D pairs of equal length, got "
                f"{ta.shape}/{th.shape} and {tp.shape}/{pw.shape}."
            )
        if np.any(np.diff(ta) <= 0) or np.any(np.diff(tp) <= 0):
            raise ValueError("angle_time_s and pulse_time_s must be strictly increasing.")
        inside = (tp >= ta[0]) & (tp <= ta[-1])
        tp, pw = tp[inside], pw[inside]
        segment = np.concatenate([[0], np.cumsum(np.diff(tp) > max_gap_s)]).astype(int) if tp.size else tp.astype(int)
        return cls(np.interp(tp, ta, th), pw, segment)

    def windows(self, length: int) -> np.ndarray:
        """Start indices of every window of ``length`` rows inside one session."""
        seg = self.segment
        starts = np.arange(seg.size - length + 1)
        same = seg[starts] == seg[starts + length - 1]
        return starts[same]


@dataclass(frozen=True)
class NarxConfig:
    """NARX model and training settings.

    Parameters
    ----------
    n_lags : int
        Lags of θ and of PW used as inputs (>= 1).
    hidden : tuple of int
        Hidden layer widths (tanh).
    one_step_epochs, rollout_iters : int
        One-step-ahead training passes over the data, then free-run rollout iterations.
    rollout_len : int
        Samples per rollout window (25 = 1 s).
    batch : int
        Minibatch size.
    lr : float
        Adam learning rate.
    """

    n_lags: int = 6
    hidden: tuple[int, ...] = (32, 32)
    one_step_epochs: int = 15
    rollout_iters: int = 500
    rollout_len: int = 25
    batch: int = 128
    lr: float = 3e-3

    def __post_init__(self) -> None:
        check_int(self.n_lags, "NarxConfig.n_lags", minimum=1)
        for h in self.hidden:
            check_int(h, "NarxConfig.hidden[i]", minimum=1)
        check_int(self.one_step_epochs, "NarxConfig.one_step_epochs", minimum=0)
        check_int(self.rollout_iters, "NarxConfig.rollout_iters", minimum=0)
        check_int(self.rollout_len, "NarxConfig.rollout_len", minimum=2)
        check_int(self.batch, "NarxConfig.batch", minimum=1)
        check_positive(self.lr, "NarxConfig.lr")


# ------------------------------------------------------------------ data
def _pulse_log(measured: np.ndarray, pw: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, round(NARX_DT_S / dt_s))
    return measured[::step].copy(), pw[::step].copy()


def log_sessions(params: KneeParams, seed: int, *, duration_s: float = 300.0, dt_s: float = 0.005) -> SessionLog:
    """Simulate and log "past sessions" of one subject (see the module docstring).

    Parameters
    ----------
    params : KneeParams
        The subject.
    seed : int
        Seed of targets, staircases and sensor noise.
    duration_s : float
        Total logged time, s (split into sessions of 20-40 s).
    dt_s : float
        Control period of the closed-loop sessions, s.

    Returns
    -------
    SessionLog
        Sampled at :data:`NARX_DT_S`.
    """
    check_type(params, KneeParams, "params")
    check_int(seed, "seed", minimum=0)
    duration_s = check_positive(duration_s, "duration_s")
    rng = np.random.default_rng(seed)
    thetas: list[np.ndarray] = []
    pws: list[np.ndarray] = []
    segs: list[np.ndarray] = []
    total = 0.0
    i = 0
    controllers = [RiseController(g, dt_s) for g in EMPIRICAL_GAINS.values()] + [PidController(BASELINE_PID, dt_s)]
    while total < duration_s:
        length = float(rng.uniform(20.0, 40.0))
        model = KneeModel(params, seed=int(rng.integers(0, 2**31 - 1)))
        kind = i % 4
        t = np.arange(0.0, length, dt_s)
        if kind == 3:  # open-loop staircase of random pulse widths, each held 0.3-2 s
            pw = np.empty(t.size)
            k = 0
            while k < t.size:
                hold = int(rng.uniform(0.3, 2.0) / dt_s)
                pw[k : k + hold] = rng.uniform(0.0, 330.0) if rng.random() < 0.85 else 0.0
                k += hold
            meas = np.empty(t.size)
            for k in range(t.size):
                meas[k] = model.measure()
                model.advance(dt_s, pw[k])
        else:
            if kind == 0:
                low = float(rng.uniform(5.0, 20.0))
                ref = sine_reference(
                    t,
                    low_deg=low,
                    high_deg=low + float(rng.uniform(15.0, 45.0)),
                    period_s=float(rng.uniform(3.0, 10.0)),
                )
            else:
                ref = step_reference(
                    t,
                    start_deg=float(rng.uniform(5.0, 20.0)),
                    target_deg=float(rng.uniform(20.0, 60.0)),
                    step_at_s=float(rng.uniform(0.5, 3.0)),
                )
                if kind == 2:  # a staircase of targets
                    levels = rng.uniform(10.0, 55.0, size=int(length // 5) + 1)
                    ref = levels[(t // 5).astype(int)]
            pick = int(rng.integers(0, len(controllers) + 2))
            if pick < len(controllers):
                ctrl: RiseController | PidController = controllers[pick]
            else:  # a trial-and-error session: gains drawn log-uniformly from the tuning range
                lo, hi = np.log10(_TRIAL_GAINS_LOW), np.log10(_TRIAL_GAINS_HIGH)
                ctrl = RiseController(RiseGains.from_array(10.0 ** rng.uniform(lo, hi)), dt_s)
            res = run_closed_loop(ctrl, model, ref, dt_s=dt_s)
            meas, pw = res.measured_deg, res.pulse_width_us
        th, p = _pulse_log(meas, pw, dt_s)
        thetas.append(th)
        pws.append(p)
        segs.append(np.full(th.size, i))
        total += length
        i += 1
    return SessionLog(np.concatenate(thetas), np.concatenate(pws), np.concatenate(segs))


def _windows_array(log: SessionLog, n_lags: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacked (theta, pw) windows of ``n_lags + length`` rows: shapes (m, n_lags + length) each."""
    starts = log.windows(n_lags + length)
    idx = starts[:, None] + np.arange(n_lags + length)[None, :]
    return log.theta_deg[idx], log.pulse_width_us[idx]


# ------------------------------------------------------------------ model (torch)
def _torch() -> Any:
    import torch

    return torch


def _build_mlp(n_lags: int, hidden: tuple[int, ...]) -> Any:
    torch = _torch()
    layers: list[Any] = []
    width = 2 * n_lags
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.Tanh()]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers)


class NarxMlp:
    """The NARX network in torch: ``predict(window) -> θ(k)``.

    ``window`` has shape (batch, n_lags, 2), rows oldest to newest, columns
    ``[knee_angle_deg, pulse_width_us]``; the result has shape (batch,), degrees.
    """

    def __init__(self, n_lags: int, hidden: tuple[int, ...], seed: int = 0) -> None:
        torch = _torch()
        torch.manual_seed(seed)
        self.n_lags = n_lags
        self.hidden = tuple(hidden)
        self.net = _build_mlp(n_lags, self.hidden).double()

    def predict_torch(self, window: Any) -> Any:
        """Torch forward (keeps gradients)."""
        torch = _torch()
        scale = torch.tensor([1.0 / _THETA_SCALE, 1.0 / _PW_SCALE], dtype=window.dtype)
        center = torch.tensor([_THETA_CENTER, _PW_CENTER], dtype=window.dtype)
        x = ((window - center) * scale).reshape(window.shape[0], -1)
        return window[:, -1, 0] + _DELTA_SCALE * self.net(x)[:, 0]

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Numpy forward, float64, no gradients."""
        torch = _torch()
        with torch.no_grad():
            out = self.predict_torch(torch.as_tensor(np.asarray(window, dtype=np.float64)))
        return np.asarray(out.numpy(), dtype=np.float64)


def train_narx(log: SessionLog, config: NarxConfig = NarxConfig(), *, seed: int = 0) -> NarxMlp:
    """Fit a :class:`NarxMlp` to logged sessions (one-step epochs, then free-run rollouts).

    Parameters
    ----------
    log : SessionLog
        Training data at :data:`NARX_DT_S`.
    config : NarxConfig
    seed : int
        Seed of the initial weights and of the minibatch order.

    Returns
    -------
    NarxMlp
    """
    torch = _torch()
    check_type(log, SessionLog, "log")
    check_type(config, NarxConfig, "config")
    n = config.n_lags
    model = NarxMlp(n, config.hidden, seed)
    opt = torch.optim.Adam(model.net.parameters(), lr=config.lr)
    rng = np.random.default_rng(seed)

    th1, pw1 = _windows_array(log, n, 1)
    if th1.shape[0] == 0:
        raise ValueError(f"the log has no window of {n + 1} samples inside one session; log longer sessions.")
    win1 = torch.as_tensor(np.stack([th1[:, :n], pw1[:, :n]], axis=-1))
    target1 = torch.as_tensor(th1[:, n])
    m = win1.shape[0]
    for _ in range(config.one_step_epochs):
        order = rng.permutation(m)
        for s in range(0, m, config.batch):
            b = torch.as_tensor(order[s : s + config.batch])
            loss = torch.mean((model.predict_torch(win1[b]) - target1[b]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()

    length = config.rollout_len
    thr, pwr = _windows_array(log, n, length)
    if config.rollout_iters and thr.shape[0] > 0:
        th_t = torch.as_tensor(thr)
        pw_t = torch.as_tensor(pwr)
        for g in opt.param_groups:
            g["lr"] = config.lr / 3
        for _ in range(config.rollout_iters):
            b = torch.as_tensor(rng.integers(0, thr.shape[0], size=config.batch))
            theta_hist = [th_t[b, j] for j in range(n)]
            pw_b = pw_t[b]
            loss = torch.zeros((), dtype=torch.float64)
            for k in range(length):
                win = torch.stack(
                    [torch.stack(theta_hist[-n:], dim=1), pw_b[:, k : k + n]],
                    dim=-1,
                )
                pred = model.predict_torch(win)
                loss = loss + torch.mean((pred - th_t[b, n + k]) ** 2)
                theta_hist.append(pred)
            loss = loss / length
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def free_run_rmse(model: NarxMlp | NarxOnnx, log: SessionLog) -> float:
    """RMSE (degrees) of the model simulated on its own predictions over each logged session, fed the logged PW."""
    n = model.n_lags
    errs: list[np.ndarray] = []
    for s in np.unique(log.segment):
        sel = log.segment == s
        th, pw = log.theta_deg[sel], log.pulse_width_us[sel]
        if th.size <= n:
            continue
        sim = th[:n].tolist()
        for k in range(n, th.size):
            win = np.stack([np.array(sim[-n:]), pw[k - n : k]], axis=-1)[None]
            sim.append(float(model.predict(win)[0]))
        errs.append(np.asarray(sim[n:]) - th[n:])
    e = np.concatenate(errs)
    return float(np.sqrt(np.mean(e**2)))


# ------------------------------------------------------------------ ONNX
def export_narx_onnx(model: NarxMlp, path: str | Path, *, training_data: str = "simulated sessions") -> Path:
    """Write ``model`` as an ONNX graph with an embedded model card.

    Parameters
    ----------
    model : NarxMlp
    path : str or Path
        Output ``.onnx`` file (parent folder created).
    training_data : str
        Provenance note.

    Returns
    -------
    Path
    """
    check_type(model, NarxMlp, "model")
    n = model.n_lags
    linears = [layer for layer in model.net if layer.__class__.__name__ == "Linear"]
    inits = [
        numpy_helper.from_array(np.array([_THETA_CENTER, _PW_CENTER], dtype=np.float32), "center"),
        numpy_helper.from_array(np.array([1 / _THETA_SCALE, 1 / _PW_SCALE], dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array([0, 2 * n], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([_DELTA_SCALE], dtype=np.float32), "delta_scale"),
    ]
    select = np.zeros((2 * n, 1), dtype=np.float32)
    select[2 * (n - 1), 0] = 1.0  # θ(k−1) in the flattened raw window
    inits.append(numpy_helper.from_array(select, "select_last_theta"))
    nodes = [
        helper.make_node("Sub", ["window", "center"], ["centered"]),
        helper.make_node("Mul", ["centered", "scale"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "flat_shape"], ["h0"]),
        helper.make_node("Reshape", ["window", "flat_shape"], ["raw_flat"]),
    ]
    h = "h0"
    for i, lin in enumerate(linears):
        w = lin.weight.detach().numpy().astype(np.float32)
        b = lin.bias.detach().numpy().astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"z{i}"
        nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"b{i}"], [out], transB=1))
        if i < len(linears) - 1:
            nodes.append(helper.make_node("Tanh", [out], [f"h{i + 1}"]))
            h = f"h{i + 1}"
        else:
            h = out
    nodes += [
        helper.make_node("Mul", [h, "delta_scale"], ["delta"]),
        helper.make_node("MatMul", ["raw_flat", "select_last_theta"], ["last_theta"]),
        helper.make_node("Add", ["last_theta", "delta"], ["knee_angle"]),
    ]
    graph = helper.make_graph(
        nodes,
        "narx_knee",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", n, 2])],
        [helper.make_tensor_value_info("knee_angle", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="closedloop")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    card = ModelCard(
        paradigm="other",
        srate=1.0 / NARX_DT_S,
        channel_labels=("knee_angle", "pulse_width"),
        window_s=n * NARX_DT_S,
        hop_s=NARX_DT_S,
        output="continuous",
        classes=("knee_angle",),
        preprocessing={"column_units": {"knee_angle": "deg", "pulse_width": "us"}, "role": "narx_knee_model"},
        provenance={
            "created_by": "stimulation.nmes.sysid",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "method": "narx_mlp",
            "training_data": training_data,
            "parameters": {"n_lags": n, "hidden": list(model.hidden), "dt_s": NARX_DT_S},
        },
    )
    embed_card(proto, card)
    out_path = Path(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out_path))
    return out_path


class NarxOnnx:
    """A NARX model file run with onnxruntime (single-threaded: the GA calls it thousands of times).

    Parameters
    ----------
    path : str or Path
        ONNX file written by :func:`export_narx_onnx`.

    Raises
    ------
    ValueError
        The file's card is not a NARX knee model.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        card = read_card(self.path)
        if card.preprocessing.get("role") != "narx_knee_model" or card.channel_labels != ("knee_angle", "pulse_width"):
            raise ValueError(
                f"{self.path}: not a NARX knee model (card role {card.preprocessing.get('role')!r}, channels "
                f"{card.channel_labels}); export one with stimulation.nmes.sysid.export_narx_onnx."
            )
        self.card = card
        self.n_lags = round(card.window_s * card.srate)
        if not math.isclose(1.0 / card.srate, NARX_DT_S):
            raise ValueError(f"{self.path}: sample period {1 / card.srate:g} s, this code runs NARX at {NARX_DT_S} s.")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Next angle for each window: (batch, n_lags, 2) [deg, µs] -> (batch,) degrees (float64)."""
        x = np.ascontiguousarray(window, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.n_lags, 2):
            raise ValueError(f"window must have shape (batch, {self.n_lags}, 2), got {x.shape}.")
        out = self._session.run(None, {"window": x})[0]
        return np.asarray(out, dtype=np.float64)[:, 0]
