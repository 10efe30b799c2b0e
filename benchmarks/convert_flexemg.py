"""Convert the flexemg HD-sEMG recordings (MATLAB .mat) to FIF files plus closedloop dataset specs.

The flexemg set (Moin et al., ISCAS 2018; GPL-3 data, ../shared/data/flexemg_hdemg) stores each
28 s trial as ``raw`` (28000 × 96 uint16, columns 1-64 = EMG, ``p.lsbmV`` mV per LSB, 1 kHz) and
the protocol in ``p``: 5 s rest, then four 5 s gestures in the order ``p.sequence`` (labels 1-4 =
``p.labelnames`` Fist, Raise, Lower, Open), then 3 s rest. ``arraymap.mat`` maps the 16 × 4
electrode grid to channel numbers.

Output (``--out DIR``)::

    DIR/train/001-001_raw.fif ...     one FIF per trial: 64 EMG channels ch01..ch64 in V (per-channel mean removed),
    DIR/test/001-001_raw.fif ...      annotations rest (0-5 s), Fist/Raise/Lower/Open (5 s each), rest_end (last 3 s)
    DIR/flexemg_train.toml            dataset spec of Session1Train (paradigm emg, [emg] grid 4 × 16 from arraymap)
    DIR/flexemg_test.toml             dataset spec of Session1Test

Usage::

    python benchmarks/convert_flexemg.py --out /tmp/flexemg [--src ../shared/data/flexemg_hdemg] [--trials 10]

``--trials N`` converts only the first N trials of each session (tests use 2-3). The specs use
epochs [1, 4] s after each gesture onset (the original code drops 20 % of each 5 s gesture on
both sides of a transition), 200 ms windows with a 50 ms hop, a 20-450 Hz band-pass and a 60 Hz notch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "flexemg_hdemg"
SESSIONS = {"train": "001-Session1Train", "test": "001-Session1Test"}
SRATE = 1000.0
N_EMG = 64
CLASSES = ("rest", "Fist", "Raise", "Lower", "Open")  # the set's own label names (p.labelnames)

__all__ = ["channel_names", "convert", "electrode_grid", "main", "read_trial"]


def channel_names() -> list[str]:
    """``ch01`` .. ``ch64`` (the channel numbers of arraymap.mat)."""
    return [f"ch{i:02d}" for i in range(1, N_EMG + 1)]


def electrode_grid(src: Path) -> list[list[str]]:
    """The electrode layout as 4 rows × 16 columns of channel names (arraymap.mat transposed)."""
    import scipy.io as sio

    amap = np.asarray(sio.loadmat(str(src / "arraymap.mat"), squeeze_me=True)["arraymap"], dtype=int)
    if amap.shape != (16, 4) or sorted(amap.ravel().tolist()) != list(range(1, N_EMG + 1)):
        raise ValueError(f"{src / 'arraymap.mat'}: expected a 16 × 4 map of channels 1-64, got shape {amap.shape}.")
    return [[f"ch{int(c):02d}" for c in row] for row in amap.T]


def read_trial(path: Path) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """One trial: EMG in µV (28000 × 64, per-channel mean removed) and annotations (onset s, duration s, name).

    Raises
    ------
    ValueError
        The file does not hold the expected ``raw`` and ``p`` fields.
    """
    import scipy.io as sio

    m = sio.loadmat(str(path), squeeze_me=True)
    if "raw" not in m or "p" not in m:
        raise ValueError(f"{path}: not a flexemg trial (needs 'raw' and 'p'), found {sorted(m)}.")
    p = m["p"]
    lsb_mv = float(p["lsbmV"].item())
    emg = m["raw"][:, :N_EMG].astype(np.float64) * lsb_mv * 1e3  # µV
    emg -= emg.mean(axis=0)
    t_rest = int(p["timerest"].item()) / SRATE
    t_gest = int(p["timegest"].item()) / SRATE
    names = [str(n) for n in np.atleast_1d(p["labelnames"].item())]
    seq = [int(g) for g in np.atleast_1d(p["sequence"].item())]
    ann = [(0.0, t_rest, "rest")]
    for j, g in enumerate(seq):
        ann.append((t_rest + j * t_gest, t_gest, names[g - 1]))
    end = t_rest + len(seq) * t_gest
    total = emg.shape[0] / SRATE
    if total > end:
        ann.append((end, total - end, "rest_end"))
    return emg, ann


def _write_fif(emg_uv: np.ndarray, ann: list[tuple[float, float, str]], path: Path) -> None:
    import mne

    info = mne.create_info(channel_names(), SRATE, ch_types="emg")
    raw = mne.io.RawArray(emg_uv.T * 1e-6, info, verbose="error")
    onset, dur, desc = zip(*ann, strict=True)
    raw.set_annotations(mne.Annotations(list(onset), list(dur), list(desc)))
    raw.save(str(path), overwrite=True, verbose="error")


def _spec_text(session: str, files: list[str], grid: list[list[str]]) -> str:
    lines = [
        f"# closedloop dataset spec: flexemg HD-sEMG, subject 001, {SESSIONS[session]} (written by convert_flexemg.py)",
        'paradigm = "emg"',
        "",
        "[epochs]",
        "tmin = 1.0",
        "tmax = 4.0",
        "",
    ]
    for c in CLASSES:
        lines += [f"[classes.{c}]", f'event = "{c}"', ""]
    lines += [
        "[emg]",
        "window_s = 0.2",
        "hop_s = 0.05",
        "bandpass_hz = [20.0, 450.0]",
        "notch_hz = 60.0",
        'rest_class = "rest"',
        "grid = [",
        *[f"    [{', '.join(repr(c).replace(chr(39), chr(34)) for c in row)}]," for row in grid],
        "]",
        "",
    ]
    for f in files:
        lines += ["[[recordings]]", f'path = "{session}/{f}"', f'group = "{Path(f).stem.removesuffix("_raw")}"', ""]
    return "\n".join(lines)


def convert(src: Path, out: Path, n_trials: int | None = None) -> dict[str, Path]:
    """Convert both sessions; return ``{"train": spec path, "test": spec path}``.

    Parameters
    ----------
    src : Path
        The flexemg_hdemg folder.
    out : Path
        Output folder (created).
    n_trials : int, optional
        Convert only the first ``n_trials`` trials of each session.
    """
    if not (src / "arraymap.mat").is_file():
        raise FileNotFoundError(f"{src}: not the flexemg_hdemg folder (arraymap.mat missing).")
    grid = electrode_grid(src)
    specs: dict[str, Path] = {}
    for session, folder in SESSIONS.items():
        mats = sorted((src / folder).glob("*.mat"))[:n_trials]
        if not mats:
            raise FileNotFoundError(f"{src / folder}: no trial .mat files.")
        (out / session).mkdir(parents=True, exist_ok=True)
        files = []
        for mat in mats:
            emg, ann = read_trial(mat)
            name = f"{mat.stem}_raw.fif"
            _write_fif(emg, ann, out / session / name)
            files.append(name)
        spec = out / f"flexemg_{session}.toml"
        spec.write_text(_spec_text(session, files, grid), encoding="utf-8")
        specs[session] = spec
    return specs


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(DEFAULT_SRC), help="flexemg_hdemg folder (default ../shared/data/...)")
    ap.add_argument("--out", required=True, help="output folder for FIF files and specs")
    ap.add_argument("--trials", type=int, default=None, help="convert only the first N trials per session")
    args = ap.parse_args(argv)
    specs = convert(Path(args.src), Path(args.out), args.trials)
    for session, path in specs.items():
        print(f"{session:<6} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
