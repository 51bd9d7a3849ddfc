"""PostgreSQL on the database node, planned from the stack config alone (components/database.py runs it).

``plan`` says where the data and the dumps live (the storage node's NFS disk, an export of its own to
this node only, or the node's own disk) and which networks may log in; the ``*_script`` functions are
the node's steps, each a shell that fails naming the node.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Optional

from ..config import StackConfig
from ..render import postgresql as pg
from ..render import storage as st
from ..render.nfs import NfsMountSpec
from ..render.os_family import family_of
from .storage import cluster_networks, database_export

DATABASE_SUBDIR = st.DATABASE_SUBDIR  # on the storage node's NFS disk, beside the cluster's export
NFS_MOUNT = "/srv/postgresql"  # on the database node (as the original's /srv/nfs/postgresql on the storage node)
LOCAL_ROOT = "/var/lib/microcloud/postgresql"
CA_FILE = f"{pg.CONF_DIR}/ca.crt"
# SELinux (EL9): the type PostgreSQL's policy lets the server use for its data.
SELINUX_DATA = "system_u:object_r:postgresql_db_t:s0"


@dataclass(frozen=True)
class DatabasePlan:
    node: str
    os: str
    family: str  # os_family name: debian, el9
    version: int
    ip: str
    fqdn: str
    clients: tuple[str, ...]  # CIDRs that may log in over TLS (the K3s networks, database.clients)
    databases: tuple[pg.Database, ...]
    data_dir: str
    backup_dir: str
    keep_days: int
    backup_time: str
    max_connections: int
    # The storage node's side, when the data or the dumps live there.
    storage_node: Optional[str] = None
    storage_ip: Optional[str] = None
    nfs_root: Optional[str] = None  # on the storage node
    nfs_mount: Optional[str] = None  # on this node

    @property
    def bin_dir(self) -> str:
        return pg.bin_dir(self.family, self.version)

    @property
    def mounts(self) -> tuple[str, ...]:
        return tuple(sorted({self.data_dir.rsplit("/", 1)[0], self.backup_dir.rsplit("/", 1)[0]}))


def plan(cfg: StackConfig) -> Optional[DatabasePlan]:
    node, db = cfg.database_node, cfg.database
    if node is None or db is None:
        return None
    storage = cfg.nodes_with("storage")
    exported = database_export(cfg, storage[0]) if storage else None
    on_nfs = exported is not None
    local = f"{st.mount_point(node.data_disks[0].name)}/{DATABASE_SUBDIR}" if node.data_disks else LOCAL_ROOT
    nfs = {}
    if exported is not None:
        nfs = dict(storage_node=storage[0].name, storage_ip=str(storage[0].ip), nfs_root=exported.path, nfs_mount=NFS_MOUNT)
    clients = tuple(sorted({*cluster_networks(cfg), *(str(c) for c in db.clients)}))
    return DatabasePlan(
        node=node.name,
        os=node.os,
        family=family_of(node.os).name,
        version=db.version,
        ip=str(node.ip),
        fqdn=cfg.fqdn(node.name),
        clients=clients,
        databases=tuple(pg.Database(d.name, d.owner) for d in db.databases),
        data_dir=f"{NFS_MOUNT}/data" if db.data == "nfs" and on_nfs else f"{local}/data",
        backup_dir=f"{NFS_MOUNT}/backups" if on_nfs else f"{local}/backups",
        keep_days=db.backup.keep_days,
        backup_time=db.backup.time,
        max_connections=db.max_connections,
        **nfs,
    )


def server_spec(p: DatabasePlan) -> pg.PostgresSpec:
    # The node's own address too: its login check (login_check_script) connects from there.
    clients = sorted({ipaddress.IPv4Network(c) for c in p.clients} | {ipaddress.IPv4Network(f"{p.ip}/32")})
    return pg.PostgresSpec(
        node=p.node,
        listen=p.ip,
        clients=tuple(clients),
        databases=p.databases,
        max_connections=p.max_connections,
        data_dir=p.data_dir,
    )


def unit_spec(p: DatabasePlan) -> pg.UnitSpec:
    return pg.UnitSpec(binary_dir=p.bin_dir, version=p.version, mounts=p.mounts)


def backup_spec(p: DatabasePlan) -> pg.BackupSpec:
    return pg.BackupSpec(binary_dir=p.bin_dir, backup_dir=p.backup_dir, databases=tuple(d.name for d in p.databases),
                         keep_days=p.keep_days, time=p.backup_time)


def nfs_mount(p: DatabasePlan) -> Optional[NfsMountSpec]:
    if p.nfs_mount is None:
        return None
    # On EL9 every file of the mount carries the data type (NFS has no labels of its own).
    context = (f'context="{SELINUX_DATA}"',) if p.family == "el9" else ()
    return NfsMountSpec(server=p.storage_ip, export=p.nfs_root, where=p.nfs_mount,
                        description=f"PostgreSQL data and dumps of {p.node} on {p.storage_node}", extra_options=context)


def _fail(p: DatabasePlan) -> str:
    return f"fail() {{ echo \"microcloud: {p.node}: postgresql: $*\" >&2; exit 1; }}"


def packages_script(p: DatabasePlan) -> str:
    """The server and client of the pinned major version from the node OS's repositories (on an air-gapped
    image: only checked), the distribution's own cluster units masked (this program runs its own unit),
    then ``<uid> <gid>`` of the postgres user on stdout (the storage node gives it the directories)."""
    v = p.version
    nfs = p.nfs_mount is not None
    if p.family == "debian":
        pkgs = f"postgresql-{v} postgresql-client-{v}" + (" nfs-common" if nfs else "")
        install = (
            f"for pkg in {pkgs}; do dpkg-query -W -f='${{Status}}' \"$pkg\" 2>/dev/null | grep -q 'install ok installed' || missing=\"$missing $pkg\"; done",
            'if [ -n "$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null '
            "|| fail \"could not install$missing from the node's repositories\"; fi",
            f"[ -x {p.bin_dir}/postgres ] || fail 'no {p.bin_dir}/postgres after the install'",
            f"systemctl stop postgresql.service postgresql@{v}-main.service 2>/dev/null || true",
            f"systemctl mask -q postgresql.service postgresql@{v}-main.service",
        )
    else:
        # semanage: the local data directory's SELinux type (initdb_script).
        pkgs = "postgresql-server postgresql policycoreutils-python-utils" + (" nfs-utils" if nfs else "")
        install = (
            f"for pkg in {pkgs}; do rpm -q \"$pkg\" >/dev/null 2>&1 || missing=\"$missing $pkg\"; done",
            f'if [ -n "$missing" ]; then {{ dnf -y -q module enable postgresql:{v} && dnf -y -q install $missing; }} >/dev/null '
            "|| fail \"could not install$missing (module stream postgresql:" + str(v) + ") from the node's repositories\"; fi",
            "have=$(rpm -q --qf '%{VERSION}' postgresql-server | cut -d. -f1)",
            f"[ \"$have\" = {v} ] || fail \"PostgreSQL $have is installed, database.version is {v}: upgrade the node yourself (pg_upgrade), then run pulumi up\"",
            "systemctl stop postgresql.service 2>/dev/null || true",
            "systemctl mask -q postgresql.service",
        )
    steps = ["set -eu", _fail(p), "missing=''", *install, 'echo "$(id -u postgres) $(id -g postgres)"']
    return "sudo sh -c " + shlex.quote("\n".join(steps))


def postgres_ids(stdout: str) -> tuple[str, str]:
    """``<uid> <gid>`` from the last line packages_script printed; ("", "") when it printed none (then the
    storage node's step fails saying so, instead of guessing an owner)."""
    last = (stdout or "").strip().splitlines()[-1:] or [""]
    ids = last[0].split()
    if len(ids) != 2 or not all(i.isdigit() for i in ids):
        return "", ""
    return ids[0], ids[1]


def storage_dirs_script(p: DatabasePlan, uid: str, gid: str) -> str:
    """On the storage node: the database node's directories, owned by its postgres user (root_squash: the
    node's root is nobody there). A rebuilt node whose postgres has another id gets its files back."""
    assert p.nfs_root is not None
    root = shlex.quote(p.nfs_root)
    steps = [
        "set -eu",
        f"fail() {{ echo \"microcloud: {p.storage_node}: postgresql directories: $*\" >&2; exit 1; }}",
        *([] if uid.isdigit() and gid.isdigit() else [f"fail '{p.node} reported no postgres user ids (its packages step)'"]),
        f"mountpoint -q {shlex.quote(p.nfs_root.rsplit('/', 1)[0])} || fail 'the NFS disk is not mounted'",
        f"install -d -m 0755 -o root -g root {root}",
        f"for d in {root}/data {root}/backups; do",
        f'  if [ -d "$d" ] && [ "$(stat -c %u:%g "$d")" != {uid}:{gid} ]; then chown -R {uid}:{gid} "$d"; fi',
        f'  install -d -m 0700 -o {uid} -g {gid} "$d"',
        "done",
    ]
    return "sudo sh -c " + shlex.quote("\n".join(steps))


def initdb_script(p: DatabasePlan) -> str:
    """A new data directory is made once (UTF-8, C.UTF-8 collation, checksums); one that exists is kept,
    and refused when it is another major version's: nothing here upgrades or overwrites data. What is in
    it is looked at as postgres: on NFS (root_squash) the node's root may not look inside."""
    data = shlex.quote(p.data_dir)
    look = ('if [ -f "$1/PG_VERSION" ]; then cat "$1/PG_VERSION"; '
            'elif [ -z "$(ls -A "$1")" ]; then echo empty; else echo files; fi')
    steps = [
        "set -eu",
        _fail(p),
        # On NFS: never a data directory on the root disk under an unmounted mount point.
        *([f"mountpoint -q {NFS_MOUNT} || fail '{NFS_MOUNT} is not mounted'"] if p.nfs_mount else []),
        *(f"[ -d {shlex.quote(d)} ] || install -d -m 0700 -o postgres -g postgres {shlex.quote(d)}" for d in (p.data_dir, p.backup_dir)),
        # EL9 with SELinux: local directories get the data type (the NFS mount carries it as a mount option).
        *(_selinux_local(p) if p.family == "el9" else []),
        f"state=$(runuser -u postgres -- sh -c {shlex.quote(look)} sh {data}) || fail 'postgres cannot read {p.data_dir}'",
        'case "$state" in',
        "  empty)",
        f"    runuser -u postgres -- {p.bin_dir}/initdb -D {data} --auth-local=peer --auth-host=scram-sha-256 "
        "--encoding=UTF8 --locale=C.UTF-8 --data-checksums >/dev/null || fail 'initdb failed' ;;",
        f"  files) fail '{p.data_dir} holds files but no PG_VERSION: move them away, then run pulumi up again' ;;",
        f"  {p.version}) ;;",
        f"  *) fail \"{p.data_dir} holds PostgreSQL $state data, database.version is {p.version}: "
        "upgrade it yourself (pg_upgrade); nothing was changed\" ;;",
        "esac",
    ]
    return "sudo sh -c " + shlex.quote("\n".join(steps))


def _selinux_local(p: DatabasePlan) -> list[str]:
    local = sorted({d.rsplit("/", 1)[0] for d in (p.data_dir, p.backup_dir) if not d.startswith(f"{NFS_MOUNT}/")})
    out = []
    for root in local:
        spec = shlex.quote(f"{root}(/.*)?")
        out.append(
            f"if command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled; then "
            f"semanage fcontext -a -t postgresql_db_t {spec} 2>/dev/null || semanage fcontext -m -t postgresql_db_t {spec}; "
            f"restorecon -R {shlex.quote(root)}; fi"
        )
    return out


def roles_script(p: DatabasePlan) -> str:
    """The roles SQL (stdin) run by the superuser over the local socket, once the server answers."""
    steps = [
        "set -eu",
        _fail(p),
        "sql=$(mktemp); trap 'rm -f \"$sql\"' EXIT; cat > \"$sql\"; chown postgres \"$sql\"",
        f"i=0; until {p.bin_dir}/pg_isready -q -h /run/postgresql; do i=$((i + 1)); [ $i -lt 120 ] || fail 'the server did not answer'; sleep 1; done",
        f"runuser -u postgres -- {p.bin_dir}/psql -X -q -h /run/postgresql -d postgres -f \"$sql\" >/dev/null || fail 'the roles SQL failed'",
    ]
    return "sudo sh -c " + shlex.quote("\n".join(steps))


def login_check_script(p: DatabasePlan) -> str:
    """A real login of each owner over TCP with TLS (verify-full against the stack's CA) on the node's own
    address, with the generated password: stdin lines ``<database> <owner> <password>``, the passwords
    in a 0600 passfile for the moment of the check, never in an argument or the environment."""
    steps = [
        "set -eu",
        _fail(p),
        "umask 077",
        "pass=$(mktemp); trap 'rm -f \"$pass\"' EXIT",
        "n=0",
        "while read -r db owner pw; do",
        "  [ -n \"$db\" ] || continue",
        f"  printf '%s:5432:%s:%s:%s\\n' {p.ip} \"$db\" \"$owner\" \"$pw\" > \"$pass\"",
        f"  got=$(PGPASSFILE=\"$pass\" PGCONNECT_TIMEOUT=10 {p.bin_dir}/psql -X -At "
        f"\"host={p.ip} port=5432 dbname=$db user=$owner sslmode=verify-full sslrootcert={CA_FILE}\" "
        "-c 'SELECT current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl' 2>&1) "
        "|| fail \"$owner could not log in to $db over TLS with its generated password: $got\"",
        "  [ \"$got\" = \"$owner\" ] || fail \"$owner's login to $db was not over TLS\"",
        "  n=$((n + 1))",
        "done",
        f"[ \"$n\" = {len(p.databases)} ] || fail \"$n logins checked, {len(p.databases)} databases\"",
    ]
    return "sudo sh -c " + shlex.quote("\n".join(steps))
