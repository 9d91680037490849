"""`python -m flashgate.verifier_sidecar`: the same as the `flashgate-verifier` command."""
import sys

from flashgate.verifier_sidecar.server import main

sys.exit(main())
