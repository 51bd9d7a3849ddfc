"""The CI account's token and policy read by Argo CD's own code (tests/support/argocd_verify.py).

argocd-cm and argocd-rbac-cm as the pinned argo-cd chart renders them from the program's values
(`helm template`), argocd-secret as the program writes it, and the token the program signs: Argo CD
v3.4.4's session manager must accept it for the CI account and its RBAC enforcer must allow exactly
`get` and `sync` on the apps' project. What it must refuse is shown too: a rotated-out token, another
key, a disabled account, a token id nobody listed. The same check against the objects a real API server
holds after `pulumi up` is in tests/k8s/test_platform_engine.py.
"""

from __future__ import annotations

import json

import pytest

from components.chart_pins import CHARTS
from components.render import platform as pv
from components.render.platform.argocd_token import ApiToken, sign_token, tokens_entry, tokens_key
from support.argocd_verify import validate_policy, verifier, verify
from support.netpol import helm_bin, helm_template
from support.platform_render import CHART_DIR

pytestmark = pytest.mark.validators

KEY = "Zq3" * 16
TOKEN = ApiToken(account="github-actions", token_id="5b3c1f8e-7d7a-4a53-9c63-0e1f2a3b4c5d", issued_at=1767225600)
APPS = pv.APP_PROJECT
ALLOWED = [f"applications,get,{APPS}/example:allow", f"applications,sync,{APPS}/example:allow"]
DENIED = [
    f"applications,delete,{APPS}/example:deny", f"applications,create,{APPS}/example:deny",
    f"applications,update,{APPS}/example:deny", f"applications,action/apps/Deployment/restart,{APPS}/example:deny",
    f"applications,get,{pv.ROOT_PROJECT}/root:deny", "applications,sync,default/guestbook:deny",
    f"projects,get,{APPS}:deny", "clusters,get,*:deny", "repositories,get,*:deny", "logs,get,*:deny",
]


@pytest.fixture(scope="module")
def binary() -> str:
    found = verifier()
    if found is None:
        pytest.skip("no argocd-verify beside the plugins (tests/support/argocd_verify.py says where it comes from)")
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, dict]:
    """argocd-cm and argocd-rbac-cm from the pinned chart with the program's values."""
    helm = helm_bin()
    chart = CHART_DIR / f"argo-cd-{CHARTS['argo-cd'].version}"
    if helm is None or not chart.is_dir():
        pytest.skip(f"helm (.ci/k8s.sh) or the argo-cd chart ({chart}) is missing")
    values = pv.argocd_values(pv.ArgoCdSpec(domain="microcloud.lan", keep_crds=False))
    docs = helm_template(helm, chart, "argocd", pv.ARGOCD_NAMESPACE, values, tmp_path_factory.mktemp("argocd"))
    by_name = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    return {"cm": by_name["argocd-cm"], "rbac": by_name["argocd-rbac-cm"]}


def secret(*tokens: ApiToken, key: str = KEY) -> dict:
    """argocd-secret as the program writes it (components/platform/argocd.py)."""
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": pv.ARGOCD_SECRET, "namespace": pv.ARGOCD_NAMESPACE, "labels": {"app.kubernetes.io/part-of": "argocd"}},
        "type": "Opaque",
        "stringData": {"server.secretkey": key, "admin.passwordMtime": "2026-01-01T00:00:00Z",
                       tokens_key("github-actions"): tokens_entry(list(tokens))},
    }


def test_the_chart_rendered_config_carries_the_account_and_policy(rendered):
    assert rendered["cm"]["data"]["accounts.github-actions"] == "apiKey"
    assert rendered["rbac"]["data"]["policy.csv"] == pv.ci_policy_csv("github-actions", APPS)


def test_argo_cds_own_policy_validator_accepts_the_policy(binary, rendered):
    res = validate_policy(binary, rendered["rbac"])
    assert res.returncode == 0, res.stderr
    # ... and it can refuse: a rule with a field missing.
    broken = json.loads(json.dumps(rendered["rbac"]))
    broken["data"]["policy.csv"] += "p, role:x, applications, get\n"
    assert validate_policy(binary, broken).returncode != 0


def test_argo_cd_accepts_the_token_and_allows_exactly_get_and_sync(binary, rendered):
    token = sign_token(TOKEN, KEY)
    rc, answer, err = verify(binary, cm=rendered["cm"], rbac=rendered["rbac"], secret=secret(TOKEN), token=token,
                             checks=ALLOWED + DENIED)
    assert rc == 0 and answer["ok"], (answer, err[-2000:])
    assert answer["subject"] == "github-actions"
    assert {c["check"]: c["got"] for c in answer["checks"]} == {c: c.rsplit(":", 1)[1] for c in ALLOWED + DENIED}


@pytest.mark.parametrize("case, said", [
    ("rotated", "does not have token with id"),
    ("other-key", "signature is invalid"),
    ("disabled", "is disabled"),
    ("no-account", "account 'github-actions' does not exist"),
])
def test_argo_cd_refuses_what_it_must(binary, rendered, case, said):
    cm, listed, key = json.loads(json.dumps(rendered["cm"])), [TOKEN], KEY
    token = sign_token(TOKEN, KEY)
    if case == "rotated":
        # The keeper made a new id: the Secret lists only it, the old token is refused.
        listed = [ApiToken(account="github-actions", token_id="9d9b3a1c-2f4e-4c1a-8b7d-6e5f4a3b2c1d", issued_at=TOKEN.issued_at + 60)]
    elif case == "other-key":
        token = sign_token(TOKEN, "another-server-key-" + "x" * 20)
    elif case == "disabled":
        cm["data"]["accounts.github-actions.enabled"] = "false"
    elif case == "no-account":
        del cm["data"]["accounts.github-actions"]
    rc, answer, err = verify(binary, cm=cm, rbac=rendered["rbac"], secret=secret(*listed, key=key), token=token, checks=ALLOWED[:1])
    assert rc == 1, answer
    assert said in answer.get("error", "") + err, (answer, err[-2000:])
