"""Every rendered artifact, for dev, prod and edge topologies, checked by the program that reads it.

ignition-validate, cloud-init (schema and its own network renderer),
haproxy -c, keepalived -t (in a network namespace with the real interface
name), chronyd -p and xsltproc come from Debian packages installed by .ci/run.
A missing validator is a failure, not a skip: these tests are the point.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import http.server
import importlib
import inspect
import json
import re
import os
import pkgutil
import shutil
import subprocess
import threading
import types
import typing
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml

from components import render as render_pkg
from components import specs
from components.config import StackConfig, parse_config
from components.day2 import install_script
from components.render import keepalived as ka
from components.render import libvirt_xml
from components.render.libvirt_xml import DhcpRangeSpec, render_dhcp_range_xslt
from support.harness import EDGE_STACKS, stack_model
from support.host_key import real_host_key

pytestmark = pytest.mark.validators

KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq1vyS0Qf5zM1I2r3Xq7C8Rk3W1tWgYbq0bSVvP3nHk test@microcloud",)


def _configs() -> dict[str, StackConfig]:
    return {name: parse_config(stack_model(name)) for name in ("dev", "prod", *EDGE_STACKS)}


CONFIGS = _configs()
NAMES = sorted(CONFIGS)


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    assert path, f"{tool} is not installed; run .ci/run (it installs the validators from Debian packages)"
    return path


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


def node_ips(cfg: StackConfig) -> dict[str, str]:
    return {n.name: str(n.ip) for n in cfg.nodes}


# ------------------------------------------------------------------ Ignition


@pytest.mark.parametrize("name", NAMES)
def test_ignition_validates(name, tmp_path):
    tool = need("ignition-validate")
    cfg = CONFIGS[name]
    flatcar = [n for n in cfg.nodes if n.is_flatcar]
    if not flatcar:
        pytest.skip(f"{name} has no Flatcar node")
    for node in flatcar:
        path = tmp_path / f"{node.name}.ign"
        path.write_text(specs.ignition_json(cfg, node, KEYS, real_host_key()))
        res = run([tool, str(path)])
        assert res.returncode == 0, f"{name}/{node.name}: {res.stdout}{res.stderr}"
        assert res.stdout.strip() == "" and res.stderr.strip() == "", "ignition-validate warned"


def test_ignition_validator_rejects_broken(tmp_path):
    """The check can fail: a relative path is what a template slip would produce."""
    cfg = CONFIGS["dev"]
    node = next(n for n in cfg.nodes if n.is_flatcar)
    doc = json.loads(specs.ignition_json(cfg, node, KEYS))
    doc["storage"]["files"][0]["path"] = "etc/hostname"
    path = tmp_path / "broken.ign"
    path.write_text(json.dumps(doc))
    assert run([need("ignition-validate"), str(path)]).returncode != 0


def _ignition_files(text: str) -> dict[str, str]:
    doc = json.loads(text)
    return {
        f["path"]: urllib.parse.unquote(f["contents"]["source"].removeprefix("data:,"))
        for f in doc["storage"]["files"]
    }


def test_ignition_content_prod_master():
    cfg = CONFIGS["prod"]
    master = next(n for n in cfg.nodes if n.name == "master2")
    files = _ignition_files(specs.ignition_json(cfg, master, KEYS))
    net = files["/etc/systemd/network/00-microcloud.network"]
    assert "Address=10.17.4.22/24" in net and "Gateway=10.17.4.1" in net
    # internal resolver first, then the network's router; no public fallback
    assert net.index("DNS=10.17.3.11") < net.index("DNS=10.17.4.1")
    assert "FallbackDNS=\n" in files["/etc/systemd/resolved.conf.d/10-microcloud.conf"]
    # Only its own network: the default route; the host routes between networks.
    assert "[Route]" not in net and "Destination=" not in net
    assert "net.ipv4.ip_nonlocal_bind = 1" in files["/etc/sysctl.d/90-microcloud.conf"]
    assert "NTP=10.17.3.11" in files["/etc/systemd/timesyncd.conf.d/10-microcloud.conf"]
    assert files["/etc/hostname"] == "master2.microcloud.lan\n"
    update = files["/etc/flatcar/update.conf"]
    # locksmithd never reboots by itself: the node's reboot agent does, within the disruption budget.
    assert update == "GROUP=stable\nREBOOT_STRATEGY=off\n"
    doc = json.loads(specs.ignition_json(cfg, master, KEYS))
    assert {"name": "swap.target", "mask": True} in doc["systemd"]["units"]
    assert not any(u["name"].startswith("locksmithd") for u in doc["systemd"]["units"])
    assert doc["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": list(KEYS)}]


def test_flatcar_console_has_no_autologin_unless_asked(tmp_path):
    """The kernel argument goes (kargs stage) and its generator is masked; console.autologin keeps both.

    Both forms pass ignition-validate; the kargs stage itself (the OEM grub.cfg
    rewrite and the reboot) only runs in a booted Flatcar initramfs.
    """
    from components.render import ignition

    model = stack_model("dev")
    model["console"] = {"autologin": True}
    kept = parse_config(model)
    for cfg, autologin in ((CONFIGS["dev"], False), (CONFIGS["prod"], False), (kept, True)):
        assert cfg.console.autologin is autologin
        node = next(n for n in cfg.nodes if n.is_flatcar)
        text = specs.ignition_json(cfg, node, KEYS)
        doc = json.loads(text)
        if autologin:
            assert "kernelArguments" not in doc and "links" not in doc["storage"], doc
        else:
            assert doc["kernelArguments"] == {"shouldNotExist": ["flatcar.autologin"]}
            assert doc["storage"]["links"] == [{"path": ignition.AUTOLOGIN_GENERATOR, "target": "/dev/null",
                                                "hard": False, "overwrite": True}]
            assert "shouldExist" not in doc["kernelArguments"]
        path = tmp_path / f"{autologin}.ign"
        path.write_text(text)
        res = run([need("ignition-validate"), str(path)])
        assert (res.returncode, res.stdout + res.stderr) == (0, ""), res


def test_no_reboot_window_derived_from_a_name():
    """Every Flatcar node gets the same update.conf: no weekday slot from its name (servers with names
    that share a digit or a hash shared a day and could lose etcd quorum); the budget spaces reboots."""
    cfg = CONFIGS["prod"]
    confs = {_ignition_files(specs.ignition_json(cfg, n, KEYS))["/etc/flatcar/update.conf"] for n in cfg.nodes if n.is_flatcar}
    assert confs == {"GROUP=stable\nREBOOT_STRATEGY=off\n"}


# ------------------------------------------------------------------ cloud-init


def _cloud_init_docs(cfg: StackConfig):
    for node in cfg.nodes:
        if not node.is_flatcar:
            # As the program ships them: with the node's own host key.
            yield node, specs.cloud_init_docs(cfg, node, KEYS, instance_id=f"test-{node.name}", host_key=real_host_key())


@pytest.mark.parametrize("name", NAMES)
def test_cloud_init_user_data_schema(name, tmp_path):
    tool = need("cloud-init")
    for node, docs in _cloud_init_docs(CONFIGS[name]):
        path = tmp_path / f"{node.name}.user-data"
        path.write_text(docs["user-data"])
        res = run([tool, "schema", "--config-file", str(path)])
        assert res.returncode == 0 and "Valid cloud-config" in res.stdout, f"{name}/{node.name}: {res.stdout}{res.stderr}"
        assert "DEPRECATED" not in res.stdout + res.stderr, f"{name}/{node.name}: {res.stdout}{res.stderr}"


def test_cloud_init_schema_rejects_broken(tmp_path):
    cfg = CONFIGS["dev"]
    _, docs = next(_cloud_init_docs(cfg))
    doc = yaml.safe_load(docs["user-data"])
    doc["runcmd"] = 5
    path = tmp_path / "broken.user-data"
    path.write_text("#cloud-config\n" + yaml.safe_dump(doc))
    assert run([need("cloud-init"), "schema", "--config-file", str(path)]).returncode != 0


@pytest.mark.parametrize("name", NAMES)
def test_cloud_init_network_config_renders_for_networkmanager(name, tmp_path):
    """cloud-init's own v2 parser and NetworkManager renderer, as on the EL9 guest."""
    tool = need("cloud-init")
    cfg = CONFIGS[name]
    for node, docs in _cloud_init_docs(cfg):
        src = tmp_path / f"{node.name}.network-config"
        src.write_text(docs["network-config"])
        out = tmp_path / node.name
        net = cfg.network_by_name[node.network]
        first_dns = str(cfg.infra_node.ip) if node.role != "infra" else str(node.ip)
        if node.os == "debian12":
            # Debian's cloud-init renders ifupdown (ENI) files with ifupdown installed.
            res = run([tool, "devel", "net-convert", "-p", str(src), "-k", "yaml", "-d", str(out), "-D", "debian", "-O", "eni"])
            assert res.returncode == 0, f"{name}/{node.name}: {res.stderr}"
            eni = next(p for p in out.rglob("*") if p.is_file() and "interfaces" in str(p)).read_text()
            assert f"address {node.ip}/{net.cidr.prefixlen}" in eni, eni
            # ifupdown's own default route; never net-tools' `route` (not installed, and `|| true` hides it).
            assert f"\n    gateway {net.router}\n" in eni, eni
            assert "route add" not in eni, eni
            # ENI's dns-nameservers needs resolvconf; the user-data writes resolv.conf itself
            user = yaml.safe_load(docs["user-data"])
            resolv = next(f["content"] for f in user["write_files"] if f["path"] == "/etc/resolv.conf")
            assert [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")][0] == first_dns
            continue
        distro = "almalinux" if node.os == "alma9" else "rocky"
        res = run([tool, "devel", "net-convert", "-p", str(src), "-k", "yaml", "-d", str(out), "-D", distro, "-O", "network-manager"])
        assert res.returncode == 0, f"{name}/{node.name}: {res.stderr}"
        conn = next(out.rglob("*.nmconnection")).read_text()
        assert f"address1={node.ip}/{net.cidr.prefixlen}" in conn
        assert f"mac-address={cfg.mac_of(node).upper()}" in conn
        dns = conn.split("dns=")[1].split("\n")[0].split(";")
        assert dns[0] == first_dns
        assert f"\ngateway={net.router}\n" in conn, conn


def test_os_family_names_services_per_os():
    """The same roles under each OS's own names: chrony unit and path, admin group, SELinux."""
    cfg = CONFIGS["edge-debian"]
    lb = next(n for n in cfg.load_balancers)
    doc = yaml.safe_load(specs.cloud_init_docs(cfg, lb, KEYS, "x")["user-data"])
    paths = [f["path"] for f in doc["write_files"]]
    assert "/etc/chrony/chrony.conf" in paths and "/etc/chrony.conf" not in paths
    assert ["systemctl", "enable", "--now", "chrony"] in doc["runcmd"]
    assert doc["users"][0]["groups"] == ["sudo"] and doc["users"][0]["name"] == "ops"
    assert not any("setsebool" in " ".join(c) for c in doc["runcmd"])
    rocky = CONFIGS["dev"]
    doc = yaml.safe_load(specs.cloud_init_docs(rocky, rocky.load_balancers[0], KEYS, "x")["user-data"])
    assert ["systemctl", "enable", "--now", "chronyd"] in doc["runcmd"] and doc["users"][0]["groups"] == ["wheel"]
    assert ["setsebool", "-P", "haproxy_connect_any", "1"] in doc["runcmd"]


def test_cloud_init_user_data_content_lb():
    cfg = CONFIGS["prod"]
    lb = next(n for n in cfg.load_balancers)
    doc = yaml.safe_load(specs.cloud_init_docs(cfg, lb, KEYS, "x")["user-data"])
    assert doc["ssh_pwauth"] is False and doc["users"][0]["lock_passwd"] is True
    assert "passwd" not in doc["users"][0] and "hashed_passwd" not in doc["users"][0]
    assert {"haproxy", "keepalived", "chrony"} <= set(doc["packages"])
    # day-1 only: no haproxy/keepalived config in first-boot data
    paths = [f["path"] for f in doc["write_files"]]
    assert not any("haproxy" in p or "keepalived" in p for p in paths)


@pytest.mark.parametrize("name", NAMES)
def test_chrony_configs_parse(name, tmp_path):
    tool = need("chronyd")
    cfg = CONFIGS[name]
    confs = {"server": specs.chrony_server_conf(cfg)}
    for node, docs in _cloud_init_docs(cfg):
        for f in yaml.safe_load(docs["user-data"])["write_files"]:
            if f["path"] in ("/etc/chrony.conf", "/etc/chrony/chrony.conf"):
                confs[node.name] = f["content"]
    assert len(confs) >= 2
    for who, text in confs.items():
        path = tmp_path / f"{who}.conf"
        path.write_text(text)
        res = run([tool, "-p", "-f", str(path)])
        assert res.returncode == 0, f"{name}/{who}: {res.stderr}"
    for net in cfg.networks:
        assert f"allow {net.cidr}" in confs["server"]


def test_chronyd_rejects_broken(tmp_path):
    path = tmp_path / "broken.conf"
    path.write_text(specs.chrony_server_conf(CONFIGS["dev"]).replace("allow ", "alow ", 1))
    assert run([need("chronyd"), "-p", "-f", str(path)]).returncode != 0


# ------------------------------------------------------------------ HAProxy


@pytest.mark.parametrize("name", NAMES)
def test_haproxy_config_valid(name, tmp_path):
    tool = need("haproxy")
    cfg = CONFIGS[name]
    path = tmp_path / "haproxy.cfg"
    path.write_text(specs.haproxy_cfg(cfg, node_ips(cfg)))
    res = run([tool, "-c", "-f", str(path)])
    assert res.returncode == 0, f"{name}: {res.stdout}{res.stderr}"
    text = path.read_text()
    for s in cfg.servers:
        assert f"server {s.name} {s.ip}:{cfg.load_balancer.api_port} check" in text
    for n in cfg.ingress_nodes:
        assert f"server {n.name} {n.ip}:{cfg.load_balancer.ingress_https_nodeport} check" in text
    assert "bind 127.0.0.1:" in text and "bind *:" not in text


def test_haproxy_rejects_broken(tmp_path):
    cfg = CONFIGS["dev"]
    path = tmp_path / "haproxy.cfg"
    path.write_text(specs.haproxy_cfg(cfg, node_ips(cfg)).replace("balance roundrobin", "balance nosuchalgo", 1))
    assert run([need("haproxy"), "-c", "-f", str(path)]).returncode != 0


def test_haproxy_prod_ingress_excludes_storage():
    cfg = CONFIGS["prod"]
    text = specs.haproxy_cfg(cfg, node_ips(cfg))
    assert "storage1" not in text
    assert "inter 3s fall 3 rise 2" in text


# ------------------------------------------------------------------ Keepalived


@pytest.fixture
def netns_with_iface():
    """A network namespace of our own holding a dummy link with the configured interface name."""
    made = []

    def make(ifname: str) -> str:
        ns = f"mc-kt-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        made.append(ns)
        # veth, not dummy: the dummy module may not be loadable in a sandbox.
        subprocess.run(["ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", "peer0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", ifname, "up"], check=True)
        return ns

    yield make
    for ns in made:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.parametrize("name", NAMES)
def test_keepalived_configs_valid(name, tmp_path, netns_with_iface):
    tool = need("keepalived")
    cfg = CONFIGS[name]
    script = tmp_path / "chk_haproxy"
    script.write_text(specs.keepalived_check_script(cfg))
    script.chmod(0o755)
    ns = netns_with_iface(cfg.load_balancer.vrrp.interface)
    confs = specs.keepalived_confs(cfg, "s3cr3t!x", check_script=str(script))
    assert len(confs) == 2
    for lb, text in confs.items():
        path = tmp_path / f"{lb}.conf"
        path.write_text(text)
        res = run(["ip", "netns", "exec", ns, tool, "-t", "-f", str(path)])
        assert res.returncode == 0, f"{name}/{lb}: {res.stdout}{res.stderr}"
    states = sorted(t.split("state ")[1].split()[0] for t in confs.values())
    assert states == (["BACKUP", "MASTER"] if cfg.load_balancer.vrrp.preempt else ["BACKUP", "BACKUP"])


def test_keepalived_rejects_broken(tmp_path, netns_with_iface):
    cfg = CONFIGS["dev"]
    ns = netns_with_iface("eth0")
    script = tmp_path / "chk"
    script.write_text(specs.keepalived_check_script(cfg))
    script.chmod(0o755)
    text = specs.keepalived_confs(cfg, "abc", check_script=str(script))["lb1"]
    path = tmp_path / "broken.conf"
    path.write_text(text.replace("virtual_router_id 51", "virtual_router_id 300", 1))
    assert run(["ip", "netns", "exec", ns, need("keepalived"), "-t", "-f", str(path)]).returncode != 0


def test_keepalived_pair_check_catches_wrong_unicast_peer():
    cfg = CONFIGS["dev"]
    confs = specs.keepalived_confs(cfg, "abc")
    wrong = confs["lb2"].replace("        10.27.0.30\n", "        10.27.0.99\n")
    assert wrong != confs["lb2"]
    with pytest.raises(ValueError, match="unicast peers"):
        ka.check_pair(confs["lb1"], wrong)
    with pytest.raises(ValueError, match="priority"):
        ka.check_pair(confs["lb1"], confs["lb1"].replace("10.27.0.30", "X").replace("10.27.0.31", "10.27.0.30").replace("X", "10.27.0.31"))


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_check_script_follows_haproxy_liveness(tmp_path):
    """The tracked script succeeds only while something answers the monitor URI on loopback."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    script = tmp_path / "chk"
    script.write_text(ka.render_check_script(ka.CheckScriptSpec(stats_port=port)))
    script.chmod(0o755)
    assert run(["bash", "-n", str(script)]).returncode == 0
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        assert run([str(script)]).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    assert run([str(script)]).returncode != 0


# ------------------------------------------------------------------ libvirt network XSLT


def test_dhcp_range_xslt_applies(tmp_path):
    tool = need("xsltproc")
    xsl = tmp_path / "range.xsl"
    xsl.write_text(render_dhcp_range_xslt(DhcpRangeSpec(start="10.27.3.100", end="10.27.3.200")))
    # The shape the provider generates for a NAT network with DHCP enabled.
    src = tmp_path / "net.xml"
    src.write_text(
        "<network><name>x</name><forward mode='nat'/><domain name='dev.microcloud.lan'/>"
        "<ip address='10.27.3.1' netmask='255.255.255.0'><dhcp>"
        "<range start='10.27.3.2' end='10.27.3.254'/></dhcp></ip></network>"
    )
    res = run([tool, str(xsl), str(src)])
    assert res.returncode == 0, res.stderr
    assert "start=\"10.27.3.100\"" in res.stdout and "end=\"10.27.3.200\"" in res.stdout
    assert "10.27.3.254" not in res.stdout and "forward mode=\"nat\"" in res.stdout


# ------------------------------------------------------------------ libvirt domain XSLT: the display


def _domain_xml(graphics: str) -> str:
    """What terraform-provider-libvirt 0.8 defines for a VM: without a graphics block it writes a SPICE display."""
    return (
        '<domain type="kvm"><name>microcloud-dev-lb1</name><memory unit="KiB">1048576</memory><vcpu>1</vcpu>'
        '<os><type arch="x86_64" machine="pc">hvm</type></os><devices>'
        '<disk type="volume" device="disk"><driver name="qemu" type="qcow2"></driver>'
        '<source pool="microcloud-dev" volume="microcloud-dev-lb1-root.qcow2"></source>'
        '<target dev="vda" bus="virtio"></target></disk>'
        '<console type="pty"><target type="serial" port="0"></target></console>'
        f"{graphics}</devices></domain>"
    )


SPICE = '<graphics type="spice" autoport="yes"></graphics>'
VNC = '<graphics type="vnc" autoport="yes"><listen type="address" address="127.0.0.1"></listen></graphics>'


def _transform(tmp_path: Path, xslt: str, xml: str):
    import xml.etree.ElementTree as ET

    xsl, dom = tmp_path / "domain.xsl", tmp_path / "domain.xml"
    xsl.write_text(xslt)
    dom.write_text(xml)
    res = run([need("xsltproc"), str(xsl), str(dom)])
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out.xml"
    out.write_text(res.stdout)
    # libvirt's own schema check of what would be defined.
    v = run([need("virt-xml-validate"), str(out), "domain"])
    assert v.returncode == 0, v.stdout + v.stderr
    return ET.fromstring(res.stdout)


@pytest.mark.parametrize("provider", [SPICE, VNC, SPICE + VNC], ids=["spice", "vnc", "both"])
def test_domain_without_vnc_has_no_display(tmp_path, provider):
    """The default: no graphics element survives (the provider's own SPICE one included); the serial console stays."""
    root = _transform(tmp_path, libvirt_xml.render_domain_xslt(libvirt_xml.DomainXslt()), _domain_xml(provider))
    assert root.findall("devices/graphics") == []
    assert [c.find("target").get("type") for c in root.findall("devices/console")] == ["serial"]
    assert root.find("devices/disk/source").get("volume") == "microcloud-dev-lb1-root.qcow2"


@pytest.mark.parametrize("provider", [VNC, SPICE, VNC + SPICE], ids=["vnc", "spice", "both"])
def test_domain_with_vnc_has_one_loopback_display_with_its_password(tmp_path, provider):
    password = "Ab3dE6gH"
    root = _transform(tmp_path, libvirt_xml.render_domain_xslt(libvirt_xml.DomainXslt(vnc_password=password)),
                      _domain_xml(provider))
    (g,) = root.findall("devices/graphics")
    assert dict(g.attrib) == {"type": "vnc", "autoport": "yes", "listen": "127.0.0.1", "passwd": password}, g.attrib
    assert [dict(l.attrib) for l in g.findall("listen")] == [{"type": "address", "address": "127.0.0.1"}]


@pytest.mark.parametrize("password", ["Ab3dE6gH9", "Ab3dE6g", "Ab3dE6g&", 'Ab3d"6gH', "Ab3d{6gH", ""])
def test_vnc_password_is_eight_letters_and_digits(password):
    """libvirt refuses more than 8 characters; the rest could break out of an XSLT attribute. The error names no password."""
    with pytest.raises(ValueError) as err:
        libvirt_xml.render_domain_xslt(libvirt_xml.DomainXslt(vnc_password=password))
    assert "8" in str(err.value) and (not password or password not in str(err.value))


# ------------------------------------------------------------------ day-2 install script


def _run_install(tmp_path: Path, content: str, target: Path, **kw) -> subprocess.CompletedProcess:
    args = dict(
        node="lb1",
        path=str(target),
        mode="0644",
        validate=f"{need('haproxy')} -c -q -f {{file}}",
        activate=f"touch {tmp_path}/activated",
        verify_timeout=3,
    )
    script = install_script(**{**args, **kw})
    return subprocess.run(["sh", "-c", script], input=content, capture_output=True, text=True, timeout=120)


def test_day2_install_validates_before_activating(tmp_path):
    need("sudo")
    cfg = CONFIGS["dev"]
    good = specs.haproxy_cfg(cfg, node_ips(cfg))
    target = tmp_path / "etc" / "haproxy.cfg"
    res = _run_install(tmp_path, good, target)
    assert res.returncode == 0, res.stderr
    assert target.read_text() == good and (tmp_path / "activated").exists()
    (tmp_path / "activated").unlink()
    res = _run_install(tmp_path, good.replace("balance roundrobin", "balance bogus"), target)
    assert res.returncode != 0
    assert f"microcloud: lb1: {target}: rejected by its validator; nothing installed" in res.stderr
    # the running config is untouched and nothing was reloaded
    assert target.read_text() == good and not (tmp_path / "activated").exists()


def test_day2_activation_that_does_not_take_restores_the_previous_file(tmp_path):
    """A file that validates but that the service does not run: exit 1 naming node and file, old file back, re-activated."""
    need("sudo")
    cfg = CONFIGS["dev"]
    old = specs.haproxy_cfg(cfg, node_ips(cfg))
    new = old.replace("maxconn", "maxconn 1 #", 1)
    target = tmp_path / "etc" / "haproxy.cfg"
    assert _run_install(tmp_path, old, target).returncode == 0
    log = tmp_path / "activations"
    # "activation" records which file it saw; "verify" accepts only the old one,
    # as new_worker would after a reload that kept the old workers.
    res = _run_install(
        tmp_path,
        new,
        target,
        activate=f"sha256sum {target} >> {log}",
        verify=f"grep -q 'maxconn 1 #' {target} && false",
    )
    assert res.returncode == 1
    assert f"microcloud: lb1: {target}: validated but could not be activated" in res.stderr
    assert target.read_text() == old
    seen = log.read_text().splitlines()
    assert len(seen) == 2 and seen[0] != seen[1], "activated the new file, then the restored old one"
    # a file that did not exist before is removed again
    fresh = tmp_path / "etc" / "fresh.cfg"
    res = _run_install(tmp_path, old, fresh, activate="true", verify="false")
    assert res.returncode == 1 and not fresh.exists()


def test_day2_started_at_keeps_hundredths_at_any_uptime():
    """Process start times keep /proc/uptime's precision: awk's default %.6g rounded them to
    0.1 s after 10^4 s of uptime and to whole seconds after a day (a restart looked older)."""
    from components.day2 import _HELPERS

    script = _HELPERS + 'sh -c \'sleep 5\' & pid=$!; a=$(started_at "$pid"); kill "$pid"; echo "$a"; started_at 1; uptime_now'
    res = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    child, init, now = res.stdout.split()
    for value in (child, init):
        assert re.fullmatch(r"\d+\.\d\d", value), value
    assert float(init) <= float(child) <= float(now)


def test_day2_verify_helpers_see_a_restart(tmp_path):
    """started_at/after compare process start with the install time, as `restarted` and `new_worker` do."""
    need("sudo")
    target = tmp_path / "x.conf"
    # a process started after the install passes; the shell's parent (older) does not
    res = _run_install(
        tmp_path, "x", target, validate=None, activate="sleep 30 & echo $! > " + str(tmp_path / "pid"),
        verify=f'after "$(started_at "$(cat {tmp_path}/pid)")" "$since"',
    )
    assert res.returncode == 0, res.stderr
    subprocess.run(["kill", (tmp_path / "pid").read_text().strip()], check=False)
    res = _run_install(tmp_path, "y", target, validate=None, activate="true", verify='after "$(started_at 1)" "$since"')
    assert res.returncode == 1


def test_day2_waits_for_cloud_init_and_names_the_node_when_it_failed(tmp_path):
    """Where cloud-init ran at boot, the script waits for it; status 1 (error) stops it before anything is installed."""
    need("unshare")
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    for rc, name in ((1, "error"), (2, "warnings"), (0, "done")):
        (fake / "cloud-init").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit {rc}\n")
        (fake / "cloud-init").chmod(0o755)
        target = tmp_path / f"{name}.conf"
        script = install_script(node="infra", path=str(target), mode="0644", validate=None, activate="true")
        # In a private mount namespace: a /run with the generator's marker, and
        # the fake over the real cloud-init (sudo's secure_path finds that one).
        wrapped = (
            "mount -t tmpfs tmpfs /run && mkdir -p /run/cloud-init /run/sudo && touch /run/cloud-init/enabled && "
            f"mount --bind {fake}/cloud-init {need('cloud-init')} && {script}"
        )
        res = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapped],
            input="content\n", capture_output=True, text=True, timeout=60,
        )
        if rc == 1:
            assert res.returncode == 1 and not target.exists()
            assert "microcloud: infra: first boot failed: cloud-init reported an error" in res.stderr
        else:
            assert res.returncode == 0, res.stderr
            assert target.read_text() == "content\n"
    assert calls.read_text().splitlines() == ["status --wait"] * 3


# ------------------------------------------------------------------ renderer inputs


# Not a config renderer: it packs documents the others rendered into an ISO image.
PACKAGERS = {"components.render.nocloud.render_seed_iso"}


def _renderers():
    for info in pkgutil.iter_modules(render_pkg.__path__, prefix=f"{render_pkg.__name__}."):
        module = importlib.import_module(info.name)
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("render_") and fn.__module__ == module.__name__:
                yield f"{module.__name__}.{name}", fn


def _is_sequence(hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(h) for h in typing.get_args(hint))
    return (origin or hint) in (list, set, frozenset, collections.abc.Sequence, collections.abc.Set)


def test_every_renderer_takes_one_frozen_spec():
    """One input style: ``render_x(spec)`` with a frozen dataclass whose sequences are tuples."""
    found = dict(_renderers())
    assert {"components.render.haproxy.render_haproxy", "components.render.coredns.render_unit"} <= found.keys()
    for qualname, fn in sorted(found.items()):
        if qualname in PACKAGERS:
            continue
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        assert len(params) == 1 and params[0].kind is params[0].POSITIONAL_OR_KEYWORD, f"{qualname}{sig}"
        spec = typing.get_type_hints(fn)[params[0].name]
        assert dataclasses.is_dataclass(spec), f"{qualname}: {spec} is not a dataclass"
        assert spec.__dataclass_params__.frozen, f"{qualname}: {spec.__name__} is not frozen"
        for f, hint in typing.get_type_hints(spec).items():
            assert not _is_sequence(hint), f"{spec.__name__}.{f}: {hint} (use a tuple)"
