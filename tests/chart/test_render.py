"""The chart as rendered: `helm lint`; every values file of values/ accepted by the API server
(`kubectl apply --dry-run=server`, with the cert-manager and Prometheus Operator CRDs applied so
that their kinds are checked too); the decisions it shares with the operator (the webhook's), with
the sidecar and with the delivery service (their configuration files, read by their own loaders;
the delivery service's identity, bound per fleet, and its network); what its schema and its
checks refuse; renders that never change by themselves (Argo CD); the files other work adds
(files/alerts.yaml, files/dashboard.json); deploy/ and the generated files up to date; every
value documented."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import chart as chart_files  # hack/chart.py
import pytest
import yaml
from kubernetes.config import incluster_config

from flashgate.delivery.config import load_settings
from flashgate.delivery.devcerts import DeviceCA
from flashgate.delivery.server import argument_parser as delivery_arguments
from flashgate.operator import webhook
from flashgate.operator.tls import make_serving_cert
from flashgate.verifier_sidecar.config import load_settings as load_sidecar_settings

from .conftest import (
    CHART,
    DELIVERY_ACCOUNT,
    NAMESPACE,
    OPERATOR_ACCOUNT,
    VALUES,
    VALUES_FLEETS,
    ChartCluster,
    Doc,
    Helm,
    container,
    find,
    from_rendering,
    materialize,
    pod_of,
    rebase,
    values_file,
)

pytestmark = pytest.mark.e2e

VALUE_SETS = sorted(path.stem for path in VALUES.glob("*.yaml"))
# A CA certificate's shape, for what the schema checks (never loaded).
PEM = "-----BEGIN CERTIFICATE-----\nTUlJ\n-----END CERTIFICATE-----\n"


def _kinds(docs: list[Doc]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc["metadata"]["name"])
    return kinds


def test_helm_lint_with_every_values_file(helm: Helm) -> None:
    for name in VALUE_SETS:
        result = helm.run("lint", "--strict", CHART, "-f", VALUES / f"{name}.yaml",
                          "--namespace", NAMESPACE)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("name", VALUE_SETS)
def test_each_values_file_renders_what_the_api_server_accepts(
        chart_cluster: ChartCluster, helm: Helm, name: str) -> None:
    rendered = helm.template("-f", VALUES / f"{name}.yaml").stdout
    result = chart_cluster.kube.kubectl("apply", "--server-side", "--force-conflicts",
                                        "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # e.g. a deprecated field
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = _kinds(docs)
    values = yaml.safe_load((VALUES / f"{name}.yaml").read_text()) or {}
    fleets = values.get("fleets", "*")
    operator = container(docs, "operator")
    webhooks = find(docs, "ValidatingWebhookConfiguration")["webhooks"]
    if fleets == "*":
        assert "--all-namespaces" in operator["args"]
        assert kinds["ClusterRole"].count("flashgate-operator") == 1
        assert "Role" not in kinds or "flashgate-operator" not in kinds["Role"]
        assert all(hook["namespaceSelector"] == {} for hook in webhooks)
    else:
        assert [a for a in operator["args"] if a.startswith("--namespace=")] == \
            [f"--namespace={fleet}" for fleet in fleets]
        roles = {(d["kind"], d["metadata"]["namespace"]) for d in docs
                 if d["kind"] in ("Role", "RoleBinding")
                 and d["metadata"]["name"] == "flashgate-operator"}
        assert roles == {(kind, fleet) for kind in ("Role", "RoleBinding") for fleet in fleets}
        assert "flashgate-operator" not in kinds.get("ClusterRole", [])
    cert_manager = values.get("webhook", {}).get("certManager", {}).get("enabled", False)
    assert ("flashgate-webhook" in kinds.get("Certificate", [])) == cert_manager
    assert ("Job" in kinds) == (not cert_manager)  # the certgen hook
    pdb = find(docs, "PodDisruptionBudget", "flashgate")
    deployment = find(docs, "Deployment", "flashgate")
    assert deployment["spec"]["replicas"] == values.get("replicaCount", 1)
    assert pdb["spec"]["maxUnavailable"] == 1
    monitored = values.get("metrics", {}).get("serviceMonitor", {}).get("enabled", False)
    assert ("flashgate" in kinds.get("ServiceMonitor", [])) == monitored
    if monitored:  # the operator's `namespace` label (the fleet) kept, not exported_namespace
        endpoints = find(docs, "ServiceMonitor", "flashgate")["spec"]["endpoints"]
        assert [(e["port"], e.get("honorLabels", False)) for e in endpoints] == \
            [("metrics", True), ("sidecar-metrics", False)]
    assert ("flashgate" in kinds.get("NetworkPolicy", [])) == \
        values.get("networkPolicy", {}).get("enabled", True)
    delivery = values.get("delivery", {})
    if not delivery.get("enabled", False):
        assert not [d for d in docs if "delivery" in d["metadata"]["name"]]
        return
    # The delivery service: its own pods (no selector of the operator's matches them), read
    # access bound in the fleets it serves only, never cluster-wide, also when fleets is "*".
    served = sorted(delivery["fleets"])
    bindings = sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"
                      and d["roleRef"]["name"] == "flashgate-delivery")
    assert bindings == served
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding"
                and d["roleRef"]["name"] == "flashgate-delivery"]
    assert find(docs, "ClusterRole", "flashgate-delivery")["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    pods = find(docs, "Deployment", "flashgate-delivery")
    assert pods["spec"]["replicas"] == delivery.get("replicaCount", 2)
    labels = pods["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"],
                     find(docs, "Service", "flashgate-webhook")["spec"]["selector"],
                     pdb["spec"]["selector"]["matchLabels"]):
        assert not selector.items() <= labels.items(), selector
    assert find(docs, "PodDisruptionBudget", "flashgate-delivery")["spec"]["maxUnavailable"] == 1
    cert_manager = delivery.get("tls", {}).get("certManager", {}).get("enabled", False)
    assert ("flashgate-delivery" in kinds.get("Certificate", [])) == cert_manager
    assert ("flashgate-delivery" in kinds.get("ServiceMonitor", [])) == monitored
    service = find(docs, "Service", "flashgate-delivery")["spec"]
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(443, "https")]
    assert service["type"] == delivery.get("service", {}).get("type", "ClusterIP")
    ops = find(docs, "Service", "flashgate-delivery-metrics")["spec"]
    assert (ops["type"], [p["targetPort"] for p in ops["ports"]]) == ("ClusterIP", ["ops"])


def test_the_switches(helm: Helm, tmp_path: Path) -> None:
    default = helm.docs()
    crds = [d for d in default if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 4
    assert all(d["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"} for d in crds)
    assert len([d for d in default if d["kind"] == "ValidatingAdmissionPolicy"]) == 4
    off = _kinds(helm.docs("-f", values_file(tmp_path, {
        "crds": {"enabled": False}, "policies": {"enabled": False},
        "webhook": {"enabled": False}, "podDisruptionBudget": {"enabled": False},
        "networkPolicy": {"enabled": False}})))
    for kind in ("CustomResourceDefinition", "ValidatingAdmissionPolicy",
                 "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration", "Job",
                 "PodDisruptionBudget", "NetworkPolicy"):
        assert kind not in off, kind
    assert off["Service"] == ["flashgate-metrics"]
    assert not [d for d in default if "delivery" in d["metadata"]["name"]]  # off by default
    delivery_off = _kinds(helm.docs("-f", VALUES / "delivery.yaml", "-f", values_file(tmp_path, {
        "podDisruptionBudget": {"enabled": False}, "networkPolicy": {"enabled": False}},
        "delivery-off.yaml")))
    assert "PodDisruptionBudget" not in delivery_off and "NetworkPolicy" not in delivery_off
    assert sorted(delivery_off["Deployment"]) == ["flashgate", "flashgate-delivery"]
    unkept = helm.docs("-f", values_file(tmp_path, {"crds": {"keep": False}}, "unkept.yaml"))
    assert all("annotations" not in d["metadata"] for d in unkept
               if d["kind"] == "CustomResourceDefinition")


def test_cert_manager_issues_for_the_webhook_service_and_injects_its_ca(helm: Helm) -> None:
    docs = helm.docs("-f", VALUES / "cert-manager.yaml")
    certificate = find(docs, "Certificate")
    assert certificate["spec"]["secretName"] == "flashgate-webhook-tls"
    assert "flashgate-webhook.flashgate-system.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": "flashgate-selfsigned", "kind": "Issuer"}
    assert find(docs, "Issuer")["spec"] == {"selfSigned": {}}
    config = find(docs, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
        "flashgate-system/flashgate-webhook"
    own = helm.docs("-f", VALUES / "cert-manager-issuer.yaml")
    assert find(own, "Certificate")["spec"]["issuerRef"] == {"name": "platform-ca",
                                                            "kind": "ClusterIssuer"}
    assert not [d for d in own if d["kind"] == "Issuer"]


@pytest.mark.parametrize("fleets", [None, list(VALUES_FLEETS)])
def test_the_webhooks_make_the_operators_own_decisions(helm: Helm, tmp_path: Path,
                                                       fleets: list[str] | None) -> None:
    """Fail for creating releases, Ignore for keys (never block a revocation), 5 s, flashgate's
    kinds in the fleets served: what flashgate/operator/webhook.py configuration() registers."""
    values = values_file(tmp_path, {"fleets": fleets or "*"})
    rendered = find(helm.docs("-f", values), "ValidatingWebhookConfiguration")["webhooks"]
    own = webhook.configuration("x", "https://unused", b"ca", fleets)["webhooks"]
    for hook in (*rendered, *own):
        client = hook.pop("clientConfig")
        assert client.get("caBundle") in (None, "Y2E=")  # not rendered: injected at run time
    assert rendered == own
    paths = {h["name"]: h["clientConfig"]["service"]
             for h in find(helm.docs("-f", values), "ValidatingWebhookConfiguration")["webhooks"]}
    assert paths == {
        "firmwarerelease.ota.flashgate.dev": {"name": "flashgate-webhook", "namespace": NAMESPACE,
                                              "path": webhook.RELEASES_PATH, "port": 443},
        "signingkey.ota.flashgate.dev": {"name": "flashgate-webhook", "namespace": NAMESPACE,
                                         "path": webhook.KEYS_PATH, "port": 443}}


def test_the_sidecar_reads_its_rendered_configuration(helm: Helm, tmp_path: Path) -> None:
    """The ConfigMap's verifier.yaml, with the files the chart mounts beside it, is what the
    sidecar's own loader accepts, with every setting of the values file in it."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(make_serving_cert().ca_pem)
    values = values_file(tmp_path, {"verifier": {"extraCA": ca.read_text()}})
    docs = helm.docs("-f", VALUES / "fleets.yaml", "-f", values)
    config = find(docs, "ConfigMap", "flashgate-verifier")["data"]
    text = config["verifier.yaml"]
    assert config["ca.crt"] == ca.read_text()
    root = tmp_path / "pod"
    mounts = {"/etc/flashgate/verifier/": config,
              "/var/run/secrets/flashgate-s3/": {"access-key-id": "AKIA", "secret-access-key": "s"}}
    for mount, files in mounts.items():
        (root / mount.lstrip("/")).mkdir(parents=True)
        for name, content in files.items():
            (root / mount.lstrip("/") / name).write_text(content)
        text = text.replace(mount, f"{root}{mount}")
    (tmp_path / "verifier.yaml").write_text(text)
    settings = load_sidecar_settings(tmp_path / "verifier.yaml")
    c = settings.config
    assert len(settings.roots) == 1
    assert {str(t): k for t, k in c.thresholds.items()} == {"bootloader": 2, "os": 2}
    assert (c.max_security_version_jump, c.max_concurrent_fetches, c.fetches_per_fleet,
            c.headers_timeout_seconds) == (50, 8, 3, 20)
    assert c.allowed_hosts == ["minio.storage.svc"] and c.artifact_url_prefixes == ["s3://firmware/"]
    assert c.fleets["chart-fleet-b"].artifact_url_prefixes == ["s3://firmware-b/",
                                                               "https://fw.example.com/b/"]
    assert c.ca_file == root / "etc/flashgate/verifier/ca.crt"
    assert c.s3 is not None and c.s3.region == "eu-west-1"
    assert c.s3.access_key_id_file == root / "var/run/secrets/flashgate-s3/access-key-id"
    # The credentials and the CA are mounted into the sidecar only.
    sidecar = {m["name"] for m in container(docs, "verifier")["volumeMounts"]}
    operator = {m["name"] for m in container(docs, "operator")["volumeMounts"]}
    assert {"s3-credentials", "verifier-config"} <= sidecar
    assert not {"s3-credentials", "verifier-config"} & operator


@pytest.mark.parametrize(("deployment", "account", "holder"), [
    ("flashgate", OPERATOR_ACCOUNT, "operator"),
    ("flashgate-delivery", DELIVERY_ACCOUNT, "delivery")])
def test_only_one_container_of_each_pod_holds_a_kubernetes_token(
        helm: Helm, deployment: str, account: str, holder: str) -> None:
    """The pods mount no token; one container's projected volume gives exactly the files the
    kubernetes client's in-cluster loader reads (the token, ca.crt, the namespace), where it
    reads them: the operator's (never the sidecar's), the delivery service's. (KUBERNETES_SERVICE
    _HOST/PORT are set by the kubelet in every container.)"""
    docs = helm.docs("-f", VALUES / "delivery.yaml")
    pod = find(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account
    assert find(docs, "ServiceAccount", account)["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    token_volumes = {name for name, v in volumes.items()
                     if any("serviceAccountToken" in s for s in v.get("projected", {}).get(
                         "sources", []))}
    mounts = {c["name"]: {m["name"]: m for m in c.get("volumeMounts", [])}
              for c in pod["containers"]}
    assert token_volumes == {"kube-api-access"}
    assert [name for name in mounts if "kube-api-access" in mounts[name]] == [holder]
    mount = mounts[holder]["kube-api-access"]
    assert mount["readOnly"] is True
    files = {}
    for source in volumes["kube-api-access"]["projected"]["sources"]:
        for kind, body in source.items():
            paths = [body["path"]] if kind == "serviceAccountToken" else \
                [item["path"] for item in body["items"]]
            files.update({f"{mount['mountPath']}/{path}": kind for path in paths})
    assert files == {
        incluster_config.SERVICE_TOKEN_FILENAME: "serviceAccountToken",
        incluster_config.SERVICE_CERT_FILENAME: "configMap",
        f"{Path(incluster_config.SERVICE_TOKEN_FILENAME).parent}/namespace": "downwardAPI"}
    ca_source = next(s["configMap"] for s in volumes["kube-api-access"]["projected"]["sources"]
                     if "configMap" in s)
    assert ca_source["name"] == "kube-root-ca.crt"


def test_the_delivery_service_reads_its_rendered_configuration(helm: Helm,
                                                               tmp_path: Path) -> None:
    """Its ConfigMaps and Secrets, mounted where its pod mounts them, are what the service's own
    loader accepts, with every setting of the values file; its arguments are its own flags, on
    the ports the pod declares; the device CAs, the certificate and the S3 credentials are
    mounted into it alone."""
    cas = {fleet: [DeviceCA(f"{fleet} devices"), DeviceCA(f"{fleet} devices, next")]
           for fleet in VALUES_FLEETS}
    values = values_file(tmp_path, {"delivery": {"fleets": {
        fleet: {"deviceCA": b"".join(ca.cert_pem for ca in pair).decode()}
        for fleet, pair in cas.items()}}})
    docs = helm.docs("-f", VALUES / "delivery.yaml", "-f", values)
    pod = pod_of(docs, "flashgate-delivery")
    serving = make_serving_cert(("ota.example.com",))
    secrets = {"ota-example-com-tls": {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem},
               "firmware-presigner": {"access-key-id": b"AKIA", "secret-access-key": b"s"}}
    root = materialize(from_rendering(docs, secrets), pod, "delivery", tmp_path / "pod")
    delivery = container(docs, "delivery")
    args = delivery_arguments().parse_args(delivery["args"])
    config = tmp_path / "delivery.yaml"
    config.write_text(rebase((root / str(args.config).lstrip("/")).read_text(), pod, "delivery",
                             root))
    settings = load_settings(config)
    c = settings.config
    assert {fleet: [ca.subject for ca in found] for fleet, found in settings.fleet_cas.items()} \
        == {fleet: [ca.cert.subject for ca in pair] for fleet, pair in cas.items()}
    assert (c.presign_ttl_seconds, c.max_tracked_devices) == (600, 50000)
    assert c.s3 is not None and (c.s3.endpoint, c.s3.region) == (
        "https://s3.eu-west-1.amazonaws.com", "eu-west-1")
    assert c.s3.settings().credentials().access_key_id == "AKIA"
    assert c.tls.cert_file.read_bytes() == serving.cert_pem
    ports = {p["name"]: p["containerPort"] for p in delivery["ports"]}
    assert (args.listen, args.ops_listen) == (f"0.0.0.0:{ports['https']}",
                                              f"0.0.0.0:{ports['ops']}")
    assert (delivery["livenessProbe"]["httpGet"], delivery["readinessProbe"]["httpGet"]) == (
        {"path": "/healthz", "port": "ops"}, {"path": "/readyz", "port": "ops"})
    mounted = {m["name"] for m in delivery["volumeMounts"]}
    assert {"config", "device-ca", "tls", "s3-credentials"} <= mounted
    operator_pod = find(docs, "Deployment", "flashgate")["spec"]["template"]["spec"]
    assert not [v for v in operator_pod["volumes"] if "flashgate-delivery" in json.dumps(v)
                or "firmware-presigner" in json.dumps(v)]


def test_the_delivery_service_talks_to_the_api_server_only(helm: Helm) -> None:
    """It presigns and never fetches: egress to the API server's ports and nothing else (not
    DNS, not object storage); in, devices to the device port and Prometheus to the ops port."""
    docs = helm.docs("-f", VALUES / "delivery.yaml")
    policy = find(docs, "NetworkPolicy", "flashgate-delivery")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"] == [{"ports": [{"port": 443, "protocol": "TCP"},
                                           {"port": 6443, "protocol": "TCP"}]}]
    values = yaml.safe_load((VALUES / "delivery.yaml").read_text())["networkPolicy"]
    assert policy["ingress"] == [
        {"ports": [{"port": "https", "protocol": "TCP"}], "from": values["devicesFrom"]},
        {"ports": [{"port": "ops", "protocol": "TCP"}], "from": values["metricsFrom"]}]
    labels = find(docs, "Deployment", "flashgate-delivery")["spec"]["template"]["metadata"][
        "labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize(("values", "complaint"), [
    ({"fleets": []}, "fleets"),
    ({"fleets": "all"}, "fleets"),
    ({"fleets": ["Not_A_Namespace"]}, "fleets"),
    ({"policies": {"securityTeamGroup": "x' || true || '"}}, "securityTeamGroup"),
    ({"verifier": {"config": {"allowFileURLs": True}}}, "allowFileURLs"),
    ({"verifier": {"config": {"thresholds": {"bootloader": 0}}}}, "thresholds"),
    ({"verifier": {"config": {"thresholds": {"firmware": 2}}}}, "'firmware'"),
    ({"verifier": {"config": {"maxConcurrentFetches": 0}}}, "maxConcurrentFetches"),
    ({"verifier": {"config": {"s3": {"endpoint": "https://s3", "accessKeyIdFile": "/k"}}}},
     "accessKeyIdFile"),
    ({"verifier": {"config": {"roots": [{"publicKey": "x", "algorithm": "rsa"}]}}}, "algorithm"),
    ({"verifier": {"config": {"rootz": []}}}, "rootz"),
    ({"operator": {"resources": {"limits": None}}}, "limits"),
    ({"verifier": {"extraCA": "not a certificate"}}, "extraCA"),
    ({"delivery": {"fleets": {"Not_A_Namespace": {"deviceCA": PEM}}}}, "Not_A_Namespace"),
    ({"delivery": {"fleets": {"chart-fleet-a": {}}}}, "deviceCA"),
    ({"delivery": {"fleets": {"chart-fleet-a": {"deviceCA": "not a certificate"}}}}, "deviceCA"),
    ({"delivery": {"config": {"presignTTLSeconds": 7200}}}, "presignTTLSeconds"),
    ({"delivery": {"config": {"fleets": {}}}}, "fleets"),
    ({"delivery": {"config": {"tls": {"certFile": "/c", "keyFile": "/k"}}}}, "tls"),
    ({"delivery": {"config": {"s3": {"endpoint": "https://s3", "secretAccessKeyFile": "/k"}}}},
     "secretAccessKeyFile"),
    ({"delivery": {"service": {"type": "ExternalName"}}}, "type"),
    ({"delivery": {"resources": {"requests": None}}}, "requests"),
    ({"delivery": {"tls": {"certManager": {"dnsNames": ["https://ota.example.com"]}}}},
     "dnsNames"),
])
def test_the_schema_refuses_what_flashgate_would_not_run_with(
        helm: Helm, tmp_path: Path, values: dict[str, Any], complaint: str) -> None:
    result = helm.template("-f", values_file(tmp_path, values), check=False)
    assert result.returncode != 0, result.stdout[:500]
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(("values", "complaint"), [
    ({"delivery": {"enabled": True}}, "list the fleets it serves in delivery.fleets"),
    ({"fleets": ["chart-fleet-a"], "delivery": {
        "enabled": True, "fleets": {"chart-fleet-b": {"deviceCA": PEM}}}},
     "delivery.fleets.chart-fleet-b: not one of the fleets the chart serves"),
    ({"delivery": {"enabled": True, "fleets": {"chart-fleet-a": {"deviceCA": PEM}},
                   "tls": {"certManager": {"enabled": True, "dnsNames": ["ota.example.com"]}}}},
     "delivery.tls.certManager.issuerRef: name the issuer whose CA your devices trust"),
    ({"delivery": {"enabled": True, "fleets": {"chart-fleet-a": {"deviceCA": PEM}},
                   "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}},
     "delivery.tls.certManager.dnsNames: the names devices reach the service by"),
])
def test_the_delivery_service_is_refused_without_what_it_needs(
        helm: Helm, tmp_path: Path, values: dict[str, Any], complaint: str) -> None:
    """What the schema cannot see: refused at render time, with what to set."""
    result = helm.template("-f", values_file(tmp_path, values), check=False)
    assert result.returncode != 0, result.stdout[:500]
    assert complaint in result.stderr, result.stderr


def test_a_render_never_changes_by_itself(helm: Helm) -> None:
    """No random material and no lookup: `helm template` (Argo CD's way) gives the same text
    every time, so a sync never shows a diff the cluster did not make."""
    for name in VALUE_SETS:
        first = helm.template("-f", VALUES / f"{name}.yaml").stdout
        assert helm.template("-f", VALUES / f"{name}.yaml").stdout == first, name
    for template in (CHART / "templates").glob("*"):
        actions = [a for a in re.findall(r"{{-?(.*?)-?}}", template.read_text(), re.S)
                   if not a.strip().startswith("/*")]
        for function in ("lookup", "genCA", "genPrivateKey", "randAlphaNum", "now", "uuidv4"):
            assert not any(re.search(rf"\b{function}\b", a) for a in actions), \
                (template.name, function)


def test_alerts_and_dashboard_render_only_when_their_files_are_in_the_chart(
        chart_cluster: ChartCluster, helm: Helm, tmp_path: Path) -> None:
    """The observability work adds files/alerts.yaml (a Prometheus rules file) and
    files/dashboard.json; the chart renders them when enabled, and nothing without them."""
    copy = tmp_path / "flashgate"
    shutil.copytree(CHART, copy)
    for name in ("alerts.yaml", "dashboard.json"):
        (copy / "files" / name).unlink(missing_ok=True)
    enabled = values_file(tmp_path, {"metrics": {"prometheusRule": {"enabled": True}},
                                     "dashboards": {"enabled": True}})
    kinds = _kinds(helm.docs("-f", enabled, chart=copy))
    assert "PrometheusRule" not in kinds and "flashgate-dashboard" not in kinds["ConfigMap"]
    rules = {"groups": [{"name": "probe", "rules": [
        {"alert": "ProbeOnly", "expr": "vector(1) > 2", "labels": {"severity": "none"}}]}]}
    (copy / "files" / "alerts.yaml").write_text(yaml.safe_dump(rules))
    (copy / "files" / "dashboard.json").write_text(json.dumps({"title": "probe", "panels": []}))
    docs = helm.docs("-f", enabled, chart=copy)
    assert find(docs, "PrometheusRule")["spec"] == rules
    dashboard = find(docs, "ConfigMap", "flashgate-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["flashgate.json"])["title"] == "probe"
    assert "PrometheusRule" not in _kinds(helm.docs(chart=copy))  # present but not enabled
    rendered = helm.template("-f", enabled, "--show-only", "templates/prometheusrule.yaml",
                             chart=copy).stdout
    applied = chart_cluster.kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-",
                                         input=rendered)
    assert "prometheusrule.monitoring.coreos.com/flashgate" in applied.stdout


def test_deploy_and_the_generated_files_are_up_to_date(helm: Helm) -> None:
    problems = chart_files.stale(helm.binary)
    assert not problems, "".join(problems) + "\nrun `make chart` and commit the result"


def test_the_readme_documents_every_value() -> None:
    """Every value the schema knows (the sidecar's settings included), by its dotted path."""
    readme = (CHART / "README.md").read_text()

    schema = json.loads((CHART / "values.schema.json").read_text())

    def paths(node: dict[str, Any], prefix: str) -> list[str]:
        if "$ref" in node:  # a shared definition: documented as a whole, or setting by setting
            if f"`{prefix}`" in readme:
                return []
            node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
        if "properties" not in node:
            return [prefix]
        return [p for key, child in node["properties"].items()
                for p in paths(child, f"{prefix}.{key}" if prefix else key)]

    missing = [p for p in paths(schema, "") if p != "global" and f"`{p}`" not in readme]
    assert not missing, f"charts/flashgate/README.md does not document {missing}"
