"""A stack's state as the real engine plans it, applied without touching a machine.

Day-2 previews (what a pull request changes) need a stack that already has
state. No VM can run K3s here, so the state is built from the engine's own
plan for the base config, in rounds:

1. a real ``pulumi up --target`` of everything local: the components, and
   the random and tls resources (real passwords, real keys);
2. then ``pulumi preview --json`` with the CLI's gRPC log on: every planned
   create whose inputs are all known is written into the state with the
   inputs the provider checked and the outputs it planned (its preview
   Create; secrets kept secret, unknown leaves left out, a stable id), and
   ``pulumi stack import`` takes it (the JSON display masks every secret,
   the log does not; it lives in the throwaway stack's dir and goes at once);
3. repeat: what those resources' ids and outputs unblock is known next
   round. When nothing is left to create, nothing else may be pending, and a
   real ``up`` records the stack's outputs.

The providers' own Diff then decides, for real, what a config change does to
that state: the libvirt, command and random/tls plugins compare old and new
inputs exactly as they would after a real ``up``. A no-change preview of the
result must plan nothing (``build`` asserts it): if this construction ever
drifts from what ``up`` writes, that check fails first.

Only for stacks whose platform is off: the kubernetes provider would need a
cluster answering at the kubeconfig K3s returns.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from typing import Any, Callable

# The engine's sentinels, as the plan policies read them too.
from policy.plan import MASK, UNKNOWN, _has

SECRET_SIG = "4dabf18193072939515e22adb298388d"
# The value under SECRET_SIG that marks a secret in a state export.
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"
LOCAL_TYPES = ("random:", "tls:")

# What `k3s-ready` prints on a real cluster: K3s's admin kubeconfig (here without credentials).
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: default
  context: {cluster: default, user: default}
current-context: default
users:
- name: default
  user: {}
"""

Run = Callable[..., Any]  # run(*pulumi_args, env=extra or None) -> CompletedProcess (text)


def _type(urn: str) -> str:
    return urn.split("::")[-2].split("$")[-1]


def _secret(value: Any) -> dict:
    return {SECRET_SIG: SECRET_VALUE, "plaintext": json.dumps(value)}


def _plan(run: Run, *extra: str, env: dict | None = None) -> dict:
    res = run("preview", "--json", *extra, env=env)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return json.loads(res.stdout)


def _stored(value: Any) -> Any:
    """A value from the engine's gRPC log as `stack import` reads it: secrets as plaintext secrets."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            # (a secret inside a secret stays one, as the engine serializes it)
            return {SECRET_SIG: value[SECRET_SIG], "plaintext": json.dumps(_stored(value.get("value")))}
        return {k: _stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value


def _known(value: Any) -> Any:
    """The value without its unknown leaves: what a provider only learns on create (a size, a stdout)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG):
            return {**value, "value": _known(value.get("value"))}
        return {k: _known(v) for k, v in value.items() if v != UNKNOWN}
    if isinstance(value, list):
        return [_known(v) for v in value if v != UNKNOWN]
    return value


def _checked_image(inputs: dict) -> str:
    """What an image check prints (components/render/image_check.py): a local source as it is, else its cache file."""
    script = inputs.get("create") if isinstance(inputs.get("create"), str) else ""
    found = dict(re.findall(r"^(src|algo|want)=(.+)$", script, re.M))
    if not {"src", "algo", "want"} <= set(found):
        return ""
    src = shlex.split(found["src"])[0]
    return src if src.startswith("/") else f"/planned/image-cache/{found['algo']}-{found['want']}.img"


def _engine_calls(log) -> tuple[dict, dict]:
    """(checked inputs, planned create response) per URN, from the CLI's gRPC log of a preview."""
    checked: dict[str, dict] = {}
    created: dict[str, dict] = {}
    for line in log.read_text().splitlines():
        call = json.loads(line)
        resp = call.get("response")
        if resp is None:
            continue
        method = call["method"].rsplit("/", 1)[1]
        urn = (call.get("request") or {}).get("urn")
        if method in ("Check", "CheckConfig") and urn:
            checked[urn] = resp.get("inputs") or {}
        elif method == "Create" and urn:
            created[urn] = resp
    return checked, created


def _resource(step: dict, checked: dict, created: dict, present: set[str]) -> dict | None:
    """A state entry for one planned create, or None while something it needs is still unknown."""
    new = step["newState"]
    urn = new["urn"]
    custom = bool(new.get("custom"))
    inputs = checked.get(urn, new.get("inputs") or {}) if custom else (new.get("inputs") or {})
    if _has(inputs, UNKNOWN) or _has(inputs, MASK):
        return None
    needs = [new.get("parent")] + list(new.get("dependencies") or [])
    provider = new.get("provider") or ""
    if provider:
        if provider.endswith("::" + UNKNOWN):
            return None
        needs.append(provider.rsplit("::", 1)[0])
    if any(n and n not in present for n in needs):
        return None
    res = {k: new[k] for k in ("urn", "custom", "type", "parent", "dependencies", "propertyDependencies", "protect", "additionalSecretOutputs") if k in new}
    res["inputs"] = _stored(inputs)
    res["outputs"] = {}
    if custom:
        plan = created.get(urn) or {}
        res["id"] = plan.get("id") or str(uuid.uuid5(uuid.NAMESPACE_URL, urn))
        outputs = _known(plan.get("properties") or {})
        for k, v in inputs.items():
            if k != "__defaults" and (k not in outputs or outputs[k] in ({}, [])):
                outputs[k] = v
        if new["type"] in ("command:remote:Command", "command:local:Command"):
            # A command's output after it ran; the program reads two: K3s's admin kubeconfig, and the
            # file an image check vouches for (each base volume's source).
            outputs.setdefault("stdout", KUBECONFIG if urn.endswith("::k3s-ready") else _checked_image(inputs))
            outputs.setdefault("stderr", "")
        res["outputs"] = _stored(outputs)
    if provider:
        res["provider"] = provider
    return res


def _export(run: Run) -> dict:
    res = run("stack", "export", "--show-secrets", env=None)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _import(run: Run, work, deployment: dict) -> None:
    path = work / ".planned-state.json"
    path.write_text(json.dumps(deployment))
    try:
        res = run("stack", "import", "--file", str(path), env=None)
        assert res.returncode == 0, f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    finally:
        path.unlink()


def build(run: Run, work, max_rounds: int = 30) -> int:
    """Bring the (empty) stack to its planned state; returns the number of rounds it took."""
    first = _plan(run)
    local = [
        s["urn"] for s in first["steps"]
        if s["op"] == "create" and (not s["newState"].get("custom") or _type(s["urn"]).startswith(LOCAL_TYPES))
        and not _type(s["urn"]).startswith("pulumi:providers:")
    ]
    targets: list[str] = []
    for urn in local:
        targets += ["--target", urn]
    res = run("up", "--yes", "--skip-preview", *targets, env=None)
    # The engine fails a targeted run on an untargeted provider that depends
    # on an untargeted resource (the kubernetes provider on K3s's kubeconfig)
    # after creating the targets: what counts is that they are all in state.
    made = {r["urn"] for r in _export(run)["deployment"]["resources"]}
    assert set(local) <= made, f"{sorted(set(local) - made)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    log = work / ".engine-calls.json"
    for rounds in range(1, max_rounds + 1):
        # The JSON display masks every secret; the CLI's gRPC log has what the
        # providers checked and planned (secrets included). It stays in the
        # throwaway stack's dir and goes at once.
        try:
            plan = _plan(run, env={"PULUMI_DEBUG_GRPC": str(log)})
            checked, created = _engine_calls(log)
        finally:
            log.unlink(missing_ok=True)
        creates = [s for s in plan["steps"] if s["op"] == "create"]
        if not creates:
            left = pending(plan)
            assert not left, "the planned state does not converge: " + "; ".join(left[:20])
            # Nothing left to do: a real `up` now only records the stack's outputs.
            res = run("up", "--yes", "--skip-preview", env=None)
            assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            return rounds
        deployment = _export(run)
        resources = deployment["deployment"]["resources"]
        present = {r["urn"] for r in resources}
        added = 0
        for step in creates:
            entry = _resource(step, checked, created, present)
            if entry is not None:
                resources.append(entry)
                present.add(entry["urn"])
                added += 1
        assert added, "no planned create can be applied: " + ", ".join(s["urn"] for s in creates[:10])
        _import(run, work, deployment)
    raise AssertionError(f"the planned state did not converge in {max_rounds} rounds")


def pending(plan: dict) -> list[str]:
    """The steps of a plan that would change something."""
    return [f"{s['op']} {s['urn']}" for s in plan["steps"] if s["op"] not in ("same", "read")]


# ------------------------------------------------------------------ a stack to build it in
def model(stack: str, base) -> dict:
    """The stack's config as the plan tests use it: its own pool and seed dir, local stand-in binaries, no platform."""
    from support.harness import stack_model

    m = stack_model(stack)
    fake = base / "fake-binary"
    fake.write_bytes(b"stands in for a binary the program uploads; nothing is uploaded here\n")
    m["dns"]["coredns"] = {"path": str(fake)}
    m["monitoring"] = {"node_exporter": {"path": str(fake)}}
    m["pool_path"] = str(base / "pool")
    m["platform"] = {**m.get("platform", {}), "enabled": False}
    return m


class PlannedStack:
    """A throwaway copy of the program with one stack, run by ``pulumi`` through ``runner`` (e.g. a Sandbox's run)."""

    def __init__(self, base, stack: str, libvirt_uri: str, runner=None):
        import subprocess

        import yaml

        from support.cli import project_copy, toolchain_bin
        from support.harness import stack_config

        self.base, self.stack = base, stack
        self.work, self.env = project_copy(base, toolchain_bin(), MICROCLOUD_SEED_DIR=str(base / "seeds"))
        self._yaml = yaml
        self._extra = {k: v for k, v in stack_config(stack).items() if k != "microcloud:config"}
        self._runner = runner or (lambda cmd, **kw: subprocess.run(cmd, **kw))
        self.base_model = model(stack, base)
        self.base_model["libvirt_uri"] = libvirt_uri
        self.write(self.base_model)
        res = self._runner(["pulumi", "stack", "init", stack, "--secrets-provider", "passphrase"], cwd=self.work, env=self.env,
                           capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr

    def write(self, m: dict) -> None:
        doc = {"config": {**self._extra, "microcloud:config": m}}
        (self.work / f"Pulumi.{self.stack}.yaml").write_text(self._yaml.safe_dump(doc, sort_keys=False))

    def run(self, *args: str, env: dict | None = None):
        cmd = ["pulumi", "--non-interactive", "--color=never", *args]
        if args[:1] != ("stack",) or args[:2] in (("stack", "export"), ("stack", "import")):
            cmd += ["--stack", self.stack]
        return self._runner(cmd, cwd=self.work, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=900)

    def build(self) -> int:
        return build(self.run, self.work)

    def preview(self, m: dict, *extra: str) -> tuple[dict, "object"]:
        """The engine's plan (JSON) for config ``m`` against the built state, and the CLI run."""
        self.write(m)
        try:
            res = self.run("preview", "--json", *extra)
        finally:
            self.write(self.base_model)
        return (json.loads(res.stdout) if res.stdout.strip() else {}), res
