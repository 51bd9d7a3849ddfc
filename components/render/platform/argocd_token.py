"""Argo CD API tokens made by the program: the claims argocd-server checks, the HS256 signature, the token list.

Argo CD signs an account's API token (``argocd account generate-token``) as an
HS256 JWT with ``server.secretkey`` of ``argocd-secret``; ``argocd-server``
accepts one only when its ``jti`` is listed in ``accounts.<name>.tokens`` of
that Secret, the account has the ``apiKey`` capability in ``argocd-cm`` and is
enabled (util/session/sessionmanager.go, Parse). Pulumi already makes the
server key, so it can make the token too: signed here, listed in the Secret
it writes, and nobody runs ``generate-token`` by hand. A new token id (the
keeper) lists only the new one, so the old token stops working at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from components.k3s_flags import DNS_LABEL as _ACCOUNT

# What argocd-server writes as the issuer of the tokens it makes (SessionManagerClaimsIssuer).
ISSUER = "argocd"
API_KEY = "apiKey"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class ApiToken:
    """One API token of a local account: its id (``jti``), when it was issued and, optionally, when it ends (Unix seconds)."""

    account: str
    token_id: str
    issued_at: int
    expires_at: Optional[int] = None


def tokens_key(account: str) -> str:
    """The argocd-secret key listing an account's tokens."""
    return f"accounts.{account}.tokens"


def check_token(t: ApiToken) -> None:
    if not _ACCOUNT.match(t.account) or t.account == "admin":
        raise ValueError(f"argocd token: {t.account!r} is not a local account name (lowercase letters, digits, '-'; not admin)")
    if not _UUID.match(t.token_id):
        raise ValueError(f"argocd token: id {t.token_id!r} is not a UUID")
    if t.issued_at <= 0:
        raise ValueError("argocd token: issued_at must be a positive Unix time")
    if t.expires_at is not None and t.expires_at <= t.issued_at:
        raise ValueError("argocd token: it would end before it was issued")


def token_claims(t: ApiToken) -> dict:
    """The claims argocd-server's own ``generate-token`` writes (jwt.RegisteredClaims)."""
    check_token(t)
    claims = {"iss": ISSUER, "sub": f"{t.account}:{API_KEY}", "nbf": t.issued_at, "iat": t.issued_at, "jti": t.token_id}
    if t.expires_at is not None:
        claims["exp"] = t.expires_at
    return claims


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_token(t: ApiToken, server_key: str) -> str:
    """The compact JWS (HS256) of ``t``'s claims under ``server_key`` (argocd-secret's server.secretkey)."""
    if len(server_key) < 32:
        raise ValueError("argocd token: the server key is shorter than 32 characters")
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(token_claims(t), separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(server_key.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def tokens_entry(tokens: Sequence[ApiToken]) -> str:
    """The JSON argocd-server keeps under ``accounts.<name>.tokens`` (settings.Token: id, iat, exp omitted when none)."""
    out = []
    for t in tokens:
        check_token(t)
        entry: dict = {"id": t.token_id, "iat": t.issued_at}
        if t.expires_at is not None:
            entry["exp"] = t.expires_at
        out.append(entry)
    return json.dumps(out, separators=(",", ":"))
