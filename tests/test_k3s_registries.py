"""K3s' registries.yaml (k3s.registries): the config, the rendered file read by K3s' own loader, the install
script that delivers it, and the program's graph (a secret on every node's stdin, a new token an update).

The reader is .ci/registries-check (built from Go modules by .ci/registries-check.sh): K3s' registries
loader (github.com/rancher/wharfie/pkg/registries, what K3s builds containerd's registry config with)
plus a strict reading of the same types, so a key K3s would ignore fails here.
"""

from __future__ import annotations

import base64
import copy
import json
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from components import specs
from components.config import ConfigError, StackKeyError, check_secret_keys, check_stack_keys, parse_config
from components.render import k3s, k3s_pki
from components.render.k3s_registries import (
    HEADER,
    REGISTRIES_PATH,
    Mirror,
    RegistriesSpec,
    RegistryAuth,
    RegistryConfig,
    check_registries,
    render_registries,
)
from support.harness import run_program, stack_model
from support.k3s_node import Node, k3s_nodes
from support.k3s_pki import join_input
from support.platform_render import CONFIGS

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ghp_" + "T0kenV4lue" * 4
OTHER_TOKEN = "ghp_" + "N3wT0ken" * 5

GHCR = {
    "mirrors": {"docker.io": {"endpoints": ["https://mirror.lan:5000"], "rewrites": {"^library/(.*)": "hub/$1"}}},
    "configs": {
        "ghcr.io": {"auth": {"username": "microcloud-bot", "password_key": "ghcr_token"}},
        "mirror.lan:5000": {"ca_file": "/etc/ssl/certs/mirror-ca.pem"},
    },
}


def with_registries(stack: str = "dev", registries: dict = GHCR) -> dict:
    model = stack_model(stack)
    model["k3s"]["registries"] = copy.deepcopy(registries)
    return model


# ------------------------------------------------------------------ the reader: K3s' own loader


@pytest.fixture(scope="module")
def checker() -> str:
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "registries-check.sh")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = "\n".join(proc.stderr.splitlines()[-5:])
        pytest.skip(f"k3s-registries-check is not built and .ci/registries-check.sh could not build it: {tail}")
    return proc.stdout.strip().splitlines()[-1]


def read_by_k3s(checker: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    f = tmp_path / "registries.yaml"
    f.write_text(text)
    return subprocess.run([checker, str(f)], capture_output=True, text=True, timeout=60)


@pytest.mark.validators
@pytest.mark.parametrize("stack", sorted(CONFIGS))
def test_every_stack_with_registries_renders_a_file_k3s_reads(stack, checker, tmp_path):
    model = stack_model(stack)
    model["k3s"]["registries"] = copy.deepcopy(GHCR)
    cfg = parse_config(model)
    text = render_registries(specs.k3s_registries(cfg, {"ghcr_token": TOKEN}))
    res = read_by_k3s(checker, text, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "1 mirrors, 2 configs, 1 with auth" in res.stdout
    # The reader never prints a value of the file.
    assert TOKEN not in res.stdout + res.stderr


@pytest.mark.validators
def test_the_rendered_file_has_k3s_documented_shape(checker, tmp_path):
    spec = RegistriesSpec(
        mirrors={"*": Mirror(endpoints=("https://cache.lan",)), "docker.io": Mirror(endpoints=("https://a.lan:5000", "http://127.0.0.1:5001"))},
        configs={"ghcr.io": RegistryConfig(auth=RegistryAuth("u", TOKEN)), "*": RegistryConfig(insecure_skip_verify=True)},
    )
    text = render_registries(spec)
    assert text.startswith(HEADER)
    doc = yaml.safe_load(text)
    assert doc["mirrors"]["docker.io"] == {"endpoint": ["https://a.lan:5000", "http://127.0.0.1:5001"]}
    assert doc["configs"]["ghcr.io"] == {"auth": {"username": "u", "password": TOKEN}}
    assert doc["configs"]["*"] == {"tls": {"insecure_skip_verify": True}}
    assert read_by_k3s(checker, text, tmp_path).returncode == 0
    # Equal specs, equal text (the install compares files by hash).
    assert render_registries(spec) == text


@pytest.mark.validators
@pytest.mark.parametrize(
    "mutate, said",
    [
        (lambda d: d["mirrors"]["docker.io"].update(endpoints=d["mirrors"]["docker.io"].pop("endpoint")), "field endpoints not found"),
        (lambda d: d["configs"]["ghcr.io"]["auth"].update(token=d["configs"]["ghcr.io"]["auth"].pop("password")), "field token not found"),
        (lambda d: d["mirrors"]["docker.io"].update(endpoint=["registry.lan:5000"]), "is not an http(s) URL"),
        (lambda d: d["mirrors"]["docker.io"].update(rewrite={"(": "x"}), "is not a regular expression"),
        (lambda d: d["configs"]["ghcr.io"]["auth"].pop("password"), "no password"),
        (lambda d: d.update(auths={"ghcr.io": {"username": "u"}}), "deprecated"),
    ],
)
def test_the_reader_refuses_what_k3s_would_not_use(mutate, said, checker, tmp_path):
    """The reader can fail: each mutation of a good file is one K3s would ignore or refuse."""
    spec = RegistriesSpec(mirrors={"docker.io": Mirror(endpoints=("https://a.lan",))}, configs={"ghcr.io": RegistryConfig(auth=RegistryAuth("u", TOKEN))})
    doc = yaml.safe_load(render_registries(spec))
    mutate(doc)
    res = read_by_k3s(checker, yaml.safe_dump(doc), tmp_path)
    assert res.returncode == 1 and said in res.stderr, res.stderr
    assert TOKEN not in res.stderr


# ------------------------------------------------------------------ the config


@pytest.mark.unit
@pytest.mark.parametrize(
    "registries, said",
    [
        ({"mirrors": {"https://ghcr.io": {"endpoints": ["https://m.lan"]}}}, "is not a registry host"),
        ({"mirrors": {"docker.io": {"endpoints": []}}}, "at least 1 item"),
        ({"mirrors": {"docker.io": {"endpoints": ["ftp://m.lan"]}}}, "is not an http(s) URL"),
        ({"mirrors": {"docker.io": {"endpoints": ["https://u:p@m.lan"]}}}, "carries no credentials"),
        ({"mirrors": {"docker.io": {"endpoints": ["https://m.lan"], "rewrites": {"[": "x"}}}}, "is not a regular expression"),
        ({"configs": {"ghcr.io": {}}}, "give auth, ca_file or insecure_skip_verify"),
        ({"configs": {"ghcr.io": {"auth": {"username": "u", "password": "inline"}}}}, "password"),
        ({"configs": {"ghcr.io": {"auth": {"username": "u", "password_key": "Has-Caps"}}}}, "password_key"),
        ({"configs": {"ghcr.io": {"ca_file": "certs/ca.pem"}}}, "ca_file"),
    ],
)
def test_bad_registries_settings_stop_with_one_line(registries, said):
    with pytest.raises(ConfigError) as err:
        parse_config(with_registries(registries=registries))
    assert said in str(err.value) and "k3s.registries" in str(err.value)


@pytest.mark.unit
def test_private_registry_cannot_move_the_file_behind_the_programs_back():
    model = stack_model("dev")
    model["k3s"]["extra_args"] = {"agent": {"private-registry": "/etc/other.yaml"}}
    with pytest.raises(ConfigError) as err:
        parse_config(model)
    assert "private-registry" in str(err.value)


@pytest.mark.unit
def test_relaxed_tls_and_plain_http_are_warned():
    cfg = parse_config(with_registries(registries={
        "mirrors": {"docker.io": {"endpoints": ["http://mirror.lan:5000", "http://127.0.0.1:5000"]}},
        "configs": {"mirror.lan:5000": {"insecure_skip_verify": True}},
    }))
    said = cfg.k3s.relaxations()
    assert any("insecure_skip_verify" in w and "mirror.lan:5000" in w for w in said)
    assert any("http://mirror.lan:5000 is plain http" in w for w in said)
    assert not any("127.0.0.1" in w for w in said)
    assert parse_config(with_registries()).k3s.relaxations() == []


@pytest.mark.unit
def test_the_token_comes_only_from_a_secret_config_key():
    cfg = parse_config(with_registries())
    keys = {"microcloud:config", "microcloud:ghcr_token"}
    check_stack_keys(keys, {"microcloud:ghcr_token"})
    check_secret_keys(cfg, keys, {"microcloud:ghcr_token"})
    with pytest.raises(StackKeyError) as err:
        check_secret_keys(cfg, {"microcloud:config"}, set())
    assert "microcloud:ghcr_token is not set" in str(err.value) and "pulumi config set --secret ghcr_token" in str(err.value)
    with pytest.raises(StackKeyError) as err:
        check_secret_keys(cfg, keys, set())
    assert "is set in clear" in str(err.value)
    # A clear project key is still a typo of microcloud:config.
    with pytest.raises(StackKeyError):
        check_stack_keys(keys, set())
    # A secret nobody names is a leftover.
    plain = parse_config(stack_model("dev"))
    with pytest.raises(StackKeyError) as err:
        check_secret_keys(plain, keys, {"microcloud:ghcr_token"})
    assert "no setting names" in str(err.value)


@pytest.mark.unit
def test_a_control_character_in_a_password_is_refused_without_showing_it():
    spec = RegistriesSpec(configs={"ghcr.io": RegistryConfig(auth=RegistryAuth("u", "abc\ndef"))})
    with pytest.raises(ValueError) as err:
        check_registries(spec)
    assert "control character" in str(err.value) and "abc" not in str(err.value)


# ------------------------------------------------------------------ the install script on a node


def agent_spec(box: Node) -> k3s.K3sInstallSpec:
    agent = next(n for n in k3s_nodes(CONFIGS["prod"]) if n.role == "agent")
    return box.spec(agent)


def registries_text(token: str = TOKEN) -> str:
    return render_registries(specs.k3s_registries(parse_config(with_registries()), {"ghcr_token": token}))


@pytest.mark.validators
def test_the_install_writes_the_file_root_only_and_restarts_k3s_only_for_a_change(tmp_path):
    box = Node(tmp_path)
    spec = agent_spec(box)
    script = k3s.render_k3s_install(spec)
    assert TOKEN not in script and "registries" in script
    res = box.run(spec, stdin=join_input(spec.node, registries=registries_text()))
    assert res.returncode == 0, res.stderr
    f = box.path(REGISTRIES_PATH)
    assert f.read_text() == registries_text()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert box.calls("restart") == 1
    assert TOKEN not in res.stdout + res.stderr
    # The same file again: nothing restarts.
    res = box.run(spec, stdin=join_input(spec.node, registries=registries_text()))
    assert res.returncode == 0 and "nothing changed" in res.stdout
    assert box.calls("restart") == 1
    # A new token: the file changes and K3s restarts once more.
    res = box.run(spec, stdin=join_input(spec.node, registries=registries_text(OTHER_TOKEN)))
    assert res.returncode == 0, res.stderr
    assert OTHER_TOKEN in f.read_text() and TOKEN not in f.read_text()
    assert box.calls("restart") == 2
    # Registries gone from the config: the program's file goes, with a restart.
    res = box.run(spec, stdin=join_input(spec.node))
    assert res.returncode == 0, res.stderr
    assert not f.exists()
    assert box.calls("restart") == 3


@pytest.mark.validators
def test_a_file_the_program_did_not_write_is_left_alone(tmp_path):
    box = Node(tmp_path)
    spec = agent_spec(box)
    f = box.path(REGISTRIES_PATH)
    f.parent.mkdir(parents=True)
    f.write_text("mirrors: {}\n")
    res = box.run(spec)
    assert res.returncode == 0, res.stderr
    assert f.read_text() == "mirrors: {}\n"


@pytest.mark.validators
def test_k3s_refusing_the_new_file_gets_the_old_one_back(tmp_path):
    """K3s reads registries.yaml when it starts: a start that fails with the new file restores the old one."""
    box = Node(tmp_path)
    spec = agent_spec(box)
    assert box.run(spec, stdin=join_input(spec.node, registries=registries_text())).returncode == 0
    before = box.path(REGISTRIES_PATH).read_text()
    # The stand-in systemctl fails a restart while config.yaml holds FAIL_MARK: change config.yaml and the file together.
    bad = spec.node.__class__(**{**spec.node.__dict__, "node_labels": ("microcloud.lan/fail=yes",)})
    res = box.run(box.spec(bad), stdin=join_input(bad, registries=registries_text(OTHER_TOKEN)), FAIL_MARK="microcloud.lan/fail")
    assert res.returncode == 1 and "the previous ones are back" in res.stderr
    assert box.path(REGISTRIES_PATH).read_text() == before
    assert OTHER_TOKEN not in res.stderr + res.stdout


@pytest.mark.unit
def test_the_join_input_carries_the_file_base64_on_one_line():
    node = k3s_nodes(CONFIGS["dev"])[0]
    text = registries_text()
    lines = join_input(node, registries=text).splitlines()
    (line,) = [ln for ln in lines if ln.startswith("registries ")]
    assert base64.b64decode(line.split(" ", 1)[1]).decode() == text
    assert not any(ln.startswith("registries ") for ln in join_input(node).splitlines())
    # Every role gets it.
    for n in k3s_nodes(CONFIGS["prod"]):
        spec = k3s_pki.join_input_for(n.role, n.cluster_init, server_token="K10" + "0" * 64 + "::server:x", agent_token="K10" + "0" * 64 + "::node:y",
                                      files={}, registries=text)
        assert spec.registries == text


# ------------------------------------------------------------------ the program's graph


def k3s_installs(run) -> dict:
    return {r.name: r for r in run.by_type("command:remote:Command") if r.name.endswith(("-k3s", "-k3s-bootstrap"))}


def registries_of(cmd) -> str:
    for line in cmd.inputs["stdin"]["value"].splitlines():
        if line.startswith("registries "):
            return base64.b64decode(line.split(" ", 1)[1]).decode()
    return ""


@pytest.mark.graph
def test_every_k3s_node_gets_the_file_as_a_secret_and_a_new_token_is_an_update():
    run = run_program("prod", with_registries("prod"), secrets={"ghcr_token": TOKEN})
    assert run.error is None, run.error
    installs = k3s_installs(run)
    assert {n.name for n in CONFIGS["prod"].nodes_with("server", "agent", "storage")} <= {n.removesuffix("-k3s") for n in installs}
    for name, cmd in installs.items():
        assert "stdin" in cmd.secret_inputs, name
        assert registries_of(cmd) == registries_text(), name
        # Nowhere in clear: not in the script, not in a trigger.
        clear = json.dumps({k: v for k, v in cmd.inputs.items() if k != "stdin"})
        assert TOKEN not in clear, name
    again = run_program("prod", with_registries("prod"), secrets={"ghcr_token": OTHER_TOKEN})
    assert again.error is None, again.error
    for name, cmd in k3s_installs(again).items():
        assert registries_of(cmd) == registries_text(OTHER_TOKEN), name
        # The same script and triggers: the command updates (runs again, in order) and no VM is replaced.
        assert cmd.inputs["create"] == installs[name].inputs["create"], name
        assert cmd.inputs["triggers"] == installs[name].inputs["triggers"], name
        assert sorted(cmd.dependencies) == sorted(installs[name].dependencies), name


@pytest.mark.graph
def test_a_missing_or_clear_token_stops_the_run_naming_the_key():
    run = run_program("dev", with_registries("dev"))
    assert run.error is not None and "microcloud:ghcr_token is not set" in str(run.error)
    run = run_program("dev", with_registries("dev"), clear={"ghcr_token": TOKEN})
    assert run.error is not None and "is set in clear" in str(run.error)
    assert TOKEN not in str(run.error)


@pytest.mark.graph
def test_without_registries_no_node_gets_a_file():
    run = run_program("dev")
    assert run.error is None, run.error
    assert all(registries_of(cmd) == "" for cmd in k3s_installs(run).values())
