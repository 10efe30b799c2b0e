"""Knee joint of a seated person driven by quadriceps NMES: the plant of the closed-loop experiments.

Equation of motion (shank + foot as one pendulum about the knee, thigh horizontal)::

    J θ̈ = −m g l sin θ − M_s(θ) − B θ̇ + M_a + M_stop(θ, θ̇) + d(t)

θ is the shank angle from the vertical in rad (0 = hanging, positive = extension; the API takes
and returns **degrees**, like ``acquisition.simulator``'s ``knee`` scenario), so ``φ = θ + π/2``
is the thigh-shank angle (π = full extension).

- Gravity ``m g l sin θ`` and viscous damping ``B θ̇``; passive elastic torque of the joint
  ``M_s = λ e^{−E φ}(φ − ω)`` — the form and the values of J, m, l, B, λ, E, ω identified by
  Ferrarin & Pedotti (2000) and used for simulation by Sharma et al. (2009) and in the RISE work of
  Arcolezi et al. (2021).
- ``M_stop``: stiff end stops near full extension and at the chair (a numerical guard the
  Ferrarin fit does not contain; it is silent over the 0-80° range the controllers use).
- Active torque ``M_a = F · a · M_max · g(θ) · h(θ̇)``: ``a`` is the muscle activation, first order
  ``ȧ = (r − a)/τ`` with separate activation/deactivation time constants (order of magnitude of
  Riener et al. 1996 and Ferrarin & Pedotti 2000); ``r = R(PW(t − T_d))`` the recruitment of the
  delayed pulse width (smooth between a threshold and a saturation pulse width, Durfee &
  MacLean 1989's recruitment curve shape), ``T_d`` the electromechanical (transport) delay
  (~25-50 ms); ``g(θ)`` a Gaussian torque-angle factor peaking near 60° of knee flexion
  (θ ≈ 30°); ``F`` the fitness (1 = fresh) of Riener et al.'s fatigue model
  ``Ḟ = (F_min − F) a / T_fat + (1 − F)(1 − a) / T_rec``; and ``h(θ̇)`` Hill's force-velocity
  factor (Riener et al. 1996 model it too): while the knee extends the stimulated muscle shortens
  and loses torque, which is most of the damping of the stimulated leg.
- ``d(t)``: a small Ornstein-Uhlenbeck torque disturbance (tremor, spasm, cable drag), and the
  angle sensor adds white measurement noise (degrees rms).

The stimulator delivers pulses at 25 Hz; the model treats the pulse width as held between pulses
(it does not resolve single twitches).

References
----------
- M. Ferrarin and A. Pedotti, "The relationship between electrical stimulus and joint torque: a
  dynamic model," IEEE Trans. Rehabil. Eng. 8(3):342-352, 2000. doi:10.1109/86.867876
- R. Riener, J. Quintern, G. Schmidt, "Biomechanical model of the human knee evaluated by
  neuromuscular stimulation," J. Biomech. 29(9):1157-1167, 1996. doi:10.1016/0021-9290(96)00012-7
- N. Sharma, K. Stegath, C. M. Gregory, W. E. Dixon, "Nonlinear neuromuscular electrical
  stimulation tracking control of a human limb," IEEE Trans. Neural Syst. Rehabil. Eng.
  17(6):576-584, 2009. doi:10.1109/TNSRE.2009.2023294
- H. H. Arcolezi et al., "RISE controller tuning and system identification through machine
  learning for human lower limb rehabilitation via neuromuscular electrical stimulation," Eng.
  Appl. Artif. Intell. 102:104294, 2021 (arXiv:2006.15605).
- W. K. Durfee and K. E. MacLean, "Methods for estimating isometric recruitment curves of
  electrically stimulated muscle," IEEE Trans. Biomed. Eng. 36(7):654-667, 1989.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from acquisition.validation import check_int, check_positive, check_type

__all__ = [
    "NOMINAL_KNEE",
    "KneeModel",
    "KneeParams",
    "draw_subjects",
    "recruitment",
]

_G = 9.81  # m/s²
_DEG = math.pi / 180.0


@dataclass(frozen=True)
class KneeParams:
    """Parameters of one (simulated) subject's knee and quadriceps.

    Parameters
    ----------
    inertia_kgm2 : float
        J, shank + foot about the knee, kg·m².
    mass_kg : float
        m, shank + foot mass, kg.
    com_m : float
        l, distance knee -> centre of mass, m.
    damping_nms : float
        B, viscous damping, N·m·s/rad.
    stiff_lambda_nm : float
        λ of the passive elastic torque, N·m/rad.
    stiff_e_per_rad : float
        E of the passive elastic torque, 1/rad.
    stiff_omega_rad : float
        ω (elastic rest value of the thigh-shank angle φ), rad.
    max_torque_nm : float
        M_max, torque of the fully recruited, unfatigued quadriceps at the optimum angle, N·m.
    pw_threshold_us, pw_saturation_us : float
        Pulse widths where recruitment starts and where it saturates, µs.
    tau_act_s, tau_deact_s : float
        First-order activation / deactivation time constants, s.
    delay_s : float
        Electromechanical (transport) delay between a pulse and its torque, s.
    optimum_angle_deg, angle_width_deg : float
        Centre and width (1/e) of the Gaussian torque-angle factor, degrees of θ.
    max_velocity_rad_s, hill_curvature : float
        Knee extension velocity at which the stimulated muscle's torque vanishes, rad/s, and the
        curvature k of Hill's force-velocity hyperbola (lengthening: up to 1.5 × isometric).
    fatigue_min : float
        F_min, fitness of a fully fatigued muscle (0-1).
    t_fatigue_s, t_recovery_s : float
        Fatigue and recovery time constants, s.
    disturbance_nm : float
        Stationary standard deviation of the torque disturbance, N·m.
    noise_deg : float
        Angle sensor noise, degrees rms.
    """

    inertia_kgm2: float = 0.362
    mass_kg: float = 4.37
    com_m: float = 0.238
    damping_nms: float = 0.27
    stiff_lambda_nm: float = 41.208
    stiff_e_per_rad: float = 2.024
    stiff_omega_rad: float = 2.918
    max_torque_nm: float = 22.0
    pw_threshold_us: float = 90.0
    pw_saturation_us: float = 380.0
    tau_act_s: float = 0.08
    tau_deact_s: float = 0.12
    delay_s: float = 0.04
    optimum_angle_deg: float = 30.0
    angle_width_deg: float = 80.0
    max_velocity_rad_s: float = 12.0
    hill_curvature: float = 0.25
    fatigue_min: float = 0.3
    t_fatigue_s: float = 40.0
    t_recovery_s: float = 60.0
    disturbance_nm: float = 0.1
    noise_deg: float = 0.2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            allow_zero = f.name in ("delay_s", "disturbance_nm", "noise_deg", "optimum_angle_deg")
            value = getattr(self, f.name)
            if f.name == "optimum_angle_deg":
                check_type(value, (int, float), f"KneeParams.{f.name}")
                continue
            object.__setattr__(self, f.name, check_positive(value, f"KneeParams.{f.name}", allow_zero=allow_zero))
        if self.pw_saturation_us <= self.pw_threshold_us:
            raise ValueError(
                f"KneeParams.pw_saturation_us ({self.pw_saturation_us}) must be above pw_threshold_us "
                f"({self.pw_threshold_us})."
            )
        if self.fatigue_min > 1.0:
            raise ValueError(f"KneeParams.fatigue_min must be in (0, 1], got {self.fatigue_min}.")


#: The nominal subject: Ferrarin & Pedotti's mechanics, mid-range muscle parameters.
NOMINAL_KNEE = KneeParams()

# Relative (log-normal sd) spread of each parameter across simulated subjects.
_SPREAD: dict[str, float] = {
    "mass_kg": 0.12,
    "com_m": 0.06,
    "damping_nms": 0.3,
    "stiff_lambda_nm": 0.25,
    "max_torque_nm": 0.25,
    "pw_threshold_us": 0.2,
    "pw_saturation_us": 0.08,
    "tau_act_s": 0.2,
    "tau_deact_s": 0.2,
    "delay_s": 0.25,
    "t_fatigue_s": 0.3,
    "t_recovery_s": 0.3,
    "fatigue_min": 0.2,
}


def draw_subjects(n: int, seed: int, *, spread: float = 1.0, base: KneeParams = NOMINAL_KNEE) -> list[KneeParams]:
    """Simulated subjects: ``base`` with every parameter scaled by a seeded log-normal factor.

    The inertia follows mass and lever (J ∝ m l²). Subjects too weak to hold 45° once half
    fatigued are drawn again, as are those whose saturation pulse width leaves no headroom
    below the 400 µs ceiling (a clinician would raise the current for them).

    Parameters
    ----------
    n : int
        Number of subjects (>= 1).
    seed : int
        Seed of the draw; the same seed gives the same subjects.
    spread : float
        Multiplier of the default relative spreads (0 gives ``n`` copies of ``base``).
    base : KneeParams
        The subject the spread is centred on.

    Returns
    -------
    list of KneeParams
    """
    check_int(n, "n", minimum=1)
    check_int(seed, "seed", minimum=0)
    spread = check_positive(spread, "spread", allow_zero=True)
    rng = np.random.default_rng(seed)
    subjects: list[KneeParams] = []
    while len(subjects) < n:
        values = dataclasses.asdict(base)
        for key, sd in _SPREAD.items():
            values[key] = values[key] * float(np.exp(rng.normal(0.0, sd * spread)))
        values["fatigue_min"] = min(values["fatigue_min"], 0.8)
        scale = (values["mass_kg"] / base.mass_kg) * (values["com_m"] / base.com_m) ** 2
        values["inertia_kgm2"] = base.inertia_kgm2 * scale
        values["pw_saturation_us"] = min(values["pw_saturation_us"], 395.0)
        values["pw_threshold_us"] = min(values["pw_threshold_us"], values["pw_saturation_us"] - 150.0)
        p = KneeParams(**values)
        half_fit = 0.5 * (1.0 + p.fatigue_min)
        need = p.mass_kg * _G * p.com_m * math.sin(45 * _DEG)
        if p.max_torque_nm * half_fit * _angle_factor(45.0, p) < 1.2 * need and spread > 0:
            continue
        subjects.append(p)
    return subjects


def recruitment(pulse_width_us: float, params: KneeParams) -> float:
    """Fraction of the quadriceps recruited by a pulse width (0-1, smooth between threshold and saturation)."""
    x = (pulse_width_us - params.pw_threshold_us) / (params.pw_saturation_us - params.pw_threshold_us)
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return x * x * (3.0 - 2.0 * x)


def _force_velocity(omega_rad_s: float, params: KneeParams) -> float:
    """Hill's force-velocity factor at knee velocity ω (positive = extension = shortening)."""
    k, vmax = params.hill_curvature, params.max_velocity_rad_s
    if omega_rad_s >= 0.0:
        x = min(omega_rad_s / vmax, 1.0)
        return (1.0 - x) / (1.0 + x / k)
    slope = (1.0 + 1.0 / k) / vmax  # same slope at 0 as the shortening branch
    return 1.0 + 0.5 * math.tanh(-omega_rad_s * slope / 0.5)


def _angle_factor(theta_deg: float, params: KneeParams) -> float:
    z = (theta_deg - params.optimum_angle_deg) / params.angle_width_deg
    return math.exp(-z * z)


class KneeModel:
    """Simulated knee under NMES, integrated with semi-implicit Euler at ``substep_s``.

    Parameters
    ----------
    params : KneeParams
        The subject.
    fatigue : bool
        Whether the fitness state decays under stimulation (False keeps F = 1).
    noise : bool
        Whether the sensor noise and the torque disturbance are on.
    seed : int
        Seed of the noise and disturbance.
    theta0_deg : float or None
        Initial angle in degrees; None starts at the passive rest angle.
    substep_s : float
        Integration step, s (1 ms default; the end stops need <= 2 ms).

    Notes
    -----
    Not thread-safe: one thread advances it (the :class:`~stimulation.sim_stimulator.SimulatedStimulator`
    owns one and serialises access).
    """

    THETA_MIN_DEG = -35.0  #: chair end stop, degrees
    THETA_MAX_DEG = 88.0  #: full-extension end stop, degrees

    def __init__(
        self,
        params: KneeParams = NOMINAL_KNEE,
        *,
        fatigue: bool = True,
        noise: bool = True,
        seed: int = 0,
        theta0_deg: float | None = None,
        substep_s: float = 0.001,
    ) -> None:
        check_type(params, KneeParams, "params")
        self.params = params
        self.fatigue_on = bool(fatigue)
        self.noise_on = bool(noise)
        self.substep_s = check_positive(substep_s, "substep_s")
        if self.substep_s > 0.002:
            raise ValueError(f"substep_s must be <= 0.002 s for the stiff end stops, got {substep_s!r}.")
        self._seed = check_int(seed, "seed", minimum=0)
        self.reset(theta0_deg)

    # ------------------------------------------------------------------ state
    def reset(self, theta0_deg: float | None = None, *, seed: int | None = None) -> None:
        """Back to rest (or ``theta0_deg``) at t = 0, unfatigued, no activation, no pending pulses."""
        if seed is not None:
            self._seed = check_int(seed, "seed", minimum=0)
        self._rng = np.random.default_rng(self._seed)
        self.time_s = 0.0
        self._theta = (self.rest_angle_deg() if theta0_deg is None else float(theta0_deg)) * _DEG
        self._omega = 0.0
        self.activation = 0.0
        self.fitness = 1.0
        self._dist = 0.0
        self._pending: deque[tuple[float, float]] = deque([(-math.inf, 0.0)])
        self._noise_buf = self._rng.standard_normal(4096)
        self._noise_i = 0

    @property
    def angle_deg(self) -> float:
        """True knee angle θ, degrees (0 = hanging, positive = extension)."""
        return self._theta / _DEG

    @property
    def velocity_deg_s(self) -> float:
        """True angular velocity, degrees/s."""
        return self._omega / _DEG

    def measure(self) -> float:
        """The angle as the sensor reads it now: true angle + white noise (``params.noise_deg`` rms), degrees."""
        if not self.noise_on or self.params.noise_deg == 0.0:
            return self.angle_deg
        return self.angle_deg + self.params.noise_deg * self._normal()

    def _normal(self) -> float:
        if self._noise_i >= self._noise_buf.size:
            self._noise_buf = self._rng.standard_normal(4096)
            self._noise_i = 0
        v = float(self._noise_buf[self._noise_i])
        self._noise_i += 1
        return v

    # ------------------------------------------------------------------ torques (N·m, θ in degrees)
    def gravity_torque_nm(self, theta_deg: float) -> float:
        """−m g l sin θ, N·m (negative = pulls toward hanging for θ > 0)."""
        p = self.params
        return -p.mass_kg * _G * p.com_m * math.sin(theta_deg * _DEG)

    def passive_torque_nm(self, theta_deg: float) -> float:
        """−M_s(θ), the passive elastic torque as it acts on the shank, N·m."""
        p = self.params
        phi = theta_deg * _DEG + math.pi / 2
        return -p.stiff_lambda_nm * math.exp(-p.stiff_e_per_rad * phi) * (phi - p.stiff_omega_rad)

    def stimulation_torque_nm(
        self, activation: float, theta_deg: float, fitness: float = 1.0, velocity_deg_s: float = 0.0
    ) -> float:
        """M_a = F · a · M_max · g(θ) · h(θ̇), N·m."""
        fv = _force_velocity(velocity_deg_s * _DEG, self.params)
        return fitness * activation * self.params.max_torque_nm * _angle_factor(theta_deg, self.params) * fv

    def rest_angle_deg(self) -> float:
        """Passive equilibrium with no stimulation (gravity = elastic torque), degrees (bisection)."""
        lo, hi = -30.0, 60.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.gravity_torque_nm(mid) + self.passive_torque_nm(mid) > 0:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    # ------------------------------------------------------------------ dynamics
    def command(self, pulse_width_us: float) -> None:
        """Deliver ``pulse_width_us`` from now on (it reaches the muscle after ``params.delay_s``)."""
        pw = float(pulse_width_us)
        if not math.isfinite(pw) or pw < 0:
            raise ValueError(f"pulse_width_us must be a finite number >= 0 µs, got {pulse_width_us!r}.")
        t = self.time_s
        if self._pending and self._pending[-1][0] >= t:
            self._pending.pop()  # a newer command at the same instant replaces the older one
            if not self._pending:
                self._pending.append((-math.inf, 0.0))
        self._pending.append((t, pw))

    def advance(self, duration_s: float, pulse_width_us: float | None = None) -> float:
        """Integrate ``duration_s`` seconds (a whole number of substeps, at least one).

        Parameters
        ----------
        duration_s : float
            Time to simulate, s (rounded to the nearest multiple of ``substep_s``).
        pulse_width_us : float or None
            When given, :meth:`command` this pulse width first.

        Returns
        -------
        float
            The true angle at the end, degrees.
        """
        if pulse_width_us is not None:
            self.command(pulse_width_us)
        n = max(1, round(float(duration_s) / self.substep_s))
        p = self.params
        dt = self.substep_s
        mgl = p.mass_kg * _G * p.com_m
        inv_j = 1.0 / p.inertia_kgm2
        lam, e_stiff, om = p.stiff_lambda_nm, p.stiff_e_per_rad, p.stiff_omega_rad
        t_min, t_max = self.THETA_MIN_DEG * _DEG, self.THETA_MAX_DEG * _DEG
        opt, width = p.optimum_angle_deg * _DEG, p.angle_width_deg * _DEG
        dist_on = self.noise_on and p.disturbance_nm > 0
        dist_tau = 0.2  # s, correlation time of the disturbance
        dist_gain = p.disturbance_nm * math.sqrt(2.0 * dt / dist_tau)
        pend = self._pending
        theta, omega, a, fit, dist, t = self._theta, self._omega, self.activation, self.fitness, self._dist, self.time_s
        for _ in range(n):
            t_eff = t - p.delay_s
            while len(pend) > 1 and pend[1][0] <= t_eff:
                pend.popleft()
            pw = pend[0][1] if pend[0][0] <= t_eff else 0.0
            r = recruitment(pw, p)
            a += dt * (r - a) / (p.tau_act_s if r > a else p.tau_deact_s)
            if self.fatigue_on:
                fit += dt * ((p.fatigue_min - fit) * a / p.t_fatigue_s + (1.0 - fit) * (1.0 - a) / p.t_recovery_s)
            z = (theta - opt) / width
            m_act = fit * a * p.max_torque_nm * math.exp(-z * z) * _force_velocity(omega, p)
            phi = theta + math.pi / 2
            m_s = lam * math.exp(-e_stiff * phi) * (phi - om)
            m_stop = 0.0
            if theta > t_max:
                m_stop = -200.0 * (theta - t_max) - 5.0 * omega
            elif theta < t_min:
                m_stop = -200.0 * (theta - t_min) - 5.0 * omega
            if dist_on:
                dist += -dist * dt / dist_tau + dist_gain * self._normal()
            alpha = inv_j * (-mgl * math.sin(theta) - m_s - p.damping_nms * omega + m_act + m_stop + dist)
            omega += dt * alpha
            theta += dt * omega
            t += dt
        self._theta, self._omega, self.activation, self.fitness, self._dist, self.time_s = theta, omega, a, fit, dist, t
        return theta / _DEG
