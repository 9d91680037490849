#!/usr/bin/env python3
"""The Go tools the test suite runs for real, built from pinned sources and cached.

- helm (helm.sh/helm/v3, `go install` with the version ldflags of helm's Makefile),
- promtool and prometheus (github.com/prometheus/prometheus, built from a scratch module that
  requires the tag and copies any replace/exclude lines of the tag's own go.mod, since
  `go install` refuses those (v0.316.0 happens to have none; earlier tags do); the React UI is
  not embedded, the HTTP API is all there),
- lua-harness (hack/luaharness, evaluates an Argo CD resource health check with gopher-lua the
  way Argo CD does; keyed by a hash of its source files),
- and not a tool: the CRDs of the other operators' kinds the Helm chart may render (cert-manager's
  Certificate and Issuer, the Prometheus Operator's ServiceMonitor and PrometheusRule), copied from
  those projects' Go modules at pinned versions (`go mod download`; nothing is built), so that the
  API server can validate them (`crds`).

`install [TOOL|all]` builds what is missing into ~/.cache/flashgate/<tool>/<version>/bin/ (or
under $XDG_CACHE_HOME) and prints the paths, so that a second run is instant; `path TOOL` prints
a tool's path or exits 1 when it is not built. FLASHGATE_HELM, FLASHGATE_PROMTOOL,
FLASHGATE_PROMETHEUS and FLASHGATE_LUA_HARNESS point at existing binaries instead.

Only the standard library and Go are needed: Go 1.26.7 or later (prometheus's go.mod asks for
it; GOTOOLCHAIN=local, so no other toolchain is downloaded).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HELM_VERSION = "v3.22.0"
# Prometheus's Go module versions map v0.3MM.P to Prometheus 3.MM.P: v0.316.0 is 3.16.0.
PROMETHEUS_VERSION = "v0.316.0"
HELM_MODULE = "helm.sh/helm/v3"
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
LUA_HARNESS_SOURCE = Path(__file__).resolve().parent / "luaharness"
# module -> (version, CRD files in it)
THIRD_PARTY_CRDS = {
    "github.com/cert-manager/cert-manager": ("v1.21.2", (
        "deploy/crds/cert-manager.io_certificates.yaml",
        "deploy/crds/cert-manager.io_issuers.yaml")),
    "github.com/prometheus-operator/prometheus-operator": ("v0.85.0", (
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml")),
}

TOOLS = ("helm", "promtool", "prometheus", "lua-harness")
ENV_OVERRIDES = {
    "helm": "FLASHGATE_HELM",
    "promtool": "FLASHGATE_PROMTOOL",
    "prometheus": "FLASHGATE_PROMETHEUS",
    "lua-harness": "FLASHGATE_LUA_HARNESS",
}


def log(tool: str, message: str) -> None:
    print(f"[{tool}] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flashgate"


def lua_harness_key() -> str:
    """The cache key of the harness: a hash of its source files (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(LUA_HARNESS_SOURCE.iterdir()):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def version_of(tool: str) -> str:
    if tool == "helm":
        return HELM_VERSION
    if tool in ("promtool", "prometheus"):
        return PROMETHEUS_VERSION
    if tool == "lua-harness":
        return lua_harness_key()
    raise ValueError(f"unknown tool {tool!r} (known: {', '.join(TOOLS)})")


def binary_path(tool: str) -> Path:
    return cache_root() / tool / version_of(tool) / "bin" / tool


def find(tool: str) -> Path | None:
    """The tool's binary if it is built (or given by its FLASHGATE_* variable), else None."""
    given = os.environ.get(ENV_OVERRIDES[tool]) if tool in ENV_OVERRIDES else None
    if given:
        return Path(given) if Path(given).is_file() else None
    path = binary_path(tool)
    return path if path.is_file() else None


def install(tool: str) -> Path:
    """Return the tool's binary, building it from source if needed."""
    version_of(tool)  # refuses an unknown name
    found = find(tool)
    if found is not None:
        return found
    variable = ENV_OVERRIDES[tool]
    if os.environ.get(variable):
        raise SystemExit(f"{variable}={os.environ[variable]} is not a file")
    if shutil.which("go") is None:
        raise SystemExit(f"Go is needed to build {tool} (https://go.dev/dl/)")
    # promtool and prometheus are built together, so they share a lock.
    group = "prometheus" if tool == "promtool" else tool
    with _build_lock(tool, group):
        if binary_path(tool).is_file():  # built by whoever held the lock before
            return binary_path(tool)
        started = time.monotonic()
        if tool == "helm":
            _build_helm()
        elif group == "prometheus":
            _build_prometheus()
        else:
            _build_lua_harness()
        built = "promtool and prometheus" if group == "prometheus" else tool
        log(tool, f"built {built} {version_of(tool)} in {time.monotonic() - started:.0f}s "
                  f"-> {binary_path(tool)}")
    return binary_path(tool)


@contextlib.contextmanager
def _build_lock(tool: str, group: str) -> Iterator[None]:
    """One build at a time per tool across processes (worktrees share the cache)."""
    path = cache_root() / group / ".build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(tool, f"waiting for another process building {group} ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _go_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local",
            **extra}


def _go(tool: str, args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run go, showing a progress line every few seconds (elapsed time, how many lines of
    `-v`/`-x` output so far and the latest one) without flooding the terminal."""
    log(tool, f"$ {shlex.join(['go', *args])}   (in {cwd})")
    started = time.monotonic()
    proc = subprocess.Popen(["go", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.rstrip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    tail: list[str] = []
    count, last, last_beat = 0, "", started
    while True:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            line = ""
        else:
            if line is None:
                break
            count += 1
            last = line or last
            tail = [*tail[-40:], line]
        now = time.monotonic()
        if now - last_beat >= 10:
            log(tool, f"  ... {int(now - started)}s, {count} lines, last: {last[:120]}")
            last_beat = now
    if proc.wait() != 0:
        raise SystemExit(f"{shlex.join(['go', *args])} failed (exit {proc.returncode}):\n"
                         + "\n".join(tail))
    log(tool, f"  done in {int(time.monotonic() - started)}s")


def _download(module: str, version: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """`go mod download -json module@version`: the paths of its go.mod and source."""
    result = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=cwd,
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"go mod download {module}@{version} failed:\n"
                         f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    info: dict[str, str] = json.loads(result.stdout)
    return info


def _directives(gomod: str, keyword: str) -> list[str]:
    """The `replace` or `exclude` directives of a go.mod, one per entry (single-line and
    block forms), comments dropped."""
    entries, in_block = [], False
    for raw in gomod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
            elif line:
                entries.append(line)
        elif line == f"{keyword} (":
            in_block = True
        elif line.startswith(keyword + " "):
            entries.append(line[len(keyword):].strip())
    return entries


def _require_version(gomod: str, module: str) -> str:
    for raw in gomod.splitlines():
        parts = raw.split("//", 1)[0].split()
        if parts[:1] == ["require"]:
            parts = parts[1:]
        if len(parts) == 2 and parts[0] == module:
            return parts[1]
    raise SystemExit(f"{module} is not required in that go.mod")


def _staging(tool: str) -> tuple[Path, Path]:
    """A fresh temporary bin directory next to the tool's cache entry, and a work directory."""
    out = binary_path(tool).parent
    tmp = out.with_name("bin.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp, out


def _publish(tmp: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _build_helm() -> None:
    """`go install helm.sh/helm/v3/cmd/helm@version` (its go.mod has no replace lines), with the
    ldflags of helm's Makefile: the version `helm version` reports, and the Kubernetes version
    that `helm template`/`helm lint` assume, taken from the client-go that helm requires."""
    tmp, out = _staging("helm")
    log("helm", f"building helm {HELM_VERSION} from source into {out} (go install; a few "
                "minutes on 2 cores the first time)")
    env = _go_env(GOBIN=str(tmp))
    with tempfile.TemporaryDirectory(prefix="flashgate-helm-") as scratch:
        gomod = Path(_download(HELM_MODULE, HELM_VERSION, Path(scratch), env)["GoMod"]).read_text()
        if _directives(gomod, "replace") or _directives(gomod, "exclude"):
            raise SystemExit(f"{HELM_MODULE}@{HELM_VERSION} has replace/exclude lines; build it "
                             "from a scratch module as _build_prometheus does")
        client_go = _require_version(gomod, "k8s.io/client-go")  # v0.37.0 -> Kubernetes 1.37
        k8s_minor = client_go.lstrip("v").split(".")[1]
        ldflags = " ".join([
            "-s -w",
            f"-X {HELM_MODULE}/internal/version.version={HELM_VERSION}",
            f"-X {HELM_MODULE}/internal/version.gitTreeState=clean",
            f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMajor=1",
            f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMinor={k8s_minor}",
            f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMajor=1",
            f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMinor={k8s_minor}",
        ])
        _go("helm", ["install", "-v", "-trimpath", "-ldflags", ldflags,
                     f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"], Path(scratch), env)
    _publish(tmp, out)


def _build_prometheus() -> None:
    """promtool and prometheus from one scratch module (one compile of the shared packages),
    each published into its own cache entry. Built with `netgo` like the release builds but
    without `builtinassets`: that tag needs the compiled React UI, which is generated at
    release time and not in the module. The server then serves its HTTP API normally and its
    UI pages fail to load, which the tests do not need."""
    tmp, out = _staging("prometheus")
    log("prometheus", f"building prometheus and promtool {PROMETHEUS_VERSION} from source into "
                      f"{out.parent.parent} (several minutes on 2 cores the first time)")
    env = _go_env()
    work = out.parent / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "go.mod").write_text("module flashgate.dev/prombuild\n\ngo 1.24\n")
    module = _download(PROMETHEUS_MODULE, PROMETHEUS_VERSION, work, env)
    gomod = Path(module["GoMod"]).read_text()
    replaces = _directives(gomod, "replace")
    excludes = _directives(gomod, "exclude")
    local = [r for r in replaces if r.split("=>")[1].strip().startswith(".")]
    if local:
        raise SystemExit(f"{PROMETHEUS_MODULE}@{PROMETHEUS_VERSION} replaces modules with local "
                         f"directories, which a scratch module cannot copy: {local}")
    log("prometheus", f"copying {len(replaces)} replace and {len(excludes)} exclude lines from "
                      f"{PROMETHEUS_MODULE}@{PROMETHEUS_VERSION}'s go.mod")
    text = f"module flashgate.dev/prombuild\n\ngo 1.24\n\nrequire {PROMETHEUS_MODULE} " \
           f"{PROMETHEUS_VERSION}\n"
    if replaces:
        text += "\nreplace (\n\t" + "\n\t".join(replaces) + "\n)\n"
    if excludes:
        text += "\nexclude (\n\t" + "\n\t".join(excludes) + "\n)\n"
    (work / "go.mod").write_text(text)
    (work / "tools.go").write_text(
        "//go:build tools\n\npackage tools\n\nimport (\n"
        f'\t_ "{PROMETHEUS_MODULE}/cmd/prometheus"\n\t_ "{PROMETHEUS_MODULE}/cmd/promtool"\n)\n')
    _go("prometheus", ["mod", "tidy"], work, env)
    release = (Path(module["Dir"]) / "VERSION").read_text().strip()  # 3.16.0
    info = json.loads(Path(module["Info"]).read_text())
    built = info.get("Time", "")[:19].replace("-", "").replace("T", "-")  # the tag's time
    common = "github.com/prometheus/common/version"
    ldflags = " ".join([
        "-s -w",
        f"-X {common}.Version={release}",
        f"-X {common}.Branch={PROMETHEUS_VERSION}",
        f"-X {common}.BuildUser=flashgate",
        f"-X {common}.BuildDate={built}",
    ])
    _go("prometheus", ["build", "-v", "-trimpath", "-tags", "netgo", "-ldflags", ldflags,
                       "-o", str(tmp) + "/", f"{PROMETHEUS_MODULE}/cmd/prometheus",
                       f"{PROMETHEUS_MODULE}/cmd/promtool"], work, env)
    promtool_tmp, promtool_out = _staging("promtool")
    (tmp / "promtool").rename(promtool_tmp / "promtool")
    _publish(promtool_tmp, promtool_out)
    _publish(tmp, out)
    shutil.rmtree(work, ignore_errors=True)


def _build_lua_harness() -> None:
    """`go build` of hack/luaharness with its committed go.mod/go.sum (read-only: the build
    writes nothing into the repository)."""
    tmp, out = _staging("lua-harness")
    log("lua-harness", f"building {LUA_HARNESS_SOURCE} into {out}")
    env = _go_env(GOFLAGS="-mod=readonly -buildvcs=false")
    _go("lua-harness", ["build", "-v", "-trimpath", "-ldflags", "-s -w",
                        "-o", str(tmp / "lua-harness"), "."], LUA_HARNESS_SOURCE, env)
    _publish(tmp, out)


def third_party_crds_dir() -> Path:
    key = "-".join(f"{module.rsplit('/', 1)[-1]}-{version}"
                   for module, (version, _) in sorted(THIRD_PARTY_CRDS.items()))
    return cache_root() / "third-party-crds" / key


def third_party_crds() -> Path:
    """The directory with the pinned third-party CRD files, downloading them if needed."""
    out = third_party_crds_dir()
    if out.is_dir():
        return out
    if shutil.which("go") is None:
        raise SystemExit("Go is needed to download the third-party CRDs (https://go.dev/dl/)")
    with _build_lock("crds", "third-party-crds"):
        if out.is_dir():
            return out
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tempfile.TemporaryDirectory(prefix="flashgate-crds-") as scratch:
            (Path(scratch) / "go.mod").write_text("module flashgate.dev/crds\n\ngo 1.24\n")
            for module, (version, files) in sorted(THIRD_PARTY_CRDS.items()):
                log("crds", f"go mod download {module}@{version}")
                source = Path(_download(module, version, Path(scratch), _go_env())["Dir"])
                for name in files:
                    shutil.copyfile(source / name, tmp / Path(name).name)
        _publish(tmp, out)
        log("crds", f"copied {sum(len(f) for _, f in THIRD_PARTY_CRDS.values())} CRDs into {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="build what is missing; print the paths")
    inst.add_argument("tool", nargs="?", default="all", choices=[*TOOLS, "all"])
    path = sub.add_parser("path", help="print a tool's path; exit 1 when it is not built")
    path.add_argument("tool", choices=TOOLS)
    sub.add_parser("crds", help="download the third-party CRDs if needed; print their directory")
    args = parser.parse_args()
    if args.command == "crds":
        print(third_party_crds(), flush=True)
        return
    if args.command == "path":
        found = find(args.tool)
        if found is None:
            log(args.tool, f"not built (python hack/gotools.py install {args.tool})")
            raise SystemExit(1)
        print(found)
        return
    for tool in TOOLS if args.tool == "all" else (args.tool,):
        print(install(tool), flush=True)


if __name__ == "__main__":
    main()
