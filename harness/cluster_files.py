"""The files harness/local_cluster.py's cluster runs on: its PKI, kubeconfigs and daemon configs.

Written fresh on every `scripts/cluster up`, into the cluster's own directory.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = datetime.timedelta(days=7)
PEM = serialization.Encoding.PEM


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _key(pki: Path, name: str) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path = pki / f"{name}.key"
    path.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
    )


def write_pki(pki: Path, node: str, node_ip: str, service_ip: str) -> dict[str, str]:
    """A CA; the API server's serving certificate and its client certificate for the kubelets;
    the service-account signing key; static tokens. Returns the tokens by user ("admin", "node")."""
    ca_key = _key(pki, "ca")
    ca_name = _name("spire-health-exporter test cluster CA")
    ca = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (pki / "ca.crt").write_bytes(ca.public_bytes(PEM))

    def issue(
        file: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> None:
        builder = _builder(subject, ca_name, _key(pki, file)).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        (pki / f"{file}.crt").write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(PEM))

    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    ips = ["127.0.0.1", node_ip, service_ip]
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    issue("apiserver", _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    issue(
        "apiserver-kubelet-client",
        _name("kube-apiserver", "system:masters"),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
    )
    sa = _key(pki, "sa").public_key()
    (pki / "sa.pub").write_bytes(sa.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    tokens = {"admin": secrets.token_hex(16), "node": secrets.token_hex(16)}
    (pki / "tokens.csv").write_text(
        f'{tokens["admin"]},admin,admin,"system:masters"\n'
        f'{tokens["node"]},system:node:{node},system:node:{node},"system:nodes"\n'
    )
    (pki / "tokens.csv").chmod(0o600)
    return tokens


def write_kubeconfig(path: Path, server: str, ca: Path, token: str) -> None:
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    path.write_text(f"""\
apiVersion: v1
kind: Config
clusters: [{{name: local, cluster: {{server: "{server}", certificate-authority-data: "{ca_data}"}}}}]
users: [{{name: user, user: {{token: "{token}"}}}}]
contexts: [{{name: local, context: {{cluster: local, user: user}}}}]
current-context: local
""")
    path.chmod(0o600)


def write_kubelet_config(path: Path, directory: Path, ca: Path) -> None:
    path.write_text(f"""\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false          # v1.34 is the last kubelet that runs on cgroup v1 at all
cgroupDriver: cgroupfs       # no systemd
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:              # as in production: the agent's k8s attestor presents its token
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{ca}"}}
authorization: {{mode: Webhook}}
readOnlyPort: 0
# Mounted Secrets and ConfigMaps change in the pods on the kubelet's periodic sync (1 min by
# default): prometheus-operator's rewritten configuration reaches its Prometheus sooner.
syncFrequency: 10s
healthzBindAddress: 127.0.0.1
podLogsDir: "{directory / "pod-logs"}"
resolvConf: "{directory / "resolv.conf"}"
# A test machine's full disk is no reason to evict the pods or delete the imported images.
evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
""")
    (directory / "resolv.conf").write_text("nameserver 127.0.0.1\n")


def write_cni_config(conf_dir: Path, pod_subnet: str, ipam_dir: Path) -> None:
    conf_dir.mkdir()
    (conf_dir / "10-she.conflist").write_text(f"""{{
  "cniVersion": "1.0.0", "name": "she",
  "plugins": [
    {{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {{"type": "host-local", "dataDir": "{ipam_dir}", "ranges": [[{{"subnet": "{pod_subnet}"}}]],
               "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
""")


def write_registry_config(path: Path, storage: Path, address: str) -> None:
    """Debian's docker-registry (the Distribution registry 2.8), serving plain HTTP on the
    cluster's network only, as a private registry behind a cluster's firewall would."""
    path.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address}
""")


def write_registry_hosts(hosts_dir: Path, registry: str) -> None:
    """containerd's per-registry hosts file: this registry speaks HTTP, not HTTPS."""
    host = hosts_dir / registry
    host.mkdir(parents=True)
    (host / "hosts.toml").write_text(
        f'server = "http://{registry}"\n\n[host."http://{registry}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def containerd_config(
    default: str, root: Path, cni_dir: Path, sandbox_image: str, registry_hosts: Path
) -> str:
    """containerd's own default config with the settings this cluster needs changed; raises
    ValueError naming a setting that the default no longer has."""
    replacements = {
        # The registry's hosts files (write_registry_hosts); the only config_path in the default.
        'config_path = ""': f'config_path = "{registry_hosts}"',
        'root = "/var/lib/containerd"': f'root = "{root}"',
        'bin_dir = "/opt/cni/bin"': 'bin_dir = "/usr/lib/cni"',
        'conf_dir = "/etc/cni/net.d"': f'conf_dir = "{cni_dir}"',
        'sandbox_image = "registry.k8s.io/pause:3.6"': f'sandbox_image = "{sandbox_image}"',
        # This machine forbids lowering oom_score_adj below the caller's, which runc otherwise
        # fails on ("can't get final child's PID from pipe: EOF").
        "restrict_oom_score_adj = false": "restrict_oom_score_adj = true",
    }
    for old, new in replacements.items():
        if old not in default:
            raise ValueError(f"containerd's default config has no {old!r} to replace")
        default = default.replace(old, new)
    return default
