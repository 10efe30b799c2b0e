"""Pipeline: chunk invariance against offline scipy, decision placement, NaN policy, commands."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL
from scipy import signal

from app.pipeline import CausalFilter, Command, FilterSettings, Pipeline, PipelineSettings, select_channels
from decoders.onnx_decoder import OnnxDecoder


class WindowEcho:
    """A transparent decoder: returns the window's last row, so tests can see exactly what it got."""

    def __init__(self, n_channels: int) -> None:
        self.card = type("Card", (), {"classes": tuple(f"c{i}" for i in range(n_channels)), "output": "continuous"})()
        self.windows: list[np.ndarray] = []

    def predict(self, window: np.ndarray) -> np.ndarray:
        assert np.isfinite(window).all()  # test-only check: the policy says no NaN ever reaches a decoder
        self.windows.append(window.copy())
        return window[-1].astype(np.float64)


def _signal(n: int, ch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, ch)) * 10 + 5).astype(np.float32)
    return x, np.arange(n) / 250.0


def _run(pipe: Pipeline, x: np.ndarray, ts: np.ndarray, sizes: list[int]) -> list[Command]:
    out, i = [], 0
    for s in sizes:
        out += pipe.process(x[i : i + s], ts[i : i + s])
        i += s
    out += pipe.process(x[i:], ts[i:])
    return out


FILT = FilterSettings((5.0, 45.0), 4, 50.0)


def _pipe(ch: int = 3, catch_up: str = "all", decoder: object | None = None) -> Pipeline:
    settings = PipelineSettings("p", window_s=0.2, hop_s=0.04, filters=FILT, catch_up=catch_up)
    return Pipeline(settings, decoder or WindowEcho(ch), 250.0, ch, clock=lambda: 0.0)  # type: ignore[arg-type]


def test_filter_matches_offline_scipy_for_any_chunking() -> None:
    x, _ = _signal(2000, 3)
    f = CausalFilter(FILT, 250.0, 3)
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(np.arange(1, 2000), 40, replace=False))
    pieces = [f(p) for p in np.split(x, cuts)] + [f(x[:0])]  # includes an empty chunk
    online = np.concatenate(pieces)
    sos = FILT.design(250.0)
    zi = signal.sosfilt_zi(sos)[:, :, None] * x[0].astype(np.float64)[None, None, :]
    offline, _ = signal.sosfilt(sos, x.astype(np.float64), axis=0, zi=zi)
    np.testing.assert_allclose(online, offline.astype(np.float32), rtol=1e-5, atol=1e-4)


def test_small_chunk_path_equals_sosfilt() -> None:
    x, _ = _signal(600, 4)
    f = CausalFilter(FILT, 250.0, 4)
    pieces, i = [], 0
    for n in [1, 2, 1, 1, 3, 2, 50, 1, 2] * 20:
        pieces.append(f(x[i : i + n]))
        i += n
        if i >= 600:
            break
    online = np.concatenate(pieces)
    sos = FILT.design(250.0)
    zi = signal.sosfilt_zi(sos)[:, :, None] * x[0].astype(np.float64)[None, None, :]
    offline, _ = signal.sosfilt(sos, x[:i].astype(np.float64), axis=0, zi=zi)
    np.testing.assert_allclose(online, offline.astype(np.float32), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("sizes", [[2000], [1] * 300, [7, 13, 0, 50, 1, 99, 0, 333], [10] * 150])
def test_decisions_are_chunk_invariant(sizes: list[int]) -> None:
    x, ts = _signal(2000, 3)
    ref = _run(_pipe(), x, ts, [2000])
    got = _run(_pipe(), x, ts, sizes)
    assert [c.sample_index for c in got] == [c.sample_index for c in ref]
    np.testing.assert_allclose([c.values for c in got], [c.values for c in ref], rtol=1e-5, atol=1e-4)
    assert [c.sample_time for c in got] == [c.sample_time for c in ref]


def test_decision_points_every_hop_once_the_window_is_full() -> None:
    x, ts = _signal(1000, 2)
    dec = WindowEcho(2)
    cmds = _run(_pipe(2, decoder=dec), x, ts, [1000])
    window, hop = 50, 10
    assert [c.sample_index for c in cmds] == list(range(window - 1, 1000, hop))
    assert [c.seq for c in cmds] == list(range(len(cmds)))
    assert all(w.shape == (window, 2) for w in dec.windows)
    # the window handed to the decoder is the newest filtered samples, oldest first
    filt = CausalFilter(FILT, 250.0, 2)(x)
    np.testing.assert_allclose(
        dec.windows[3], filt[cmds[3].sample_index - window + 1 : cmds[3].sample_index + 1], rtol=1e-5, atol=1e-4
    )
    assert cmds[3].sample_time == ts[cmds[3].sample_index]


def test_latest_mode_decides_on_newest_and_counts_skipped() -> None:
    x, ts = _signal(1000, 2)
    pipe = _pipe(2, catch_up="latest")
    cmds = pipe.process(x, ts)
    assert len(cmds) == 1 and cmds[0].sample_index == 999 - ((999 - 49) % 10)
    assert pipe.n_skipped_stale == len(range(49, 1000, 10)) - 1


def test_nonfinite_samples_never_reach_the_decoder_and_suppress_decisions() -> None:
    x, ts = _signal(1500, 3)
    x[600, 1] = np.nan
    x[601:603, :] = np.inf
    dec = WindowEcho(3)
    pipe = _pipe(3, decoder=dec)
    cmds = _run(pipe, x, ts, [100] * 15)
    assert pipe.n_nonfinite_samples == 3
    assert pipe.n_suppressed_nonfinite > 0
    idx = [c.sample_index for c in cmds]
    # no decision whose window or settling span (2 windows) contains a replaced sample
    assert not any(602 <= i < 602 + 100 for i in idx)
    assert any(i > 702 for i in idx)  # decisions resume after the suppression span
    assert all(np.isfinite(c.values).all() for c in cmds)


def test_wrong_channel_count_is_a_clear_error() -> None:
    pipe = _pipe(3)
    with pytest.raises(ValueError, match=r"expects chunks of shape \(n, 3\)"):
        pipe.process(np.zeros((5, 4), np.float32), np.zeros(5))


def test_filter_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        FilterSettings((5.0, 200.0)).design(250.0)
    with pytest.raises(ValueError, match="below high edge"):
        FilterSettings((30.0, 10.0)).design(250.0)
    with pytest.raises(ValueError, match="notch_hz"):
        FilterSettings(None, 4, 300.0).design(250.0)
    assert FilterSettings().design(250.0) is None
    with pytest.raises(ValueError, match="catch_up"):
        PipelineSettings("p", 1.0, 0.1, catch_up="sometimes")


def test_command_json_round_trip() -> None:
    c = Command("p", 3, "discrete", 10.0, 10.002, "8.0Hz", (0.75, 0.25), ("8.0Hz", "10.0Hz"), 499)
    back = Command.from_json(c.to_json())
    assert back == c
    assert c.latency == pytest.approx(0.002)
    assert c.confidence == 0.75


def test_real_onnx_decoder_in_pipeline_picks_the_stimulus_frequency() -> None:
    dec = OnnxDecoder(MODEL)
    card = dec.card
    n = int(6 * card.srate)
    t = np.arange(n) / card.srate
    rng = np.random.default_rng(3)
    x = (3 * np.sin(2 * np.pi * 12.0 * t)[:, None] + rng.standard_normal((n, card.n_channels))).astype(np.float32)
    settings = PipelineSettings("ssvep", card.window_s, 0.25, FilterSettings((5.0, 45.0)), catch_up="all")
    pipe = Pipeline(settings, dec, card.srate, card.n_channels)
    cmds = _run(pipe, x, t, [37] * 40)
    late = [c for c in cmds if c.sample_index > 2 * card.n_window_samples]
    assert late and all(c.label == "12.0Hz" for c in late)
    assert all(abs(sum(c.values) - 1) < 1e-5 for c in cmds)


def test_min_confidence_withholds_the_label() -> None:
    dec = OnnxDecoder(MODEL)
    card = dec.card
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, card.n_channels)).astype(np.float32)
    settings = PipelineSettings(
        "s", card.window_s, 0.5, FilterSettings((5.0, 45.0)), catch_up="all", min_confidence=0.99
    )
    cmds = Pipeline(settings, dec, card.srate, card.n_channels).process(x, np.arange(1000) / card.srate)
    assert cmds and all(c.label is None for c in cmds)


def test_select_channels() -> None:
    assert select_channels(["a", "b", "c"], ["c", "a"], what="x") == (2, 0)
    with pytest.raises(ValueError, match=r"channels \['z'\] are not in the stream"):
        select_channels(["a", "b"], ["a", "z"], what="x")


def test_sliding_window_is_the_newest_samples_for_any_chunking() -> None:
    """The mirrored window equals the last ``length`` samples written, whatever the chunk sizes (even > length)."""
    from app.pipeline import SlidingWindow

    rng = np.random.default_rng(5)
    sw = SlidingWindow(7, 3)
    written = np.zeros((0, 3), dtype=np.float32)
    stamps = np.zeros(0)
    for size in [1, 2, 3, 7, 8, 1, 15, 4, 6, 1, 1, 9]:
        x = rng.standard_normal((size, 3)).astype(np.float32)
        t = np.arange(len(stamps), len(stamps) + size, dtype=float)
        sw.write(x, t)
        written, stamps = np.vstack([written, x]), np.concatenate([stamps, t])
        assert sw.counter == len(written)
        if len(written) >= 7:
            view, last = sw.window()
            np.testing.assert_array_equal(view, written[-7:])
            assert last == stamps[-1] and view.flags.c_contiguous and not view.flags.writeable
