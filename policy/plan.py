"""The policies that need the engine's plan: checked on `pulumi preview --json`.

The engine's resource validation (policy/__main__.py) gets no step operation
and gets secrets already unwrapped, so "never replace a data node", "at most
one K3s server at a time" and "names that say secret are secret" cannot be
written there. The nearest form this engine supports: the same policies as
pure functions over the plan the engine itself printed, run by
``policy/guard.py`` right after the pack, with the same two levels:

- mandatory ``data-nodes-kept``: the VM, a volume or the first-boot config of
  a node that holds data (role storage or database, Longhorn or data disks, a protected
  volume) is replaced or deleted, and the node is not in ``allow_replace``;
- mandatory ``k3s-quorum``: more than one K3s server, or the last healthy
  majority, is replaced or deleted in one update, without ``allow_replace``;
- mandatory ``secret-inputs``: an input whose name says password, token, key
  or secret holds a value the plan shows in clear;
- mandatory ``allow-replace-names``: ``allow_replace`` names something that is
  neither a node of the previewed config nor one the last ``up`` applied (a
  node this change removes); the message names the closest node. Only here is
  "a node of this stack" known: the program sees the config, not the state;
- advisory ``vm-replacements``: every other VM replaced or deleted, counted
  per role; names in ``allow_replace`` that this change does not need.

Each message names the nodes, what the engine replaces and why (the property
that forces it), and the config change behind it: the stack output ``config``
(the config of the last ``up``) against the config being previewed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

MANDATORY = "mandatory"
ADVISORY = "advisory"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
MASK = "[secret]"
NODE_COMPONENT = "microcloud:compute:Node"
DESTROYING = ("replace", "create-replacement", "delete-replaced", "delete", "discard", "discard-replaced")
DOMAIN = "libvirt:index/domain:Domain"
FIRST_BOOT = ("libvirt:index/ignition:Ignition", "libvirt:index/cloudInitDisk:CloudInitDisk")
VOLUME = "libvirt:index/volume:Volume"
# Input names that say they hold a secret: the last word of the name.
SECRET_WORDS = {"password", "passwd", "passphrase", "token", "secret", "key", "pem"}


@dataclass(frozen=True)
class Finding:
    policy: str
    level: str
    message: str
    nodes: tuple[str, ...] = ()
    urns: tuple[str, ...] = field(default=(), compare=False)


# ------------------------------------------------------------------ plan views
def rtype(urn: str) -> str:
    return urn.split("::")[-2].split("$")[-1]


def rname(urn: str) -> str:
    return urn.split("::")[-1]


def state(step: dict) -> dict:
    return step.get("newState") or step.get("oldState") or {}


def node_of(step: dict) -> Optional[str]:
    """The node (Node component) a resource belongs to, from its parent."""
    for st in (step.get("newState"), step.get("oldState")):
        parent = (st or {}).get("parent") or ""
        if parent and rtype(parent) == NODE_COMPONENT:
            return rname(parent)
    return None


def kind(step: dict) -> Optional[str]:
    """What a node's resource is to its node: VM, first-boot config, data volume, root volume."""
    t = rtype(step["urn"])
    if t == DOMAIN:
        return "VM"
    if t in FIRST_BOOT or (t == VOLUME and rname(step["urn"]).endswith("-seed")):
        return "first-boot config"
    if t == VOLUME:
        protected = any((s or {}).get("protect") for s in (step.get("oldState"), step.get("newState")))
        return "data volume" if protected or not rname(step["urn"]).endswith("-root") else "root volume"
    return None


def _normalized(value: Any) -> Optional[dict]:
    """A config through today's model, dumped like the ``config`` output (None if it does not parse)."""
    try:
        from components.config import parse_config

        return parse_config(value).model_dump(mode="json")
    except Exception:
        return None


def stack_config(plan: dict) -> Optional[dict]:
    """The config being previewed, normalized like the ``config`` output (None if it does not parse)."""
    raw = (plan.get("config") or {}).get("microcloud:config")
    if raw is None:
        return None
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:  # a config error fails the preview itself, with its own message
        return None
    return _normalized(value)


def deployed_config(plan: dict) -> Optional[dict]:
    """The stack output ``config``: what the last ``up`` applied (None on a stack that predates it).

    Read through today's model where it still parses: a field added to the
    model since that ``up`` then reads as its default, like in the previewed
    config, and is no change of this config (a new default that changes
    resources is a change of the program, not of the config).
    """
    for step in plan.get("steps", []):
        if rtype(step["urn"]) == "pulumi:pulumi:Stack":
            value = ((step.get("oldState") or {}).get("outputs") or {}).get("config")
            return (_normalized(value) or value) if isinstance(value, dict) else None
    return None


def config_changes(old: Optional[dict], new: Optional[dict]) -> list[tuple[str, Any, Any]]:
    """(path, old, new) of every leaf that differs; lists of named things are keyed by name."""
    out: list[tuple[str, Any, Any]] = []

    def keyed(v: Any) -> Optional[dict]:
        if isinstance(v, list) and v and all(isinstance(x, dict) and "name" in x for x in v):
            return {x["name"]: x for x in v}
        return None

    def walk(path: str, a: Any, b: Any) -> None:
        # A field added to the model since the last up reads as null there: not a change of this config.
        if a == b or (a in ("(absent)", None) and b in ("(absent)", None)):
            return
        ka, kb = keyed(a), keyed(b)
        if ka is not None or kb is not None:
            ka, kb = ka or {}, kb or {}
            for name in sorted(set(ka) | set(kb)):
                walk(f"{path}[{name}]", ka.get(name, "(absent)"), kb.get(name, "(absent)"))
        elif isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(f"{path}.{k}" if path else k, a.get(k, "(absent)"), b.get(k, "(absent)"))
        else:
            out.append((path, a, b))

    if old is not None and new is not None:
        walk("", {k: v for k, v in old.items() if k != "allow_replace"}, {k: v for k, v in new.items() if k != "allow_replace"})
    return out


def _short(v: Any) -> str:
    if v == "(absent)":
        return "(absent)"
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def changes_for(node: str, changes: list[tuple[str, Any, Any]]) -> list[str]:
    """The config changes that can touch ``node``: its own entry and everything stack-wide but the platform's."""
    own = [c for c in changes if c[0] == f"nodes[{node}]" or c[0].startswith(f"nodes[{node}].")]
    stack_wide = [c for c in changes if not c[0].startswith(("nodes[", "platform", "monitoring"))]
    def say(p: str, a: Any, b: Any) -> str:
        if b == "(absent)" and p.startswith("nodes["):
            return f"{p} removed"
        if a == "(absent)" and p.startswith("nodes["):
            return f"{p} added"
        return f"{p}: {_short(a)} → {_short(b)}"

    return [say(*c) for c in own + stack_wide]


def _has(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return value == needle
    if isinstance(value, dict):
        return any(_has(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(_has(v, needle) for v in value)
    return False


def reason(step: dict, destroyed: set[str]) -> str:
    """Why the engine replaces or deletes: the property that forces it, or the replacement it follows."""
    op = step["op"]
    if op in ("delete", "discard"):
        return "no longer in the program (removed from the config)"
    forced = step.get("replaceReasons") or (step.get("diffReasons") if op == "update" else None) or []
    if forced:
        return "`" + "`, `".join(forced) + "` changed"
    new = step.get("newState") or {}
    old = (step.get("oldState") or {}).get("inputs") or {}
    deps = new.get("propertyDependencies") or {}
    follows: dict[str, list[str]] = defaultdict(list)
    changed = []
    for key, value in (new.get("inputs") or {}).items():
        if key == "__defaults" or old.get(key) == value:
            continue
        upstream = [rname(u) for u in deps.get(key, []) if u in destroyed]
        if upstream and _has(value, UNKNOWN):
            for u in upstream:
                follows[u].append(key)
        else:
            changed.append(key)
    parts = [f"follows the replacement of {u} (`{'`, `'.join(sorted(keys))}`)" for u, keys in sorted(follows.items())]
    if changed:
        parts.append("`" + "`, `".join(sorted(changed)) + "` changed")
    return "; ".join(parts) or "no property named by the engine"


def destroyed_urns(plan: dict) -> set[str]:
    return {s["urn"] for s in plan.get("steps", []) if s["op"] in DESTROYING}


# ------------------------------------------------------------------ the policies
def _nodes(cfg: Optional[dict]) -> dict[str, dict]:
    return {n["name"]: n for n in (cfg or {}).get("nodes", [])}


def holds_data(node: Optional[dict]) -> bool:
    if not node:
        return False
    return node.get("role") in ("storage", "database") or bool(node.get("data_disks")) or bool(node.get("longhorn"))


def check(plan: dict) -> list[Finding]:
    """Every finding of the plan policies, mandatory first."""
    new_cfg, old_cfg = stack_config(plan), deployed_config(plan)
    allow = set((new_cfg or {}).get("allow_replace") or ())
    changes = config_changes(old_cfg, new_cfg)
    if old_cfg is not None and _normalized(old_cfg) is None:
        # The deployed config no longer parses (a value today's model refuses, e.g. updates.strategy reboot):
        # a key it lacks is a field the model gained since, not a change of this config (added nodes are).
        changes = [c for c in changes if c[1] != "(absent)" or c[0].startswith("nodes[")]
    nodes = {**_nodes(new_cfg), **_nodes(old_cfg)}  # a removed node is known from the deployed config
    destroyed = destroyed_urns(plan)

    # What each node loses in this update: (kind, name, op, reason) per resource.
    hits: dict[str, list[tuple[str, str, str, str, str]]] = defaultdict(list)
    protected: set[str] = set()
    seen: set[str] = set()
    for step in plan.get("steps", []):
        node = node_of(step)
        k = kind(step) if node else None
        if not node or not k:
            continue
        if k == "data volume" and any((s or {}).get("protect") for s in (step.get("oldState"), step.get("newState"))):
            protected.add(node)
        if step["op"] in DESTROYING and step["urn"] not in seen:
            seen.add(step["urn"])
            op = "deleted" if step["op"] in ("delete", "discard") else "replaced"
            hits[node].append((k, rname(step["urn"]), op, reason(step, destroyed), step["urn"]))

    findings: list[Finding] = []
    for i, name in enumerate((new_cfg or {}).get("allow_replace") or ()):
        if name in nodes:
            continue
        guess = difflib.get_close_matches(name, sorted(nodes), n=1, cutoff=0.6)
        findings.append(Finding(
            "allow-replace-names", MANDATORY,
            f"allow_replace[{i}]: {name!r} is not a node of this stack (nor one the last up applied); "
            + (f"did you mean {guess[0]}?" if guess else f"its nodes are {', '.join(sorted(nodes))}"),
            (name,),
        ))
    for node in sorted(hits):
        if not (holds_data(nodes.get(node)) or node in protected) or node in allow:
            continue
        cfg_node = nodes.get(node) or {}
        what = "; ".join(f"{k} {name} {op}: {why}" for k, name, op, why, _ in hits[node])
        cause = changes_for(node, changes)
        caused = ("caused by config change " + ", ".join(cause)) if cause else (
            "no config change found for it (the program or a provider changed)" if old_cfg else "the deployed config is not recorded (stack last applied before this check)")
        findings.append(Finding(
            "data-nodes-kept", MANDATORY,
            f"{node} ({cfg_node.get('role', 'node')}, holds data): {what}; {caused}. "
            f"If this is intended, add {node} to allow_replace in the stack config for this change.",
            (node,), tuple(u for *_, u in hits[node]),
        ))

    servers = sorted(n for n, c in nodes.items() if c.get("role") == "server" and (old_cfg is None or n in _nodes(old_cfg)))
    hit_servers = sorted(n for n in servers if n in hits)
    if hit_servers and not set(hit_servers) <= allow:
        majority = len(servers) // 2 + 1
        left = len(servers) - len(hit_servers)
        if len(hit_servers) > 1 or left < majority:
            cause = sorted({c for n in hit_servers for c in changes_for(n, changes)})
            findings.append(Finding(
                "k3s-quorum", MANDATORY,
                f"{len(hit_servers)} of {len(servers)} K3s servers are replaced or deleted in one update "
                f"({', '.join(hit_servers)}); etcd keeps quorum only with {majority} of {len(servers)} and at most one at a time"
                + (f"; caused by config change {', '.join(cause)}" if cause else "")
                + ". Change one server per update, or name them in allow_replace if losing quorum is intended.",
                tuple(hit_servers), tuple(u for n in hit_servers for *_, u in hits[n]),
            ))

    findings += secret_inputs(plan)

    reported = {n for f in findings for n in f.nodes}
    vms = [(n, name, op) for n, hs in hits.items() for k, name, op, _, _ in hs if k == "VM" and n not in reported]
    if vms:
        per_role: dict[str, list[str]] = defaultdict(list)
        for n, _, op in sorted(vms):
            per_role[(nodes.get(n) or {}).get("role", "unknown")].append(f"{n} ({op})")
        counts = "; ".join(f"{role}: {len(v)} ({', '.join(v)})" for role, v in sorted(per_role.items()))
        allowed = sorted(n for n, _, _ in vms if n in allow)
        findings.append(Finding(
            "vm-replacements", ADVISORY,
            f"{len(vms)} VM(s) replaced or deleted: {counts}" + (f"; allowed by allow_replace: {', '.join(allowed)}" if allowed else ""),
            tuple(sorted(n for n, _, _ in vms)),
        ))
    unused = sorted((allow & set(nodes)) - set(hits))
    if unused:
        findings.append(Finding(
            "vm-replacements", ADVISORY,
            f"allow_replace names {', '.join(unused)}, but this change replaces nothing of them: remove them from the stack config",
            tuple(unused),
        ))
    return sorted(findings, key=lambda f: f.level != MANDATORY)


def _words(name: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]


def says_secret(name: str) -> bool:
    words = _words(name)
    return bool(words) and words[-1] in SECRET_WORDS and "public" not in words and not (words[-1] == "pem" and "key" not in words)


def _clear_secrets(value: Any, path: str, top_only: bool) -> Iterable[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}.{k}" if path else k
            if says_secret(k) and isinstance(v, (str, int)) and v not in (MASK, UNKNOWN) and v != "":
                yield p
            elif not top_only:
                yield from _clear_secrets(v, p, top_only)


def secret_inputs(plan: dict) -> list[Finding]:
    out = []
    for step in plan.get("steps", []):
        new = step.get("newState") or {}
        if not new.get("custom") or step["op"] in ("delete", "discard", "delete-replaced", "discard-replaced"):
            continue
        t = rtype(step["urn"])
        if t.startswith("pulumi:providers:"):
            continue
        # Kubernetes objects nest names like `key` (selectors, tolerations) that hold no secret: their top level only.
        bad = list(_clear_secrets(new.get("inputs") or {}, "", top_only=t.startswith("kubernetes:")))
        if bad:
            out.append(Finding(
                "secret-inputs", MANDATORY,
                f"{rname(step['urn'])} ({t}): input {', '.join(bad)} is not secret; pass it as a secret (pulumi.Output.secret, "
                "a random/tls output, or `pulumi config set --secret`)",
                (), (step["urn"],),
            ))
    return out


def mandatory(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == MANDATORY]
