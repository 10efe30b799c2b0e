"""The teleop bridge: an Output that turns decoder Commands into guarded back-end velocity calls.

``send(command)`` (called on a pipeline's decoding thread, or directly) arbitrates the command
in the :class:`~.controller.TeleopController` and calls the back end at once; the time from
receiving the command to the start of the back-end call is measured with
``time.perf_counter`` and kept in :attr:`TeleopBridge.records`. ``tick()`` advances the
controller without a command (dead-man timeout, acceleration ramps, guards) and is called
every ``control_period_s`` by the bridge's own thread (:meth:`start`) or by the caller in
simulated time (task benchmark, tests).

Subscribe it to a session with ``session.subscribe(bridge.send)`` or list it among the
session's outputs (it has ``name``, ``send``, ``safe_state`` and ``close``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl

from app.pipeline import Command

from .backend import TeleopBackend
from .controller import ArbitrationEntry, TeleopController
from .joints import DOF_NAMES
from .mapping import TeleopConfig

__all__ = ["CommandRecord", "TeleopBridge"]


@dataclass(frozen=True)
class CommandRecord:
    """A command, what the arbitration decided, its latency and its effect.

    Attributes
    ----------
    entry : ArbitrationEntry
        The arbitration decision (taken/refused and why).
    latency_s : float
        Command received -> back-end call start, s (``time.perf_counter``).
    velocity : tuple of float
        Velocities sent to the back end (unit/s, :data:`DOF_NAMES` order): the effect.
    positions : tuple of float
        Positions the guards used (m/rad).
    """

    entry: ArbitrationEntry
    latency_s: float
    velocity: tuple[float, ...]
    positions: tuple[float, ...]

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return {
            **self.entry.to_dict(),
            "latency_ms": self.latency_s * 1e3,
            "velocity": dict(zip(DOF_NAMES, (round(v, 5) for v in self.velocity), strict=True)),
            "positions": dict(zip(DOF_NAMES, (round(v, 5) for v in self.positions), strict=True)),
        }


class TeleopBridge:
    """Commands -> :class:`TeleopController` -> :class:`~.backend.TeleopBackend`.

    Parameters
    ----------
    backend : TeleopBackend
        Where velocities go (``MujocoBackend``, ``StretchBodyBackend``, ``RosbridgeBackend``).
    config : TeleopConfig
        Mapping and safety rules.
    clock : callable, optional
        Controller clock in s (default ``pylsl.local_clock``; the task benchmark passes the
        simulation time).
    name : str
        Output name.
    start : ndarray, optional
        Initial DoF position estimate (used while the back end reports none).
    """

    def __init__(
        self,
        backend: TeleopBackend,
        config: TeleopConfig,
        *,
        clock: Callable[[], float] | None = None,
        name: str = "teleop",
        start: np.ndarray | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.config = config
        self.clock = clock or pylsl.local_clock
        q0 = backend.positions() if start is None else start
        if q0 is not None:
            q0 = np.where(np.isfinite(q0), q0, 0.0)
        pose = backend.base_pose() or (0.0, 0.0, 0.0)
        self.controller = TeleopController(config, start=q0, start_pose=pose)
        self.records: list[CommandRecord] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_wall: float | None = None
        self.n_ticks = 0

    # ------------------------------------------------------------- commands
    def _feedback(self) -> tuple[np.ndarray | None, tuple[float, float, float] | None]:
        return self.backend.positions(), self.backend.base_pose()

    def send(self, command: Command) -> None:
        """Arbitrate ``command`` and call the back end (any thread; returns after the call)."""
        t_recv = time.perf_counter()
        with self._lock:
            now = self.clock()
            entry = self.controller.on_command(command, now)
            q, pose = self._feedback()
            v = self.controller.update(now, q, pose)
            t_call = time.perf_counter()
            self.backend.command_velocities(v)
            self.records.append(
                CommandRecord(entry, t_call - t_recv, tuple(v.tolist()), tuple(self.controller.q.tolist()))
            )

    def tick(self) -> np.ndarray:
        """Advance the controller without a command and send the velocities (returns them)."""
        with self._lock:
            now = self.clock()
            q, pose = self._feedback()
            v = self.controller.update(now, q, pose)
            self.backend.command_velocities(v)
            self.n_ticks += 1
            return v

    def render(self, camera: str = "overview", width: int = 320, height: int = 240) -> np.ndarray | None:
        """A camera frame of a simulated back end (None for real robots), taken under the bridge lock.

        Call it from one thread only (e.g. the GUI thread): the offscreen GL context is made
        current on the calling thread.
        """
        render = getattr(self.backend, "render", None)
        if render is None:
            return None
        with self._lock:
            return render(camera, width, height)

    @property
    def log(self) -> list[ArbitrationEntry]:
        """The arbitration log (commands and safety events)."""
        return self.controller.log

    def latencies_ms(self) -> np.ndarray:
        """Command -> back-end call latencies in ms."""
        return np.array([r.latency_s for r in self.records]) * 1e3

    # --------------------------------------------------------------- thread
    def start(self) -> None:
        """Tick every ``control_period_s`` on a thread (absolute deadlines); a real-time sim steps too."""
        if self._thread is not None:
            raise RuntimeError("teleop bridge is already running; call stop() first.")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"teleop-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.config.control_period_s
        realtime_sim = getattr(self.backend, "realtime", False) and hasattr(self.backend, "advance")
        next_t = time.monotonic()
        last = next_t
        while not self._stop.is_set():
            now_w = time.monotonic()
            if realtime_sim:
                with self._lock:
                    self.backend.advance(now_w - last)  # type: ignore[attr-defined]
            last = now_w
            self.tick()
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -period:  # fell behind: skip missed ticks instead of bursting
                next_t = time.monotonic()
                delay = 0.0
            self._stop.wait(max(0.0, delay))

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the tick thread (if running)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None

    # ----------------------------------------------------------- safe state
    def safe_state(self, reason: str) -> None:
        """Halt: zero velocities now, refuse commands until :meth:`resume`."""
        with self._lock:
            self.controller.halt(self.clock(), reason)
            self.backend.stop()

    def resume(self) -> None:
        """Accept commands again after a safe state."""
        with self._lock:
            self.controller.resume(self.clock())

    def close(self) -> None:
        """Stop the thread, zero the robot and close the back end."""
        self.stop()
        with self._lock:
            self.backend.stop()
            self.backend.close()
