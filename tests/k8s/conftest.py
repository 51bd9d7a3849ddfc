"""Fixtures of the k8s tier: one test Kubernetes API per session (tests/k8s/cluster.py)."""

from __future__ import annotations

import uuid

import pytest

from .cluster import ApiError, Cluster, cached_bin_dir


@pytest.fixture(scope="session")
def k8s_bin():
    """The directory of the binaries .ci/k8s.sh built; skip, naming the script, when they are not all there."""
    bin_dir, why = cached_bin_dir()
    if bin_dir is None:
        last = why.splitlines()[-1] if why else "k8s.sh --cached-only failed"
        pytest.skip(f"the test Kubernetes API is not built: {last.removeprefix('k8s.sh: ')}"
                    + ("" if "bash .ci/k8s.sh" in last else "; run `bash .ci/k8s.sh`"))
    return bin_dir


@pytest.fixture(scope="session")
def k8s_cluster(k8s_bin, tmp_path_factory):
    """etcd, kube-apiserver, controller-manager, scheduler and kwok's 3 Ready nodes, on loopback.

    Logs and certificates stay in the session's tmp directory (k8s0/logs/).
    """
    with Cluster(k8s_bin, workdir=tmp_path_factory.mktemp("k8s"), keep_workdir=True) as cluster:
        yield cluster


@pytest.fixture
def k8s_namespace(k8s_cluster, request):
    """A namespace of this test's own, deleted afterwards (tests touch nothing else)."""
    stem = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    name = f"mc-{stem}-{uuid.uuid4().hex[:6]}"
    k8s_cluster.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    try:
        k8s_cluster.delete(f"/api/v1/namespaces/{name}")
    except ApiError as err:
        if err.status != 404:
            raise
