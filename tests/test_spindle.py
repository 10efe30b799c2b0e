"""Spindle detection (issue 4, Portiloop): front end, detector, ONNX runtime, training + evaluation on DREAMS.

Real data: DREAMS excerpts 2 and 1, cut to their first 300 s by benchmarks/convert_dreams.py into a
temporary folder next to a copy of tests/datasets/dreams_spindles_tiny.toml. Training is tiny (40 steps);
the tests check the plumbing and the causal/online guarantees, the benchmark checks the quality.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from app.cli import main as cli_main
from app.pipeline import Pipeline, PipelineSettings
from decoders.card import ModelCard, embed_card, read_card
from decoders.dataset import load_spec
from decoders.loader import load_decoder
from decoders.spindle.data import SpindleOptions, load_spindle_recordings
from decoders.spindle.detector import DecisionLog, DetectorSettings, EventTracker, OrtStepModel, SpindleDetector
from decoders.spindle.events import match_events, merge_intervals, score_events
from decoders.spindle.online import events_from_commands
from decoders.spindle.preprocessing import (
    FrontEndSettings,
    SpindleFrontEnd,
    StreamingResampler,
    UnsupportedRateError,
    resampling_ratio,
)
from decoders.spindle.runtime import SpindleGruDecoder
from decoders.spindle.variant import main as variant_main
from decoders.spindle.variant import with_detector_settings
from tests.conftest import DATA, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from convert_dreams import convert

TINY_SPEC = REPO / "tests" / "datasets" / "dreams_spindles_tiny.toml"
CROP_S = 300.0


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted excerpts 2 and 1 (first 300 s) and a copy of the shipped tiny spec next to them."""
    src = DATA / "dreams_spindles"
    if not src.is_dir():
        pytest.skip(f"DREAMS recordings folder {src} is absent (it ships only with the development machines)")
    work = tmp_path_factory.mktemp("dreams")
    convert(src, work / "dreams_fif", [2, 1], CROP_S)
    spec = work / TINY_SPEC.name
    shutil.copy(TINY_SPEC, spec)
    return spec


@pytest.fixture(scope="module")
def trained_model(tiny_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`closedloop train spindle --method portiloop` on the tiny spec."""
    out = tmp_path_factory.mktemp("model") / "spindle.onnx"
    assert cli_main(["train", "spindle", "--dataset", str(tiny_spec), "--method", "portiloop", "--out", str(out)]) == 0
    return out


def with_threshold(model: Path, out: Path, threshold: float, **detector: object) -> Path:
    """Copy of ``model`` whose card sets another detector threshold (and other detector settings)."""
    with_detector_settings(model, out, threshold=threshold, **detector)
    return out


def busy_threshold(model: Path, signal: np.ndarray, sfreq: float) -> float:
    """A threshold at which the (barely trained) network detects several events in ``signal``."""
    card = read_card(model)
    det = SpindleDetector(OrtStepModel(model), sfreq, FrontEndSettings.from_card(card.preprocessing, "test"))
    prob = det.process(signal).prob
    return float(np.clip(np.percentile(prob, 93), 0.01, 0.99))


# ------------------------------------------------------------------------------- front end (no data)
@pytest.mark.parametrize("srate", [50.0, 100.0, 200.0, 250.0, 256.0, 500.0, 1000.0])
def test_front_end_is_chunk_invariant_and_causal(srate: float) -> None:
    rng = np.random.default_rng(3)
    n = int(srate * 12)
    t = np.arange(n) / srate
    x = 40.0 + rng.normal(0, 15, n) + 30 * np.sin(2 * np.pi * 13 * t) + 20 * np.sin(2 * np.pi * 50 * t)
    whole = SpindleFrontEnd(srate)(x)
    assert whole.size == pytest.approx(n * 250.0 / srate, abs=1)
    fe = SpindleFrontEnd(srate)
    parts, i = [], 0
    for size in rng.integers(0, 37, 10_000):  # chunks of 0..36 samples, empty ones included
        parts.append(fe(x[i : i + size]))
        i += int(size)
        if i >= n:
            break
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-9)
    # causal: changing the future leaves the past untouched
    y = x.copy()
    y[n // 2 :] += 500.0
    changed = SpindleFrontEnd(srate)(y)
    cut = int((n // 2) * 250.0 / srate) - 1
    np.testing.assert_array_equal(changed[:cut], whole[:cut])


def test_resampler_keeps_the_sigma_band_and_standardizes() -> None:
    srate = 200.0
    t = np.arange(int(srate * 60)) / srate
    x = 25.0 * np.sin(2 * np.pi * 13.0 * t)
    y = StreamingResampler(srate)(x)
    assert np.std(y[1000:]) * np.sqrt(2) == pytest.approx(25.0, rel=0.02)  # pass band gain ~1 at 13 Hz
    z = SpindleFrontEnd(srate)(x + 100.0)
    assert abs(z[-2500:].mean()) < 0.1 and np.std(z[-2500:]) == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("srate", [40.0, 250.3, 10.0, float("inf")])
def test_unsupported_rate_is_a_clear_error(srate: float) -> None:
    with pytest.raises(UnsupportedRateError, match=r"unsupported sampling rate .* for spindle detection"):
        resampling_ratio(srate, "stream 'eeg'")
    with pytest.raises(UnsupportedRateError, match="stream 'eeg'"):
        resampling_ratio(srate, "stream 'eeg'")


def test_supported_rates_reduce_to_small_ratios() -> None:
    assert resampling_ratio(200.0) == (5, 4)
    assert resampling_ratio(256.0) == (125, 128)
    assert resampling_ratio(1000) == (1, 4)


# ------------------------------------------------------------------------------ events and triggers
def test_event_matching_is_one_to_one_at_iou_0_2() -> None:
    ref = [[10.0, 11.0], [20.0, 21.0]]
    det = [[10.1, 11.1], [10.2, 10.9], [20.9, 22.0], [30.0, 31.0]]
    pairs = match_events(det, ref)
    assert sorted(pairs) == [(0, 0)]  # [20.9, 22] overlaps 0.1 s of 1.1 s: IoU < 0.2
    s = score_events(det, ref)
    assert s["precision"] == 0.25 and s["recall"] == 0.5
    assert s["median_delay_s"] == pytest.approx(0.1)
    assert merge_intervals([[1, 2], [1.5, 3], [5, 6]]) == [[1.0, 3.0], [5.0, 6.0]]


def _run_tracker(settings: DetectorSettings, on_spans: list[tuple[int, int]], n: int = 2000) -> tuple[list, list, list]:
    tracker = EventTracker(settings)
    onsets, triggers = [], []
    prob = np.zeros(n)
    for a, b in on_spans:
        prob[a:b] = 0.9
    for k in range(n):
        o, t, _ = tracker.step(53 + 6 * k, float(prob[k]))
        if o:
            onsets.append(k)
        if t:
            triggers.append(k)
    return onsets, triggers, tracker.finish(53 + 6 * n)


def test_tracker_threshold_refractory_hold_and_trigger_variants() -> None:
    # decisions every 24 ms; spans in decision units. Spindles at 100, 400 (isolated), 460 (train), 1000
    spans = [(100, 130), (400, 420), (460, 480), (1000, 1030)]
    onsets, triggers, events = _run_tracker(DetectorSettings(), spans)
    assert onsets == [100, 400, 460, 1000] and triggers == onsets
    assert events[0] == (53 + 600, 53 + 6 * (130 + 6))  # ends at the 7th decision below threshold
    # a 2-decision dip does not split an event; a re-crossing within 0.4 s of the onset is not an onset
    onsets, _, events = _run_tracker(DetectorSettings(), [(100, 105), (107, 120)])
    assert onsets == [100] and len(events) == 1
    onsets, _, _ = _run_tracker(DetectorSettings(end_hold=1), [(100, 102), (104, 110), (130, 140)])
    assert onsets == [100, 130]  # 104 is within 0.4 s (16.7 decisions) of 100
    _, trig, _ = _run_tracker(DetectorSettings(trigger="isolated", isolation_s=3.0), spans)
    assert trig == [100, 400, 1000]  # 460 follows 400's end by < 3 s
    _, trig, _ = _run_tracker(DetectorSettings(trigger="trains", train_gap_s=4.0), spans)
    assert trig == [460]
    _, trig, _ = _run_tracker(DetectorSettings(trigger_delay_s=0.24), spans)
    assert trig == [110, 410, 470, 1010]  # 10 decisions = 240 ms after each onset


# ------------------------------------------------------------------------------------------ network
def test_onnx_step_matches_torch_with_hidden_state_carried(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from decoders.spindle.network import PortiloopNet, StepGraph, export_step

    torch.set_num_threads(1)  # 2 shared cores: thread oversubscription makes each tiny step ~100x slower
    torch.manual_seed(0)
    net = PortiloopNet().eval()
    path = tmp_path / "step.onnx"
    onnx.save(export_step(net), str(path))
    ort_step = OrtStepModel(path)
    graph = StepGraph(net).eval()
    rng = np.random.default_rng(0)
    h_o = np.zeros((7, 7), dtype=np.float32)
    h_t = torch.zeros(7, 7)
    worst = 0.0
    with torch.no_grad():
        for _ in range(300):
            w = rng.normal(0, 1.5, (7, 54)).astype(np.float32)
            p_o, h_o = ort_step.step(w, h_o)
            p_t, h_t = graph(torch.from_numpy(w), h_t)
            worst = max(worst, float(np.abs(p_o - p_t.numpy()).max()), float(np.abs(h_o - h_t.numpy()).max()))
    assert worst < 1e-4
    assert float(np.abs(h_o).max()) > 1e-3  # the state really moved
    # whole-sequence torch pass (used for threshold tuning) equals the stepwise run
    from decoders.spindle.network import sequence_probabilities

    z = rng.normal(0, 1, 250 * 20)
    det = SpindleDetector(ort_step, 250.0)
    det.front = _IdentityFront()  # type: ignore[assignment]
    log = det.process(z)
    np.testing.assert_allclose(sequence_probabilities(net, z), log.prob, atol=1e-4)


class _IdentityFront:
    """Stands in for the front end so a standardised signal reaches the network unchanged."""

    def __init__(self) -> None:
        self.n_output = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.n_output += x.size
        return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------- on DREAMS data
def test_converter_output_matches_the_shipped_spec(tiny_spec: Path) -> None:
    generated = load_spec(tiny_spec.parent / "dreams_fif" / "dreams_spindles.toml")
    shipped = load_spec(tiny_spec)
    assert [r.path for r in generated.recordings] == [r.path for r in shipped.recordings]
    opts = SpindleOptions.from_spec(shipped)
    recs = load_spindle_recordings(shipped, opts)
    assert [r.sfreq for r in recs] == [200.0, 100.0]
    assert [r.channel for r in recs] == ["CZ-A1", "C3-A1"]
    assert all(r.duration_s == CROP_S for r in recs)
    assert len(recs[1].reference) >= 1 and all(b > a for a, b in recs[1].reference)
    assert len(recs[0].automatic) >= 1


def test_train_and_evaluate_through_the_cli(
    trained_model: Path, tiny_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = read_card(trained_model)
    assert card.paradigm == "spindle" and card.provenance["runtime"] == "spindle-gru"
    assert card.srate == 200.0 and card.channel_labels == ("CZ-A1",)
    assert 0.0 < card.provenance["detector"]["threshold"] < 1.0
    capsys.readouterr()
    assert cli_main(["evaluate", str(trained_model), "--dataset", str(tiny_spec), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("precision", "recall", "f1", "median_delay_s", "detections"):
        assert key in result
    spec = load_spec(tiny_spec)
    recs = load_spindle_recordings(spec)
    assert set(result["detections"]) == {str(r.path) for r in recs}
    # the scores are exactly those of the reported detections against the reference
    total_tp = total_det = total_ref = 0
    for r in recs:
        det = result["detections"][str(r.path)]
        assert all(0 <= a <= b <= CROP_S + 1e-6 for a, b in det)
        s = score_events(det, r.reference)
        total_tp += s["n_matched"]
        total_det += s["n_detected"]
        total_ref += s["n_reference"]
    assert result["n_matched"] == total_tp and result["n_detected"] == total_det and result["n_reference"] == total_ref
    assert 0.0 <= result["f1"] <= 1.0


def test_streaming_runtime_equals_one_pass(trained_model: Path, tiny_spec: Path, tmp_path: Path) -> None:
    rec = load_spindle_recordings(load_spec(tiny_spec))[0]  # excerpt 2, 200 Hz
    x = rec.signal[: int(60 * rec.sfreq)]
    model = with_threshold(trained_model, tmp_path / "busy.onnx", busy_threshold(trained_model, x, rec.sfreq))
    card = read_card(model)
    step = OrtStepModel(model)
    from decoders.spindle.detector import detector_from_card

    front, settings = detector_from_card(model, card)
    one = SpindleDetector(step, rec.sfreq, front, settings)
    whole = one.process(x)
    events = one.events_s()
    assert len(events) >= 3, "the busy threshold should give several events"
    # the detector fed in random chunks (empty and single samples included)
    chunked = SpindleDetector(step, rec.sfreq, front, settings)
    rng = np.random.default_rng(5)
    logs, i = [], 0
    while i < x.size:
        size = int(rng.choice([0, 1, 2, 7, 40, 333]))
        logs.append(chunked.process(x[i : i + size]))
        i += size
    joined = DecisionLog.concat(logs)
    np.testing.assert_array_equal(joined.index, whole.index)
    np.testing.assert_allclose(joined.prob, whole.prob, atol=1e-5)
    np.testing.assert_array_equal(joined.onset, whole.onset)
    np.testing.assert_array_equal(joined.active, whole.active)
    # the session runtime (load_decoder -> SpindleGruDecoder) inside a real Pipeline, fed in 10 ms chunks
    decoder = load_decoder(model)
    assert isinstance(decoder, SpindleGruDecoder)
    pipe = Pipeline(
        PipelineSettings("spindle", card.window_s, card.hop_s, catch_up="all"), decoder, rec.sfreq, n_input_channels=1
    )
    commands = []
    ts = np.arange(x.size) / rec.sfreq
    for a in range(0, x.size, 2):
        commands += pipe.process(x[a : a + 2, None].astype(np.float32), ts[a : a + 2])
    assert decoder.n_resyncs == 0
    assert all(c.kind == "event" for c in commands)
    assert sum(c.label == "spindle" for c in commands) == len(events)
    online = events_from_commands(commands, rec.sfreq)
    hop = pipe.hop / rec.sfreq
    assert len(online) == len(events)
    for (a, b), (c, d) in zip(online, events, strict=True):
        # online times are input-sample times: at most one hop later, or one input sample earlier
        assert -1 / rec.sfreq - 1e-9 <= a - c <= hop + 1e-9 and -1 / rec.sfreq - 1e-9 <= b - d <= hop + 1e-9
    # a live pipeline (catch_up = "latest") skips hops when chunks hold several; the decoder still sees every
    # sample (it finds the new ones by overlap) and reports each event at the end of the chunk that holds it
    decoder = load_decoder(model)
    assert isinstance(decoder, SpindleGruDecoder)
    live = Pipeline(
        PipelineSettings("spindle", card.window_s, card.hop_s, catch_up="latest"),
        decoder,
        rec.sfreq,
        n_input_channels=1,
    )
    chunk = 20  # 100 ms: 4 hop points per chunk, 3 of them skipped
    n_win = live.window  # first chunk = the first window exactly, so the decoder starts at sample 0 as offline
    commands = live.process(x[:n_win, None].astype(np.float32), ts[:n_win])
    for a in range(n_win, x.size, chunk):
        commands += live.process(x[a : a + chunk, None].astype(np.float32), ts[a : a + chunk])
    assert live.n_skipped_stale > 0 and decoder.n_resyncs == 0
    last = commands[-1].sample_index  # every sample up to the last decision reached the detector, once
    assert decoder.detector.n_model_samples == len(SpindleFrontEnd(rec.sfreq)(x[: last + 1]))
    late = events_from_commands(commands, rec.sfreq)
    assert len(late) == len(events)
    for (a, _), (c, _) in zip(late, events, strict=True):
        assert -1 / rec.sfreq - 1e-9 <= a - c <= chunk / rec.sfreq + 1e-9


def test_unsupported_rate_recording_and_model_are_refused(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mne

    info = mne.create_info(["C3-A1"], 40.0, ch_types="eeg")
    raw = mne.io.RawArray(np.random.default_rng(0).normal(0, 2e-5, (1, 4000)), info, verbose="error")
    raw.set_annotations(mne.Annotations([10.0], [1.0], ["spindle"]))
    raw.save(tmp_path / "low_raw.fif", verbose="error")
    spec = tmp_path / "low.toml"
    spec.write_text('paradigm = "spindle"\n[[recordings]]\npath = "low_raw.fif"\n', encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["evaluate", str(trained_model), "--dataset", str(spec), "--json"]) == 2
    err = capsys.readouterr().err
    assert "unsupported sampling rate 40.0 Hz" in err and "low_raw.fif" in err
    # a card declaring an unsupported stream rate cannot be loaded
    d = read_card(trained_model).to_dict()
    d["srate"] = 250.3
    proto = onnx.load(str(trained_model))
    embed_card(proto, ModelCard.from_dict(d))
    bad = tmp_path / "bad_rate.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(UnsupportedRateError, match=r"bad_rate\.onnx.*250\.3 Hz"):
        load_decoder(bad)


def test_variant_tool_rewrites_the_detector_settings(trained_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "isolated.onnx"
    args = [str(trained_model), "--out", str(out), "--trigger", "isolated", "--trigger-delay-s", "0.2"]
    assert variant_main([*args, "--srate", "250"]) == 0
    card = read_card(out)
    assert card.srate == 250.0
    assert card.provenance["detector"]["trigger"] == "isolated"
    assert card.provenance["detector"]["trigger_delay_s"] == 0.2
    decoder = load_decoder(out)
    assert isinstance(decoder, SpindleGruDecoder) and decoder.detector.settings.trigger == "isolated"
    assert variant_main([str(trained_model), "--out", str(out), "--threshold", "1.5"]) == 2
    assert variant_main([str(trained_model), "--out", str(out), "--srate", "33"]) == 2


def test_bad_spindle_options_name_the_key(tmp_path: Path) -> None:
    import mne

    from decoders.dataset import DatasetError

    info = mne.create_info(["Cz"], 200.0, ch_types="eeg")
    mne.io.RawArray(np.zeros((1, 2000)), info, verbose="error").save(tmp_path / "a_raw.fif", verbose="error")
    for table, match in (
        ("iterations = 0", r"\[spindle\] iterations must be >= 1"),
        ('trigger_delay_s = "x"', r"\[spindle\] trigger_delay_s must be a number >= 0"),
        ("speed = 2", r"unknown key\(s\) \['speed'\]"),
        ("input_srate = 44.0", r"input_srate: unsupported sampling rate 44.0 Hz"),
    ):
        spec = tmp_path / "s.toml"
        spec.write_text(f'paradigm = "spindle"\n[spindle]\n{table}\n[[recordings]]\npath = "a_raw.fif"\n')
        with pytest.raises(DatasetError, match=match):
            SpindleOptions.from_spec(load_spec(spec))
    spec.write_text('paradigm = "spindle"\n[spindle]\nchannel = "C3"\n[[recordings]]\npath = "a_raw.fif"\n')
    with pytest.raises(DatasetError, match=r"channel 'C3' .* is not in it; it has \['Cz'\]"):
        load_spindle_recordings(load_spec(spec))
