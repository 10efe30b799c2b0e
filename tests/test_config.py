"""Config validation: every error names the key path, the expectation and what was found."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from app.config import ConfigError, load_config, parse_config

BASE = {
    "sources": {"eeg": {"kind": "sim", "scenario": "ssvep"}},
    "pipelines": {"p": {"source": "eeg", "model": "m.onnx"}},
}


def _with(**patch: object) -> dict:
    import copy

    d = copy.deepcopy(BASE)
    for dotted, value in patch.items():
        keys = dotted.split("__")
        t = d
        for k in keys[:-1]:
            t = t.setdefault(k, {})
        if value is None:
            t.pop(keys[-1], None)
        else:
            t[keys[-1]] = value
    return d


def test_demo_config_is_valid_and_resolves_paths() -> None:
    cfg = load_config(REPO / "configs" / "demo.toml")
    assert cfg.sources["eeg"].kind == "sim"
    assert cfg.pipelines["ssvep"].model == (REPO / "configs" / "../models/ssvep_reference.onnx")
    assert cfg.pipelines["ssvep"].model.resolve().is_file()
    assert cfg.outputs["commands"].kind == "lsl"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"sources__eeg__kind": "usb"},
            r"'sources.eeg.kind' must be one of \['sim', 'lsl', 'brainflow', 'replay'\], found 'usb'",
        ),
        ({"sources__eeg__kind": None}, r"'sources.eeg.kind' is required but missing"),
        ({"sources__eeg__scenario": "dance"}, r"'sources.eeg.scenario' must be one of .* found 'dance'"),
        ({"sources__eeg__seed": "one"}, r"'sources.eeg.seed' must be an integer, found 'one'"),
        ({"sources__eeg__srate": -5}, r"'sources.eeg.srate' must be > 0, found -5"),
        ({"sources__eeg__colour": "red"}, r"table 'sources.eeg' has unknown key\(s\) \['colour'\]"),
        ({"sources__eeg": {"kind": "lsl"}}, r"'sources.eeg' \(kind 'lsl'\) needs at least one of"),
        ({"pipelines__p__source": "emg"}, r"'pipelines.p.source' names source 'emg', but only \['eeg'\]"),
        ({"pipelines__p__model": None}, r"'pipelines.p.model' is required"),
        ({"pipelines__p__hop_s": 0}, r"'pipelines.p.hop_s' must be > 0, found 0"),
        ({"pipelines__p__hop_s": True}, r"'pipelines.p.hop_s' must be a number, found True"),
        ({"pipelines__p__catch_up": "never"}, r"'pipelines.p.catch_up' must be 'latest' or 'all', found 'never'"),
        ({"pipelines__p__bandpass_hz": [1]}, r"'pipelines.p.bandpass_hz' must be \[low, high\]"),
        ({"pipelines__p__min_confidence": 2}, r"'pipelines.p.min_confidence' must be between 0 and 1"),
        ({"outputs": {"o": {"kind": "laser"}}}, r"'outputs.o.kind' must be one of \['lsl', 'teleop', .*found 'laser'"),
        ({"recording": {"flush_interval_s": 5}}, r"'recording.flush_interval_s' must be in \(0, 1\] s, found 5"),
        ({"session": {"duration_s": "long"}}, r"'session.duration_s' must be a number, found 'long'"),
        ({"sources": {}}, r"'sources' must define at least one source"),
        ({"extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ],
)
def test_errors_name_key_expectation_and_value(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_with(**patch))


def test_malformed_toml_reports_the_file_and_position(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[sources.eeg]\nkind = "sim\n')
    with pytest.raises(ConfigError, match=r"bad.toml' is not valid TOML: .*line 2"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_relative_paths_are_resolved_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.toml"
    p.write_text('[sources.x]\nkind = "replay"\npath = "rec.xdf"\n[pipelines.q]\nsource = "x"\nmodel = "../m.onnx"\n')
    cfg = load_config(p)
    assert cfg.pipelines["q"].model.resolve() == (tmp_path / "m.onnx").resolve()
    assert cfg.base_dir == (tmp_path / "sub").resolve()
