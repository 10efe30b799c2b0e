"""SSVEP methods end to end through the CLI on real ssvep_exo data, plus the pieces they are built from."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.cli import main as cli_main
from decoders.card import read_card
from decoders.loader import load_decoder
from decoders.report import itr_bits_per_min
from decoders.ssvep.fbcca import fbcca_scores, reference_signals, subband_weights
from decoders.ssvep.filterbank import apply_filter_bank, design_filter_bank, subband_edges
from decoders.ssvep.rest import calibrate_threshold, decision_margin, rest_statistic, scores_to_probabilities
from decoders.ssvep.runtime import SsvepDecoder
from tests.conftest import DATA, REPO

SPECS = REPO / "tests" / "datasets"


def derived_spec(
    tmp_path: Path, base: str, name: str, *, ssvep: dict[str, object], recordings: int | None = None
) -> Path:
    """A copy of a shipped spec with an absolute root, other [ssvep] options and optionally fewer recordings."""
    text = (SPECS / base).read_text(encoding="utf-8")
    text = re.sub(r"^root = .*$", f'root = "{DATA / "ssvep_exo"}"', text, flags=re.M)
    head, _, rest = text.partition("\n[ssvep]\n")
    recs = rest[rest.index("[[recordings]]") :].split("\n[[recordings]]\n")
    if recordings is not None:
        recs = recs[:recordings]
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in ssvep.items())
    out = tmp_path / name
    out.write_text(head + "\n[ssvep]\n" + table + "\n\n" + "\n[[recordings]]\n".join(recs), encoding="utf-8")
    return out


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- building blocks
def test_itr_wolpaw_values() -> None:
    assert itr_bits_per_min(4, 1.0, 1.0, 0.0) == pytest.approx(120.0)
    assert itr_bits_per_min(4, 0.25, 1.0) == 0.0
    # N = 3, P = 0.9, 2 s + 1 s gaze: B = log2 3 + .9 log2 .9 + .1 log2 .05 = 1.0160 bits, 20 selections/min
    assert itr_bits_per_min(3, 0.9, 2.0, 1.0) == pytest.approx(20 * 1.015967, rel=1e-4)


def test_fbcca_finds_the_frequency_in_noise() -> None:
    fs, n = 256.0, 512
    rng = np.random.default_rng(0)
    t = np.arange(n) / fs
    freqs = [13.0, 17.0, 21.0]
    bank = design_filter_bank(subband_edges(5, fs), fs)
    qy = reference_signals(freqs, fs, n, 3)
    w = subband_weights(5)
    for k, f in enumerate(freqs):
        x = np.sin(2 * np.pi * f * t + 0.7)[:, None] * rng.uniform(0.5, 1.0, 8) + rng.normal(0, 2.0, (n, 8))
        s = fbcca_scores(apply_filter_bank(x, bank), qy, w)
        assert int(np.argmax(s)) == k
        assert 0.0 <= s.min() and s.max() <= 1.0


def test_fbcca_batched_subbands_equal_the_per_subband_cca() -> None:
    from decoders.ssvep.fbcca import cca_max_corr

    fs, n = 256.0, 256
    rng = np.random.default_rng(1)
    bands = apply_filter_bank(rng.normal(0, 10, (n, 8)), design_filter_bank(subband_edges(5, fs), fs))
    qy = reference_signals([13.0, 17.0, 21.0], fs, n, 3)
    w = subband_weights(5)

    def per_subband(b: np.ndarray) -> np.ndarray:
        return (w[:, None] * np.stack([cca_max_corr(x, qy) for x in b]) ** 2).sum(axis=0) / w.sum()

    assert np.max(np.abs(fbcca_scores(bands, qy, w) - per_subband(bands))) < 1e-12
    bands[2][:, 3] = bands[2][:, 2]  # a rank-deficient sub-band takes the per-sub-band path
    assert np.max(np.abs(fbcca_scores(bands, qy, w) - per_subband(bands))) < 1e-12


def test_dnn_folded_onnx_graph_equals_the_layers() -> None:
    import torch

    from decoders.ssvep.dnn import GuneyNet, export_onnx, torch_log_probs

    torch.manual_seed(0)
    net = GuneyNet(3, 256, 8, 4).eval()
    with torch.no_grad():
        net.dense.weight.mul_(20.0)  # confident outputs, like a trained net
    bands = apply_filter_bank(
        np.random.default_rng(2).normal(0, 10, (6, 256, 8)), design_filter_bank(subband_edges(3, 256.0), 256.0)
    )
    ref = torch_log_probs(net, bands)
    outs = {}
    for fused in (True, False):
        m = export_onnx(net, 3, 256, 8, fused=fused)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        outs[fused] = sess.run(None, {"bands": bands.astype(np.float32)})[0]
        assert outs[fused].shape == (6, 4)
        kernels = [
            list(a.ints)
            for node in m.graph.node
            if node.op_type == "Conv"
            for a in node.attribute
            if a.name == "kernel_shape"
        ]
        # folded: sub-band weights + one (2 x C) conv, no k = 10 conv; layer by layer it has the k = 10 conv
        assert ([10, 1] in kernels) is (not fused)
    assert float(np.max(np.abs(outs[True] - ref))) < 1e-4
    assert float(np.max(np.abs(outs[True] - outs[False]))) < 1e-4
    assert np.ptp(ref, axis=1).max() > 1.0  # the comparison is not between near-constant outputs


def test_rest_threshold_and_probabilities() -> None:
    margins = np.linspace(0.0, 1.0, 101)
    thr = calibrate_threshold(margins, 0.1)
    assert np.mean(margins > thr) == pytest.approx(0.1, abs=0.011)
    p = scores_to_probabilities(np.array([0.5, 0.45, 0.1]), 20.0, 0.1, "margin")  # margin 0.05 < 0.1 -> rest
    assert p.shape == (4,) and p.sum() == pytest.approx(1.0) and int(np.argmax(p)) == 3
    p = scores_to_probabilities(np.array([0.5, 0.2, 0.1]), 20.0, 0.1, "margin")  # margin 0.3 -> target 0
    assert int(np.argmax(p)) == 0
    p = scores_to_probabilities(np.array([0.5, 0.45, 0.1]), 20.0, 0.6)  # default "top": best 0.5 < 0.6 -> rest
    assert int(np.argmax(p)) == 3
    p = scores_to_probabilities(np.array([0.2, 0.7, 0.1]), 20.0, 0.6)  # best 0.7 > 0.6 -> target 1
    assert int(np.argmax(p)) == 1
    assert rest_statistic(np.array([[0.2, 0.7, 0.1]]))[0] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="rest statistic"):
        rest_statistic(np.array([0.1, 0.2]), "median")
    assert decision_margin(np.array([[0.1, 0.7, 0.3]]))[0] == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------- real data, CLI
def test_fbcca_train_and_evaluate_on_real_subject(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = SPECS / "ssvep_exo_s01_3class.toml"
    model, report = tmp_path / "fbcca.onnx", tmp_path / "report"
    code = cli_main(
        ["train", "ssvep", "--dataset", str(spec), "--method", "fbcca", "--out", str(model), "--report", str(report)]
    )
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "[100%] done" in cap.err and "cv_accuracy" in cap.out
    for name in ("confusion.png", "accuracy_itr_vs_window.png", "report.json"):
        assert (report / name).stat().st_size > 1000 or name == "report.json"
    rep = json.loads((report / "report.json").read_text(encoding="utf-8"))
    assert set(rep["window_curve"]) == {"0.5", "1.0", "2.0", "4.0"}
    assert rep["cv_accuracy"] > 0.6  # chance 1/3
    card = read_card(model)
    assert card.provenance["runtime"] == "fbcca" and card.classes == ("13Hz", "17Hz", "21Hz")
    assert isinstance(load_decoder(model), SsvepDecoder)

    res = run_json(["evaluate", str(model), "--dataset", str(spec), "--json"], capsys)
    assert res["n_trials"] == 48 and res["window_s"] == 2.0
    assert res["accuracy"] > 0.6  # well above chance (0.33) on 48 trials
    assert set(res["per_class"]) == {"13Hz", "17Hz", "21Hz"}
    assert np.array(res["confusion"]).sum() == 48
    assert res["itr_bits_per_min"] == pytest.approx(itr_bits_per_min(3, res["accuracy"], 2.0, 1.0))

    assert cli_main(["evaluate", str(model), "--dataset", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "per-class recall" in text and "confusion" in text and "ITR" in text


def test_fbcca_with_rest_class_and_threshold(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = derived_spec(tmp_path, "ssvep_exo_s01.toml", "s01.toml", ssvep={"window_s": 2.0, "report_windows": [2.0]})
    model = tmp_path / "fbcca4.onnx"
    assert cli_main(["train", "ssvep", "--dataset", str(spec), "--method", "fbcca", "--out", str(model)]) == 0
    capsys.readouterr()
    card = read_card(model)
    assert card.classes[-1] == "rest" and card.provenance["parameters"]["rest_threshold"] > 0
    # a fresh process (as `closedloop run` would) finds the runtime through decoders.loader.RUNTIME_MODULES
    code = (
        "import sys, numpy as np; from decoders.loader import load_decoder; "
        f"d = load_decoder({str(model)!r}); p = d.predict(np.zeros((512, 8), np.float32)); "
        "print(type(d).__name__, len(p), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SsvepDecoder", "4", "False"]  # no torch needed to run a model
    res = run_json(["evaluate", str(model), "--dataset", str(spec), "--json"], capsys)
    assert res["n_trials"] == 64
    rest_recall = res["per_class"]["rest"]
    assert rest_recall >= 0.8  # the threshold lets at most ~10 % of calibration rest windows through
    assert res["accuracy"] > 0.45  # chance 0.25


def test_etrca_train_evaluate_and_onnx_parity(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = derived_spec(
        tmp_path, "ssvep_exo_s01_3class.toml", "s01.toml", ssvep={"window_s": 1.0, "report_windows": [1.0], "folds": 3}
    )
    model = tmp_path / "etrca.onnx"
    report = tmp_path / "rep"
    code = cli_main(
        ["train", "ssvep", "--dataset", str(spec), "--method", "etrca", "--out", str(model), "--report", str(report)]
    )
    assert code == 0
    capsys.readouterr()
    rep = json.loads((report / "report.json").read_text(encoding="utf-8"))
    assert rep["onnx_max_abs_diff"] < 1e-4
    dec = load_decoder(model)
    assert dec.card.provenance["runtime"] == "ssvep-onnx" and dec.card.provenance["method"] == "etrca"
    res = run_json(["evaluate", str(model), "--dataset", str(spec), "--json"], capsys)
    # evaluated on its own calibration trials: the templates fit them (cross-validated accuracy is in the benchmark)
    assert res["accuracy"] > 0.8 and res["n_trials"] == 48
    with pytest.raises(ValueError, match="shape"):
        dec.predict(np.zeros((10, 8), dtype=np.float32))


def test_dnn_two_stage_tiny_training_onnx_matches_torch(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from decoders.dataset import load_spec
    from decoders.ssvep.core import FilterBankSpec, fit_scorer, load_ssvep_data
    from decoders.ssvep.dnn import export_onnx, torch_log_probs

    torch.set_num_threads(1)
    opts = {"window_s": 0.5, "report_windows": [0.5], "folds": 2, "epochs_global": 2, "epochs_finetune": 2}
    target = derived_spec(tmp_path, "ssvep_exo_s01_3class.toml", "t.toml", ssvep=opts, recordings=1)
    pre = derived_spec(tmp_path, "ssvep_exo_pretrain.toml", "p.toml", ssvep=opts, recordings=1)
    model = tmp_path / "dnn.onnx"
    argv = ["train", "ssvep", "--dataset", str(target), "--method", "dnn", "--out", str(model), "--pretrain", str(pre)]
    assert cli_main(argv) == 0
    out = capsys.readouterr()
    assert "global stage" in out.err and "onnx_max_abs_diff" in out.out
    card = read_card(model)
    assert "global stage: p.toml" in card.provenance["training_data"]
    assert card.provenance["parameters"]["stages"] == "global+finetune"
    dec = load_decoder(model)
    p = dec.predict(np.random.default_rng(0).normal(0, 10, (128, 8)).astype(np.float32))
    assert p.shape == (3,) and p.sum() == pytest.approx(1.0)

    # parity on real windows: ONNX vs torch, max abs diff < 1e-4
    data = load_ssvep_data(load_spec(target))
    ep = data.epochs(0.5)
    fb = FilterBankSpec.make(3, data.sfreq, data.options)
    bands = fb.apply(ep.X)
    scorer = fit_scorer("dnn", bands, ep.y, 3, fb, data, seed=1)
    onnx_model = export_onnx(scorer.torch_net, 3, 128, 8)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"bands": bands.astype(np.float32)})[0]
    ref = torch_log_probs(scorer.torch_net, bands)
    assert got.shape == (ep.n_trials, 3)
    assert float(np.max(np.abs(got - ref))) < 1e-4


def test_unknown_method_and_wrong_paradigm(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(SPECS / "ssvep_exo_s01.toml")
    assert cli_main(["train", "ssvep", "--dataset", spec, "--method", "cca9", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "unknown method 'cca9'" in capsys.readouterr().err
    assert cli_main(["train", "mi", "--dataset", spec, "--method", "csp-lda", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "is for paradigm 'ssvep'" in capsys.readouterr().err
