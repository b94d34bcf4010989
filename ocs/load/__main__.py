"""`python3 -m ocs.load ...`: the load generator (see ocs.load)."""

import sys

from .cli import main

sys.exit(main())
