"""What Argo CD's own ApplicationSet code makes of gitops/: the ApplicationSet as the root Application patches
it, run by the controller's GenerateApplications (argocd-appset-render, tests/support/argocd_verify.py) on
a copy of this repository's gitops/ standing for the Git repository.

Every app directory becomes one Application; an app with image-updates.yaml gets the label the
ImageUpdater selects and exactly the annotations Image Updater reads; an app without one gets neither;
a broken opt-in file stops the whole ApplicationSet (what the controller does), which
check_opt_in (tests/test_image_updater.py) refuses first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from components.render import platform as pv
from components.render.platform.image_updater import OPT_IN_FILE, OPT_IN_LABEL, check_opt_in, expected_annotations
from support.argocd_project import application_permitted
from support.argocd_verify import render_appset, tool
from support.gitops_patch import apply_patch_ops

pytestmark = pytest.mark.validators

ROOT = Path(__file__).resolve().parents[1]
GITOPS = ROOT / "gitops"
SPEC = pv.GitOpsSpec(repo_url="https://git.example.test/infra.git", revision="main", path="gitops")


@pytest.fixture(scope="module")
def binary() -> str:
    found = tool("argocd-appset-render")
    if found is None:
        pytest.skip("no argocd-appset-render beside the plugins (tests/support/argocd_verify.py says where it comes from)")
    return found


def patched_appset() -> dict:
    appset = yaml.safe_load((GITOPS / "root" / "applicationset.yaml").read_text())
    (patch,) = pv.root_application(SPEC)["spec"]["source"]["kustomize"]["patches"]
    return apply_patch_ops(appset, json.loads(patch["patch"]))


def repo_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(GITOPS, repo / "gitops")
    return repo


def generate(binary: str, repo: Path) -> dict[str, dict]:
    rc, apps, err = render_appset(binary, patched_appset(), repo)
    assert rc == 0, err[-3000:]
    return {a["metadata"]["name"]: a for a in apps}


def test_every_app_directory_is_one_application_and_the_opted_in_one_carries_image_updaters_annotations(binary, tmp_path):
    apps = generate(binary, repo_copy(tmp_path))
    assert set(apps) == {p.name for p in (GITOPS / "apps").iterdir() if p.is_dir()}
    proj = pv.apps_project(SPEC)
    for name, app in apps.items():
        spec = app["spec"]
        assert spec["project"] == pv.APP_PROJECT and spec["destination"]["namespace"] == f"app-{name}"
        assert spec["source"] == {"repoURL": SPEC.repo_url, "targetRevision": "main", "path": f"gitops/apps/{name}"}
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        assert application_permitted(proj, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **app}), name
        opt_in = GITOPS / "apps" / name / OPT_IN_FILE
        annotations = app["metadata"].get("annotations", {})
        ours = {k: v for k, v in annotations.items() if k.startswith("argocd-image-updater.argoproj.io/")}
        if opt_in.is_file():
            images = check_opt_in(yaml.safe_load(opt_in.read_text()))
            assert app["metadata"]["labels"][OPT_IN_LABEL] == "enabled"
            assert ours == expected_annotations(images)
            # The core group is "" (Argo CD drops the empty field).
            assert spec["ignoreDifferences"] == [{"kind": "Secret", "jsonPointers": ["/data"]}]
            assert spec["syncPolicy"]["syncOptions"] == ["CreateNamespace=true", "RespectIgnoreDifferences=true"]
        else:
            assert OPT_IN_LABEL not in app["metadata"].get("labels", {}) and not ours
    assert "example" in apps and OPT_IN_LABEL in apps["example"]["metadata"]["labels"], "the example app opts in"


def test_an_app_without_the_file_is_untouched_and_two_images_are_listed_in_order(binary, tmp_path):
    repo = repo_copy(tmp_path)
    plain = repo / "gitops" / "apps" / "plain"
    plain.mkdir()
    (plain / "configmap.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\n")
    two = repo / "gitops" / "apps" / "two"
    two.mkdir()
    (two / "configmap.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: two}\n")
    images = [
        {"alias": "api", "image": "ghcr.io/o/api", "updateStrategy": "newest-build", "allowTags": "regexp:^sha-[0-9a-f]{7}$"},
        {"alias": "worker", "image": "registry.lan:5000/o/worker", "updateStrategy": "semver", "allowTags": "regexp:^v[0-9.]+$"},
    ]
    (two / OPT_IN_FILE).write_text(yaml.safe_dump({"images": images}))
    apps = generate(binary, repo)
    assert OPT_IN_LABEL not in apps["plain"]["metadata"].get("labels", {})
    assert "annotations" not in apps["plain"]["metadata"] or not apps["plain"]["metadata"]["annotations"]
    assert apps["plain"]["spec"]["syncPolicy"]["syncOptions"] == ["CreateNamespace=true"]
    got = {k: v for k, v in apps["two"]["metadata"]["annotations"].items() if k.startswith("argocd-image-updater.argoproj.io/")}
    assert got == expected_annotations(images)
    assert got["argocd-image-updater.argoproj.io/image-list"] == "api=ghcr.io/o/api,worker=registry.lan:5000/o/worker"


def test_a_broken_opt_in_file_stops_the_applicationset_and_check_opt_in_refuses_it_first(binary, tmp_path):
    repo = repo_copy(tmp_path)
    bad = {"images": [{"alias": "web"}]}
    (repo / "gitops" / "apps" / "example" / OPT_IN_FILE).write_text(yaml.safe_dump(bad))
    rc, _, err = render_appset(binary, patched_appset(), repo)
    assert rc == 1 and "image" in err, err[-2000:]
    with pytest.raises(ValueError):
        check_opt_in(bad)
