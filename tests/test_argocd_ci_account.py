"""Argo CD's CI account (platform.ci_account): its config in argocd-cm and argocd-rbac-cm, and the API token
Pulumi signs with argocd-secret's server key and lists in that Secret.

Here: the rendered values, the token's claims and signature, and the program's graph under mocks (what is
secret, what a keeper rotates). Argo CD's own code reading them is in tests/test_argocd_verify.py.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json

import pytest

from components.config import ConfigError, parse_config
from components.render.platform.argocd import CI_ROLE, ArgoCdSpec, argocd_values, ci_policy_csv
from components.render.platform.argocd_token import ApiToken, sign_token, token_claims, tokens_entry, tokens_key
from support.harness import run_program, stack_model

SECRET = "kubernetes:core/v1:Secret"
KEY = "k" * 48
TOKEN_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# ------------------------------------------------------------------ rendered


@pytest.mark.unit
def test_the_account_has_api_keys_only_and_get_and_sync_on_the_apps_project_only():
    values = argocd_values(ArgoCdSpec(domain="example.test", keep_crds=False))
    cm, rbac = values["configs"]["cm"], values["configs"]["rbac"]
    assert cm["accounts.github-actions"] == "apiKey"  # no "login": no UI or CLI session
    assert rbac["policy.default"] == ""
    lines = [ln.split(", ") for ln in rbac["policy.csv"].splitlines()]
    assert lines == [
        ["p", CI_ROLE, "applications", "get", "microcloud-apps/*", "allow"],
        ["p", CI_ROLE, "applications", "sync", "microcloud-apps/*", "allow"],
        ["g", "github-actions", CI_ROLE],
    ]
    none = argocd_values(ArgoCdSpec(domain="example.test", keep_crds=False, ci_account=None))
    assert not [k for k in none["configs"]["cm"] if k.startswith("accounts.")]
    assert none["configs"]["rbac"]["policy.csv"] == ""


@pytest.mark.unit
def test_the_token_is_argo_cds_own_shape_signed_hs256_with_the_server_key():
    t = ApiToken(account="github-actions", token_id=TOKEN_ID, issued_at=1767225600)
    jwt = sign_token(t, KEY)
    header, payload, sig = jwt.split(".")
    assert b64url_json(header) == {"alg": "HS256", "typ": "JWT"}
    assert b64url_json(payload) == {"iss": "argocd", "sub": "github-actions:apiKey", "iat": 1767225600, "nbf": 1767225600, "jti": TOKEN_ID}
    want = hmac.new(KEY.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) == want
    # Another key, another signature.
    assert sign_token(t, "x" * 48).split(".")[2] != sig
    assert json.loads(tokens_entry([t])) == [{"id": TOKEN_ID, "iat": 1767225600}]
    assert tokens_key("github-actions") == "accounts.github-actions.tokens"
    assert token_claims(ApiToken("ci", TOKEN_ID, 10, expires_at=20))["exp"] == 20


@pytest.mark.unit
@pytest.mark.parametrize("token, said", [
    (ApiToken("admin", TOKEN_ID, 1), "not admin"),
    (ApiToken("Git Hub", TOKEN_ID, 1), "not a local account"),
    (ApiToken("ci", "not-a-uuid", 1), "not a UUID"),
    (ApiToken("ci", TOKEN_ID, 0), "positive"),
    (ApiToken("ci", TOKEN_ID, 5, expires_at=5), "end before"),
])
def test_bad_tokens_are_refused(token, said):
    with pytest.raises(ValueError) as err:
        sign_token(token, KEY)
    assert said in str(err.value)


@pytest.mark.unit
def test_a_short_server_key_is_refused():
    with pytest.raises(ValueError):
        sign_token(ApiToken("ci", TOKEN_ID, 1), "short")


@pytest.mark.unit
def test_the_config_names_the_account_or_none():
    model = stack_model("dev")
    model["platform"] = {"ci_account": "admin"}
    with pytest.raises(ConfigError) as err:
        parse_config(model)
    assert "cannot be admin" in str(err.value)
    model["platform"] = {"ci_account": "CI Bot"}
    with pytest.raises(ConfigError):
        parse_config(model)
    model["platform"] = {"ci_account": None}
    assert parse_config(model).platform.ci_account is None


# ------------------------------------------------------------------ the program's graph


def string_data(run) -> dict:
    """argocd-secret's string_data: secret as a whole (the wire wraps it in a secret value)."""
    secret = run.one(SECRET, "platform-argocd-secret")
    assert "stringData" in secret.secret_inputs
    return secret.inputs["stringData"]["value"]


@pytest.fixture(scope="module")
def dev():
    run = run_program("dev")
    assert run.error is None, run.error
    return run


@pytest.mark.graph
def test_the_secret_lists_the_token_the_stack_exports(dev):
    token, secret = dev.output_value("argocd_ci_token")
    assert secret, "argocd_ci_token must be a secret output"
    header, payload, sig = token.split(".")
    claims = b64url_json(payload)
    data = string_data(dev)
    listed = json.loads(data["accounts.github-actions.tokens"])
    assert listed == [{"id": claims["jti"], "iat": claims["iat"]}] and claims["iat"] == 1767225600
    key = data["server.secretkey"]
    assert hmac.compare_digest(
        base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)),
        hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest(),
    )
    # The token is in no clear input of any resource.
    for r in dev.resources:
        for name, v in r.inputs.items():
            if name not in r.secret_inputs:
                assert sig not in json.dumps(v), (r.name, name)


@pytest.mark.graph
def test_the_keeper_makes_a_new_token_and_lists_only_it(dev):
    model = copy.deepcopy(stack_model("dev"))
    model.setdefault("platform", {})["rotation"] = {"argocd-ci-token": "2026-12"}
    bumped = run_program("dev", model)
    assert bumped.error is None, bumped.error
    old, _ = dev.output_value("argocd_ci_token")
    new, _ = bumped.output_value("argocd_ci_token")
    old_id, new_id = b64url_json(old.split(".")[1])["jti"], b64url_json(new.split(".")[1])["jti"]
    assert old_id != new_id
    listed = json.loads(string_data(bumped)["accounts.github-actions.tokens"])
    assert [t["id"] for t in listed] == [new_id]


@pytest.mark.graph
def test_no_ci_account_no_token():
    model = copy.deepcopy(stack_model("dev"))
    model.setdefault("platform", {})["ci_account"] = None
    run = run_program("dev", model)
    assert run.error is None, run.error
    assert "argocd_ci_token" not in run.outputs
    assert not [k for k in string_data(run) if k.startswith("accounts.")]
