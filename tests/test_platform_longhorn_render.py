"""Longhorn (components/render/platform/longhorn.py): its values, StorageClass and uninstall Job; nfs.py's values.

``unit``: the values of Longhorn and of the NFS provisioner (the other storage
chart, in the same test) for every stack config. ``validators``: our
StorageClass and uninstall Job equal what the Longhorn chart in
``$MICROCLOUD_CHART_DIR`` renders (``helm template``; skipped, by name,
without the chart or helm).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.render import platform as pv
from support.platform_render import CHART_DIR, CONFIGS, NAMES, longhorn_spec, nfs_spec

unit = pytest.mark.unit
validators = pytest.mark.validators


@unit
@pytest.mark.parametrize("name", NAMES)
def test_longhorn_and_nfs_values(name):
    cfg = CONFIGS[name]
    spec = longhorn_spec(cfg)
    v = pv.longhorn_values(spec)
    assert v["defaultSettings"]["defaultDataPath"] == spec.data_path
    assert v["defaultSettings"]["createDefaultDiskLabeledNodes"] is True
    assert v["persistence"]["defaultClassReplicaCount"] == spec.replica_count == v["defaultSettings"]["defaultReplicaCount"]
    assert v["preUpgradeChecker"]["jobEnabled"] is False
    mounted = pv.longhorn_values(dataclasses.replace(spec, data_path="/mnt/longhorn-disk"))
    assert mounted["defaultSettings"]["defaultDataPath"] == "/mnt/longhorn-disk"
    n = nfs_spec(cfg)
    nv = pv.nfs_provisioner_values(n)
    assert (nv["nfs"]["server"], nv["nfs"]["path"]) == (n.server, n.path)
    assert nv["storageClass"]["name"] == n.storage_class and nv["storageClass"]["reclaimPolicy"] == n.reclaim_policy


# ------------------------------------------------------------------ Longhorn's own objects, against the chart


def helm_bin() -> Path | None:
    """The helm that .ci/k8s.sh built (the one the k8s tier uses), or one on PATH."""
    for p in sorted((Path.home() / ".cache" / "microcloud-k8s").glob("v*/bin/helm")):
        return p
    found = shutil.which("helm")
    return Path(found) if found else None


def helm_template(chart: str, values: dict, show_only: str, tmp_path: Path) -> list[dict]:
    helm = helm_bin()
    if helm is None:
        pytest.skip("helm is not built (bash .ci/k8s.sh)")
    d = CHART_DIR / f"{chart}-{pv.CHARTS[chart].version}"
    if not (d / "Chart.yaml").is_file():
        pytest.skip(f"chart {chart} is not in {CHART_DIR}")
    vf = tmp_path / "values.yaml"
    vf.write_text(yaml.safe_dump(values))
    res = subprocess.run([str(helm), "template", "longhorn", str(d), "--namespace", pv.LONGHORN_NAMESPACE,
                          "-f", str(vf), "--show-only", show_only], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path),
                              "HELM_DATA_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@validators
def test_longhorn_uninstall_job_is_the_charts_hook(tmp_path):
    """Our uninstall Job runs what the chart's pre-delete hook runs, as the chart's service account."""
    (hook,) = helm_template("longhorn", {}, "templates/uninstall-job.yaml", tmp_path)
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    theirs = hook["spec"]["template"]["spec"]
    ours = pv.longhorn_uninstall_job(pv.LONGHORN_NAMESPACE, theirs["containers"][0]["image"])
    mine = ours["spec"]["template"]["spec"]
    assert ours["metadata"]["name"] == hook["metadata"]["name"] == pv.LONGHORN_UNINSTALL_JOB
    for key in ("command", "image"):
        assert mine["containers"][0][key] == theirs["containers"][0][key], key
    assert mine["serviceAccountName"] == theirs["serviceAccountName"]
    assert mine["restartPolicy"] == theirs["restartPolicy"]
    assert {e["name"] for e in mine["containers"][0]["env"]} <= {e["name"] for e in theirs["containers"][0]["env"]}


@validators
@pytest.mark.parametrize("reclaim", ["Delete", "Retain"])
def test_longhorn_storage_class_is_the_one_the_chart_would_make(reclaim, tmp_path):
    spec = pv.LonghornSpec(replica_count=2, reclaim_policy=reclaim, allow_uninstall=reclaim == "Delete")
    values = pv.longhorn_values(spec)
    assert values["persistence"]["createStorageClass"] is False
    # What the chart would have had longhorn-manager create, from the same values with its own StorageClass on.
    values["persistence"]["createStorageClass"] = True
    (cm,) = helm_template("longhorn", values, "templates/storageclass.yaml", tmp_path)
    theirs = yaml.safe_load(cm["data"]["storageclass.yaml"])
    ours = pv.longhorn_storage_class(spec)
    assert ours["metadata"]["name"] == theirs["metadata"]["name"]
    assert ours["metadata"]["annotations"] == theirs["metadata"]["annotations"]
    for key in ("provisioner", "allowVolumeExpansion", "reclaimPolicy", "volumeBindingMode", "parameters"):
        assert ours[key] == theirs[key], key
