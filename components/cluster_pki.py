"""ClusterPki: the cluster's own CAs, its secure join tokens and the admin client certificate, all made by Pulumi.

K3s would make its CAs itself on the first server's first start; then nodes
could only trust whatever CA answered at the VIP, and the admin kubeconfig
had to be read back from a node. Here pulumi-tls makes every CA of K3s'
custom-CA layout (server, client, request-header, etcd server and peer; the
service-account key) and K3sCluster places them on the cluster-init server
before K3s first starts. From them:

- the server and agent tokens are in K3s' secure form (``K10<CA hash>::``):
  a joining node checks the cluster's CA before it sends its password, and
  agents hold a token of their own that cannot join a server;
- the secrets encryption config (aescbc, a 32-byte key: the SHA-256 of a generated 64-character password)
  goes to the cluster-init server with the CAs, so Secrets are encrypted in
  etcd from its first write;
- the admin kubeconfig is built here from a client certificate Pulumi signs
  with the client CA (``system:masters``), nothing read from a node. It is
  valid ``kubeconfig_validity_days`` and renewed by the first ``pulumi up``
  in its last ``kubeconfig_renew_days`` (pulumi-tls' early renewal);
  ``kubeconfig_keeper`` reissues it at once.

Every key and token is secret in state; the certificates are public.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from .render import budget, k3s_hardening, k3s_pki

# A cluster CA outlives any node; rotating it is K3s' `certificate rotate-ca`, not a replacement.
CA_VALIDITY_HOURS = 10 * 365 * 24
# The disruption budget's client certificate: a year, renewed by any `up` in its last 60 days.
BUDGET_VALIDITY_DAYS = 365
BUDGET_RENEW_DAYS = 60
_CA_USES = ["cert_signing", "crl_signing", "digital_signature", "key_encipherment"]
_SECRET_KEYS = ["private_key_pem", "private_key_pem_pkcs8", "private_key_openssh"]


@dataclass(frozen=True)
class ClusterPkiArgs:
    # Names the CAs and the admin user: <prefix>-server-ca, ...
    prefix: str
    admin_validity_days: int
    admin_renew_days: int
    # Any string; a new one reissues the admin certificate.
    admin_keeper: str
    # k3s.hardening.secrets_encryption: the cluster-init server gets the encryption config.
    secrets_encryption: bool = True


class ClusterPki(pulumi.ComponentResource):
    server_ca_pem: pulumi.Output[str]
    ca_hash: pulumi.Output[str]
    tls_files: pulumi.Output[dict]
    server_token: pulumi.Output[str]
    agent_token: pulumi.Output[str]
    admin_cert_pem: pulumi.Output[str]
    admin_key_pem: pulumi.Output[str]
    admin_expires_at: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterPkiArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:k3s:ClusterPki", name, None, opts)
        # The kubeconfig's cluster, user and context names.
        self.kubeconfig_name = args.prefix
        if not 0 < args.admin_renew_days < args.admin_validity_days:
            raise ValueError(f"k3s pki: renew days {args.admin_renew_days} must be within the validity {args.admin_validity_days}")
        self._secret = pulumi.ResourceOptions(parent=self, additional_secret_outputs=_SECRET_KEYS)
        child = pulumi.ResourceOptions(parent=self)
        files: dict[str, pulumi.Output[str]] = {}
        certs: dict[str, tls.SelfSignedCert] = {}
        keys: dict[str, tls.PrivateKey] = {}
        for ca, (cert_path, key_path) in k3s_pki.CA_FILES.items():
            key = self._key(f"{name}-{ca}-ca")
            cert = tls.SelfSignedCert(
                f"{name}-{ca}-ca",
                private_key_pem=key.private_key_pem,
                is_ca_certificate=True,
                set_subject_key_id=True,
                subject=tls.SelfSignedCertSubjectArgs(common_name=f"{args.prefix}-{ca}-ca", organizational_unit="microcloud"),
                validity_period_hours=CA_VALIDITY_HOURS,
                allowed_uses=_CA_USES,
                opts=child,
            )
            keys[ca], certs[ca] = key, cert
            files[cert_path] = cert.cert_pem
            files[key_path] = pulumi.Output.secret(key.private_key_pem)
        service = tls.PrivateKey(f"{name}-service-account", algorithm="RSA", rsa_bits=2048, opts=self._secret)
        files[k3s_pki.SERVICE_KEY] = pulumi.Output.secret(service.private_key_pem)

        self.server_ca_pem = certs["server"].cert_pem
        self.ca_hash = self.server_ca_pem.apply(k3s_pki.ca_hash)
        self.tls_files = pulumi.Output.secret(pulumi.Output.all(**files))

        def token(user: str) -> pulumi.Output[str]:
            password = random.RandomPassword(f"{name}-{user}-token", length=48, special=False, opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]))
            return pulumi.Output.secret(
                pulumi.Output.all(self.server_ca_pem, password.result).apply(lambda a, u=user: k3s_pki.secure_token(a[0], u, a[1]))
            )

        self.server_token = token("server")
        self.agent_token = token("node")

        # Secrets encryption: the key K3s would make at cluster-init, made here so that the state
        # (secret) holds it and an etcd snapshot can be read back without a server's disk.
        # A password hashed to the key, not RandomBytes: that resource's ID is the key itself, in clear.
        seed = random.RandomPassword(f"{name}-secrets-encryption", length=k3s_hardening.ENCRYPTION_SEED_LENGTH, special=False,
                                     opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]))
        self.secrets_encryption = args.secrets_encryption
        self.encryption_config = pulumi.Output.secret(
            seed.result.apply(lambda p: k3s_hardening.render_encryption_config(
                k3s_hardening.EncryptionKey(key_b64=k3s_hardening.key_from_seed(p))))
        )

        # The admin: K3s' own admin is system:admin in system:masters; this one is named for the stack.
        admin_key, admin = self._client_cert(
            f"{name}-admin", tls.CertRequestSubjectArgs(common_name=f"{args.prefix}-admin", organization="system:masters", serial_number=args.admin_keeper),
            keys["client"], certs["client"], args.admin_validity_days, args.admin_renew_days,
        )
        # The disruption budget's user (render/budget.py): on every K3s node, for Leases and drains only
        # (RBAC binds the name; no group). Renewed by any `up` in its last 60 days; K3s does not read it.
        budget_key, budget_cert = self._client_cert(
            f"{name}-budget", tls.CertRequestSubjectArgs(common_name=budget.USER),
            keys["client"], certs["client"], BUDGET_VALIDITY_DAYS, BUDGET_RENEW_DAYS,
        )
        self._budget_cert_pem = budget_cert.cert_pem
        self._budget_key_pem = pulumi.Output.secret(budget_key.private_key_pem)

        self.admin_cert_pem = admin.cert_pem
        self.admin_key_pem = pulumi.Output.secret(admin_key.private_key_pem)
        self.admin_expires_at = admin.validity_end_time
        self.register_outputs(
            {"server_ca_pem": self.server_ca_pem, "ca_hash": self.ca_hash, "admin_expires_at": self.admin_expires_at}
        )

    def join_input(self, role: str, cluster_init: bool, registries: pulumi.Input[str] = "", budget_server: str = "") -> pulumi.Output[str]:
        """A node's install-command stdin (render/k3s_pki.py): its tokens, the CAs for the cluster-init server,
        K3s' registries.yaml (``registries``, secret: it holds passwords) for every node, and with
        ``budget_server`` (the API URL) the disruption budget's kubeconfig. Secret."""
        budget_kc = self.budget_kubeconfig(budget_server) if budget_server else ""
        return pulumi.Output.secret(
            pulumi.Output.all(self.server_token, self.agent_token, self.tls_files, self.encryption_config, registries, budget_kc).apply(
                lambda a: k3s_pki.render_join_input(
                    k3s_pki.join_input_for(role, cluster_init, server_token=a[0], agent_token=a[1], files=a[2],
                                           creds={k3s_hardening.ENCRYPTION_CONFIG: a[3]} if self.secrets_encryption else {},
                                           registries=a[4], budget_kubeconfig=a[5])
                )
            )
        )

    def budget_kubeconfig(self, server: str) -> pulumi.Output[str]:
        """The disruption budget's kubeconfig for the API at ``server`` (render/budget.py). Secret."""
        return pulumi.Output.secret(
            pulumi.Output.all(self.server_ca_pem, self._budget_cert_pem, self._budget_key_pem).apply(
                lambda a: k3s_pki.render_kubeconfig(k3s_pki.KubeconfigSpec(
                    name=f"{self.kubeconfig_name}-budget", server=server, ca_pem=a[0], cert_pem=a[1], key_pem=a[2], user="disruption-budget"))
            )
        )

    def kubeconfig(self, server: str, after: pulumi.Input[str]) -> pulumi.Output[str]:
        """The admin kubeconfig for the API at ``server``, once ``after`` (the cluster's readiness) has a value. Secret."""
        return pulumi.Output.secret(
            pulumi.Output.all(after, self.server_ca_pem, self.admin_cert_pem, self.admin_key_pem).apply(
                lambda a: k3s_pki.render_kubeconfig(k3s_pki.KubeconfigSpec(name=self.kubeconfig_name, server=server, ca_pem=a[1], cert_pem=a[2], key_pem=a[3]))
            )
        )

    def _client_cert(self, name: str, subject: tls.CertRequestSubjectArgs, ca_key: tls.PrivateKey, ca_cert: tls.SelfSignedCert,
                     validity_days: int, renew_days: int) -> tuple[tls.PrivateKey, tls.LocallySignedCert]:
        """A client key and its certificate signed by the client CA; reissued by the first `up` within ``renew_days`` of its end."""
        child = pulumi.ResourceOptions(parent=self)
        key = self._key(name)
        request = tls.CertRequest(name, private_key_pem=key.private_key_pem, subject=subject, opts=child)
        cert = tls.LocallySignedCert(
            name,
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca_cert.cert_pem,
            validity_period_hours=validity_days * 24,
            early_renewal_hours=renew_days * 24,
            allowed_uses=["client_auth", "digital_signature", "key_encipherment"],
            opts=child,
        )
        return key, cert

    def _key(self, name: str) -> tls.PrivateKey:
        # ECDSA P-256: what K3s makes for its own CAs and client certificates.
        return tls.PrivateKey(name, algorithm="ECDSA", ecdsa_curve="P256", opts=self._secret)
