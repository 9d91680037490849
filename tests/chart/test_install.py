"""The chart installed, upgraded and uninstalled in the session's API server, and the gate run
under the chart's identity only.

One release for the module, in the order a platform meets it:
1. the chart as last committed at the previous version (from git) is installed, objects are
   made, and the release is upgraded to this chart: CRDs, floors, keys and releases are kept;
2. the hooks Helm would run (`--no-hooks` here: no kubelet runs the Job) are played: the certgen
   Job's command runs as the certgen ServiceAccount, with its own token;
3. the operator runs authenticated only as the chart's ServiceAccount (a TokenRequest token),
   the sidecar with no credentials and the configuration the chart rendered (its ConfigMap and
   Secrets written where the pod mounts them), the API server calling the webhook through the
   chart's Service (an EndpointSlice points at the operator's address; no controller makes one
   here) and checking the certificate certgen made: the gate's main paths must work, so a verb
   missing from the chart's RBAC fails this; and the delivery service runs as the chart's
   delivery ServiceAccount, with the configuration and files the chart gives its pod: a device
   gets a job document and downloads the signed bytes;
4. what those identities must not do: `kubectl auth can-i` denials, and attempts with the
   operator's token;
5. Pod Security `restricted` on the install namespace: the Deployments' and the Job's pod
   templates accepted, one with the hardening taken out refused;
6. an upgrade that changes nothing about the certificate; `helm uninstall` keeps CRDs and data.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import localgate
import pytest
import s3server
import yaml
from fleetsim import BUCKET
from localgate import kubectl_run, token_kubeconfig

from flashgate.delivery.devcerts import DeviceCA
from flashgate.delivery.server import argument_parser as delivery_arguments
from flashgate.operator.tls import make_serving_cert
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import Algorithm

from ..conftest import Cluster
from ..delivery.client import DeviceClient
from ..e2e.conftest import Fleet, GateSystem
from ..e2e.delivery import Delivery, a_device_downloads_the_signed_bytes
from ..e2e.test_gate import assert_rejected
from ..verifier_sidecar.test_s3 import s3_server_for_tests
from .conftest import (
    CHART,
    DELIVERY_ACCOUNT,
    NAMESPACE,
    OPERATOR_ACCOUNT,
    REPO,
    ChartCluster,
    Doc,
    container,
    find,
    from_cluster,
    materialize,
    pod_of,
    rebase,
    values_file,
)

pytestmark = pytest.mark.e2e

# The chart version before this one: the upgrade starts there.
PREVIOUS = "0.3.0"
CURRENT = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
SECURITY_TEAM = ("--as=security-officer", "--as-group=system:masters",
                 "--as-group=flashgate:security-team")


def chart_versions() -> dict[str, str]:
    """Commit -> the chart's version there, for each commit that changed charts/flashgate,
    newest first (from git: the upgrade test needs the history, not a shallow clone). Commits
    of a branch that added files under charts/flashgate before it had the chart are left out."""
    log = subprocess.run(["git", "-C", str(REPO), "log", "--format=%H", "--",
                          "charts/flashgate"], capture_output=True, text=True)
    assert log.returncode == 0, f"git log needs the repository's history: {log.stderr}"
    versions = {}
    for commit in log.stdout.split():
        shown = subprocess.run(["git", "-C", str(REPO), "show",
                                f"{commit}:charts/flashgate/Chart.yaml"],
                               capture_output=True, text=True)
        if shown.returncode == 0:
            versions[commit] = yaml.safe_load(shown.stdout)["version"]
    return versions


def previous_chart(directory: Path) -> Path:
    """The chart as last committed at version PREVIOUS, from git."""
    commit = next((c for c, v in chart_versions().items() if v == PREVIOUS), None)
    assert commit is not None, f"no commit has charts/flashgate at version {PREVIOUS}"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "charts/flashgate"],
                             capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory / "charts" / "flashgate"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("-")[0].split("."))


def test_the_chart_version_is_above_the_previous_one() -> None:
    """Every change to the chart raises its version (PREVIOUS is the newest other version in
    the history, and this one is above every version there but its own)."""
    others = {v for v in chart_versions().values() if v != CURRENT}
    assert _version(CURRENT) > _version(PREVIOUS), \
        f"the chart changed since {PREVIOUS}: raise its version in charts/flashgate/Chart.yaml"
    assert max(others, key=_version) == PREVIOUS, \
        f"PREVIOUS should be {max(others, key=_version)}, the version before {CURRENT}"


def host_address() -> str:
    """An address of this machine that is not loopback (an EndpointSlice refuses loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.123", 9))  # no packet is sent: this picks the route's source
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "the webhook test needs a non-loopback address"
    return address


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChartGate(GateSystem):
    """The chart's pod as two local processes: the sidecar with the configuration file and the
    files the chart mounts into it, the operator as the chart's ServiceAccount."""

    def __init__(self, kube: Cluster, workdir: Path, root: KeySigner, pod: Doc,
                 **options: Any) -> None:
        super().__init__(kube, workdir, root, operator_namespace=NAMESPACE,
                         operator_account=OPERATOR_ACCOUNT, **options)
        self.pod = pod

    def sidecar_config(self) -> Path:
        mounted = materialize(from_cluster(self.kube), self.pod, "verifier",
                              self.workdir / "verifier-pod")
        verifier = next(c for c in self.pod["spec"]["containers"] if c["name"] == "verifier")
        config = next(a for a in verifier["args"] if a.startswith("--config="))
        text = Path(rebase(config.removeprefix("--config="), self.pod, "verifier",
                           mounted)).read_text()
        path = self.workdir / "verifier.yaml"
        path.write_text(rebase(text, self.pod, "verifier", mounted))
        return path


@dataclass
class Installed:
    cluster: ChartCluster
    fleets: tuple[str, str]
    outsider: str
    values: Path
    docs: list[Doc]
    before: dict[str, Doc]
    crd_uids: dict[str, str]
    gate: ChartGate
    s3: s3server.S3Server
    device_cas: dict[str, DeviceCA]
    delivery_ca: Path  # what devices pin: the CA of the delivery service's certificate
    hook_log: str = ""

    @property
    def kube(self) -> Cluster:
        return self.cluster.kube

    def get(self, kind: str, name: str, namespace: str | None = None) -> Doc:
        scope = ["-n", namespace] if namespace else []
        return dict(json.loads(self.kube.kubectl("get", kind, name, *scope, "-o",
                                                 "json").stdout))

    def play_hooks(self) -> None:
        """What Helm does at a hook phase, --no-hooks aside: create the hook's ServiceAccount
        and RBAC, run the certgen Job's container command as that ServiceAccount, and delete
        them again (hook-succeeded)."""
        hooks = [d for d in self.docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
        rbac = [d for d in hooks if d["kind"] != "Job"]
        job = find(hooks, "Job")
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
        try:
            spec = job["spec"]["template"]["spec"]
            account = spec["serviceAccountName"]
            kubeconfig = token_kubeconfig(self.kube.kubectl_path, self.kube.kubeconfig,
                                          self.gate.workdir / "certgen.kubeconfig", NAMESPACE,
                                          account)
            command = spec["containers"][0]
            assert command["command"] == ["flashgate-certgen"]
            result = subprocess.run([sys.executable, "-m", "flashgate.operator.certgen",
                                     *command["args"], f"--kubeconfig={kubeconfig}"],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
        finally:
            self.kube.kubectl("delete", "-f", "-", input=yaml.safe_dump_all(rbac))
        self.hook_log = result.stderr

    def upgrade(self, chart: Path = CHART, *extra: str) -> None:
        self.cluster.helm.run("upgrade", "flashgate", chart, "-n", NAMESPACE, "--no-hooks",
                              "-f", self.values, *extra)
        self.docs = self.cluster.helm.docs("-f", self.values, *extra)


def s3_release(fleet: Fleet, s3: s3server.S3Server, name: str, signers: list[KeySigner],
               **kwargs: Any) -> dict[str, Any]:
    """A release whose artifact is in the S3 server, where the chart's s3 settings point."""
    data = kwargs.pop("data", f"firmware {name} ".encode() * 1000)
    doc = fleet.release_doc(name, signers, data=data, **kwargs)
    key = f"{fleet.namespace}/{name}.bin"
    s3.put_object(BUCKET, key, data)
    doc["spec"]["artifact"]["url"] = f"s3://{BUCKET}/{key}"
    return doc


@pytest.fixture(scope="module")
def s3() -> Iterator[s3server.S3Server]:
    for server in s3_server_for_tests(iam=True):  # with a read-only account for delivery
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def installed(chart_cluster: ChartCluster, s3: s3server.S3Server,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    kube, helm = chart_cluster.kube, chart_cluster.helm
    workdir = tmp_path_factory.mktemp("chart-install")
    suffix = uuid.uuid4().hex[:6]
    fleets = (chart_cluster.namespace(f"chart-gate-a-{suffix}"),
              chart_cluster.namespace(f"chart-gate-b-{suffix}"))
    outsider = chart_cluster.namespace(f"chart-outsider-{suffix}")
    root = generate(Algorithm.ED25519)
    secret = kube.kubectl("create", "secret", "generic", "firmware-reader", "-n", NAMESPACE,
                          f"--from-file=access-key-id={s3.access_key_id_file}",
                          f"--from-file=secret-access-key={s3.secret_access_key_file}",
                          "--dry-run=client", "-o", "json").stdout
    kube.kubectl("apply", "-f", "-", input=secret)
    # The delivery service's: read-only S3 credentials and its serving certificate.
    presigner = s3.read_only_files(BUCKET, workdir / "presigner")
    kube.kubectl("apply", "-f", "-", input=kube.kubectl(
        "create", "secret", "generic", "firmware-presigner", "-n", NAMESPACE,
        f"--from-file=access-key-id={presigner['accessKeyIdFile']}",
        f"--from-file=secret-access-key={presigner['secretAccessKeyFile']}",
        "--dry-run=client", "-o", "json").stdout)
    delivery_ca, cert, key = make_serving_cert(("127.0.0.1", "localhost")).write(
        workdir / "delivery-tls")
    kube.kubectl("apply", "-f", "-", input=kube.kubectl(
        "create", "secret", "tls", "flashgate-delivery-tls", "-n", NAMESPACE, f"--cert={cert}",
        f"--key={key}", "--dry-run=client", "-o", "json").stdout)
    device_cas = {fleet: DeviceCA(f"{fleet} devices") for fleet in fleets}
    roots = [{"publicKey": root.public_pem, "algorithm": str(root.algorithm)}]
    s3_endpoint = {"endpoint": f"https://localhost:{s3.port}", "region": "us-east-1"}
    values = values_file(workdir, {
        "fleets": list(fleets),
        "delivery": {
            "enabled": True, "port": free_port(), "opsPort": free_port(),
            "fleets": {fleet: {"deviceCA": ca.cert_pem.decode()}
                       for fleet, ca in device_cas.items()},
            "config": {"s3": s3_endpoint},
            "s3Credentials": {"secretName": "firmware-presigner"}},
        "operator": {"metricsPort": free_port(), "webhookPort": free_port()},
        "verifier": {
            "port": free_port(), "metricsPort": free_port(),
            "config": {"roots": roots, "thresholds": {"bootloader": 2},
                       "allowedHosts": ["localhost"], "s3": s3_endpoint},
            "extraCA": s3.ca_file.read_text(),
            "s3Credentials": {"secretName": "firmware-reader"}}})
    # 1. The previous version, and objects made under it.
    previous = previous_chart(workdir / "previous")
    first = values_file(workdir, {"fleets": list(fleets), "verifier": {"config": {"roots": roots}}},
                        "previous-values.yaml")
    helm.run("install", "flashgate", previous, "-n", NAMESPACE, "--no-hooks", "-f", first)
    crd_names = [d["metadata"]["name"] for d in helm.docs("--show-only", "templates/crds.yaml")]
    crd_uids = {name: json.loads(kube.kubectl("get", "crd", name, "-o", "json").stdout)
                ["metadata"]["uid"] for name in crd_names}
    gate_pod: Doc = {}
    gate = ChartGate(kube, workdir / "gate", root, gate_pod)
    gate.workdir.mkdir()
    early = Fleet(gate, fleets[0])
    _, key = early.key_doc("kept-key", "application")
    floor = {"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "RollbackFloor",
             "metadata": {"name": "kept.application", "namespace": fleets[0]},
             "spec": {"product": "kept", "tier": "application", "securityVersion": 3}}
    release = early.release_doc("kept-release", [generate(Algorithm.ED25519)])
    release["metadata"]["namespace"] = outsider  # fleets refuse releases while no webhook runs
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([key]))
    kube.kubectl(*SECURITY_TEAM, "apply", "-f", "-", input=yaml.safe_dump_all([floor]))
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([release]))
    before = {}
    for doc in (key, floor, release):
        meta = doc["metadata"]
        before[meta["name"]] = json.loads(kube.kubectl(
            "get", doc["kind"], meta["name"], "-n", meta["namespace"], "-o", "json").stdout)
    # 2. This chart, its hooks played.
    installed = Installed(chart_cluster, fleets, outsider, values, [], before, crd_uids, gate, s3,
                          device_cas, delivery_ca)
    installed.upgrade()
    installed.play_hooks()
    # 3. The pod as local processes; the webhook Service routed to the operator.
    gate.pod.update(pod_of(installed.docs, "flashgate"))
    plan = yaml.safe_load(values.read_text())
    gate.sidecar_port = plan["verifier"]["port"]
    gate.metrics_port = plan["operator"]["metricsPort"]
    gate.webhook_port = plan["operator"]["webhookPort"]
    gate.webhook_addr = host_address()
    gate.webhook_cert_dir = materialize(from_cluster(kube), gate.pod, "operator",
                                        workdir / "operator-pod") \
        / "etc/flashgate/webhook-tls"
    service = find(installed.docs, "Service", "flashgate-webhook")
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "flashgate-webhook-local", "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": service["metadata"]["name"]}},
        "addressType": "IPv4",
        "ports": [{"name": service["spec"]["ports"][0]["name"], "port": gate.webhook_port,
                   "protocol": "TCP"}],
        "endpoints": [{"addresses": [gate.webhook_addr], "conditions": {"ready": True}}]}))
    yield installed
    gate.stop()


@pytest.fixture(scope="module")
def gate(installed: Installed) -> Iterator[ChartGate]:
    operator = next(c for c in installed.gate.pod["spec"]["containers"]
                    if c["name"] == "operator")
    fleets = [a.removeprefix("--namespace=") for a in operator["args"]
              if a.startswith("--namespace=")]
    assert fleets == list(installed.fleets)
    installed.gate.start_sidecar()
    installed.gate.start_operator(register_webhook=False, namespaces=fleets)
    yield installed.gate
    installed.gate.stop()


@contextlib.contextmanager
def webhook_taken_out(kube: Cluster) -> Iterator[None]:
    saved = json.loads(kube.kubectl("get", "validatingwebhookconfiguration", "flashgate", "-o",
                                    "json").stdout)
    kube.kubectl("delete", "validatingwebhookconfiguration", "flashgate")
    try:
        yield
    finally:
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            saved["metadata"].pop(key, None)
        kube.kubectl("create", "-f", "-", input=json.dumps(saved))


# ---- 1. the upgrade from the previous version --------------------------------------------------


def test_an_upgrade_from_the_previous_version_keeps_crds_floors_keys_and_releases(
        installed: Installed) -> None:
    for name, uid in installed.crd_uids.items():
        crd = installed.get("crd", name)
        assert crd["metadata"]["uid"] == uid, f"{name} was replaced, and its objects with it"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["helm.sh/chart"] == \
            f"flashgate-{yaml.safe_load((CHART / 'Chart.yaml').read_text())['version']}"
    for name, old in installed.before.items():
        now = installed.get(old["kind"], name, old["metadata"]["namespace"])
        assert (now["metadata"]["uid"], now["metadata"]["resourceVersion"]) == \
            (old["metadata"]["uid"], old["metadata"]["resourceVersion"]), name
    history = json.loads(installed.cluster.helm.run("history", "flashgate", "-n", NAMESPACE,
                                                    "-o", "json").stdout)
    assert [h["chart"] for h in history] == [f"flashgate-{PREVIOUS}", f"flashgate-{CURRENT}"]
    assert "made a new certificate" in installed.hook_log


# ---- 3. the gate, as the chart's identity -------------------------------------------------------


def test_the_gate_works_as_the_charts_serviceaccount(installed: Installed,
                                                     gate: ChartGate) -> None:
    s3 = installed.s3
    a, b = Fleet(gate, installed.fleets[0]), Fleet(gate, installed.fleets[1])
    app = a.signing_key("app", "application")
    cfg = a.signing_key("cfg", "config")
    # A release of the wrong tier: refused at apply time by the chart's webhook (through its
    # Service, with certgen's certificate) ...
    refused = a.apply(s3_release(a, s3, "cfg-as-boot", [cfg], tier="bootloader"), check=False)
    assert refused.returncode != 0
    assert "SigningKey cfg of tier config" in refused.stderr, refused.stderr
    # ... and Rejected by the gate itself when the webhook is out of the way.
    with webhook_taken_out(installed.kube):
        a.apply(s3_release(a, s3, "cfg-as-os", [cfg], tier="os"))
        assert_rejected(a, "cfg-as-os", "KeyNotTrustedForTier")
    # A good release is Published: floor raised, job document written, trust bundle kept.
    a.apply(s3_release(a, s3, "good", [app], version="4.2.0", security_version=7))
    status = a.wait_phase("firmwarerelease", "good", {"Published", "Rejected"})["status"]
    assert status["phase"] == "Published", status
    assert a.floor() == 7 and a.channel()["application"]["release"] == "good"
    assert "Published" in a.event_reasons("good")
    a.kubectl("get", "configmap", "flashgate-trust-bundle")
    # Revoking the key withdraws what it signed, and the revocation is recorded.
    a.kubectl("patch", "signingkey", "app", "--type=merge", "-p", '{"spec":{"revoked":true}}')
    withdrawn = a.wait_phase("firmwarerelease", "good", {"Withdrawn"}, timeout=20)["status"]
    assert withdrawn["reason"] == "KeyRevoked" and "application" not in a.channel()
    assert app.key_id in a.get("revocationlist", "revocations")["spec"]["keys"]
    assert a.floor() == 7
    # A rotation in the other fleet: the successor is Staged, then Active on time, and signs.
    b.signing_key("app-old", "application")
    new = b.signing_key("app-new", "application", wait="Staged", replaces="app-old",
                        overlap="1h", activate_at=int(time.time()) + 3)
    b.wait_phase("signingkey", "app-new", {"Active"}, timeout=20)
    assert b.get("signingkey", "app-old")["status"]["phase"] == "Retiring"
    b.apply(s3_release(b, s3, "by-new", [new], security_version=2))
    assert b.wait_phase("firmwarerelease", "by-new", {"Published", "Rejected"})["status"][
        "phase"] == "Published"


@pytest.fixture(scope="module")
def delivery(installed: Installed, gate: ChartGate) -> Iterator[Delivery]:
    """The delivery service as the chart's pod runs it: its rendered configuration, with the
    ConfigMaps and Secrets the pod mounts written where it mounts them, authenticated only as
    the chart's delivery ServiceAccount (a TokenRequest token)."""
    pod = pod_of(installed.docs, "flashgate-delivery")
    assert pod["spec"]["serviceAccountName"] == DELIVERY_ACCOUNT == localgate.DELIVERY_ACCOUNT
    root = materialize(from_cluster(installed.kube), pod, "delivery",
                      gate.workdir / "delivery-pod")
    args = delivery_arguments().parse_args(container(installed.docs, "delivery")["args"])
    config = rebase((root / str(args.config).lstrip("/")).read_text(), pod, "delivery", root)
    gate.start_delivery(yaml.safe_load(config))
    try:
        yield Delivery(gate, installed.s3, {ns: Fleet(gate, ns) for ns in installed.fleets},
                       installed.device_cas, DeviceClient("127.0.0.1", gate.delivery_port,
                                                          installed.delivery_ca,
                                                          gate.workdir / "devices"))
    finally:
        gate.stop_delivery()


def test_the_delivery_service_serves_devices_as_the_charts_serviceaccount(
        delivery: Delivery) -> None:
    for fleet in delivery.fleets.values():  # the chart bound it in both fleets
        a_device_downloads_the_signed_bytes(delivery, fleet, f"delivered-{fleet.namespace[-8:]}",
                                            "gw-dl", os.urandom(100_000))


# ---- 4. what the chart's identities must not do -------------------------------------------------


# (verb, resource, namespace: None cluster-scoped, "" every namespace, subresource)
Question = tuple[str, str, str | None, str | None]


def can_i(cluster: ChartCluster, account: str, question: Question) -> bool:
    verb, resource, namespace, subresource = question
    scope = ["-n", namespace] if namespace else ["--all-namespaces"] if namespace == "" else []
    sub = [f"--subresource={subresource}"] if subresource else []
    result = cluster.as_account(account, "auth", "can-i", verb, resource, *scope, *sub)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def assert_rights(cluster: ChartCluster, account: str, may: list[Question],
                  must_not: list[Question]) -> None:
    with ThreadPoolExecutor(4) as pool:
        answers = dict(zip(must_not + may, pool.map(lambda q: can_i(cluster, account, q),
                                                     must_not + may), strict=True))
    allowed = [q for q in must_not if answers[q]]
    assert not allowed, f"the chart's ServiceAccount {account} may {allowed}"
    denied = [q for q in may if not answers[q]]
    assert not denied, f"the chart's ServiceAccount {account} may not {denied}"


def test_what_the_charts_identity_may_and_may_not_do(installed: Installed) -> None:
    a, b = installed.fleets
    other = installed.outsider
    must_not: list[Question] = [
        ("get", "secrets", NAMESPACE, None), ("list", "secrets", a, None),
        ("watch", "secrets", b, None), ("list", "secrets", "", None),
        ("delete", "rollbackfloors", a, None), ("delete", "revocationlists", a, None),
        ("deletecollection", "rollbackfloors", a, None),
        ("delete", "firmwarereleases", a, None), ("delete", "signingkeys", a, None),
        ("create", "firmwarereleases", a, None), ("update", "firmwarereleases", a, None),
        ("patch", "firmwarereleases", a, None), ("update", "signingkeys", a, None),
        ("patch", "signingkeys", b, None), ("delete", "configmaps", a, None),
        ("list", "firmwarereleases", other, None), ("create", "configmaps", other, None),
        ("create", "rollbackfloors", other, None),
        ("patch", "firmwarereleases", other, "status"),
        ("list", "firmwarereleases", "", None), ("create", "pods", a, None),
        ("create", "pods", a, "exec"), ("create", "serviceaccounts", NAMESPACE, "token"),
        ("patch", "validatingwebhookconfigurations", None, None),
        ("create", "validatingadmissionpolicies", None, None),
        ("delete", "validatingadmissionpolicybindings", None, None),
        ("update", "customresourcedefinitions", None, None),
        ("create", "rolebindings", a, None), ("create", "clusterrolebindings", None, None),
        ("escalate", "roles", a, None), ("bind", "clusterroles", None, None),
        ("impersonate", "users", None, None), ("impersonate", "groups", None, None),
        ("impersonate", "serviceaccounts", NAMESPACE, None), ("list", "namespaces", None, None),
    ]
    may: list[Question] = [
        ("watch", "firmwarereleases", a, None), ("patch", "firmwarereleases", a, "status"),
        ("update", "signingkeys", b, "status"), ("create", "rollbackfloors", a, None),
        ("update", "rollbackfloors", b, "status"), ("create", "revocationlists", b, None),
        ("create", "configmaps", a, None), ("create", "events", b, None),
    ]
    assert_rights(installed.cluster, OPERATOR_ACCOUNT, may, must_not)


def test_the_delivery_service_may_only_read_configmaps_in_its_fleets(
        installed: Installed) -> None:
    a, b = installed.fleets
    may: list[Question] = [(verb, "configmaps", fleet, None)
                           for verb in ("get", "list", "watch") for fleet in (a, b)]
    must_not: list[Question] = [
        *[(verb, "configmaps", fleet, None) for fleet in (a, b)
          for verb in ("create", "update", "patch", "delete", "deletecollection")],
        ("get", "configmaps", installed.outsider, None),
        ("list", "configmaps", NAMESPACE, None), ("list", "configmaps", "", None),
        ("watch", "configmaps", "", None), ("get", "configmaps", "kube-system", None),
        *[(verb, "secrets", ns, None) for verb in ("get", "list", "watch")
          for ns in (a, NAMESPACE, "")],
        *[(verb, kind, a, None) for verb in ("get", "list", "watch")
          for kind in ("firmwarereleases", "signingkeys", "rollbackfloors", "revocationlists")],
        ("patch", "firmwarereleases", a, "status"), ("list", "firmwarereleases", "", None),
        ("create", "events", a, None), ("list", "pods", a, None), ("create", "pods", a, "exec"),
        ("create", "serviceaccounts", NAMESPACE, "token"), ("get", "leases", NAMESPACE, None),
        ("list", "namespaces", None, None), ("create", "rolebindings", a, None),
        ("bind", "clusterroles", None, None), ("impersonate", "serviceaccounts", NAMESPACE, None),
        ("patch", "validatingwebhookconfigurations", None, None),
    ]
    assert_rights(installed.cluster, DELIVERY_ACCOUNT, may, must_not)


def test_attempts_with_the_charts_token_are_refused(installed: Installed, gate: ChartGate) -> None:
    s3, b = installed.s3, Fleet(gate, installed.fleets[1])
    key = b.signing_key("app-attempts", "application")
    b.apply(s3_release(b, s3, "attempted", [key], version="5.0.0", security_version=9))
    b.wait_phase("firmwarerelease", "attempted", {"Published"})
    token = gate.workdir / "operator.kubeconfig"  # the operator's own TokenRequest token

    def as_operator(*args: str) -> subprocess.CompletedProcess[str]:
        return kubectl_run(gate.kubectl, token, "-n", b.namespace, *args, check=False)

    spec = as_operator("patch", "firmwarerelease", "attempted", "--type=merge",
                       "-p", '{"spec":{"version":"6.6.6"}}')
    assert spec.returncode != 0 and "forbidden" in spec.stderr, spec.stderr
    # Through the status subresource the API server drops a spec change.
    through_status = as_operator("patch", "firmwarerelease", "attempted", "--subresource=status",
                                 "--type=merge", "-p", '{"spec":{"version":"6.6.6"}}')
    assert through_status.returncode == 0, through_status.stderr
    assert b.get("firmwarerelease", "attempted")["spec"]["version"] == "5.0.0"
    lower = as_operator("patch", "rollbackfloor", "gw-3000.application", "--type=merge",
                        "-p", '{"spec":{"securityVersion":1}}')
    assert lower.returncode != 0 and "never goes down" in lower.stderr, lower.stderr
    delete = as_operator("delete", "rollbackfloor", "gw-3000.application")
    assert delete.returncode != 0 and "forbidden" in delete.stderr
    assert b.floor() == 9
    for secret in ("firmware-reader", "flashgate-webhook-tls"):
        read = kubectl_run(gate.kubectl, token, "-n", NAMESPACE, "get", "secret", secret,
                           check=False)
        assert read.returncode != 0 and "forbidden" in read.stderr, read.stderr
    elsewhere = kubectl_run(gate.kubectl, token, "-n", installed.outsider, "create", "configmap",
                            "channel.gw-3000.stable", check=False)
    assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr


# ---- 5. Pod Security -----------------------------------------------------------------------------


def _pod(name: str, spec: Doc) -> Doc:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def test_restricted_pod_security_accepts_the_pods_and_refuses_them_weakened(
        installed: Installed) -> None:
    kube = installed.kube
    kube.kubectl("label", "--overwrite", "namespace", NAMESPACE,
                 "pod-security.kubernetes.io/enforce=restricted",
                 "pod-security.kubernetes.io/enforce-version=latest")
    templates = {"operator-pod": pod_of(installed.docs, "flashgate")["spec"],
                 "delivery-pod": pod_of(installed.docs, "flashgate-delivery")["spec"],
                 "certgen-pod": find(installed.docs, "Job")["spec"]["template"]["spec"]}
    for name, spec in templates.items():
        result = kube.kubectl("create", "--dry-run=server", "-f", "-",
                              input=json.dumps(_pod(name, spec)), check=False)
        assert result.returncode == 0, result.stderr
        assert "created (server dry run)" in result.stdout
    weakened = json.loads(json.dumps(templates["operator-pod"]))
    weakened.pop("securityContext")
    for each in weakened["containers"]:
        each.pop("securityContext")
    result = kube.kubectl("create", "--dry-run=server", "-f", "-",
                          input=json.dumps(_pod("weakened", weakened)), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr, result.stderr
    for complaint in ("allowPrivilegeEscalation != false", "unrestricted capabilities",
                      "runAsNonRoot != true", "seccompProfile"):
        assert complaint in result.stderr, complaint


# ---- 6. upgrades without churn, and the uninstall ------------------------------------------------


def test_an_upgrade_changes_nothing_about_the_webhook_certificate(installed: Installed) -> None:
    secret = installed.get("secret", "flashgate-webhook-tls", NAMESPACE)
    bundles = [h["clientConfig"]["caBundle"] for h in
               installed.get("validatingwebhookconfiguration", "flashgate")["webhooks"]]
    assert len(set(bundles)) == 1 and bundles[0] == secret["data"]["ca.crt"]
    installed.upgrade(CHART, "--set", "operator.workers=16")
    after = installed.get("validatingwebhookconfiguration", "flashgate")["webhooks"]
    assert [h["clientConfig"]["caBundle"] for h in after] == bundles, \
        "helm upgrade dropped the injected caBundle"
    installed.play_hooks()
    assert "the certificate serves as it is; unchanged" in installed.hook_log
    assert "caBundle already current" in installed.hook_log
    assert installed.get("secret", "flashgate-webhook-tls", NAMESPACE)["metadata"][
        "resourceVersion"] == secret["metadata"]["resourceVersion"]


def test_uninstall_keeps_the_crds_and_every_object(installed: Installed, gate: ChartGate) -> None:
    gate.stop()
    result = installed.cluster.helm.run("uninstall", "flashgate", "-n", NAMESPACE)
    assert "kept due to the resource policy" in result.stdout
    for name, uid in installed.crd_uids.items():
        assert installed.get("crd", name)["metadata"]["uid"] == uid
    for name, old in installed.before.items():
        assert installed.get(old["kind"], name, old["metadata"]["namespace"])["metadata"][
            "uid"] == old["metadata"]["uid"]
    gone = installed.kube.kubectl("get", "deployment,validatingwebhookconfiguration,"
                                  "validatingadmissionpolicy", "-A", "-l",
                                  "app.kubernetes.io/instance=flashgate", "-o", "name").stdout
    assert gone.strip() == ""
