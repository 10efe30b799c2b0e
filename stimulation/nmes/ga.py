"""Offline tuning of the RISE gains by a genetic algorithm against an identified NARX knee model.

Arcolezi et al. (2021) tune ks, α1, α2, β of RISE offline with a genetic algorithm whose fitness
is the tracking error of RISE simulated in closed loop on the subject's NARX model, searching
only inside RISE's stability conditions. This module does the same:

- **Fitness** (:func:`rise_cost_on_narx`): RISE (the real :class:`~stimulation.nmes.rise.RiseBank`
  code at 5 ms, saturation, 25 Hz hold) closes the loop on the NARX model (ONNX, onnxruntime),
  which advances one step per stimulation pulse; between pulses the controller sees the angle
  interpolated linearly between the model's two pulse samples (the next sample depends only on
  pulse widths already delivered, so it is known), plus the angle sensor's noise. The cost is
  RMSE(10-40° sine) + RMSE(40° step), degrees, averaged over three runs: the gains as they are,
  the law scaled by a gain margin (×1.25) and the pulse widths reaching the model half a pulse
  (20 ms) late (a delay margin). The two margins are an addition: robustness terms so the GA
  does not pick gains on the edge of stability, where the identified model is a little too damped
  and the gains oscillate on the subject. The whole population is simulated at once (one
  batched onnxruntime call per pulse), with common random numbers (one noise sequence).
- **Search space**: log10 of each gain inside bounds that lie within the stability conditions
  (α1 > 1/2, α2 > 1, ks > 0, β > 0); every individual is checked with
  :func:`~stimulation.nmes.rise.check_stability_conditions` before it is simulated.
- **Algorithm**: a small real-coded GA written with numpy, because no well-kept Python GA library
  fits the bill (pygad/DEAP are either unmaintained or heavyweight for four genes) and
  ``scipy.optimize.differential_evolution`` is a different operator set (differential mutation,
  no tournament/crossover/mutation-rate parameters to map the paper's settings onto). Tournament
  selection (size 3), blend crossover BLX-0.5 (probability ``crossover_rate``), Gaussian mutation
  of each gene with probability ``mutation_rate`` (sd 10 % of the log-range), elitism (best 2 kept),
  optional seed individuals (the empirical gain sets) in the first generation. Seeded: same seed,
  same result.

Settings (:data:`PAPER_GA_SETTINGS`): population 50, 50 generations, mutation rate 0.1,
crossover 0.8 — the order of magnitude of the paper's GA; its exact table could not be checked
offline when this was written (see docs/nmes.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from acquisition.validation import check_int, check_positive
from stimulation.nmes.references import sine_reference, step_reference
from stimulation.nmes.rise import RiseBank, RiseGains, check_stability_conditions
from stimulation.nmes.sysid import NARX_DT_S, NarxOnnx

__all__ = [
    "GAIN_BOUNDS",
    "PAPER_GA_SETTINGS",
    "GaResult",
    "GaSettings",
    "rise_cost_on_narx",
    "simulate_rise_on_narx",
    "tune_rise_gains",
]

#: Search bounds of [ks, alpha1, alpha2, beta]: inside the stability region, and inside the range
#: of gains tried in the logged sessions (:mod:`stimulation.nmes.sysid`), so the GA does not
#: exploit the NARX model where it has seen no data.
GAIN_BOUNDS: tuple[tuple[float, float], ...] = ((2.0, 60.0), (0.6, 12.0), (1.1, 12.0), (1.0, 200.0))


@dataclass(frozen=True)
class GaSettings:
    """Genetic-algorithm settings.

    Parameters
    ----------
    population : int
        Individuals per generation (>= 4).
    generations : int
        Generations after the initial one (>= 0).
    mutation_rate : float
        Probability that a gene is mutated (0-1).
    crossover_rate : float
        Probability that a pair of parents is recombined (0-1).
    elite : int
        Best individuals copied unchanged into the next generation.
    tournament : int
        Tournament size of the parent selection.
    """

    population: int = 50
    generations: int = 50
    mutation_rate: float = 0.1
    crossover_rate: float = 0.8
    elite: int = 2
    tournament: int = 3

    def __post_init__(self) -> None:
        check_int(self.population, "GaSettings.population", minimum=4)
        check_int(self.generations, "GaSettings.generations", minimum=0)
        check_int(self.elite, "GaSettings.elite", minimum=0)
        check_int(self.tournament, "GaSettings.tournament", minimum=1)
        for name in ("mutation_rate", "crossover_rate"):
            v = check_positive(getattr(self, name), f"GaSettings.{name}", allow_zero=True)
            if v > 1:
                raise ValueError(f"GaSettings.{name} must be a probability in [0, 1], got {v!r}.")
        if self.elite >= self.population:
            raise ValueError(f"GaSettings.elite ({self.elite}) must be < population ({self.population}).")


PAPER_GA_SETTINGS = GaSettings()


@dataclass(frozen=True)
class GaResult:
    """Outcome of :func:`tune_rise_gains`.

    Attributes
    ----------
    best : RiseGains
        Lowest-cost gains found.
    best_cost : float
        Its cost, degrees (RMSE sine + RMSE step on the NARX model).
    history : list of float
        Best cost of each generation (index 0 = initial population).
    initial_best_cost : float
        Best cost of the initial population.
    evaluations : int
        Closed-loop simulations run.
    """

    best: RiseGains
    best_cost: float
    history: list[float] = field(default_factory=list)
    initial_best_cost: float = float("nan")
    evaluations: int = 0


def _references(dt_s: float, duration_s: float) -> np.ndarray:
    t = np.arange(0.0, duration_s, dt_s)
    return np.stack([sine_reference(t), step_reference(t)])


def simulate_rise_on_narx(
    narx: NarxOnnx,
    gains: np.ndarray,
    references_deg: np.ndarray,
    *,
    theta0_deg: float,
    dt_s: float = 0.005,
    noise_deg: float = 0.2,
    seed: int = 0,
    extra_delay_pulses: np.ndarray | None = None,
) -> np.ndarray:
    """Closed-loop angle of RISE on the NARX model for many gain sets and targets at once.

    Parameters
    ----------
    narx : NarxOnnx
        The identified model.
    gains : ndarray, shape (m, 4)
        One ``[ks, alpha1, alpha2, beta]`` row per run.
    references_deg : ndarray, shape (m, n)
        Target of each run at every control period, degrees.
    theta0_deg : float
        Initial (rest) angle the model's history is filled with, degrees.
    dt_s : float
        Control period, s (must divide the NARX period).
    noise_deg : float
        Sensor noise added to what the controller sees, degrees rms (0 = none).
    seed : int
        Seed of the noise (the same sequence for every run).
    extra_delay_pulses : ndarray, shape (m,), optional
        Pulses by which each run's pulse width reaches the model late (a delay margin; 0 = none;
        fractions interpolate linearly between neighbouring pulses).

    Returns
    -------
    ndarray, shape (m, n)
        Model angle at each control period, degrees.
    """
    refs = np.asarray(references_deg, dtype=float)
    g = np.asarray(gains, dtype=float)
    if refs.ndim != 2 or g.ndim != 2 or refs.shape[0] != g.shape[0]:
        raise ValueError(f"gains (m, 4) and references_deg (m, n) must agree in m, got {g.shape} and {refs.shape}.")
    hold = round(NARX_DT_S / dt_s)
    if hold < 1 or abs(hold * dt_s - NARX_DT_S) > 1e-9:
        raise ValueError(f"dt_s ({dt_s}) must divide the NARX period ({NARX_DT_S} s).")
    m, n = refs.shape
    bank = RiseBank(g, dt_s=dt_s, stim_frequency_hz=1.0 / NARX_DT_S)
    nl = narx.n_lags
    window = np.zeros((m, nl, 2), dtype=np.float32)
    window[:, :, 0] = theta0_deg
    theta_now = np.full(m, float(theta0_deg))
    out = np.empty((m, n))
    lag = np.zeros(m) if extra_delay_pulses is None else np.asarray(extra_delay_pulses, dtype=float)
    if lag.shape != (m,) or not np.all(np.isfinite(lag)) or lag.min() < 0:
        raise ValueError(f"extra_delay_pulses must be m = {m} numbers >= 0, got {extra_delay_pulses!r}.")
    lag_whole = np.floor(lag).astype(int)
    lag_frac = lag - lag_whole  # fractional delays interpolate between neighbouring pulses
    pw_hist = np.zeros((m, int(lag_whole.max()) + 2))  # newest pulse width last
    rows = np.arange(m)
    noise = np.zeros(n)
    if noise_deg > 0:
        noise = np.asarray(np.random.default_rng(seed).normal(0.0, noise_deg, size=n), dtype=float)
    theta_next = theta_now
    for k in range(n):
        j = k % hold
        if j == 0:
            pw = bank.step(refs[:, k], theta_now + noise[k])
            pw_hist[:, :-1] = pw_hist[:, 1:]
            pw_hist[:, -1] = pw
            window[:, :-1, :] = window[:, 1:, :]
            window[:, -1, 0] = theta_now
            window[:, -1, 1] = (1.0 - lag_frac) * pw_hist[rows, -1 - lag_whole] + lag_frac * pw_hist[
                rows, -2 - lag_whole
            ]
            theta_next = np.clip(narx.predict(window), -35.0, 90.0)
            out[:, k] = theta_now
        else:
            frac = j / hold
            theta = theta_now + frac * (theta_next - theta_now)
            out[:, k] = theta
            bank.step(refs[:, k], theta + noise[k])
            if j == hold - 1:
                theta_now = theta_next
    return out


def rise_cost_on_narx(
    narx: NarxOnnx,
    gains: np.ndarray,
    *,
    theta0_deg: float,
    duration_s: float = 20.0,
    dt_s: float = 0.005,
    noise_deg: float = 0.2,
    seed: int = 0,
    gain_margin: float = 1.25,
    delay_margin_pulses: float = 0.5,
) -> np.ndarray:
    """Cost of each gain row, degrees, shape (m,).

    RMSE on the 10-40° sine + RMSE on the 40° step, averaged over the gains as given, the gains
    with the whole control law scaled by ``gain_margin`` (ks + 1 and β times the margin; 1 = no
    such run) and the gains with the pulse widths reaching the model ``delay_margin_pulses`` pulses
    late (0 = no such run). The margin runs guard against the identified model's errors: gains on
    the edge of stability look good on a slightly too damped model and oscillate on the subject.
    """
    g = np.asarray(gains, dtype=float)
    refs = _references(dt_s, duration_s)
    m = g.shape[0]
    variants: list[tuple[np.ndarray, float]] = [(g, 0.0)]
    if gain_margin != 1.0:  # the same law with every term scaled by gain_margin
        hot = g.copy()
        hot[:, 0] = gain_margin * (g[:, 0] + 1.0) - 1.0
        hot[:, 3] = gain_margin * g[:, 3]
        variants.append((hot, 0.0))
    if delay_margin_pulses > 0:  # the pulse widths reach the model later
        variants.append((g, delay_margin_pulses))
    rows = np.concatenate([v for v, _ in variants for _ in range(2)])
    lags = np.concatenate([np.full(m, float(d)) for _, d in variants for _ in range(2)])
    targets = np.concatenate([np.repeat(refs[i : i + 1], m, axis=0) for _ in variants for i in range(2)])
    theta = simulate_rise_on_narx(
        narx,
        rows,
        targets,
        theta0_deg=theta0_deg,
        dt_s=dt_s,
        noise_deg=noise_deg,
        seed=seed,
        extra_delay_pulses=lags,
    )
    rmse = np.sqrt(np.mean((theta - targets) ** 2, axis=1)).reshape(len(variants), 2, m)
    cost = rmse.sum(axis=1).mean(axis=0)
    return np.where(np.isfinite(cost), cost, 1e6)


def _to_genes(gains: RiseGains) -> np.ndarray:
    return np.log10(gains.as_array())


def tune_rise_gains(
    narx: NarxOnnx,
    *,
    theta0_deg: float,
    settings: GaSettings = PAPER_GA_SETTINGS,
    seed: int = 0,
    seed_gains: Sequence[RiseGains] = (),
    duration_s: float = 20.0,
    noise_deg: float = 0.2,
    gain_margin: float = 1.25,
    delay_margin_pulses: float = 0.5,
    progress: Callable[[int, float], None] | None = None,
) -> GaResult:
    """Search RISE gains that minimise :func:`rise_cost_on_narx` inside the stability region.

    Parameters
    ----------
    narx : NarxOnnx
        The subject's identified model.
    theta0_deg : float
        Rest angle to start the simulations from, degrees (e.g. the median first angle of the
        logged sessions).
    settings : GaSettings
    seed : int
        Seed of the GA (initial population, operators) and of the simulated sensor noise.
    seed_gains : sequence of RiseGains
        Individuals placed in the initial population (e.g. the empirical sets).
    duration_s : float
        Length of each simulated trajectory, s.
    noise_deg : float
        Simulated sensor noise, degrees rms.
    gain_margin : float
        Gain-margin factor of the cost (see :func:`rise_cost_on_narx`).
    delay_margin_pulses : float
        Delay margin of the cost, in pulses (see :func:`rise_cost_on_narx`).
    progress : callable, optional
        ``progress(generation, best_cost)`` after each generation (on the caller's thread).

    Returns
    -------
    GaResult
    """
    rng = np.random.default_rng(seed)
    lo = np.log10([b[0] for b in GAIN_BOUNDS])
    hi = np.log10([b[1] for b in GAIN_BOUNDS])
    span = hi - lo
    p = settings.population

    def cost_of(genes: np.ndarray) -> np.ndarray:
        gains = 10.0**genes
        for row in gains:
            check_stability_conditions(RiseGains.from_array(row))
        return rise_cost_on_narx(
            narx,
            gains,
            theta0_deg=theta0_deg,
            duration_s=duration_s,
            noise_deg=noise_deg,
            seed=seed,
            gain_margin=gain_margin,
            delay_margin_pulses=delay_margin_pulses,
        )

    pop = lo + rng.random((p, 4)) * span
    for i, sg in enumerate(list(seed_gains)[:p]):
        pop[i] = np.clip(_to_genes(sg), lo, hi)
    cost = cost_of(pop)
    evaluations = p
    history = [float(cost.min())]
    initial_best = history[0]
    for gen in range(settings.generations):
        order = np.argsort(cost)
        children = [pop[i].copy() for i in order[: settings.elite]]
        while len(children) < p:
            parents = []
            for _ in range(2):
                cand = rng.integers(0, p, size=settings.tournament)
                parents.append(pop[cand[np.argmin(cost[cand])]])
            a, b = parents
            if rng.random() < settings.crossover_rate:
                lo_ab, hi_ab = np.minimum(a, b), np.maximum(a, b)
                ext = 0.5 * (hi_ab - lo_ab)
                c1 = rng.uniform(lo_ab - ext, hi_ab + ext)
                c2 = rng.uniform(lo_ab - ext, hi_ab + ext)
            else:
                c1, c2 = a.copy(), b.copy()
            for c in (c1, c2):
                mask = rng.random(4) < settings.mutation_rate
                c[mask] += rng.normal(0.0, 0.1, size=int(mask.sum())) * span[mask]
                children.append(np.clip(c, lo, hi))
        pop = np.array(children[:p])
        cost = cost_of(pop)
        evaluations += p
        history.append(float(cost.min()))
        if progress is not None:
            progress(gen + 1, history[-1])
    best = int(np.argmin(cost))
    return GaResult(
        best=RiseGains.from_array(10.0 ** pop[best]),
        best_cost=float(cost[best]),
        history=history,
        initial_best_cost=initial_best,
        evaluations=evaluations,
    )
