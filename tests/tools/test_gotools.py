"""The Go tools of hack/gotools.py, each run for real: helm on a chart made here, promtool on
rules and rule unit tests, a prometheus server scraping a local endpoint and evaluating alerts,
and the gopher-lua harness on an Argo CD style health check.

A tool that is not built yet is built on first use where Go is (minutes; hack/setup.sh does it
beforehand); without Go these tests are skipped, except in CI where they fail.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import gotools
import pytest
import yaml
from controlplane import _set_parent_death_signal, free_port

REPO = Path(__file__).resolve().parents[2]

# Once built, the whole module takes seconds; the first build of a missing tool takes minutes.
pytestmark = pytest.mark.timeout(
    60 if all(gotools.find(tool) for tool in gotools.TOOLS) else 1800)


def _tool(name: str) -> Path:
    if gotools.find(name) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not built: hack/setup.sh builds it "
                        f"({gotools.binary_path(name)})")
        if shutil.which("go") is None:
            pytest.skip(f"{name} is not built and Go is missing to build it (hack/setup.sh)")
    return gotools.install(name)


def run(*args: str | Path, check: bool = True, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=30,
                            env=env, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} {' '.join(map(str, args[1:]))} failed "
                             f"({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---- the script itself -----------------------------------------------------------------------


def test_path_prints_the_built_binary_and_honours_the_override(tmp_path: Path) -> None:
    helm = _tool("helm")
    script = REPO / "hack" / "gotools.py"
    assert run(sys.executable, script, "path", "helm").stdout.strip() == str(helm)
    other = write(tmp_path / "my-helm", "#!/bin/sh\n")
    env = {**os.environ, "FLASHGATE_HELM": str(other)}
    assert run(sys.executable, script, "path", "helm", env=env).stdout.strip() == str(other)
    env["FLASHGATE_HELM"] = str(tmp_path / "absent")
    assert run(sys.executable, script, "path", "helm", env=env, check=False).returncode == 1


# ---- helm --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Path:
    return _tool("helm")


@pytest.fixture
def helm_env(tmp_path: Path) -> dict[str, str]:
    """helm keeps its cache, config and data under tmp_path, not the user's home."""
    return {**os.environ, **{f"HELM_{kind}_HOME": str(tmp_path / f"helm-{kind.lower()}")
                             for kind in ("CACHE", "CONFIG", "DATA")}}


def test_helm_reports_the_pinned_version(helm: Path) -> None:
    assert run(helm, "version", "--short").stdout.strip().startswith(gotools.HELM_VERSION)


def make_chart(root: Path) -> Path:
    chart = root / "demo"
    write(chart / "Chart.yaml", "apiVersion: v2\nname: demo\nversion: 0.1.0\n"
                                "description: a chart for the tool tests\n")
    write(chart / "values.yaml", "replicas: 2\ngreeting: hello\n")
    write(chart / "templates" / "configmap.yaml", """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-demo
  namespace: {{ .Release.Namespace }}
data:
  greeting: {{ .Values.greeting | quote }}
  replicas: {{ .Values.replicas | quote }}
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
""")
    return chart


def test_helm_lints_and_renders_a_chart(helm: Path, helm_env: dict[str, str],
                                        tmp_path: Path) -> None:
    chart = make_chart(tmp_path)
    lint = run(helm, "lint", chart, env=helm_env)
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout

    out = run(helm, "template", "rel", chart, "--namespace", "ns1", "--set", "replicas=3",
              env=helm_env).stdout
    (configmap,) = [doc for doc in yaml.safe_load_all(out) if doc]
    assert configmap["metadata"] == {"name": "rel-demo", "namespace": "ns1"}
    # kubeVersion: the Kubernetes minor set by ldflags from the client-go helm requires (1.37),
    # rather than helm's compiled-in default of v1.20.0.
    assert configmap["data"] == {"greeting": "hello", "replicas": "3", "kubeVersion": "v1.37.0"}


def test_helm_lint_fails_on_a_broken_template(helm: Path, helm_env: dict[str, str],
                                              tmp_path: Path) -> None:
    chart = make_chart(tmp_path)
    write(chart / "templates" / "broken.yaml", "data: {{ .Values.greeting \n")
    lint = run(helm, "lint", chart, env=helm_env, check=False)
    assert lint.returncode != 0
    assert "broken.yaml" in lint.stdout + lint.stderr


# ---- promtool ----------------------------------------------------------------------------------

RULES = """\
groups:
  - name: demo
    rules:
      - record: job:demo_up:sum
        expr: sum by (job) (up)
      - alert: DemoDown
        expr: up == 0
        for: 1m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.instance }} is down"}
"""


@pytest.fixture(scope="module")
def promtool() -> Path:
    return _tool("promtool")


def test_promtool_checks_rules(promtool: Path, tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", RULES)
    assert "SUCCESS: 2 rules found" in run(promtool, "check", "rules", good).stdout

    bad = write(tmp_path / "bad.yaml", RULES.replace("sum by (job) (up)", "sum by (job (up)"))
    result = run(promtool, "check", "rules", bad, check=False)
    assert result.returncode != 0
    assert "bad.yaml" in result.stderr + result.stdout


def rule_test(expected_severity: str) -> str:
    return f"""\
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{job="demo", instance="a"}}'
        values: '1 0 0 0'
    alert_rule_test:
      - eval_time: 3m
        alertname: DemoDown
        exp_alerts:
          - exp_labels: {{severity: {expected_severity}, job: demo, instance: a}}
            exp_annotations: {{summary: "a is down"}}
    promql_expr_test:
      - expr: job:demo_up:sum
        eval_time: 3m
        exp_samples:
          - labels: 'job:demo_up:sum{{job="demo"}}'
            value: 0
"""


def test_promtool_unit_tests_pass_and_fail(promtool: Path, tmp_path: Path) -> None:
    write(tmp_path / "rules.yaml", RULES)
    write(tmp_path / "pass.yaml", rule_test("page"))
    write(tmp_path / "fail.yaml", rule_test("ticket"))
    assert "SUCCESS" in run(promtool, "test", "rules", "pass.yaml", cwd=tmp_path).stdout
    failed = run(promtool, "test", "rules", "fail.yaml", cwd=tmp_path, check=False)
    assert failed.returncode != 0
    assert "DemoDown" in failed.stdout + failed.stderr


# ---- prometheus --------------------------------------------------------------------------------


@pytest.fixture
def metrics_endpoint() -> Iterator[str]:
    """A tiny /metrics endpoint in a thread: one gauge in the text exposition format."""
    body = (b"# HELP flashgate_tools_test_gauge A gauge for the tool tests.\n"
            b"# TYPE flashgate_tools_test_gauge gauge\n"
            b'flashgate_tools_test_gauge{kind="demo"} 42\n')

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def api(base: str, path: str, **params: str) -> object:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    with urllib.request.urlopen(url, timeout=5) as response:
        reply = json.load(response)
    assert reply["status"] == "success", reply
    return reply["data"]


def wait_for(what: str, predicate: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
             timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({proc.returncode}):\n"
                                 f"{log.read_text()[-3000:]}")
        try:
            if predicate():
                return
        except OSError as error:
            last = error
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout}s ({last}):\n{log.read_text()[-3000:]}")


def test_prometheus_scrapes_queries_and_fires_alerts(tmp_path: Path,
                                                     metrics_endpoint: str) -> None:
    prometheus = _tool("prometheus")
    version = run(prometheus, "--version")
    assert "prometheus, version 3." in version.stdout + version.stderr

    write(tmp_path / "rules.yaml", """\
groups:
  - name: demo
    interval: 1s
    rules:
      - alert: GaugeHighNow
        expr: flashgate_tools_test_gauge > 40
        for: 0s
      - alert: GaugeHighForAnHour
        expr: flashgate_tools_test_gauge > 40
        for: 1h
""")
    write(tmp_path / "prometheus.yml", f"""\
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules.yaml]
scrape_configs:
  - job_name: demo
    static_configs: [{{targets: ["{metrics_endpoint}"]}}]
""")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(prometheus), f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
            preexec_fn=_set_parent_death_signal)
    try:
        def scraped() -> bool:
            data = api(base, "/api/v1/query", query="flashgate_tools_test_gauge")
            assert isinstance(data, dict)
            return bool(data["result"])

        wait_for("the scraped gauge", scraped, proc, log)
        data = api(base, "/api/v1/query", query="flashgate_tools_test_gauge")
        assert isinstance(data, dict)
        (sample,) = data["result"]
        assert sample["metric"] == {"__name__": "flashgate_tools_test_gauge", "kind": "demo",
                                    "job": "demo", "instance": metrics_endpoint}
        assert sample["value"][1] == "42"

        def alert_states() -> dict[str, str]:
            data = api(base, "/api/v1/alerts")
            assert isinstance(data, dict)
            return {a["labels"]["alertname"]: a["state"] for a in data["alerts"]}

        wait_for("both alerts", lambda: len(alert_states()) == 2, proc, log)
        assert alert_states() == {"GaugeHighNow": "firing", "GaugeHighForAnHour": "pending"}

        rules = api(base, "/api/v1/rules")
        assert isinstance(rules, dict)
        (group,) = rules["groups"]
        assert {(r["name"], r["health"], r["state"]) for r in group["rules"]} == {
            ("GaugeHighNow", "ok", "firing"), ("GaugeHighForAnHour", "ok", "pending")}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the gopher-lua harness ----------------------------------------------------------------------

HEALTH_LUA = """\
local hs = {}
if obj.status ~= nil and obj.status.phase == "Published" then
  hs.status = "Healthy"
  hs.message = "published " .. obj.spec.version .. " to " .. obj.spec.replicas .. " devices"
  return hs
end
if obj.status ~= nil and obj.status.phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = obj.status.reason
  return hs
end
hs.status = "Progressing"
hs.message = "waiting for a verdict"
return hs
"""

PUBLISHED = """\
apiVersion: flashgate.dev/v1alpha1
kind: FirmwareRelease
metadata: {name: fw}
spec: {version: "1.2.3", replicas: 3}
status: {phase: Published}
"""


@pytest.fixture(scope="module")
def lua_harness() -> Path:
    return _tool("lua-harness")


def evaluate(harness: Path, script: str, obj: str, tmp_path: Path, *flags: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(harness, "eval", *flags, write(tmp_path / "health.lua", script),
               write(tmp_path / "obj.yaml", obj), check=check)


def test_lua_harness_evaluates_a_health_check(lua_harness: Path, tmp_path: Path) -> None:
    out = evaluate(lua_harness, HEALTH_LUA, PUBLISHED, tmp_path).stdout
    assert json.loads(out) == {"status": "Healthy", "message": "published 1.2.3 to 3 devices"}
    # JSON objects are read too; an object without status is Progressing.
    pending = json.dumps({"kind": "FirmwareRelease", "spec": {"version": "1.2.4"}})
    out = evaluate(lua_harness, HEALTH_LUA, pending, tmp_path).stdout
    assert json.loads(out) == {"status": "Progressing", "message": "waiting for a verdict"}


def test_lua_harness_applies_argo_cd_rules(lua_harness: Path, tmp_path: Path) -> None:
    # A status Argo CD does not know becomes Unknown with Argo CD's own message.
    out = evaluate(lua_harness, 'return {status = "Fine"}', PUBLISHED, tmp_path).stdout
    assert json.loads(out) == {"status": "Unknown",
                               "message": "Lua returned an invalid health status"}
    # Without useOpenLibs there is no string library; with -open-libs there is.
    script = 'return {status = "Healthy", message = string.upper(obj.status.phase)}'
    failed = evaluate(lua_harness, script, PUBLISHED, tmp_path, check=False)
    assert failed.returncode == 1
    assert "attempt to index a non-table object(nil) with key 'upper'" in failed.stderr
    out = evaluate(lua_harness, script, PUBLISHED, tmp_path, "-open-libs").stdout
    assert json.loads(out) == {"status": "Healthy", "message": "PUBLISHED"}
    # The safe os library is reachable with require; the script has one second.
    script = 'local os = require("os")\nreturn {status = "Healthy", message = type(os.time())}'
    assert json.loads(evaluate(lua_harness, script, PUBLISHED, tmp_path).stdout)["message"] \
        == "number"
    slow = evaluate(lua_harness, "while true do end", PUBLISHED, tmp_path, check=False)
    assert slow.returncode == 1 and "context deadline exceeded" in slow.stderr


def test_lua_harness_runs_argo_cd_health_tests(lua_harness: Path, tmp_path: Path) -> None:
    write(tmp_path / "health.lua", HEALTH_LUA)
    write(tmp_path / "testdata" / "published.yaml", PUBLISHED)
    write(tmp_path / "testdata" / "rejected.yaml",
          PUBLISHED.replace("{phase: Published}", "{phase: Rejected, reason: bad signature}"))
    write(tmp_path / "testdata" / "new.yaml", PUBLISHED.replace("status: {phase: Published}\n", ""))
    cases = [("published", "Healthy", "published 1.2.3 to 3 devices"),
             ("rejected", "Degraded", "bad signature"),
             ("new", "Progressing", "waiting for a verdict")]
    write(tmp_path / "health_test.yaml", yaml.safe_dump({"tests": [
        {"healthStatus": {"status": status, "message": message},
         "inputPath": f"testdata/{name}.yaml"} for name, status, message in cases]}))
    result = run(lua_harness, "test", tmp_path)
    assert sum(line.startswith("ok   ") for line in result.stdout.splitlines()) == 3
    assert "3 passed, 0 failed" in result.stdout

    cases[1] = ("rejected", "Degraded", "a different message")
    write(tmp_path / "health_test.yaml", yaml.safe_dump({"tests": [
        {"healthStatus": {"status": status, "message": message},
         "inputPath": f"testdata/{name}.yaml"} for name, status, message in cases]}))
    result = run(lua_harness, "test", tmp_path / "health_test.yaml", check=False)
    assert result.returncode == 1
    assert "FAIL testdata/rejected.yaml" in result.stdout
    assert '"message":"bad signature"' in result.stdout
    assert "2 passed, 1 failed" in result.stdout
