"""A simulated knee that moves with what the stimulator *delivers*, as an acquisition source.

This is what closes the NMES loop on the simulator (``configs/nmes_sim.toml``)::

    KneePlantSource (knee angle, 200 Hz) -> NMES controller (RISE, 5 ms) -> SafetySupervisor
        -> stimulator output (SerialStimulator -> stimbox-sim on a pty)
        -> delivered pulse width / current, as the device reports it -> KneePlantSource

The plant reads its input through ``feedback()`` — a callable the Session binds to the
stimulator output's :meth:`~app.outputs.StimulatorOutput.delivered`, i.e. the pulse width and
current the *device* confirmed (ACKs, STATUS read-back, and EVENT frames when the device turns an
output off by itself: watchdog, e-stop). If the device stops, the knee falls; if the stream
stops, the supervisor zeroes the stimulator.

The knee itself is :class:`stimulation.nmes.knee_model.KneeModel` (pendulum, passive
stiffness, activation dynamics, fatigue, transport delay, sensor noise; parameters and
references there). The plant's pulse width is the delivered pulse width scaled by the delivered
current relative to the output's nominal current (``min(1, I / I_ref)``), so the supervisor's
and the device's current ramps reach the muscle too. ``θ = 0`` is the shank hanging vertically,
positive is extension, degrees on the stream.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl

from acquisition.source import BufferedStream, ErrorCallback, Source
from acquisition.stream import StreamInfo
from stimulation.nmes.knee_model import NOMINAL_KNEE, KneeModel, draw_subjects

__all__ = ["KneePlantSource", "PlantInput", "make_plant"]


@dataclass(frozen=True)
class PlantInput:
    """What reaches the muscle: the delivered pulse width (µs) and current (mA); zeros when off."""

    pulse_width_us: float = 0.0
    current_ma: float = 0.0


def make_plant(*, fatigue: bool, seed: int, noise_deg: float | None = None, delay_s: float | None = None) -> KneeModel:
    """The knee :class:`KneePlantSource` drives: the nominal subject, or one drawn by ``seed`` (> 0).

    Parameters
    ----------
    fatigue : bool
        Let the muscle tire.
    seed : int
        0: the nominal subject; > 0: a subject with parameters varied around it (and that noise seed).
    noise_deg : float, optional
        Sensor noise, degrees rms (the subject's value when None).
    delay_s : float, optional
        Electromechanical delay, s (the subject's value when None).
    """
    params = NOMINAL_KNEE if seed == 0 else draw_subjects(1, seed)[0]
    over: dict[str, float] = {}
    if noise_deg is not None:
        over["noise_deg"] = float(noise_deg)
    if delay_s is not None:
        over["delay_s"] = float(delay_s)
    if over:
        params = dataclasses.replace(params, **over)
    return KneeModel(params, fatigue=fatigue, noise=True, seed=seed)


class KneePlantSource(Source):
    """Real-time source of the simulated knee angle (one channel ``knee_angle``, degrees).

    Parameters
    ----------
    name : str
        Source name in the session.
    srate : float
        Sampling (and integration) rate, Hz.
    seed : int
        0: the nominal subject; > 0: a subject drawn around it (see :func:`make_plant`).
    noise_deg : float
        Sensor noise, degrees rms.
    delay_s : float
        Electromechanical delay between the delivered stimulation and the muscle, s.
    fatigue : bool
        Model muscle fatigue.
    current_ref_ma : float
        Current at which the delivered pulse width counts in full, mA (the output's nominal current).
    chunk_s : float
        Tick of the acquisition thread, s (absolute deadlines).
    on_error : callable, optional
        See :class:`~acquisition.source.Source`.
    buffer_seconds : float
        Ring-buffer length, s.

    Notes
    -----
    ``feedback`` must be bound (:meth:`bind_feedback`) before :meth:`start`; it is called on the
    acquisition thread once per sample and must return quickly (it reads a cached value).
    """

    def __init__(
        self,
        name: str = "knee",
        *,
        srate: float = 200.0,
        seed: int = 0,
        noise_deg: float | None = None,
        delay_s: float | None = None,
        fatigue: bool = True,
        current_ref_ma: float = 30.0,
        chunk_s: float = 0.01,
        on_error: ErrorCallback | None = None,
        buffer_seconds: float = 30.0,
    ) -> None:
        super().__init__(name, on_error)
        if not (math.isfinite(srate) and srate > 0):
            raise ValueError(f"srate must be a finite number > 0 Hz, got {srate!r}.")
        self.srate = float(srate)
        self.seed = int(seed)
        self.chunk_s = float(chunk_s)
        self.buffer_seconds = float(buffer_seconds)
        self.current_ref_ma = float(current_ref_ma)
        self.plant = make_plant(fatigue=fatigue, seed=self.seed, noise_deg=noise_deg, delay_s=delay_s)
        self._feedback: Callable[[], PlantInput] | None = None
        self.last_input = PlantInput()
        self.n_samples = 0

    def bind_feedback(self, feedback: Callable[[], PlantInput], current_ref_ma: float | None = None) -> None:
        """Set the callable returning what the stimulator delivers now (and the output's nominal current, mA)."""
        if not callable(feedback):
            raise TypeError(f"feedback must be a callable returning a PlantInput, got {feedback!r}.")
        self._feedback = feedback
        if current_ref_ma is not None:
            self.current_ref_ma = float(current_ref_ma)

    @property
    def signal_stream(self) -> BufferedStream:
        """The knee-angle stream."""
        return self.streams["knee_angle"]

    def open(self) -> None:
        """Create the stream (no device to open)."""
        if self.streams:
            return
        info = StreamInfo.simple(
            f"{self.name}-knee",
            "Kinematics",
            ["knee_angle"],
            self.srate,
            unit="degrees",
            channel_format="float32",
            source_id=f"closedloop-knee-plant-{self.name}-{self.seed}",
        )
        self.streams["knee_angle"] = BufferedStream.create(info, self.buffer_seconds)

    def _run(self) -> None:
        if self._feedback is None:
            raise RuntimeError(
                f"knee plant {self.name!r} has no feedback bound; call bind_feedback() with the stimulator "
                "output's delivered() before start()."
            )
        stream = self.signal_stream
        stream.stats.connected = True
        dt = 1.0 / self.srate
        t0 = pylsl.local_clock()
        k = 0
        t_wall0 = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            tick += 1
            now = pylsl.local_clock()
            n = int((now - t0) * self.srate) + 1 - k
            if n > 0:
                angles = np.empty((n, 1), dtype=np.float32)
                for i in range(n):
                    inp = self._feedback()
                    self.last_input = inp
                    scale = min(max(inp.current_ma / self.current_ref_ma, 0.0), 1.0)
                    self.plant.advance(dt, inp.pulse_width_us * scale)
                    angles[i, 0] = self.plant.measure()
                stamps = t0 + (k + np.arange(n)) * dt
                k += n
                self.n_samples = k
                stream.push(angles, stamps, now)
            deadline = t_wall0 + tick * self.chunk_s
            self._stop.wait(max(0.0, deadline - time.monotonic()))
        stream.stats.connected = False
