"""`python -m flashgate.signing`: the signing station CLI (same as the `flashgate` command)."""

import sys

from flashgate.signing.cli import main

sys.exit(main())
