"""The test control plane itself: a real API server that reports its version and can call an
admission webhook served on 127.0.0.1 (what the operator's webhook needs)."""
from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from flashgate.operator.tls import make_serving_cert

pytestmark = pytest.mark.e2e


def test_server_reports_its_real_version(kube) -> None:  # type: ignore[no-untyped-def]
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)
    # Without the version ldflags the server would say v0.0.0-master, which breaks Helm.
    assert version["serverVersion"]["major"] == "1"
    assert version["serverVersion"]["gitVersion"].startswith("v1.")


class _DenyingWebhook(BaseHTTPRequestHandler):
    """Denies every object it is asked about, naming it: proof the API server called us."""

    calls: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        type(self).calls.append(request["name"])
        body = json.dumps({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": request["uid"], "allowed": False,
                         "status": {"code": 403, "message": f"probe webhook denies {request['name']}"}},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def loopback_webhook(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    cert = make_serving_cert(("127.0.0.1",))
    _, crt, key = cert.write(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyingWebhook)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert.ca_pem
    server.shutdown()


def test_api_server_calls_a_webhook_on_loopback(kube, loopback_webhook) -> None:  # type: ignore[no-untyped-def]
    port, ca_pem = loopback_webhook
    namespace = kube.namespace("webhook-probe")
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"probe-{namespace}"},
        "webhooks": [{
            "name": "probe.flashgate.dev",
            "clientConfig": {"url": f"https://127.0.0.1:{port}/validate",
                             "caBundle": base64.b64encode(ca_pem).decode()},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
            "timeoutSeconds": 5,
        }],
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        result = kube.kubectl("create", "configmap", "denied-one", "-n", namespace, check=False)
        assert result.returncode != 0
        assert "probe webhook denies denied-one" in result.stderr
        assert "denied-one" in _DenyingWebhook.calls
        # The webhook is scoped: other namespaces are not affected.
        kube.kubectl("create", "configmap", f"allowed-{namespace}", "-n", "default")
    finally:
        kube.kubectl("delete", "validatingwebhookconfiguration", f"probe-{namespace}")
        kube.kubectl("delete", "configmap", f"allowed-{namespace}", "-n", "default", check=False)


def test_etcd_and_api_server_restart_on_their_data() -> None:
    """A control plane of its own (the session's must not go down): each process is SIGKILLed
    and started again on the same data directory and port, and what was written is still there."""
    from ..conftest import controlplane

    with controlplane.ControlPlane() as plane:
        plane.kubectl("create", "configmap", "kept", "--from-literal=k=v")
        port = plane.api_port
        for name in ("etcd", "kube-apiserver"):
            before = plane.process(name)
            assert before is not None
            plane.kill(name)
            assert before.poll() is not None
            plane.restart(name)
            after = plane.process(name)
            assert after is not None and after.pid != before.pid and after.poll() is None
            assert len(plane.processes) == 2
        assert plane.api_port == port
        out = plane.kubectl("get", "configmap", "kept", "-o", "jsonpath={.data.k}").stdout
        assert out == "v"
