"""Dataset specs: parsing, reading FIF/XDF, epochs, and a clear error for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest

from acquisition.stream import StreamInfo
from acquisition.xdf_writer import XdfWriter
from app.cli import main as cli_main
from decoders.dataset import DatasetError, load_epochs, load_spec, read_recording
from tests.conftest import REPO

SFREQ = 128.0
CHANNELS = ["Oz", "O1", "O2"]


def write_fif(
    path: Path,
    *,
    sfreq: float = SFREQ,
    channels: list[str] | None = None,
    codes: list[str] | None = None,
    seconds: float = 20.0,
    seed: int = 0,
) -> Path:
    """A small FIF recording (volts) with annotations: one event per 2 s cycling through ``codes``."""
    chans = channels or CHANNELS
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    data = rng.normal(0.0, 10e-6, (len(chans), n))  # 10 µV
    raw = mne.io.RawArray(data, mne.create_info(chans, sfreq, "eeg"), verbose="error")
    codes = codes if codes is not None else ["1", "2"]
    onsets = np.arange(1.0, seconds - 2.0, 2.0)
    raw.set_annotations(
        mne.Annotations(onsets, [0.0] * len(onsets), [codes[i % len(codes)] for i in range(len(onsets))])
    )
    raw.save(path, overwrite=True, verbose="error")
    return path


def write_spec(
    path: Path, recordings: list[str], *, classes: dict[str, str] | None = None, extra: str = "", tmax: float = 1.0
) -> Path:
    cls = classes or {"left": "1", "right": "2"}
    text = f'paradigm = "mi"\n{extra}\n[epochs]\ntmin = 0.0\ntmax = {tmax}\n'
    for name, code in cls.items():
        text += f'\n[classes.{name}]\nevent = "{code}"\n'
    for i, r in enumerate(recordings):
        text += f'\n[[recordings]]\npath = "{r}"\ngroup = "g{i}"\n'
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- parsing
def test_ssvep_exo_spec_parses_with_classes_in_order(data_dir: Path) -> None:
    spec = load_spec(REPO / "tests" / "datasets" / "ssvep_exo_s01.toml")
    assert spec.paradigm == "ssvep"
    assert list(spec.classes) == ["13Hz", "17Hz", "21Hz", "rest"]
    assert spec.classes["17Hz"].event == "4" and spec.classes["17Hz"].frequency == 17.0
    assert spec.classes["rest"].frequency is None
    assert (spec.tmin, spec.tmax) == (1.0, 5.0)
    assert len(spec.recordings) == 2 and spec.groups == ["subject01"]
    rec = spec.recordings[0]
    assert rec.path.is_file() and rec.events is not None and rec.events.name.endswith("-eve.fif")
    assert spec.tables["ssvep"]["window_s"] == 2.0
    assert spec.scale == pytest.approx(1e-3)


def test_ssvep_exo_epochs_in_microvolts(data_dir: Path) -> None:
    spec = load_spec(REPO / "tests" / "datasets" / "ssvep_exo_s01.toml").with_recordings(
        load_spec(REPO / "tests" / "datasets" / "ssvep_exo_s01.toml").recordings[:1]
    )
    ep = load_epochs(spec)
    assert ep.X.shape == (32, 1024, 8) and ep.X.dtype == np.float32
    assert np.bincount(ep.y).tolist() == [8, 8, 8, 8]
    assert ep.ch_names[:3] == ["Oz", "O1", "O2"] and ep.sfreq == 256.0
    assert 1.0 < float(ep.X.std()) < 100.0  # µV, not raw mV or V
    # the first rest trial of subject01's first session starts at sample 3965 (MANIFEST events)
    assert ep.onset_s[0] == pytest.approx(3965 / 256.0)


def test_fif_with_annotations_reads_microvolts_and_cuts_epochs(tmp_path: Path) -> None:
    write_fif(tmp_path / "a_raw.fif")
    spec = load_spec(write_spec(tmp_path / "spec.toml", ["a_raw.fif"], extra="other_key_table = 1\n[mi]\nfoo = 2"))
    rec = read_recording(spec.recordings[0], spec)
    assert rec.ch_names == CHANNELS and rec.sfreq == SFREQ
    assert 5.0 < rec.data.std() < 20.0  # written as 10e-6 V
    assert [e.description for e in rec.events[:3]] == ["1", "2", "1"]
    ep = load_epochs(spec)
    assert ep.X.shape == (len(rec.events), int(SFREQ), 3)
    assert ep.classes == ("left", "right") and ep.y[:3].tolist() == [0, 1, 0]
    assert spec.tables["mi"] == {"foo": 2} and spec.tables["other_key_table"] == 1
    start = round(rec.events[1].onset_s * SFREQ)
    np.testing.assert_allclose(ep.X[1], rec.data[start : start + int(SFREQ)], rtol=1e-6)


def test_xdf_recording_with_marker_stream(tmp_path: Path) -> None:
    path = tmp_path / "rec.xdf"
    n = int(10 * SFREQ)
    data = np.random.default_rng(1).normal(0, 5.0, (n, 2)).astype(np.float32)
    ts = 100.0 + np.arange(n) / SFREQ
    with XdfWriter(path) as w:
        eeg = w.add_stream(StreamInfo.simple("EEG-x", "EEG", ["C3", "C4"], SFREQ, unit="microvolts"))
        mk = w.add_stream(StreamInfo.simple("Markers-x", "Markers", ["m"], 0.0, channel_format="string"))
        w.write_samples(eeg, data, ts)
        w.write_samples(mk, [["left"], ["right"], ["left"], ["right"]], np.array([101.0, 103.0, 105.0, 107.0]))
    spec_path = tmp_path / "x.toml"
    spec_path.write_text(
        'paradigm = "mi"\n[epochs]\ntmin = 0.0\ntmax = 1.0\n[classes.L]\nevent = "left"\n[classes.R]\nevent = "right"\n'
        '[[recordings]]\npath = "rec.xdf"\nstream = "EEG-x"\n',
        encoding="utf-8",
    )
    spec = load_spec(spec_path)
    assert spec.recordings[0].options == {"stream": "EEG-x"}
    ep = load_epochs(spec)
    assert ep.y.tolist() == [0, 1, 0, 1]
    assert ep.onset_s.tolist() == pytest.approx([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(ep.X[0], data[128:256], rtol=1e-6)


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


def test_missing_recording_file_names_spec_and_file(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path / "s.toml", ["missing_raw.fif"])
    with pytest.raises(DatasetError) as err:
        load_spec(spec_path)
    msg = str(err.value)
    assert "s.toml" in msg and "missing_raw.fif" in msg and "does not exist" in msg


def test_missing_events_file(tmp_path: Path) -> None:
    write_fif(tmp_path / "a_raw.fif")
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(
        'paradigm = "mi"\n[epochs]\ntmax = 1.0\n[classes.a]\nevent = "1"\n'
        '[[recordings]]\npath = "a_raw.fif"\nevents = "a-eve.fif"\n',
        encoding="utf-8",
    )
    with pytest.raises(DatasetError, match=r"events file .*a-eve\.fif.* does not exist"):
        load_spec(spec_path)


def test_unknown_event_code_lists_codes_found(tmp_path: Path) -> None:
    write_fif(tmp_path / "a_raw.fif", codes=["1", "2"])
    spec = load_spec(write_spec(tmp_path / "s.toml", ["a_raw.fif"], classes={"left": "1", "feet": "7"}))
    with pytest.raises(DatasetError) as err:
        load_epochs(spec)
    msg = str(err.value)
    assert "unknown event code" in msg and "'feet', '7'" in msg and "a_raw.fif" in msg and "'2'" in msg


def test_class_with_fewer_than_two_trials(tmp_path: Path) -> None:
    write_fif(tmp_path / "a_raw.fif", codes=["1"] * 7 + ["2"])  # 8 events: seven "1", one "2"
    spec = load_spec(write_spec(tmp_path / "s.toml", ["a_raw.fif"]))
    with pytest.raises(DatasetError) as err:
        load_epochs(spec)
    msg = str(err.value)
    assert "fewer than 2 trials" in msg and "('right', 1)" in msg and "a_raw.fif" in msg


def test_channel_sets_differ_between_recordings(tmp_path: Path) -> None:
    write_fif(tmp_path / "a_raw.fif")
    write_fif(tmp_path / "b_raw.fif", channels=["Oz", "O1", "Pz"])
    spec = load_spec(write_spec(tmp_path / "s.toml", ["a_raw.fif", "b_raw.fif"]))
    with pytest.raises(DatasetError) as err:
        load_epochs(spec)
    msg = str(err.value)
    assert "channel set differs" in msg and "b_raw.fif" in msg and "a_raw.fif" in msg and "'O2'" in msg


def test_same_channels_in_another_order_are_reordered(tmp_path: Path) -> None:
    write_fif(tmp_path / "a_raw.fif")
    write_fif(tmp_path / "b_raw.fif", channels=["O2", "Oz", "O1"], seed=3)
    spec = load_spec(write_spec(tmp_path / "s.toml", ["a_raw.fif", "b_raw.fif"]))
    ep = load_epochs(spec)
    b = read_recording(spec.recordings[1], spec)
    last = int(np.flatnonzero(ep.recording == 1)[0])
    start = round(ep.onset_s[last] * SFREQ)
    np.testing.assert_allclose(ep.X[last][:, 0], b.data[start : start + int(SFREQ), 1], rtol=1e-6)  # Oz


def test_sampling_rate_mismatch(tmp_path: Path) -> None:
    write_fif(tmp_path / "a_raw.fif")
    write_fif(tmp_path / "b_raw.fif", sfreq=256.0)
    spec = load_spec(write_spec(tmp_path / "s.toml", ["a_raw.fif", "b_raw.fif"]))
    with pytest.raises(DatasetError) as err:
        load_epochs(spec)
    msg = str(err.value)
    assert "sampling-rate mismatch" in msg and "256 Hz" in msg and "128 Hz" in msg and "b_raw.fif" in msg


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('paradigm = "ssvep"\n[epochs\n', "not valid TOML"),
        ('paradigm = "eeg"\n', "paradigm"),
        ('paradigm = "mi"\n[epochs]\ntmin = 2.0\ntmax = 1.0\n', "tmax"),
        ('paradigm = "mi"\n[epochs]\ntmax = 1.0\n', "no classes"),
        ('paradigm = "mi"\n[epochs]\ntmax = 1.0\n[classes.a]\nfrequency = 3.0\n', "needs 'event'"),
        ('paradigm = "mi"\n[epochs]\ntmax = 1.0\n[classes.a]\nevent = "1"\n[classes.b]\nevent = 1\n', "same event"),
        ('paradigm = "mi"\n[epochs]\ntmax = 1.0\n[classes.a]\nevent = "1"\n', "no recordings"),
    ],
)
def test_bad_spec_keys(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=problem) as err:
        load_spec(path)
    assert "bad.toml" in str(err.value)


def test_unknown_recording_format(tmp_path: Path) -> None:
    (tmp_path / "rec.csv").write_text("1,2\n", encoding="utf-8")
    spec = load_spec(write_spec(tmp_path / "s.toml", ["rec.csv"]))
    with pytest.raises(DatasetError, match=r"unknown recording format '\.csv'"):
        read_recording(spec.recordings[0], spec)


def test_cli_reports_bad_spec_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_fif(tmp_path / "a_raw.fif")
    write_fif(tmp_path / "b_raw.fif", sfreq=256.0)
    spec = write_spec(tmp_path / "s.toml", ["a_raw.fif", "b_raw.fif"], extra="")
    spec.write_text(spec.read_text(encoding="utf-8").replace('paradigm = "mi"', 'paradigm = "ssvep"'), encoding="utf-8")
    text = spec.read_text(encoding="utf-8").replace('event = "1"\n', 'event = "1"\nfrequency = 13.0\n')
    spec.write_text(text.replace('event = "2"\n', 'event = "2"\nfrequency = 17.0\n'), encoding="utf-8")
    code = cli_main(["train", "ssvep", "--dataset", str(spec), "--method", "fbcca", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert "sampling-rate mismatch" in err and "b_raw.fif" in err and "s.toml" in err
    assert not (tmp_path / "m.onnx").exists()


def test_format_metrics_prints_regression_and_detection_results_without_a_confusion_matrix() -> None:
    from decoders.report import format_metrics

    text = format_metrics({"r2": 0.71, "correlation": 0.85, "nrmse": 0.52, "maae": 0.4, "per_dim": [0.7, 0.72]})
    assert "r2" in text and "0.71" in text and "nrmse" in text and "[0.7, 0.72]" in text
    text = format_metrics(
        {"precision": 0.25, "recall": 0.87, "f1": 0.38, "median_delay_s": 0.45, "detections": {"a.fif": [[1, 2]] * 3}}
    )
    assert "f1" in text and "0.38" in text and "3 items over 1 entries" in text
