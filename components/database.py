"""Database: PostgreSQL on the stack's `database` node, its data on the storage node's NFS disk (or its own).

Day 2, over SSH with the day-2 helpers, every step keyed on its content and on the VM's domain id
(a rebuilt VM gets it all again, its data found where it was):

1. ``<node>-postgresql-packages``: the pinned major version from the node OS's packages (only checked
   on an image that carries them), the distribution's own cluster units masked; prints the postgres
   user's ids;
2. ``<storage>-postgresql-dirs``: on the storage node, ``data`` and ``backups`` owned by those ids
   (its export, to this node's address alone, is in the storage node's /etc/exports);
3. ``<node>-postgresql-mount``: the NFS mount unit, checked by ``systemd-analyze verify``, mounted,
   verified with findmnt;
4. the stack's CA and the node's certificate and key (pulumi-tls), the unit, pg_hba.conf, pg_ident.conf;
   ``initdb`` once (an existing data directory of another major version is refused, never touched);
   the config file, checked by the server itself (``postgres -C``) before it is installed, then a
   restart verified with ``pg_isready``;
5. ``<node>-postgresql-roles``: each owner and its database, with SCRAM verifiers computed here from
   the generated passwords (the node never gets a clear password to keep);
6. ``<node>-postgresql-login``: each owner logs in over TCP on the node's address with TLS verified
   against the CA and its generated password: the proof that what an app is given works;
7. the daily dump: script, service and timer, and one dump made and checked at once.

Outputs: ``connection`` (host, port, the CA certificate, and per database its owner and password: secret).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_random as random
import pulumi_tls as tls
from pulumi_command import remote

from .day2 import QUIET, NodeAccess, apply_file, trigger_digest
from .render import postgresql as pg
from .render.nfs import render_nfs_mount
from .render.storage import mount_unit_name, unit_validator
from .specs import database as dbspec

CA_VALIDITY_HOURS = 10 * 365 * 24
CERT_VALIDITY_HOURS = 2 * 365 * 24
CERT_RENEW_HOURS = 60 * 24
_KEY_SECRETS = ["private_key_pem", "private_key_pem_pkcs8", "private_key_openssh"]
UNIT = pg.UNIT_NAME.removesuffix(".service")
UNIT_PATH = f"/etc/systemd/system/{pg.UNIT_NAME}"
BACKUP_SERVICE = f"{pg.BACKUP_UNIT}.service"
BACKUP_TIMER = f"{pg.BACKUP_UNIT}.timer"


@dataclass(frozen=True)
class DatabaseArgs:
    prefix: str
    plan: dbspec.DatabasePlan
    access: NodeAccess
    # password_keeper: a new value makes new passwords
    keeper: str = ""
    # What must be in place first (the storage node's export).
    wait_for: Sequence[pulumi.Resource] = ()


class Database(pulumi.ComponentResource):
    connection: pulumi.Output[dict]

    def __init__(self, name: str, args: DatabaseArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:database:Database", name, None, opts)
        p, access = args.plan, args.access
        node = p.node
        conn = access.conn(node)
        again = [access.domain_ids[node]]
        child = pulumi.ResourceOptions(parent=self)
        secret_result = pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"])

        # Passwords: one per owner and the superuser's (used on the node itself only).
        owners = sorted({d.owner for d in p.databases})
        passwords = {
            role: random.RandomPassword(f"{name}-{role}-password", length=32, special=False,
                                        keepers={"rotate": args.keeper}, opts=secret_result).result
            for role in [*owners, "postgres"]
        }

        # TLS: the stack's database CA and the node's certificate (its address and name).
        ca_key = tls.PrivateKey(f"{name}-ca", algorithm="ECDSA", ecdsa_curve="P256",
                                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=_KEY_SECRETS))
        ca = tls.SelfSignedCert(
            f"{name}-ca", private_key_pem=ca_key.private_key_pem, is_ca_certificate=True, set_subject_key_id=True,
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"{args.prefix}-database-ca", organizational_unit="microcloud"),
            validity_period_hours=CA_VALIDITY_HOURS, allowed_uses=["cert_signing", "crl_signing", "digital_signature"], opts=child)
        key = tls.PrivateKey(f"{name}-server", algorithm="ECDSA", ecdsa_curve="P256",
                             opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=_KEY_SECRETS))
        csr = tls.CertRequest(f"{name}-server", private_key_pem=key.private_key_pem,
                              subject=tls.CertRequestSubjectArgs(common_name=p.fqdn), dns_names=[p.fqdn, p.node],
                              ip_addresses=[p.ip], opts=child)
        cert = tls.LocallySignedCert(
            f"{name}-server", cert_request_pem=csr.cert_request_pem, ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem, validity_period_hours=CERT_VALIDITY_HOURS, early_renewal_hours=CERT_RENEW_HOURS,
            allowed_uses=["server_auth", "digital_signature", "key_encipherment"], opts=child)

        # 1. Packages; the postgres user's ids for the storage node.
        version_key = f"{p.family}-{p.version}-{p.nfs_mount is not None}"
        packages = remote.Command(
            f"{node}-postgresql-packages",
            connection=conn.args(),
            create=dbspec.packages_script(p),
            triggers=[version_key, *again],
            logging=QUIET,
            opts=conn.options(pulumi.ResourceOptions(parent=self, custom_timeouts=pulumi.CustomTimeouts(create="30m"),
                                                     additional_secret_outputs=["stdout", "stderr"])),
        )
        ids = pulumi.Output.unsecret(packages.stdout.apply(lambda out: dbspec.postgres_ids(out)))
        before_data: list[pulumi.Resource] = [packages]

        # 2-3. The directories on the storage node, and their mount here.
        if p.nfs_mount is not None:
            sconn = access.conn(p.storage_node)
            dirs = remote.Command(
                f"{p.storage_node}-postgresql-dirs",
                connection=sconn.args(),
                create=ids.apply(lambda i: dbspec.storage_dirs_script(p, i[0], i[1])),
                triggers=[ids.apply(lambda i: ":".join(i)), access.domain_ids[p.storage_node], *again],
                logging=QUIET,
                opts=sconn.options(pulumi.ResourceOptions(parent=self, depends_on=list(args.wait_for),
                                                          additional_secret_outputs=["stdout", "stderr"])),
            )
            spec = dbspec.nfs_mount(p)
            unit = mount_unit_name(spec.where)
            w, u = shlex.quote(spec.where), shlex.quote(unit)
            mount = apply_file(
                f"{node}-postgresql-mount",
                conn=conn,
                node=node,
                content=render_nfs_mount(spec),
                path=f"/etc/systemd/system/{unit}",
                validate=unit_validator(unit),
                activate=f"systemctl daemon-reload && mkdir -p {w} && systemctl enable -q {u} && systemctl restart {u}",
                verify=f'[ "$(findmnt -rn -o FSTYPE -M {w})" = nfs4 ] && runuser -u postgres -- test -w {w}/data',
                replace_with=[*again, dirs.id],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[packages, dirs]),
            )
            before_data.append(mount)

        def put(res: str, content, path: str, **kw) -> remote.Command:
            return apply_file(f"{node}-postgresql-{res}", conn=conn, node=node, content=content, path=path,
                              replace_with=[*again, *kw.pop("also", [])], opts=pulumi.ResourceOptions(parent=self, depends_on=kw.pop("after", [packages])), **kw)

        reload_if_up = f"if systemctl is-active -q {UNIT}; then systemctl reload {UNIT}; fi"
        up_or_down = f"! systemctl is-active -q {UNIT} || {p.bin_dir}/pg_isready -q -h /run/postgresql"
        server = dbspec.server_spec(p)
        x509 = "openssl x509 -noout -in {file}"
        ca_file = put("ca", ca.cert_pem, dbspec.CA_FILE, validate=x509, activate="true", verify=f"[ -s {dbspec.CA_FILE} ]")
        cert_file = put("cert", cert.cert_pem, server.cert_file, validate=x509, activate=reload_if_up, verify=up_or_down)
        # PostgreSQL reads a key owned by root only with mode 0640 and its own group.
        key_file = put("key", pulumi.Output.secret(key.private_key_pem), server.key_file, mode="0640", group="postgres",
                       validate="openssl pkey -noout -in {file}", activate=reload_if_up, verify=up_or_down)
        unit_file = put("unit", pg.render_unit(dbspec.unit_spec(p)), UNIT_PATH, validate=unit_validator(pg.UNIT_NAME),
                        activate="systemctl daemon-reload", verify=f"systemctl cat {UNIT} >/dev/null")
        hba = put("hba", pg.render_hba(server), server.hba_file, mode="0640", group="postgres", validate="grep -q . {file}",
                  activate=reload_if_up,
                  verify=f'! systemctl is-active -q {UNIT} || [ "$(runuser -u postgres -- {p.bin_dir}/psql -X -At -h /run/postgresql -d postgres '
                         '-c "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL")" = 0 ]')
        ident = put("ident", pg.render_ident(server), server.ident_file, mode="0640", group="postgres", validate="grep -q . {file}",
                    activate=reload_if_up, verify=up_or_down)

        # 4. The data directory, once.
        initdb = remote.Command(
            f"{node}-postgresql-initdb",
            connection=conn.args(),
            create=dbspec.initdb_script(p),
            triggers=[str(p.version), p.data_dir, *again, *(r.id for r in before_data[1:])],
            logging=QUIET,
            opts=conn.options(pulumi.ResourceOptions(parent=self, depends_on=before_data,
                                                     custom_timeouts=pulumi.CustomTimeouts(create="20m"),
                                                     additional_secret_outputs=["stdout", "stderr"])),
        )
        # The server itself reads the new file (as postgres, from a copy it may read) before it is installed.
        check_conf = (
            'c=$(mktemp); cp {file} "$c"; chown postgres "$c"; '
            f'runuser -u postgres -- {p.bin_dir}/postgres -C data_directory -c config_file="$c" >/dev/null; rc=$?; rm -f "$c"; exit $rc'
        )
        conf = put(
            "conf", pg.render_conf(server), pg.CONF_FILE, validate=check_conf,
            activate=f"systemctl daemon-reload && systemctl enable -q {UNIT} && systemctl restart {UNIT}",
            verify=f"restarted {UNIT} && {p.bin_dir}/pg_isready -q -h /run/postgresql && {p.bin_dir}/pg_isready -q -h {p.ip}",
            # A new unit, certificate or data directory: restart again.
            also=[unit_file.id, initdb.id],
            after=[initdb, unit_file, hba, ident, cert_file, key_file, ca_file],
        )

        def on_stdin(res: str, script: str, stdin: pulumi.Output, also: list, after: list) -> remote.Command:
            """A step fed a secret on stdin, run again when that secret (by its keyed digest) or ``also`` changes."""
            digest = pulumi.Output.unsecret(pulumi.Output.all(stdin, access.private_key).apply(lambda a: trigger_digest(a[0], a[1])))
            return remote.Command(
                f"{node}-postgresql-{res}",
                connection=conn.args(),
                create=script,
                stdin=stdin,
                triggers=[digest, *also, *again],
                logging=QUIET,
                opts=conn.options(pulumi.ResourceOptions(parent=self, depends_on=after, additional_secret_outputs=["stdout", "stderr"])),
            )

        # 5. Roles and databases.
        roles_sql = pulumi.Output.secret(pulumi.Output.all(**passwords).apply(
            lambda pw: pg.render_roles_sql(pg.roles_spec(server, pw))))
        roles = on_stdin("roles", dbspec.roles_script(p), roles_sql, also=[conf.id], after=[conf])

        # 6. A real login of each owner, over TLS, with its generated password.
        logins = pulumi.Output.secret(pulumi.Output.all(**passwords).apply(
            lambda pw: "".join(f"{d.name} {d.owner} {pw[d.owner]}\n" for d in sorted(p.databases, key=lambda d: d.name))))
        login = on_stdin("login", dbspec.login_check_script(p), logins, also=[roles.id, conf.id, cert_file.id, hba.id], after=[roles])

        # 7. The daily dump: the script, its service and timer; one dump made now, and checked.
        backup = dbspec.backup_spec(p)
        service_text, timer_text = pg.render_backup_units(backup)
        script = put("backup-script", pg.render_backup_script(backup), pg.BACKUP_SCRIPT, mode="0755",
                     validate="sh -n {file}", activate="true", verify=f"[ -x {pg.BACKUP_SCRIPT} ]", after=[roles])
        service = put("backup-service", service_text, f"/etc/systemd/system/{BACKUP_SERVICE}", validate=unit_validator(BACKUP_SERVICE),
                      activate="systemctl daemon-reload", verify=f"systemctl cat {BACKUP_SERVICE} >/dev/null", after=[script])
        bdir = shlex.quote(p.backup_dir)
        put("backup-timer", timer_text, f"/etc/systemd/system/{BACKUP_TIMER}", validate=unit_validator(BACKUP_TIMER),
            activate=f"systemctl daemon-reload && systemctl enable -q --now {BACKUP_TIMER} && systemctl start {BACKUP_SERVICE}",
            verify=f'systemctl is-active -q {BACKUP_TIMER} && [ "$(systemctl show -p Result --value {BACKUP_SERVICE})" = success ] '
                   # As postgres: on NFS (root_squash) the node's root may not look inside.
                   f'&& [ -n "$(runuser -u postgres -- find {bdir} -maxdepth 1 -name "*.dump" -newermt "-10 minutes" -size +0)" ]',
            also=[script.id, service.id, roles.id], after=[service, login])

        self.connection = pulumi.Output.secret(
            pulumi.Output.all(ca.cert_pem, login.id, *(passwords[d.owner] for d in p.databases)).apply(
                lambda a: {
                    "host": p.ip,
                    "fqdn": p.fqdn,
                    "port": 5432,
                    "sslmode": "verify-full",
                    "ca_certificate": a[0],
                    "databases": {d.name: {"user": d.owner, "password": pw} for d, pw in zip(p.databases, a[2:])},
                }
            )
        )
        self.ca_certificate = ca.cert_pem
        self.register_outputs({"ca_certificate": self.ca_certificate})
