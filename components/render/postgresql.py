"""PostgreSQL on its own node (issue 21, item 5; not wired into the program yet): the server's settings, its
client authentication, and the roles, as the files and SQL the server reads.

- ``render_conf``: a ``conf.d`` file: listen on the node's address (and loopback), TLS on (TLS 1.2 or
  newer, the node's certificate), SCRAM-SHA-256 for every password, connections logged.
- ``render_hba``: ``pg_hba.conf``: the superuser by peer on the local socket only; each database's owner
  over TLS with SCRAM from the client networks (the K3s networks), nothing else (no plain TCP, no trust).
- ``render_roles_sql``: the roles with their SCRAM verifiers (``roles_spec`` computes them), never a password: the
  node stores what PostgreSQL would store, and the clear password stays a Pulumi secret.

tests/test_postgresql_real.py starts the real server on these files and logs in through them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, field

# PostgreSQL's identifiers as this program writes them: lowercase, so no quoting is needed anywhere.
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESERVED_ROLES = frozenset({"postgres", "public", "pg_monitor", "pg_read_all_data", "pg_write_all_data"})
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)
HEADER = "# Rendered by microcloud (components/render/postgresql.py).\n"


@dataclass(frozen=True)
class Database:
    """A database and its owner, the role the apps log in as."""

    name: str
    owner: str


@dataclass(frozen=True)
class PostgresSpec:
    node: str
    listen: str  # the node's address
    clients: tuple[ipaddress.IPv4Network, ...]  # who may log in over TCP (the K3s networks)
    databases: tuple[Database, ...]
    port: int = 5432
    cert_file: str = "/etc/microcloud/postgresql/server.crt"
    key_file: str = "/etc/microcloud/postgresql/server.key"
    max_connections: int = 100
    extra_listen: tuple[str, ...] = field(default=("localhost",))


def check_spec(spec: PostgresSpec) -> None:
    ipaddress.IPv4Address(spec.listen)
    if not spec.clients:
        raise ValueError(f"postgresql: {spec.node}: no client network; the apps could not log in")
    for net in spec.clients:
        if net.prefixlen == 0:
            raise ValueError(f"postgresql: {spec.node}: {net} is every address; name the K3s networks")
    if not spec.databases:
        raise ValueError(f"postgresql: {spec.node}: no database")
    seen = set()
    for db in spec.databases:
        for what, name in (("database", db.name), ("owner", db.owner)):
            if not _IDENT.match(name):
                raise ValueError(f"postgresql: {what} {name!r} is not a lowercase identifier (a-z, 0-9, _)")
        if db.owner in RESERVED_ROLES or db.owner.startswith("pg_"):
            raise ValueError(f"postgresql: {db.owner!r} is PostgreSQL's own role; give the app a role of its own")
        if db.name in seen:
            raise ValueError(f"postgresql: database {db.name} twice")
        seen.add(db.name)
    if not 1 <= spec.port <= 65535:
        raise ValueError(f"postgresql: port {spec.port} is not 1-65535")


def render_conf(spec: PostgresSpec) -> str:
    """A file for the server's conf.d (included by postgresql.conf): what this program sets."""
    check_spec(spec)
    listen = ",".join([*spec.extra_listen, spec.listen])
    lines = [
        f"listen_addresses = '{listen}'",
        f"port = {spec.port}",
        f"max_connections = {spec.max_connections}",
        "ssl = on",
        f"ssl_cert_file = '{spec.cert_file}'",
        f"ssl_key_file = '{spec.key_file}'",
        "ssl_min_protocol_version = 'TLSv1.2'",
        "password_encryption = 'scram-sha-256'",
        "log_connections = on",
        "log_disconnections = on",
    ]
    return HEADER + "\n".join(lines) + "\n"


def render_hba(spec: PostgresSpec) -> str:
    """pg_hba.conf: first match wins; whatever matches no line is refused."""
    check_spec(spec)
    lines = [
        HEADER.rstrip(),
        "# TYPE  DATABASE  USER  ADDRESS  METHOD",
        "local all postgres peer",
    ]
    for db in sorted(spec.databases, key=lambda d: d.name):
        lines.append(f"local {db.name} {db.owner} scram-sha-256")
        for net in sorted(spec.clients):
            lines.append(f"hostssl {db.name} {db.owner} {net} scram-sha-256")
    return "\n".join(lines) + "\n"


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as pg_authid holds it).

    ``salt``: 16 bytes; the caller derives it from a stable secret, so a re-run renders the same text.
    """
    if len(salt) < 16:
        raise ValueError("postgresql: the SCRAM salt is shorter than 16 bytes")
    if not password:
        raise ValueError("postgresql: empty password")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def stable_salt(password: str, role: str) -> bytes:
    """16 bytes from the password and the role: the same inputs give the same verifier on every run."""
    return hmac.new(password.encode(), f"microcloud-scram-salt:{role}".encode(), hashlib.sha256).digest()[:16]


@dataclass(frozen=True)
class RolesSpec:
    """What the roles SQL needs: the server's databases and each owner's SCRAM verifier (owner, verifier)."""

    server: PostgresSpec
    verifiers: tuple[tuple[str, str], ...]


def roles_spec(spec: PostgresSpec, passwords: dict[str, str]) -> RolesSpec:
    """The verifiers for ``passwords`` (owner -> password); the clear passwords go no further than here."""
    check_spec(spec)
    verifiers = []
    for db in sorted(spec.databases, key=lambda d: d.name):
        if db.owner not in passwords:
            raise ValueError(f"postgresql: no password for {db.owner}")
        verifiers.append((db.owner, scram_verifier(passwords[db.owner], stable_salt(passwords[db.owner], db.owner))))
    return RolesSpec(server=spec, verifiers=tuple(verifiers))


def render_roles_sql(spec: RolesSpec) -> str:
    """SQL run as the superuser: each owner with its verifier (made or updated), each database owned by it.

    Idempotent: a second run changes nothing but a changed verifier.
    """
    check_spec(spec.server)
    verifiers = dict(spec.verifiers)
    out = ["\\set ON_ERROR_STOP on"]
    for db in sorted(spec.server.databases, key=lambda d: d.name):
        verifier = verifiers.get(db.owner)
        if not verifier or not verifier.startswith("SCRAM-SHA-256$") or "'" in verifier:
            raise ValueError(f"postgresql: no SCRAM verifier for {db.owner}")
        out += [
            f"SELECT 'CREATE ROLE {db.owner} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{db.owner}')\\gexec",
            f"ALTER ROLE {db.owner} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{verifier}';",
            f"SELECT 'CREATE DATABASE {db.name} OWNER {db.owner}' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db.name}')\\gexec",
            f"ALTER DATABASE {db.name} OWNER TO {db.owner};",
            f"REVOKE ALL ON DATABASE {db.name} FROM PUBLIC;",
        ]
    return "\n".join(out) + "\n"
