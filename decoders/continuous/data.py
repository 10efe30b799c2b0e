"""Continuous-decoding datasets: binned features with simultaneous kinematics, from NPZ or XDF.

Spec (``paradigm = "continuous"``)::

    paradigm = "continuous"
    [continuous]
    bin_s = 0.05                   # bin width in s when the file has no times (default 0.05)
    feature_stream = "M1 rates"    # XDF only: name of the feature stream
    kinematics_stream = "hand"     # XDF only: name of the kinematics stream
    robust = false                 # DKF: robust update (see decoders.continuous.filters)
    [[recordings]]
    path = "mihi_train.npz"        # arrays features (n_bins × n_features), kinematics (n_bins × n_dims),
                                   # optional times (n_bins,) s, feature_names, kinematics_names

Each recording is one time-ordered sequence; filters restart at the start of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decoders.dataset import DatasetError, DatasetSpec, RecordingSpec

__all__ = ["Sequence", "load_sequences"]


@dataclass(frozen=True, eq=False)
class Sequence:
    """One recording of binned features and kinematics.

    Attributes
    ----------
    path : Path
    features : ndarray, shape (n_bins, n_features), float64
    kinematics : ndarray, shape (n_bins, n_dims), float64
    times : ndarray, shape (n_bins,), s
    feature_names, kinematics_names : list of str
    """

    path: Path
    features: np.ndarray
    kinematics: np.ndarray
    times: np.ndarray
    feature_names: list[str]
    kinematics_names: list[str]

    @property
    def bin_s(self) -> float:
        """Median bin width in s."""
        return float(np.median(np.diff(self.times))) if len(self.times) > 1 else 0.05


def _err(spec: DatasetSpec, rec: RecordingSpec, problem: str) -> DatasetError:
    return DatasetError(f"dataset spec {str(spec.path)!r}, recording {str(rec.path)!r}: {problem}")


def _names(arr: np.ndarray | None, n: int, prefix: str) -> list[str]:
    if arr is None:
        return [f"{prefix}{i:03d}" for i in range(n)]
    return [str(a) for a in np.asarray(arr).ravel()]


def _read_npz(rec: RecordingSpec, spec: DatasetSpec, bin_s: float) -> Sequence:
    try:
        with np.load(rec.path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise _err(spec, rec, f"not a readable NPZ file: {err}") from err
    if "features" not in arrays:
        raise _err(spec, rec, f"no 'features' array (n_bins × n_features); arrays found: {sorted(arrays)}.")
    if "kinematics" not in arrays:
        raise _err(
            spec, rec, f"missing kinematics: no 'kinematics' array (n_bins × n_dims); arrays found: {sorted(arrays)}."
        )
    feats = np.asarray(arrays["features"], dtype=np.float64)
    kin = np.asarray(arrays["kinematics"], dtype=np.float64)
    if feats.ndim == 1:
        feats = feats[:, None]
    if kin.ndim == 1:
        kin = kin[:, None]
    times = arrays.get("times")
    times = np.arange(len(feats)) * bin_s if times is None else np.asarray(times, dtype=np.float64).ravel()
    return Sequence(
        rec.path,
        feats,
        kin,
        times,
        _names(arrays.get("feature_names"), feats.shape[1], "f"),
        _names(arrays.get("kinematics_names"), kin.shape[1], "z"),
    )


def _read_xdf(rec: RecordingSpec, spec: DatasetSpec) -> Sequence:
    import warnings

    from acquisition.xdf_reader import XdfFormatError, XdfTruncatedWarning, read_xdf

    table = spec.table("continuous")
    fname = rec.options.get("feature_stream", table.get("feature_stream"))
    kname = rec.options.get("kinematics_stream", table.get("kinematics_stream"))
    if not fname or not kname:
        raise _err(spec, rec, "XDF needs [continuous] feature_stream and kinematics_stream (stream names).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", XdfTruncatedWarning)
            streams = read_xdf(rec.path)
    except XdfFormatError as err:
        raise _err(spec, rec, f"not a readable XDF file: {err}") from err
    by_name = {s.info.name: s for s in streams}
    if fname not in by_name:
        raise _err(spec, rec, f"no feature stream {fname!r}; streams: {sorted(by_name)}.")
    if kname not in by_name:
        raise _err(spec, rec, f"missing kinematics: no stream {kname!r}; streams: {sorted(by_name)}.")
    fs, ks = by_name[fname], by_name[kname]
    if fs.n_samples == 0 or ks.n_samples == 0:
        raise _err(spec, rec, f"stream {fname!r} or {kname!r} holds no samples.")
    ft = np.asarray(fs.timestamps, dtype=np.float64)
    kt = np.asarray(ks.timestamps, dtype=np.float64)
    kd = np.asarray(ks.data, dtype=np.float64)
    kin = np.column_stack([np.interp(ft, kt, kd[:, j]) for j in range(kd.shape[1])])
    return Sequence(
        rec.path,
        np.asarray(fs.data, dtype=np.float64),
        kin,
        ft - ft[0],
        list(fs.info.labels),
        list(ks.info.labels),
    )


def load_sequences(spec: DatasetSpec) -> list[Sequence]:
    """Read every recording of a continuous spec.

    Raises
    ------
    DatasetError
        Unreadable file, missing ``features`` or ``kinematics`` (missing kinematics), row counts
        that differ, non-finite features or kinematics (the message names the first bad bin),
        recordings whose feature or kinematics names differ.
    """
    bin_s = float(spec.table("continuous").get("bin_s", 0.05))
    out: list[Sequence] = []
    for rec in spec.recordings:
        suffix = rec.path.suffix.lower()
        if suffix == ".npz":
            seq = _read_npz(rec, spec, bin_s)
        elif suffix in (".xdf", ".xdfz"):
            seq = _read_xdf(rec, spec)
        else:
            raise _err(spec, rec, f"unknown format {suffix!r}; continuous datasets are NPZ or XDF.")
        n = len(seq.features)
        if n < 2:
            raise _err(spec, rec, f"needs at least 2 bins, has {n}.")
        if len(seq.kinematics) != n or len(seq.times) != n:
            raise _err(
                spec,
                rec,
                f"features have {n} bins but kinematics {len(seq.kinematics)} and times {len(seq.times)}; "
                "they must be simultaneous (one row per bin).",
            )
        for what, arr in (("features", seq.features), ("kinematics", seq.kinematics)):
            bad = ~np.isfinite(arr)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise _err(
                    spec,
                    rec,
                    f"non-finite {what}: {int(bad.sum())} NaN/Inf value(s), first at bin {int(row)}, "
                    f"column {int(col)}; clean or interpolate them before training.",
                )
        if out and (seq.feature_names != out[0].feature_names or seq.kinematics_names != out[0].kinematics_names):
            raise _err(spec, rec, f"feature/kinematics names differ from {str(out[0].path)!r}.")
        out.append(seq)
    return out
