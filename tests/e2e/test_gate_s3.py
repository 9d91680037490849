"""The gate end to end with s3:// artifacts on a real S3-compatible server (versitygw over TLS,
checking SigV4 signatures): the session sidecar is restarted with an `s3` section for this
module, and without it afterwards.

The endpoint is https://localhost:<port> and only the name `localhost` is allow-listed
(allowedHosts), the way a private S3 endpoint is allow-listed in a cluster: loopback addresses
stay refused, so https://127.0.0.1:... URLs remain ArtifactURLNotAllowed here too.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import s3server

from ..verifier_sidecar.test_s3 import s3_server_for_tests
from .conftest import Fleet, GateSystem
from .test_gate import _condition, _status, assert_rejected

pytestmark = pytest.mark.e2e

BUCKET = "firmware-images"


@pytest.fixture(scope="module")
def s3(gate_system: GateSystem) -> Iterator[s3server.S3Server]:
    for server in s3_server_for_tests():
        server.create_bucket(BUCKET)
        gate_system.sidecar_extra = {
            "allowedHosts": ["localhost"],
            "caFile": str(server.ca_file),
            "s3": {"endpoint": f"https://localhost:{server.port}", "region": "us-east-1",
                   "accessKeyIdFile": str(server.access_key_id_file),
                   "secretAccessKeyFile": str(server.secret_access_key_file)},
        }
        gate_system.stop_sidecar()
        gate_system.start_sidecar()
        try:
            yield server
        finally:
            gate_system.sidecar_extra = {}
            gate_system.stop_sidecar()
            gate_system.start_sidecar()


def apply_s3_release(fleet: Fleet, s3: s3server.S3Server, name: str, data: bytes,
                     stored: bytes | None = None, upload: bool = True) -> str:
    """A release signed over `data` whose artifact is s3://BUCKET/<namespace>/<name>.bin, holding
    `stored` (by default the same bytes; no object at all without `upload`). Returns the key."""
    app = fleet.signing_key("app", "application")
    key = f"{fleet.namespace}/{name}.bin"
    if upload:
        s3.put_object(BUCKET, key, data if stored is None else stored)
    doc = fleet.release_doc(name, [app], data=data)
    doc["spec"]["artifact"]["url"] = f"s3://{BUCKET}/{key}"
    fleet.apply(doc)
    return key


def test_release_from_s3_is_published(fleet: Fleet, s3: s3server.S3Server) -> None:
    data = b"firmware from object storage " * 4000
    key = apply_s3_release(fleet, s3, "app-s3", data)
    obj = fleet.wait_phase("firmwarerelease", "app-s3", {"Published", "Rejected"})
    status = _status(obj)
    assert status["phase"] == "Published", status
    assert status["verifiedSha256"] == hashlib.sha256(data).hexdigest()
    for type_ in ("SignatureVerified", "RollbackChecked", "IntegrityVerified", "Ready"):
        assert _condition(obj, type_)["status"] == "True", type_
    assert fleet.channel()["application"]["release"] == "app-s3"
    # The bytes came from the S3 server, by a GET it authenticated.
    log = (s3.workdir / "versitygw.log").read_text()
    assert any("| 200 |" in line and f"| GET | /{BUCKET}/{key} |" in line
               for line in log.splitlines()), log[-2000:]


def test_tampered_object_in_s3_is_rejected(fleet: Fleet, s3: s3server.S3Server) -> None:
    apply_s3_release(fleet, s3, "tampered-s3", b"A" * 8192, stored=b"B" * 8192)
    obj = assert_rejected(fleet, "tampered-s3", "HashMismatch")
    assert _condition(obj, "SignatureVerified")["status"] == "True"
    assert _condition(obj, "IntegrityVerified")["status"] == "False"


def test_missing_object_in_s3_is_unavailable(fleet: Fleet, s3: s3server.S3Server) -> None:
    apply_s3_release(fleet, s3, "absent-s3", b"never uploaded", upload=False)
    assert_rejected(fleet, "absent-s3", "ArtifactUnavailable")


def test_loopback_stays_refused_with_s3_configured(fleet: Fleet, s3: s3server.S3Server) -> None:
    app = fleet.signing_key("app", "application")
    doc = fleet.release_doc("loopback", [app])
    doc["spec"]["artifact"]["url"] = f"https://127.0.0.1:{s3.port}/{BUCKET}/fw.bin"
    fleet.apply(doc)
    assert_rejected(fleet, "loopback", "ArtifactURLNotAllowed")
