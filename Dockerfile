# syntax=docker/dockerfile:1
# flashgate: one image for the operator, the verifier sidecar and the chart's certgen hook; the
# Helm chart picks the command per container (flashgate-operator, flashgate-verifier,
# flashgate-certgen). Why one image: docs/install.md.
#
#   docker build -t flashgate:0.1.0 .
#
# The base is pinned by version; pin its digest too (python:3.11.14-slim-bookworm@sha256:...) in
# the pipeline that builds releases.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: the wheels of flashgate and of every dependency ------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hack/constraints.txt ./constraints.txt
COPY flashgate ./flashgate
# Every dependency ships binary wheels for linux/amd64 and arm64: nothing is compiled, and this
# stage has no compiler either (a dependency without a wheel fails the build here, visibly).
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

# ---- run: the package installed from the wheels, nothing else ----------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels flashgate
# Not root; numeric, so that the kubelet can check runAsNonRoot (the chart runs it as 65532 too).
USER 65532:65532
# No default process: the chart (or `docker run IMAGE flashgate-verifier ...`) names one.
CMD ["flashgate-operator", "--help"]
