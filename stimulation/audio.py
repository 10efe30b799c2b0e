"""Auditory stimulation (Portiloop): short pink-noise bursts, timed, gated by the SafetySupervisor.

:class:`AudioStimulator` turns a request into a burst (15 ms of pink noise by default, 2.5 ms
raised-cosine ramps) on a *sink*:

- :class:`DeviceSink` — the sound card through ``sounddevice`` (PortAudio), a low-latency output
  stream whose callback copies queued bursts; the start time of a burst is the DAC time of its
  first sample (``outputBufferDacTime``), mapped onto ``pylsl.local_clock``;
- :class:`FileSink` — a WAV file (16-bit mono) that receives every burst back to back; its start
  time is the time the burst was written (headless rigs, tests);
- :class:`NullSink` — discards the samples (tests, dry runs).

:func:`open_sink` picks the sink: ``"device"`` falls back to a :class:`FileSink` with one clear
log line when PortAudio or an output device is missing (never a crash).

Every burst goes through :meth:`stimulation.safety.SafetySupervisor.deliver` as an
:class:`~stimulation.safety.AudioRequest` (level limit in dB SPL, rate limit), when a supervisor
is given. The request time (when the decoder asked, ``pylsl.local_clock``) and the start time of
each burst are recorded (:attr:`AudioStimulator.bursts`) and published as one JSON LSL marker on
a ``Markers`` stream (default ``closedloop-audio``)::

    {"event": "audio_burst", "seq": 3, "request_time": 1234.5671, "start_time": 1234.5702,
     "latency_ms": 3.1, "level_db": 45.0, "burst_ms": 15.0, "sink": "device", "source": "pipeline"}

stamped with the start time. Refused requests are published too (``"event": "audio_refused"``
with the supervisor's reason). The marker is pushed from a small publisher thread, never from
the audio callback.

Level: the sound level is an *estimate*: ``level_db`` dB SPL is produced by scaling the burst to
an RMS of ``10 ** ((level_db − full_scale_db_spl) / 20)`` of full scale, where
``full_scale_db_spl`` is the SPL a full-scale RMS signal produces at the ear with the rig's
headphones and volume setting (calibrate it once with a sound-level meter).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pylsl

from acquisition.lsl import make_outlet
from acquisition.stream import StreamInfo
from stimulation.safety import AudioRequest, Decision, SafetySupervisor

__all__ = [
    "AudioStimulator",
    "BurstRecord",
    "DeviceSink",
    "FileSink",
    "NullSink",
    "Sink",
    "burst_samples",
    "open_sink",
    "pink_noise",
]

log = logging.getLogger(__name__)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of pink (1/f power) noise, zero mean, unit RMS.

    White Gaussian noise shaped in the frequency domain by ``1/sqrt(f)`` (the DC bin is zeroed).

    Returns
    -------
    ndarray, shape (n,), float64
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 samples, got {n}.")
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = np.inf  # no DC
    x = np.fft.irfft(spec / np.sqrt(f), n)
    x -= x.mean()
    rms = float(np.sqrt(np.mean(x**2)))
    return x / rms if rms > 0 else x


def burst_samples(
    samplerate: int, burst_ms: float, level_db: float, full_scale_db_spl: float, rng: np.random.Generator
) -> np.ndarray:
    """One pink-noise burst: ``burst_ms`` long, raised-cosine ramps of min(2.5 ms, burst/4), scaled to ``level_db``.

    Parameters
    ----------
    samplerate : int
        Hz.
    burst_ms : float
        Length, ms.
    level_db : float
        Target level, dB SPL (see the module docstring for the calibration).
    full_scale_db_spl : float
        dB SPL of a full-scale RMS signal on this rig.
    rng : numpy Generator

    Returns
    -------
    ndarray, shape (n_samples,), float32 in [-1, 1]

    Raises
    ------
    ValueError
        When the level would need more than full scale (``level_db > full_scale_db_spl``).
    """
    n = max(2, round(samplerate * burst_ms / 1000.0))
    gain = 10.0 ** ((level_db - full_scale_db_spl) / 20.0)
    if gain > 1.0:
        raise ValueError(
            f"level {level_db:g} dB SPL exceeds this rig's full scale ({full_scale_db_spl:g} dB SPL); "
            "lower the level or recalibrate full_scale_db_spl."
        )
    x = pink_noise(n, rng) * gain
    ramp = max(1, min(round(samplerate * 0.0025), n // 4))
    w = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    x[:ramp] *= w
    x[n - ramp :] *= w[::-1]
    return np.clip(x, -1.0, 1.0).astype(np.float32)


@dataclass
class BurstRecord:
    """One burst as it happened.

    Attributes
    ----------
    seq : int
        Burst number in this stimulator.
    request_time : float
        When it was requested, ``pylsl.local_clock`` s.
    start_time : float
        When its first sample started playing (device) or was written (file/null), ``pylsl.local_clock`` s;
        NaN until known.
    level_db, burst_ms : float
        Level (dB SPL) and length (ms).
    sink : str
        ``device``, ``file`` or ``null``.
    source : str
        Who asked.
    """

    seq: int
    request_time: float
    start_time: float
    level_db: float
    burst_ms: float
    sink: str
    source: str
    started: threading.Event

    @property
    def latency_ms(self) -> float:
        """Request-to-start latency, ms."""
        return (self.start_time - self.request_time) * 1000.0

    def to_json(self) -> str:
        """The LSL marker text."""
        return json.dumps(
            {
                "event": "audio_burst",
                "seq": self.seq,
                "request_time": self.request_time,
                "start_time": self.start_time,
                "latency_ms": self.latency_ms,
                "level_db": self.level_db,
                "burst_ms": self.burst_ms,
                "sink": self.sink,
                "source": self.source,
            }
        )


class Sink(Protocol):
    """Where bursts go. ``play`` must return quickly; it sets ``record.start_time`` and ``record.started``."""

    kind: str
    samplerate: int

    def play(self, samples: np.ndarray, record: BurstRecord) -> None:
        """Queue ``samples`` (float32, mono, [-1, 1]) to play as soon as possible."""

    def stop(self) -> None:
        """Silence now: drop whatever is queued or playing."""

    def close(self) -> None:
        """Release the device or file."""


class NullSink:
    """Discards samples; the start time is the time ``play`` was called."""

    kind = "null"

    def __init__(self, samplerate: int = 44100) -> None:
        self.samplerate = int(samplerate)
        self.n_bursts = 0

    def play(self, samples: np.ndarray, record: BurstRecord) -> None:
        """Stamp the burst as started now."""
        record.start_time = pylsl.local_clock()
        record.started.set()
        self.n_bursts += 1

    def stop(self) -> None:
        """Nothing is playing."""

    def close(self) -> None:
        """Nothing to release."""


class FileSink:
    """Writes every burst, back to back, to a 16-bit mono WAV file (the marker stream carries the times).

    Parameters
    ----------
    path : str or Path
        The WAV file (its folder is created; an existing file is replaced).
    samplerate : int
        Hz.
    """

    kind = "file"

    def __init__(self, path: str | Path, samplerate: int = 44100) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.samplerate = int(samplerate)
        self._wav = wave.open(str(self.path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(self.samplerate)
        self._lock = threading.Lock()  # guards the file handle's lifetime and one write
        self.n_samples = 0
        self.n_bursts = 0

    def play(self, samples: np.ndarray, record: BurstRecord) -> None:
        """Append the burst to the file; it starts when written."""
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self._lock:
            if self._wav is None:
                raise RuntimeError(f"audio file sink {self.path} is closed.")
            record.start_time = pylsl.local_clock()
            self._wav.writeframesraw(pcm)
            self.n_samples += len(samples)
            self.n_bursts += 1
        record.started.set()

    def stop(self) -> None:
        """A written burst is not playing anywhere: nothing to silence."""

    def close(self) -> None:
        """Finish the WAV header and close the file. Safe twice."""
        with self._lock:
            if self._wav is not None:
                self._wav.close()
                self._wav = None  # type: ignore[assignment]


class DeviceSink:
    """The sound card through ``sounddevice`` (PortAudio): a low-latency mono output stream.

    ``play`` queues the burst; the stream's callback (PortAudio's thread) copies queued samples
    into the output buffer and stamps the first sample's DAC time, mapped onto
    ``pylsl.local_clock`` with the offset between the two clocks measured at that callback.

    Parameters
    ----------
    samplerate : int
        Hz.
    device : int or str, optional
        PortAudio output device (default device when None).
    latency : str or float
        PortAudio latency hint (``"low"``).

    Raises
    ------
    OSError
        PortAudio missing (``sounddevice`` import fails) or no output device.
    """

    kind = "device"

    def __init__(self, samplerate: int = 44100, device: int | str | None = None, latency: str | float = "low") -> None:
        import sounddevice as sd  # OSError when PortAudio is missing

        self.samplerate = int(samplerate)
        self._queue: deque[tuple[np.ndarray, BurstRecord]] = deque()
        self._current: tuple[np.ndarray, int, BurstRecord] | None = None
        self._lock = threading.Lock()  # guards the queue and the current burst reference only
        self.n_underflows = 0
        self.n_bursts = 0
        try:
            self._stream = sd.OutputStream(
                samplerate=self.samplerate,
                channels=1,
                dtype="float32",
                latency=latency,
                device=device,
                callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            raise OSError(f"no usable audio output device: {exc}") from exc

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's thread: no allocation beyond slicing, no logging, no LSL
        if status:
            self.n_underflows += 1
        outdata.fill(0.0)
        pos = 0
        offset = pylsl.local_clock() - float(time_info.currentTime)
        dac = float(time_info.outputBufferDacTime)
        while pos < frames:
            with self._lock:
                if self._current is None:
                    if not self._queue:
                        return
                    samples, rec = self._queue.popleft()
                    self._current = (samples, 0, rec)
                samples, done, rec = self._current
            if done == 0:
                rec.start_time = dac + offset + pos / self.samplerate
                rec.started.set()
            n = min(frames - pos, len(samples) - done)
            outdata[pos : pos + n, 0] = samples[done : done + n]
            pos += n
            done += n
            with self._lock:
                self._current = None if done >= len(samples) else (samples, done, rec)

    def play(self, samples: np.ndarray, record: BurstRecord) -> None:
        """Queue the burst for the next callback."""
        with self._lock:
            self._queue.append((np.asarray(samples, dtype=np.float32), record))
        self.n_bursts += 1

    def stop(self) -> None:
        """Drop queued and playing bursts (silence from the next callback)."""
        with self._lock:
            self._queue.clear()
            self._current = None

    def close(self) -> None:
        """Stop and close the stream."""
        self.stop()
        try:
            self._stream.stop()
            self._stream.close()
        except Exception as exc:  # noqa: BLE001 - closing a broken device must not raise on shutdown
            log.warning("closing the audio stream failed: %r", exc)


def open_sink(kind: str, *, samplerate: int = 44100, path: str | Path | None = None) -> Sink:
    """The sink a config names, falling back from ``device`` to a WAV file when there is no audio device.

    Parameters
    ----------
    kind : {"device", "file", "null"}
    samplerate : int
        Hz.
    path : str or Path, optional
        WAV file of the file sink (and of the fallback); required for ``"file"``.
    """
    if kind == "null":
        return NullSink(samplerate)
    if kind == "file":
        if path is None:
            raise ValueError("the audio file sink needs a path (a .wav file).")
        return FileSink(path, samplerate)
    if kind != "device":
        raise ValueError(f"audio sink must be 'device', 'file' or 'null', got {kind!r}.")
    try:
        return DeviceSink(samplerate)
    except (OSError, ImportError) as exc:
        if path is None:
            log.warning("no audio device (%s); audio bursts go to a null sink (no file path given)", exc)
            return NullSink(samplerate)
        log.warning("no audio device (%s); audio bursts are written to %s instead", exc, path)
        return FileSink(path, samplerate)


class AudioStimulator:
    """Pink-noise bursts on a sink, gated by the SafetySupervisor, timed and published on LSL.

    Parameters
    ----------
    sink : Sink
        Where the samples go (:func:`open_sink`).
    level_db : float
        Default burst level, dB SPL.
    burst_ms : float
        Default burst length, ms (Portiloop: 15 ms).
    full_scale_db_spl : float
        dB SPL of a full-scale RMS signal on this rig (calibration).
    supervisor : SafetySupervisor, optional
        Gate of every burst (level and rate limits, armed state); None plays unconditionally
        (benchmarks, calibration).
    marker_stream : str or None
        Name of the LSL ``Markers`` outlet (None: no outlet).
    seed : int
        Seed of the noise.

    Attributes
    ----------
    on_event : callable or None
        ``on_event(kind, details, time)`` for every burst (``"audio_burst"``, at its start time) and
        refusal (``"audio_refused"``), on the marker thread; the Session records them in the XDF.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        level_db: float = 45.0,
        burst_ms: float = 15.0,
        full_scale_db_spl: float = 85.0,
        supervisor: SafetySupervisor | None = None,
        marker_stream: str | None = "closedloop-audio",
        seed: int = 0,
    ) -> None:
        if not (math.isfinite(burst_ms) and burst_ms > 0):
            raise ValueError(f"burst_ms must be a finite number > 0 ms, got {burst_ms!r}.")
        self.sink = sink
        self.level_db = float(level_db)
        self.burst_ms = float(burst_ms)
        self.full_scale_db_spl = float(full_scale_db_spl)
        self.supervisor = supervisor
        self._rng = np.random.default_rng(seed)
        self.bursts: list[BurstRecord] = []
        self.refused: list[Decision] = []
        self._seq = 0
        self._outlet: pylsl.StreamOutlet | None = None
        if marker_stream:
            info = StreamInfo.simple(
                marker_stream,
                "Markers",
                ["audio"],
                0.0,
                channel_format="string",
                source_id=f"closedloop-{marker_stream}",
            )
            self._outlet = make_outlet(info)
        self._pending: queue.SimpleQueue[BurstRecord | tuple[str, float] | None] = queue.SimpleQueue()
        self.on_event: Callable[[str, dict[str, Any], float], None] | None = None
        self._publisher = threading.Thread(target=self._publish_loop, name="audio-markers", daemon=True)
        self._publisher.start()
        self._closed = False

    # ------------------------------------------------------------------ bursts
    def burst(
        self,
        *,
        request_time: float | None = None,
        level_db: float | None = None,
        burst_ms: float | None = None,
        source: str = "pipeline",
    ) -> BurstRecord | None:
        """Ask for one burst; returns its record (start time filled in when it starts) or None if refused.

        Parameters
        ----------
        request_time : float, optional
            When the burst was asked for (``pylsl.local_clock``; e.g. the command's issue time); now when None.
        level_db, burst_ms : float, optional
            Override the defaults.
        source : str
            Who asks (audit log and marker).
        """
        if self._closed:
            raise RuntimeError("the audio stimulator is closed.")
        t_req = pylsl.local_clock() if request_time is None else float(request_time)
        level = self.level_db if level_db is None else float(level_db)
        length = self.burst_ms if burst_ms is None else float(burst_ms)
        self._seq += 1
        rec = BurstRecord(self._seq, t_req, math.nan, level, length, self.sink.kind, source, threading.Event())
        samples = burst_samples(self.sink.samplerate, length, level, self.full_scale_db_spl, self._rng)

        def send(_decision: Decision) -> None:
            self.sink.play(samples, rec)

        if self.supervisor is not None:
            decision = self.supervisor.deliver(AudioRequest(level, length, source=source), send)
            if not decision.allowed:
                self.refused.append(decision)
                self._pending.put((decision.reason.value, t_req))
                return None
        else:
            send(None)  # type: ignore[arg-type]
        self.bursts.append(rec)
        self._pending.put(rec)
        return rec

    def safe_state(self, reason: str) -> None:
        """Silence now (drop queued and playing bursts)."""
        self.sink.stop()

    def _publish_loop(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            if isinstance(item, tuple):
                refused = {"event": "audio_refused", "reason": item[0], "request_time": item[1]}
                now = pylsl.local_clock()
                if self._outlet is not None:
                    self._outlet.push_sample([json.dumps(refused)], now)
                self._notify("audio_refused", refused, now)
                continue
            if not item.started.wait(1.0):
                log.warning("audio burst %d did not start within 1 s of its request (sink %s)", item.seq, item.sink)
                continue
            text = item.to_json()
            if self._outlet is not None:
                self._outlet.push_sample([text], item.start_time)
            self._notify("audio_burst", json.loads(text), item.start_time)

    def _notify(self, kind: str, details: dict[str, Any], t: float) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, details, t)
        except Exception:  # a broken recorder hook must not stop the markers
            log.exception("audio on_event hook failed")

    def wait_published(self, timeout_s: float = 2.0) -> bool:
        """Wait until every queued marker has been pushed (tests, shutdown); True when done."""
        deadline = time.monotonic() + timeout_s
        while not self._pending.empty():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        """Silence, stop the marker thread, close the sink. Safe twice."""
        if self._closed:
            return
        self._closed = True
        self.sink.stop()
        self._pending.put(None)
        self._publisher.join(2.0)
        self.sink.close()
        self._outlet = None
