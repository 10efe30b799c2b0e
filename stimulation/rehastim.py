"""Driver of the Hasomed RehaStim 2 through ``pysciencemode`` (ScienceMode 2, channel-list mode).

:class:`RehaStimStimulator` implements :class:`~stimulation.stimulator.Stimulator` on top of
``pysciencemode.Rehastim2``. ``pysciencemode`` is an optional extra: it is imported when a
driver is created, and its absence is a clear :class:`ImportError` naming the package.

How our commands map onto the library (checked by tests/test_stim_rehastim.py):

================================  =============================================================
Stimulator                        pysciencemode.Rehastim2
================================  =============================================================
constructor                       ``Rehastim2(port, show_log=False)`` — on a worker thread with a
                                  timeout, because the library waits for the device's init
                                  packet without one (no device -> :class:`StimulatorTimeoutError`)
``set_channel(ch, ...)``          stored; when on, pushed as below
``stim_on`` / changed settings    ``init_channel(stimulation_interval=round(1000/f), [Channel..])``
                                  when the set of configured channels or the rate changed, then
                                  ``start_stimulation(upd_list_channels=[Channel..])`` with the
                                  amplitude of channels that are off set to 0 mA
``stim_off`` (last channel off)   ``pause_stimulation()`` (all amplitudes 0)
``disarm`` / ``safe_state``       ``pause_stimulation()``
``estop``                         ``end_stimulation()`` (StopChannelListMode) and a host-latched fault
``close``                         ``end_stimulation()``, ``disconnect()``, ``close_port()``
================================  =============================================================

Channel ``ch`` (0-based) is the device's channel ``ch + 1``; every channel is a single biphasic
pulse (``mode = "Single"``) of the given current (mA, 0-130) and pulse width (µs, 0-500). The
RehaStim 2 has **one** stimulation rate for all channels (the main stimulation interval, 8-1025 ms,
i.e. about 1-125 Hz): a ``set_channel`` whose frequency differs from another configured channel's
is refused.

What the RehaStim 2 does not offer is done on the host and said so: arming (the device has no
armed state; ``stim_on`` is refused until :meth:`arm`), a latched fault, and a heartbeat watchdog
(:meth:`start_heartbeat` runs a host thread that pauses stimulation when :meth:`heartbeat` is not
called for ``watchdog_s``; it protects against a hung pipeline, not a dead host — the library's own
ScienceMode watchdog packets keep the device's link alive while the process runs). There is no
read-back: :meth:`stimulator_status` reports what was last sent (``details["readback"] = False``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from stimulation.stimulator import (
    ChannelState,
    Stimulator,
    StimulatorError,
    StimulatorLinkError,
    StimulatorNackError,
    StimulatorStatus,
    StimulatorTimeoutError,
)

__all__ = ["REHASTIM2_CHANNELS", "RehaStimStimulator"]

log = logging.getLogger(__name__)

REHASTIM2_CHANNELS = 8
MAX_CURRENT_MA = 130.0
MAX_PULSE_WIDTH_US = 500
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 8, 1025


def _import_pysciencemode() -> Any:
    try:
        import pysciencemode
    except ImportError as exc:
        raise ImportError(
            "RehaStimStimulator needs the optional package 'pysciencemode' (pip install pysciencemode); "
            f"it could not be imported: {exc}"
        ) from exc
    return pysciencemode


@dataclass
class _Setting:
    current_ma: float
    pulse_width_us: int
    frequency_hz: float


class RehaStimStimulator(Stimulator):
    """Hasomed RehaStim 2 over its USB serial port.

    Parameters
    ----------
    port : str
        Serial port of the RehaStim 2 (e.g. ``/dev/ttyUSB0``, ``COM3``).
    timeout_s : float
        How long to wait for the device's init packet when connecting, s.
    watchdog_s : float
        Host watchdog: stimulation is paused when no :meth:`heartbeat` arrives for this long, s.
    device_factory : callable, optional
        ``device_factory(port) -> Rehastim2``-like object; defaults to
        ``pysciencemode.Rehastim2(port, show_log=False)`` (tests pass a recorder of calls).

    Raises
    ------
    ImportError
        ``pysciencemode`` is not installed.
    StimulatorLinkError
        The port cannot be opened.
    StimulatorTimeoutError
        No RehaStim 2 answered within ``timeout_s``.
    """

    def __init__(
        self,
        port: str,
        *,
        timeout_s: float = 2.0,
        watchdog_s: float = 0.5,
        device_factory: Callable[[str], Any] | None = None,
    ) -> None:
        if not isinstance(port, str) or not port:
            raise TypeError(f"port must be a non-empty string (a serial port path), got {port!r}.")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0 s, got {timeout_s!r}.")
        self.port = port
        self.name = f"rehastim2:{port}"
        self.timeout_s = float(timeout_s)
        self.watchdog_s = float(watchdog_s)
        self._psm = _import_pysciencemode()
        factory = device_factory or (lambda p: self._psm.Rehastim2(p, show_log=False))
        self._dev = self._connect(factory)
        self._lock = threading.RLock()  # serialises calls into the library (it is not thread-safe)
        self._settings: dict[int, _Setting] = {}
        self._on: set[int] = set()
        self._initialised: tuple[tuple[int, ...], int] | None = None
        self._armed = False
        self._fault: str | None = None
        self._closed = False
        self._last_hb = time.monotonic()
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self.n_watchdog_trips = 0

    def _connect(self, factory: Callable[[str], Any]) -> Any:
        import serial

        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["dev"] = factory(self.port)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                box["error"] = exc

        t = threading.Thread(target=run, name=f"rehastim-connect:{self.port}", daemon=True)
        t.start()
        t.join(self.timeout_s)
        if t.is_alive():
            raise StimulatorTimeoutError(
                f"no RehaStim 2 answered on {self.port} within {self.timeout_s:g} s; check that it is switched on, "
                "connected and in ScienceMode (the library keeps waiting for its init packet until the port closes)",
                "connect",
            )
        if "error" in box:
            exc = box["error"]
            if isinstance(exc, serial.SerialException | OSError):
                raise StimulatorLinkError(f"cannot open RehaStim 2 port {self.port}: {exc}", "connect") from exc
            raise StimulatorError(f"RehaStim 2 on {self.port} failed to connect: {exc!r}", "connect") from exc
        return box["dev"]

    # ------------------------------------------------------------------ lifecycle
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def n_channels(self) -> int:
        """8 channels."""
        return REHASTIM2_CHANNELS

    def close(self) -> None:
        """Stop the watchdog, end stimulation, disconnect and close the port. Safe twice."""
        if self._closed:
            return
        self.stop_heartbeat()
        with self._lock:
            for what in ("end_stimulation", "disconnect", "close_port"):
                try:
                    getattr(self._dev, what)()
                except Exception as exc:  # noqa: BLE001 - keep releasing; logged
                    log.warning("%s: %s() failed on close: %r", self.name, what, exc)
            self._on.clear()
            self._closed = True

    # ------------------------------------------------------------------ state
    def _check_open(self, what: str) -> None:
        if self._closed:
            raise StimulatorLinkError(f"{what}: {self.name} is closed; open a new RehaStimStimulator", what)

    def hello(self) -> dict[str, Any]:
        """Identity (the RehaStim 2 reports none beyond its init packet): device, port, channel count, limits."""
        self._check_open("hello")
        return {
            "device": "RehaStim 2",
            "port": self.port,
            "n_channels": REHASTIM2_CHANNELS,
            "max_current_ma": MAX_CURRENT_MA,
            "max_pulse_width_us": MAX_PULSE_WIDTH_US,
            "frequency_range_hz": (1000.0 / MAX_INTERVAL_MS, 1000.0 / MIN_INTERVAL_MS),
        }

    def arm(self) -> None:
        """Allow ``stim_on`` (host-side: the RehaStim 2 has no armed state)."""
        self._check_open("arm")
        if self._fault is not None:
            raise StimulatorNackError(f"arm refused: fault {self._fault!r} is latched; call clear_fault()", "arm")
        self._armed = True
        self._last_hb = time.monotonic()

    def disarm(self) -> None:
        """Every channel to 0 mA (pause), stimulation refused until armed again."""
        self._check_open("disarm")
        self._armed = False
        self.stim_off(None)

    def stimulator_status(self) -> StimulatorStatus:
        """What was last sent (no read-back from the RehaStim 2)."""
        chans = []
        for ch in range(REHASTIM2_CHANNELS):
            s = self._settings.get(ch)
            on = ch in self._on
            chans.append(
                ChannelState(
                    current_ma=s.current_ma if (s and on) else 0.0,
                    target_ma=s.current_ma if s else 0.0,
                    pulse_width_us=float(s.pulse_width_us) if s else 0.0,
                    frequency_hz=s.frequency_hz if s else 0.0,
                    on=on,
                )
            )
        if self._fault is not None:
            state = "fault"
        elif self._on:
            state = "stimulating"
        else:
            state = "armed" if self._armed else "disarmed"
        mask = sum(1 << c for c in self._on)
        return StimulatorStatus(
            state, self._fault, tuple(chans), mask, {"readback": False, "watchdog_trips": self.n_watchdog_trips}
        )

    # ------------------------------------------------------------------ stimulation
    def set_channel(self, channel: int, *, current_ma: float, pulse_width_us: float, frequency_hz: float) -> None:
        """Pulse parameters of one channel (pushed at once when it is on).

        Raises
        ------
        ValueError
            Channel outside 0..7, current outside 0-130 mA, pulse width outside 0-500 µs, or a rate
            outside 1-125 Hz.
        StimulatorNackError
            A fault is latched, or the rate differs from another configured channel's (one rate per device).
        """
        self._check_open("set_channel")
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < REHASTIM2_CHANNELS:
            raise ValueError(f"channel must be 0..{REHASTIM2_CHANNELS - 1}, got {channel!r}.")
        if not 0 <= current_ma <= MAX_CURRENT_MA:
            raise ValueError(
                f"current_ma must be in [0, {MAX_CURRENT_MA:g}] mA for the RehaStim 2, got {current_ma!r}."
            )
        if not 0 <= pulse_width_us <= MAX_PULSE_WIDTH_US:
            raise ValueError(f"pulse_width_us must be in [0, {MAX_PULSE_WIDTH_US}] µs, got {pulse_width_us!r}.")
        interval = self._interval_ms(frequency_hz)
        if self._fault is not None:
            raise StimulatorNackError(f"set_channel refused: fault {self._fault!r} is latched", "set_channel")
        for other, s in self._settings.items():
            if other != channel and self._interval_ms(s.frequency_hz) != interval:
                raise StimulatorNackError(
                    f"set_channel refused: the RehaStim 2 has one stimulation rate for all channels; channel "
                    f"{other} runs at {s.frequency_hz:g} Hz, channel {channel} asked for {frequency_hz:g} Hz",
                    "set_channel",
                )
        with self._lock:
            self._settings[channel] = _Setting(float(current_ma), round(pulse_width_us), float(frequency_hz))
            if channel in self._on:
                self._push()

    @staticmethod
    def _interval_ms(frequency_hz: float) -> int:
        if not (math.isfinite(frequency_hz) and frequency_hz > 0):
            raise ValueError(f"frequency_hz must be a finite number > 0 Hz, got {frequency_hz!r}.")
        interval = round(1000.0 / frequency_hz)
        if not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
            raise ValueError(
                f"frequency_hz must give a stimulation interval of {MIN_INTERVAL_MS}-{MAX_INTERVAL_MS} ms "
                f"(about 1-125 Hz) on the RehaStim 2, got {frequency_hz!r} Hz."
            )
        return interval

    def _channels(self) -> list[Any]:
        Channel = self._psm.Channel
        return [
            Channel(
                mode="Single",
                no_channel=ch + 1,
                amplitude=s.current_ma if ch in self._on else 0.0,
                pulse_width=s.pulse_width_us,
                device_type="Rehastim2",
            )
            for ch, s in sorted(self._settings.items())
        ]

    def _push(self) -> None:
        """Send the current settings (caller holds the lock)."""
        if not self._on:
            self._dev.pause_stimulation()
            return
        interval = self._interval_ms(next(iter(self._settings.values())).frequency_hz)
        key = (tuple(sorted(self._settings)), interval)
        channels = self._channels()
        if self._initialised != key:
            self._dev.init_channel(stimulation_interval=interval, list_channels=channels)
            self._initialised = key
        self._dev.start_stimulation(upd_list_channels=channels)

    def stim_on(self, channels: int | Iterable[int]) -> None:
        """Start the given channel(s).

        Raises
        ------
        StimulatorNackError
            Not armed, a fault latched, or a channel never configured.
        """
        self._check_open("stim_on")
        chans = {channels} if isinstance(channels, int) else set(channels)
        if self._fault is not None:
            raise StimulatorNackError(f"stim_on refused: fault {self._fault!r} is latched", "stim_on")
        if not self._armed:
            raise StimulatorNackError("stim_on refused: not armed; call arm() first", "stim_on")
        missing = sorted(c for c in chans if c not in self._settings)
        if missing:
            raise StimulatorNackError(f"stim_on refused: channel(s) {missing} never configured", "stim_on")
        with self._lock:
            self._on |= chans
            self._push()

    def stim_off(self, channels: int | Iterable[int] | None = None) -> None:
        """Stop the given channel(s), every channel when None."""
        self._check_open("stim_off")
        with self._lock:
            if channels is None:
                self._on.clear()
            else:
                self._on -= {channels} if isinstance(channels, int) else set(channels)
            if self._initialised is not None:
                self._push()

    # ------------------------------------------------------------------ safety
    def heartbeat(self) -> float:
        """Feed the host watchdog; returns the host time (s, monotonic)."""
        self._last_hb = time.monotonic()
        return self._last_hb

    def start_heartbeat(self, rate_hz: float | None = None) -> None:
        """Start the host watchdog thread: stimulation pauses when :meth:`heartbeat` stops for ``watchdog_s``."""
        if self._hb_thread is not None and self._hb_thread.is_alive():
            raise RuntimeError("the RehaStim watchdog is already running; call stop_heartbeat() first.")
        self._hb_stop = threading.Event()
        self._last_hb = time.monotonic()
        self._hb_thread = threading.Thread(target=self._watchdog, name="rehastim-watchdog", daemon=True)
        self._hb_thread.start()

    def stop_heartbeat(self) -> None:
        """Stop the host watchdog thread."""
        if self._hb_thread is not None:
            self._hb_stop.set()
            if self._hb_thread is not threading.current_thread():
                self._hb_thread.join(2.0)
        self._hb_thread = None

    def _watchdog(self) -> None:
        period = min(0.05, self.watchdog_s / 4)
        while not self._hb_stop.wait(period):
            if self._on and time.monotonic() - self._last_hb > self.watchdog_s:
                self.n_watchdog_trips += 1
                log.error("%s: no heartbeat for %.3f s; stimulation paused", self.name, self.watchdog_s)
                try:
                    self.stim_off(None)
                except Exception as exc:  # noqa: BLE001 - nothing else can be done from here; logged
                    log.error("%s: pausing stimulation failed: %r", self.name, exc)

    def estop(self) -> None:
        """End stimulation now (StopChannelListMode) and latch a host-side fault."""
        with self._lock:
            self._fault = "estop"
            self._armed = False
            self._on.clear()
            if not self._closed:
                self._dev.end_stimulation()
            self._initialised = None

    def clear_fault(self) -> None:
        """Leave the latched fault for ``disarmed``."""
        self._fault = None
        self._armed = False

    def safe_state(self, reason: str) -> None:
        """Every channel to 0 mA now."""
        log.info("%s: safe state (%s)", self.name, reason)
        self.stim_off(None)
