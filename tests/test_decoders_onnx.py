"""Model cards, the ONNX decoder and the training-free SSVEP reference model (real onnxruntime sessions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from decoders.base import Decoder
from decoders.card import (
    CARD_METADATA_KEY,
    CardMismatchError,
    ModelCard,
    embed_card,
    read_card,
)
from decoders.onnx_decoder import OnnxDecoder
from decoders.ssvep_reference import build_ssvep_reference_model, main, save_model

FREQS = [8.0, 10.0, 12.0, 15.0]
SRATE = 250.0
LABELS = ["PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"]
N_SAMPLES = 250
CREATED_AT = "2024-01-01T00:00:00+00:00"
REPO_MODEL = Path(__file__).resolve().parents[1] / "models" / "ssvep_reference.onnx"


def card_dict(**changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "card_version": 1,
        "paradigm": "mi",
        "srate": 250.0,
        "channel_labels": ["C3", "Cz", "C4"],
        "window_s": 2.0,
        "hop_s": 0.1,
        "output": "discrete",
        "classes": ["left", "right"],
        "input_name": "window",
        "preprocessing": {
            "bandpass_hz": [8.0, 30.0],
            "filter_order": 4,
            "notch_hz": 50.0,
            "units": "microvolts",
            "reference": "average",
        },
        "provenance": {
            "created_by": "test",
            "created_at": CREATED_AT,
            "method": "csp-lda",
            "training_data": "subject 1, session 1",
            "code_version": "0.1.0",
        },
    }
    d.update(changes)
    return d


def make_card(**changes: Any) -> ModelCard:
    return ModelCard.from_dict(card_dict(**changes))


def ssvep_window(freq: float, *, amplitude: float = 10.0, noise: float = 20.0, seed: int = 0) -> np.ndarray:
    """Sinusoid at ``freq`` Hz with a random phase per channel plus white noise, shape (N_SAMPLES, 8), µV."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_SAMPLES) / SRATE
    phases = rng.uniform(0, 2 * np.pi, len(LABELS))
    signal = amplitude * np.sin(2 * np.pi * freq * t[:, None] + phases[None, :])
    return (signal + rng.normal(0.0, noise, signal.shape) + 30.0).astype(np.float32)


def numpy_reference_probabilities(
    window: np.ndarray,
    freqs: list[float],
    srate: float,
    n_harmonics: int,
    temperature: float,
    weights: np.ndarray | None = None,
    eps: float = 1e-12,
) -> np.ndarray:
    """Independent float64 implementation: least-squares projection onto sin/cos references."""
    x = window.astype(np.float64)
    x = x - x.mean(axis=0)
    if weights is not None:
        x = x * np.sqrt(weights)[None, :]
    t = np.arange(x.shape[0]) / srate
    energies = []
    for f in freqs:
        refs = np.column_stack(
            [fn(2 * np.pi * f * h * t) for h in range(1, n_harmonics + 1) for fn in (np.sin, np.cos)]
        )
        coef, *_ = np.linalg.lstsq(refs, x, rcond=None)
        energies.append(np.sum((refs @ coef) ** 2))
    z = temperature * np.array(energies) / (np.sum(x**2) + eps)
    p = np.exp(z - z.max())
    return p / p.sum()


@pytest.fixture(scope="module")
def ssvep_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_ssvep_reference_model(FREQS, SRATE, 1.0, LABELS, created_at=CREATED_AT)
    return save_model(model, tmp_path_factory.mktemp("models") / "ssvep.onnx")


@pytest.fixture(scope="module")
def ssvep(ssvep_path: Path) -> OnnxDecoder:
    return OnnxDecoder(ssvep_path)


def write_with_card(tmp_path: Path, card: ModelCard, name: str = "m.onnx") -> Path:
    """The SSVEP model's graph with ``card`` embedded instead of its own."""
    model = build_ssvep_reference_model(FREQS, SRATE, 1.0, LABELS, created_at=CREATED_AT)
    embed_card(model, card)
    return save_model(model, tmp_path / name)


# ---------------------------------------------------------------------- ModelCard
def test_card_json_round_trip_and_derived_properties() -> None:
    card = make_card()
    text = card.to_json()
    again = ModelCard.from_json(text)
    assert again == card
    assert again.to_json() == text
    assert ModelCard.from_dict(card.to_dict()) == card
    assert json.loads(text) == card_dict()
    assert card.n_channels == 3
    assert card.n_window_samples == 500
    assert card.n_outputs == 2
    assert isinstance(card.channel_labels, tuple) and isinstance(card.classes, tuple)
    assert hash(card) == hash(again)
    assert make_card(srate=256.0, window_s=0.5).n_window_samples == 128


def test_card_defaults_and_tuple_inputs_normalise() -> None:
    d = card_dict()
    del d["card_version"], d["input_name"]
    d["preprocessing"] = {"bandpass_hz": (8, 30)}
    card = ModelCard.from_dict(d)
    assert card.card_version == 1 and card.input_name == "window"
    assert card.preprocessing == {"bandpass_hz": [8, 30]}
    assert ModelCard.from_json(card.to_json()) == card


def test_card_is_isolated_from_caller_dicts() -> None:
    pre = {"units": "volts"}
    card = make_card(preprocessing=pre)
    pre["units"] = "microvolts"
    assert card.preprocessing == {"units": "volts"}


@pytest.mark.parametrize(
    ("changes", "error", "fragments"),
    [
        ({"paradigm": "eeg"}, ValueError, ["'paradigm'", "'eeg'", "ssvep"]),
        ({"srate": -250.0}, ValueError, ["'srate'", "> 0", "-250.0"]),
        ({"srate": 0}, ValueError, ["'srate'", "0"]),
        ({"srate": float("nan")}, ValueError, ["'srate'", "nan"]),
        ({"srate": "250"}, TypeError, ["'srate'", "'250'"]),
        ({"srate": True}, TypeError, ["'srate'", "True"]),
        ({"channel_labels": "C3"}, TypeError, ["'channel_labels'", "list of str", "'C3'"]),
        ({"channel_labels": []}, ValueError, ["'channel_labels'", "at least 1", "[]"]),
        ({"channel_labels": ["C3", "C3"]}, ValueError, ["'channel_labels'", "repeat", "C3"]),
        ({"channel_labels": ["C3", 4]}, TypeError, ["'channel_labels'[1]", "str", "4"]),
        ({"channel_labels": ["C3", " "]}, ValueError, ["'channel_labels'[1]", "non-empty"]),
        ({"window_s": 0}, ValueError, ["'window_s'", "> 0"]),
        ({"window_s": 0.001}, ValueError, ["'window_s'", "at least one sample", "0.001"]),
        ({"hop_s": -0.1}, ValueError, ["'hop_s'", "-0.1"]),
        ({"output": "binary"}, ValueError, ["'output'", "'binary'", "discrete"]),
        ({"classes": ["left"]}, ValueError, ["'classes'", "at least 2", "left"]),
        ({"classes": ["a", "a"]}, ValueError, ["'classes'", "repeat"]),
        ({"preprocessing": [1, 2]}, TypeError, ["'preprocessing'", "dict", "[1, 2]"]),
        ({"preprocessing": {"bandpass_hz": [5.0]}}, ValueError, ["'preprocessing.bandpass_hz'", "[5.0]"]),
        ({"preprocessing": {"bandpass_hz": [30.0, 8.0]}}, ValueError, ["'preprocessing.bandpass_hz'", "low < high"]),
        ({"preprocessing": {"bandpass_hz": [8.0, 200.0]}}, ValueError, ["'preprocessing.bandpass_hz'", "Nyquist"]),
        ({"preprocessing": {"bandpass_hz": ["8", 30]}}, TypeError, ["'preprocessing.bandpass_hz'[0]", "'8'"]),
        ({"preprocessing": {"filter_order": 0}}, ValueError, ["'preprocessing.filter_order'", ">= 1", "0"]),
        ({"preprocessing": {"filter_order": 4.0}}, TypeError, ["'preprocessing.filter_order'", "int", "4.0"]),
        ({"preprocessing": {"notch_hz": -50}}, ValueError, ["'preprocessing.notch_hz'", "-50"]),
        ({"preprocessing": {"notch_hz": 150.0}}, ValueError, ["'preprocessing.notch_hz'", "Nyquist", "150.0"]),
        ({"preprocessing": {"units": "mV"}}, ValueError, ["'preprocessing.units'", "'mV'", "microvolts"]),
        ({"preprocessing": {"reference": 3}}, TypeError, ["'preprocessing.reference'", "str", "3"]),
        ({"preprocessing": {"x": {1, 2}}}, ValueError, ["'preprocessing'", "JSON"]),
        ({"preprocessing": {"x": float("nan")}}, ValueError, ["'preprocessing'", "JSON", "nan"]),
        ({"provenance": {"created_by": "a", "created_at": CREATED_AT}}, ValueError, ["'provenance'", "['method']"]),
        (
            {"provenance": {"created_by": "a", "created_at": "yesterday", "method": "m"}},
            ValueError,
            ["'provenance.created_at'", "ISO 8601", "'yesterday'"],
        ),
        (
            {"provenance": {"created_by": 5, "created_at": CREATED_AT, "method": "m"}},
            TypeError,
            ["'provenance.created_by'", "str", "5"],
        ),
        ({"card_version": 2}, ValueError, ["'card_version'", "unknown card_version 2", "[1]"]),
        ({"card_version": "1"}, TypeError, ["'card_version'", "int", "'1'"]),
        ({"input_name": ""}, ValueError, ["'input_name'", "non-empty", "''"]),
        ({"input_name": 3}, TypeError, ["'input_name'", "str", "3"]),
    ],
)
def test_card_validation_names_key_rule_and_value(
    changes: dict[str, Any], error: type[Exception], fragments: list[str]
) -> None:
    with pytest.raises(error) as info:
        make_card(**changes)
    message = str(info.value)
    assert "model card key" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_card_version_checked_before_other_keys() -> None:
    d = card_dict(card_version=7, new_field_of_v7=1)
    with pytest.raises(ValueError, match="unknown card_version 7"):
        ModelCard.from_dict(d)


def test_from_dict_missing_unknown_and_wrong_container() -> None:
    d = card_dict()
    del d["srate"], d["classes"]
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['srate', 'classes'\]"):
        ModelCard.from_dict(d)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['labels'\]"):
        ModelCard.from_dict(card_dict(labels=["C3"]))
    with pytest.raises(TypeError, match="JSON object"):
        ModelCard.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


def test_from_json_errors() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelCard.from_json("{paradigm: ssvep")
    with pytest.raises(TypeError, match="JSON object"):
        ModelCard.from_json("[1, 2]")
    with pytest.raises(TypeError, match="model card JSON must be str or bytes"):
        ModelCard.from_json(42)  # type: ignore[arg-type]


def test_continuous_card_allows_one_output() -> None:
    card = make_card(paradigm="continuous", output="continuous", classes=["velocity"])
    assert card.n_outputs == 1


# ------------------------------------------------------------------ check_stream
def test_check_stream_accepts_match_within_tolerance() -> None:
    card = make_card()
    card.check_stream(250.0, ["C3", "Cz", "C4"], stream_name="EEG")
    card.check_stream(250.0 * (1 + 5e-7), ("C3", "Cz", "C4"))


def test_check_stream_rate_mismatch_names_both_rates() -> None:
    card = make_card()
    with pytest.raises(CardMismatchError) as info:
        card.check_stream(256.0, ["C3", "Cz", "C4"], stream_name="X")
    assert "model expects 250.0 Hz but stream 'X' runs at 256.0 Hz" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(CardMismatchError, match=r"but the stream runs at 250\.001 Hz"):
        card.check_stream(250.001, ["C3", "Cz", "C4"])


def test_check_stream_count_missing_and_extra_labels() -> None:
    card = make_card()
    with pytest.raises(CardMismatchError) as info:
        card.check_stream(250.0, ["C3", "Cz", "C4", "Pz"], stream_name="amp")
    msg = str(info.value)
    assert "model expects 3 channels ['C3', 'Cz', 'C4'] but stream 'amp' has 4 channels" in msg
    assert "that the model does not use: ['Pz']" in msg
    with pytest.raises(CardMismatchError) as info:
        card.check_stream(250.0, ["C3", "C4"], stream_name="amp")
    msg = str(info.value)
    assert "model expects 3 channels" in msg and "has 2 channels ['C3', 'C4']" in msg
    assert "missing from stream 'amp': ['Cz']" in msg


def test_check_stream_order_and_case_hint() -> None:
    card = make_card()
    with pytest.raises(CardMismatchError, match=r"order differs: model expects \['C3', 'Cz', 'C4'\] but .* \['C4'"):
        card.check_stream(250.0, ["C4", "Cz", "C3"])
    with pytest.raises(CardMismatchError, match="differ only in letter case"):
        card.check_stream(250.0, ["C3", "CZ", "C4"])


def test_check_stream_collects_every_mismatch_in_one_message() -> None:
    card = make_card()
    with pytest.raises(CardMismatchError) as info:
        card.check_stream(500.0, ["C3", "Fz"], stream_name="X")
    msg = str(info.value)
    for fragment in ("250.0 Hz", "500.0 Hz", "3 channels", "2 channels", "['Cz', 'C4']", "['Fz']", "Fix:"):
        assert fragment in msg, fragment


def test_check_stream_validates_its_arguments() -> None:
    card = make_card()
    with pytest.raises(ValueError, match="srate"):
        card.check_stream(0.0, ["C3", "Cz", "C4"])
    with pytest.raises(TypeError, match=r"labels\[1\]"):
        card.check_stream(250.0, ["C3", 2, "C4"])  # type: ignore[list-item]


# ----------------------------------------------------------- embed_card/read_card
def test_embed_and_read_card_round_trip(tmp_path: Path) -> None:
    card = make_card(channel_labels=LABELS, srate=SRATE, window_s=1.0, classes=[f"{f!r}Hz" for f in FREQS])
    path = write_with_card(tmp_path, card)
    assert read_card(path) == card
    model = onnx.load(str(path))
    keys = [p.key for p in model.metadata_props]
    assert keys.count(CARD_METADATA_KEY) == 1  # replaced, not duplicated


def test_read_card_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model file '.*nope\.onnx' does not exist"):
        read_card(tmp_path / "nope.onnx")


@pytest.mark.parametrize("content", [b"this is not an onnx model at all", bytes(range(256)) * 4, b""])
def test_read_card_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model file '.*fake\.onnx' is not an ONNX model"):
        read_card(path)


def test_read_card_onnx_without_card(tmp_path: Path, ssvep_path: Path) -> None:
    model = onnx.load(str(ssvep_path))
    del model.metadata_props[:]
    path = tmp_path / "nocard.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match=r"'.*nocard\.onnx' has no model card.*closedloop\.model_card.*embed_card"):
        read_card(path)
    with pytest.raises(ValueError, match="has no model card"):
        OnnxDecoder(path)


def test_read_card_invalid_card_names_file_and_key(tmp_path: Path, ssvep_path: Path) -> None:
    model = onnx.load(str(ssvep_path))
    for prop in model.metadata_props:
        if prop.key == CARD_METADATA_KEY:
            d = json.loads(prop.value)
            d["srate"] = -1
            prop.value = json.dumps(d)
    path = tmp_path / "badcard.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match=r"badcard\.onnx' has an invalid model card: model card key 'srate'"):
        read_card(path)


# --------------------------------------------------------- OnnxDecoder on SSVEP
def test_ssvep_card_contents(ssvep: OnnxDecoder) -> None:
    card = ssvep.card
    assert card.paradigm == "ssvep" and card.output == "discrete"
    assert card.classes == ("8.0Hz", "10.0Hz", "12.0Hz", "15.0Hz")
    assert card.channel_labels == tuple(LABELS)
    assert card.srate == SRATE and card.n_window_samples == N_SAMPLES and card.hop_s == 0.04
    assert card.preprocessing["bandpass_hz"] == [5.0, 45.0]
    assert card.preprocessing["filter_order"] == 4
    assert card.preprocessing["units"] == "microvolts"
    assert card.provenance["method"] == "ssvep-reference-projection"
    assert card.provenance["created_by"] == "closedloop"
    assert card.provenance["created_at"] == CREATED_AT
    params = card.provenance["parameters"]
    assert params["n_harmonics"] == 3 and params["frequencies_hz"] == FREQS
    assert params["temperature"] == pytest.approx(N_SAMPLES / 6)


@pytest.mark.parametrize("freq", FREQS)
def test_ssvep_decoder_finds_each_target(ssvep: OnnxDecoder, freq: float) -> None:
    probs = ssvep.predict(ssvep_window(freq, seed=int(freq)))
    assert probs.shape == (4,) and probs.dtype == np.float64
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)
    assert ssvep.card.classes[int(np.argmax(probs))] == f"{freq!r}Hz"


def test_ssvep_decoder_all_targets_in_turn(ssvep: OnnxDecoder) -> None:
    found = [ssvep.card.classes[int(np.argmax(ssvep.predict(ssvep_window(f, seed=1))))] for f in FREQS]
    assert found == ["8.0Hz", "10.0Hz", "12.0Hz", "15.0Hz"]


def test_ssvep_noise_is_not_confident_and_zero_window_is_uniform(ssvep: OnnxDecoder) -> None:
    noise = np.random.default_rng(3).normal(0.0, 20.0, (N_SAMPLES, len(LABELS))).astype(np.float32)
    assert ssvep.predict(noise).max() < 0.6
    np.testing.assert_allclose(ssvep.predict(np.zeros((N_SAMPLES, len(LABELS)), np.float32)), 0.25, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssvep_onnx_matches_numpy_reference(ssvep: OnnxDecoder, seed: int) -> None:
    window = ssvep_window(FREQS[seed], amplitude=3.0, seed=seed)
    got = ssvep.predict(window)
    want = numpy_reference_probabilities(window, FREQS, SRATE, 3, N_SAMPLES / 6)
    assert 0.05 < want.max() < 0.999  # graded, so the comparison means something
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ssvep_channel_weights_match_numpy_reference(tmp_path: Path) -> None:
    weights = np.array([0.0, 0.5, 1.0, 1.0, 2.0, 1.0, 3.0, 1.0])
    model = build_ssvep_reference_model(
        FREQS, SRATE, 1.0, LABELS, channel_weights=weights, temperature=20.0, created_at=CREATED_AT
    )
    dec = OnnxDecoder(save_model(model, tmp_path / "w.onnx"))
    window = ssvep_window(10.0, amplitude=4.0, seed=5)
    want = numpy_reference_probabilities(window, FREQS, SRATE, 3, 20.0, weights)
    np.testing.assert_allclose(dec.predict(window), want, atol=1e-4)
    assert dec.card.provenance["parameters"]["channel_weights"] == weights.tolist()


def test_predict_returns_independent_copy_and_accepts_float64(ssvep: OnnxDecoder) -> None:
    w = ssvep_window(12.0)
    first = ssvep.predict(w)
    second = ssvep.predict(w.astype(np.float64))
    np.testing.assert_allclose(first, second, atol=1e-7)
    ssvep.predict(ssvep_window(8.0))
    np.testing.assert_allclose(first, second, atol=1e-7)  # not overwritten by later calls
    assert first is not second


def test_predict_batch_matches_predict(ssvep: OnnxDecoder) -> None:
    windows = np.stack([ssvep_window(f, seed=i) for i, f in enumerate(FREQS)])
    assert ssvep.supports_batch
    batch = ssvep.predict_batch(windows)
    assert batch.shape == (4, 4) and batch.dtype == np.float64
    for i, w in enumerate(windows):
        np.testing.assert_allclose(batch[i], ssvep.predict(w), atol=1e-6)
    assert ssvep.predict_batch(windows[:0]).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\(n_windows, n_samples, n_channels\) = \(n, \*\(250, 8\)\).*\(4, 250, 7\)"):
        ssvep.predict_batch(windows[:, :, :7])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((249, 8), np.float32),
        np.zeros((250, 7), np.float32),
        np.zeros((8, 250), np.float32),
        np.zeros(2000, np.float32),
        np.zeros((1, 250, 8), np.float32),
    ],
    ids=["short", "channels", "transposed", "flat", "batched"],
)
def test_predict_wrong_shape(ssvep: OnnxDecoder, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=rf"\(250, 8\) for model .*, got \({bad.shape[0]}"):
        ssvep.predict(bad)


def test_predict_refuses_lists_and_non_finite(ssvep: OnnxDecoder) -> None:
    with pytest.raises(ValueError, match="got list"):
        ssvep.predict([[0.0] * 8] * 250)  # type: ignore[arg-type]
    w = ssvep_window(10.0)
    w[10, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        ssvep.predict(w)


def test_decoder_protocol(ssvep: OnnxDecoder) -> None:
    assert isinstance(ssvep, Decoder)
    assert not isinstance(object(), Decoder)


# ---------------------------------------------------- card/graph disagreement
def test_graph_channel_count_disagreeing_with_card_is_refused(tmp_path: Path) -> None:
    card = make_card(
        paradigm="ssvep", channel_labels=LABELS[:7], srate=SRATE, window_s=1.0, classes=["a", "b", "c", "d"]
    )
    path = write_with_card(tmp_path, card, "seven.onnx")
    with pytest.raises(ValueError) as info:
        OnnxDecoder(path)
    msg = str(info.value)
    assert "seven.onnx" in msg
    assert "['batch', 250, 8]" in msg and "(1, 250, 7)" in msg and "7 channels" in msg


def test_graph_window_length_disagreeing_with_card_is_refused(tmp_path: Path) -> None:
    card = make_card(paradigm="ssvep", channel_labels=LABELS, srate=SRATE, window_s=2.0, classes=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"has shape \['batch', 250, 8\] but the card implies \(1, 500, 8\)"):
        OnnxDecoder(write_with_card(tmp_path, card))


def test_graph_output_length_disagreeing_with_card_is_refused(tmp_path: Path) -> None:
    card = make_card(paradigm="ssvep", channel_labels=LABELS, srate=SRATE, window_s=1.0, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"m\.onnx'.*output 'probabilities' has shape \['batch', 4\].*3 classes"):
        OnnxDecoder(write_with_card(tmp_path, card))


def test_card_input_name_missing_from_graph_is_refused(tmp_path: Path) -> None:
    card = make_card(
        paradigm="ssvep", channel_labels=LABELS, srate=SRATE, window_s=1.0, classes=list("abcd"), input_name="x"
    )
    with pytest.raises(ValueError, match=r"graph input 'x' but the graph's inputs are \['window'\]"):
        OnnxDecoder(write_with_card(tmp_path, card))


def test_fixed_batch_graph_loads_but_refuses_predict_batch(tmp_path: Path) -> None:
    model = build_ssvep_reference_model(FREQS, SRATE, 1.0, LABELS, created_at=CREATED_AT)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    dec = OnnxDecoder(save_model(model, tmp_path / "fixed.onnx"))
    assert not dec.supports_batch
    assert dec.card.classes[int(np.argmax(dec.predict(ssvep_window(15.0))))] == "15.0Hz"
    with pytest.raises(RuntimeError, match="fixed batch size of 1"):
        dec.predict_batch(np.zeros((2, 250, 8), np.float32))


def test_onnx_decoder_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        OnnxDecoder(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf")
    with pytest.raises(ValueError, match=r"junk\.onnx' is not a loadable ONNX model"):
        OnnxDecoder(junk)
    with pytest.raises(ValueError, match="intra_op_threads must be an integer >= 1"):
        OnnxDecoder(junk, intra_op_threads=0)


# ------------------------------------------------------------- builder and CLI
def test_builder_validates_arguments() -> None:
    with pytest.raises(ValueError, match=r"harmonic 5 of 30.0 Hz .* Nyquist"):
        build_ssvep_reference_model([10.0, 30.0], 250.0, 1.0, LABELS, n_harmonics=5, bandpass_hz=(5.0, 100.0))
    with pytest.raises(ValueError, match=r"outside bandpass_hz"):
        build_ssvep_reference_model([8.0, 40.0], 250.0, 1.0, LABELS, bandpass_hz=(5.0, 30.0))
    with pytest.raises(ValueError, match="unique"):
        build_ssvep_reference_model([8.0, 8.0], 250.0, 1.0, LABELS)
    with pytest.raises(ValueError, match="channel_weights must be 8"):
        build_ssvep_reference_model(FREQS, 250.0, 1.0, LABELS, channel_weights=[1.0, 2.0])


def test_cli_writes_deterministic_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--frequencies", "8", "10", "12", "15", "--srate", "250", "--window", "1.0", "--channels", *LABELS]
    args += ["--created-at", CREATED_AT]
    assert main(["--out", str(tmp_path / "a" / "m.onnx"), *args]) == 0
    assert main(["--out", str(tmp_path / "b.onnx"), *args]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "a" / "m.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert read_card(tmp_path / "b.onnx") == OnnxDecoder(tmp_path / "b.onnx").card
    assert main(["--out", str(tmp_path / "c.onnx"), *args, "--harmonics", "20"]) == 2
    assert "Nyquist" in capsys.readouterr().err


def test_repo_demo_model_loads_with_expected_card() -> None:
    dec = OnnxDecoder(REPO_MODEL)
    assert dec.card.classes == ("8.0Hz", "10.0Hz", "12.0Hz", "15.0Hz")
    assert dec.card.channel_labels == tuple(LABELS)
    assert dec.card.srate == 250.0 and dec.card.window_s == 1.0
    dec.card.check_stream(250.0, LABELS, stream_name="demo")
    assert dec.card.classes[int(np.argmax(dec.predict(ssvep_window(10.0))))] == "10.0Hz"


def test_every_registered_runtime_module_registers_its_runtime() -> None:
    """A fresh process must find each card runtime's module from the static table alone."""
    import importlib

    from decoders import loader

    for runtime, module in loader.RUNTIME_MODULES.items():
        importlib.import_module(module)
        assert runtime in loader._FACTORIES, f"{module} did not register runtime {runtime!r}"


def test_unknown_runtime_in_a_card_is_a_clear_error(tmp_path: Path) -> None:
    from conftest import MODEL

    from decoders.card import embed_card, read_card
    from decoders.loader import load_decoder

    card = read_card(MODEL)
    bad = type(card).from_dict({**card.to_dict(), "provenance": {**card.provenance, "runtime": "quantum"}})
    model = onnx.load(str(MODEL))
    embed_card(model, bad)
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="runtime 'quantum'"):
        load_decoder(path)
