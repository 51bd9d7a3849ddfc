"""The HAProxy + Keepalived pair and its two VIPs."""

from __future__ import annotations

import ipaddress

from typing import Annotated

from pydantic import Field, field_validator

from .base import IFNAME, Cidr, _Model, not_everyone


class VrrpConfig(_Model):
    interface: str = Field(default="eth0", description="Interface of the load balancers that carries the VIPs.")
    api_router_id: int = Field(default=51, description="VRRP virtual router id (1-255) of the API VIP; unique on the LAN.")
    ingress_router_id: int = Field(default=52, description="VRRP virtual router id (1-255) of the ingress VIP; differs from `api_router_id`.")
    advert_int: int = Field(default=1, ge=1, le=255, description="Seconds between VRRP advertisements.")
    preempt: bool = Field(default=True, description="Whether the higher-priority load balancer takes the VIPs back when it returns.")

    @field_validator("api_router_id", "ingress_router_id")
    @classmethod
    def _rid(cls, v: int) -> int:
        if not 1 <= v <= 255:
            raise ValueError(f"VRRP router id {v} is out of range; use 1-255")
        return v

    @field_validator("interface")
    @classmethod
    def _iface(cls, v: str) -> str:
        if not IFNAME.match(v):
            raise ValueError(f"{v!r} is not a Linux interface name")
        return v


class LoadBalancerConfig(_Model):
    network: str = Field(description="`name` of the network of the VIPs; both load balancers must be on it.")
    api_vip: ipaddress.IPv4Address = Field(description="VIP of the K3s API (`api.<domain>`): in `network`, unused, outside its DHCP range.")
    ingress_vip: ipaddress.IPv4Address = Field(description="VIP of HTTP/HTTPS ingress (`ingress.<domain>`); differs from `api_vip`, same rules.")
    vrrp: VrrpConfig = Field(default=VrrpConfig(), description="Keepalived's VRRP settings for the two VIPs.")
    api_port: int = Field(default=6443, ge=1, le=65535, description="Port of the K3s API on the VIP and on the servers.")
    ingress_http_nodeport: int = Field(
        default=32591, ge=30000, le=32767, description="NodePort on the ingress nodes that the ingress VIP's port 80 forwards to (the ingress controller's HTTP NodePort)."
    )
    ingress_https_nodeport: int = Field(
        default=31541, ge=30000, le=32767, description="NodePort on the ingress nodes that the ingress VIP's port 443 forwards to; differs from `ingress_http_nodeport`."
    )
    stats_port: int = Field(default=8404, ge=1024, le=65535, description="Port of HAProxy's stats page on 127.0.0.1; Keepalived's health check reads it.")
    clients: Annotated[tuple[Cidr, ...], not_everyone("list the networks whose hosts use the VIPs, e.g. 192.168.1.0/24")] = Field(
        default=(),
        description=(
            "Networks outside the stack (CIDR, e.g. the office LAN routed to the libvirt host) whose hosts reach the VIPs "
            "through the libvirt host when `network` is a `nat` network: the API VIP on `api_port`, the ingress "
            "VIP on 80 and 443, and nothing else of the stack. Default: none. Refused on a `bridge` network (the VIPs are on "
            "the LAN itself) and a `route` one (libvirt forwards the LAN into it already). Never `0.0.0.0/0`."
        ),
    )

