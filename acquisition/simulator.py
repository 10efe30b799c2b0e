"""Physiologically plausible synthetic biosignals with ground truth: the embedded default source.

Two layers (STYLE habit 1):

- :class:`SignalGenerator` is pure and synchronous: :class:`SimulatorSettings` (frozen) + state +
  :meth:`SignalGenerator.generate`. It is seeded and deterministic and *chunk invariant*:
  ``generate(1000)`` equals ``generate(300)`` followed by ``generate(700)`` bit for bit, because the
  signal is computed internally in fixed blocks of :attr:`SignalGenerator.BLOCK_SIZE` samples (one
  random draw per block, stateful IIR filters carry their ``zi``) and served from that block cache,
  and because the trial schedule is drawn from its own random stream, independently of how the
  samples are requested. The ground truth (:meth:`SignalGenerator.label_at`,
  :meth:`SignalGenerator.schedule`) is therefore available for any window.
- :class:`SimulatedSource` is the thin real-time adapter: a :class:`~acquisition.source.Source`
  whose thread writes the generator's samples into a ring buffer, paced on absolute deadlines of
  ``pylsl.local_clock``.

Scenarios and where their parameters come from
----------------------------------------------
``"ssvep"`` (EEG, 250 Hz, PO7 PO3 POz PO4 PO8 O1 Oz O2)
    Aperiodic 1/f-like background, 10 µV rms (pink noise plus slow activity, log-log slope about -1.5
    between 2 and 40 Hz; Donoghue et al. 2020, Nat Neurosci 23:1655, doi:10.1038/s41593-020-00744-x),
    partly common to all channels (volume conduction), plus posterior alpha (~10 Hz, 2 µV rms, slowly
    waxing and waning). During a trial labelled ``"<f>Hz"`` a response
    at f and its harmonics (amplitude 1/h of the fundamental) appears after a 0.14 s latency with
    a 0.1 s raised-cosine ramp, strongest at Oz/O1/O2; each frequency has its own phase (0.5π steps,
    joint frequency-phase modulation). Harmonic content: Chen et al. 2015, J Neural Eng 12:046008,
    doi:10.1088/1741-2560/12/4/046008; latency, phases and channel set: Wang et al. 2017 (Benchmark
    dataset), IEEE TNSRE 25:1746, doi:10.1109/TNSRE.2016.2627556. The default fundamental amplitude
    (3 µV at Oz) puts a standard 1 s CCA detector (3 harmonics, 8 channels) at about 70 % correct for
    the 4 default frequencies (chance 25 %), biased towards the low frequencies by the 1/f background
    as on real data, leaving room for FBCCA / TRCA / DNN decoders to do better.
``"mi"`` (EEG, 250 Hz, 13 sensorimotor channels)
    Mu (~11 Hz) and beta (~20 Hz) rhythms generated over the left (C3), midline (Cz) and right (C4)
    sensorimotor cortex. Imagined left hand -> event-related desynchronisation (ERD, amplitude drop
    ``erd_depth`` = 50 %) over the C4 side, right hand -> over the C3 side, feet -> at Cz, rest -> none;
    the ERD builds up 0.5 s after the cue over 0.5 s. Pfurtscheller & Lopes da Silva 1999, Clin
    Neurophysiol 110:1842, doi:10.1016/S1388-2457(99)00141-8.
``"spindle"`` (EEG, 250 Hz, C3)
    N2 sleep background (1/f noise plus large 0.5-2 Hz delta), and sleep spindles of 11-16 Hz lasting
    0.5-2 s with a waxing-waning (sin²) envelope and 15-40 µV peak amplitude, every 5-20 s.
    Warby et al. 2014, Nat Methods 11:385, doi:10.1038/nmeth.2855; Lacourse et al. 2019, J Neurosci
    Methods 316:3, doi:10.1016/j.jneumeth.2018.08.014.
``"emg"`` (HD-EMG, 1000 Hz, 8 × 8 grid ``E01``..``E64`` row-major)
    Band-limited noise (20-450 Hz, the surface-EMG band of De Luca et al. 2010, J Biomech 43:1573,
    doi:10.1016/j.jbiomech.2010.01.027), spatially smoothed across neighbouring electrodes, whose
    amplitude follows each gesture's activation map (2-D Gaussian blobs on the grid, distinct per
    gesture): ~3 µV rms baseline, ~100 µV rms at the centre of an active blob. Gesture trials
    alternate with rest periods.
``"knee"`` (kinematics, 100 Hz, ``knee_angle`` in degrees, 0 = shank hanging vertically)
    A shank pendulum ``J θ̈ = τ(t) − m g l sin θ − K θ − B θ̇`` (J = 0.35 kg m², m g l = 11 N m,
    K = 2 N m/rad, B = 2.5 N m s/rad, i.e. an underdamped leg as in the pendulum test; Ferrarin &
    Pedotti 2000, IEEE Trans Rehabil Eng 8:342) driven by a smooth torque that holds a random target
    of 30-60° for the first half of each swing and then lets the leg fall back; 0.2° sensor noise.

All electrophysiology scenarios add ``line_noise_hz`` interference of about ``line_noise_uv`` (set
either to 0 to disable). Markers are JSON strings (see :class:`Trial.marker`).
"""

from __future__ import annotations

import json
import math
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pylsl import local_clock
from scipy import signal

from acquisition.source import BufferedStream, ErrorCallback, Source
from acquisition.stream import StreamInfo
from acquisition.validation import check_int, check_option, check_positive, check_type

__all__ = [
    "EMG_GESTURES",
    "MI_CLASSES",
    "SCENARIOS",
    "SignalGenerator",
    "SimulatedSource",
    "SimulatorSettings",
    "Trial",
    "simulate",
]

SCENARIOS = ("ssvep", "mi", "spindle", "emg", "knee")
MI_CLASSES = ("left", "right", "feet", "rest")
EMG_GESTURES = ("rest", "fist", "open", "wrist_flex", "wrist_ext")

_DEFAULT_SRATE = {"ssvep": 250.0, "mi": 250.0, "spindle": 250.0, "emg": 1000.0, "knee": 100.0}
_MIN_SRATE = {"ssvep": 100.0, "mi": 100.0, "spindle": 100.0, "emg": 200.0, "knee": 20.0}
_DEFAULT_REST_S = {"ssvep": 0.0, "mi": 0.0, "spindle": 0.0, "emg": 2.0, "knee": 2.0}
_DEFAULT_NOISE = {"ssvep": 10.0, "mi": 10.0, "spindle": 12.0, "emg": 3.0, "knee": 0.2}
_STREAM_TYPE = {"ssvep": "EEG", "mi": "EEG", "spindle": "EEG", "emg": "EMG", "knee": "Kinematics"}

SSVEP_CHANNELS = ("PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2")
MI_CHANNELS = ("FC3", "FCz", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CPz", "CP4")
SPINDLE_CHANNELS = ("C3",)
KNEE_CHANNELS = ("knee_angle",)

# Relative SSVEP / alpha amplitude per channel (occipital strongest).
_SSVEP_WEIGHTS = np.array([0.35, 0.55, 0.65, 0.55, 0.35, 0.85, 1.0, 0.85])
_ALPHA_WEIGHTS = np.array([0.5, 0.7, 0.8, 0.7, 0.5, 0.9, 1.0, 0.9])
# Phase lag of the response per channel at the fundamental (rad): parieto-occipital sites lag a little.
_SSVEP_LAGS = np.array([0.3, 0.2, 0.15, 0.2, 0.3, 0.0, 0.0, 0.0])
# Approximate 2-D scalp positions (electrode spacings) of MI_CHANNELS: x left->right, y posterior->anterior.
_MI_POS = np.array(
    [[-2, 1], [0, 1], [2, 1], [-3, 0], [-2, 0], [-1, 0], [0, 0], [1, 0], [2, 0], [3, 0], [-2, -1], [0, -1], [2, -1]],
    dtype=float,
)
_MI_SOURCES = np.array([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]])  # left hand area (C3), feet (Cz), right hand (C4)
_MI_ERD_SOURCE = {"left": 2, "right": 0, "feet": 1}  # class -> index of the desynchronising source
# Gesture activation maps: blobs (row, col, sigma, weight) on the electrode grid (row-major from E01).
_GESTURE_BLOBS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "rest": (),
    "fist": ((2.0, 2.0, 1.5, 1.0), (5.5, 5.5, 1.5, 0.8)),
    "open": ((1.0, 5.5, 1.3, 1.0),),
    "wrist_flex": ((5.5, 1.5, 1.4, 1.0),),
    "wrist_ext": ((1.5, 3.0, 1.2, 1.0), (6.5, 6.5, 1.0, 0.6)),
}
# Pink-noise IIR (P. Kellet, in J. O. Smith, "Spectral Audio Signal Processing", Example: 1/F noise):
# PSD ∝ 1/f within ±0.5 dB from 0.0009·fs to 0.5·fs.
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
_WARMUP_S = 10.0  # s of noise run through every IIR filter before sample 0 (stationary start)
_SENSOR_NOISE = 0.5  # µV rms of white amplifier noise (EEG/EMG)


def _as_float_tuple(value: Any, name: str, *, length: int | None = None) -> tuple[float, ...]:
    check_type(value, (tuple, list), name)
    out = tuple(check_positive(v, f"{name}[{i}]") for i, v in enumerate(value))
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {value!r}.")
    return out


def _check_range(value: tuple[float, ...], name: str) -> None:
    if value[0] > value[1]:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}; swap the two values.")


@dataclass(frozen=True)
class SimulatorSettings:
    """Parameters of a simulated recording (validated on construction).

    Parameters
    ----------
    scenario : {"ssvep", "mi", "spindle", "emg", "knee"}
        What to simulate (see the module docstring).
    srate : float, optional
        Sampling rate in Hz; None means the scenario default (ssvep/mi/spindle 250, emg 1000, knee 100).
    seed : int
        Seed of every random draw; equal settings give identical data.
    trial_s : float
        Duration of a trial (SSVEP flicker, MI imagery, EMG gesture, knee swing) in s.
    rest_s : float, optional
        Rest period after every trial in s (label ``"rest"``); None means the scenario default
        (0 for ssvep/mi, 2 for emg/knee; unused by spindle).
    noise_rms : float, optional
        Background level in channel units: µV rms of the 1/f EEG background (default 10, spindle 12),
        µV rms of the EMG baseline (default 3), degrees rms of the knee sensor noise (default 0.2).
    line_noise_hz, line_noise_uv : float
        Mains interference frequency (Hz) and typical amplitude (µV); 0 disables it. Ignored by knee.
    ssvep_frequencies : tuple of float
        Stimulation frequencies in Hz; each trial uses one of them (balanced random order).
    n_harmonics : int
        Number of harmonics in the response (the fundamental counts as the first); harmonics at or
        above 0.45·srate are left out.
    ssvep_amplitude_uv : float
        Amplitude of the fundamental at Oz in µV (harmonic h has amplitude ``ssvep_amplitude_uv / h``).
    ssvep_latency_s : float
        Visual latency between trial onset and response onset in s.
    alpha_rms_uv : float
        Posterior alpha rms at Oz in µV (ssvep scenario).
    mi_classes : tuple of str
        Motor-imagery classes, a subset of ``("left", "right", "feet", "rest")``.
    mu_hz : float
        Centre frequency of the mu rhythm in Hz (beta is at twice that, minus 2 Hz).
    erd_depth : float
        Fractional amplitude drop of mu and beta during imagery, in [0, 1].
    spindle_interval_s, spindle_duration_s, spindle_amplitude_uv, spindle_frequency_hz : (float, float)
        Uniform ranges of onset-to-onset interval (s), duration (s), peak amplitude (µV) and frequency (Hz).
    emg_gestures : tuple of str
        Gesture classes; ``"rest"`` means no activation, the names of :data:`EMG_GESTURES` have fixed
        activation maps and any other name gets a map derived from the name.
    emg_rows, emg_cols : int
        Electrode grid shape.
    emg_amplitude_uv : float
        EMG rms in µV at the centre of a fully active blob.
    knee_target_deg : (float, float)
        Uniform range of the swing target angle in degrees.
    """

    scenario: str = "ssvep"
    srate: float | None = None
    seed: int = 0
    trial_s: float = 4.0
    rest_s: float | None = None
    noise_rms: float | None = None
    line_noise_hz: float = 50.0
    line_noise_uv: float = 1.0
    ssvep_frequencies: tuple[float, ...] = (8.0, 10.0, 12.0, 15.0)
    n_harmonics: int = 3
    ssvep_amplitude_uv: float = 3.0
    ssvep_latency_s: float = 0.14
    alpha_rms_uv: float = 2.0
    mi_classes: tuple[str, ...] = ("left", "right", "rest")
    mu_hz: float = 11.0
    erd_depth: float = 0.5
    spindle_interval_s: tuple[float, float] = (5.0, 20.0)
    spindle_duration_s: tuple[float, float] = (0.5, 2.0)
    spindle_amplitude_uv: tuple[float, float] = (15.0, 40.0)
    spindle_frequency_hz: tuple[float, float] = (11.0, 16.0)
    emg_gestures: tuple[str, ...] = EMG_GESTURES
    emg_rows: int = 8
    emg_cols: int = 8
    emg_amplitude_uv: float = 100.0
    knee_target_deg: tuple[float, float] = (30.0, 60.0)

    def __post_init__(self) -> None:
        check_option(self.scenario, SCENARIOS, "SimulatorSettings.scenario")
        sc = self.scenario
        if self.srate is not None:
            rate = check_positive(self.srate, "SimulatorSettings.srate")
            if rate < _MIN_SRATE[sc]:
                raise ValueError(
                    f"SimulatorSettings.srate must be >= {_MIN_SRATE[sc]:g} Hz for scenario {sc!r}, "
                    f"got {self.srate!r}; pass srate=None for the default."
                )
        check_int(self.seed, "SimulatorSettings.seed", minimum=0)
        check_positive(self.trial_s, "SimulatorSettings.trial_s")
        if self.rest_s is not None:
            check_positive(self.rest_s, "SimulatorSettings.rest_s", allow_zero=True)
        if self.noise_rms is not None:
            check_positive(self.noise_rms, "SimulatorSettings.noise_rms", allow_zero=True)
        check_positive(self.line_noise_hz, "SimulatorSettings.line_noise_hz", allow_zero=True)
        check_positive(self.line_noise_uv, "SimulatorSettings.line_noise_uv", allow_zero=True)
        rate = float(self.srate) if self.srate is not None else _DEFAULT_SRATE[sc]
        if sc != "knee" and self.line_noise_hz * self.line_noise_uv > 0 and self.line_noise_hz >= rate / 2:
            raise ValueError(
                f"SimulatorSettings.line_noise_hz must be below srate/2 = {rate / 2:g} Hz, got {self.line_noise_hz!r}; "
                "set line_noise_hz=0 to disable mains interference."
            )
        freqs = _as_float_tuple(self.ssvep_frequencies, "SimulatorSettings.ssvep_frequencies")
        if not freqs:
            raise ValueError("SimulatorSettings.ssvep_frequencies must not be empty, got ().")
        if len(set(freqs)) != len(freqs):
            raise ValueError(f"SimulatorSettings.ssvep_frequencies must be distinct, got {self.ssvep_frequencies!r}.")
        if sc == "ssvep" and max(freqs) >= 0.45 * rate:
            raise ValueError(
                f"SimulatorSettings.ssvep_frequencies must be below 0.45·srate = {0.45 * rate:g} Hz, got {freqs!r}; "
                "raise srate or lower the frequencies."
            )
        object.__setattr__(self, "ssvep_frequencies", freqs)
        check_int(self.n_harmonics, "SimulatorSettings.n_harmonics", minimum=1)
        check_positive(self.ssvep_amplitude_uv, "SimulatorSettings.ssvep_amplitude_uv", allow_zero=True)
        check_positive(self.ssvep_latency_s, "SimulatorSettings.ssvep_latency_s", allow_zero=True)
        check_positive(self.alpha_rms_uv, "SimulatorSettings.alpha_rms_uv", allow_zero=True)
        self._check_labels("mi_classes", MI_CLASSES)
        check_positive(self.mu_hz, "SimulatorSettings.mu_hz")
        if not 6.0 <= self.mu_hz <= 14.0:
            raise ValueError(f"SimulatorSettings.mu_hz must be within [6, 14] Hz, got {self.mu_hz!r}.")
        check_positive(self.erd_depth, "SimulatorSettings.erd_depth", allow_zero=True)
        if self.erd_depth > 1.0:
            raise ValueError(f"SimulatorSettings.erd_depth must be within [0, 1], got {self.erd_depth!r}.")
        for name in ("spindle_interval_s", "spindle_duration_s", "spindle_amplitude_uv", "spindle_frequency_hz"):
            rng = _as_float_tuple(getattr(self, name), f"SimulatorSettings.{name}", length=2)
            _check_range(rng, f"SimulatorSettings.{name}")
            object.__setattr__(self, name, rng)
        if self.spindle_interval_s[0] <= self.spindle_duration_s[1]:
            raise ValueError(
                "SimulatorSettings.spindle_interval_s must start above the longest spindle_duration_s, got "
                f"{self.spindle_interval_s!r} and {self.spindle_duration_s!r}; spindles must not overlap."
            )
        if sc == "spindle" and self.spindle_frequency_hz[1] >= 0.45 * rate:
            raise ValueError(
                f"SimulatorSettings.spindle_frequency_hz must be below 0.45·srate, got {self.spindle_frequency_hz!r}."
            )
        self._check_labels("emg_gestures", None)
        check_int(self.emg_rows, "SimulatorSettings.emg_rows", minimum=1)
        check_int(self.emg_cols, "SimulatorSettings.emg_cols", minimum=1)
        if self.emg_rows * self.emg_cols > 999:
            raise ValueError(
                f"SimulatorSettings.emg_rows * emg_cols must be <= 999, got {self.emg_rows} x {self.emg_cols}."
            )
        check_positive(self.emg_amplitude_uv, "SimulatorSettings.emg_amplitude_uv", allow_zero=True)
        knee = _as_float_tuple(self.knee_target_deg, "SimulatorSettings.knee_target_deg", length=2)
        _check_range(knee, "SimulatorSettings.knee_target_deg")
        if knee[1] > 90.0:
            raise ValueError(f"SimulatorSettings.knee_target_deg must stay within (0, 90] degrees, got {knee!r}.")
        object.__setattr__(self, "knee_target_deg", knee)

    def _check_labels(self, name: str, allowed: tuple[str, ...] | None) -> None:
        value = getattr(self, name)
        check_type(value, (tuple, list), f"SimulatorSettings.{name}")
        if not value:
            raise ValueError(f"SimulatorSettings.{name} must not be empty, got {value!r}.")
        for i, v in enumerate(value):
            check_type(v, str, f"SimulatorSettings.{name}[{i}]")
            if allowed is not None:
                check_option(v, allowed, f"SimulatorSettings.{name}[{i}]")
        if len(set(value)) != len(value):
            raise ValueError(f"SimulatorSettings.{name} must be distinct, got {value!r}.")
        object.__setattr__(self, name, tuple(value))

    def resolved(self) -> SimulatorSettings:
        """Return a copy with every ``None`` replaced by the scenario default."""
        sc = self.scenario
        return replace(
            self,
            srate=float(self.srate) if self.srate is not None else _DEFAULT_SRATE[sc],
            rest_s=float(self.rest_s) if self.rest_s is not None else _DEFAULT_REST_S[sc],
            noise_rms=float(self.noise_rms) if self.noise_rms is not None else _DEFAULT_NOISE[sc],
        )


@dataclass(frozen=True)
class Trial:
    """One ground-truth interval of the schedule.

    Attributes
    ----------
    onset_sample : int
        Absolute index of the first sample (sample 0 is the first sample ever generated).
    n_samples : int
        Length in samples.
    label : str
        Class label: ``"10.0Hz"`` (ssvep), ``"left"`` (mi), ``"fist"`` (emg), ``"swing"`` (knee),
        ``"spindle"`` (spindle) or ``"rest"`` (rest periods).
    event : str
        ``"trial"``, ``"rest"``, ``"spindle"`` or ``"swing"``.
    params : dict
        Scenario extras written into the marker (e.g. ``frequency_hz``, ``amplitude_uv``, ``target_deg``).
    """

    onset_sample: int
    n_samples: int
    label: str
    event: str = "trial"
    params: Mapping[str, float] = field(default_factory=dict, compare=False, hash=False)

    @property
    def end_sample(self) -> int:
        """Absolute index just past the last sample."""
        return self.onset_sample + self.n_samples

    def marker(self, srate: float) -> str:
        """The marker string: JSON ``{"event", "label", "onset_sample", "duration_s", **params}``."""
        doc: dict[str, object] = {
            "event": self.event,
            "label": self.label,
            "onset_sample": self.onset_sample,
            "duration_s": round(self.n_samples / srate, 6),
        }
        doc.update({k: round(float(v), 4) for k, v in self.params.items()})
        return json.dumps(doc)


def _ramp(x: np.ndarray) -> np.ndarray:
    """Raised-cosine step: 0 for x <= 0, 1 for x >= 1."""
    xc = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * xc)


def _trial_envelope(k: np.ndarray, trial: Trial, delay: float, rise: float, srate: float) -> np.ndarray:
    """Envelope in [0, 1] of a response that starts ``delay`` s after onset and ends ``delay`` s after the trial.

    Both edges are raised-cosine ramps of ``rise`` s; ``k`` holds absolute sample indices.
    """
    t = (k - trial.onset_sample) / srate
    dur = trial.n_samples / srate
    return _ramp((t - delay) / rise) * (1.0 - _ramp((t - dur - delay) / rise))


class _FilteredNoise:
    """Stateful IIR filter of white noise, scaled to unit rms, with warmed-up ``zi`` (one column per source)."""

    def __init__(self, sos: np.ndarray, n_cols: int, srate: float, warm_rng: np.random.Generator) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        impulse = np.zeros(int(max(60.0 * srate, 8192)))
        impulse[0] = 1.0
        self.scale = 1.0 / math.sqrt(float(np.sum(signal.sosfilt(self.sos, impulse) ** 2)))
        zi = np.zeros((self.sos.shape[0], 2, n_cols))
        warm = warm_rng.standard_normal((int(_WARMUP_S * srate), n_cols))
        _, self.zi = signal.sosfilt(self.sos, warm, axis=0, zi=zi)

    def __call__(self, white: np.ndarray) -> np.ndarray:
        out, self.zi = signal.sosfilt(self.sos, white, axis=0, zi=self.zi)
        return out * self.scale


class SignalGenerator:
    """Seeded, chunk-invariant generator of one scenario's samples, markers and ground truth.

    Parameters
    ----------
    settings : SimulatorSettings, optional
        Defaults to ``SimulatorSettings()`` (SSVEP). ``None`` fields are resolved to the scenario defaults
        and the resolved copy is kept in :attr:`settings`.

    Notes
    -----
    Pure and synchronous; not thread safe (one caller at a time).
    """

    BLOCK_SIZE = 256
    """Samples computed per internal block (one random draw and one filter call per block)."""

    def __init__(self, settings: SimulatorSettings | None = None) -> None:
        if settings is None:
            settings = SimulatorSettings()
        check_type(settings, SimulatorSettings, "settings")
        self.settings = s = settings.resolved()
        self.scenario = s.scenario
        self.srate: float = float(s.srate)  # type: ignore[arg-type]
        self._noise_rms = float(s.noise_rms)  # type: ignore[arg-type]
        sched_ss, noise_ss, static_ss, warm_ss = np.random.SeedSequence(s.seed).spawn(4)
        self._sched_rng = np.random.default_rng(sched_ss)
        self._noise_rng = np.random.default_rng(noise_ss)
        static_rng = np.random.default_rng(static_ss)
        warm_rng = np.random.default_rng(warm_ss)

        self._labels = self._channel_labels()
        self._info = self._make_info()
        self._marker_info = StreamInfo.simple(
            f"{self._info.name}-markers",
            "Markers",
            ["marker"],
            0.0,
            channel_format="string",
            source_id=f"{self._info.source_id}-markers",
        )
        # Schedule (ground truth), extended lazily from its own random stream.
        self._trials: list[Trial] = []
        self._onsets: list[int] = []
        self._covered = 0  # every entry with onset < _covered is in _trials
        self._sched_t = 0.0  # s, start of the next trial / rest / spindle
        self._label_queue: list[str] = []
        self._max_extent = 0  # samples: longest trial plus its response tail
        # Output state.
        self._pos = 0  # absolute index of the next sample handed out
        self._block = np.zeros((0, len(self._labels)), dtype=np.float32)
        self._block_start = 0
        n_ch = len(self._labels)
        self._line_amp = s.line_noise_uv * static_rng.uniform(0.5, 1.5, n_ch)
        self._line_phase = static_rng.uniform(0.0, 2.0 * np.pi, n_ch)
        if s.line_noise_hz == 0 or s.scenario == "knee":
            self._line_amp[:] = 0.0
        init: dict[str, Callable[[np.random.Generator, np.random.Generator], None]] = {
            "ssvep": self._init_ssvep,
            "mi": self._init_mi,
            "spindle": self._init_spindle,
            "emg": self._init_emg,
            "knee": self._init_knee,
        }
        init[s.scenario](static_rng, warm_rng)

    # ------------------------------------------------------------------ metadata
    def _channel_labels(self) -> tuple[str, ...]:
        s = self.settings
        if s.scenario == "ssvep":
            return SSVEP_CHANNELS
        if s.scenario == "mi":
            return MI_CHANNELS
        if s.scenario == "spindle":
            return SPINDLE_CHANNELS
        if s.scenario == "knee":
            return KNEE_CHANNELS
        return tuple(f"E{i + 1:02d}" for i in range(s.emg_rows * s.emg_cols))

    def _make_info(self) -> StreamInfo:
        s = self.settings
        info = StreamInfo.simple(
            f"closedloop-sim-{s.scenario}",
            _STREAM_TYPE[s.scenario],
            list(self._labels),
            self.srate,
            unit="degrees" if s.scenario == "knee" else "microvolts",
            channel_format="float32",
            source_id=f"closedloop-sim-{s.scenario}-seed{s.seed}",
        )
        info.desc.update({"simulator": "acquisition.simulator", "scenario": s.scenario, "seed": str(s.seed)})
        return info

    @property
    def info(self) -> StreamInfo:
        """Metadata of the signal stream (name ``closedloop-sim-<scenario>``)."""
        return self._info

    @property
    def marker_info(self) -> StreamInfo:
        """Metadata of the marker stream (name ``closedloop-sim-<scenario>-markers``, one string channel)."""
        return self._marker_info

    @property
    def grid(self) -> list[list[str]] | None:
        """EMG electrode grid as rows of channel labels (row-major), None for the other scenarios."""
        s = self.settings
        if s.scenario != "emg":
            return None
        return [list(self._labels[r * s.emg_cols : (r + 1) * s.emg_cols]) for r in range(s.emg_rows)]

    @property
    def position(self) -> int:
        """Absolute index of the next sample :meth:`generate` returns (= samples generated so far)."""
        return self._pos

    def activation_map(self, gesture: str) -> np.ndarray:
        """Relative activation of each EMG channel for ``gesture``, shape (n_channels,), peak 1 (0 for rest)."""
        if self.scenario != "emg":
            raise RuntimeError(f"activation_map() is for the 'emg' scenario, this generator is {self.scenario!r}.")
        check_option(gesture, self.settings.emg_gestures, "gesture")
        return self._patterns[gesture].copy()

    # ------------------------------------------------------------------ schedule
    def _next_label(self, labels: tuple[str, ...]) -> str:
        if not self._label_queue:
            self._label_queue = [labels[i] for i in self._sched_rng.permutation(len(labels))]
        return self._label_queue.pop(0)

    def _append(self, t_start: float, t_end: float, label: str, event: str, params: dict[str, float]) -> None:
        onset = round(t_start * self.srate)
        trial = Trial(onset, round(t_end * self.srate) - onset, label, event, params)
        self._trials.append(trial)
        self._onsets.append(onset)
        self._max_extent = max(self._max_extent, trial.n_samples + self._tail)

    def _extend_schedule(self, sample: int) -> None:
        """Make sure every entry with onset <= ``sample`` is known."""
        s = self.settings
        while self._covered <= sample:
            if s.scenario == "spindle":
                onset_t = self._sched_t
                dur = float(self._sched_rng.uniform(*s.spindle_duration_s))
                params = {
                    "frequency_hz": float(self._sched_rng.uniform(*s.spindle_frequency_hz)),
                    "amplitude_uv": float(self._sched_rng.uniform(*s.spindle_amplitude_uv)),
                    "phase_rad": float(self._sched_rng.uniform(0.0, 2.0 * np.pi)),
                }
                self._append(onset_t, onset_t + dur, "spindle", "spindle", params)
                self._sched_t = onset_t + float(self._sched_rng.uniform(*s.spindle_interval_s))
            else:
                t0 = self._sched_t
                t1 = t0 + s.trial_s
                if s.scenario == "ssvep":
                    names = [f"{f!r}Hz" for f in s.ssvep_frequencies]
                    label = self._next_label(tuple(names))
                    f_idx = names.index(label)
                    params = {"frequency_hz": s.ssvep_frequencies[f_idx], "phase_rad": self._ssvep_phase[f_idx]}
                    self._append(t0, t1, label, "trial", params)
                elif s.scenario == "mi":
                    self._append(t0, t1, self._next_label(s.mi_classes), "trial", {})
                elif s.scenario == "emg":
                    label = self._next_label(s.emg_gestures)
                    level = float(self._sched_rng.uniform(0.6, 1.0)) if label != "rest" else 0.0
                    self._append(t0, t1, label, "trial", {"level": level})
                else:  # knee
                    target = float(self._sched_rng.uniform(*s.knee_target_deg))
                    self._append(t0, t1, "swing", "swing", {"target_deg": target})
                if s.rest_s:
                    self._append(t1, t1 + s.rest_s, "rest", "rest", {})
                    t1 += s.rest_s
                self._sched_t = t1
            self._covered = round(self._sched_t * self.srate)

    def _overlapping(self, k0: int, k1: int) -> list[Trial]:
        """Entries whose response (trial plus tail) overlaps samples [k0, k1)."""
        self._extend_schedule(k1)
        lo = bisect_left(self._onsets, k0 - self._max_extent)
        hi = bisect_left(self._onsets, k1)
        return [t for t in self._trials[lo:hi] if t.end_sample + self._tail > k0]

    def schedule(self, duration_s: float) -> list[Trial]:
        """Ground-truth entries (trials, rests, spindles, swings) with onset before ``duration_s`` s.

        Parameters
        ----------
        duration_s : float
            Time from sample 0 in s.

        Returns
        -------
        list of Trial
            Sorted by onset; rest periods are entries with ``label == "rest"`` and ``event == "rest"``.
        """
        end = round(check_positive(duration_s, "duration_s", allow_zero=True) * self.srate)
        self._extend_schedule(end)
        return self._trials[: bisect_left(self._onsets, end)]

    def label_at(self, sample_index: int) -> str | None:
        """Ground-truth label of absolute sample ``sample_index`` (None outside every entry, e.g. between spindles)."""
        check_type(sample_index, (int, np.integer), "sample_index")
        k = int(sample_index)
        if k < 0:
            return None
        self._extend_schedule(k)
        i = bisect_right(self._onsets, k) - 1
        if i >= 0 and k < self._trials[i].end_sample:
            return self._trials[i].label
        return None

    def trial_at(self, sample_index: int) -> Trial | None:
        """The schedule entry containing absolute sample ``sample_index``, or None."""
        k = int(check_type(sample_index, (int, np.integer), "sample_index"))
        if k < 0:
            return None
        self._extend_schedule(k)
        i = bisect_right(self._onsets, k) - 1
        if i >= 0 and k < self._trials[i].end_sample:
            return self._trials[i]
        return None

    # ------------------------------------------------------------------ output
    def generate(self, n_samples: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Return the next ``n_samples`` samples and the markers whose onset falls in them.

        Parameters
        ----------
        n_samples : int
            Number of samples (0 is allowed and changes nothing).

        Returns
        -------
        data : ndarray, shape (n_samples, n_channels), float32
            µV for EEG/EMG, degrees for knee.
        markers : list of (int, str)
            ``(onset_sample, marker_json)`` with ``position <= onset_sample < position + n_samples``; see
            :meth:`Trial.marker` for the JSON fields.
        """
        n = check_int(n_samples, "n_samples", minimum=0)
        out = np.empty((n, len(self._labels)), dtype=np.float32)
        filled = 0
        while filled < n:
            offset = self._pos + filled - self._block_start
            if offset >= self._block.shape[0]:
                self._block_start += self._block.shape[0]
                self._block = self._next_block(self._block_start)
                offset = 0
            take = min(n - filled, self._block.shape[0] - offset)
            out[filled : filled + take] = self._block[offset : offset + take]
            filled += take
        start, stop = self._pos, self._pos + n
        self._extend_schedule(stop)
        i0, i1 = bisect_left(self._onsets, start), bisect_left(self._onsets, stop)
        markers = [(t.onset_sample, t.marker(self.srate)) for t in self._trials[i0:i1]]
        self._pos = stop
        return out, markers

    def _next_block(self, k0: int) -> np.ndarray:
        b = self.BLOCK_SIZE
        k = np.arange(k0, k0 + b, dtype=np.int64)
        noise = self._noise_rng.standard_normal((b, self._n_noise))
        data = self._block_fn(k, noise)
        if np.any(self._line_amp):
            phase = 2.0 * np.pi * self.settings.line_noise_hz * (k[:, None] / self.srate) + self._line_phase
            data = data + self._line_amp * np.sin(phase)
        return data.astype(np.float32)

    # ------------------------------------------------------------------ EEG background
    def _init_background(self, n_ch: int, warm_rng: np.random.Generator, common: float) -> None:
        """Aperiodic background of ``noise_rms`` µV rms; consumes ``2 * (n_ch + 1)`` noise columns.

        Sum of pink noise (PSD ∝ 1/f) and first-order low-passed noise (PSD ∝ 1/(1 + (f/1 Hz)²)) holding
        ``_SLOW_FRACTION`` of the power, so that the power is dominated by slow activity and the log-log
        slope between 2 and 40 Hz is about -1.5 (aperiodic exponents of 1-2, Donoghue et al. 2020, Nat
        Neurosci 23:1655, doi:10.1038/s41593-020-00744-x). A source common to all channels holds the
        fraction ``common`` of the power (volume conduction).
        """
        self._pink = _FilteredNoise(signal.tf2sos(_PINK_B, _PINK_A), n_ch + 1, self.srate, warm_rng)
        self._brown = _FilteredNoise(signal.butter(1, 1.0, fs=self.srate, output="sos"), n_ch + 1, self.srate, warm_rng)
        self._bg_mix = np.sqrt([1.0 - common, common])

    _SLOW_FRACTION = 0.75

    def _background(self, white: np.ndarray) -> np.ndarray:
        n = white.shape[1] // 2
        f = self._SLOW_FRACTION
        src = math.sqrt(1.0 - f) * self._pink(white[:, :n]) + math.sqrt(f) * self._brown(white[:, n:])
        own, com = src[:, :-1], src[:, -1:]
        return self._noise_rms * (self._bg_mix[0] * own + self._bg_mix[1] * com)

    # ------------------------------------------------------------------ ssvep
    def _init_ssvep(self, static_rng: np.random.Generator, warm_rng: np.random.Generator) -> None:
        s = self.settings
        n_ch = len(SSVEP_CHANNELS)
        self._tail = round((s.ssvep_latency_s + 0.1) * self.srate)
        self._ssvep_phase = tuple(float((0.5 * np.pi * i) % (2 * np.pi)) for i in range(len(s.ssvep_frequencies)))
        self._init_background(n_ch, warm_rng, common=0.4)
        self._alpha = _FilteredNoise(
            signal.butter(2, (8.5, 11.5), "bandpass", fs=self.srate, output="sos"), 1, self.srate, warm_rng
        )
        self._slow = _FilteredNoise(signal.butter(2, 0.2, fs=self.srate, output="sos"), 1, self.srate, warm_rng)
        self._n_noise = 3 * n_ch + 4  # background 2 (n_ch + 1), alpha, slow envelope, sensor n_ch
        self._block_fn = self._block_ssvep

    def _block_ssvep(self, k: np.ndarray, noise: np.ndarray) -> np.ndarray:
        s = self.settings
        n_ch = len(SSVEP_CHANNELS)
        j = 2 * (n_ch + 1)
        data = self._background(noise[:, :j])
        alpha = self._alpha(noise[:, j : j + 1])
        env = np.exp(0.4 * self._slow(noise[:, j + 1 : j + 2]) - 0.08)
        data += s.alpha_rms_uv * (alpha * env) * _ALPHA_WEIGHTS
        data += _SENSOR_NOISE * noise[:, j + 2 :]
        for trial in self._overlapping(int(k[0]), int(k[-1]) + 1):
            f = trial.params["frequency_hz"]
            phase0 = trial.params["phase_rad"]
            env_t = _trial_envelope(k, trial, s.ssvep_latency_s, 0.1, self.srate)
            t = (k - trial.onset_sample) / self.srate - s.ssvep_latency_s
            resp = np.zeros((k.shape[0], n_ch))
            for h in range(1, s.n_harmonics + 1):
                if h * f >= 0.45 * self.srate:
                    break
                arg = 2.0 * np.pi * h * f * t[:, None] + h * (phase0 - _SSVEP_LAGS)
                resp += np.sin(arg) / h
            data += (s.ssvep_amplitude_uv * env_t)[:, None] * resp * _SSVEP_WEIGHTS
        return data

    # ------------------------------------------------------------------ motor imagery
    def _init_mi(self, static_rng: np.random.Generator, warm_rng: np.random.Generator) -> None:
        s = self.settings
        n_ch = len(MI_CHANNELS)
        self._tail = round(1.0 * self.srate)
        self._init_background(n_ch, warm_rng, common=0.4)
        n_src = _MI_SOURCES.shape[0]
        mu, beta = s.mu_hz, 2.0 * s.mu_hz - 2.0
        self._mu = _FilteredNoise(
            signal.butter(2, (mu - 1.5, mu + 1.5), "bandpass", fs=self.srate, output="sos"), n_src, self.srate, warm_rng
        )
        self._beta = _FilteredNoise(
            signal.butter(2, (beta - 3.0, beta + 3.0), "bandpass", fs=self.srate, output="sos"),
            n_src,
            self.srate,
            warm_rng,
        )
        d2 = ((_MI_POS[:, None, :] - _MI_SOURCES[None, :, :]) ** 2).sum(axis=2)
        self._mi_proj = np.exp(-d2 / (2 * 1.0**2)).T  # (n_src, n_ch)
        self._mi_amp = np.array([8.0, 5.0, 8.0])  # µV rms of mu per source (beta is 0.4 of that)
        self._n_noise = 3 * n_ch + 2 + 2 * n_src  # background 2 (n_ch + 1), mu, beta, sensor n_ch
        self._block_fn = self._block_mi

    def _block_mi(self, k: np.ndarray, noise: np.ndarray) -> np.ndarray:
        s = self.settings
        n_ch, n_src = len(MI_CHANNELS), _MI_SOURCES.shape[0]
        j = 2 * (n_ch + 1)
        data = self._background(noise[:, :j])
        mu = self._mu(noise[:, j : j + n_src])
        beta = self._beta(noise[:, j + n_src : j + 2 * n_src])
        data += _SENSOR_NOISE * noise[:, j + 2 * n_src :]
        gain = np.ones((k.shape[0], n_src))
        for trial in self._overlapping(int(k[0]), int(k[-1]) + 1):
            src = _MI_ERD_SOURCE.get(trial.label)
            if src is not None:
                gain[:, src] -= s.erd_depth * _trial_envelope(k, trial, 0.5, 0.5, self.srate)
        gain = np.clip(gain, 1.0 - s.erd_depth, 1.0)
        sources = gain * self._mi_amp * (mu + 0.4 * beta)
        return data + sources @ self._mi_proj

    # ------------------------------------------------------------------ sleep spindles
    def _init_spindle(self, static_rng: np.random.Generator, warm_rng: np.random.Generator) -> None:
        self._tail = 0
        self._sched_t = float(self._sched_rng.uniform(2.0, 8.0))  # first spindle
        self._covered = 0
        self._init_background(1, warm_rng, common=0.0)
        self._delta = _FilteredNoise(
            signal.butter(2, (0.5, 2.0), "bandpass", fs=self.srate, output="sos"), 1, self.srate, warm_rng
        )
        self._delta_rms = 25.0  # µV, N2 slow activity
        self._n_noise = 6  # background 4, delta, sensor
        self._block_fn = self._block_spindle

    def _block_spindle(self, k: np.ndarray, noise: np.ndarray) -> np.ndarray:
        data = self._background(noise[:, :4])
        data += self._delta_rms * self._delta(noise[:, 4:5])
        data += _SENSOR_NOISE * noise[:, 5:6]
        for sp in self._overlapping(int(k[0]), int(k[-1]) + 1):
            t = (k - sp.onset_sample) / self.srate
            inside = (t >= 0) & (t < sp.n_samples / self.srate)
            env = np.where(inside, np.sin(np.pi * t / (sp.n_samples / self.srate)) ** 2, 0.0)
            osc = np.sin(2.0 * np.pi * sp.params["frequency_hz"] * t + sp.params["phase_rad"])
            data[:, 0] += sp.params["amplitude_uv"] * env * osc
        return data

    # ------------------------------------------------------------------ HD-EMG
    def _init_emg(self, static_rng: np.random.Generator, warm_rng: np.random.Generator) -> None:
        s = self.settings
        n_ch = s.emg_rows * s.emg_cols
        self._tail = round(0.4 * self.srate)
        high = min(450.0, 0.45 * self.srate)
        band = signal.butter(4, (20.0, high), "bandpass", fs=self.srate, output="sos")
        self._emg_noise = _FilteredNoise(band, n_ch, self.srate, warm_rng)
        rr, cc = np.divmod(np.arange(n_ch), s.emg_cols)
        pos = np.stack([rr, cc], axis=1).astype(float)
        d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(axis=2)
        blur = np.exp(-d2 / (2 * 0.7**2))
        self._emg_blur = blur / np.linalg.norm(blur, axis=0, keepdims=True)  # keeps unit rms per channel
        self._patterns: dict[str, np.ndarray] = {}
        for g in s.emg_gestures:
            blobs = _GESTURE_BLOBS.get(g)
            if blobs is None:  # derived from the name, identical across runs and seeds
                grng = np.random.default_rng(zlib.crc32(g.encode()))
                blobs = ((grng.uniform(0, s.emg_rows - 1), grng.uniform(0, s.emg_cols - 1), 1.4, 1.0),)
            # Blob centres are given for an 8 x 8 grid; scale them onto the actual grid.
            sr, sc = (s.emg_rows - 1) / 7.0, (s.emg_cols - 1) / 7.0
            act = np.zeros(n_ch)
            for r0, c0, sig, w in blobs:
                r0s, c0s = (r0 * sr, c0 * sc) if g in _GESTURE_BLOBS else (r0, c0)
                act += w * np.exp(-((rr - r0s) ** 2 + (cc - c0s) ** 2) / (2 * sig**2))
            self._patterns[g] = act / act.max() if act.max() > 0 else act
        self._n_noise = 2 * n_ch
        self._block_fn = self._block_emg

    def _block_emg(self, k: np.ndarray, noise: np.ndarray) -> np.ndarray:
        s = self.settings
        n_ch = s.emg_rows * s.emg_cols
        carrier = self._emg_noise(noise[:, :n_ch] @ self._emg_blur)
        amp = np.zeros((k.shape[0], n_ch))
        for trial in self._overlapping(int(k[0]), int(k[-1]) + 1):
            if trial.event != "trial" or trial.label == "rest":
                continue
            env = _trial_envelope(k, trial, 0.2, 0.2, self.srate) * trial.params["level"]
            amp += env[:, None] * (s.emg_amplitude_uv * self._patterns[trial.label])
        level = np.sqrt(self._noise_rms**2 + amp**2)
        return level * carrier + _SENSOR_NOISE * noise[:, n_ch:]

    # ------------------------------------------------------------------ knee pendulum
    _J, _MGL, _K, _B = 0.35, 11.0, 2.0, 2.5  # kg m², N m, N m/rad, N m s/rad
    _SUBSTEPS = 4

    def _init_knee(self, static_rng: np.random.Generator, warm_rng: np.random.Generator) -> None:
        self._tail = 0
        self._theta = 0.0  # rad
        self._omega = 0.0  # rad/s
        self._n_noise = 1
        self._block_fn = self._block_knee

    def _block_knee(self, k: np.ndarray, noise: np.ndarray) -> np.ndarray:
        torque = np.zeros(k.shape[0])
        for trial in self._overlapping(int(k[0]), int(k[-1]) + 1):
            if trial.event != "swing":
                continue
            target = math.radians(trial.params["target_deg"])
            hold = Trial(trial.onset_sample, trial.n_samples // 2, trial.label)  # drive the first half
            torque += _trial_envelope(k, hold, 0.0, 0.3, self.srate) * (self._MGL * math.sin(target) + self._K * target)
        dt = 1.0 / (self.srate * self._SUBSTEPS)
        theta, omega = self._theta, self._omega
        angle = np.empty(k.shape[0])
        for i, tau in enumerate(torque.tolist()):
            for _ in range(self._SUBSTEPS):  # semi-implicit Euler
                acc = (tau - self._MGL * math.sin(theta) - self._K * theta - self._B * omega) / self._J
                omega += acc * dt
                theta += omega * dt
            angle[i] = theta
        self._theta, self._omega = theta, omega
        return (np.degrees(angle) + self._noise_rms * noise[:, 0])[:, None]


def simulate(
    settings: SimulatorSettings | None = None, seconds: float = 60.0
) -> tuple[np.ndarray, list[tuple[int, str]], StreamInfo]:
    """Generate ``seconds`` of a scenario offline.

    Parameters
    ----------
    settings : SimulatorSettings, optional
        Defaults to ``SimulatorSettings()``.
    seconds : float
        Duration in s (rounded to whole samples).

    Returns
    -------
    data : ndarray, shape (n_samples, n_channels), float32
    markers : list of (int, str)
        ``(onset_sample, marker_json)`` of every entry starting within the data.
    info : StreamInfo
        Metadata of the signal stream.
    """
    gen = SignalGenerator(settings)
    n = round(check_positive(seconds, "seconds", allow_zero=True) * gen.srate)
    data, markers = gen.generate(n)
    return data, markers, gen.info


class SimulatedSource(Source):
    """Real-time :class:`Source` playing a :class:`SignalGenerator` into a ring buffer and a marker buffer.

    Parameters
    ----------
    name : str
        Name of this source in the session.
    settings : SimulatorSettings, optional
        Scenario; defaults to ``SimulatorSettings()`` (SSVEP).
    chunk_s : float
        Tick period of the acquisition thread in s; samples are still stamped individually.
    on_error : callable, optional
        See :class:`~acquisition.source.Source`.
    buffer_seconds : float
        Ring-buffer length in s.

    Notes
    -----
    Sample ``k`` is stamped ``t0 + k / srate`` on ``pylsl.local_clock`` and written once that time has
    passed; a marker is stamped with the time of its onset sample. The thread wakes on absolute
    deadlines ``start + i * chunk_s`` and sleeps on the stop event, so ``stop()`` returns promptly.
    ``start()`` after ``stop()`` resumes the same sample sequence but re-anchors :attr:`t0` so that the
    next sample is stamped with the restart time: the pause shows up as a timestamp gap in the ring
    buffer, and :meth:`label_at_time` maps times from before the pause incorrectly afterwards.
    """

    def __init__(
        self,
        name: str = "sim",
        settings: SimulatorSettings | None = None,
        *,
        chunk_s: float = 0.01,
        on_error: ErrorCallback | None = None,
        buffer_seconds: float = 30.0,
    ) -> None:
        super().__init__(check_type(name, str, "name"), on_error)
        if settings is not None:
            check_type(settings, SimulatorSettings, "settings")
        self.settings = settings if settings is not None else SimulatorSettings()
        self.chunk_s = check_positive(chunk_s, "chunk_s")
        self.buffer_seconds = check_positive(buffer_seconds, "buffer_seconds")
        self._generator: SignalGenerator | None = None
        self._t0 = float("nan")

    @property
    def generator(self) -> SignalGenerator:
        """The generator (ground truth: :meth:`SignalGenerator.schedule`, :meth:`SignalGenerator.label_at`)."""
        if self._generator is None:
            raise RuntimeError(f"source {self.name!r} is not open; call open() or start() first.")
        return self._generator

    @property
    def t0(self) -> float:
        """``pylsl.local_clock`` time of sample 0 under the current anchoring (NaN before the first start)."""
        return self._t0

    @property
    def signal_stream(self) -> BufferedStream:
        """The numeric stream."""
        return self.streams[self.generator.info.name]

    @property
    def marker_stream(self) -> BufferedStream:
        """The marker stream."""
        return self.streams[self.generator.marker_info.name]

    def open(self) -> None:
        """Build the generator and the two buffered streams (signal and markers); idempotent."""
        if self._generator is None:
            self._generator = SignalGenerator(self.settings)
        gen = self._generator
        if not self.streams:
            self.streams = {
                gen.info.name: BufferedStream.create(gen.info, self.buffer_seconds),
                gen.marker_info.name: BufferedStream.create(gen.marker_info),
            }

    def label_at_time(self, t: float) -> str | None:
        """Ground-truth label at ``pylsl.local_clock`` time ``t`` (None before the start or outside every entry)."""
        check_type(t, (int, float), "t")
        if math.isnan(self._t0):
            return None
        k = math.floor((float(t) - self._t0) * self.generator.srate + 1e-6)
        return self.generator.label_at(k) if k >= 0 else None

    def _run(self) -> None:
        gen = self.generator
        sig, mrk = self.signal_stream, self.marker_stream
        srate = gen.srate
        start = local_clock()
        self._t0 = t0 = start - gen.position / srate
        sig.stats.connected = mrk.stats.connected = True
        tick = 0
        try:
            while not self._stop.is_set():
                now = local_clock()
                due = math.floor((now - t0) * srate) + 1  # samples with t0 + k / srate <= now
                n = due - gen.position
                if n > 0:
                    k0 = gen.position
                    data, markers = gen.generate(n)
                    sig.push(data, t0 + np.arange(k0, k0 + n, dtype=np.float64) / srate, now)
                    if markers:
                        ts = t0 + np.array([m[0] for m in markers], dtype=np.float64) / srate
                        mrk.push([[m[1]] for m in markers], ts, now)
                tick += 1
                deadline = start + tick * self.chunk_s
                now = local_clock()
                if deadline < now:  # fell behind: skip the missed ticks instead of bursting
                    tick = math.ceil((now - start) / self.chunk_s)
                    deadline = start + tick * self.chunk_s
                self._stop.wait(max(0.0, deadline - now))
        finally:
            sig.stats.connected = mrk.stats.connected = False
