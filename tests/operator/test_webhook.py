"""The admission webhook's review handling (flashgate/operator/webhook.py) on malformed reviews:
each of these made it answer 500 (an exception in its handler) until the fuzzing of issue 13
(tests/fuzz/test_endpoints.py) found it. The API server always sends a schema-valid object, but
anyone who reaches the webhook's port can send anything: it answers 400 for what is not a review,
and refuses, saying why, a review whose object it cannot read."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from flashgate.operator import webhook
from flashgate.operator.fleets import FleetView
from flashgate.signing.filekeys import generate
from flashgate.trust import Algorithm

from .fakes import MemoryStore, key_object

FLEET = "fleet-a"
APP = generate(Algorithm.ED25519)
KEY = key_object(FLEET, "app", APP)
RELEASE_SPEC = {"tier": "application", "product": "gw", "version": "1.0.0",
                "securityVersion": 1, "channel": "stable",
                "artifact": {"url": "https://fw.example.com/a.bin", "name": "a.bin",
                             "sha256": "00" * 32, "size": 1}, "signatures": ["AAAA"]}


def answer(path: str, body: bytes) -> tuple[int, Any]:
    view = FleetView()
    view.on_key("ADDED", {**KEY, "metadata": {**KEY["metadata"], "uid": "k1"}})
    view.synced.set()
    app = webhook.make_app(webhook.Admission(view=view, store=MemoryStore()))

    async def post() -> tuple[int, Any]:
        async with TestClient(TestServer(app)) as client:
            response = await client.post(path, data=body,
                                         headers={"Content-Type": "application/json"})
            return response.status, await response.json()
    return asyncio.run(post())


def review(obj: Any) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "u-1", "namespace": FLEET, "operation": "CREATE",
                                   "object": obj}}).encode()


@pytest.mark.parametrize(("path", "obj", "says"), [
    (webhook.RELEASES_PATH, None, "carries no FirmwareRelease"),
    (webhook.RELEASES_PATH, 5, "carries no FirmwareRelease"),
    (webhook.RELEASES_PATH, {}, "carries no FirmwareRelease"),
    (webhook.RELEASES_PATH, {"spec": "text"}, "carries no FirmwareRelease"),
    (webhook.RELEASES_PATH, {"spec": {**RELEASE_SPEC, "tier": "none"}}, "spec.signatures"),
    (webhook.RELEASES_PATH, {"spec": {**RELEASE_SPEC, "tier": {"a": 1}}}, "spec.signatures"),
    (webhook.RELEASES_PATH, {"spec": {**RELEASE_SPEC, "product": "../../secrets/x"}},
     "spec.signatures"),
    (webhook.RELEASES_PATH, {"spec": {**RELEASE_SPEC, "signatures": 5}},
     "spec.signatures is not a list"),
    (webhook.KEYS_PATH, [1], "carries no SigningKey"),
    (webhook.KEYS_PATH, {"spec": 5}, "carries no SigningKey"),
    (webhook.KEYS_PATH, {"spec": {**KEY["spec"], "publicKey": 5}}, "spec.publicKey is not"),
])
def test_a_review_whose_object_cannot_be_read_is_refused(path: str, obj: Any, says: str) -> None:
    status, body = answer(path, review(obj))
    assert status == 200, body
    response = body["response"]
    assert response["uid"] == "u-1" and response["allowed"] is False, response
    assert says in response["status"]["message"], response


def test_deeply_nested_json_is_not_a_review() -> None:
    status, body = answer(webhook.RELEASES_PATH, b"[" * 100_000 + b"]" * 100_000)
    assert (status, body) == (400, {"error": "not an AdmissionReview"})
