"""The monitoring shipped in deploy/: Prometheus alert rules that promtool accepts and whose
unit tests pass, and a Grafana dashboard in the shape Grafana imports. (That every query
names a metric the service exports: tests/api/test_metrics.py, against a real scrape.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
ALERT_TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy/grafana/boxoffice.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).exists():
        pytest.fail("promtool is missing: `make test-tools` installs Debian's prometheus package")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_alert_rules() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_rule_passes_its_promtool_unit_tests() -> None:
    assert ALERT_TESTS
    tested = promtool("test", "rules", *map(str, ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Each alert is tested, firing at least once.
    rules = ALERTS.read_text()
    tests = "\n".join(path.read_text() for path in ALERT_TESTS)
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert len(alerts) >= 10
    untested = [name for name in alerts if f"alertname: {name}\n        exp_alerts:\n" not in tests]
    assert not untested, untested


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource_variable() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["title"]
    assert dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
    titles = " ".join(panel["title"].lower() for panel in panels)
    for wanted in ("sales per second", "remaining", "latency", "refusals", "5xx", "batch", "pool"):
        assert wanted in titles, wanted
