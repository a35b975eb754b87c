"""The Grafana dashboard and the Prometheus scrape config name only what the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from crossrec.config import load_config
from crossrec.online.metrics import OnlineMetrics
from crossrec.stream.metrics import StreamMetrics
from serving.metrics import METRIC_KINDS, SUFFIXES, exported_names

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "cluster" / "grafana" / "crossrec-dashboard.json"
METRIC = re.compile(r"\b(?:ray_)?crossrec_[a-z0-9_]+\b")


def _registry_names(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def exported() -> set[str]:
    return (
        exported_names()
        | _registry_names(StreamMetrics().registry)
        | _registry_names(OnlineMetrics().registry)
    )


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "crossrec"
    names = exported()
    used: set[str] = set()
    titles = []
    for panel in dashboard["panels"]:
        titles.append(panel["title"])
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        for target in panel["targets"]:
            found = set(METRIC.findall(target["expr"]))
            assert found, (panel["title"], target["expr"])
            unknown = found - names
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not exported"
            used |= found
    # The panels an operator needs (issue: request rate, latency, errors, lag, events/s,
    # freshness, model version and promotions), and every serving metric is on the board.
    for needed in (
        "Request rate",
        "latency p50 / p99",
        "Errors",
        "Consumer lag",
        "Events per second",
        "Freshness",
        "Model version",
        "promotions",
    ):
        assert any(needed in t for t in titles), needed
    for name in METRIC_KINDS:
        assert any(u.startswith("ray_" + name) for u in used), name
    assert any(u.startswith("crossrec_online_") for u in used)
    assert "crossrec_stream_consumer_lag" in used


def test_the_scrape_config_reaches_every_metrics_port_the_configs_set() -> None:
    scrape = yaml.safe_load((ROOT / "cluster" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]
    }
    compose = yaml.safe_load((ROOT / "cluster" / "compose.yaml").read_text())["services"]
    head = compose["ray-head"]["command"]
    assert "--metrics-export-port=8080" in head
    assert targets["ray"] == ["ray-head:8080"]
    cfg = load_config(ROOT / "cluster" / "single-host.yaml")
    workers = int(
        next(w.split("=")[1] for w in compose["stream"]["command"] if w.startswith("--workers="))
    )
    port = cfg.stream.metrics_port
    assert port is not None
    assert targets["crossrec-stream"] == [f"ray-head:{port + i}" for i in range(workers)]
    assert targets["crossrec-online"] == [f"online:{cfg.online.metrics_port}"]
    for name in ("prometheus", "grafana"):
        assert compose[name]["profiles"] == ["monitoring"]
    mounted = " ".join(compose["grafana"]["volumes"])
    assert "crossrec-dashboard.json" in mounted
