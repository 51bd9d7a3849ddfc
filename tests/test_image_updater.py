"""Argo CD Image Updater (platform.image_updater): its values, the ImageUpdater object, the registry
credentials (the same secret config keys as the nodes' registries.yaml), and the per-app opt-in file.

What Argo CD's own ApplicationSet code makes of the opt-in file is in tests/test_appset_render.py; the
ImageUpdater object against its CRD (schema and CEL rules) in tests/k8s/test_platform_engine.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from components.render.platform.image_updater import (
    OPT_IN_FILE,
    OPT_IN_LABEL,
    REGISTRY_SECRET,
    SHA_TAGS,
    ImageUpdaterSpec,
    RegistryCredential,
    check_opt_in,
    expected_annotations,
    image_updater_object,
    image_updater_values,
    registry_secret_data,
)
from support.harness import run_program, stack_model

GITOPS = Path(__file__).resolve().parent.parent / "gitops"
CHART = "kubernetes:helm.sh/v4:Chart"
TOKEN = "ghp_" + "Im4geUpd" * 5
GOOD = {"images": [{"alias": "web", "image": "ghcr.io/o/app", "updateStrategy": "newest-build", "allowTags": SHA_TAGS}]}


@pytest.mark.unit
def test_values_list_each_registry_with_credentials_from_the_programs_secret():
    v = image_updater_values(ImageUpdaterSpec(registries=(RegistryCredential("registry.lan:5000"), RegistryCredential("ghcr.io"))))
    assert v["config"]["registries"] == [
        {"name": "ghcr.io", "api_url": "https://ghcr.io", "prefix": "ghcr.io", "ping": True,
         "credentials": f"secret:argocd/{REGISTRY_SECRET}#ghcr.io"},
        {"name": "registry.lan:5000", "api_url": "https://registry.lan:5000", "prefix": "registry.lan:5000", "ping": True,
         "credentials": f"secret:argocd/{REGISTRY_SECRET}#registry.lan:5000"},
    ]
    assert v["crds"] == {"install": True, "keep": False}
    assert registry_secret_data({"ghcr.io": ("bot", TOKEN)}) == {"ghcr.io": f"bot:{TOKEN}"}
    for bad in (("b:ot", TOKEN), ("", TOKEN), ("bot", ""), ("bot", "a\nb")):
        with pytest.raises(ValueError) as err:
            registry_secret_data({"ghcr.io": bad})
        assert TOKEN not in str(err.value)


@pytest.mark.unit
def test_the_object_selects_the_labelled_apps_by_their_annotations():
    obj = image_updater_object(ImageUpdaterSpec())
    (ref,) = obj["spec"]["applicationRefs"]
    assert ref == {"namePattern": "*", "labelSelectors": {"matchLabels": {OPT_IN_LABEL: "enabled"}}, "useAnnotations": True}
    assert obj["metadata"]["namespace"] == "argocd"


@pytest.mark.unit
def test_every_opt_in_file_in_gitops_is_valid_and_its_app_is_kustomize():
    files = sorted((GITOPS / "apps").glob(f"*/{OPT_IN_FILE}"))
    assert files, "the example app opts in"
    for f in files:
        images = check_opt_in(yaml.safe_load(f.read_text()), str(f))
        kust = f.parent / "kustomization.yaml"
        assert kust.is_file(), f"{f.parent.name}: Image Updater's argocd write-back needs a Kustomize (or Helm) app"
        resources = yaml.safe_load(kust.read_text())["resources"]
        assert OPT_IN_FILE not in resources, "the opt-in file is no manifest"
        assert sorted(resources) == sorted(p.name for p in f.parent.glob("*.yaml") if p.name not in (OPT_IN_FILE, "kustomization.yaml"))
        # Each image it names is one the app's manifests run.
        manifests = "\n".join((f.parent / r).read_text() for r in resources)
        for img in images:
            assert f"image: {img['image']}:" in manifests, (f, img["image"])


@pytest.mark.unit
@pytest.mark.parametrize("mutate, said", [
    (lambda d: d.update(extra=1), "one key, images"),
    (lambda d: d.update(images=[]), "non-empty list"),
    (lambda d: d["images"][0].pop("allowTags"), "give alias, image"),
    (lambda d: d["images"][0].update(alias="bad alias"), "alias"),
    (lambda d: d["images"].append(dict(d["images"][0])), "alias"),
    (lambda d: d["images"][0].update(image="ghcr.io/o/app:sha-1234567"), "without a tag"),
    (lambda d: d["images"][0].update(updateStrategy="newest"), "updateStrategy"),
    (lambda d: d["images"][0].update(allowTags="^sha-"), "regexp:"),
    (lambda d: d["images"][0].update(allowTags="regexp:(["), "not a regular expression"),
    (lambda d: d["images"][0].update(allowTags="regexp:'x'"), "quote"),
])
def test_a_bad_opt_in_file_is_refused_naming_the_entry(mutate, said):
    doc = copy.deepcopy(GOOD)
    mutate(doc)
    with pytest.raises(ValueError) as err:
        check_opt_in(doc, "apps/x/image-updates.yaml")
    assert said in str(err.value) and "apps/x/image-updates.yaml" in str(err.value)


@pytest.mark.unit
def test_the_annotations_image_updater_reads():
    assert expected_annotations(GOOD["images"]) == {
        "argocd-image-updater.argoproj.io/image-list": "web=ghcr.io/o/app",
        "argocd-image-updater.argoproj.io/write-back-method": "argocd",
        "argocd-image-updater.argoproj.io/web.update-strategy": "newest-build",
        "argocd-image-updater.argoproj.io/web.allow-tags": SHA_TAGS,
    }


# ------------------------------------------------------------------ the program's graph


def registries_model(stack: str) -> dict:
    model = stack_model(stack)
    model["k3s"]["registries"] = {"configs": {"ghcr.io": {"auth": {"username": "microcloud-bot", "password_key": "ghcr_token"}},
                                              "mirror.lan:5000": {"insecure_skip_verify": True}}}
    return model


@pytest.mark.graph
def test_the_chart_object_and_credentials_come_after_argo_cd_and_the_token_stays_secret():
    run = run_program("dev", registries_model("dev"), secrets={"ghcr_token": TOKEN})
    assert run.error is None, run.error
    chart = run.one(CHART, "platform-argocd-image-updater")
    argocd = run.one(CHART, "platform-argocd")
    secret = run.one("kubernetes:core/v1:Secret", "platform-image-updater-registries")
    assert argocd.urn in chart.dependencies and secret.urn in chart.dependencies
    assert "stringData" in secret.secret_inputs
    assert secret.inputs["stringData"]["value"] == {"ghcr.io": f"microcloud-bot:{TOKEN}"}
    assert chart.inputs["values"]["config"]["registries"][0]["credentials"] == f"secret:argocd/{REGISTRY_SECRET}#ghcr.io"
    # A registry without auth gets no credentials entry.
    assert [r["name"] for r in chart.inputs["values"]["config"]["registries"]] == ["ghcr.io"]
    obj = run.one("kubernetes:argocd-image-updater.argoproj.io/v1alpha1:ImageUpdater", "platform-image-updater")
    assert chart.urn in obj.dependencies
    for r in run.resources:
        for name, v in r.inputs.items():
            if name not in r.secret_inputs:
                assert TOKEN not in json.dumps(v), (r.name, name)


@pytest.mark.graph
def test_off_means_no_chart_and_no_object():
    model = stack_model("dev")
    model.setdefault("platform", {})["image_updater"] = False
    run = run_program("dev", model)
    assert run.error is None, run.error
    assert not [r for r in run.by_type(CHART) if "image-updater" in r.name]
    assert not [r for r in run.resources if "ImageUpdater" in r.type]
