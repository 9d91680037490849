"""The image, as far as it can be checked without a container engine (none runs here): the build
context the Dockerfile gets (.dockerignore) makes a wheel with every command the chart's
containers run, and the Dockerfile's final stage is pinned, non-root with the chart's user, and
installs that wheel and nothing else."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from .conftest import CHART, REPO, Helm, find


def _stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM ", dockerfile, flags=re.M)[1:]


def test_the_build_context_makes_a_wheel_with_every_command_the_chart_runs(
        helm: Helm, tmp_path: Path) -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if not line.startswith("#"))] == "*"
    context = tmp_path / "context"
    for line in ignore:
        if line.startswith("!"):
            source, target = REPO / line[1:].rstrip("/"), context / line[1:].rstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                             str(tmp_path / "wheels"), str(context)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("flashgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        scripts = {line.split(" = ")[0] for line in archive.read(entry_points).decode().splitlines()
                   if " = " in line}
    docs = helm.docs()
    pods = [find(docs, "Deployment"), find(docs, "Job")]
    commands = {c["command"][0] for pod in pods for c in pod["spec"]["template"]["spec"]
                ["containers"]}
    assert commands == {"flashgate-operator", "flashgate-verifier", "flashgate-certgen"}
    assert commands <= scripts, f"the wheel has no {commands - scripts}"


def test_the_final_stage_is_pinned_non_root_and_installs_only_the_wheels(helm: Helm) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1)), \
        "the base must be a pinned Python 3.11 slim image"
    build, final = _stages(dockerfile)
    assert build.startswith("${PYTHON_IMAGE} AS build") and final.startswith("${PYTHON_IMAGE}\n")
    assert "--no-index --find-links=/wheels flashgate" in final
    for tool in ("apt-get", "gcc", "build-essential", "COPY . "):
        assert tool not in final, tool
    user = re.findall(r"^USER (\d+):(\d+)$", final, re.M)
    pod = find(helm.docs(), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert user == [(str(pod["runAsUser"]), str(pod["runAsGroup"]))] and pod["runAsUser"] != 0
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None and chart["appVersion"] == version.group(1), \
        "the chart's appVersion (the image tag) is the package's version"
