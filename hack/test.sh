#!/usr/bin/env bash
# The project's test command: installs what it needs, then lint, types, unit and e2e tests.
# Extra arguments go to pytest (e.g. `make test ARGS="-k rollback"`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
echo "[test] ruff" >&2
.venv/bin/ruff check flashgate tests hack bench
echo "[test] mypy --strict" >&2
.venv/bin/mypy --strict flashgate
# The chaos loop and its invariant checker (imported as `chaos`, beside the other hack/ modules).
MYPYPATH=hack .venv/bin/mypy --strict --follow-imports=silent hack/chaos
echo "[test] CRDs are up to date" >&2
.venv/bin/python -m flashgate.api.crdgen --check
echo "[test] the chart's generated files and deploy/ are up to date" >&2
.venv/bin/python hack/chart.py --check
echo "[test] pytest" >&2
exec .venv/bin/pytest -q -ra "$@"
