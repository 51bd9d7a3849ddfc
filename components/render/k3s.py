"""K3s on a node: /etc/rancher/k3s/config.yaml, its systemd unit, and the idempotent install script.

The join secrets never appear in anything rendered here: config.yaml names
root-only ``token-file`` (and, on servers, ``agent-token-file``), and the
install script writes those files, and the cluster CAs on the cluster-init
server, from its standard input (``render/k3s_pki.py``'s join input; or from
a root-only path on the node), so no token or key is in config.yaml, a unit,
a command line or the script text.
"""

from __future__ import annotations

import posixpath
import shlex

import yaml

from . import budget
from . import k3s_hardening as hardening
from ..k3s_flags import merge_extra_args
from .k3s_hardening import CRED_FILES
from .k3s_pki import SERVER_CA, TLS_FILES
from .k3s_registries import HEADER as REGISTRIES_HEADER
from .k3s_registries import REGISTRIES_PATH

# The node model lives beside; these names are part of this module's interface (k3s.K3sNodeSpec ...).
from .k3s_node import (  # noqa: F401
    AGENT_KEYS,
    AGENT_TOKEN_FILE,
    ALLOWED_KEYS,
    BIN_DIR,
    CONFIG_PATH,
    DATA_DIR,
    DISABLED_COMPONENTS,
    FLATCAR_BIN_DIR,
    IMAGES_PREFIX,
    SERVER_KEYS,
    TOKEN_FILE,
    UNIT_DIR,
    Artifact,
    K3sInstallSpec,
    K3sNodeSpec,
    K3sUnitSpec,
    Role,
    check_install,
    check_extra,
    check_node,
    images_suffix,
    server_url,
    unit_name,
)


def k3s_config(spec: K3sNodeSpec) -> dict:
    """config.yaml as a dict: the keys of the node's role (``ALLOWED_KEYS``), the hardening profile, then the checked extra_args."""
    check_node(spec)
    doc: dict = {
        "node-name": spec.node_name,
        "node-ip": spec.node_ip,
        "token-file": spec.token_file,
        "data-dir": spec.data_dir,
    }
    if spec.node_labels:
        doc["node-label"] = sorted(spec.node_labels)
    if spec.node_taints:
        doc["node-taint"] = sorted(spec.node_taints)
    if spec.cluster_init:
        doc["cluster-init"] = True
    else:
        doc["server"] = server_url(spec)
    if spec.role == "server":
        doc["agent-token-file"] = spec.agent_token_file
        doc["tls-san"] = [spec.api_vip, f"api.{spec.domain}"]
        doc["disable"] = sorted(spec.disable)
        doc["https-listen-port"] = spec.api_port
        # The admin kubeconfig holds a client key: root only.
        doc["write-kubeconfig-mode"] = "0600"
    if spec.hardening is not None:
        doc.update(hardening.hardening_keys(spec.hardening, spec.role, spec.data_dir))
    extra = set(doc) - ALLOWED_KEYS[spec.role]
    if extra:
        raise ValueError(f"k3s: {spec.node_name}: keys {sorted(extra)} are not {spec.role} flags")
    check_extra(spec, doc)
    return merge_extra_args(doc, spec.extra_args)


def render_k3s_config(spec: K3sNodeSpec) -> str:
    """/etc/rancher/k3s/config.yaml: sorted keys, so equal specs give equal text (and hash)."""
    head = "# Rendered by microcloud (components/render/k3s.py). The tokens are in their files, never here.\n"
    return head + yaml.safe_dump(k3s_config(spec), sort_keys=True, default_flow_style=False)


def render_k3s_unit(spec: K3sUnitSpec) -> str:
    """The systemd unit K3s' own installer writes, minus its environment files.

    Servers tell systemd when they are ready (Type=notify); agents do not.
    KillMode=process keeps the containers running across a K3s restart, so a
    config change does not take the node's workloads down.
    """
    if spec.role not in ("server", "agent"):
        raise ValueError(f"k3s: role {spec.role!r} is neither server nor agent")
    binary = posixpath.join(spec.bin_dir, "k3s")
    kind = "notify" if spec.role == "server" else "exec"
    return (
        "# Rendered by microcloud (components/render/k3s.py).\n"
        "[Unit]\n"
        f"Description=K3s {spec.role}\n"
        "Documentation=https://docs.k3s.io\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"Type={kind}\n"
        "KillMode=process\n"
        "Delegate=yes\n"
        "LimitNOFILE=1048576\n"
        "LimitNPROC=infinity\n"
        "LimitCORE=infinity\n"
        "TasksMax=infinity\n"
        "TimeoutStartSec=0\n"
        "Restart=always\n"
        "RestartSec=5s\n"
        "ExecStartPre=-/sbin/modprobe br_netfilter\n"
        "ExecStartPre=-/sbin/modprobe overlay\n"
        f"ExecStart={binary} {spec.role}\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def render_k3s_install(spec: K3sInstallSpec) -> str:
    """POSIX sh, run as root on the node; idempotent.

    1. waits for first boot (cloud-init, where it runs);
    2. checks the sha256 of the binary and of the images tarball, fetched
       (https, to a file, never into a shell) or from their path on the
       node, before installing anything: a mismatch installs nothing;
    2. reads the join input: the node's secure-form token (its CA hash is
       checked against the cluster CA a server already holds: a node of
       another cluster is refused), the agent token on servers, and on the
       cluster-init server every cluster CA file (one that is already there
       must be the same);
    3. installs binary, images, token files (0600), the CA files the node
       lacks, config.yaml and unit, each only when its content differs;
    4. restarts the unit only when something changed (starts it when it is
       not running), waiting at most ``start_timeout`` seconds; a unit that
       does not come up gets the previous files back, is restarted with
       them, and the script fails naming the node.

    A second run with the same spec changes nothing and restarts nothing.
    """
    node, unit = spec.node, unit_name(spec.node.role)
    check_install(spec)
    q = shlex.quote
    root = spec.root.rstrip("/")
    binary = posixpath.join(spec.bin_dir, "k3s")
    images_dir = posixpath.join(node.data_dir, "agent", "images")
    images_target = posixpath.join(images_dir, IMAGES_PREFIX + images_suffix(spec.images.file_name)) if spec.images else ""
    config = render_k3s_config(node)
    unit_text = render_k3s_unit(K3sUnitSpec(role=node.role, bin_dir=spec.bin_dir))
    lines = [
        "#!/bin/sh",
        f"# K3s {spec.version} {node.role} on {node.node_name}; rendered by microcloud (components/render/k3s.py).",
        "set -eu",
        "umask 077",
        f"node={q(node.node_name)}",
        f"unit={q(unit)}",
        # A failure while this node holds a budget slot keeps the slot (render/budget.py): the next node waits.
        'held=0',
        'fail() { echo "microcloud: $node: k3s: $*" >&2; [ "$held" = 0 ] || budget_hold_failed; exit 1; }',
        "sha_ok() { [ -f \"$2\" ] && [ \"$(sha256sum < \"$2\" | cut -d' ' -f1)\" = \"$1\" ]; }",
        # Same content? Hash both: cmp is not on every node (Flatcar has no diffutils).
        'same() { [ -f "$2" ] && [ "$(sha256sum < "$1")" = "$(sha256sum < "$2")" ]; }',
        'work=$(mktemp -d); trap \'rm -rf "$work"\' EXIT',
        "changed=0",
    ]
    if spec.bootstrap:
        lines += [
            "# Bootstrap only: once the node holds etcd data it is a member, and its own run keeps it converged.",
            f"if [ -d {q(root + posixpath.join(node.data_dir, 'server', 'db', 'etcd'))} ]; then",
            '  echo "microcloud: $node: k3s: already a cluster member; nothing to bootstrap"; exit 0',
            "fi",
            "# A cluster that already answers at the VIP (this node is new, or another one bootstrapped it)",
            "# is joined by the node's own run; a second cluster-init would split it.",
            f"if curl -ksf --max-time 5 -o /dev/null {q(server_url(node) + '/cacerts')}; then",
            '  echo "microcloud: $node: k3s: a cluster already answers at the API VIP; not initializing another"; exit 0',
            "fi",
        ]
    lines += [
        "# First boot must be over (Ignition ran before sshd on Flatcar; cloud-init elsewhere).",
        'if [ -e /run/cloud-init/enabled ] && command -v cloud-init >/dev/null 2>&1; then',
        '  rc=0; cloud-init status --wait >/dev/null 2>&1 || rc=$?',
        '  [ "$rc" -ne 1 ] || fail "first boot failed: cloud-init reported an error"',
        "fi",
        "# 1. Every pinned file is checked before anything is installed.",
    ]
    lines += _fetch("bin", spec.binary, root + binary)
    if spec.images:
        lines += _fetch("images", spec.images, root + images_target)
    lines += _join_input(spec)
    lines += _hardening_checks(spec)
    lines += [
        f"printf '%s' {q(config)} > \"$work/config\"",
        f"printf '%s' {q(unit_text)} > \"$work/unit\"",
        "# 3. Install what differs, keeping what it replaces until the unit runs the new files.",
        ': > "$work/undo"; n=0',
        "put() { # file target mode; status 1: already there",
        '  if same "$1" "$2"; then return 1; fi',
        "  n=$((n + 1))",
        '  if [ -e "$2" ]; then cp -p "$2" "$work/prev.$n"; echo "$n $2" >> "$work/undo"; else echo "- $2" >> "$work/undo"; fi',
        '  mkdir -p "$(dirname "$2")"',
        '  cp "$1" "$2.microcloud-new" && chmod "$3" "$2.microcloud-new" && mv -f "$2.microcloud-new" "$2"',
        "  changed=1",
        "}",
        "drop() { # target: removed, kept for undo",
        "  n=$((n + 1))",
        '  cp -p "$1" "$work/prev.$n"; echo "$n $1" >> "$work/undo"; rm -f "$1"',
        "  changed=1",
        "}",
        "undo() {",
        '  while read -r k target; do',
        '    if [ "$k" = - ]; then rm -f "$target"; else mv -f "$work/prev.$k" "$target"; fi',
        '  done < "$work/undo"',
        "}",
        f'if [ -n "$bin_new" ]; then put "$bin_new" {q(root + binary)} 0755 || true; fi',
    ]
    if spec.images:
        lines.append(f'if [ -n "$images_new" ]; then put "$images_new" {q(root + images_target)} 0644 || true; fi')
    lines += [
        f'put "$work/token" {q(root + node.token_file)} 0600 || true',
    ]
    if node.role == "server":
        lines.append(f'put "$work/agent-token" {q(root + node.agent_token_file)} 0600 || true')
    if node.cluster_init:
        tls_dir = root + posixpath.join(node.data_dir, "server", "tls")
        lines += [
            "# The cluster CAs K3s would otherwise make itself; a file already there was checked above.",
            "while read -r name; do",
            f'  t={q(tls_dir)}/"$name"',
            '  [ -e "$t" ] && continue',
            '  case "$name" in *.key) m=0600 ;; *) m=0644 ;; esac',
            '  put "$work/tls/$name" "$t" "$m" || true',
            'done < "$work/files"',
        ]
    if node.cluster_init:
        cred_dir = root + posixpath.dirname(hardening.cred_path(node.data_dir, hardening.ENCRYPTION_CONFIG))
        lines += [
            "# The secrets encryption config K3s would otherwise generate; one already there was checked above.",
            "while read -r name; do",
            f'  t={q(cred_dir)}/"$name"',
            '  [ -e "$t" ] && continue',
            '  put "$work/cred/$name" "$t" 0600 || true',
            'done < "$work/creds"',
        ]
    lines += _hardening(spec)
    registries = root + REGISTRIES_PATH
    lines += [
        "# K3s' registries.yaml (registry passwords: root only); one this program wrote goes when the stack has none.",
        'if [ -s "$work/registries" ]; then',
        f'  put "$work/registries" {q(registries)} 0600 || true',
        f'elif [ -e {q(registries)} ]; then',
        f'  case "$(head -n 1 {q(registries)})" in',
        f'    {q(REGISTRIES_HEADER.rstrip())}) drop {q(registries)} ;;',
        "  esac",
        "fi",
        f'put "$work/config" {q(root + CONFIG_PATH)} 0600 || true',
    ]
    if spec.budget is not None:
        lines += [
            "# The disruption budget's credentials (its user may take Leases and drain, nothing else).",
            # Files K3s does not read: written when they differ, without restarting K3s for them.
            'c=$changed',
            f'put "$work/budget-kubeconfig" {q(root + budget.KUBECONFIG)} 0600 || true',
        ]
        if node.role == "server":
            lines += [
                "# ... and its RBAC, which K3s applies from its auto-deploy directory.",
                f"printf '%s' {q(budget.render_rbac(spec.budget))} > \"$work/budget-rbac\"",
                f'put "$work/budget-rbac" {q(root + budget.MANIFEST)} 0600 || true',
            ]
        lines += ["changed=$c"]
    lines += [
        "unit_changed=0",
        f'if put "$work/unit" {q(root + posixpath.join(UNIT_DIR, unit))} 0644; then unit_changed=1; fi',
        "# 4. Restart only for a change (start when it is not running); a start that fails puts",
        "#    the previous files back and starts them again, so the node keeps what it ran.",
        "activate() {",
        '  [ "$unit_changed" = 0 ] || systemctl daemon-reload',
        '  systemctl is-enabled -q "$unit" 2>/dev/null || systemctl enable -q "$unit"',
        f'  timeout {int(spec.start_timeout)} systemctl restart "$unit" && systemctl is-active -q "$unit"',
        "}",
        'if [ "$changed" = 0 ] && systemctl is-active -q "$unit"; then',
        f'  echo "microcloud: $node: k3s {spec.version}: already installed, nothing changed"; exit 0',
        "fi",
    ]
    if spec.budget is not None:
        lines += [
            "# A running member is taken down only within the disruption budget: a slot first, freed when Ready again.",
            "# A node not yet running K3s (day 1, or a new node) takes nothing from the cluster and waits for no one.",
            f"budget_kubectl={q(root + binary + ' kubectl --kubeconfig ' + root + budget.KUBECONFIG)}",
            "budget_holder=$node",
            *budget.render_lib(spec.budget).rstrip("\n").split("\n"),
            'if systemctl is-active -q "$unit"; then',
            f'  budget_acquire {q(spec.budget_pool)} || fail "no slot of the disruption budget: $unit not restarted, nothing else touched"',
            "  held=1",
            "fi",
        ]
    lines += [
        "if ! activate; then",
        '  if [ -s "$work/undo" ]; then',
        '    undo; unit_changed=1; activate >/dev/null 2>&1 || true',
        f'    fail "$unit did not start within {int(spec.start_timeout)}s with the new files; the previous ones are back (journalctl -u $unit)"',
        "  fi",
        f'  fail "$unit did not start within {int(spec.start_timeout)}s (journalctl -u $unit)"',
        "fi",
    ]
    if spec.ready_timeout > 0:
        kubeconfig = root + posixpath.join(node.data_dir, "agent", "kubelet.kubeconfig")
        jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"
        lines += [
            "# 5. Ready again before the next node is touched: the node's own kubelet credentials may read its Node.",
            "i=0",
            "while :; do",
            f'  st=$({q(root + binary)} kubectl --kubeconfig {q(kubeconfig)} get node "$node" -o {q(jsonpath)} 2>/dev/null) || st=',
            '  [ "$st" = True ] && break',
            f"  [ $i -lt {int(spec.ready_timeout)} ] || fail "
            f'"node $node is not Ready {int(spec.ready_timeout)}s after $unit started (kubectl describe node $node; journalctl -u $unit)"',
            "  i=$((i + 5)); sleep 5",
            "done",
        ]
        if spec.budget is not None:
            lines += ['if [ "$held" = 1 ]; then held=0; budget_release; fi']
    if spec.images:
        lines += [
            "# Only this version's tarball: K3s imports every file in the directory.",
            f"for f in {q(root + images_dir)}/{IMAGES_PREFIX}*; do",
            f'  if [ -e "$f" ] && [ "$f" != {q(root + images_target)} ]; then rm -f "$f"; fi',
            "done",
        ]
    lines += [
        "# kubectl, crictl and ctr are the same multi-call binary.",
        "for tool in kubectl crictl ctr; do",
        f'  link={q(root + spec.bin_dir)}/"$tool"',
        '  [ -e "$link" ] || [ -L "$link" ] || ln -s k3s "$link"',
        "done",
        f'echo "microcloud: $node: k3s {spec.version}: $unit runs the new files"',
    ]
    return "\n".join(lines) + "\n"


def _join_input(spec: K3sInstallSpec) -> list[str]:
    """Shell that reads the join input into $work/token, $work/agent-token and $work/tls/, checking it; installs nothing."""
    node, q = spec.node, shlex.quote
    root = spec.root.rstrip("/")
    user = "server" if node.role == "server" else "node"
    source = 'cat > "$work/input"' if spec.input_path is None else f'cat {q(spec.input_path)} > "$work/input"'
    lines = [
        "# 2. The join input: from stdin or a root-only file, never an argument; nothing of it is printed.",
        source,
        ': > "$work/files"; : > "$work/creds"',
        "while read -r kind name value; do",
        '  case "$kind" in',
        "    token) printf '%s\\n' \"$name\" > \"$work/token\" ;;",
        "    agent-token) printf '%s\\n' \"$name\" > \"$work/agent-token\" ;;",
        "    file)",
        '      case "$name" in',
        "        " + "|".join(TLS_FILES) + ") ;;",
        '        *) fail "the join input names $name, which is not a K3s CA file; nothing installed" ;;',
        "      esac",
        '      mkdir -p "$work/tls/$(dirname "$name")"',
        "      printf '%s' \"$value\" | base64 -d > \"$work/tls/$name\" 2>/dev/null || fail \"$name in the join input is not base64; nothing installed\"",
        '      echo "$name" >> "$work/files" ;;',
        "    cred)",
        '      case "$name" in',
        "        " + "|".join(CRED_FILES) + ") ;;",
        '        *) fail "the join input names cred $name, which is not a K3s cred file; nothing installed" ;;',
        "      esac",
        '      mkdir -p "$work/cred"',
        "      printf '%s' \"$value\" | base64 -d > \"$work/cred/$name\" 2>/dev/null || fail \"cred $name in the join input is not base64; nothing installed\"",
        '      echo "$name" >> "$work/creds" ;;',
        "    budget)",
        "      printf '%s' \"$name\" | base64 -d > \"$work/budget-kubeconfig\" 2>/dev/null || fail \"the budget kubeconfig in the join input is not base64; nothing installed\" ;;",
        "    registries)",
        "      printf '%s' \"$name\" | base64 -d > \"$work/registries\" 2>/dev/null || fail \"the registries file in the join input is not base64; nothing installed\"",
        '      [ -s "$work/registries" ] || fail "the registries file in the join input is empty; nothing installed" ;;',
        "    '') ;;",
        '    *) fail "the join input has a line of unknown kind; nothing installed" ;;',
        "  esac",
        'done < "$work/input"',
        'rm -f "$work/input"',
        '[ -s "$work/token" ] || fail "no cluster token given; nothing installed"',
        *(['[ -s "$work/budget-kubeconfig" ] || fail "no kubeconfig of the disruption budget given; nothing installed"'] if spec.budget is not None else []),
        # Servers join with the server token, agents with the agent (node) token.
        f"hash=$(sed -n 's/^K10\\([0-9a-f]\\{{64\\}}\\)::{user}:..*$/\\1/p' \"$work/token\")",
        f'[ -n "$hash" ] || fail "the token is not K3s\' secure {user} token (K10<CA hash>::{user}:password); nothing installed"',
    ]
    if node.role == "server":
        ca = root + posixpath.join(node.data_dir, "server", "tls", SERVER_CA)
        lines += [
            '[ -s "$work/agent-token" ] || fail "no agent token given; nothing installed"',
            "# K3s keeps a server's agent token as the node password: the short form, letters and digits.",
            "case $(cat \"$work/agent-token\") in",
            "  *[!A-Za-z0-9]*) fail \"the agent token for a server is not K3s' short form (the node password alone); nothing installed\" ;;",
            "esac",
            "# A server that already holds a cluster CA must hold this stack's: the token names it.",
            f"if [ -f {q(ca)} ]; then",
            f"  have=$(sha256sum < {q(ca)} | cut -d' ' -f1)",
            '  [ "$have" = "$hash" ] || fail "this node holds a cluster CA (sha256 $have) that is not the stack\'s ($hash):'
            ' it belongs to a cluster made without the stack\'s PKI or by another stack; nothing installed"',
            "fi",
        ]
    if node.cluster_init:
        tls_dir = root + posixpath.join(node.data_dir, "server", "tls")
        lines += [
            f'[ "$(wc -l < "$work/files")" -eq {len(TLS_FILES)} ] || fail "the cluster-init server needs all {len(TLS_FILES)} cluster CA files; nothing installed"',
            f'[ "$(sha256sum < "$work/tls/{SERVER_CA}" | cut -d\' \' -f1)" = "$hash" ] || fail "the server CA given is not the one the token names; nothing installed"',
            "while read -r name; do",
            f'  t={q(tls_dir)}/"$name"',
            '  if [ -e "$t" ] && ! same "$work/tls/$name" "$t"; then',
            '    fail "$t is not the stack\'s (the cluster was made with other CAs); nothing installed"',
            "  fi",
            'done < "$work/files"',
        ]
        if node.hardening is not None and node.hardening.secrets_encryption:
            lines.append(
                '[ -s "$work/creds" ] || fail "secrets encryption is on but the join input holds no encryption config; nothing installed"'
            )
        cred_dir = root + posixpath.dirname(hardening.cred_path(node.data_dir, hardening.ENCRYPTION_CONFIG))
        lines += [
            "while read -r name; do",
            f'  t={q(cred_dir)}/"$name"',
            '  if [ -e "$t" ] && ! same "$work/cred/$name" "$t"; then',
            '    fail "$t is not the stack\'s (the cluster was made with another secrets encryption key); nothing installed"',
            "  fi",
            'done < "$work/creds"',
        ]
    return lines


def _hardening_checks(spec: K3sInstallSpec) -> list[str]:
    """Shell, before anything is installed: refuse to drop secrets encryption, put the kubelet's kernel settings in place."""
    node, q = spec.node, shlex.quote
    h = node.hardening
    if h is None:
        return []
    root = spec.root.rstrip("/")
    lines = []
    if node.role == "server" and not h.secrets_encryption:
        enc = root + hardening.cred_path(node.data_dir, hardening.ENCRYPTION_CONFIG)
        lines += [
            f"if [ -e {q(enc)} ]; then",
            f'  fail "this cluster encrypts its Secrets ({enc}); without secrets-encryption they could not be read: '
            'keep k3s.hardening.secrets_encryption on; nothing installed"',
            "fi",
        ]
    if h.protect_kernel_defaults:
        lines.append("# protect-kernel-defaults: the kubelet refuses to start unless the kernel already has these (first boot set them).")
        for key, want in sorted(hardening.SYSCTLS.items()):
            proc = root + "/proc/sys/" + key.replace(".", "/")
            lines += [
                f'[ "$(cat {q(proc)} 2>/dev/null)" = {q(want)} ] || printf \'%s\\n\' {q(want)} > {q(proc)} 2>/dev/null || true',
                f'[ "$(cat {q(proc)} 2>/dev/null)" = {q(want)} ] || fail "kernel setting {key} is not {want} and cannot be set; '
                'K3s\' protect-kernel-defaults needs it; nothing installed"',
            ]
    return lines


def _hardening(spec: K3sInstallSpec) -> list[str]:
    """Shell that installs the profile's files: the API server's admission and audit files, the kubelet sysctl file."""
    node, q = spec.node, shlex.quote
    h = node.hardening
    if h is None:
        return []
    root = spec.root.rstrip("/")
    lines = ["# The hardening profile's files (components/render/k3s_hardening.py)."]
    if node.role == "server":
        for n, (path, text) in enumerate(sorted(hardening.server_files(h, node.data_dir).items())):
            lines += [f"printf '%s' {q(text)} > \"$work/hardening.{n}\"", f'put "$work/hardening.{n}" {q(root + path)} 0600 || true']
        if h.audit_log is not None:
            logs = root + posixpath.dirname(hardening.server_path(node.data_dir, hardening.AUDIT_LOG))
            lines.append(f"mkdir -p {q(logs)} && chmod 0700 {q(logs)}")
    if h.protect_kernel_defaults:
        lines += [
            f"printf '%s' {q(hardening.render_sysctl(h))} > \"$work/sysctl\"",
            f'put "$work/sysctl" {q(root + hardening.SYSCTL_PATH)} 0644 || true',
        ]
    return lines


def _fetch(var: str, art: Artifact, target: str) -> list[str]:
    """Shell that sets ``${var}_new`` to a checked copy, or leaves it empty when ``target`` already matches."""
    q = shlex.quote
    name = art.file_name
    lines = [f"{var}_new=", f"if ! sha_ok {art.sha256} {q(target)}; then"]
    if art.url:
        lines += [
            f'  curl -fsSL --proto =https --retry 3 -o "$work/{var}" {q(art.url)} '
            f'|| fail "{name}: download from {art.url} failed; nothing installed"',
        ]
    else:
        lines += [
            f'  [ -f {q(art.path)} ] || fail "{name}: {art.path} is not on the node; nothing installed"',
            f'  cp {q(art.path)} "$work/{var}"',
        ]
    lines += [
        f'  sha_ok {art.sha256} "$work/{var}" || fail "{name}: sha256 is not {art.sha256}; nothing installed"',
        f'  {var}_new="$work/{var}"',
        "fi",
    ]
    return lines
