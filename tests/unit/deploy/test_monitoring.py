"""Monitoring as code (issue 14): the Prometheus configs of `make run`, compose and k8s scrape
the same six services on the ports their settings name, with the same rules; every rule and
every dashboard panel names only metrics the code defines (parsed out of the sources), and
each dashboard is valid JSON whose expressions PromQL parses (promtool)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.kit.cli import SERVICES
from tests.unit.deploy.test_manifests import compose, default_port, k8s_one, pod_spec

ROOT = Path(__file__).resolve().parents[3]
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"
COMPOSE_PROMETHEUS = ROOT / "deploy" / "compose" / "prometheus.yml"
K8S_PROMETHEUS_DIR = ROOT / "deploy" / "k8s" / "prometheus"
LOCAL_SCRIPT = ROOT / "deploy" / "local" / "prometheus.sh"
DASHBOARDS = {"checkout-funnel", "saga", "kafka-consumers", "outbox-dlq"}

# A metric defined in code: prometheus_client's constructors with a literal backroom_ name.
DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(backroom_[a-z0-9_]+)\"")
SERIES_SUFFIXES = {
    "Counter": ("_total",),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_count", "_sum"),
    "Summary": ("", "_count", "_sum"),
}
METRIC_NAME = re.compile(r"\bbackroom[a-z0-9_:]*")


def defined_metrics() -> set[str]:
    """Every series name the code exposes, parsed out of libs/ and services/."""
    names: set[str] = set()
    for path in [*ROOT.glob("libs/**/*.py"), *ROOT.glob("services/**/*.py")]:
        for kind, name in DEFINITION.findall(path.read_text()):
            base = name.removesuffix("_total") if kind == "Counter" else name
            names |= {base + suffix for suffix in SERIES_SUFFIXES[kind]}
    return names


def rule_groups(path: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def recorded_metrics() -> set[str]:
    return {
        rule["record"]
        for path in RULES_DIR.glob("*.yml")
        for group in rule_groups(path)
        for rule in group["rules"]
        if "record" in rule
    }


def named_metrics(expr: str) -> set[str]:
    """The backroom metrics an expression reads (string literals, i.e. label values, left out)."""
    return set(METRIC_NAME.findall(re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)))


def dashboard(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DASHBOARDS_DIR / f"{name}.json").read_text())
    return doc


def panel_exprs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]


def scrape_jobs(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


# --- what the code defines -------------------------------------------------------------------


def test_the_parser_finds_the_metrics_operators_ask_for() -> None:
    defined = defined_metrics()
    for name in (
        "backroom_orders_total",
        "backroom_order_completion_seconds_bucket",
        "backroom_payments_captured_minor_total",
        "backroom_payments_refunded_minor_total",
        "backroom_consumer_lag",
        "backroom_event_handler_seconds_bucket",
        "backroom_event_handler_retries_total",
        "backroom_dlq_published_total",
        "backroom_outbox_depth",
        "backroom_outbox_oldest_age_seconds",
        "backroom_reservations_expired",
        "backroom_orders_pending_overdue",
        "backroom_reconciliation_findings",
    ):
        assert name in defined, name
    assert "backroom_orders" not in defined  # a counter is exposed with its _total only


# --- rules -----------------------------------------------------------------------------------


def test_rule_files_load_and_name_only_defined_or_recorded_metrics() -> None:
    known = defined_metrics() | recorded_metrics()
    alerts = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in rule_groups(path):
            for rule in group["rules"]:
                missing = named_metrics(rule["expr"]) - known
                assert not missing, f"{path.name} {rule.get('alert') or rule['record']}: {missing}"
                if "alert" in rule:
                    alerts.append(rule["alert"])
                    assert rule["labels"]["severity"] in {"page", "ticket"}
                    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert {
        "CheckoutErrorBudgetBurnFast",
        "CheckoutErrorBudgetBurnSlow",
        "CheckoutLatencyBudgetBurnFast",
        "CheckoutLatencyBudgetBurnSlow",
        "DeadLetterQueueNotEmpty",
        "OutboxStuck",
        "ConsumerLagGrowing",
        "ReconciliationFinding",
    } <= set(alerts)


def test_every_alert_has_a_promtool_test() -> None:
    alerts = {
        rule["alert"]
        for path in RULES_DIR.glob("*.yml")
        for group in rule_groups(path)
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in RULE_TESTS_DIR.glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a test in which it fires, not only one in which it is quiet
    }
    assert alerts - tested == set()


# --- dashboards ------------------------------------------------------------------------------


def test_the_dashboards_are_there_and_are_grafana_dashboards() -> None:
    assert {p.stem for p in DASHBOARDS_DIR.glob("*.json")} == DASHBOARDS
    uids = set()
    for name in DASHBOARDS:
        doc = dashboard(name)
        assert doc["title"].startswith("Backroom") and doc["panels"]
        uids.add(doc["uid"])
        ids = [panel["id"] for panel in doc["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids are unique"
        for panel in doc["panels"]:
            assert panel["targets"], f"{name}: {panel['title']} shows something"
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
    assert len(uids) == len(DASHBOARDS)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_reads_metrics_the_code_defines(name: str) -> None:
    known = defined_metrics() | recorded_metrics()
    for title, expr in panel_exprs(dashboard(name)):
        read = named_metrics(expr)
        assert read, f"{name}: {title} reads no backroom metric"
        assert not read - known, f"{name}: {title} reads undefined {read - known}"


def test_the_metric_check_catches_a_renamed_metric() -> None:
    known = defined_metrics()
    assert not named_metrics('sum(rate(backroom_orders_total{reason="out_of_stock"}[5m]))') - known
    assert named_metrics("sum(rate(backroom_order_outcomes_total[5m]))") - known


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (make lint installs Debian's prometheus)")
    return found


def test_every_dashboard_expression_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each expression, as a recording rule of a scratch rule file."""
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(
            expr for name in sorted(DASHBOARDS) for expr in panel_exprs(dashboard(name))
        )
    ]
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the three Prometheus configs --------------------------------------------------------------


def test_make_runs_prometheus_scrapes_every_service_on_its_port_with_the_rules() -> None:
    result = subprocess.run(
        ["bash", str(LOCAL_SCRIPT), "config"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "BACKROOM_RUN_DIR": "/nonexistent"},
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert scrape_jobs(config) == {svc: [f"127.0.0.1:{default_port(svc)}"] for svc in SERVICES}
    assert config["rule_files"] == [f"{RULES_DIR}/*.yml"]


def test_compose_prometheus_scrapes_every_service_by_name_with_the_rules() -> None:
    config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    assert scrape_jobs(config) == {svc: [f"{svc}:{default_port(svc)}"] for svc in SERVICES}
    service = compose()["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"] if v.startswith(".")}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/compose/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "./deploy/prometheus/rules"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert set(service["depends_on"]) == set(SERVICES)


def test_compose_prometheus_config_passes_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", "--syntax-only", str(COMPOSE_PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_prometheus_has_the_same_rules_and_scrapes_the_annotated_pods() -> None:
    for rules in RULES_DIR.glob("*.yml"):
        copy = K8S_PROMETHEUS_DIR / rules.name
        assert copy.read_text() == rules.read_text(), f"cp {rules} {copy}"
    assert {p.name for p in K8S_PROMETHEUS_DIR.glob("*.yml")} == {
        "prometheus.yml",
        *(p.name for p in RULES_DIR.glob("*.yml")),
    }
    config = yaml.safe_load((K8S_PROMETHEUS_DIR / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["backroom"]}}]
    relabels = {tuple(r["source_labels"]): r for r in job["relabel_configs"]}
    keep = relabels[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]
    assert (keep["action"], keep["regex"]) == ("keep", "true")
    named = relabels[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]
    assert named["target_label"] == "job", "jobs are named after the service, as the alerts use"
    for svc in SERVICES:
        template = k8s_one("Deployment", svc)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(default_port(svc))
        assert annotations["prometheus.io/path"] == "/metrics"
    deployment = k8s_one("Deployment", "prometheus")
    spec = pod_spec(deployment)
    mounted = {v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
    assert mounted == {"config": "prometheus-config", "rules": "prometheus-rules"}
    assert spec["serviceAccountName"] == "prometheus"
    assert k8s_one("Role", "prometheus")["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
