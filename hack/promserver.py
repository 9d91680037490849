"""A real Prometheus server (hack/gotools.py builds it) scraping the local gate, with flashgate's
alert rules: what the e2e tests and the dashboard picture (hack/dashboard.py) query.

    with PrometheusServer(workdir, targets={"flashgate-operator": ["127.0.0.1:8080"]},
                          rules=[ALERTS]) as prom:
        prom.wait_for("the operator scraped", lambda: prom.query('up == 1'))
        prom.alerts()

Scrape and rule evaluation intervals are short (1 s by default) so a test sees an alert within
seconds; the rules file is used as it is (its groups set no interval of their own).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gotools
from controlplane import _set_parent_death_signal, free_port

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "charts" / "flashgate" / "files" / "alerts.yaml"
T = TypeVar("T")


class PrometheusError(Exception):
    """Prometheus answered a query with an error."""


class PrometheusServer:
    def __init__(self, workdir: Path, targets: Mapping[str, Sequence[str]],
                 rules: Sequence[Path] = (ALERTS,), interval: str = "1s") -> None:
        self.workdir, self.targets, self.rules, self.interval = workdir, targets, rules, interval
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(r) for r in self.rules],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(hosts)}]}
                               for job, hosts in self.targets.items()]}))
        binary = gotools.install("prometheus")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), f"--config.file={config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
                preexec_fn=_set_parent_death_signal)
        self.wait_for("Prometheus ready", lambda: self._ready(), timeout=30)

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # ---- the HTTP API ---------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                reply = json.load(response)
        except urllib.error.HTTPError as error:  # 400/422: a bad query, with Prometheus's reason
            reply = json.load(error)
        if reply.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {reply.get('errorType')}: "
                                  f"{reply.get('error')}")
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's samples: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_range(self, expr: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=str(start), end=str(end),
                        step=str(step))
        return list(data["result"])

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (pending or firing), optionally of one alert rule."""
        found = self.api("alerts")["alerts"]
        return [a for a in found if name is None or a["labels"].get("alertname") == name]

    def wait_for(self, what: str, predicate: Callable[[], T | None],
                 timeout: float = 30) -> T:
        """Until `predicate()` is truthy (returned); fails with Prometheus's log."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.proc.returncode}):\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                value = predicate()
                if value:
                    return value
            except (OSError, PrometheusError) as error:
                last = error
            time.sleep(0.25)
        raise AssertionError(f"{what}: not seen in {timeout}s ({last})\n"
                             f"{self.log.read_text()[-2000:]}")
