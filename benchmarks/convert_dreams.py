"""Convert the DREAMS Sleep Spindles excerpts (ASCII text) to FIF files with annotations plus a dataset spec.

The DREAMS database ships each scored channel as one-column ASCII (µV, first line the channel name
in brackets) and the scorings as ``onset_s duration_s`` text tables, which no standard reader
understands. This converter writes, per excerpt, ``excerptN_raw.fif`` (one EEG channel at its
native rate, 50-200 Hz) with these annotations:

- ``spindle``: the reference — expert 1's spindles, united with expert 2's where expert 2 scored
  the excerpt (1-6); overlapping events are merged;
- ``expert1`` / ``expert2``: each expert's own events, unmerged;
- ``automatic``: the database's own automatic detections (a peer, not ground truth);

and a dataset spec ``dreams_spindles.toml`` listing them (``paradigm = "spindle"``, one group per
excerpt). The product reads the FIF files with its standard readers.

Usage::

    python benchmarks/convert_dreams.py --out /tmp/dreams_fif                 # excerpts 1-5
    python benchmarks/convert_dreams.py --out DIR --excerpts 1 2 --crop-s 300 # first 5 min of two excerpts

The source folder defaults to ``../shared/data/dreams_spindles`` next to the repository. The DREAMS
licence is non-commercial (see its MANIFEST.md): keep converted files out of the repository.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "dreams_spindles"
EXCERPT_S = 1800.0  # every excerpt is 30 min
SPEC_NAME = "dreams_spindles.toml"

__all__ = ["convert", "main", "read_scoring", "read_signal"]


def read_signal(path: Path) -> tuple[np.ndarray, str, float]:
    """Read ``excerptN.txt``: samples in µV, the channel name from the header, the rate (Hz).

    The rate is not stored; it is the sample count over the excerpt's 30 minutes, rounded to
    an integer (100, 200 or 50 Hz), and must divide the count into exactly 1800 s within 1 s.
    """
    with path.open(encoding="ascii") as fh:
        header = fh.readline().strip()
    if not (header.startswith("[") and header.endswith("]")):
        raise ValueError(f"{path}: first line must be the channel name in brackets, found {header!r}.")
    x = np.loadtxt(path, skiprows=1, dtype=np.float64)
    sfreq = float(round(x.size / EXCERPT_S))
    if sfreq <= 0 or abs(x.size / sfreq - EXCERPT_S) > 1.0:
        raise ValueError(f"{path}: {x.size} samples do not make a 30 min excerpt at an integer rate.")
    return x, header[1:-1], sfreq


def read_scoring(path: Path) -> np.ndarray:
    """Read a scoring table (header line, then ``onset_s duration_s`` rows) as shape (n_events, 2)."""
    rows = np.loadtxt(path, skiprows=1, ndmin=2, dtype=np.float64)
    if rows.size == 0:
        return np.zeros((0, 2))
    if rows.shape[1] != 2 or (rows[:, 1] <= 0).any():
        raise ValueError(f"{path}: expected rows of 'onset_s duration_s' with durations > 0.")
    return rows


def _union(events: list[np.ndarray]) -> np.ndarray:
    spans = sorted((a, a + d) for ev in events for a, d in ev)
    merged: list[list[float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return np.array([[a, b - a] for a, b in merged]).reshape(-1, 2)


def convert(
    src: Path, out: Path, excerpts: list[int], crop_s: float | None = None, echo: Callable[[str], object] = print
) -> Path:
    """Write one FIF per excerpt and the spec into ``out``; return the spec path (``echo`` gets one line per file)."""
    import mne

    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for n in excerpts:
        sig_path = src / f"excerpt{n}.txt"
        if not sig_path.is_file():
            raise FileNotFoundError(f"DREAMS excerpt {n}: {sig_path} does not exist.")
        x, channel, sfreq = read_signal(sig_path)
        if crop_s is not None:
            x = x[: round(crop_s * sfreq)]
        duration = x.size / sfreq
        expert = [read_scoring(src / f"Visual_scoring1_excerpt{n}.txt")]
        second = src / f"Visual_scoring2_excerpt{n}.txt"
        if second.is_file():
            expert.append(read_scoring(second))
        auto_path = src / f"Automatic_detection_excerpt{n}.txt"
        tables = {"spindle": _union(expert), **{f"expert{i + 1}": e for i, e in enumerate(expert)}}
        if auto_path.is_file():
            tables["automatic"] = read_scoring(auto_path)
        onsets, durations, descriptions = [], [], []
        for desc, ev in tables.items():
            for a, d in ev:
                if a < duration:
                    onsets.append(a)
                    durations.append(min(d, duration - a))
                    descriptions.append(desc)
        info = mne.create_info([channel], sfreq, ch_types="eeg")
        raw = mne.io.RawArray(x[None, :] * 1e-6, info, verbose="error")
        raw.set_annotations(mne.Annotations(onsets, durations, descriptions))
        name = f"excerpt{n}_raw.fif"
        raw.save(out / name, overwrite=True, verbose="error")
        entries.append((name, n, channel, sfreq, len(tables["spindle"])))
        echo(
            f"excerpt{n}: {channel} {sfreq:g} Hz {duration:.0f} s, {int((tables['spindle'][:, 0] < duration).sum())} "
            f"reference spindles -> {out / name}"
        )
    lines = [
        "# DREAMS Sleep Spindles excerpts converted by benchmarks/convert_dreams.py (FIF, native rates).",
        'paradigm = "spindle"',
        "",
        "[spindle]",
        'event = "spindle"            # expert 1, united with expert 2 where both scored',
        'automatic_event = "automatic"  # the database\'s own automatic detector (benchmark peer)',
        "line_hz = 50.0",
        "",
    ]
    for name, n, _channel, _sfreq, _count in entries:
        lines += ["[[recordings]]", f'path = "{name}"', f'group = "excerpt{n}"', ""]
    spec = out / SPEC_NAME
    spec.write_text("\n".join(lines), encoding="utf-8")
    return spec


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="DREAMS folder (default: %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="output folder for FIF files and the spec")
    ap.add_argument("--excerpts", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="excerpt numbers (1-8)")
    ap.add_argument("--crop-s", type=float, default=None, help="keep only the first N seconds of each excerpt")
    args = ap.parse_args(argv)
    try:
        spec = convert(args.src, args.out, args.excerpts, args.crop_s)
    except (OSError, ValueError) as err:
        print(f"convert_dreams: {err}", file=sys.stderr)
        return 2
    print(f"spec: {spec}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
