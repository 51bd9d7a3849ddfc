"""kube-prometheus-stack's values (components/render/platform/monitoring.py): Grafana, the VMs' node-exporters, the alerts.

``unit``: plain Python over the dev, prod and edge stack configs;
``validators``: ``promtool`` checks the scrape config.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from components.render import platform as pv
from support.platform_render import CONFIGS, NAMES, monitoring_spec, need, render_gitops_rules

unit = pytest.mark.unit
validators = pytest.mark.validators


@unit
@pytest.mark.parametrize("name", NAMES)
def test_monitoring_values(name):
    cfg = CONFIGS[name]
    spec = monitoring_spec(cfg)
    v = pv.monitoring_values(spec)
    assert v["grafana"]["admin"]["existingSecret"] == spec.grafana_admin_secret
    assert v["grafana"]["persistence"]["storageClassName"] == "longhorn"
    assert v["grafana"]["persistence"]["existingClaim"] == "grafana"
    assert pv.grafana_claim(spec)["spec"]["storageClassName"] == "longhorn"
    (job,) = v["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]
    targets = {sc["labels"]["instance"]: sc["targets"] for sc in job["static_configs"]}
    expected = {n.name: [f"{n.ip}:9100"] for n in cfg.nodes_with("load_balancer", "infra")}
    assert targets == expected
    assert all(sc["labels"]["node"] == sc["labels"]["instance"] for sc in job["static_configs"])
    retention = v["prometheus"]["prometheusSpec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention["whenDeleted"] == "Retain"
    dev = pv.monitoring_values(monitoring_spec(cfg, retain_volumes=False))
    assert dev["prometheus"]["prometheusSpec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    for bad in ("10.0.0.1", "10.0.0.1:0", "host:9100", "10.0.0.1:x"):
        with pytest.raises(ValueError, match="is not ip:port"):
            pv.node_exporter_scrape_configs(monitoring_spec(cfg, node_exporter_targets=(pv.ScrapeTarget("n", bad),)))
    groups = v["additionalPrometheusRulesMap"]["microcloud-gitops"]["groups"]
    assert groups == pv.gitops_alert_groups(spec.alerts)
    assert v["prometheusOperator"]["admissionWebhooks"]["enabled"] is False
    assert v["prometheusOperator"]["admissionWebhooks"]["patch"]["enabled"] is False
    assert v["prometheusOperator"]["tls"]["enabled"] is False
    # Without a storage class (a test API server): no PVCs at all.
    bare = pv.monitoring_values(monitoring_spec(cfg, storage_class=None))
    assert "persistence" not in bare["grafana"] and "storageSpec" not in bare["prometheus"]["prometheusSpec"]
    with pytest.raises(ValueError, match="webhook_ca_bundle"):
        pv.monitoring_values(monitoring_spec(cfg, admission_webhooks=True))
    on = pv.monitoring_values(monitoring_spec(cfg, admission_webhooks=True, webhook_ca_bundle="Q0E="))
    assert on["prometheusOperator"]["admissionWebhooks"]["caBundle"] == "Q0E=" and on["prometheusOperator"]["tls"]["enabled"]


# ------------------------------------------------------------------ promtool


@validators
@pytest.mark.parametrize("name", NAMES)
def test_node_exporter_scrape_config_passes_promtool(name, tmp_path):
    tool = need("promtool")
    spec = monitoring_spec(CONFIGS[name])
    (tmp_path / "rules.yml").write_text(render_gitops_rules(spec.alerts))
    conf = {
        "global": {"scrape_interval": "30s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": pv.node_exporter_scrape_configs(spec),
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(conf))
    res = subprocess.run([tool, "check", "config", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    # The check can fail: a misspelt key.
    conf["scrape_configs"][0]["static_config"] = conf["scrape_configs"][0].pop("static_configs")
    path.write_text(yaml.safe_dump(conf))
    assert subprocess.run([tool, "check", "config", str(path)], capture_output=True, text=True, cwd=tmp_path).returncode != 0
