"""Pure teleop arbitration: decoder commands -> guarded joint velocities (no threads, no I/O).

:class:`TeleopController` applies the shared safety rules of every back end:

- **confidence gating** - a discrete command whose top probability is below
  ``min_confidence`` (or whose label is None) is refused and stops the current motion;
- **dwell** - a label acts only after it has been received continuously for ``dwell_s``; a
  change of label stops the current motion at once;
- **one-shot actions** (mode switch, speed toggle) fire once per hold of their label;
- **dead-man** - when no confident command arrived for ``deadman_s`` every velocity is zero;
- **velocity limits** - no output exceeds a joint's ``max_velocity`` (:mod:`.joints`);
- **acceleration limits** - speeding up and reversing are limited to ``max_accel`` ×
  ``accel_scale``; slowing down and stopping are immediate (the safe direction);
- **joint-limit guard** - towards a limit the speed is capped so the joint can stop at the limit
  (``sqrt(2 a d)``) and cannot cross it within one control period (``d / control_period_s``);
- **workspace guard** - the same cap on base translation, with ``d`` the distance along the
  heading to the workspace rectangle.

Every command taken or refused, and every safety event, is appended to :attr:`log`.
Times are in s on whatever clock the caller uses (the bridge: ``pylsl.local_clock`` live,
simulated time in the task benchmark).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from app.pipeline import Command

from .joints import DOF_NAMES, STRETCH_JOINTS, JointSpec, joint_index
from .mapping import ONE_SHOT_ACTIONS, TeleopConfig, parse_action

__all__ = ["ArbitrationEntry", "TeleopController"]


@dataclass(frozen=True)
class ArbitrationEntry:
    """One line of the arbitration log.

    Attributes
    ----------
    time : float
        Controller clock (s) when it was decided.
    decision : str
        ``"taken"``, ``"refused"`` or ``"safety"`` (dead-man, halt).
    reason : str
        Why (e.g. ``"dwell 50/150 ms"``, ``"confidence 0.41 < 0.60"``, ``"deadman 0.10 s"``).
    action : str
        What it did or would have done (``"lift+"``, ``"next_mode"``, ``"stop"``, ``"continuous"``).
    mode, speed : str
        Mode and speed after the decision.
    pipeline, seq, kind, label, confidence
        Copied from the command (empty / -1 / NaN for safety events).
    """

    time: float
    decision: str
    reason: str
    action: str
    mode: str
    speed: str
    pipeline: str = ""
    seq: int = -1
    kind: str = ""
    label: str | None = None
    confidence: float = float("nan")

    def to_dict(self) -> dict:
        """JSON-able dict."""
        d = asdict(self)
        if math.isnan(self.confidence):
            d["confidence"] = None
        return d


class TeleopController:
    """Command arbitration and velocity guards (settings + state, synchronous).

    Parameters
    ----------
    config : TeleopConfig
    joints : tuple of JointSpec
        The 8 DoF in :data:`DOF_NAMES` order (default: the Stretch limits).
    start : ndarray, shape (8,), optional
        Initial position estimate (m/rad); used until the back end reports positions.
    start_pose : (x, y, yaw), optional
        Initial base pose estimate in the world frame (m, m, rad).
    """

    def __init__(
        self,
        config: TeleopConfig,
        joints: tuple[JointSpec, ...] = STRETCH_JOINTS,
        start: np.ndarray | None = None,
        start_pose: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> None:
        if tuple(j.name for j in joints) != DOF_NAMES:
            raise ValueError(f"teleop joints must be {list(DOF_NAMES)} in that order.")
        self.config = config
        self.joints = joints
        self.vmax = np.array([j.max_velocity for j in joints])
        self.amax = np.array([j.max_accel for j in joints]) * config.accel_scale
        margin = np.array([config.joint_margin.get(j.name, 0.0) for j in joints])
        self.lower = np.array([j.lower for j in joints]) + margin
        self.upper = np.array([j.upper for j in joints]) - margin
        self.mode = config.initial_mode or config.mode_names[0]
        self.speed = config.start_speed
        self.q = np.zeros(len(joints)) if start is None else np.asarray(start, dtype=np.float64).copy()
        self.pose = np.asarray(start_pose, dtype=np.float64).copy()
        self.velocity = np.zeros(len(joints))
        self.log: list[ArbitrationEntry] = []
        self._candidate: str | None = None
        self._candidate_since = 0.0
        self._latched = False
        self._active: tuple[int, int] | None = None
        self._continuous: np.ndarray | None = None
        self._last_confident = -math.inf
        self._last_update: float | None = None
        self._halted: str | None = None

    # -------------------------------------------------------------- helpers
    def _entry(
        self, now: float, decision: str, reason: str, action: str, cmd: Command | None = None
    ) -> ArbitrationEntry:
        if cmd is None:
            e = ArbitrationEntry(now, decision, reason, action, self.mode, self.speed)
        else:
            conf = cmd.confidence if cmd.kind == "discrete" else float("nan")
            e = ArbitrationEntry(
                now, decision, reason, action, self.mode, self.speed, cmd.pipeline, cmd.seq, cmd.kind, cmd.label, conf
            )
        self.log.append(e)
        return e

    def _release(self) -> None:
        self._active = None
        self._continuous = None

    @property
    def active_action(self) -> str | None:
        """The motion being commanded (``"lift+"``, ``"continuous"``) or None."""
        if self._active is not None:
            j, s = self._active
            return f"{DOF_NAMES[j]}{'+' if s > 0 else '-'}"
        return "continuous" if self._continuous is not None else None

    def halt(self, now: float, reason: str) -> ArbitrationEntry:
        """Stop everything until :meth:`resume` (the output's safe state)."""
        self._release()
        self._candidate = None
        self.velocity[:] = 0.0
        self._halted = reason
        return self._entry(now, "safety", f"halt: {reason}", "stop")

    def resume(self, now: float) -> None:
        """Leave the halted state (commands act again)."""
        if self._halted is not None:
            self._halted = None
            self._entry(now, "safety", "resume", "none")

    # ------------------------------------------------------------- commands
    def on_command(self, cmd: Command, now: float) -> ArbitrationEntry:
        """Arbitrate one command received at ``now`` (s); returns its log entry."""
        if self._halted is not None:
            return self._entry(now, "refused", f"halted ({self._halted})", "none", cmd)
        if cmd.kind == "continuous":
            return self._on_continuous(cmd, now)
        if cmd.kind != "discrete":
            return self._entry(now, "refused", f"command kind {cmd.kind!r} is not mapped", "none", cmd)
        label, conf = cmd.label, cmd.confidence
        cfg = self.config
        if label is None or not conf >= cfg.min_confidence:
            self._release()
            self._candidate = None
            return self._entry(now, "refused", f"confidence {conf:.2f} < {cfg.min_confidence:.2f}", "stop", cmd)
        action = cfg.action_for(self.mode, label)
        if action is None:
            self._release()
            self._candidate = None
            return self._entry(now, "refused", f"label {label!r} not bound in mode {self.mode!r}", "stop", cmd)
        if label != self._candidate:
            self._candidate, self._candidate_since, self._latched = label, now, False
            if self._active is not None or self._continuous is not None:
                self._release()  # a new gesture ends the previous motion at once
        held = now - self._candidate_since
        if held + 1e-9 < cfg.dwell_s:
            return self._entry(now, "refused", f"dwell {held * 1e3:.0f}/{cfg.dwell_s * 1e3:.0f} ms", action, cmd)
        self._last_confident = now
        parsed = parse_action(action, f"mode {self.mode}")
        if isinstance(parsed, tuple):
            self._continuous = None
            self._active = (joint_index(parsed[0]), parsed[1])
            return self._entry(now, "taken", "move", action, cmd)
        if parsed == "stop":
            self._release()
            return self._entry(now, "taken", "stop", action, cmd)
        if parsed in ONE_SHOT_ACTIONS:
            if self._latched:
                return self._entry(now, "refused", "one-shot action already done for this hold", action, cmd)
            self._latched = True
            self._release()
            before = (self.mode, self.speed)
            self._one_shot(parsed)
            return self._entry(now, "taken", f"{before[0]}/{before[1]} -> {self.mode}/{self.speed}", action, cmd)
        raise AssertionError(parsed)  # pragma: no cover - parse_action validated it

    def _one_shot(self, action: str) -> None:
        names = self.config.mode_names
        i = names.index(self.mode)
        if action == "next_mode":
            self.mode = names[(i + 1) % len(names)]
        elif action == "prev_mode":
            self.mode = names[(i - 1) % len(names)]
        elif action == "speed_toggle":
            self.speed = "fine" if self.speed == "coarse" else "coarse"
        else:
            self.speed = action

    def _on_continuous(self, cmd: Command, now: float) -> ArbitrationEntry:
        cmap = self.config.continuous
        vals = np.asarray(cmd.values, dtype=np.float64)
        if vals.size != len(cmap.scale) or not np.isfinite(vals).all():
            self._release()
            return self._entry(
                now, "refused", f"continuous vector must be {len(cmap.scale)} finite values, got {list(cmd.values)}",
                "stop", cmd,
            )  # fmt: skip
        target = np.zeros(len(DOF_NAMES))
        for name, v, s in zip(cmap.joints, vals, cmap.scale, strict=True):
            target[joint_index(name)] = v * s
        self._active = None
        self._candidate = None
        self._continuous = target
        self._last_confident = now
        return self._entry(now, "taken", "continuous", "continuous", cmd)

    # --------------------------------------------------------------- update
    def update(
        self, now: float, positions: np.ndarray | None = None, pose: tuple[float, float, float] | None = None
    ) -> np.ndarray:
        """Advance to ``now`` (s) and return the guarded velocity command (unit/s, shape (8,)).

        Parameters
        ----------
        positions : ndarray, shape (8,), optional
            Measured positions; without them the estimate is dead-reckoned from the commands.
        pose : (x, y, yaw), optional
            Measured base pose (m, m, rad); dead-reckoned otherwise.
        """
        dt = 0.0 if self._last_update is None else max(0.0, now - self._last_update)
        self._last_update = now
        v_prev = self.velocity
        self.q += v_prev * dt
        if positions is not None:
            known = np.isfinite(positions)
            self.q[known] = np.asarray(positions)[known]
        if pose is not None:
            self.pose[:] = pose
        else:
            yaw = self.pose[2]
            self.pose += (v_prev[0] * math.cos(yaw) * dt, v_prev[0] * math.sin(yaw) * dt, v_prev[1] * dt)
        cfg = self.config
        moving = self._active is not None or self._continuous is not None
        if moving and now - self._last_confident > cfg.deadman_s:
            self._release()
            self._entry(now, "safety", f"deadman: no confident command for {now - self._last_confident:.3f} s", "stop")
        desired = np.zeros(len(DOF_NAMES))
        if self._halted is None:
            if self._active is not None:
                j, s = self._active
                frac = cfg.coarse if self.speed == "coarse" else cfg.fine
                desired[j] = s * frac * cfg.speed_scale * self.vmax[j]
            elif self._continuous is not None:
                desired = self._continuous * cfg.speed_scale
        desired = np.clip(desired, -self.vmax, self.vmax)
        desired = self._guard(desired)
        out = self._ramp(desired, v_prev, dt)
        self.velocity = out
        return out.copy()

    def _cap(self, dist: np.ndarray | float, accel: np.ndarray | float) -> np.ndarray:
        d = np.maximum(dist, 0.0)
        return np.minimum(np.sqrt(2.0 * accel * d), d / self.config.control_period_s)

    def _guard(self, v: np.ndarray) -> np.ndarray:
        v = v.copy()
        bounded = np.isfinite(self.lower)
        up_cap = self._cap(self.upper - self.q, self.amax)
        down_cap = self._cap(self.q - self.lower, self.amax)
        v = np.where(bounded & (v > 0), np.minimum(v, up_cap), v)
        v = np.where(bounded & (v < 0), np.maximum(v, -down_cap), v)
        if v[0] != 0.0:
            v[0] = math.copysign(min(abs(v[0]), float(self._cap(self._wall_distance(v[0] > 0), self.amax[0]))), v[0])
        return v

    def _wall_distance(self, forward: bool) -> float:
        """Distance (m) from the base centre along (or against) its heading to the workspace edge."""
        x, y, yaw = self.pose
        dx, dy = math.cos(yaw), math.sin(yaw)
        if not forward:
            dx, dy = -dx, -dy
        xmin, xmax, ymin, ymax = self.config.workspace
        if not (xmin <= x <= xmax and ymin <= y <= ymax):
            return 0.0
        ts = []
        for p, dp, lo, hi in ((x, dx, xmin, xmax), (y, dy, ymin, ymax)):
            if dp > 1e-12:
                ts.append((hi - p) / dp)
            elif dp < -1e-12:
                ts.append((lo - p) / dp)
        return min(ts) if ts else math.inf

    def _ramp(self, desired: np.ndarray, prev: np.ndarray, dt: float) -> np.ndarray:
        """Limit speeding up / reversing to amax; slowing down and stopping are immediate."""
        out = desired.copy()
        same_dir = np.sign(desired) == np.sign(prev)
        base = np.where(same_dir, np.abs(prev), 0.0)  # a reversal restarts from zero
        faster = np.abs(desired) > base
        limited = np.sign(desired) * np.minimum(np.abs(desired), base + self.amax * dt)
        out = np.where(faster, limited, desired)
        return out
