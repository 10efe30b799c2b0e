"""Dataset specs: one TOML format that tells training and evaluation where the recordings are.

A spec names the paradigm, the epoch window around each event, the classes (event code or
annotation/marker text per class) and the recordings::

    paradigm = "ssvep"                  # ssvep | mi | emg | spindle | continuous
    root = "../../shared/data/ssvep_exo"  # optional; prepended to recording paths (relative to the spec)
    scale = 1e-3                        # optional; multiplies the data after conversion to µV
    channels = ["Oz", "O1", "O2"]       # optional; pick (and order) these channels in every recording

    [epochs]
    tmin = 0.0                          # s relative to each event
    tmax = 5.0

    [classes.13Hz]                      # one table per class, order kept
    event = "2"                         # event code, annotation description or XDF marker string
    frequency = 13.0                    # SSVEP only

    [[recordings]]
    path = "subject01/record-[2012.07.06-19.02.16]_raw.fif"   # EDF/BDF/GDF/FIF (mne), XDF (pyxdf)
    events = "subject01/record-[2012.07.06-19.02.16]-eve.fif" # optional; else annotations / marker stream
    group = "subject01"                 # optional; cross-validation folds never split a group
    # any other key is kept in RecordingSpec.options, e.g. stream = "EEG name", marker_stream = "Markers",
    # scale = 1.0 (overrides the top-level scale)

    [ssvep]                             # any other table is kept raw in DatasetSpec.tables
    window_s = 2.0

Data come out as float64 samples × channels in µV (mne's volts × 1e6; XDF channels in the unit
their header states, µV when it states none), times ``scale``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PARADIGMS",
    "ClassSpec",
    "DatasetError",
    "DatasetSpec",
    "Epochs",
    "Event",
    "Recording",
    "RecordingSpec",
    "check_compatible",
    "load_epochs",
    "load_spec",
    "read_recording",
]

PARADIGMS = ("ssvep", "mi", "emg", "spindle", "continuous")

#: Readers by file suffix (lower case).
MNE_SUFFIXES = {".fif": "fif", ".edf": "edf", ".bdf": "bdf", ".gdf": "gdf"}
XDF_SUFFIXES = (".xdf", ".xdfz")

#: Multiplier to µV for units an XDF channel header may state.
_XDF_UNIT_TO_UV = {
    "": 1.0,
    "microvolts": 1.0,
    "microvolt": 1.0,
    "uv": 1.0,
    "µv": 1.0,
    "millivolts": 1e3,
    "millivolt": 1e3,
    "mv": 1e3,
    "volts": 1e6,
    "volt": 1e6,
    "v": 1e6,
}

_TOP_KEYS = {"paradigm", "epochs", "classes", "recordings", "root", "scale", "channels", "name"}
_RECORDING_KEYS = {"path", "events", "group"}


class DatasetError(ValueError):
    """A dataset spec or one of its recordings is unusable; the message names the spec, the file and the problem."""


# ---------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class ClassSpec:
    """One class: its name, the event that marks its trials, and (SSVEP) its stimulus frequency in Hz."""

    name: str
    event: str
    frequency: float | None = None


@dataclass(frozen=True)
class RecordingSpec:
    """One recording file.

    Attributes
    ----------
    path : Path
        The recording (absolute, resolved against the spec's folder and ``root``).
    events : Path or None
        Separate events file (mne ``-eve.fif`` / text events, or a BIDS-like ``.tsv`` with
        ``onset``, ``duration`` and ``trial_type``/``value`` columns); None: use annotations or
        the XDF marker stream.
    group : str
        Cross-validation group (a subject or session); folds never split a group.
    options : dict
        Every other key of the ``[[recordings]]`` entry (``stream``, ``stream_type``,
        ``marker_stream``, ``scale`` ...).
    """

    path: Path
    events: Path | None = None
    group: str = ""
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec (see the module docstring for the TOML format).

    Attributes
    ----------
    path : Path
        The spec file.
    paradigm : str
    tmin, tmax : float
        Epoch window in s relative to each event (``tmax > tmin``).
    classes : dict of str to ClassSpec
        In the order the spec lists them.
    recordings : list of RecordingSpec
    tables : dict
        Every other top-level table, raw (e.g. ``tables["ssvep"]``, ``tables["emg"]``).
    scale : float
        Multiplier applied to the data after conversion to µV (a recording's ``scale`` option wins).
    channels : tuple of str or None
        Channels to pick, in this order, from every recording; None keeps all.
    """

    path: Path
    paradigm: str
    tmin: float
    tmax: float
    classes: dict[str, ClassSpec]
    recordings: list[RecordingSpec]
    tables: dict[str, Any] = field(default_factory=dict)
    scale: float = 1.0
    channels: tuple[str, ...] | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in spec order."""
        return tuple(self.classes)

    @property
    def groups(self) -> list[str]:
        """Distinct recording groups in first-seen order."""
        seen: list[str] = []
        for r in self.recordings:
            if r.group not in seen:
                seen.append(r.group)
        return seen

    def with_recordings(self, recordings: Sequence[RecordingSpec]) -> DatasetSpec:
        """A copy holding only ``recordings`` (e.g. one subject's)."""
        return replace(self, recordings=list(recordings))

    def with_groups(self, groups: Sequence[str]) -> DatasetSpec:
        """A copy holding only the recordings whose group is in ``groups``."""
        wanted = set(groups)
        return self.with_recordings([r for r in self.recordings if r.group in wanted])

    def with_classes(self, names: Sequence[str]) -> DatasetSpec:
        """A copy holding only the named classes, in the given order."""
        missing = [n for n in names if n not in self.classes]
        if missing:
            raise DatasetError(
                f"dataset spec {str(self.path)!r}: no class(es) {missing}; classes: {list(self.classes)}."
            )
        return replace(self, classes={n: self.classes[n] for n in names})

    def table(self, name: str) -> dict[str, Any]:
        """The raw table ``[name]`` (empty dict when absent)."""
        t = self.tables.get(name, {})
        return dict(t) if isinstance(t, dict) else {}


def _err(spec_path: Path | str, problem: str, recording: Path | str | None = None) -> DatasetError:
    where = f"dataset spec {str(spec_path)!r}"
    if recording is not None:
        where += f", recording {str(recording)!r}"
    return DatasetError(f"{where}: {problem}")


def _number(value: Any, key: str, spec_path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise _err(spec_path, f"key {key!r} must be a finite number, got {value!r}.")
    return float(value)


def load_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """Read and validate a dataset spec (TOML).

    Parameters
    ----------
    path : str or path-like
        The spec file. Recording paths in it are relative to its folder (after ``root``).

    Returns
    -------
    DatasetSpec

    Raises
    ------
    DatasetError
        Missing spec or recording/events file, TOML syntax error, unknown paradigm, missing or
        bad ``[epochs]``, no classes, no recordings, a class without ``event``, two classes with
        the same event. The message names the spec file, the key and the problem.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset spec {str(p)!r} does not exist (or is not a file).")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise _err(p, f"not valid TOML: {err}.") from err
    paradigm = doc.get("paradigm")
    if paradigm not in PARADIGMS:
        raise _err(p, f"key 'paradigm' must be one of {list(PARADIGMS)}, got {paradigm!r}.")

    epochs = doc.get("epochs", {})
    if not isinstance(epochs, dict):
        raise _err(p, f"[epochs] must be a table with tmin and tmax in s, got {epochs!r}.")
    tmin = _number(epochs.get("tmin", 0.0), "epochs.tmin", p)
    if "tmax" not in epochs and paradigm not in ("continuous", "spindle"):
        raise _err(p, "[epochs] needs 'tmax' (s after each event where an epoch ends).")
    tmax = _number(epochs.get("tmax", tmin + 1.0), "epochs.tmax", p)
    if tmax <= tmin:
        raise _err(p, f"[epochs] tmax ({tmax} s) must be greater than tmin ({tmin} s).")

    raw_classes = doc.get("classes", {})
    if not isinstance(raw_classes, dict):
        raise _err(p, f"[classes] must hold one table per class ([classes.NAME] event = ...), got {raw_classes!r}.")
    classes: dict[str, ClassSpec] = {}
    seen_events: dict[str, str] = {}
    for name, table in raw_classes.items():
        if not isinstance(table, dict) or "event" not in table:
            raise _err(p, f"[classes.{name}] needs 'event' (event code, annotation or marker text), got {table!r}.")
        ev = table["event"]
        if isinstance(ev, bool) or not isinstance(ev, str | int):
            raise _err(p, f"[classes.{name}] event must be a string or integer code, got {ev!r}.")
        ev = str(ev)
        if ev in seen_events:
            raise _err(p, f"classes {seen_events[ev]!r} and {name!r} use the same event {ev!r}.")
        seen_events[ev] = name
        freq = table.get("frequency")
        if freq is not None:
            freq = _number(freq, f"classes.{name}.frequency", p)
            if freq <= 0:
                raise _err(p, f"[classes.{name}] frequency must be > 0 Hz, got {freq}.")
        unknown = sorted(set(table) - {"event", "frequency"})
        if unknown:
            raise _err(p, f"[classes.{name}] has unknown key(s) {unknown}; known: event, frequency.")
        classes[str(name)] = ClassSpec(str(name), ev, freq)
    if not classes and paradigm not in ("continuous", "spindle"):
        raise _err(p, "no classes: add one [classes.NAME] table per class with its event code.")

    root = doc.get("root", ".")
    if not isinstance(root, str):
        raise _err(p, f"key 'root' must be a path string, got {root!r}.")
    base = (p.parent / root).resolve()
    scale = _number(doc.get("scale", 1.0), "scale", p)
    if scale <= 0:
        raise _err(p, f"key 'scale' must be > 0, got {scale}.")
    channels = doc.get("channels")
    if channels is not None:
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise _err(p, f"key 'channels' must be a non-empty list of channel labels, got {channels!r}.")
        channels = tuple(channels)

    raw_recs = doc.get("recordings", [])
    if not isinstance(raw_recs, list) or not raw_recs:
        raise _err(p, "no recordings: add at least one [[recordings]] entry with a 'path'.")
    recordings: list[RecordingSpec] = []
    for i, r in enumerate(raw_recs):
        if not isinstance(r, dict) or not isinstance(r.get("path"), str):
            raise _err(p, f"[[recordings]] entry {i} needs a 'path' string, got {r!r}.")
        rpath = base / r["path"]
        if not rpath.is_file():
            raise _err(p, "recording file does not exist.", rpath)
        epath: Path | None = None
        if r.get("events") is not None:
            if not isinstance(r["events"], str):
                raise _err(p, f"[[recordings]] entry {i} 'events' must be a path string, got {r['events']!r}.")
            epath = base / r["events"]
            if not epath.is_file():
                raise _err(p, f"events file {str(epath)!r} does not exist.", rpath)
        group = r.get("group", rpath.stem)
        if not isinstance(group, str | int):
            raise _err(p, f"[[recordings]] entry {i} 'group' must be a string, got {group!r}.")
        options = {k: v for k, v in r.items() if k not in _RECORDING_KEYS}
        recordings.append(RecordingSpec(rpath, epath, str(group), options))

    tables = {k: v for k, v in doc.items() if k not in _TOP_KEYS}
    return DatasetSpec(p.resolve(), str(paradigm), tmin, tmax, classes, recordings, tables, scale, channels)


# ---------------------------------------------------------------------------------------------- recordings
@dataclass(frozen=True)
class Event:
    """One event: onset in s from the first sample of the recording, duration in s, description (code or text)."""

    onset_s: float
    duration_s: float
    description: str


@dataclass(frozen=True, eq=False)
class Recording:
    """One loaded recording.

    Attributes
    ----------
    path : Path
    data : ndarray, shape (n_samples, n_channels), float64, µV (times the spec's scale)
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str
    events : list of Event
        Sorted by onset.
    """

    path: Path
    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    events: list[Event]

    @property
    def duration_s(self) -> float:
        """Length in s."""
        return self.data.shape[0] / self.sfreq


def _read_mne(rec: RecordingSpec, spec: DatasetSpec) -> tuple[np.ndarray, float, list[str], list[Event], int]:
    import mne

    kind = MNE_SUFFIXES[rec.path.suffix.lower()]
    readers: dict[str, Callable[..., Any]] = {
        "fif": mne.io.read_raw_fif,
        "edf": mne.io.read_raw_edf,
        "bdf": mne.io.read_raw_bdf,
        "gdf": mne.io.read_raw_gdf,
    }
    try:
        raw = readers[kind](str(rec.path), preload=True, verbose="error")
    except (ValueError, OSError, RuntimeError, KeyError, IndexError) as err:
        raise _err(spec.path, f"mne could not read it as {kind.upper()}: {err}", rec.path) from err
    picks = mne.pick_types(raw.info, eeg=True, emg=True, ecg=True, eog=True, misc=True, seeg=True, ecog=True)
    if len(picks) == 0:
        raise _err(spec.path, "no data channels (EEG/EMG/misc) found.", rec.path)
    data = raw.get_data(picks=picks).T * 1e6  # volts -> µV
    names = [raw.ch_names[i] for i in picks]
    sfreq = float(raw.info["sfreq"])
    events = [
        Event(float(onset - raw.first_time), float(dur), str(desc))
        for onset, dur, desc in zip(
            raw.annotations.onset, raw.annotations.duration, raw.annotations.description, strict=False
        )
    ]
    return data, sfreq, names, events, int(raw.first_samp)


def _xdf_pick(streams: list[Any], rec: RecordingSpec, spec: DatasetSpec, *, markers: bool) -> Any | None:
    opts = rec.options
    name = opts.get("marker_stream" if markers else "stream")
    stype = opts.get("marker_stream_type" if markers else "stream_type")
    candidates = [s for s in streams if s.info.is_string == markers and (markers or s.info.srate > 0)]
    if name is not None:
        candidates = [s for s in candidates if s.info.name == name]
    if stype is not None:
        candidates = [s for s in candidates if s.info.type == stype]
    if not markers and name is None and stype is None and len(candidates) > 1:
        eeg = [s for s in candidates if s.info.type.upper() in ("EEG", "EMG", "EXG")]
        candidates = eeg or candidates
    if not candidates:
        if markers:
            return None
        found = [(s.info.name, s.info.type, s.info.srate) for s in streams]
        raise _err(
            spec.path,
            f"no numeric stream matches stream={name!r} stream_type={stype!r}; streams (name, type, Hz): {found}.",
            rec.path,
        )
    return candidates[0]


def _read_xdf(rec: RecordingSpec, spec: DatasetSpec) -> tuple[np.ndarray, float, list[str], list[Event]]:
    import warnings

    from acquisition.xdf_reader import XdfFormatError, XdfTruncatedWarning, read_xdf

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", XdfTruncatedWarning)
            streams = read_xdf(rec.path)
    except XdfFormatError as err:
        raise _err(spec.path, f"not a readable XDF file: {err}", rec.path) from err
    sig = _xdf_pick(streams, rec, spec, markers=False)
    if sig is None:  # _xdf_pick raises for a missing signal stream
        raise _err(spec.path, "no signal stream.", rec.path)
    info = sig.info
    units = {c.unit.strip().lower() for c in info.channels}
    unknown = sorted(u for u in units if u not in _XDF_UNIT_TO_UV)
    if unknown or len(units) > 1:
        raise _err(spec.path, f"stream {info.name!r} has channel units {sorted(units)}; need one of µV/mV/V.", rec.path)
    factor = _XDF_UNIT_TO_UV[units.pop()]
    data = np.asarray(sig.data, dtype=np.float64) * factor
    t0 = float(sig.timestamps[0]) if sig.n_samples else 0.0
    events: list[Event] = []
    mk = _xdf_pick(streams, rec, spec, markers=True)
    if mk is not None:
        for ts, sample in zip(mk.timestamps, mk.data, strict=False):
            events.append(Event(float(ts) - t0, 0.0, str(sample[0])))
    return data, float(info.srate), list(info.labels), events


def _read_events_file(rec: RecordingSpec, spec: DatasetSpec, sfreq: float, first_samp: int) -> list[Event]:
    assert rec.events is not None  # checked by the caller
    epath = rec.events
    if epath.suffix.lower() in (".tsv", ".csv"):
        import csv

        delim = "\t" if epath.suffix.lower() == ".tsv" else ","
        with open(epath, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter=delim))
        out = []
        for i, row in enumerate(rows):
            desc = row.get("trial_type") or row.get("value") or row.get("description")
            try:
                onset = float(row["onset"])
                dur = float(row.get("duration") or 0.0)
            except (KeyError, ValueError) as err:
                raise _err(spec.path, f"events file {str(epath)!r} row {i + 1}: need numeric 'onset': {err}.") from err
            if desc is None:
                raise _err(
                    spec.path, f"events file {str(epath)!r} needs a 'trial_type', 'value' or 'description' column."
                )
            out.append(Event(onset, dur, str(desc)))
        return out
    import mne

    try:
        ev = mne.read_events(str(epath), verbose="error")
    except (ValueError, OSError, RuntimeError) as err:
        raise _err(spec.path, f"events file {str(epath)!r} is not an mne events file: {err}", rec.path) from err
    return [Event((int(s) - first_samp) / sfreq, 0.0, str(int(code))) for s, _, code in ev]


def read_recording(rec: RecordingSpec, spec: DatasetSpec) -> Recording:
    """Load one recording: data in µV (samples × channels), rate, channel names and events.

    Parameters
    ----------
    rec : RecordingSpec
    spec : DatasetSpec
        The spec it belongs to (for ``scale``, ``channels`` and messages).

    Raises
    ------
    DatasetError
        Missing or unreadable file, unknown format, missing channels, non-finite samples.
    """
    if not rec.path.is_file():
        raise _err(spec.path, "recording file does not exist.", rec.path)
    suffix = rec.path.suffix.lower()
    first_samp = 0
    if suffix in MNE_SUFFIXES:
        data, sfreq, names, events, first_samp = _read_mne(rec, spec)
    elif suffix in XDF_SUFFIXES:
        data, sfreq, names, events = _read_xdf(rec, spec)
    else:
        raise _err(
            spec.path,
            f"unknown recording format {suffix!r}; use FIF/EDF/BDF/GDF (mne) or XDF (pyxdf).",
            rec.path,
        )
    if rec.events is not None:
        if not rec.events.is_file():
            raise _err(spec.path, f"events file {str(rec.events)!r} does not exist.", rec.path)
        events = _read_events_file(rec, spec, sfreq, first_samp)
    scale = rec.options.get("scale", spec.scale)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
        raise _err(spec.path, f"option 'scale' must be a number > 0, got {scale!r}.", rec.path)
    if float(scale) != 1.0:
        data = data * float(scale)
    if spec.channels is not None:
        missing = [c for c in spec.channels if c not in names]
        if missing:
            raise _err(
                spec.path, f"channels {missing} (asked for by 'channels') are not in it; it has {names}.", rec.path
            )
        idx = [names.index(c) for c in spec.channels]
        data, names = data[:, idx], list(spec.channels)
    if not np.isfinite(data).all():
        raise _err(spec.path, "holds NaN or infinite samples.", rec.path)
    events.sort(key=lambda e: e.onset_s)
    return Recording(rec.path, np.ascontiguousarray(data, dtype=np.float64), sfreq, names, events)


# ---------------------------------------------------------------------------------------------- epochs
@dataclass(frozen=True, eq=False)
class Epochs:
    """Epochs cut around the class events of every recording of a spec.

    Attributes
    ----------
    X : ndarray, shape (n_trials, n_samples, n_channels), float32, µV
    y : ndarray, shape (n_trials,), int
        Index into ``classes``.
    classes : tuple of str
    groups : ndarray, shape (n_trials,), str
    sfreq : float
        Hz.
    ch_names : list of str
    frequencies : tuple of (float or None)
        Stimulus frequency per class (SSVEP), else None.
    recording : ndarray, shape (n_trials,), int
        Index into ``spec.recordings``.
    onset_s : ndarray, shape (n_trials,), float
        Event onset in s from the recording's first sample (the epoch starts at ``onset_s + tmin``).
    tmin : float
        s, the epoch start relative to the event.
    n_dropped : int
        Class events whose epoch ran past the start or end of its recording (left out).
    """

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    groups: np.ndarray
    sfreq: float
    ch_names: list[str]
    frequencies: tuple[float | None, ...]
    recording: np.ndarray
    onset_s: np.ndarray
    tmin: float = 0.0
    n_dropped: int = 0

    @property
    def n_trials(self) -> int:
        """Number of epochs."""
        return int(self.X.shape[0])

    def subset(self, mask: np.ndarray) -> Epochs:
        """Epochs selected by a boolean mask or index array (classes unchanged)."""
        return replace(
            self,
            X=self.X[mask],
            y=self.y[mask],
            groups=self.groups[mask],
            recording=self.recording[mask],
            onset_s=self.onset_s[mask],
        )


Preprocess = Callable[[np.ndarray, float], np.ndarray]


def check_compatible(recordings: Sequence[Recording], spec: DatasetSpec) -> None:
    """Raise DatasetError if the recordings' sampling rates or channel sets differ (naming both files)."""
    first = recordings[0]
    for r in recordings[1:]:
        if abs(r.sfreq - first.sfreq) > 1e-6 * first.sfreq:
            raise _err(
                spec.path,
                f"sampling-rate mismatch: {r.sfreq:g} Hz here but {first.sfreq:g} Hz in {str(first.path)!r}. "
                "Resample the recordings to one rate or split them into separate specs.",
                r.path,
            )
        if r.ch_names != first.ch_names:
            if sorted(r.ch_names) == sorted(first.ch_names):
                continue  # same set, other order: load_epochs reorders
            missing = [c for c in first.ch_names if c not in r.ch_names]
            extra = [c for c in r.ch_names if c not in first.ch_names]
            raise _err(
                spec.path,
                f"channel set differs from {str(first.path)!r}: missing {missing}, extra {extra}. "
                "Pick common channels with the top-level 'channels' key.",
                r.path,
            )


def load_epochs(
    spec: DatasetSpec,
    *,
    preprocess: Preprocess | None = None,
    recordings: Sequence[Recording] | None = None,
) -> Epochs:
    """Cut ``[tmin, tmax)`` epochs around every class event of every recording.

    Parameters
    ----------
    spec : DatasetSpec
    preprocess : callable, optional
        ``preprocess(data, sfreq) -> data`` applied to each whole recording (samples × channels,
        µV) before cutting, e.g. the causal filter a model's card asks for.
    recordings : sequence of Recording, optional
        Already loaded recordings of ``spec`` (same order), to avoid reading them again.

    Returns
    -------
    Epochs

    Raises
    ------
    DatasetError
        Missing files, a class event code that occurs in no recording (the message lists the
        codes found per file), a class with fewer than 2 trials, channel sets that differ
        between recordings, a sampling-rate mismatch.
    """
    recs = list(recordings) if recordings is not None else [read_recording(r, spec) for r in spec.recordings]
    if not recs:
        raise _err(spec.path, "no recordings to cut epochs from.")
    check_compatible(recs, spec)
    sfreq = recs[0].sfreq
    ch_names = list(recs[0].ch_names)
    start_off = round(spec.tmin * sfreq)
    n_samp = round((spec.tmax - spec.tmin) * sfreq)
    code_to_class = {c.event: i for i, c in enumerate(spec.classes.values())}

    X: list[np.ndarray] = []
    y: list[int] = []
    groups: list[str] = []
    rec_idx: list[int] = []
    onsets: list[float] = []
    dropped = 0
    found_codes: list[set[str]] = []
    for ri, (rs, rec) in enumerate(zip(spec.recordings, recs, strict=False)):
        data = rec.data
        if rec.ch_names != ch_names:
            data = data[:, [rec.ch_names.index(c) for c in ch_names]]
        if preprocess is not None:
            data = preprocess(data, sfreq)
        found_codes.append({e.description for e in rec.events})
        for ev in rec.events:
            k = code_to_class.get(ev.description)
            if k is None:
                continue
            a = round(ev.onset_s * sfreq) + start_off
            if a < 0 or a + n_samp > data.shape[0]:
                dropped += 1
                continue
            X.append(np.asarray(data[a : a + n_samp], dtype=np.float32))
            y.append(k)
            groups.append(rs.group)
            rec_idx.append(ri)
            onsets.append(ev.onset_s)

    all_codes = set().union(*found_codes)
    unknown = [c for c in spec.classes.values() if c.event not in all_codes]
    if unknown:
        per_file = "; ".join(
            f"{r.path.name}: {sorted(codes, key=str)[:20]}"
            for r, codes in zip(spec.recordings, found_codes, strict=False)
        )
        files = ", ".join(repr(str(r.path)) for r in spec.recordings[:3])
        raise _err(
            spec.path,
            f"unknown event code(s) {[(c.name, c.event) for c in unknown]}: they occur in no recording "
            f"({files}{' ...' if len(spec.recordings) > 3 else ''}). Event codes found: {per_file}.",
        )
    counts = np.bincount(np.asarray(y, dtype=int), minlength=len(spec.classes))
    few = [(name, int(n)) for name, n in zip(spec.classes, counts, strict=False) if n < 2]
    if few:
        files = ", ".join(repr(str(r.path)) for r in spec.recordings[:3])
        raise _err(
            spec.path,
            f"class(es) with fewer than 2 trials {few} (name, trials) in {files}; every class needs at least 2 "
            f"epochs of [{spec.tmin}, {spec.tmax}] s inside the recordings ({dropped} ran past an edge).",
        )
    return Epochs(
        X=np.stack(X),
        y=np.asarray(y, dtype=np.int64),
        classes=spec.class_names,
        groups=np.asarray(groups, dtype=str),
        sfreq=sfreq,
        ch_names=ch_names,
        frequencies=tuple(c.frequency for c in spec.classes.values()),
        recording=np.asarray(rec_idx, dtype=np.int64),
        onset_s=np.asarray(onsets, dtype=np.float64),
        tmin=spec.tmin,
        n_dropped=dropped,
    )
