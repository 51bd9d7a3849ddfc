"""PostgreSQL on the database node (components/database.py): the server's settings, its client
authentication, the roles, its systemd unit and the daily dump, as the files the node's programs read.

- ``render_conf``: the server's whole config file (``postgres -c config_file=...``): the data directory,
  listen on the node's address (and loopback), TLS on (TLS 1.2 or newer, the node's certificate),
  SCRAM-SHA-256 for every password, connections logged.
- ``render_hba``: ``pg_hba.conf``: the superuser by peer on the local socket only; each database's owner
  over TLS with SCRAM from the client networks (the K3s networks), nothing else (no plain TCP, no trust).
- ``render_roles_sql``: the roles with their SCRAM verifiers (``roles_spec`` computes them), never a password: the
  node stores what PostgreSQL would store, and the clear password stays a Pulumi secret.
- ``render_unit``: the server's own unit (the same on Debian and EL9: the distribution's cluster units are
  masked), after the data directory's mount; ``render_backup_script`` and ``render_backup_units``: a daily
  ``pg_dump`` of each database into the backup directory, older dumps removed.

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
CONF_DIR = "/etc/microcloud/postgresql"
CONF_FILE = f"{CONF_DIR}/postgresql.conf"
UNIT_NAME = "microcloud-postgresql.service"
BACKUP_UNIT = "microcloud-postgresql-backup"
BACKUP_SCRIPT = "/usr/local/lib/microcloud/postgresql-backup.sh"
_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
# Where each OS family's packages put the server's programs (Debian: per major version).
BIN_DIRS = {"debian": "/usr/lib/postgresql/{version}/bin", "el9": "/usr/bin"}


def _check_paths(*paths: str) -> None:
    for p in paths:
        if not _PATH.match(p):
            raise ValueError(f"postgresql: {p!r} is not an absolute path of plain characters")


def bin_dir(family: str, version: int) -> str:
    return BIN_DIRS[family].format(version=version)


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
    cert_file: str = f"{CONF_DIR}/server.crt"
    key_file: str = f"{CONF_DIR}/server.key"
    max_connections: int = 100
    extra_listen: tuple[str, ...] = field(default=("localhost",))
    data_dir: str = "/var/lib/microcloud/postgresql/data"
    hba_file: str = f"{CONF_DIR}/pg_hba.conf"
    ident_file: str = f"{CONF_DIR}/pg_ident.conf"
    socket_dir: str = "/run/postgresql"


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
    _check_paths(spec.cert_file, spec.key_file, spec.data_dir, spec.hba_file, spec.ident_file, spec.socket_dir)


def render_conf(spec: PostgresSpec) -> str:
    """The server's config file: what this program sets; PostgreSQL's defaults for the rest."""
    check_spec(spec)
    listen = ",".join([*spec.extra_listen, spec.listen])
    lines = [
        f"data_directory = '{spec.data_dir}'",
        f"hba_file = '{spec.hba_file}'",
        f"ident_file = '{spec.ident_file}'",
        f"unix_socket_directories = '{spec.socket_dir}'",
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
        # To the journal (the unit's stderr), not files in the data directory.
        "logging_collector = off",
        "log_line_prefix = '%m [%p] %q%u@%d '",
    ]
    return HEADER + "\n".join(lines) + "\n"


def render_hba(spec: PostgresSpec) -> str:
    """pg_hba.conf: first match wins; whatever matches no line is refused."""
    check_spec(spec)
    lines = [
        HEADER.rstrip(),
        "# TYPE  DATABASE  USER  ADDRESS  METHOD",
        "local all postgres peer",
        # The superuser's generated password works on the node itself only (a tool on loopback).
        "hostssl all postgres 127.0.0.1/32 scram-sha-256",
    ]
    for db in sorted(spec.databases, key=lambda d: d.name):
        lines.append(f"local {db.name} {db.owner} scram-sha-256")
        for net in sorted(spec.clients):
            lines.append(f"hostssl {db.name} {db.owner} {net} scram-sha-256")
    return "\n".join(lines) + "\n"


def render_ident(spec: PostgresSpec) -> str:
    """pg_ident.conf: no user name maps (peer logins are the OS user's own name)."""
    check_spec(spec)
    return HEADER + "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n"


@dataclass(frozen=True)
class UnitSpec:
    binary_dir: str  # bin_dir(family, version)
    version: int
    config_file: str = CONF_FILE
    mounts: tuple[str, ...] = ()  # the data (and backup) directories: the unit waits for what holds them


def render_unit(spec: UnitSpec) -> str:
    _check_paths(spec.binary_dir, spec.config_file, *spec.mounts)
    needs = "".join(f"RequiresMountsFor={m}\n" for m in spec.mounts)
    return (
        HEADER
        + "[Unit]\n"
        f"Description=PostgreSQL {spec.version} (microcloud)\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        f"{needs}"
        "\n[Service]\n"
        "Type=notify\n"
        "User=postgres\n"
        "Group=postgres\n"
        "RuntimeDirectory=postgresql\n"
        "RuntimeDirectoryMode=2775\n"
        f"ExecStart={spec.binary_dir}/postgres -c config_file={spec.config_file}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        # SIGINT: a fast shutdown (rolls back open transactions, then a checkpoint); the postmaster alone.
        "KillMode=mixed\n"
        "KillSignal=SIGINT\n"
        "TimeoutStartSec=300\n"
        "TimeoutStopSec=300\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "OOMScoreAdjust=-900\n"
        "NoNewPrivileges=yes\n"
        "PrivateTmp=yes\n"
        "ProtectSystem=full\n"
        "ProtectHome=yes\n"
        "\n[Install]\n"
        "WantedBy=multi-user.target\n"
    )


@dataclass(frozen=True)
class BackupSpec:
    binary_dir: str
    backup_dir: str
    databases: tuple[str, ...]
    keep_days: int
    time: str  # HH:MM
    socket_dir: str = "/run/postgresql"
    port: int = 5432


def _check_backup(spec: BackupSpec) -> None:
    _check_paths(spec.binary_dir, spec.backup_dir, spec.socket_dir)
    if not spec.databases or not all(_IDENT.match(d) for d in spec.databases):
        raise ValueError(f"postgresql: backup of {spec.databases!r}: lowercase identifiers, at least one")
    if not 1 <= spec.keep_days <= 3650:
        raise ValueError(f"postgresql: keep_days {spec.keep_days} is not 1-3650")
    if not re.match(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", spec.time):
        raise ValueError(f"postgresql: backup time {spec.time!r} is not HH:MM")


def render_backup_script(spec: BackupSpec) -> str:
    """Run as postgres: each database to ``<db>-<UTC time>.dump`` (pg_dump's custom format, written to a
    temp name first, so a half-written dump never looks like a backup), then dumps older than keep_days go."""
    _check_backup(spec)
    dbs = " ".join(spec.databases)
    return (
        "#!/bin/sh\n"
        + HEADER
        + "set -eu\n"
        f"dir={spec.backup_dir}\n"
        "stamp=$(date -u +%Y%m%dT%H%M%SZ)\n"
        "failed=0\n"
        f"for db in {dbs}; do\n"
        '  tmp="$dir/.$db-$stamp.dump.partial"\n'
        f'  if {spec.binary_dir}/pg_dump -h {spec.socket_dir} -p {spec.port} -Fc -f "$tmp" "$db"; then\n'
        '    mv "$tmp" "$dir/$db-$stamp.dump"\n'
        "  else\n"
        '    rm -f "$tmp"; echo "microcloud: pg_dump of $db failed" >&2; failed=1\n'
        "  fi\n"
        "done\n"
        # Only after a successful round: a failing dump never deletes the last good ones.
        '[ "$failed" = 0 ] || exit 1\n'
        f"find \"$dir\" -maxdepth 1 -name '*.dump' -type f -mtime +{spec.keep_days - 1} -delete\n"
    )


def render_backup_units(spec: BackupSpec) -> tuple[str, str]:
    """(service, timer): the daily dump, as postgres, after the server; Persistent: a missed run runs at boot."""
    _check_backup(spec)
    service = (
        HEADER
        + "[Unit]\n"
        "Description=Daily pg_dump of the apps' databases (microcloud)\n"
        f"Requires={UNIT_NAME}\n"
        f"After={UNIT_NAME}\n"
        f"RequiresMountsFor={spec.backup_dir}\n"
        "\n[Service]\n"
        "Type=oneshot\n"
        "User=postgres\n"
        "Group=postgres\n"
        f"ExecStart=/bin/sh {BACKUP_SCRIPT}\n"
        "NoNewPrivileges=yes\n"
        "PrivateTmp=yes\n"
    )
    timer = (
        HEADER
        + "[Unit]\n"
        "Description=Daily pg_dump of the apps' databases (microcloud)\n"
        "\n[Timer]\n"
        f"OnCalendar=*-*-* {spec.time}:00 UTC\n"
        "Persistent=true\n"
        "RandomizedDelaySec=300\n"
        "\n[Install]\n"
        "WantedBy=timers.target\n"
    )
    return service, timer


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
    """The verifiers for ``passwords`` (owner -> password; ``postgres``, the superuser's, if given);
    the clear passwords go no further than here."""
    check_spec(spec)
    verifiers = []
    if "postgres" in passwords:
        verifiers.append(("postgres", scram_verifier(passwords["postgres"], stable_salt(passwords["postgres"], "postgres"))))
    for db in sorted(spec.databases, key=lambda d: d.name):
        if db.owner not in passwords:
            raise ValueError(f"postgresql: no password for {db.owner}")
        verifiers.append((db.owner, scram_verifier(passwords[db.owner], stable_salt(passwords[db.owner], db.owner))))
    return RolesSpec(server=spec, verifiers=tuple(verifiers))


def _checked(verifier, role: str) -> str:
    if not verifier or not re.match(r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$", verifier):
        raise ValueError(f"postgresql: no SCRAM verifier for {role}")
    return verifier


def render_roles_sql(spec: RolesSpec) -> str:
    """SQL run as the superuser: each owner with its verifier (made or updated), each database owned by it.

    Idempotent: a second run changes nothing but a changed verifier.
    """
    check_spec(spec.server)
    verifiers = dict(spec.verifiers)
    out = ["\\set ON_ERROR_STOP on"]
    if "postgres" in verifiers:
        out.append(f"ALTER ROLE postgres WITH PASSWORD '{_checked(verifiers['postgres'], 'postgres')}';")
    for db in sorted(spec.server.databases, key=lambda d: d.name):
        verifier = _checked(verifiers.get(db.owner), db.owner)
        out += [
            f"SELECT 'CREATE ROLE {db.owner} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{db.owner}')\\gexec",
            f"ALTER ROLE {db.owner} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{verifier}';",
            f"SELECT 'CREATE DATABASE {db.name} OWNER {db.owner}' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db.name}')\\gexec",
            f"ALTER DATABASE {db.name} OWNER TO {db.owner};",
            f"REVOKE ALL ON DATABASE {db.name} FROM PUBLIC;",
        ]
    return "\n".join(out) + "\n"
