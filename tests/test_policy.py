"""The policy pack's checks (policy/rules.py) as plain functions; the engine running them is tests/test_policy_engine.py."""

from __future__ import annotations

import pytest

from policy import rules

pytestmark = pytest.mark.unit


def _all(check, rtype, props, provider="k3s", name="r"):
    return list(check(rtype, name, props, provider))


@pytest.mark.parametrize("provider,violations", [("default_4_25_0", 1), ("default", 1), ("k3s", 0), ("defaulted-by-me", 0)])
def test_kubernetes_resources_need_an_explicit_provider(provider, violations):
    assert len(_all(rules.explicit_kubernetes_provider, "kubernetes:core/v1:ConfigMap", {}, provider)) == violations
    # Only Kubernetes resources are this rule's business.
    assert not _all(rules.explicit_kubernetes_provider, "random:index/randomPassword:RandomPassword", {}, provider)


@pytest.mark.parametrize("chart,version,ok", [
    ("traefik", "41.3.0", True),
    ("traefik", "v1.2.3-rc.1", True),
    ("traefik", "^41.3.0", False),
    ("traefik", "41.x", False),
    ("traefik", "", False),
    ("/srv/charts/traefik-41.3.0", "", True),  # a local chart: its Chart.yaml is checked by the program
    ("traefik-41.3.0.tgz", "", True),
])
def test_chart_versions_are_exact(chart, version, ok):
    # What the engine gives for a Chart component (no inputs) cannot be judged: no violation.
    assert not _all(rules.pinned_versions, "kubernetes:helm.sh/v4:Chart", {})
    got = _all(rules.pinned_versions, "kubernetes:helm.sh/v4:Chart", {"chart": chart, "version": version})
    assert (not got) == ok, got


@pytest.mark.parametrize("source,ok", [
    ("https://stable.release.flatcar-linux.net/amd64-usr/4230.2.3/flatcar_production_qemu_image.img", True),
    ("https://stable.release.flatcar-linux.net/amd64-usr/current/flatcar_production_qemu_image.img", False),
    ("https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2", False),
    ("/var/lib/images/rocky-9.6.qcow2", True),
])
def test_os_image_sources_name_a_release(source, ok):
    got = _all(rules.pinned_versions, "libvirt:index/volume:Volume", {"source": source})
    assert (not got) == ok, got


@pytest.mark.parametrize("image,ok", [
    ("docker.io/library/nginx:1.27.3", True),
    ("ghcr.io/org/app@sha256:" + "a" * 64, True),
    ("nginx:latest", False),
    ("nginx", False),
    ("registry.lan:5000/app", False),  # the port is not a tag
    ("registry.lan:5000/app:stable", False),
    ("registry.lan:5000/app:2.0.1", True),
])
def test_container_images_have_an_exact_tag_or_digest(image, ok):
    assert rules.image_is_pinned(image) == ok
    spec = {"template": {"spec": {"initContainers": [{"name": "i", "image": "busybox:1.36.1"}], "containers": [{"name": "c", "image": image}]}}}
    got = _all(rules.pinned_versions, "kubernetes:apps/v1:Deployment", {"spec": spec})
    assert (not got) == ok, got
    cron = {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}}
    assert (not _all(rules.pinned_versions, "kubernetes:batch/v1:CronJob", {"spec": cron})) == ok


def test_the_packs_copies_of_the_configs_rules_agree():
    """The pack runs without the program, so it copies two rules; a change to either side fails here."""
    from components.config.base import UNPINNED_PATH
    from components.config.platform import EXACT_CHART_VERSION

    assert (rules.MOVING_PATH.pattern, rules.MOVING_PATH.flags) == (UNPINNED_PATH.pattern, UNPINNED_PATH.flags)
    assert rules.EXACT.pattern == "^v?" + EXACT_CHART_VERSION.pattern + "$"
    assert rules.EXACT.flags == EXACT_CHART_VERSION.flags
