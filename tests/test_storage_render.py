"""Storage renderers and the plan, checked by the programs that read what they write.

``unit``: names, labels, serials, which disk serves what, for dev, prod and
the edge stacks. ``validators``: ``shellcheck`` and ``sh -n`` on the disk
script; ``systemd-analyze verify`` on every mount unit, also through the very
validator the node runs; ``systemd-escape`` against our escaping; the real
``exportfs`` parser on /etc/exports inside a private mount namespace (the
host's /etc/exports and /var/lib/nfs stay as they are, checked), and the
verify command against ``exportfs -v``; ``xsltproc`` and
``virt-xml-validate`` on the domain XML with disk serials.

Not run here: an NFS server (this kernel has no nfsd), a mount unit started
by systemd (no systemd as PID 1), udev naming a disk by serial or label.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.specs import storage as storage_specs
from components.config import parse_config
from components.render import libvirt_xml, nfs
from components.render import storage as st
from support.harness import EDGE_STACKS, stack_model

unit = pytest.mark.unit
validators = pytest.mark.validators

NAMES = ("dev", "prod", *EDGE_STACKS)
CONFIGS = {n: parse_config(stack_model(n)) for n in NAMES}


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed; run .ci/run (it installs the validators from Debian packages)"
    return path


def all_plans():
    return [(name, ns) for name, cfg in CONFIGS.items() for ns in storage_specs.plan(cfg)]


# ------------------------------------------------------------------ names


@unit
def test_serials_and_labels_fit_and_stay_stable():
    assert st.disk_serial("data") == "data" and st.device_path("data") == "/dev/disk/by-id/virtio-data"
    assert st.fs_label("longhorn") == "mc-longhorn"
    long = "a-very-long-disk-name-for-postgres-data"
    s, l = st.disk_serial(long), st.fs_label(long)
    assert len(s) <= 20 and len(l) <= 16 and s.startswith("a-very-long") and l.startswith("mc-a-very")
    assert st.disk_serial(long) == s and st.fs_label(long) == l
    # two long names sharing a prefix stay apart
    assert st.disk_serial(long + "x") != s and st.fs_label(long + "x") != l
    with pytest.raises(ValueError):
        st.disk_serial("Bad_Name")


@unit
def test_every_node_with_disks_gets_one_spec_per_disk():
    for name, cfg in CONFIGS.items():
        planned = {ns.node: ns for ns in storage_specs.plan(cfg)}
        assert set(planned) == {n.name for n in cfg.nodes if n.data_disks}, name
        for node in cfg.nodes:
            if not node.data_disks:
                continue
            ns = planned[node.name]
            assert [d.disk for d in ns.disks] == [d.name for d in node.data_disks]
            assert [m.where for m in ns.mounts] == [f"/var/mnt/{d.name}" for d in node.data_disks]
            for d, m in zip(ns.disks, ns.mounts):
                # by label, never by kernel name
                assert m.what == f"/dev/disk/by-label/{d.label}" and "/dev/vd" not in m.what
                assert d.device == f"/dev/disk/by-id/virtio-{st.disk_serial(d.disk)}"
                assert "nofail" in m.options
            assert (ns.longhorn is not None) == node.uses_longhorn, node.name
            assert bool(ns.exports) == (node.role == "storage"), node.name


@unit
def test_dev_storage_node_shares_its_one_disk_between_nfs_and_longhorn():
    (s1,) = [ns for ns in storage_specs.plan(CONFIGS["dev"]) if ns.node == "storage1"]
    assert s1.subdirs == {"data": ("nfs", "longhorn")}
    assert s1.exports[0].path == "/var/mnt/data/nfs"
    assert s1.longhorn.what == "/var/mnt/data/longhorn" and s1.longhorn.where == "/var/lib/longhorn"
    assert s1.mounts[0].before == ("nfs-server.service",)
    assert set(s1.longhorn.before) == {"k3s.service", "k3s-agent.service"}
    (w1,) = [ns for ns in storage_specs.plan(CONFIGS["dev"]) if ns.node == "worker1"]
    assert w1.subdirs == {"longhorn": ("longhorn",)} and not w1.exports


@unit
def test_named_disks_pick_their_service():
    model = stack_model("dev")
    for n in model["nodes"]:
        if n["name"] == "storage1":
            n["data_disks"] = [{"name": "scratch", "size_gib": 5}, {"name": "longhorn", "size_gib": 10}, {"name": "nfs", "size_gib": 10}]
    (s1,) = [ns for ns in storage_specs.plan(parse_config(model)) if ns.node == "storage1"]
    assert s1.subdirs == {"nfs": ("nfs",), "longhorn": ("longhorn",)}
    assert s1.exports[0].path == "/var/mnt/nfs/nfs"
    assert [m.where for m in s1.mounts] == ["/var/mnt/scratch", "/var/mnt/longhorn", "/var/mnt/nfs"]


@unit
def test_exports_only_to_the_k3s_networks_with_root_squash():
    for name, cfg in CONFIGS.items():
        k3s_nets = {str(cfg.network_by_name[n.network].cidr) for n in cfg.nodes if n.role in ("server", "agent", "storage")}
        for ns in storage_specs.plan(cfg):
            text = nfs.render_exports(nfs.ExportsFile(ns.node, tuple(ns.exports)))
            assert "no_root_squash" not in text and "*" not in text and "insecure" not in text
            for e in ns.exports:
                if e.path.endswith("/postgresql"):
                    # The database node's own directory: to its address alone.
                    assert e.clients == (f"{cfg.database_node.ip}/32",), name
                    continue
                assert set(e.clients) == k3s_nets, name
                line = next(l for l in text.splitlines() if l.startswith(e.path + " "))
                for c in e.clients:
                    assert f"{c}(rw,sync,no_subtree_check,root_squash)" in line


@unit
@pytest.mark.parametrize(
    "change",
    [
        {"options": ("rw", "sync", "no_subtree_check", "no_root_squash")},
        {"options": ("rw", "sync", "no_subtree_check")},
        {"clients": ("*",)},
        {"clients": ("10.27.4.7/24",)},
        {"clients": ()},
        {"path": "/"},
    ],
)
def test_exports_refuse_open_or_rootful_entries(change):
    good = nfs.ExportSpec(path="/var/mnt/data/nfs", clients=("10.27.4.0/24",))
    with pytest.raises(ValueError):
        dataclasses.replace(good, **change)


@unit
def test_mount_specs_refuse_what_would_hurt():
    with pytest.raises(ValueError):
        st.MountSpec(what="/dev/disk/by-label/x", where="/var/mnt/x", fstype="ext4", description="x", options=("defaults",))
    with pytest.raises(ValueError):
        st.MountSpec(what="/dev/disk/by-label/x", where="/var", fstype="ext4", description="x")


# ------------------------------------------------------------------ the disk script


@validators
def test_prepare_script_passes_shellcheck_and_dash():
    shellcheck, dash = need("shellcheck"), need("sh")
    for disk in ("data", "a-very-long-disk-name-for-postgres-data"):
        text = st.render_prepare_script(st.disk_spec("storage1", disk))
        res = subprocess.run([shellcheck, "-s", "sh", "-"], input=text, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout
        res = subprocess.run([dash, "-n"], input=text, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    # and shellcheck does look: a broken variant fails
    res = subprocess.run([shellcheck, "-s", "sh", "-"], input=text.replace('"$real"', "$real"), capture_output=True, text=True, timeout=60)
    assert res.returncode != 0


@unit
def test_prepare_script_never_forces_and_quotes_its_values():
    text = st.render_prepare_script(st.disk_spec("storage1", "data"))
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    assert " -F" not in code and "--force" not in code and "wipefs -a" not in code and " of=" not in code
    (mkfs,) = [l for l in code.splitlines() if "mkfs.$fstype -q" in l]
    assert mkfs.strip().startswith('mkfs.$fstype -q -L "$label" -m 0 "$real" </dev/null')
    assert "dev=/dev/disk/by-id/virtio-data\n" in text and "label=mc-data\n" in text


# ------------------------------------------------------------------ mount units


@validators
def test_systemd_escape_matches_systemd():
    tool = need("systemd-escape")
    for path in ("/var/lib/longhorn", "/var/mnt/data", "/var/mnt/a-b", "/srv//nfs/", "/.dot/x.y", "/a b/é", "/"):
        real = subprocess.run([tool, "-p", "--suffix=mount", path], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        assert st.mount_unit_name(path) == real, path


def _units():
    for name, ns in all_plans():
        for m in (*ns.mounts, *([ns.longhorn] if ns.longhorn else [])):
            yield name, ns, m


@validators
def test_every_mount_unit_verifies(tmp_path):
    tool = need("systemd-analyze")
    seen = 0
    for name, ns, m in _units():
        d = tmp_path / f"{name}-{ns.node}"
        d.mkdir(exist_ok=True)
        unit = d / m.unit_name
        unit.write_text(st.render_mount_unit(m))
        res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and res.stderr.strip() == "", (name, ns.node, m.unit_name, res.stderr)
        seen += 1
    assert seen >= 4


@validators
def test_the_nodes_unit_validator_accepts_ours_and_refuses_a_misnamed_unit(tmp_path):
    need("systemd-analyze")
    spec = st.data_disk_mount("storage1", "data", before=("nfs-server.service",))
    f = tmp_path / "new"
    f.write_text(st.render_mount_unit(spec))
    check = st.unit_validator(spec.unit_name).format(file=str(f))
    res = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # Where= that does not match the unit name: systemd refuses to load it.
    f.write_text(st.render_mount_unit(dataclasses.replace(spec, where="/var/mnt/other")))
    res = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "doesn't match unit name" in res.stderr
    # An unknown key is only a warning for systemd (exit 0), but it names the unit: refused.
    f.write_text(st.render_mount_unit(spec).replace("Type=ext4", "Typo=ext4"))
    res = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "Unknown key" in res.stderr


# ------------------------------------------------------------------ exports, by the real exportfs


def _host_state() -> dict[str, tuple]:
    out = {}
    for p in (Path("/etc/exports"), Path("/var/lib/nfs/etab"), Path("/var/lib/nfs/rmtab")):
        s = p.stat()
        out[str(p)] = (s.st_mtime_ns, s.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def exportfs_ns():
    """The host's files must already exist (the package made them): the check only reads and covers them."""
    need("exportfs")
    need("unshare")
    if os.geteuid() != 0:
        pytest.skip("exportfs in a private mount namespace needs root")
    for p in ("/etc/exports", "/var/lib/nfs/etab"):
        assert os.path.exists(p), f"{p} missing: install nfs-kernel-server (.ci/install.sh)"
    assert not os.path.exists("/etc/exports.d/microcloud-test"), "leftover"
    before = _host_state()
    yield
    assert _host_state() == before, "the host's exports or NFS state changed"


def _validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    f = tmp_path / "exports.new"
    f.write_text(text)
    check = nfs.exports_validate_command("{file}").format(file=f'"{f}"')
    return subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=60)


def _with_exports(tmp_path: Path, text: str, then: str) -> subprocess.CompletedProcess:
    """Install ``text`` as /etc/exports in a private namespace, ``exportfs -ra``, then run ``then``."""
    f = tmp_path / "exports.live"
    f.write_text(text)
    inner = (
        f"set -e; mount --bind {f} /etc/exports; mount -t tmpfs tmpfs /var/lib/nfs; exportfs -ra; {then}"
    )
    return subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True, timeout=60)


def _local(spec: nfs.ExportSpec, tmp_path: Path) -> nfs.ExportSpec:
    d = tmp_path / "export" / spec.path.strip("/").replace("/", "-")
    d.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(spec, path=str(d))


@validators
def test_rendered_exports_pass_exportfs_and_show_up_in_exportfs_v(tmp_path, exportfs_ns):
    checked = 0
    for name, ns in all_plans():
        if not ns.exports:
            continue
        # Our paths, moved under tmp_path: exportfs stats each one.
        local = tuple(_local(e, tmp_path) for e in ns.exports)
        text = nfs.render_exports(nfs.ExportsFile(ns.node, tuple(local)))
        res = _validate(tmp_path, text)
        assert res.returncode == 0 and res.stderr.strip() == "", (name, res.stderr)
        res = _with_exports(tmp_path, text, nfs.exports_verify_command(local) + " && exportfs -v")
        assert res.returncode == 0, (name, res.stdout, res.stderr)
        assert "root_squash" in res.stdout and "no_root_squash" not in res.stdout
        checked += 1
    assert checked >= 2


@validators
def test_exportfs_refuses_a_bad_file_and_verify_refuses_the_wrong_export(tmp_path, exportfs_ns):
    spec = _local(nfs.ExportSpec(path="/var/mnt/data/nfs", clients=("10.27.4.0/24",)), tmp_path)
    good = nfs.render_exports(nfs.ExportsFile("storage1", (spec,)))
    # a typo in an option
    res = _validate(tmp_path, good.replace("no_subtree_check", "no_subtree_chek"))
    assert res.returncode != 0 and "no_subtree_chek" in res.stderr
    # the export directory is not there (the disk is not mounted)
    missing = dataclasses.replace(spec, path=str(tmp_path / "not-mounted" / "nfs"))
    res = _validate(tmp_path, nfs.render_exports(nfs.ExportsFile("storage1", (missing,))))
    assert res.returncode != 0 and "not-mounted" in res.stderr
    verify = nfs.exports_verify_command((spec,))
    # exported, but without root squash: verify fails
    res = _with_exports(tmp_path, good.replace("root_squash", "no_root_squash"), verify)
    assert res.returncode != 0
    # exported to another network: verify fails
    res = _with_exports(tmp_path, good.replace("10.27.4.0/24", "10.99.0.0/16"), verify)
    assert res.returncode != 0
    # nothing exported: verify fails
    res = _with_exports(tmp_path, "# empty\n", verify)
    assert res.returncode != 0
    # and the right one passes
    res = _with_exports(tmp_path, good, verify)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------ domain XML: disk serials

# What terraform-provider-libvirt 0.8 defines for a VM with a root and a data volume.
DOMAIN_XML = """<domain type="kvm">
  <name>microcloud-dev-storage1</name>
  <memory unit="KiB">2097152</memory>
  <vcpu>1</vcpu>
  <os><type arch="x86_64" machine="pc">hvm</type></os>
  <devices>
    <disk type="volume" device="disk">
      <driver name="qemu" type="qcow2"></driver>
      <source pool="microcloud-dev" volume="microcloud-dev-storage1-root.qcow2"></source>
      <target dev="vda" bus="virtio"></target>
    </disk>
    <disk type="volume" device="disk">
      <driver name="qemu" type="qcow2"></driver>
      <source pool="microcloud-dev" volume="microcloud-dev-storage1-data.qcow2"></source>
      <target dev="vdb" bus="virtio"></target>
      <serial>stale</serial>
    </disk>
    <disk type="volume" device="disk">
      <driver name="qemu" type="qcow2"></driver>
      <source pool="microcloud-dev" volume="microcloud-dev-storage1-a-very-long-disk-name.qcow2"></source>
      <target dev="vdc" bus="virtio"></target>
    </disk>
  </devices>
</domain>
"""


@validators
def test_disk_serial_xslt_marks_only_the_data_disks(tmp_path):
    xsltproc = need("xsltproc")
    disks = [("microcloud-dev-storage1-data.qcow2", st.disk_serial("data")),
             ("microcloud-dev-storage1-a-very-long-disk-name.qcow2", st.disk_serial("a-very-long-disk-name"))]
    xsl = tmp_path / "serial.xsl"
    xsl.write_text(libvirt_xml.render_domain_xslt(libvirt_xml.DomainXslt(disks=tuple(disks))))
    dom = tmp_path / "domain.xml"
    dom.write_text(DOMAIN_XML)
    res = subprocess.run([xsltproc, str(xsl), str(dom)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    import xml.etree.ElementTree as ET

    root = ET.fromstring(res.stdout)
    serials = {d.find("target").get("dev"): [s.text for s in d.findall("serial")] for d in root.iter("disk")}
    assert serials == {"vda": [], "vdb": ["data"], "vdc": [st.disk_serial("a-very-long-disk-name")]}, serials
    validate = shutil.which("virt-xml-validate")
    # libvirt's own schema check, where libvirt-clients and xmllint are installed (the e2e tier).
    if validate and shutil.which("xmllint"):
        out = tmp_path / "out.xml"
        out.write_text(res.stdout)
        v = subprocess.run([validate, str(out), "domain"], capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
    with pytest.raises(ValueError):
        libvirt_xml.render_domain_xslt(libvirt_xml.DomainXslt(disks=(("a.qcow2", "x"), ("b.qcow2", "x"))))
    # No data disks: every disk stays as the provider wrote it.
    xsl.write_text(libvirt_xml.render_domain_xslt(libvirt_xml.DomainXslt()))
    res = subprocess.run([xsltproc, str(xsl), str(dom)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    serials = {d.find("target").get("dev"): [s.text for s in d.findall("serial")] for d in ET.fromstring(res.stdout).iter("disk")}
    assert serials == {"vda": [], "vdb": ["stale"], "vdc": []}, serials


# ------------------------------------------------------------------ the commands as the nodes run them


@validators
def test_every_remote_command_parses_and_passes_shellcheck():
    """validate/activate/verify are shell snippets spliced into day2.install_script: the whole must hold together."""
    import shlex

    from components.day2 import install_script

    shellcheck, dash = need("shellcheck"), need("sh")
    seen, done = set(), set()
    for name, ns in all_plans():
        for s in storage_specs.steps(ns):
            # Nodes of one stack differ only in names here: one of each kind and OS is enough.
            if (name, s.res, ns.os) in done:
                continue
            done.add((name, s.res, ns.os))
            cmd = install_script(node=ns.node, path=s.path, mode=s.mode, validate=s.validate, activate=s.activate, verify=s.verify)
            argv = shlex.split(cmd)
            assert argv[:3] == ["sudo", "sh", "-c"] and len(argv) == 4
            payload = argv[3]
            res = subprocess.run([dash, "-n"], input=payload, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, (name, ns.node, s.res, res.stderr)
            # SC2317: the day-2 helpers are called indirectly; SC2016: awk programs are single-quoted on purpose.
            res = subprocess.run([shellcheck, "-s", "sh", "-S", "info", "-e", "SC2317,SC2016", "-"], input=payload, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, (name, ns.node, s.res, res.stdout)
            seen.add(s.res.split("-")[0])
    assert {"disk", "mount", "longhorn", "iscsi", "exports"} <= seen
