"""Run the real program (__main__.py) under Pulumi mocks and record every registration.

Used by the graph tests and by bench/program_bench.py. The recording monitor
keeps what the engine would see: parent, dependencies, provider, options,
and whether each input arrived as a secret.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import runpy
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"
PROJECT = "microcloud"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"

STACKS = Path(__file__).resolve().parents[1] / "stacks"
# The edge topologies (tests/stacks/Pulumi.<name>.yaml), used by every tier.
EDGE_STACKS = tuple(sorted(p.name[len("Pulumi."):-len(".yaml")] for p in STACKS.glob("Pulumi.*.yaml")))


def stack_file(stack: str) -> Path:
    """Pulumi.<stack>.yaml: dev and prod at the project root, the edge topologies in tests/stacks/."""
    root = ROOT / f"Pulumi.{stack}.yaml"
    return root if root.exists() else STACKS / f"Pulumi.{stack}.yaml"


def stack_config(stack: str) -> dict:
    """The whole ``config:`` mapping of Pulumi.<stack>.yaml."""
    return yaml.safe_load(stack_file(stack).read_text())["config"]


def stack_model(stack: str) -> dict:
    return copy.deepcopy(stack_config(stack)["microcloud:config"])


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    provider: str
    protect: bool
    delete_before_replace: bool
    ignore_changes: list[str]
    replace_on_changes: list[str]
    additional_secret_outputs: list[str]
    secret_inputs: set[str]
    inputs: dict[str, Any]
    # Resource hook names by kind (before_create, before_update, ...): only kinds with a hook.
    hooks: dict[str, list[str]]


def _secret_keys(struct_json: dict) -> set[str]:
    """Top-level input names whose wire value is (or contains) a secret."""

    def has_secret(v: Any) -> bool:
        if isinstance(v, dict):
            if v.get("4dabf18193072939515e22adb298388d") == SECRET_SIG:
                return True
            return any(has_secret(x) for x in v.values())
        if isinstance(v, list):
            return any(has_secret(x) for x in v)
        return False

    return {k for k, v in struct_json.items() if has_secret(v)}


class RecordingMonitor(pmocks.MockMonitor):
    def __init__(self, mocks: pmocks.Mocks):
        super().__init__(mocks)
        self.registrations: dict[str, Registration] = {}

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        raw = json_format.MessageToDict(request.object) if request.object else {}
        self.registrations[resp.urn] = Registration(
            type=request.type,
            name=request.name,
            urn=resp.urn,
            parent=request.parent,
            custom=request.custom,
            dependencies=list(request.dependencies),
            property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
            provider=request.provider,
            protect=request.protect,
            delete_before_replace=request.deleteBeforeReplace,
            ignore_changes=list(request.ignoreChanges),
            replace_on_changes=list(request.replaceOnChanges),
            additional_secret_outputs=list(request.additionalSecretOutputs),
            secret_inputs=_secret_keys(raw),
            inputs=raw,
            hooks={f.name: list(v) for f, v in request.hooks.ListFields()} if request.HasField("hooks") else {},
        )
        return resp


def mock_public_key(name: str) -> str:
    """The OpenSSH ed25519 public key the mocks give the tls.PrivateKey ``name``: one of its own per key."""
    blob = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + hashlib.sha256(name.encode()).digest()).decode()
    return f"ssh-ed25519 {blob}"


def mock_certificate(name: str) -> str:
    """A PEM block of its own per certificate ``name`` (not a parsable certificate: the program only hashes and embeds it)."""
    body = base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


class Mocks(pmocks.Mocks):
    """Plausible provider answers: ids, and the computed fields the program reads."""

    def new_resource(self, args: pmocks.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            state["publicKeyOpenssh"] = mock_public_key(args.name) + "\n"
            state["privateKeyOpenssh"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nmock\n-----END OPENSSH PRIVATE KEY-----\n"
            state["privateKeyPem"] = f"-----BEGIN EC PRIVATE KEY-----\nmock-pem-{args.name}\n-----END EC PRIVATE KEY-----\n"
        elif args.typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            state["certPem"] = mock_certificate(args.name)
            state["validityEndTime"] = "2027-03-02T00:00:00Z"
        elif args.typ == "tls:index/certRequest:CertRequest":
            state["certRequestPem"] = "-----BEGIN CERTIFICATE REQUEST-----\nbW9jaw==\n-----END CERTIFICATE REQUEST-----\n"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            # As long as asked for (a K3s token password is 48), starting with the marker the leak tests search for.
            state["result"] = ("m0ckPass" * 8)[: int(args.inputs.get("length", 8))]
        elif args.typ == "command:remote:Command" and args.name.endswith("-postgresql-packages"):
            # The postgres user's uid and gid (specs/database.py packages_script).
            state["stdout"] = "104 111\n"
        elif args.typ == "command:remote:Command":
            state["stdout"] = ""
        elif args.typ == "command:local:Command" and args.name.endswith("-argocd-ci-token-issued"):
            # `date -u +%s` on the Pulumi host.
            state["stdout"] = "1767225600"
        elif args.typ == "random:index/randomUuid:RandomUuid":
            state["result"] = str(uuid.uuid5(uuid.NAMESPACE_URL, args.name + json.dumps(args.inputs.get("keepers", {}), sort_keys=True)))
        elif args.typ == "command:local:Command" and args.name.startswith("check-"):
            # What an image check prints: the checked file (components/render/image_check.py).
            state["stdout"] = f"/checked/{args.name}.img"
        return f"{args.name}-id", state

    def call(self, args: pmocks.MockCallArgs):
        return {}


@dataclass
class Run:
    monitor: RecordingMonitor
    outputs: dict[str, pulumi.Output]
    error: Optional[BaseException] = None

    @property
    def resources(self) -> list[Registration]:
        return list(self.monitor.registrations.values())

    def by_type(self, typ: str) -> list[Registration]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str) -> Registration:
        found = [r for r in self.resources if r.type == typ and r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, got {len(found)}"
        return found[0]

    def urn_of(self, typ: str, name: str) -> str:
        return self.one(typ, name).urn

    def output_value(self, name: str) -> tuple[Any, bool]:
        """(value, is_secret) of a stack export."""
        out = pulumi.Output.from_input(self.outputs[name])
        return _sync_await(out.future()), _sync_await(out.is_secret())


# Stand in for the CoreDNS and node_exporter binaries the program uploads (it only hashes them here).
FAKE_COREDNS = Path(tempfile.gettempdir()) / "microcloud-tests-coredns"
FAKE_NODE_EXPORTER = Path(tempfile.gettempdir()) / "microcloud-tests-node-exporter"


def with_stand_in_binaries(model: dict) -> dict:
    """``model`` with stand-ins for the CoreDNS and node_exporter builds it does not give a path for.

    The stacks pin the real builds' sha256 (checked before any resource): a stand-in is pinned by its own.
    """
    for section, key, fake in (("dns", "coredns", FAKE_COREDNS), ("monitoring", "node_exporter", FAKE_NODE_EXPORTER)):
        binary = model.setdefault(section, {}).setdefault(key, {})
        if not binary.get("path"):
            fake.write_bytes(f"not really {key}\n".encode())
            binary.update(path=str(fake), sha256=hashlib.sha256(fake.read_bytes()).hexdigest())
    return model


def run_program(stack: str = "dev", model: Optional[dict] = None, preview: bool = False,
                secrets: Optional[dict[str, str]] = None, clear: Optional[dict[str, str]] = None) -> Run:
    """Evaluate __main__.py for ``stack`` (config from Pulumi.<stack>.yaml unless ``model`` is given).

    ``secrets``: more config keys of the project (``ghcr_token``), set as `pulumi config set --secret` sets them;
    ``clear``: more keys set without ``--secret``.
    """
    config = stack_config(stack)
    model = with_stand_in_binaries(copy.deepcopy(model if model is not None else config["microcloud:config"]))
    extra = {f"{PROJECT}:{k}": v for k, v in {**(clear or {}), **(secrets or {})}.items()}
    config = {**config, "microcloud:config": model, **extra}
    # NoCloud seeds are written by the program: into a scratch dir, not ~/.cache.
    os.environ.setdefault("MICROCLOUD_SEED_DIR", tempfile.mkdtemp(prefix="microcloud-seeds-"))
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()},
                                  secret_keys=[f"{PROJECT}:{k}" for k in (secrets or {})])
    monitor = RecordingMonitor(Mocks())
    pulumi.runtime.settings.set_root_resource(None)  # a fresh Stack (and exports) per run
    pulumi.runtime.set_mocks(Mocks(), project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    root = pulumi.runtime.get_root_resource()
    error = None
    try:
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(MAIN), run_name="__main__")))
    except Exception as exc:  # the tests assert on it
        error = exc
    outputs = dict(getattr(root, "outputs", {}) or {})
    return Run(monitor=monitor, outputs=outputs, error=error)


def assert_stacks_pin_build(binary: Path, key: str) -> None:
    """dev and prod pin ``binary`` (a local build of .ci/) by its sha256 at ``key`` (``dns.coredns``): what the nodes get."""
    import subprocess

    from components.config import file_sha256, parse_config

    got = file_sha256(str(binary))
    go = subprocess.run(["go", "version", str(binary)], capture_output=True, text=True).stdout.strip() or "an unknown Go"
    for stack in ("dev", "prod"):
        section, name = key.split(".")
        pinned = getattr(getattr(parse_config(stack_model(stack)), section), name).sha256
        assert pinned == got, (f"{stack}: {key}.sha256 is {pinned}, the build at {binary} ({go}) is {got}: "
                               "the stacks pin go1.26.8's build; with another Go, pin yours")
