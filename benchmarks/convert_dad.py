"""Convert the DAD monkey M1 reaching demo (MATLAB .mat) to NPZ sequences plus closedloop dataset specs.

Source: ../shared/data/dad_m1_reach/mihi_demo.mat (Dyer et al. 2017, Miller lab; see its MANIFEST):
``Yte`` (803 bins × 187 units, firing rates), ``Xte`` (803 × 2 hand velocity), ``Tte`` (target),
rows in temporal order within reach segments, bins of probably 50 ms. (``Ytr`` comes from
another recording with 174 units and is not used.)

Output (``--out DIR``)::

    DIR/mihi_train.npz   first 80 % of the bins (time-ordered split)
    DIR/mihi_test.npz    last 20 %
    DIR/dad_train.toml   dataset spec (paradigm continuous) of mihi_train.npz
    DIR/dad_test.toml    dataset spec of mihi_test.npz

Each NPZ holds ``features`` (n_bins × 187, float64), ``kinematics`` (n_bins × 2: vx, vy),
``times`` (s, 50 ms bins), ``target``, ``feature_names`` (u000..u186), ``kinematics_names``.

Usage::

    python benchmarks/convert_dad.py --out /tmp/dad [--src ../shared/data/dad_m1_reach] [--train-fraction 0.8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "dad_m1_reach"
BIN_S = 0.05

__all__ = ["convert", "main"]


def convert(src: Path, out: Path, train_fraction: float = 0.8, monkey: str = "mihi") -> dict[str, Path]:
    """Write the train/test NPZ files and specs; return ``{"train": spec, "test": spec}``."""
    import scipy.io as sio

    mat = src / f"{monkey}_demo.mat"
    if not mat.is_file():
        raise FileNotFoundError(f"{mat} does not exist (the DAD demo data).")
    if not 0.1 <= train_fraction <= 0.95:
        raise ValueError(f"--train-fraction must be in [0.1, 0.95], got {train_fraction}.")
    m = sio.loadmat(str(mat))
    Y = np.asarray(m["Yte"], dtype=np.float64)
    X = np.asarray(m["Xte"], dtype=np.float64)
    T = np.asarray(m["Tte"]).ravel().astype(np.int64)
    n = len(Y)
    k = round(n * train_fraction)
    out.mkdir(parents=True, exist_ok=True)
    names = np.array([f"u{i:03d}" for i in range(Y.shape[1])])
    specs = {}
    for part, sl in (("train", slice(0, k)), ("test", slice(k, n))):
        npz = out / f"{monkey}_{part}.npz"
        idx = np.arange(n)[sl]
        np.savez(
            npz,
            features=Y[sl],
            kinematics=X[sl],
            times=idx * BIN_S,
            target=T[sl],
            feature_names=names,
            kinematics_names=np.array(["vx", "vy"]),
        )
        spec = out / f"dad_{part}.toml"
        spec.write_text(
            f"# closedloop dataset spec: DAD {monkey} M1 reaching, {part} part ({len(idx)} bins), by convert_dad.py\n"
            'paradigm = "continuous"\n\n[continuous]\nbin_s = 0.05\nlags = 3\n\n'
            f'[[recordings]]\npath = "{npz.name}"\ngroup = "{monkey}"\n',
            encoding="utf-8",
        )
        specs[part] = spec
    return specs


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(DEFAULT_SRC), help="dad_m1_reach folder")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--train-fraction", type=float, default=0.8)
    args = ap.parse_args(argv)
    for part, path in convert(Path(args.src), Path(args.out), args.train_fraction).items():
        print(f"{part:<6} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
