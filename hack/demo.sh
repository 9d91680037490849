#!/usr/bin/env bash
# The README's first command: install what is needed, then run the end-to-end demo.
# Arguments go to hack/demo.py (e.g. --keep-running, --kubeconfig PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
exec .venv/bin/python hack/demo.py "$@"
