#!/usr/bin/env bash
# Installs what flashgate's demo and tests need on a fresh machine, idempotently:
# a Python virtualenv with the project and its dev tools, Debian's SoftHSM2 (PKCS#11 tests), and
# the pinned control-plane binaries, S3 server and Go tools (helm, promtool, prometheus, the Lua
# harness) built from source, and the third-party CRDs the chart tests apply (hack/controlplane.py,
# hack/s3server.py and hack/gotools.py, cached in ~/.cache).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the dependency list changed (a stamp keyed by the files that define it).
stamp=".venv/.flashgate-deps-$(cat pyproject.toml hack/constraints.txt 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing Python dependencies" >&2
  .venv/bin/pip install -q --disable-pip-version-check -U pip
  .venv/bin/pip install -q --disable-pip-version-check -c hack/constraints.txt -e '.[dev]'
  rm -f .venv/.flashgate-deps-* && touch "$stamp"
fi

if ! command -v softhsm2-util >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing softhsm2 from Debian" >&2
    (apt-get install -y -q softhsm2 >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q softhsm2 >/dev/null; })
  else
    echo "[setup] softhsm2 is missing and cannot be installed here (needs root + apt); PKCS#11 tests will be skipped" >&2
  fi
fi

.venv/bin/python hack/controlplane.py build >/dev/null
.venv/bin/python hack/s3server.py install >/dev/null
.venv/bin/python hack/gotools.py install all >/dev/null
.venv/bin/python hack/gotools.py crds >/dev/null
