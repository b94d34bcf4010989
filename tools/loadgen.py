#!/usr/bin/env python3
"""Gy credit-control load generator: a thin wrapper of the `ocs.load` package
(`ocs load ...`, `python3 -m ocs.load ...`), same flags; see ocs/load/__init__.py.

    python3 tools/loadgen.py --host 127.0.0.1 --port 3868            # 10 s, as fast as possible
    python3 tools/loadgen.py --rate 10000 --duration 30               # paced, for latency at a rate
    python3 tools/loadgen.py --requests 100000 --processes 2 --json   # 2 driver processes, JSON out

Loopback only: a --host that is not 127.0.0.0/8, ::1 or localhost is refused (exit 2).
"""

import os
import sys

_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if _ROOT not in sys.path:                # the ocs package of this source tree, run from anywhere
    sys.path.insert(0, _ROOT)

from ocs.load.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
