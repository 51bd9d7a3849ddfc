"""The database node's files (components/render/postgresql.py) read by PostgreSQL itself: Debian's
PostgreSQL 15 server, started by the test on loopback on a fresh cluster with the rendered settings,
pg_hba.conf and a certificate the test makes, and the roles SQL run through psql.

The server parses every line (pg_hba_file_rules reports none in error), a login over TLS with the
generated password works, and what the files must refuse is refused: plain TCP, a wrong password, the
superuser over the network, another database. Started and stopped by PID.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from components.render.postgresql import (
    Database,
    PostgresSpec,
    render_conf,
    render_hba,
    render_ident,
    render_backup_script,
    BackupSpec,
    render_roles_sql,
    roles_spec,
    scram_verifier,
    stable_salt,
)

pytestmark = pytest.mark.validators

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "Pw" + "q7Zr" * 8
SUPERUSER_PASSWORD = "Su" + "x4Kp" * 8


def _need() -> None:
    for tool in ("initdb", "postgres", "psql"):
        if not (PG_BIN / tool).exists() and not (tool == "psql" and shutil.which("psql")):
            pytest.skip(f"no {tool} (Debian package postgresql-15; .ci/install.sh installs it)")
    if shutil.which("runuser") is None or shutil.which("openssl") is None:
        pytest.skip("runuser or openssl missing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, timeout=120, **kw)


def _certs(d: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, crt = d / "ca.key", d / "ca.crt", d / "server.key", d / "server.csr", d / "server.crt"
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=microcloud-test-db-ca", "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=postgresql1",
        "-keyout", str(key), "-out", str(csr))
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
        "-extfile", str(ext), "-out", str(crt))
    return ca, crt, key


@pytest.fixture(scope="module")
def server():
    _need()
    # Not under pytest's tmp dir: that is root's alone (0700), and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="mc-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    ca, crt, key = _certs(base)
    for p in (crt, key):
        shutil.chown(p, "postgres", "postgres")
    os.chmod(key, 0o600)
    shutil.chown(sock, "postgres", "postgres")
    shutil.chown(base, "postgres", "postgres")
    res = _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "--auth-local=peer", "--auth-host=reject", "-E", "UTF8")
    assert res.returncode == 0, res.stderr
    port = _free_port()
    conf = base / "conf"
    conf.mkdir()
    spec = PostgresSpec(node="postgresql1", listen="127.0.0.1", clients=(ipaddress.IPv4Network("127.0.0.1/32"),),
                        databases=(Database("app", "app"),), port=port, cert_file=str(crt), key_file=str(key), extra_listen=(),
                        data_dir=str(data), hba_file=str(conf / "pg_hba.conf"), ident_file=str(conf / "pg_ident.conf"),
                        socket_dir=str(sock))
    # The files as the node gets them: the whole config file outside the data directory, which keeps
    # only what initdb made (its own postgresql.conf and pg_hba.conf are not read).
    (conf / "postgresql.conf").write_text(render_conf(spec))
    (conf / "pg_hba.conf").write_text(render_hba(spec))
    (conf / "pg_ident.conf").write_text(render_ident(spec))
    (data / "pg_hba.conf").write_text("# not read\nhost all all 0.0.0.0/0 trust\n")
    subprocess.run(["chown", "-R", "postgres:postgres", str(data), str(conf)], check=True)
    log = base / "server.log"
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-c", f"config_file={conf / 'postgresql.conf'}"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _as_postgres(str(PG_BIN / "pg_isready"), "-h", str(sock), "-p", str(port)).returncode == 0:
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
        else:
            pytest.fail("the server did not get ready: " + log.read_text()[-3000:])
        sql = base / "roles.sql"
        sql.write_text(render_roles_sql(roles_spec(spec, {"app": PASSWORD, "postgres": SUPERUSER_PASSWORD})))
        shutil.chown(sql, "postgres", "postgres")
        res = _as_postgres("psql", "-h", str(sock), "-p", str(port), "-d", "postgres", "-X", "-q", "-f", str(sql))
        assert res.returncode == 0, res.stderr
        yield {"spec": spec, "sock": sock, "port": port, "ca": ca, "sql": sql, "data": data, "log": log, "base": base}
    finally:
        # By PID: the postmaster is runuser's child; SIGTERM to both (a smart shutdown).
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        for pid in [*map(int, children), proc.pid]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _tcp(server, *, user="app", db="app", password=PASSWORD, sslmode="verify-full", sql="SELECT 1") -> subprocess.CompletedProcess:
    conn = f"host=127.0.0.1 port={server['port']} dbname={db} user={user} sslmode={sslmode} sslrootcert={server['ca']}"
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(["psql", conn, "-X", "-At", "-c", sql], capture_output=True, text=True, timeout=60, env=env)


def _admin(server, sql: str) -> str:
    res = _as_postgres("psql", "-h", str(server["sock"]), "-p", str(server["port"]), "-d", "postgres", "-X", "-At", "-c", sql)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_the_server_reads_every_line_of_the_files(server):
    assert _admin(server, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
    assert _admin(server, "SELECT count(*) FROM pg_file_settings WHERE error IS NOT NULL") == "0"
    assert _admin(server, "SHOW ssl") == "on" and _admin(server, "SHOW password_encryption") == "scram-sha-256"
    assert _admin(server, "SHOW listen_addresses") == "127.0.0.1"
    # Exactly the program's rules, in its order.
    assert _admin(server, "SHOW data_directory") == str(server["data"])
    rules = _admin(server, "SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), coalesce(address, ''), auth_method "
                           "FROM pg_hba_file_rules ORDER BY line_number").splitlines()
    assert rules == ["local|all|postgres||peer", "hostssl|all|postgres|127.0.0.1|scram-sha-256",
                     "local|app|app||scram-sha-256", "hostssl|app|app|127.0.0.1|scram-sha-256"], rules


def test_the_app_logs_in_over_tls_with_its_generated_password(server):
    res = _tcp(server, sql="SELECT current_user || ' ' || ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "app true"
    # The server stores the verifier the program computed, not the password.
    stored = _admin(server, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    assert stored == scram_verifier(PASSWORD, stable_salt(PASSWORD, "app")) and PASSWORD not in stored


@pytest.mark.parametrize("case, kw, said", [
    ("wrong password", {"password": "not-the-password"}, "password authentication failed"),
    ("plain TCP", {"sslmode": "disable"}, "no encryption"),
    # Only on loopback (the node itself), with its own password: not the app's.
    ("superuser with the app's password", {"user": "postgres"}, "password authentication failed"),
    ("another database", {"db": "postgres"}, "no pg_hba.conf entry"),
])
def test_what_the_files_refuse_is_refused(server, case, kw, said):
    res = _tcp(server, **kw)
    assert res.returncode != 0, case
    assert said in res.stderr, (case, res.stderr)


def test_the_superuser_logs_in_with_its_password_on_loopback_only(server):
    res = _tcp(server, user="postgres", db="postgres", password=SUPERUSER_PASSWORD, sql="SELECT current_user")
    assert res.returncode == 0 and res.stdout.strip() == "postgres", res.stderr


def test_the_roles_sql_runs_again_without_changing_anything(server):
    before = _admin(server, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    res = _as_postgres("psql", "-h", str(server["sock"]), "-p", str(server["port"]), "-d", "postgres", "-X", "-q", "-f", str(server["sql"]))
    assert res.returncode == 0, res.stderr
    assert _admin(server, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'") == before
    assert _admin(server, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'") == "app"
    # PUBLIC may not connect to the app's database.
    assert _admin(server, "SELECT has_database_privilege('public', 'app', 'CONNECT')") == "f"


def _backup(server, dbs=("app",), keep_days=3) -> tuple[subprocess.CompletedProcess, Path]:
    out = server["base"] / "backups"
    out.mkdir(exist_ok=True)
    shutil.chown(out, "postgres", "postgres")
    script = server["base"] / "backup.sh"
    script.write_text(render_backup_script(BackupSpec(binary_dir=str(PG_BIN), backup_dir=str(out), databases=dbs, keep_days=keep_days,
                                                      time="02:30", socket_dir=str(server["sock"]), port=server["port"])))
    return _as_postgres("sh", str(script)), out


def test_the_daily_dump_writes_a_dump_pg_restore_reads_and_drops_old_ones(server):
    assert _tcp(server, sql="CREATE TABLE IF NOT EXISTS kept (v text); INSERT INTO kept VALUES ('before the dump')").returncode == 0
    out = server["base"] / "backups"
    out.mkdir(exist_ok=True)
    old, recent = out / "app-20000101T000000Z.dump", out / "app-20000102T000000Z.dump"
    for f, age_days in ((old, 5), (recent, 1)):
        f.write_text("an older dump")
        t = time.time() - age_days * 86400 - 3600
        os.utime(f, (t, t))
    res, out = _backup(server, keep_days=3)
    assert res.returncode == 0, res.stderr
    dumps = sorted(p.name for p in out.glob("app-*.dump"))
    assert old.name not in dumps and recent.name in dumps and len(dumps) == 2, dumps
    new = next(p for p in out.glob("app-*.dump") if p != recent)
    listed = subprocess.run([str(PG_BIN / "pg_restore"), "--list", str(new)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "TABLE public kept" in listed.stdout, listed.stderr
    assert not list(out.glob(".*partial"))


def test_a_failed_dump_keeps_every_older_one(server):
    out = server["base"] / "backups"
    before = sorted(p.name for p in out.glob("*.dump")) if out.exists() else []
    stale = out / "app-19990101T000000Z.dump"
    out.mkdir(exist_ok=True)
    stale.write_text("old")
    os.utime(stale, (0, 0))
    res, out = _backup(server, dbs=("app", "missing_db"), keep_days=1)
    assert res.returncode == 1 and "pg_dump of missing_db failed" in res.stderr
    assert stale.exists(), "a failing round deleted an old dump"
    assert not list(out.glob(".*partial"))
    assert set(before) <= {p.name for p in out.glob("*.dump")}


@pytest.mark.unit
def test_bad_specs_are_refused():
    ok = dict(node="db", listen="10.0.0.5", clients=(ipaddress.IPv4Network("10.0.4.0/24"),), databases=(Database("app", "app"),))
    for bad, said in ((dict(clients=()), "no client network"), (dict(clients=(ipaddress.IPv4Network("0.0.0.0/0"),)), "every address"),
                      (dict(databases=(Database("App", "app"),)), "lowercase"), (dict(databases=(Database("app", "postgres"),)), "own role"),
                      (dict(databases=(Database("a", "x"), Database("a", "y"))), "twice"), (dict(port=0), "port")):
        with pytest.raises(ValueError) as err:
            render_hba(PostgresSpec(**{**ok, **bad}))
        assert said in str(err.value)
