"""Decision-latency benchmark (closedloop vs the LSL floor and an mne-lsl peer).

Thin wrapper around :func:`app.bench_latency.main`; see that module for the method::

    python benchmarks/latency.py [--json] [--decisions N] [--configs 8ch_250Hz,64ch_1kHz]
"""

from __future__ import annotations

import sys

from app.bench_latency import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
