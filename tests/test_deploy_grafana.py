"""The Grafana dashboard and its provisioning: one datasource, one dashboard, the panels issue 6 asks for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

GRAFANA = Path(__file__).resolve().parent.parent / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "kimi-gateway.json"


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _panel(title: str) -> dict[str, Any]:
    [panel] = [panel for panel in _panels() if panel["title"] == title]
    return panel


def test_datasource_is_the_compose_prometheus_with_a_fixed_uid() -> None:
    """The provisioned datasource points at prometheus:9090 under the uid every panel refers to."""
    [datasource] = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert (datasource["uid"], datasource["type"], datasource["url"]) == (
        "prometheus",
        "prometheus",
        "http://prometheus:9090",
    )
    refs = [panel["datasource"] for panel in _panels()] + [
        t["datasource"] for p in _panels() for t in p["targets"]
    ]
    assert all(ref == {"type": "prometheus", "uid": "prometheus"} for ref in refs)


def test_dashboard_provider_loads_the_mounted_folder() -> None:
    """The dashboard provider reads /etc/grafana/dashboards, where docker-compose.yml mounts the JSON."""
    [provider] = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "kimi-gateway.yml").read_text())[
        "providers"
    ]
    assert (provider["type"], provider["options"]["path"]) == ("file", "/etc/grafana/dashboards")
    compose = yaml.safe_load((GRAFANA.parent.parent / "docker-compose.yml").read_text())
    assert (
        "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in compose["services"]["grafana"]["volumes"]
    )


def test_dashboard_shows_what_issue_6_lists() -> None:
    """Requests, latency, time to first token, open streams, accounts by state, expiry, queue lag, errors."""
    titles = {panel["title"] for panel in _panels()}
    assert {
        "Requests by dialect and status",
        "Request duration (p50 / p95 / p99)",
        "Time to first token (p50 / p95)",
        "Open streams",
        "Accounts by state",
        "Token expiry",
        "Queue",
        "HTTP errors by status",
        "Upstream errors by kind",
        "Redis errors by service",
    } <= titles
    assert _panel("Token expiry")["type"] == "table"
    assert "max(kimi_queue_lag)" in [t["expr"] for t in _panel("Queue")["targets"]]


def test_token_expiry_table_marks_tokens_under_3_days_red() -> None:
    """The expiry table shows each account's expiry time and time left, red below 3 days (259200 s)."""
    table = _panel("Token expiry")
    assert [t["format"] for t in table["targets"]] == ["table", "table"]
    [time_left] = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Time left"]
    [thresholds] = [p["value"] for p in time_left["properties"] if p["id"] == "thresholds"]
    assert [(s["color"], s["value"]) for s in thresholds["steps"]] == [
        ("red", None),
        ("orange", 259200),
        ("green", 604800),
    ]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    """Grafana needs unique panel ids; no two panels share a grid cell."""
    panels = _dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area


def test_dashboard_identity_is_stable() -> None:
    """The provisioned dashboard keeps one uid and title, so links and the home page keep working."""
    dashboard = _dashboard()
    assert (dashboard["uid"], dashboard["title"]) == ("kimi-gateway", "Kimi gateway")
