"""Continuous decoding on real DAD M1 data: KF, Wiener, DKF via the CLI, parity, fallback, online = offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pylsl
import pytest

from app.cli import main as cli_main
from decoders.card import read_card
from decoders.continuous.filters import DiscriminativeKalmanFilter
from tests.conftest import DATA, REPO, unique, wait_until

sys.path.insert(0, str(REPO / "benchmarks"))
import convert_dad

DAD = DATA / "dad_m1_reach"
KEYS = {"r2", "correlation", "nrmse", "maae"}


@pytest.fixture(scope="session")
def dad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not DAD.is_dir():
        pytest.skip(f"real recordings folder {DAD} is absent (it ships only with the development machines)")
    specs = convert_dad.convert(DAD, tmp_path_factory.mktemp("dad"))
    text = specs["train"].read_text().replace("lags = 3", "lags = 3\nepochs = 15\nhidden = 16")  # tiny DKF-NN
    specs["train"].write_text(text, encoding="utf-8")
    return specs


@pytest.fixture(scope="session")
def models(dad: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cont_models")
    paths = {}
    for method in ("kf", "wiener", "dkf-nw", "dkf-nn"):
        p = out / f"{method}.onnx"
        assert (
            cli_main(["train", "continuous", "--dataset", str(dad["train"]), "--method", method, "--out", str(p)]) == 0
        )
        paths[method] = p
    return paths


def _evaluate(model: Path, spec: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert cli_main(["evaluate", str(model), "--dataset", str(spec), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_method_trains_and_evaluates_with_the_contract_keys(
    models: dict[str, Path], dad: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    res = {m: _evaluate(p, dad["test"], capsys) for m, p in models.items()}
    for m, r in res.items():
        assert KEYS <= set(r), m
        assert r["correlation"] > 0.6 and r["nrmse"] < 0.8, (m, r)
    assert res["kf"]["n_bins"] == 161 and res["wiener"]["n_bins"] == 159  # 3 lags: first decision at bin 2
    assert res["dkf-nw"]["nrmse"] < res["kf"]["nrmse"]  # the benchmark's goal, on the same split
    card = read_card(models["dkf-nw"])
    assert card.provenance["runtime"] == "dkf" and card.classes == ("vx", "vy") and card.n_channels == 187
    assert read_card(models["wiener"]).n_window_samples == 3


def test_onnx_parity_with_the_float64_and_torch_references(
    models: dict[str, Path], dad: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # training prints the parity it measured against its reference (float64 numpy / torch weights)
    for method in ("kf", "wiener", "dkf-nw", "dkf-nn"):
        tmp = models[method].with_name(f"parity-{method}.onnx")
        capsys.readouterr()
        assert (
            cli_main(["train", "continuous", "--dataset", str(dad["train"]), "--method", method, "--out", str(tmp)])
            == 0
        )
        line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("onnx_max_abs_diff"))
        assert float(line.split()[1]) < 1e-4, method


def test_dkf_fallback_replaces_q_when_q_inv_minus_s_inv_is_not_pd() -> None:
    S = np.eye(2)
    dkf = DiscriminativeKalmanFilter(0.9 * np.eye(2), 0.2 * np.eye(2), S)
    mu = dkf.step(np.array([1.0, -1.0]), 0.5 * np.eye(2))  # Q^-1 - S^-1 = I: PD, no fallback
    assert dkf.n_fallbacks == 0 and np.all(np.isfinite(mu))
    mu2 = dkf.step(np.array([1.0, -1.0]), 2.0 * np.eye(2))  # Q^-1 - S^-1 = -0.5 I: fallback
    assert dkf.n_fallbacks == 1
    # with Q <- (Q^-1 + S^-1)^-1 the update uses precision M^-1 + Q^-1: check against the closed form
    d2 = DiscriminativeKalmanFilter(0.9 * np.eye(2), 0.2 * np.eye(2), S)
    d2.step(np.array([1.0, -1.0]), 0.5 * np.eye(2))
    M = 0.81 * d2.sigma + 0.2 * np.eye(2)
    sigma = np.linalg.inv(np.linalg.inv(M) + np.linalg.inv(2.0 * np.eye(2)))
    expect = sigma @ (np.linalg.inv(M) @ (0.9 * d2.mu) + (0.5 + 1.0) * np.array([1.0, -1.0]))
    assert np.allclose(mu2, expect)
    robust = DiscriminativeKalmanFilter(0.9 * np.eye(2), 0.2 * np.eye(2), S, robust=True)
    robust.step(np.array([1.0, -1.0]), 2.0 * np.eye(2))
    assert robust.n_fallbacks == 0


def test_bad_input_missing_kinematics_and_non_finite_features(
    dad: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with np.load(dad["train"].with_name("mihi_train.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "nokin.npz", **{k: v for k, v in arrays.items() if k != "kinematics"})
    bad = dict(arrays)
    bad["features"] = arrays["features"].copy()
    bad["features"][7, 3] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    for name, msg in (("nokin", "missing kinematics"), ("nan", "non-finite features.*bin 7, column 3")):
        spec = tmp_path / f"{name}.toml"
        spec.write_text(f'paradigm = "continuous"\n[[recordings]]\npath = "{name}.npz"\n', encoding="utf-8")
        capsys.readouterr()
        assert (
            cli_main(
                ["train", "continuous", "--dataset", str(spec), "--method", "kf", "--out", str(tmp_path / "m.onnx")]
            )
            != 0
        )
        import re

        assert re.search(msg, capsys.readouterr().err), name


def test_online_session_over_lsl_reproduces_the_dkf_trajectory(models: dict[str, Path], dad: dict[str, Path]) -> None:
    """Binned features pushed through LSL into a running Session: velocity commands equal evaluate's within 1e-6."""
    from acquisition.lsl import StreamInfo, make_outlet
    from app.config import parse_config
    from app.session import Session
    from decoders.continuous.data import load_sequences
    from decoders.continuous.methods import decode_sequences
    from decoders.dataset import load_spec

    model = models["dkf-nw"]
    card = read_card(model)
    seq = load_sequences(load_spec(dad["test"]))[0]
    offline = decode_sequences(model, card, [seq])[0][0]
    name, sid = unique("rates"), unique("sid")
    outlet = make_outlet(StreamInfo.simple(name, "Features", list(card.channel_labels), card.srate, source_id=sid))
    cfg = parse_config(
        {
            "sources": {"m1": {"kind": "lsl", "source_id": sid}},
            "pipelines": {"vel": {"source": "m1", "model": str(model), "catch_up": "all"}},
        }
    )
    session = Session(cfg)
    session.keep_all_commands = True
    session.open()
    session.start()
    n = len(seq.features)
    try:
        t0 = pylsl.local_clock()
        outlet.push_chunk(seq.features.astype(np.float32), (t0 + np.arange(n) * 0.05).tolist())
        assert wait_until(lambda: session.pipelines["vel"].samples_consumed == n, 30.0)
    finally:
        session.stop()
    cmds = sorted((c for c in session.all_commands if c.pipeline == "vel"), key=lambda c: c.sample_index)
    assert [c.sample_index for c in cmds] == list(range(n))
    online = np.array([c.values for c in cmds])
    assert np.max(np.abs(online - offline)) < 1e-6


def test_xdf_dataset_with_named_feature_and_kinematics_streams(
    dad: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same bins written as an XDF (feature + kinematics streams) train and evaluate like the NPZ."""
    from acquisition.stream import StreamInfo
    from acquisition.xdf_writer import XdfWriter

    with np.load(dad["train"].with_name("mihi_train.npz")) as z:
        feats, kin = z["features"], z["kinematics"]
    names = [f"u{i:03d}" for i in range(feats.shape[1])]
    t = 100.0 + np.arange(len(feats)) * 0.05
    with XdfWriter(tmp_path / "mihi.xdf") as w:
        fid = w.add_stream(StreamInfo.simple("M1 rates", "Features", names, 20.0))
        kid = w.add_stream(StreamInfo.simple("hand", "Kinematics", ["vx", "vy"], 20.0))
        w.write_samples(fid, feats.astype(np.float32), t)
        w.write_samples(kid, kin.astype(np.float32), t)
    spec = tmp_path / "xdf.toml"
    spec.write_text(
        'paradigm = "continuous"\n[continuous]\nfeature_stream = "M1 rates"\nkinematics_stream = "hand"\n'
        '[[recordings]]\npath = "mihi.xdf"\n',
        encoding="utf-8",
    )
    out = tmp_path / "kf_xdf.onnx"
    assert cli_main(["train", "continuous", "--dataset", str(spec), "--method", "kf", "--out", str(out)]) == 0
    card = read_card(out)
    assert card.srate == pytest.approx(20.0) and card.classes == ("vx", "vy") and card.n_channels == 187
    res = _evaluate(out, dad["test"], capsys)
    assert res["correlation"] > 0.6
    bad = tmp_path / "nokin.toml"
    bad.write_text(spec.read_text().replace('"hand"', '"glove"'), encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["train", "continuous", "--dataset", str(bad), "--method", "kf", "--out", str(out)]) != 0
    assert "missing kinematics: no stream 'glove'" in capsys.readouterr().err


def test_runtime_refuses_non_finite_features_and_wrong_shapes(models: dict[str, Path]) -> None:
    from decoders.loader import load_decoder

    dec = load_decoder(models["dkf-nn"])
    x = np.zeros((1, 187), dtype=np.float32)
    assert dec.predict(x).shape == (2,)
    x[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        dec.predict(x)
    with pytest.raises(ValueError, match=r"shape \(1, 187\)"):
        dec.predict(np.zeros((1, 186), dtype=np.float32))
