"""Stimulation safety limits: the session config sets them, a per-patient profile may only lower them.

The limits live in a TOML table (``[safety.limits]`` of a session config, or any table named
by the caller). Every key is required: a clinical limit is never filled in by a default, so a
missing key is an error, not a silent fallback. Units are in the key names::

    [safety.limits]
    max_current_ma = 40.0             # NMES current amplitude, mA
    max_pulse_width_us = 400.0        # NMES pulse (phase) width, µs
    max_frequency_hz = 50.0           # NMES pulse rate, Hz
    max_charge_per_phase_uc = 12.0    # current × pulse width, µC (mA × µs / 1000)
    max_ramp_ma_per_s = 20.0          # how fast the current may rise on a channel, mA/s
    max_session_dose_s = 1800.0       # stimulation seconds per session (summed over channels)
    max_audio_db_spl = 60.0           # estimated sound level at the ear, dB SPL
    max_audio_rate_hz = 2.5           # auditory bursts per second

A patient profile is its own TOML file::

    [patient]
    id = "P001"
    note = "reduced sensation on the left leg"    # optional

    [limits]                                       # any subset of the keys above
    max_current_ma = 25.0

A profile value equal to or below the config value lowers (or keeps) the limit; a value above
it is refused with :class:`ProfileError` naming the key, the config limit and the profile value.

Every value must also lie under an absolute *sanity ceiling* (:data:`SANITY_CEILINGS`). The
ceilings catch unit mistakes (µA typed as mA, ms as µs) and are not clinical recommendations;
the stimulator firmware keeps its own hard limits, which nothing on the host can raise.

Errors: :class:`LimitsError` (a ``ValueError``) for anything wrong in a file or table, with the
key path, the rule, the value found and the fix; ``TypeError`` / ``ValueError`` for a wrong
argument when :class:`SafetyLimits` is built in code (STYLE habit 6).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LIMIT_UNITS",
    "SANITY_CEILINGS",
    "LimitsError",
    "PatientProfile",
    "ProfileError",
    "SafetyLimits",
    "charge_per_phase_uc",
    "load_limits",
    "load_profile",
]

#: Unit of every limit, as written in messages.
LIMIT_UNITS: dict[str, str] = {
    "max_current_ma": "mA",
    "max_pulse_width_us": "µs",
    "max_frequency_hz": "Hz",
    "max_charge_per_phase_uc": "µC",
    "max_ramp_ma_per_s": "mA/s",
    "max_session_dose_s": "s",
    "max_audio_db_spl": "dB SPL",
    "max_audio_rate_hz": "Hz",
}

#: Absolute ceilings (same units) above which a value is taken for a unit error and refused.
SANITY_CEILINGS: dict[str, float] = {
    "max_current_ma": 150.0,  # transcutaneous stimulators top out near 100-130 mA
    "max_pulse_width_us": 1000.0,
    "max_frequency_hz": 200.0,
    "max_charge_per_phase_uc": 150.0,  # 150 mA × 1000 µs
    "max_ramp_ma_per_s": 1000.0,
    "max_session_dose_s": 86400.0,  # one day of stimulation seconds
    "max_audio_db_spl": 85.0,  # occupational 8-h exposure limit; sleep stimulation uses far less
    "max_audio_rate_hz": 20.0,
}


class LimitsError(ValueError):
    """A malformed limits table or profile; the message names the file, the key path and the fix."""


class ProfileError(LimitsError):
    """A patient profile that tries to raise a limit, or is otherwise malformed."""


def charge_per_phase_uc(current_ma: float, pulse_width_us: float) -> float:
    """Charge delivered in one phase of a pulse.

    Parameters
    ----------
    current_ma : float
        Current amplitude in mA.
    pulse_width_us : float
        Phase width in µs.

    Returns
    -------
    float
        Charge in µC (mA × µs = nC, divided by 1000).
    """
    return current_ma * pulse_width_us / 1000.0


def _problem(value: Any, key: str) -> tuple[type[Exception], str] | None:
    """The rule ``value`` breaks as limit ``key`` (exception type, message tail), or None if it is fine."""
    unit = LIMIT_UNITS[key]
    ceiling = SANITY_CEILINGS[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return TypeError, f"must be a number in {unit}, found {type(value).__name__} {value!r}"
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        return ValueError, f"must be a finite number > 0 {unit}, found {value!r}"
    if v > ceiling:
        return ValueError, (f"must be <= {ceiling:g} {unit} (sanity ceiling; check the unit), found {value!r}")
    return None


def _reject_unknown_keys(table: Mapping[str, Any], path: str, where: str, error: type[LimitsError]) -> None:
    """Raise ``error`` naming every key of ``table`` that is not a :class:`SafetyLimits` field."""
    allowed = SafetyLimits.keys()
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise error(f"{where}: table '{path}' has unknown key(s) {unknown}; allowed keys are {list(allowed)}.")


@dataclass(frozen=True)
class SafetyLimits:
    """Host-side stimulation limits enforced by :class:`~stimulation.safety.SafetySupervisor`.

    Every value must be a finite number > 0 and at most its :data:`SANITY_CEILINGS` entry.

    Parameters
    ----------
    max_current_ma : float
        Largest NMES current amplitude, mA.
    max_pulse_width_us : float
        Largest NMES phase width, µs.
    max_frequency_hz : float
        Largest NMES pulse rate, Hz.
    max_charge_per_phase_uc : float
        Largest charge per phase (current × pulse width), µC.
    max_ramp_ma_per_s : float
        Largest rate of rise of the current on one channel, mA/s.
    max_session_dose_s : float
        Largest total NMES stimulation time in one session, s (summed over channels).
    max_audio_db_spl : float
        Largest estimated auditory burst level, dB SPL.
    max_audio_rate_hz : float
        Largest auditory burst rate, bursts/s (the minimum interval between bursts is its inverse).

    Raises
    ------
    TypeError
        A value is not a number (``bool`` is refused).
    ValueError
        A value is not finite, not > 0, or above its sanity ceiling.
    """

    max_current_ma: float
    max_pulse_width_us: float
    max_frequency_hz: float
    max_charge_per_phase_uc: float
    max_ramp_ma_per_s: float
    max_session_dose_s: float
    max_audio_db_spl: float
    max_audio_rate_hz: float

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            problem = _problem(value, f.name)
            if problem is not None:
                exc_type, tail = problem
                raise exc_type(f"SafetyLimits.{f.name} {tail}.")
            object.__setattr__(self, f.name, float(value))

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Names of all limits, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def as_dict(self) -> dict[str, float]:
        """All limits as ``{key: value}`` (units in the keys)."""
        return {k: getattr(self, k) for k in self.keys()}

    @classmethod
    def from_table(cls, table: Any, *, path: str = "safety.limits", where: str = "config") -> SafetyLimits:
        """Validate a parsed TOML table into limits.

        Parameters
        ----------
        table : mapping
            The parsed ``[safety.limits]`` table (all keys required, no others allowed).
        path : str
            Dotted key path of the table, used in messages (``safety.limits.max_current_ma``).
        where : str
            What the table came from (a file name), used in messages.

        Raises
        ------
        LimitsError
            Naming the key path, the rule, the value found and the fix.
        """
        if not isinstance(table, Mapping):
            raise LimitsError(f"{where}: '{path}' must be a table of limits, found {type(table).__name__} {table!r}.")
        allowed = cls.keys()
        _reject_unknown_keys(table, path, where, LimitsError)
        missing = [k for k in allowed if k not in table]
        if missing:
            raise LimitsError(
                f"{where}: table '{path}' is missing required key(s) {missing}; every limit must be set "
                "explicitly (there are no default clinical limits)."
            )
        for key in allowed:
            problem = _problem(table[key], key)
            if problem is not None:
                raise LimitsError(f"{where}: key '{path}.{key}' {problem[1]}.")
        return cls(**{k: float(table[k]) for k in allowed})

    def with_profile(self, profile: PatientProfile, *, config_path: str = "safety.limits") -> SafetyLimits:
        """These limits lowered by a patient profile.

        Parameters
        ----------
        profile : PatientProfile
            Its ``limits`` may name any subset of the keys; each value must be <= the current one.
        config_path : str
            Key path of the config table the limits came from, used in messages.

        Returns
        -------
        SafetyLimits
            A new object; keys the profile does not name keep their value.

        Raises
        ------
        ProfileError
            When a profile value is above the config limit (key, config value and profile value named).
        """
        if not isinstance(profile, PatientProfile):
            raise TypeError(f"profile must be a PatientProfile, got {type(profile).__name__} ({profile!r}).")
        values = self.as_dict()
        for key, value in profile.limits.items():
            if value > values[key]:
                unit = LIMIT_UNITS[key]
                raise ProfileError(
                    f"patient profile {profile.patient_id!r} ({profile.source}): key 'limits.{key}' = {value:g} {unit} "
                    f"would raise the config limit '{config_path}.{key}' = {values[key]:g} {unit}; a profile may only "
                    f"lower limits. Set it to <= {values[key]:g} {unit} or change the session config."
                )
            values[key] = value
        return SafetyLimits(**values)


@dataclass(frozen=True)
class PatientProfile:
    """A per-patient profile: who it is for and the limits it lowers.

    Attributes
    ----------
    patient_id : str
        Pseudonymous patient identifier (``[patient] id``).
    limits : dict of str to float
        Subset of the :class:`SafetyLimits` keys (units in the names) with the lowered values.
    note : str
        Free text from the clinician.
    source : str
        Where it was loaded from (file path), for messages and the audit log.
    """

    patient_id: str
    limits: dict[str, float] = field(default_factory=dict, hash=False)
    note: str = ""
    source: str = "<code>"

    @classmethod
    def from_document(cls, doc: Any, *, where: str = "<profile>") -> PatientProfile:
        """Validate a parsed profile TOML document.

        Raises
        ------
        ProfileError
            Naming the file, the key path, the rule and the value found.
        """
        if not isinstance(doc, Mapping):
            raise ProfileError(f"{where}: a profile must be a TOML document, found {type(doc).__name__}.")
        unknown = sorted(set(doc) - {"patient", "limits"})
        if unknown:
            raise ProfileError(f"{where}: unknown top-level key(s) {unknown}; allowed are ['limits', 'patient'].")
        patient = doc.get("patient")
        if not isinstance(patient, Mapping):
            raise ProfileError(f"{where}: table 'patient' with key 'id' is required, found {patient!r}.")
        bad = sorted(set(patient) - {"id", "note"})
        if bad:
            raise ProfileError(f"{where}: table 'patient' has unknown key(s) {bad}; allowed are ['id', 'note'].")
        pid = patient.get("id")
        if not isinstance(pid, str) or not pid.strip():
            raise ProfileError(f"{where}: key 'patient.id' must be a non-empty string, found {pid!r}.")
        note = patient.get("note", "")
        if not isinstance(note, str):
            raise ProfileError(f"{where}: key 'patient.note' must be a string, found {note!r}.")
        table = doc.get("limits")
        if not isinstance(table, Mapping):
            raise ProfileError(f"{where}: table 'limits' is required (it may be empty), found {table!r}.")
        _reject_unknown_keys(table, "limits", where, ProfileError)
        limits: dict[str, float] = {}
        for key, value in table.items():
            problem = _problem(value, key)
            if problem is not None:
                raise ProfileError(f"{where}: key 'limits.{key}' {problem[1]}.")
            limits[key] = float(value)
        return cls(pid, limits, note, where)


def _read_toml(path: str | Path, error: type[LimitsError]) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{p}: file not found; give the path of an existing TOML file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{p}: not valid TOML ({exc}); fix the syntax at that line and column.") from None


def load_profile(path: str | Path) -> PatientProfile:
    """Read and validate a patient profile TOML file.

    Raises
    ------
    ProfileError
        Unreadable TOML, a missing ``[patient] id`` or ``[limits]`` table, an unknown key or a bad value.
    """
    return PatientProfile.from_document(_read_toml(path, ProfileError), where=str(path))


def load_limits(
    path: str | Path, *, table: str = "safety.limits", profile: str | Path | PatientProfile | None = None
) -> SafetyLimits:
    """Read the limits table of a TOML file, optionally lowered by a patient profile.

    Parameters
    ----------
    path : str or Path
        TOML file (a session config or a limits-only file).
    table : str
        Dotted path of the limits table inside the file.
    profile : str, Path or PatientProfile, optional
        Patient profile (file or loaded) applied on top; it may only lower limits.

    Raises
    ------
    LimitsError
        Unreadable TOML, a missing table or key, an unknown key or a bad value.
    ProfileError
        A profile that is malformed or tries to raise a limit.
    """
    doc: Any = _read_toml(path, LimitsError)
    walked: list[str] = []
    for part in table.split("."):
        walked.append(part)
        if not isinstance(doc, Mapping) or part not in doc:
            raise LimitsError(
                f"{path}: table '{'.'.join(walked)}' is missing; add a [{table}] table with the keys "
                f"{list(SafetyLimits.keys())}."
            )
        doc = doc[part]
    limits = SafetyLimits.from_table(doc, path=table, where=str(path))
    if profile is not None:
        prof = profile if isinstance(profile, PatientProfile) else load_profile(profile)
        limits = limits.with_profile(prof, config_path=table)
    return limits
