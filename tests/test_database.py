"""The database node: its config, its plan, its node scripts (initdb run for real against Debian's
PostgreSQL 15), and its place in the program's graph under mocks (secrets, order, the storage side)."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from components.config import ConfigError, parse_config
from components.render import postgresql as pg
from components.specs import database as dbspec
from components.specs import storage as storage_specs
from support.harness import run_program, stack_model

COMMAND = "command:remote:Command"
PASSWORD = "random:index/randomPassword:RandomPassword"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _prod() -> dict:
    return copy.deepcopy(stack_model("prod"))


def _node(m: dict, name: str) -> dict:
    return next(n for n in m["nodes"] if n["name"] == name)


# ------------------------------------------------------------------ config


@pytest.mark.unit
@pytest.mark.parametrize("case, change, key, said", [
    ("role without setting", lambda m: m.pop("database"), "nodes[postgresql1].role", "no `database` setting"),
    ("setting without node", lambda m: _node(m, "postgresql1").update(role="generic"), "nodes", "0 nodes with role database"),
    ("flatcar", lambda m: _node(m, "postgresql1").update(os="flatcar"), "nodes[postgresql1].os", "node OS's packages"),
    ("debian 16", lambda m: (_node(m, "postgresql1").update(os="debian12"), m["images"].setdefault("debian12", m["images"]["rocky9"]),
                             m["database"].update(version=16)), "database.version", "debian12 carries PostgreSQL 15, not 16"),
    ("nfs without storage", lambda m: (m.update(nodes=[n for n in m["nodes"] if n["role"] != "storage"])), "database.data", "role storage"),
    ("shared owner", lambda m: m["database"].update(databases=[{"name": "a", "owner": "app"}, {"name": "b", "owner": "app"}]),
     "database.databases", "owner of its own"),
])
def test_bad_database_config_is_refused_naming_the_key(case, change, key, said):
    m = _prod()
    change(m)
    with pytest.raises(ConfigError) as err:
        parse_config(m)
    assert err.value.key == key and said in str(err.value), (case, err.value.key, str(err.value))


@pytest.mark.unit
@pytest.mark.parametrize("field, value, said", [
    ("databases", [{"name": "App", "owner": "app"}], "lowercase identifier"),
    ("databases", [{"name": "app", "owner": "postgres"}], "PostgreSQL's own"),
    ("databases", [{"name": "app", "owner": "pg_app"}], "PostgreSQL's own"),
    ("databases", [], "at least 1"),
    ("backup", {"time": "25:00"}, "HH:MM"),
    ("backup", {"keep_days": 0}, "greater than or equal to 1"),
    ("clients", ["0.0.0.0/0"], "every address"),
    ("data", "s3", "'nfs' or 'local'"),
])
def test_bad_database_fields_are_refused(field, value, said):
    m = _prod()
    m["database"][field] = value
    with pytest.raises(ConfigError) as err:
        parse_config(m)
    assert said in str(err.value), str(err.value)


# ------------------------------------------------------------------ plan


@pytest.mark.unit
def test_prods_database_lives_on_storage1s_nfs_disk_for_the_cluster_network():
    cfg = parse_config(_prod())
    p = dbspec.plan(cfg)
    assert (p.node, p.ip, p.family, p.version) == ("postgresql1", "10.17.3.14", "el9", 15)
    assert p.nfs_root == "/var/mnt/data/postgresql" and p.storage_node == "storage1" and p.storage_ip == "10.17.4.27"
    assert p.data_dir == f"{dbspec.NFS_MOUNT}/data" and p.backup_dir == f"{dbspec.NFS_MOUNT}/backups"
    assert p.clients == ("10.17.4.0/24",) and p.bin_dir == "/usr/bin"
    # pg_hba: the K3s network, and the node's own address (its login check connects from there); the firewall: the network only.
    hba = pg.render_hba(dbspec.server_spec(p))
    assert [l.split()[3] for l in hba.splitlines() if l.startswith("hostssl app ")] == ["10.17.3.14/32", "10.17.4.0/24"]
    # The storage node exports it to the database node alone, and makes its directory.
    [storage1] = [ns for ns in storage_specs.plan(cfg) if ns.node == "storage1"]
    assert [(e.path, e.clients) for e in storage1.exports] == [
        ("/var/mnt/data/nfs", ("10.17.4.0/24",)), ("/var/mnt/data/postgresql", ("10.17.3.14/32",))]
    assert "postgresql" in storage1.subdirs["data"]


@pytest.mark.unit
def test_local_data_goes_to_the_nodes_data_disk_and_dumps_stay_on_nfs():
    m = _prod()
    m["database"]["data"] = "local"
    _node(m, "postgresql1")["data_disks"] = [{"name": "pgdata", "size_gib": 20}]
    p = dbspec.plan(parse_config(m))
    assert p.data_dir == "/var/mnt/pgdata/postgresql/data" and p.backup_dir == f"{dbspec.NFS_MOUNT}/backups"
    assert p.mounts == (dbspec.NFS_MOUNT, "/var/mnt/pgdata/postgresql")
    # Without a K3s cluster there is no storage node's NFS: everything on the node's own disk.
    m["k3s"]["enabled"] = False
    m.pop("platform", None)
    p = dbspec.plan(parse_config(m))
    assert p.nfs_mount is None and p.backup_dir == "/var/mnt/pgdata/postgresql/backups"


@pytest.mark.unit
def test_every_node_script_is_valid_shell():
    p = dbspec.plan(parse_config(_prod()))
    scripts = [dbspec.packages_script(p), dbspec.storage_dirs_script(p, "26", "26"), dbspec.storage_dirs_script(p, "", ""),
               dbspec.initdb_script(p), dbspec.roles_script(p), dbspec.login_check_script(p),
               dbspec.packages_script(replace(p, family="debian", os="debian12"))]
    for script in scripts:
        argv = shlex.split(script)
        assert argv[:3] == ["sudo", "sh", "-c"], script[:40]
        for shell in ("dash", "bash"):
            res = subprocess.run([shell, "-n", "-c", argv[3]], capture_output=True, text=True)
            assert res.returncode == 0, (shell, res.stderr, argv[3][:300])


@pytest.mark.unit
def test_el9_labels_local_data_for_selinux_and_debian_does_not():
    m = _prod()
    m["database"]["data"] = "local"
    _node(m, "postgresql1")["data_disks"] = [{"name": "pgdata", "size_gib": 20}]
    p = dbspec.plan(parse_config(m))
    script = shlex.split(dbspec.initdb_script(p))[3]
    assert "semanage fcontext -a -t postgresql_db_t '/var/mnt/pgdata/postgresql(/.*)?'" in script
    assert "restorecon -R /var/mnt/pgdata/postgresql" in script and dbspec.NFS_MOUNT + "(/" not in script
    assert "policycoreutils-python-utils" in dbspec.packages_script(p)
    assert "semanage" not in dbspec.initdb_script(replace(p, family="debian", os="debian12"))


@pytest.mark.unit
def test_postgres_ids_come_from_the_last_line_or_not_at_all():
    assert dbspec.postgres_ids("something\n104 111\n") == ("104", "111")
    assert dbspec.postgres_ids("") == ("", "") and dbspec.postgres_ids("uid gid") == ("", "")


def test_storage_dirs_without_ids_fail_on_the_node_naming_it():
    p = dbspec.plan(parse_config(_prod()))
    inner = shlex.split(dbspec.storage_dirs_script(p, "", ""))[3]
    res = subprocess.run(["sh", "-c", inner], capture_output=True, text=True)
    assert res.returncode == 1 and "microcloud: storage1: postgresql directories: postgresql1 reported no postgres user ids" in res.stderr


# ------------------------------------------------------------------ initdb, for real


@pytest.fixture()
def data_root():
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("no Debian postgresql-15 (.ci/install.sh installs it)")
    base = Path(tempfile.mkdtemp(prefix="mc-initdb-"))
    shutil.chown(base, "postgres", "postgres")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _initdb(p) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", shlex.split(dbspec.initdb_script(p))[3]], capture_output=True, text=True, timeout=300)


def test_initdb_makes_a_data_directory_once_and_refuses_another_version(data_root):
    m = _prod()
    m["database"]["data"] = "local"
    m["k3s"]["enabled"] = False
    m.pop("platform", None)
    p = replace(dbspec.plan(parse_config(m)), family="debian", data_dir=str(data_root / "data"), backup_dir=str(data_root / "backups"))
    assert p.bin_dir == str(PG_BIN)
    res = _initdb(p)
    assert res.returncode == 0, res.stderr
    version = data_root / "data" / "PG_VERSION"
    assert version.read_text().strip() == "15"
    assert (data_root / "data").stat().st_mode & 0o777 == 0o700 and (data_root / "backups").owner() == "postgres"
    # Checksums on, as initdb was told.
    control = subprocess.run([str(PG_BIN / "pg_controldata"), str(data_root / "data")], capture_output=True, text=True)
    assert "Data page checksum version:           1" in control.stdout, control.stdout
    marker = data_root / "data" / "base"
    before = sorted(os.listdir(marker))
    assert _initdb(p).returncode == 0 and sorted(os.listdir(marker)) == before  # kept, not made again
    version.write_text("14\n")
    res = _initdb(p)
    assert res.returncode == 1 and "holds PostgreSQL 14 data, database.version is 15" in res.stderr and version.read_text() == "14\n"
    # Files but no PG_VERSION: refused, untouched.
    version.unlink()
    res = _initdb(p)
    assert res.returncode == 1 and "holds files but no PG_VERSION" in res.stderr


# ------------------------------------------------------------------ the graph


@pytest.fixture(scope="module")
def prod_run():
    run = run_program("prod")
    assert run.error is None, run.error
    return run


def _db_commands(run) -> dict:
    return {r.name: r for r in run.by_type(COMMAND) if "-postgresql-" in r.name}


def test_passwords_reach_the_node_only_as_verifiers_or_on_stdin(prod_run):
    cmds = _db_commands(prod_run)
    assert set(cmds) == {f"postgresql1-postgresql-{s}" for s in (
        "packages", "mount", "ca", "cert", "key", "unit", "hba", "ident", "initdb", "conf", "roles", "login",
        "backup-script", "backup-service", "backup-timer")} | {"storage1-postgresql-dirs"}
    pw = {r.name: r for r in prod_run.by_type(PASSWORD) if r.name.startswith("database-")}
    assert set(pw) == {"database-app-password", "database-postgres-password"}
    for r in pw.values():
        assert "result" in r.additional_secret_outputs and r.inputs["special"] is False and r.inputs["length"] == 32
    mock_password = ("m0ckPass" * 8)[:32]
    for name, cmd in cmds.items():
        assert "stdout" in cmd.additional_secret_outputs, name
        assert mock_password not in str(cmd.inputs.get("create")), name
        stdin = cmd.inputs.get("stdin")
        if name.endswith(("-roles", "-login", "-key")):
            assert "stdin" in cmd.secret_inputs, name
    roles = cmds["postgresql1-postgresql-roles"].inputs["stdin"]["value"]
    assert mock_password not in roles and "SCRAM-SHA-256$4096:" in roles
    assert cmds["postgresql1-postgresql-login"].inputs["stdin"]["value"] == f"app app {mock_password}\n"
    value, secret = prod_run.output_value("database")
    assert secret and value["databases"] == {"app": {"user": "app", "password": mock_password}} and value["host"] == "10.17.3.14"


def test_the_steps_run_in_order_and_the_storage_side_gets_the_nodes_ids(prod_run):
    cmds = _db_commands(prod_run)

    def after(name: str, first: str) -> bool:
        return cmds[first].urn in cmds[name].dependencies

    assert after("postgresql1-postgresql-initdb", "postgresql1-postgresql-mount")
    assert after("postgresql1-postgresql-mount", "storage1-postgresql-dirs")
    assert after("storage1-postgresql-dirs", "postgresql1-postgresql-packages") or \
        cmds["postgresql1-postgresql-packages"].urn in sum(cmds["storage1-postgresql-dirs"].property_dependencies.values(), [])
    for first in ("initdb", "unit", "hba", "ident", "cert", "key", "ca"):
        assert after("postgresql1-postgresql-conf", f"postgresql1-postgresql-{first}"), first
    assert after("postgresql1-postgresql-roles", "postgresql1-postgresql-conf")
    assert after("postgresql1-postgresql-login", "postgresql1-postgresql-roles")
    assert after("postgresql1-postgresql-backup-timer", "postgresql1-postgresql-login")
    # The storage node's directories wait for its exports (the Storage component), and are owned by the mock's ids.
    exports = next(r for r in prod_run.by_type(COMMAND) if r.name == "storage1-exports")
    assert exports.urn in cmds["storage1-postgresql-dirs"].dependencies
    assert "-o 104 -g 111" in cmds["storage1-postgresql-dirs"].inputs["create"]
    # The key file: 0640 root:postgres, as PostgreSQL accepts a key owned by root.
    assert "install -D -m 0640 -o root -g postgres" in cmds["postgresql1-postgresql-key"].inputs["create"]


def test_the_password_keeper_changes_the_passwords_and_nothing_else():
    m = _prod()
    m["database"]["password_keeper"] = "2027-01"
    base, rotated = run_program("prod"), run_program("prod", model=m)
    assert base.error is None and rotated.error is None
    for name in ("database-app-password", "database-postgres-password"):
        assert base.one(PASSWORD, name).inputs["keepers"] == {"rotate": ""}
        assert rotated.one(PASSWORD, name).inputs["keepers"] == {"rotate": "2027-01"}


# ------------------------------------------------------------------ the units, read by systemd


def test_the_database_nodes_units_pass_the_nodes_own_validator(tmp_path):
    """The server's unit, the dump's service and timer and the NFS mount, each through the validator the node runs
    (systemd-analyze verify under its real name; any message naming it fails), as prod and a Debian node render them."""
    if shutil.which("systemd-analyze") is None or not (PG_BIN / "postgres").exists():
        pytest.skip("systemd-analyze or Debian's postgresql-15 missing (.ci/install.sh installs them)")
    from components.render.nfs import render_nfs_mount
    from components.render.storage import mount_unit_name, unit_validator

    # Debian's paths: the binaries of this machine's PostgreSQL 15 (ExecStart= must exist for systemd).
    p = replace(dbspec.plan(parse_config(_prod())), family="debian", os="debian12")
    backup = dbspec.backup_spec(p)
    service, timer = pg.render_backup_units(backup)
    mount = dbspec.nfs_mount(p)
    units = {pg.UNIT_NAME: pg.render_unit(dbspec.unit_spec(p)), f"{pg.BACKUP_UNIT}.service": service,
             f"{pg.BACKUP_UNIT}.timer": timer, mount_unit_name(mount.where): render_nfs_mount(mount)}
    # On the node the server's unit is installed before the dump's service is checked (which Requires= it):
    # here it is found on a unit path of the test's own, before the system's.
    installed = tmp_path / "installed"
    installed.mkdir()
    (installed / pg.UNIT_NAME).write_text(units[pg.UNIT_NAME])
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{installed}:"}
    for name, text in units.items():
        f = tmp_path / "new"
        f.write_text(text)
        res = subprocess.run(["sh", "-c", unit_validator(name).format(file=str(f))], capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, (name, res.stderr)
    # EL9: the NFS mount carries PostgreSQL's SELinux data type for every file; the unit still verifies.
    el9 = dbspec.nfs_mount(replace(p, family="el9", os="rocky9"))
    assert el9.extra_options == (f'context="{dbspec.SELINUX_DATA}"',)
    text = render_nfs_mount(el9)
    assert f'Options=vers=4.2,proto=tcp,hard,noatime,_netdev,nofail,context="{dbspec.SELINUX_DATA}"' in text
    f = tmp_path / "new"
    f.write_text(text)
    res = subprocess.run(["sh", "-c", unit_validator(mount_unit_name(el9.where)).format(file=str(f))], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # The checker can fail: a misspelt key in the timer.
    f = tmp_path / "bad.timer"
    f.write_text(timer.replace("OnCalendar=", "OnCalender="))
    res = subprocess.run(["sh", "-c", unit_validator(f"{pg.BACKUP_UNIT}.timer").format(file=str(f))], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "Unknown key" in res.stderr
    # The calendar spec as systemd reads it: daily at the configured time, UTC.
    cal = subprocess.run(["systemd-analyze", "calendar", f"*-*-* {backup.time}:00 UTC"], capture_output=True, text=True, timeout=30)
    assert cal.returncode == 0 and "Normalized form: *-*-* 02:30:00 UTC" in cal.stdout, cal.stdout
