"""ImageStore under Pulumi mocks: every base volume is made from the file its image check printed.

The check (a local command, child of ImageStore) carries the pinned digest in
its script and its triggers; the Volume's source is the check's stdout, so
the engine orders them by data flow (no depends_on), and a new pin is a new
check. What the script does for real: tests/test_images_check.py.
"""

from __future__ import annotations

import pytest

from components.config import parse_config
from support.harness import EDGE_STACKS, run_program, stack_model

pytestmark = pytest.mark.graph

LOCAL = "command:local:Command"
VOLUME = "libvirt:index/volume:Volume"


@pytest.mark.parametrize("stack", ["dev", "prod", *EDGE_STACKS])
def test_each_base_volume_is_the_file_its_check_printed(stack):
    cfg = parse_config(stack_model(stack))
    run = run_program(stack)
    assert run.error is None, run.error
    store = run.one("microcloud:compute:ImageStore", "images")
    for os_name, image in cfg.images.items():
        algorithm, digest = image.digest()
        check = run.one(LOCAL, f"check-{os_name}")
        vol = run.one(VOLUME, f"base-{os_name}")
        assert check.parent == store.urn and vol.parent == store.urn
        assert vol.inputs["source"] == f"/checked/check-{os_name}.img", vol.inputs
        # Data flow, not depends_on: the source comes from the check, and nothing else orders them.
        assert vol.property_dependencies.get("source") == [check.urn], vol.property_dependencies
        assert check.urn not in [d for k, deps in vol.property_dependencies.items() if k != "source" for d in deps]
        assert check.inputs["triggers"] == [f"{algorithm}:{digest}", image.source]
        script = check.inputs["create"]
        assert f"want={digest}" in script and f"algo={algorithm}" in script and image.source in script
        assert check.inputs["logging"] == "stderr"


def test_a_new_digest_is_a_new_check_and_nothing_else_changes():
    model = stack_model("dev")
    before = run_program("dev", model)
    model["images"]["rocky9"]["sha256"] = "0" * 64
    after = run_program("dev", model)
    assert before.error is None and after.error is None
    old, new = (r.one(LOCAL, "check-rocky9").inputs for r in (before, after))
    assert old["triggers"] != new["triggers"] and "0" * 64 in new["create"]
    assert before.one(LOCAL, "check-flatcar").inputs == after.one(LOCAL, "check-flatcar").inputs


def test_an_image_without_its_digest_stops_before_any_resource():
    model = stack_model("dev")
    del model["images"]["flatcar"]["sha512"]
    run = run_program("dev", model)
    assert run.error is not None and "images.flatcar: needs the image's sha256" in str(run.error)
    assert [r for r in run.resources if r.type != "pulumi:pulumi:Stack"] == []
