"""deploy/prometheus.yml and deploy/alerts.yml, checked and unit-tested by promtool (Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ALERT_CASES = Path(__file__).with_name("test_deploy_alerts_cases.yml")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; a missing promtool fails the test (CI installs it with .ci/install-tools)."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool not found: run `bash .ci/install-tools` (apt-get install prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_config_and_its_rule_file() -> None:
    """`promtool check config` validates prometheus.yml and the alerts.yml it loads."""
    result = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_accepts_the_alert_rules() -> None:
    """`promtool check rules` validates every alert rule."""
    result = promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_alert_rules_fire_exactly_as_their_unit_tests_expect() -> None:
    """`promtool test rules` runs test_deploy_alerts_cases.yml: which alert fires, when, with which text."""
    result = promtool("test", "rules", str(ALERT_CASES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_case() -> None:
    """Each alert of alerts.yml is exercised by at least one case of the promtool unit tests."""
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    cases = yaml.safe_load(ALERT_CASES.read_text())["tests"]
    tested = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    assert alerts - tested == set()
    assert {
        "KimiTokenExpiringSoon",
        "KimiAccountInvalid",
        "KimiNoActiveAccount",
        "KimiQueueLagHigh",
        "KimiHigh5xxRatio",
        "KimiWorkerDown",
    } <= alerts


def test_every_service_is_scraped_by_its_compose_name() -> None:
    """Prometheus scrapes gateway:8000, token_service:8001 and every upstream_worker replica on 8002."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["gateway"]["static_configs"] == [{"targets": ["gateway:8000"]}]
    assert jobs["token_service"]["static_configs"] == [{"targets": ["token_service:8001"]}]
    assert jobs["upstream_worker"]["dns_sd_configs"] == [
        {"names": ["upstream_worker"], "type": "A", "port": 8002, "refresh_interval": "15s"}
    ]
