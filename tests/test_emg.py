"""HD-EMG gestures on real flexemg recordings: converter, train/evaluate via the CLI, ONNX parity, online = offline."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pylsl
import pytest

from app.cli import main as cli_main
from app.pipeline import Command
from decoders.card import read_card
from decoders.dataset import load_spec
from decoders.emg.features import td_features
from decoders.emg.graph import classifier_input
from decoders.emg.postprocess import GesturePostprocessor, GestureSettings
from tests.conftest import DATA, REPO, unique, wait_until

sys.path.insert(0, str(REPO / "benchmarks"))
import convert_flexemg

FLEX = DATA / "flexemg_hdemg"
CLASSES = ("rest", "Fist", "Raise", "Lower", "Open")


@pytest.fixture(scope="session")
def flex(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trials per session converted to FIF + specs (the converter run once per test session)."""
    if not FLEX.is_dir():
        pytest.skip(f"real recordings folder {FLEX} is absent (it ships only with the development machines)")
    return convert_flexemg.convert(FLEX, tmp_path_factory.mktemp("flexemg"), n_trials=2)


@pytest.fixture(scope="session")
def lda_model(flex: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emg_lda") / "lda.onnx"
    assert cli_main(["train", "emg", "--dataset", str(flex["train"]), "--method", "lda", "--out", str(out)]) == 0
    return out


def _evaluate(model: Path, spec: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert cli_main(["evaluate", str(model), "--dataset", str(spec), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_converter_writes_fif_with_gesture_annotations_and_a_grid(flex: dict[str, Path]) -> None:
    spec = load_spec(flex["train"])
    assert spec.paradigm == "emg" and tuple(spec.classes) == CLASSES
    grid = spec.tables["emg"]["grid"]
    assert len(grid) == 4 and all(len(r) == 16 for r in grid)
    assert sorted(c for r in grid for c in r) == convert_flexemg.channel_names()
    assert len(spec.recordings) == 2 and all(r.path.suffix == ".fif" for r in spec.recordings)


def test_lda_trains_and_evaluates_on_held_out_session(
    lda_model: Path, flex: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    card = read_card(lda_model)
    assert card.paradigm == "emg" and card.classes == CLASSES and card.n_channels == 64
    assert card.window_s == pytest.approx(0.2) and card.hop_s == pytest.approx(0.05)
    assert card.provenance["emg"]["grid"][0][0] == "ch29"
    res = _evaluate(lda_model, flex["test"], capsys)
    # 2 test trials x 5 classes = 10 epochs of 3 s -> 57 windows each
    assert res["n_trials"] == 10 and res["n_windows"] == 570
    assert res["accuracy"] > 0.9 and res["trial_accuracy"] > 0.9


def _graph_features(model_path: Path, windows: np.ndarray) -> np.ndarray:
    """The ONNX graph's own feature tensor (before standardisation), exposed as an extra output."""
    model = onnx.load(str(model_path))
    name = next(n.output[0] for n in model.graph.node if n.output[0].startswith("features"))
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([name], {"window": windows})[0]


def test_onnx_features_and_probabilities_match_numpy_and_sklearn(lda_model: Path, flex: dict[str, Path]) -> None:
    from decoders.emg.lda import fit_lda
    from decoders.emg.methods import settings_from_card
    from decoders.emg.windows import iter_windows

    card = read_card(lda_model)
    settings = settings_from_card(card)
    part = next(iter_windows(load_spec(flex["test"]), settings))
    X = part.X[::3]
    ref = classifier_input(td_features(X, settings.threshold_uv))
    got = _graph_features(lda_model, X)
    assert np.max(np.abs(got - ref)) < 1e-4
    # probabilities of an LDA fitted to random labels (graded, not saturated) vs its ONNX export
    from decoders.emg.lda import export_lda

    flat = ref.reshape(len(ref), -1).astype(np.float64)
    y = np.random.default_rng(0).integers(0, 3, len(flat))
    clf = fit_lda(flat, y)
    model = export_lda(
        clf, n_samples=X.shape[1], n_channels=64, threshold_uv=settings.threshold_uv, common_average=False, n_classes=3
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"window": X})[0]
    ref_p = clf.predict_proba(flat)
    assert np.median(ref_p.max(axis=1)) < 0.9999  # graded, so the comparison means something
    assert np.max(np.abs(out - ref_p)) < 1e-4


def test_cnn_over_the_grid_trains_exports_and_matches_torch(
    flex: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "train_cnn.toml"
    spec.write_text(flex["train"].read_text().replace("[emg]", "[emg]\nepochs = 3"), encoding="utf-8")
    spec = spec.with_name("train_cnn.toml")
    (tmp_path / "train").symlink_to(flex["train"].parent / "train")
    out = tmp_path / "cnn.onnx"
    capsys.readouterr()
    assert cli_main(["train", "emg", "--dataset", str(spec), "--method", "cnn", "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    diff = float(next(ln.split()[1] for ln in printed.splitlines() if ln.startswith("onnx_max_abs_diff")))
    assert diff < 1e-4
    assert "[4, 16]" in printed  # grid shape from the spec
    res = _evaluate(out, flex["test"], capsys)
    assert res["accuracy"] > 0.5 and set(res) >= {"accuracy", "trial_accuracy"}


def test_electrode_grid_mismatch_is_refused(
    flex: dict[str, Path], tmp_path: Path, lda_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = flex["train"].read_text().replace('"ch29", "ch25"', '"ch99", "ch25"', 1)
    bad = flex["train"].with_name("bad_grid.toml")
    bad.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["train", "emg", "--dataset", str(bad), "--method", "cnn", "--out", str(tmp_path / "x.onnx")]) != 0
    assert re.search(r"electrode-grid mismatch.*\['ch29'\].*\['ch99'\]", capsys.readouterr().err)
    assert cli_main(["evaluate", str(lda_model), "--dataset", str(bad), "--json"]) != 0
    assert "electrode-grid mismatch" in capsys.readouterr().err
    ragged = flex["train"].with_name("ragged_grid.toml")
    ragged.write_text(flex["train"].read_text().replace('"ch29", "ch25", ', "", 1), encoding="utf-8")
    assert (
        cli_main(["train", "emg", "--dataset", str(ragged), "--method", "lda", "--out", str(tmp_path / "y.onnx")]) != 0
    )
    assert "grid rows must all have the same length" in capsys.readouterr().err


def _cmd(i: int, k: int, p_top: float = 0.92) -> Command:
    p = np.full(5, (1 - p_top) / 4)
    p[k] = p_top
    return Command("emg", i, "discrete", i * 0.05, i * 0.05, CLASSES[k], tuple(p), CLASSES, i)


def test_postprocessor_votes_gates_rest_and_debounces_the_mode_switch() -> None:
    pp = GesturePostprocessor(GestureSettings(CLASSES, mode_switch="Fist", vote_k=3, switch_hold=3, release_hold=2))
    seq = [0] * 3 + [2] * 5 + [1] * 10 + [0] * 4 + [1] * 6
    out = [(i, c.label) for i, k in enumerate(seq) if (c := pp.process(_cmd(i, k))) is not None]
    assert out[0] == (0, "rest")
    assert (4, "Raise") in out  # majority of 3 reached on the second Raise window
    assert [lbl for _, lbl in out].count("Fist") == 2 and pp.n_switches == 2  # one per hold, not per window
    # low confidence votes unknown; a confident rest probability gates everything to rest
    pp2 = GesturePostprocessor(GestureSettings(CLASSES, vote_k=1, min_confidence=0.6, rest_gate=0.4))
    assert pp2.process(_cmd(0, 2, p_top=0.5)).label is None  # type: ignore[union-attr]
    p = (0.45, 0.0, 0.55, 0.0, 0.0)
    gated = pp2.process(Command("emg", 1, "discrete", 0.0, 0.0, "Raise", p, CLASSES, 1))
    assert gated is not None and gated.label == "rest"
    with pytest.raises(ValueError, match="mode_switch"):
        GestureSettings(CLASSES, mode_switch="Jump")


def test_online_session_over_lsl_makes_the_same_decisions_as_evaluate(lda_model: Path, flex: dict[str, Path]) -> None:
    """A converted test trial replayed through an LSL outlet into a running Session: same window decisions."""
    from acquisition.lsl import StreamInfo, make_outlet
    from app.config import parse_config
    from app.session import Session
    from decoders.emg.methods import settings_from_card
    from decoders.emg.windows import iter_windows
    from decoders.loader import load_decoder

    card = read_card(lda_model)
    spec = load_spec(flex["test"])
    part = next(iter_windows(spec, settings_from_card(card), channels=card.channel_labels))
    pred = np.argmax(load_decoder(lda_model).predict_batch(part.X), axis=1)
    offline = dict(zip(part.end_index.tolist(), pred.tolist(), strict=True))

    from decoders.dataset import read_recording

    rec = read_recording(spec.recordings[0], spec)
    name, sid = unique("emg"), unique("sid")
    outlet = make_outlet(StreamInfo.simple(name, "EMG", list(card.channel_labels), card.srate, source_id=sid))
    cfg = parse_config(
        {
            "sources": {"emg": {"kind": "lsl", "source_id": sid}},
            "pipelines": {"g": {"source": "emg", "model": str(lda_model), "catch_up": "all"}},
        }
    )
    session = Session(cfg)
    session.keep_all_commands = True
    session.open()
    session.start()
    n = rec.data.shape[0]
    try:
        t0 = pylsl.local_clock()
        data = rec.data.astype(np.float32)
        for a in range(0, n, 1000):
            outlet.push_chunk(data[a : a + 1000], (t0 + np.arange(a, min(n, a + 1000)) / card.srate).tolist())
        assert wait_until(lambda: session.pipelines["g"].samples_consumed == n, 60.0)
    finally:
        session.stop()
    online = {c.sample_index: CLASSES.index(c.label) for c in session.all_commands if c.pipeline == "g"}
    common = sorted(set(online) & set(offline))
    assert len(common) == len(offline)  # every offline window was decided online at the same sample
    assert all(online[i] == offline[i] for i in common)


@pytest.mark.parametrize("common_average", [False, True])
def test_feature_graph_matches_numpy_with_and_without_common_average(common_average: bool) -> None:
    from decoders.emg.graph import build_linear_graph

    rng = np.random.default_rng(3)
    X = (rng.standard_normal((9, 120, 12)) * 40 + rng.standard_normal((9, 1, 12)) * 5).astype(np.float32)
    F = classifier_input(td_features(X, 2.0, common_average=common_average)).reshape(9, -1).astype(np.float64)
    mean, scale = F.mean(0), F.std(0) + 1.0
    w, b = rng.standard_normal((60, 4)) * 0.3, rng.standard_normal(4)
    model = build_linear_graph(
        n_samples=120,
        n_channels=12,
        threshold_uv=2.0,
        common_average=common_average,
        mean=mean,
        scale=scale,
        weights=w,
        bias=b,
    )
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"window": X})[
        0
    ]
    logits = (F - mean) / scale @ w + b
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    assert ref.max(axis=1).min() < 0.99 and np.max(np.abs(out - ref)) < 1e-4
