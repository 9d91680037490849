#!/usr/bin/env bash
# `make bench`: install what is needed (as for the tests, plus matplotlib for the charts), then run
# the benchmarks. They print Markdown tables and write them, with charts, to bench/results/ (not
# committed; docs/bench/ holds a committed example). Figures only: nothing here fails on a slow
# machine. Arguments go to bench/bench_operator.py (e.g. --quick; bench/bench_delivery.py takes
# --quick too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
.venv/bin/pip install -q --disable-pip-version-check -c hack/constraints.txt -e '.[dev,bench]'
mkdir -p bench/results
echo "[bench] the operator at scale (bench/bench_operator.py)" >&2
.venv/bin/python bench/bench_operator.py "$@" | tee bench/results/operator.md
echo "[bench] the sidecar's verifications (bench/bench_sidecar.py)" >&2
.venv/bin/python bench/bench_sidecar.py | tee bench/results/sidecar.md
echo "[bench] artifact integrity vs openssl (bench/bench_fetch.py)" >&2
.venv/bin/python bench/bench_fetch.py | tee bench/results/fetch.md
echo "[bench] the delivery service under 10,000 polling devices (bench/bench_delivery.py)" >&2
delivery_args=()
[[ " $* " == *" --quick "* ]] && delivery_args=(--quick)
.venv/bin/python bench/bench_delivery.py "${delivery_args[@]}" | tee bench/results/delivery.md
echo "[bench] results in bench/results/" >&2
