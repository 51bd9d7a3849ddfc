"""Node: one VM - root volume cloned from its OS base image, data disks, first-boot config, domain (and its VNC password)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_libvirt as libvirt
import pulumi_random as random
import pulumi_tls as tls

from . import specs
from .config import NodeConfig, StackConfig
from .render import nocloud
from .render import libvirt_xml
from .render import storage as storage_render
from .render.host_key import HostKey

GIB = 1024**3


@dataclass(frozen=True)
class NodeArgs:
    prefix: str
    stack: StackConfig
    node: NodeConfig
    ssh_public_keys: pulumi.Input[Sequence[str]]
    network_id: pulumi.Input[str]
    pool_name: pulumi.Input[str]
    base_volume_id: pulumi.Input[str]
    provider: pulumi.ProviderResource
    # Where the NoCloud seed images of cloud-init nodes are written before
    # their upload (on the machine that runs Pulumi).
    seed_dir: str = ""


class Node(pulumi.ComponentResource):
    name: str
    fqdn: str
    domain_id: pulumi.Output[str]
    # The static address, as an output of the domain: whoever uses it waits for the VM.
    ip: pulumi.Output[str]
    # The node's SSH host key (OpenSSH public form): every connection to it pins this.
    host_key: pulumi.Output[str]
    # The password of its VNC display (secret); None when it has none (the default).
    vnc_password: Optional[pulumi.Output[str]]

    def __init__(self, name: str, args: NodeArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:compute:Node", name, None, opts)
        node, cfg = args.node, args.stack
        self.name = node.name
        self.fqdn = cfg.fqdn(node.name)
        self._args = args
        self._physical = f"{args.prefix}-{node.name}"
        self._host_key = tls.PrivateKey(
            f"{node.name}-ssh-host-key",
            algorithm="ED25519",
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["private_key_openssh", "private_key_pem"]),
        )
        self.host_key = self._host_key.public_key_openssh.apply(lambda k: k.strip())
        self.vnc_password = self._create_vnc_password() if cfg.vnc_of(node) else None
        disks = [self._create_root_volume(), *self._create_data_disks()]
        domain = self._create_domain(disks, self._create_first_boot_config())
        self.domain_id = domain.id
        self.ip = domain.id.apply(lambda _: str(node.ip))
        self.register_outputs(
            {"domain_id": self.domain_id, "ip": self.ip, "host_key": self.host_key,
             **({"vnc_password": self.vnc_password} if self.vnc_password is not None else {})}
        )

    def _opts(self, **kw) -> pulumi.ResourceOptions:
        # Physical names are fixed, so a replacement must free the name first.
        return pulumi.ResourceOptions(parent=self, provider=self._args.provider, delete_before_replace=True, **kw)

    def _create_vnc_password(self) -> pulumi.Output[str]:
        # VNC authentication reads 8 characters and libvirt refuses more:
        # 62^8 (about 2^47) guesses, and only from the host's loopback.
        password = random.RandomPassword(
            f"{self._args.node.name}-vnc-password",
            length=8,
            special=False,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]),
        )
        return pulumi.Output.secret(password.result)

    def _create_root_volume(self) -> libvirt.Volume:
        a = self._args
        return libvirt.Volume(
            f"{a.node.name}-root",
            name=f"{self._physical}-root.qcow2",
            pool=a.pool_name,
            base_volume_id=a.base_volume_id,
            size=a.node.disk_gib * GIB,
            format="qcow2",
            opts=self._opts(),
        )

    def _create_data_disks(self) -> list[libvirt.Volume]:
        a = self._args
        return [
            libvirt.Volume(
                f"{a.node.name}-{d.name}",
                name=f"{self._physical}-{d.name}.qcow2",
                pool=a.pool_name,
                size=d.size_gib * GIB,
                format="qcow2",
                # Data outlives a mistaken `pulumi destroy` in prod.
                opts=self._opts(protect=a.stack.protect_data),
            )
            for d in a.node.data_disks
        ]

    def _create_first_boot_config(self) -> libvirt.Ignition | libvirt.Volume:
        """Ignition for Flatcar; a NoCloud seed volume (see render/nocloud.py) for cloud-init nodes."""
        a, node, cfg = self._args, self._args.node, self._args.stack
        # The host key's private half makes the whole first-boot config secret.
        host_key = pulumi.Output.secret(pulumi.Output.all(self._host_key.private_key_openssh, self.host_key)).apply(
            lambda k: HostKey(private_openssh=k[0], public_openssh=k[1])
        )
        if node.is_flatcar:
            content = pulumi.Output.all(a.ssh_public_keys, host_key).apply(
                lambda v: specs.ignition_json(cfg, node, v[0], v[1])
            )
            return libvirt.Ignition(
                f"{node.name}-ignition", name=f"{self._physical}.ign", pool=a.pool_name, content=content, opts=self._opts()
            )
        if not a.seed_dir:
            raise ValueError(f"node {node.name}: NodeArgs.seed_dir is required for a cloud-init node")
        # The path only names the documents' digest: it can sit in state in clear (the ISO is 0600).
        seed_path = pulumi.Output.unsecret(pulumi.Output.all(a.ssh_public_keys, host_key).apply(
            lambda v: nocloud.write_seed_iso(
                specs.cloud_init_docs(cfg, node, v[0], instance_id=self._physical, host_key=v[1]), a.seed_dir, self._physical
            )
        ))
        return libvirt.Volume(
            f"{node.name}-seed",
            name=f"{self._physical}-seed.iso",
            pool=a.pool_name,
            source=seed_path,
            # No format: libvirt probes it ("iso") and the provider reads that
            # back; a given "raw" would differ and replace the VM on every plan.
            opts=self._opts(),
        )

    def _create_domain(self, disks: list[libvirt.Volume], boot) -> libvirt.Domain:
        a, node, cfg = self._args, self._args.node, self._args.stack
        if node.is_flatcar:
            first_boot = {"coreos_ignition": boot.id}
        else:
            # Last, so the root volume stays the boot disk. A new seed is a
            # new disk, and the provider replaces a domain whose disks change:
            # cloud-init does not re-run in the guest, so that is what we want.
            disks = [*disks, boot]
            first_boot = {}
        xslt, display, secret = self._domain_xml()
        return libvirt.Domain(
            node.name,
            name=self._physical,
            type=cfg.virt_type,
            memory=node.memory_mib,
            vcpu=node.vcpu,
            autostart=True,
            disks=[libvirt.DomainDiskArgs(volume_id=d.id) for d in disks],
            network_interfaces=[
                # network_id, not network_name: the provider re-adds network_id
                # on every plan when only the name is given (perma-diff).
                libvirt.DomainNetworkInterfaceArgs(network_id=a.network_id, mac=cfg.mac_of(node), wait_for_lease=False)
            ],
            consoles=[libvirt.DomainConsoleArgs(type="pty", target_port="0", target_type="serial")],
            **display,
            **first_boot,
            xml=libvirt.DomainXmlArgs(xslt=xslt),
            opts=self._opts(additional_secret_outputs=secret),
        )

    def _domain_xml(self) -> tuple[pulumi.Input[str], dict, list[str]]:
        """The domain's stylesheet, its ``graphics`` argument (if any), and the outputs to keep secret."""
        node = self._args.node
        # Data disks get a serial (the provider writes none), so the guest finds
        # each one as /dev/disk/by-id/virtio-<serial>, whatever its bus order.
        serials = tuple((f"{self._physical}-{d.name}.qcow2", storage_render.disk_serial(d.name)) for d in node.data_disks)
        if self.vnc_password is None:
            # No display at all: the stylesheet drops the SPICE one the provider writes without a graphics block.
            return libvirt_xml.render_domain_xslt(libvirt_xml.DomainXslt(disks=serials)), {}, []
        # The password is in the stylesheet: a secret input, and its output kept secret in state.
        xslt = pulumi.Output.secret(self.vnc_password.apply(
            lambda pw: libvirt_xml.render_domain_xslt(libvirt_xml.DomainXslt(disks=serials, vnc_password=pw))
        ))
        # Only the host's loopback: reach it through an SSH tunnel to the libvirt host.
        graphics = libvirt.DomainGraphicsArgs(type="vnc", listen_type="address", listen_address="127.0.0.1", autoport=True)
        return xslt, {"graphics": graphics}, ["xml"]
