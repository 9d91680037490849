"""The alert rules (charts/flashgate/files/alerts.yaml) with the real promtool: they check, their
unit tests (alerts_test.yaml) pass, every alert has a firing and a not-firing case, the tests
notice a rule that is gone or whose `for:` changed, and each alert links its runbook and uses only
documented metrics."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "flashgate" / "files" / "alerts.yaml"
TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"
sys.path.insert(0, str(REPO / "hack"))

import gotools  # noqa: E402


@pytest.fixture(scope="module")
def promtool() -> Path:
    return gotools.install("promtool")


def alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def promtool_test(promtool: Path, rules: Path, where: Path) -> subprocess.CompletedProcess[str]:
    """alerts_test.yaml run against `rules` (copied beside a copy of the tests)."""
    target = where / "charts" / "flashgate" / "files"
    target.mkdir(parents=True, exist_ok=True)
    if rules != target / "alerts.yaml":
        shutil.copy(rules, target / "alerts.yaml")
    (where / "tests" / "alerts").mkdir(parents=True, exist_ok=True)
    shutil.copy(TESTS, where / "tests" / "alerts" / "alerts_test.yaml")
    return subprocess.run([str(promtool), "test", "rules", "alerts_test.yaml"],
                          cwd=where / "tests" / "alerts", capture_output=True, text=True,
                          timeout=120)


def test_rules_check_and_their_unit_tests_pass(promtool: Path) -> None:
    check = subprocess.run([str(promtool), "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in check.stdout
    run = subprocess.run([str(promtool), "test", "rules", str(TESTS)], cwd=TESTS.parent,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, set[bool]] = {}
    for group in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test") or ():
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert {a["alert"]: cases.get(a["alert"]) for a in alerts()} == \
        {a["alert"]: {True, False} for a in alerts()}


@pytest.mark.parametrize("alert", [a["alert"] for a in alerts()])
def test_the_unit_tests_notice_a_rule_removed_or_its_window_changed(
        promtool: Path, tmp_path: Path, alert: str) -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = doc["groups"][0]["rules"]
    (rule,) = [r for r in rules if r.get("alert") == alert]
    mutants = {"removed": [r for r in rules if r is not rule]}
    if rule.get("for"):
        minutes = int(rule["for"].removesuffix("m"))
        mutants["window"] = [({**r, "for": f"{minutes + 1}m"} if r is rule else r)
                             for r in rules]
    for what, mutant in mutants.items():
        path = tmp_path / what / "charts" / "flashgate" / "files" / "alerts.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump({"groups": [{**doc["groups"][0], "rules": mutant}]},
                                       sort_keys=False))
        result = promtool_test(promtool, path, tmp_path / what)
        assert result.returncode != 0, f"{alert} {what}: the unit tests still pass"
        assert alert in result.stdout + result.stderr


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    return {re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")}


def test_each_alert_links_its_runbook_section_and_has_a_severity() -> None:
    anchors = heading_anchors((REPO / "docs" / "runbooks.md").read_text())
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        assert url == f"docs/runbooks.md#{alert['alert'].lower()}"
        assert url.split("#")[1] in anchors, url
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(alert["annotations"])


def test_the_rules_use_only_documented_metrics() -> None:
    documented = set(re.findall(r"^### `(flashgate_[a-z_]+)`", (REPO / "docs" / "metrics.md")
                                .read_text(), re.MULTILINE))
    for alert in alerts():
        used = set(re.findall(r"flashgate_[a-z_]+", alert["expr"]))
        # A counter's `_created` series is documented with the counter.
        used = {re.sub(r"_created$", "_total", name) for name in used}
        assert used and used <= documented, (alert["alert"], used - documented)
