"""The alert rules: valid for promtool 2.42, unit-tested with `promtool test rules`, identical in the plain file
and the PrometheusRule, written against metric names that exist, and following kube-prometheus conventions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from guardgrid import metrics as names

ROOT = Path(__file__).parent.parent
MONITORING = ROOT / "manifests" / "monitoring"
RULES = MONITORING / "guardgrid-rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yaml"))
DOCS = ROOT / "docs" / "predictor.md"

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="needs promtool from Debian's prometheus package (make test installs it)")


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _duration_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))


@pytest.mark.prometheus
@needs_promtool
def test_promtool_accepts_the_rules_file():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


@pytest.mark.prometheus
@needs_promtool
@pytest.mark.parametrize("unit_test", RULE_TESTS, ids=lambda p: p.name)
def test_the_rule_unit_tests_pass(unit_test):
    result = subprocess.run(["promtool", "test", "rules", str(unit_test)], capture_output=True, text=True,
                            timeout=120, cwd=unit_test.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test():
    tested = {match for path in RULE_TESTS for match in re.findall(r"alertname: (\w+)", path.read_text())}
    assert {rule["alert"] for rule in _alerts()} <= tested


def test_the_prometheus_rule_holds_exactly_the_groups_of_the_plain_file():
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "guardgrid-system" and rule["metadata"]["name"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_every_alert_follows_the_kube_prometheus_conventions():
    for rule in _alerts():
        name = rule["alert"]
        assert re.fullmatch(r"GuardGrid[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert 5 * 60 <= _duration_seconds(rule["for"]) <= 60 * 60, f"{name}: for {rule['for']}"
        assert rule["annotations"]["runbook_url"].endswith("docs/predictor.md#" + name.lower()), name


def test_every_runbook_link_has_a_section_in_the_predictor_docs():
    headings = {line[4:].strip().lower() for line in DOCS.read_text().splitlines() if line.startswith("### ")}
    for rule in _alerts():
        assert rule["alert"].lower() in headings, f"docs/predictor.md lacks a '### {rule['alert']}' runbook"


def test_rules_use_only_metric_names_the_services_export():
    exported = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)
                and value.startswith("guardgrid_")}
    histograms = {names.EXTENDER_LATENCY, names.WEBHOOK_LATENCY, names.CYCLE_DURATION}
    exported |= {f"{h}_{suffix}" for h in histograms for suffix in ("bucket", "sum", "count")}
    used = set(re.findall(r"\bguardgrid_[a-z_]+\b", RULES.read_text()))
    assert used and used <= exported, used - exported
