"""The Storage component under Pulumi mocks: one command per disk, edges to the VMs, secrets.

The component is built on its own (stand-in VMs, a mock SSH key), so these
run before it is wired into __main__.py; once it is, the last test checks the
same edges in the whole program.
"""

from __future__ import annotations

import pulumi
import pulumi_tls as tls
import pytest
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components import storage
from components.specs import storage as storage_specs
from components.day2 import NodeAccess
from components.config import parse_config
from components.render import storage as st
from support.harness import EDGE_STACKS, Mocks, RecordingMonitor, Run, run_program, stack_model

pytestmark = pytest.mark.graph

COMMAND = "command:remote:Command"
STORAGE = "microcloud:storage:Storage"
VM = "microcloud-test:index:Vm"


class _Vm(pulumi.CustomResource):
    """Stands in for a node's libvirt domain: something with an id the commands must wait for."""

    def __init__(self, name: str):
        super().__init__(VM, name, {})


def run_storage(stack: str) -> tuple[Run, storage.Storage]:
    cfg = parse_config(stack_model(stack))
    monitor = RecordingMonitor(Mocks())
    pulumi.runtime.set_all_config({})
    pulumi.runtime.settings.set_root_resource(None)
    pulumi.runtime.set_mocks(Mocks(), project="microcloud", stack=stack, preview=False, monitor=monitor)
    made = {}

    def program():
        key = tls.PrivateKey("secrets-ssh", algorithm="ED25519", opts=pulumi.ResourceOptions(additional_secret_outputs=["privateKeyOpenssh"]))
        vms = {n.name: _Vm(n.name) for n in cfg.nodes}
        made["storage"] = storage.Storage(
            "storage",
            storage.StorageArgs(
                stack=cfg,
                access=NodeAccess(
                    ips={n.name: vms[n.name].id.apply(lambda _, ip=str(n.ip): ip) for n in cfg.nodes},
                    domain_ids={name: vm.id for name, vm in vms.items()},
                    user="core",
                    private_key=pulumi.Output.secret(key.private_key_openssh),
                    host_keys={n.name: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{n.name}" for n in cfg.nodes},
                ),
            ),
        )

    _sync_await(run_pulumi_func(program))
    return Run(monitor=monitor, outputs={}), made["storage"]


@pytest.fixture(scope="module", params=("dev", "prod", *EDGE_STACKS))
def built(request):
    run, comp = run_storage(request.param)
    return request.param, parse_config(stack_model(request.param)), run, comp


def _deps(r) -> set[str]:
    return set(r.dependencies) | {u for us in r.property_dependencies.values() for u in us}


def _expected(cfg) -> set[str]:
    names = set()
    for n in cfg.nodes:
        for d in n.data_disks:
            names |= {f"{n.name}-disk-{d.name}", f"{n.name}-mount-{d.name}"}
        if n.data_disks and n.uses_longhorn:
            names |= {f"{n.name}-longhorn-mount", f"{n.name}-iscsi"}
        if n.role == "storage":
            names.add(f"{n.name}-exports")
            if not n.is_flatcar:
                names.add(f"{n.name}-nfs-firewall")
    return names


def test_one_prepare_and_one_mount_command_per_disk(built):
    name, cfg, run, _ = built
    comp = run.one(STORAGE, "storage")
    cmds = [r for r in run.by_type(COMMAND) if r.parent == comp.urn]
    assert {c.name for c in cmds} == _expected(cfg), name
    assert len(cmds) == len({c.name for c in cmds})
    for ns in storage_specs.plan(cfg):
        for step in storage_specs.steps(ns):
            # what each command delivers is the planned file
            assert run.one(COMMAND, f"{ns.node}-{step.res}").inputs["stdin"] == step.content
    for n in cfg.nodes:
        for d in n.data_disks:
            prep = run.one(COMMAND, f"{n.name}-disk-{d.name}")
            # the script it runs is the rendered one for this disk
            assert prep.inputs["stdin"] == st.render_prepare_script(st.disk_spec(n.name, d.name))
            assert f"/dev/disk/by-id/virtio-{st.disk_serial(d.name)}" in prep.inputs["stdin"]


def test_every_storage_command_waits_for_its_own_vm_and_is_redone_on_a_new_one(built):
    name, cfg, run, _ = built
    vm_urn = {r.name: r.urn for r in run.by_type(VM)}
    comp = run.one(STORAGE, "storage")
    for c in run.by_type(COMMAND):
        if c.parent != comp.urn:
            continue
        node = next(n.name for n in cfg.nodes if c.name.startswith(n.name + "-"))
        assert vm_urn[node] in c.property_dependencies.get("connection", []), (name, c.name)
        # the domain id is a trigger: a replaced VM gets the command again
        assert vm_urn[node] in c.property_dependencies.get("triggers", []), (name, c.name)
        assert f"{node}-id" in c.inputs["triggers"]
        others = {u for n, u in vm_urn.items() if n != node}
        assert not (_deps(c) & others), f"{c.name} waits for another node's VM"


def test_order_on_the_node_disk_then_mount_then_what_lives_on_it(built):
    name, cfg, run, _ = built
    for ns in storage_specs.plan(cfg):
        for d in ns.disks:
            mount = run.one(COMMAND, f"{ns.node}-mount-{d.disk}")
            assert run.urn_of(COMMAND, f"{ns.node}-disk-{d.disk}") in mount.dependencies
        for sub, res in ((st.LONGHORN_SUBDIR, "longhorn-mount"), (st.NFS_SUBDIR, "exports")):
            holders = [disk for disk, subs in ns.subdirs.items() if sub in subs]
            if holders:
                r = run.one(COMMAND, f"{ns.node}-{res}")
                assert run.urn_of(COMMAND, f"{ns.node}-mount-{holders[0]}") in r.dependencies, (name, r.name)


def test_no_secret_in_clear(built):
    name, cfg, run, _ = built
    comp = run.one(STORAGE, "storage")
    for c in run.by_type(COMMAND):
        if c.parent != comp.urn:
            continue
        assert "connection" in c.secret_inputs, c.name
        assert "triggers" not in c.secret_inputs, c.name
        assert {"stdout", "stderr"} <= set(c.additional_secret_outputs)
        for field, value in c.inputs.items():
            if field not in c.secret_inputs:
                assert "PRIVATE KEY" not in str(value) and "mock\n" not in str(value), (c.name, field)


def test_nfs_outputs_follow_the_live_export(built):
    name, cfg, run, comp = built
    storage_nodes = [n for n in cfg.nodes if n.role == "storage"]
    if not storage_nodes:
        assert comp.nfs_server is None and comp.nfs_path is None
        return
    first = storage_nodes[0]
    assert _sync_await(comp.nfs_server.future()) == str(first.ip)
    assert not _sync_await(comp.nfs_server.is_secret())
    # known only once the export command ran: the NFS provisioner waits for it
    deps = {_sync_await(r.urn.future()) for r in _sync_await(comp.nfs_server.resources())}
    assert run.urn_of(COMMAND, f"{first.name}-exports") in deps
    nfs_disk = next(d for d, subs in next(ns for ns in storage_specs.plan(cfg) if ns.node == first.name).subdirs.items() if "nfs" in subs)
    assert comp.nfs_path == f"/var/mnt/{nfs_disk}/nfs"
    assert comp.longhorn_path == "/var/lib/longhorn"


def test_in_the_whole_program_storage_commands_wait_for_the_domains():
    run = run_program("dev")
    assert run.error is None, run.error
    comps = run.by_type(STORAGE)
    if not comps:
        pytest.skip("Storage is not wired into __main__.py yet")
    cfg = parse_config(stack_model("dev"))
    cmds = {c.name: c for c in run.by_type(COMMAND) if c.parent == comps[0].urn}
    assert set(cmds) == _expected(cfg)
    for c in cmds.values():
        node = next(n.name for n in cfg.nodes if c.name.startswith(n.name + "-"))
        assert run.urn_of("libvirt:index/domain:Domain", node) in _deps(c), c.name


def test_nfs_is_opened_in_firewalld_to_the_export_networks_only_on_packaged_os():
    """A storage node on EL9/Debian: 2049/tcp opened (where firewalld runs) to exactly the export's clients."""
    from components.render.firewalld import firewalld_script
    from components.specs.storage import plan
    from components.storage import NFS_PORT

    opened = 0
    for stack in ("dev", "prod", *EDGE_STACKS):
        cfg = parse_config(stack_model(stack))
        run, _ = run_storage(stack)
        for ns in plan(cfg):
            if not ns.exports:
                continue
            cmds = [c for c in run.by_type(COMMAND) if c.name == f"{ns.node}-nfs-firewall"]
            if ns.os == "flatcar":
                assert not cmds, stack
                continue
            [cmd] = cmds
            clients = sorted({c for e in ns.exports for c in e.clients})
            create = cmd.inputs["create"]
            assert create == firewalld_script(ns.node, NFS_PORT, clients, without_firewalld="the export itself admits only the K3s networks")
            assert "2049" in create and all(c in create for c in clients)
            assert run.urn_of(VM, ns.node) in _deps(cmd), "it must wait for (and be redone with) its VM"
            opened += 1
    assert opened >= 1, "no stack has a storage node on a packaged OS"
