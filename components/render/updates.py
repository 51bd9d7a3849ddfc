"""Unattended OS updates on the nodes with a package manager (EL9, Debian): install, never reboot.

The updater installs; the node's reboot agent (render/reboot.py) reboots
when the OS says it is needed, at its time: a cluster node within the
disruption budget, a load balancer only on its own days with its peer up.

Debian: unattended-upgrades, run daily by apt's own timers; this file turns
it on and forbids its own reboot. EL9: dnf-automatic (its timer), applying
updates, never rebooting. Each file is checked on the node by the program
that reads it (``apt-config``; dnf-automatic's own config class) before it
is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

APT_CONF = "/etc/apt/apt.conf.d/52microcloud-updates"
DNF_AUTOMATIC_CONF = "/etc/dnf/automatic.conf"
DNF_AUTOMATIC_TIMER = "dnf-automatic.timer"

PACKAGES = {
    "debian": ("unattended-upgrades",),
    # dnf-plugins-core: `dnf needs-restarting -r`, what the reboot agent asks.
    "el9": ("dnf-automatic", "dnf-plugins-core"),
}

# The checks the node runs on the new file ({file}) before installing it.
VALIDATE = {
    # apt-config parses the file as apt and unattended-upgrades will; a syntax error fails.
    "debian": "apt-config -c {file} dump >/dev/null",
    # dnf-automatic's own reader of its config (python3-dnf, which dnf itself runs on): it reads a value it
    # does not understand as false, so the values that matter are asked back. It never reboots by itself
    # (its `reboot` key, newer than some dnf 4 releases, stays at its default: never).
    "el9": "python3 -c 'import sys, dnf.automatic.main as m; c = m.AutomaticConfig(sys.argv[1]).commands; "
           "sys.exit(0 if c.apply_updates and c.download_updates and c.upgrade_type in (\"security\", \"default\") else 1)' {file}",
}


@dataclass(frozen=True)
class UpdatesSpec:
    family: Literal["debian", "el9"]
    # security: security updates only; all: every update of the OS's repositories.
    packages: Literal["security", "all"] = "security"


def check(spec: UpdatesSpec) -> None:
    if spec.family not in PACKAGES:
        raise ValueError(f"updates: family {spec.family!r} is neither debian nor el9")
    if spec.packages not in ("security", "all"):
        raise ValueError(f"updates: packages {spec.packages!r} is neither security nor all")


def path_of(spec: UpdatesSpec) -> str:
    return APT_CONF if spec.family == "debian" else DNF_AUTOMATIC_CONF


def render(spec: UpdatesSpec) -> str:
    """The updater's config file (``path_of``)."""
    check(spec)
    if spec.family == "debian":
        origins = (
            ['"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";']
            if spec.packages == "security"
            else [
                '"origin=Debian,codename=${distro_codename},label=Debian";',
                '"origin=Debian,codename=${distro_codename}-updates";',
                '"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";',
            ]
        )
        return (
            "// Unattended updates; rendered by microcloud (components/render/updates.py).\n"
            "// The node's reboot agent reboots (within the disruption budget or on its own days), never this.\n"
            'APT::Periodic::Update-Package-Lists "1";\n'
            'APT::Periodic::Unattended-Upgrade "1";\n'
            'APT::Periodic::AutocleanInterval "7";\n'
            "Unattended-Upgrade::Origins-Pattern {\n"
            + "".join(f"    {o}\n" for o in origins)
            + "};\n"
            'Unattended-Upgrade::Automatic-Reboot "false";\n'
            'Unattended-Upgrade::Remove-Unused-Kernel-Packages "true";\n'
        )
    return (
        "# dnf-automatic; rendered by microcloud (components/render/updates.py).\n"
        "# The node's reboot agent reboots (within the disruption budget or on its own days), never this.\n"
        "[commands]\n"
        f"upgrade_type = {'security' if spec.packages == 'security' else 'default'}\n"
        "random_sleep = 600\n"
        "download_updates = yes\n"
        "apply_updates = yes\n\n"
        "[emitters]\n"
        "emit_via = stdio\n\n"
        "[base]\n"
        "debuglevel = 1\n"
    )


def activate(spec: UpdatesSpec) -> str:
    """Shell that puts the updater to work once its file is in place."""
    if spec.family == "debian":
        # apt's own daily timers run unattended-upgrade; they are on by default, kept on here.
        return "systemctl enable -q --now apt-daily.timer apt-daily-upgrade.timer"
    return f"systemctl enable -q --now {DNF_AUTOMATIC_TIMER}"


def verify(spec: UpdatesSpec) -> str:
    if spec.family == "debian":
        return "systemctl is-active -q apt-daily-upgrade.timer"
    return f"systemctl is-active -q {DNF_AUTOMATIC_TIMER}"


def packages_script(spec: UpdatesSpec, node: str) -> str:
    """Root sh: the updater's packages from the node's repositories when missing (on an air-gapped image: only checked)."""
    check(spec)
    pkgs = " ".join(PACKAGES[spec.family])
    fail = f'fail() {{ echo "microcloud: {node}: updates: $*" >&2; exit 1; }}'
    if spec.family == "debian":
        lines = [
            "set -eu", fail, "missing=''",
            f"for pkg in {pkgs}; do dpkg-query -W -f='${{Status}}' \"$pkg\" 2>/dev/null | grep -q 'install ok installed' || missing=\"$missing $pkg\"; done",
            'if [ -n "$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null '
            "|| fail \"could not install$missing from the node's repositories\"; fi",
        ]
    else:
        lines = [
            "set -eu", fail, "missing=''",
            f"for pkg in {pkgs}; do rpm -q \"$pkg\" >/dev/null 2>&1 || missing=\"$missing $pkg\"; done",
            'if [ -n "$missing" ]; then dnf -y -q install $missing >/dev/null '
            "|| fail \"could not install$missing from the node's repositories\"; fi",
        ]
    return "\n".join(lines) + "\n"
