"""A hostile namespace against the gate, on the real API server with the real operator and sidecar.

Anyone who may create objects in a fleet's namespace is assumed hostile; these are the attacks
that once broke an invariant around a correct verdict (issue "hostile-namespace hardening"), one
test (or a few) each:
1. a revocation undone by deleting and re-creating the SigningKey, or by a duplicate of it;
2. a release in flight while its key is revoked (see also tests/operator/test_interleavings.py);
3. a floor deleted by impersonating the namespace controller, and a lost floor taken as 0;
5. a channel re-pointed by re-applying a published manifest under another name and URL;
6. a forged job document added to a channel ConfigMap;
7. one malformed SigningKey stalling its fleet;
8. a floor created or raised out of reach by anyone who may create floors;
9. an admission webhook outage blocking creates everywhere;
10. announcements lost or repeated across a SIGKILL;
11. user-written bookkeeping annotations deciding whether a release is processed;
12. credentials of an artifact URL shown in status and events;
13. a Published release reset to Pending and re-published on restart.
(Item 4, fetch-slot starvation, is tested with the sidecar: tests/e2e/test_fetch_fairness.py.)
"""
from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from flashgate.operator.tls import make_serving_cert
from flashgate.signing.filekeys import generate
from flashgate.trust import Algorithm

from ..conftest import controlplane
from .conftest import Fleet, GateSystem

pytestmark = pytest.mark.e2e

SECURITY = ("--as=security-officer", "--as-group=system:masters",
            "--as-group=flashgate:security-team")
MANAGER = ("--as=release-manager", "--as-group=system:masters",
           "--as-group=flashgate:release-managers")
MALLORY = ("--as=mallory", "--as-group=system:masters")


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def revoked_key_ids(fleet: Fleet) -> set[str]:
    result = fleet.kubectl("get", "revocationlist", "revocations", "-o", "json", check=False)
    if result.returncode != 0:
        return set()
    return set((json.loads(result.stdout).get("spec") or {}).get("keys") or {})


def revoke(fleet: Fleet, key: str) -> None:
    fleet.kubectl("patch", "signingkey", key, "--type", "merge", "-p", '{"spec":{"revoked":true}}')


# ---- 1. revocation that sticks --------------------------------------------------------------


def test_revocation_survives_delete_and_recreate_under_any_name(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    revoke(fleet, "app")
    fleet.wait_phase("signingkey", "app", {"Revoked"})
    fleet.wait_for(lambda: app.key_id in revoked_key_ids(fleet), "the revocation recorded")
    fleet.kubectl("delete", "signingkey", "app")
    # The same spec again, revoked: false, and the same public key under another name.
    fleet.apply(fleet.key_doc("app", "application", signer=app)[1])
    fleet.apply(fleet.key_doc("app-again", "application", signer=app)[1])
    for name in ("app", "app-again"):
        key = fleet.wait_phase("signingkey", name, {"Revoked", "Active"})
        assert key["status"]["phase"] == "Revoked", key["status"]
    refused = fleet.apply(fleet.release_doc("by-revoked", [app]), check=False)
    assert refused.returncode != 0 and "(KeyRevoked)" in refused.stderr, refused.stderr


def test_recreated_revoked_key_signs_nothing_even_past_the_webhook(
        fleet: Fleet, no_webhook: None) -> None:
    app = fleet.signing_key("app", "application")
    revoke(fleet, "app")
    fleet.wait_for(lambda: app.key_id in revoked_key_ids(fleet), "the revocation recorded")
    fleet.kubectl("delete", "signingkey", "app")
    fleet.apply(fleet.key_doc("app-new-name", "application", signer=app)[1])
    fleet.wait_phase("signingkey", "app-new-name", {"Revoked"})
    fleet.apply(fleet.release_doc("by-recreated", [app]))
    status = _status(fleet.wait_phase("firmwarerelease", "by-recreated", {"Published", "Rejected"}))
    assert (status["phase"], status["reason"]) == ("Rejected", "KeyRevoked")
    assert fleet.channel() == {}


def test_duplicates_of_a_revoked_key_agree(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.key_doc("app-duplicate", "application", signer=app)[1])
    fleet.wait_phase("signingkey", "app-duplicate", {"Active"})
    revoke(fleet, "app")
    fleet.wait_phase("signingkey", "app-duplicate", {"Revoked"})
    refused = fleet.apply(fleet.release_doc("by-duplicate", [app]), check=False)
    assert refused.returncode != 0 and "(KeyRevoked)" in refused.stderr, refused.stderr


def test_the_revocation_record_keeps_its_entries_and_itself(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    revoke(fleet, "app")
    fleet.wait_for(lambda: app.key_id in revoked_key_ids(fleet), "the revocation recorded")
    removed = fleet.kubectl("patch", "revocationlist", "revocations", *SECURITY, "--type=json",
                            "-p", json.dumps([{"op": "remove", "path": f"/spec/keys/{app.key_id}"}]),
                            check=False)
    assert removed.returncode != 0 and "entries of a RevocationList are never removed" in removed.stderr
    deleted = fleet.kubectl("delete", "revocationlist", "revocations", check=False)
    assert deleted.returncode != 0 and "is never deleted" in deleted.stderr
    forged = fleet.kubectl("patch", "revocationlist", "revocations", *MALLORY, "--type=merge",
                           "-p", '{"metadata":{"labels":{"x":"y"}}}', check=False)
    assert forged.returncode != 0 and "only the flashgate operator and the security team" in forged.stderr
    assert app.key_id in revoked_key_ids(fleet)


def test_a_revoked_key_is_deleted_only_once_recorded(fleet: Fleet, gate_system: GateSystem) -> None:
    app = fleet.signing_key("app", "application")
    # The operator keeps a (here empty) RevocationList in every fleet with keys.
    fleet.wait_for(lambda: fleet.kubectl("get", "revocationlist", "revocations",
                                         check=False).returncode == 0, "the RevocationList")
    gate_system.stop_operator()
    try:
        revoke(fleet, "app")
        early = fleet.kubectl("delete", "signingkey", "app", check=False)
        assert early.returncode != 0 and "not on the fleet's RevocationList yet" in early.stderr
    finally:
        gate_system.start_operator()
    fleet.wait_for(lambda: app.key_id in revoked_key_ids(fleet), "the revocation recorded")
    fleet.kubectl("delete", "signingkey", "app")


# ---- 2. a release in flight when its key is revoked ------------------------------------------


class _Slow(BaseHTTPRequestHandler):
    """Serves the bytes registered for a path at about 2 KiB per 100 ms."""

    bodies: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for start in range(0, len(body), 2048):
            self.wfile.write(body[start:start + 2048])
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture(scope="module")
def slow_server(gate_system: GateSystem) -> Iterator[str]:
    """https://localhost:PORT serving slowly; the sidecar trusts its CA and allow-lists the name
    localhost only (loopback addresses stay refused)."""
    certs = make_serving_cert(("localhost",))
    ca, crt, key = certs.write(gate_system.workdir / "slow-tls")
    server = ThreadingHTTPServer(("127.0.0.1", controlplane.free_port()), _Slow)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(crt), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gate_system.sidecar_extra = {"allowedHosts": ["localhost"], "caFile": str(ca),
                                 "maxConcurrentFetches": 2, "maxConcurrentFetchesPerFleet": 1}
    gate_system.stop_sidecar()
    gate_system.start_sidecar()
    try:
        yield f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        gate_system.sidecar_extra = {}
        gate_system.stop_sidecar()
        gate_system.start_sidecar()


def test_release_in_flight_when_its_key_is_revoked_is_not_published(
        fleet: Fleet, slow_server: str) -> None:
    app = fleet.signing_key("app", "application")
    data = b"slow firmware " * 11000  # ~150 KiB: about 7 s at the server's pace
    doc = fleet.release_doc("in-flight", [app], data=data, security_version=4)
    _Slow.bodies[f"/{fleet.namespace}/in-flight.bin"] = data
    doc["spec"]["artifact"]["url"] = f"{slow_server}/{fleet.namespace}/in-flight.bin"
    fleet.apply(doc)
    fleet.wait_phase("firmwarerelease", "in-flight", {"Verifying"}, timeout=20)
    revoke(fleet, "app")
    status = _status(fleet.wait_phase("firmwarerelease", "in-flight",
                                      {"Published", "Rejected", "Withdrawn"}, timeout=60))
    assert status["phase"] in ("Rejected", "Withdrawn") and status["reason"] == "KeyRevoked", status
    assert fleet.channel() == {}, "a revoked key's release must never be in a channel"
    assert fleet.floor() is None, "and it raises no floor"


def test_one_fleets_slow_downloads_never_starve_another_fleet(
        fleet: Fleet, gate_system: GateSystem, slow_server: str) -> None:
    """Item 4: six releases of one fleet behind a slow server hold at most the fleet's share of
    download slots; another fleet's small release goes through at once, and the waiting ones say
    what they wait for."""
    app = fleet.signing_key("app", "application")
    slow = b"x" * (1 << 20)  # a MiB at ~20 KiB/s: each download outlives the test
    for n in range(6):
        doc = fleet.release_doc(f"slow-{n}", [app], data=slow, product=f"gw-{n}")
        _Slow.bodies[f"/{fleet.namespace}/slow-{n}.bin"] = slow
        doc["spec"]["artifact"]["url"] = f"{slow_server}/{fleet.namespace}/slow-{n}.bin"
        fleet.apply(doc)
    other = Fleet(gate_system, gate_system.kube.namespace("other-fleet"))
    quick = other.signing_key("app", "application")
    fleet.wait_for(lambda: "queued behind" in str(
        _status(fleet.get("firmwarerelease", "slow-5")).get("message")), "a queued release",
                   timeout=30)
    started = time.monotonic()
    other.apply(other.release_doc("quick", [quick], data=b"small" * 800))
    status = _status(other.wait_phase("firmwarerelease", "quick", {"Published", "Rejected"}))
    assert status["phase"] == "Published", status
    assert time.monotonic() - started < 15, "the other fleet waited for the slow downloads"


# ---- 3. the floor survives --------------------------------------------------------------------


def test_floor_deletion_by_impersonating_the_namespace_controller_is_refused(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("v5", [app], security_version=5))
    fleet.wait_phase("firmwarerelease", "v5", {"Published"})
    result = fleet.kubectl("delete", "rollbackfloor", "gw-3000.application",
                           "--as=system:serviceaccount:kube-system:namespace-controller",
                           "--as-group=system:masters", check=False)
    assert result.returncode != 0 and "is never deleted" in result.stderr
    assert fleet.floor() == 5


def test_the_namespace_controller_may_delete_floors_of_a_terminating_namespace(
        gate_system: GateSystem) -> None:
    kube = gate_system.kube
    namespace = kube.namespace("doomed")
    kube.kubectl("-n", namespace, *SECURITY, "create", "-f", "-", input=json.dumps({
        "apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "RollbackFloor",
        "metadata": {"name": "gw-1.os"},
        "spec": {"product": "gw-1", "tier": "os", "securityVersion": 3}}))
    kube.kubectl("delete", "namespace", namespace, "--wait=false")  # no controller finishes it
    result = kube.kubectl("-n", namespace, "delete", "rollbackfloor", "gw-1.os",
                          "--as=system:serviceaccount:kube-system:namespace-controller",
                          "--as-group=system:masters", check=False)
    assert result.returncode == 0, result.stderr


def test_a_lost_floor_is_rebuilt_never_taken_as_zero(fleet: Fleet, gate_system: GateSystem,
                                                     no_webhook: None) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("v5", [app], security_version=5))
    fleet.wait_phase("firmwarerelease", "v5", {"Published"})
    kube = gate_system.kube
    kube.kubectl("delete", "validatingadmissionpolicybinding", "flashgate-records-never-deleted")
    try:  # the API server takes a moment to drop a policy binding
        fleet.wait_for(lambda: fleet.kubectl("delete", "rollbackfloor", "gw-3000.application",
                                             check=False).returncode == 0, "the floor deleted")
    finally:
        from ..conftest import REPO
        kube.kubectl("apply", "--server-side", "-f", str(REPO / "deploy" / "policies.yaml"))
    assert fleet.floor() is None
    fleet.apply(fleet.release_doc("v1", [app], security_version=1))
    status = _status(fleet.wait_phase("firmwarerelease", "v1", {"Published", "Rejected"}))
    assert (status["phase"], status["reason"]) == ("Rejected", "RollbackRejected"), status
    assert fleet.floor() == 5
    assert "FloorRebuilt" in fleet.event_reasons("v1")
    assert fleet.channel()["application"]["release"] == "v5"
    assert f'flashgate_floor_rebuilds_total{{namespace="{fleet.namespace}",tier="application"}} 1.0' \
        in gate_system.metrics()


# ---- 5. a channel moves only forward by a create alone ----------------------------------------


def test_a_published_manifest_under_another_name_and_url_is_a_replay(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    doc = fleet.release_doc("app-7", [app], security_version=7)
    fleet.apply(doc)
    fleet.wait_phase("firmwarerelease", "app-7", {"Published"})
    before = fleet.channel()
    replay = json.loads(json.dumps(doc))
    replay["metadata"]["name"] = "app-7-elsewhere"
    replay["spec"]["artifact"]["url"] = doc["spec"]["artifact"]["url"].replace(
        "app-7.bin", "copy-of-app-7.bin")
    fleet.artifact("copy-of-app-7.bin", b"firmware image " * 1000)
    fleet.apply(replay)
    status = _status(fleet.wait_phase("firmwarerelease", "app-7-elsewhere", {"Published", "Rejected"}))
    assert (status["phase"], status["reason"]) == ("Rejected", "ReplayRejected"), status
    assert "published before, as release app-7" in status["message"]
    assert fleet.channel() == before


def test_going_back_to_an_older_build_of_the_same_epoch_needs_intent(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    old = fleet.release_doc("app-7-0", [app], security_version=7, version="7.0.0",
                            data=b"seven-oh " * 900)
    fleet.apply(old)
    fleet.wait_phase("firmwarerelease", "app-7-0", {"Published"})
    fleet.apply(fleet.release_doc("app-7-1", [app], security_version=7, version="7.0.1",
                                  data=b"seven-one " * 900))
    fleet.wait_phase("firmwarerelease", "app-7-1", {"Published"})
    back = json.loads(json.dumps(old))
    back["metadata"]["name"] = "app-7-0-again"
    fleet.apply(back)
    status = _status(fleet.wait_phase("firmwarerelease", "app-7-0-again", {"Published", "Rejected"}))
    assert (status["phase"], status["reason"]) == ("Rejected", "ReplayRejected")
    assert fleet.channel()["application"]["release"] == "app-7-1"
    # The intended functional rollback: stated by a release manager.
    back["metadata"]["name"] = "app-7-0-rollback"
    back["spec"]["republish"] = {"reason": "roll back to 7.0.0 for the crash in 7.0.1"}
    denied = fleet.apply(back, check=False)  # as the admin, who is no release manager
    assert denied.returncode != 0 and "may be set by release managers only" in denied.stderr
    path = fleet.system.workdir / f"{fleet.namespace}-rollback.json"
    path.write_text(json.dumps(back))
    fleet.kubectl("apply", *MANAGER, "-f", str(path))
    fleet.wait_phase("firmwarerelease", "app-7-0-rollback", {"Published"})
    assert fleet.channel()["application"]["release"] == "app-7-0-rollback"


def test_promoting_a_build_from_beta_to_stable(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    beta = fleet.release_doc("app-8-beta", [app], security_version=8, channel="beta")
    fleet.apply(beta)
    fleet.wait_phase("firmwarerelease", "app-8-beta", {"Published"})
    promoted = json.loads(json.dumps(beta))
    promoted["metadata"]["name"] = "app-8"
    promoted["spec"]["channel"] = "stable"
    promoted["spec"]["republish"] = {"reason": "promote 8 from beta to stable"}
    path = fleet.system.workdir / f"{fleet.namespace}-promote.json"
    path.write_text(json.dumps(promoted))
    fleet.kubectl("apply", *MANAGER, "-f", str(path))
    fleet.wait_phase("firmwarerelease", "app-8", {"Published"})
    assert fleet.channel(channel="stable")["application"]["release"] == "app-8"
    assert fleet.channel(channel="beta")["application"]["release"] == "app-8-beta"


# ---- 6. the operator owns its channels ---------------------------------------------------------


def _forge(fleet: Fleet) -> None:
    forged = json.dumps({"release": "rejected-build", "tier": "bootloader", "signatures": []})
    fleet.kubectl("patch", "configmap", "channel.gw-3000.stable", "--type=merge", "-p",
                  json.dumps({"data": {"bootloader.json": forged}}))


def test_a_forged_job_document_is_removed_and_reported(fleet: Fleet, gate_system: GateSystem) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("app-1", [app]))
    fleet.wait_phase("firmwarerelease", "app-1", {"Published"})
    _forge(fleet)
    fleet.wait_for(lambda: "bootloader" not in fleet.channel(), "the channel restored")
    assert fleet.channel()["application"]["release"] == "app-1"
    events = fleet.kubectl("get", "events", "--field-selector",
                           "involvedObject.name=channel.gw-3000.stable", "-o", "json").stdout
    assert "ChannelRepaired" in [e["reason"] for e in json.loads(events)["items"]]
    assert f'flashgate_channel_repairs_total{{namespace="{fleet.namespace}"}}' in gate_system.metrics()


def test_drift_while_the_operator_was_down_is_repaired_at_start(fleet: Fleet,
                                                              gate_system: GateSystem) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("app-1", [app]))
    fleet.wait_phase("firmwarerelease", "app-1", {"Published"})
    gate_system.stop_operator()
    try:
        _forge(fleet)
    finally:
        gate_system.start_operator()
    fleet.wait_for(lambda: "bootloader" not in fleet.channel(), "the channel restored", timeout=30)


# ---- 7. one bad SigningKey never stalls its fleet ---------------------------------------------


def test_a_key_with_an_impossible_time_is_refused_at_apply(fleet: Fleet) -> None:
    _, doc = fleet.key_doc("year-zero", "application")
    doc["spec"]["notBefore"] = "0000-01-01T00:00:00Z"
    result = fleet.apply(doc, check=False)
    assert result.returncode != 0
    assert "must lie between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z" in result.stderr


def test_an_unusable_key_is_invalid_on_its_own(fleet: Fleet, no_webhook: None) -> None:
    app = fleet.signing_key("app", "application")
    _, bad = fleet.key_doc("garbled", "application")
    # Passes the schema's PEM pattern, but is no key at all.
    bad["spec"]["publicKey"] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    fleet.apply(bad)
    key = fleet.wait_phase("signingkey", "garbled", {"Invalid"})
    assert key["status"]["reason"] == "SpecInvalid", key["status"]
    fleet.apply(fleet.release_doc("app-1", [app]))
    assert _status(fleet.wait_phase("firmwarerelease", "app-1", {"Published", "Rejected"}))[
        "phase"] == "Published"


# ---- 8. who may create or raise a floor ------------------------------------------------------


def _floor(product: str, version: int, **metadata: Any) -> str:
    return json.dumps({"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "RollbackFloor",
                       "metadata": {"name": f"{product}.application", **metadata},
                       "spec": {"product": product, "tier": "application",
                                "securityVersion": version}})


def test_a_floor_out_of_reach_is_refused(fleet: Fleet) -> None:
    anyone = fleet.kubectl("create", *MALLORY, "-f", "-", input=_floor("gw-9", 4294967295),
                           check=False)
    assert anyone.returncode != 0
    assert "only the flashgate operator and the security team" in anyone.stderr
    team = fleet.kubectl("create", *SECURITY, "-f", "-", input=_floor("gw-9", 4294967295),
                         check=False)
    assert team.returncode != 0 and "a manual raise of a rollback floor is at most 100" in team.stderr
    assert fleet.kubectl("create", *SECURITY, "-f", "-", input=_floor("gw-9", 40)).returncode == 0
    jump = fleet.kubectl("patch", "rollbackfloor", "gw-9.application", *SECURITY, "--type=merge",
                         "-p", '{"spec":{"securityVersion":900}}', check=False)
    assert jump.returncode != 0 and "at most 100" in jump.stderr
    named = fleet.kubectl("patch", "rollbackfloor", "gw-9.application", *SECURITY, "--type=merge",
                          "-p", json.dumps({"metadata": {"annotations": {
                              "ota.flashgate.dev/override": "INC-7: the fleet runs 900"}},
                              "spec": {"securityVersion": 900}}), check=False)
    assert named.returncode == 0, named.stderr
    assert fleet.floor("gw-9") == 900


# ---- 9. the webhook blocks only what it guards -------------------------------------------------


def test_the_webhook_matches_only_flashgate_kinds_in_the_fleets_served(
        fleet: Fleet, gate_system: GateSystem) -> None:
    other = gate_system.kube.namespace("not-a-fleet")
    scoped = GateSystem(gate_system.kube, gate_system.workdir / "scoped", root=gate_system.root,
                        sidecar_port=gate_system.sidecar_port)
    scoped.workdir.mkdir(exist_ok=True)
    known = fleet.signing_key("app", "application")
    scoped.start_operator(namespaces=[fleet.namespace])
    try:
        config = json.loads(gate_system.kube.kubectl(
            "get", "validatingwebhookconfiguration", scoped.webhook_config, "-o", "json").stdout)
        policies = {hook["name"]: hook["failurePolicy"] for hook in config["webhooks"]}
        assert policies == {"firmwarerelease.ota.flashgate.dev": "Fail",
                            "signingkey.ota.flashgate.dev": "Ignore"}  # revoking is never blocked
        for hook in config["webhooks"]:
            assert hook["timeoutSeconds"] == 5
            assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [fleet.namespace]
            assert [r["apiGroups"] for r in hook["rules"]] == [["ota.flashgate.dev"]]
        scoped.stop_operator(kill=True)  # its webhook is now down, its configuration stays
        app = generate(Algorithm.ED25519)
        elsewhere = fleet.release_doc("elsewhere", [app])
        elsewhere["metadata"]["namespace"] = other
        path = gate_system.workdir / f"{other}-release.json"
        path.write_text(json.dumps(elsewhere))
        # Another namespace, or another kind in the fleet: the dead webhook is not consulted
        # (the session operator's own webhook still answers for the other namespace).
        answered = gate_system.kube.kubectl("create", "-f", str(path), "--dry-run=server",
                                            check=False)
        assert "failed calling webhook" not in answered.stderr, answered.stderr
        assert "(UnknownKey)" in answered.stderr
        fleet.kubectl("create", "configmap", "unrelated", "--from-literal=a=b")
        # In the fleet, a release the live webhook admits: only the dead one refuses it (the
        # API server calls both at once, so an UnknownKey refusal could come back first).
        blocked = fleet.apply(fleet.release_doc("blocked", [known]), check=False)
        assert blocked.returncode != 0 and "failed calling webhook" in blocked.stderr
    finally:
        scoped.stop_operator(kill=True)
        gate_system.kube.kubectl("delete", "validatingwebhookconfiguration",
                                 scoped.webhook_config, "--ignore-not-found")


# ---- 10. announcements survive a SIGKILL, exactly once ----------------------------------------


def test_a_publication_cut_short_by_sigkill_is_announced_once(fleet: Fleet,
                                                           gate_system: GateSystem) -> None:
    app = fleet.signing_key("app", "application")
    gate_system.stop_operator()
    gate_system.start_operator(failpoints=["after-channel-write"])
    fleet.apply(fleet.release_doc("cut-short", [app], security_version=2))
    assert gate_system.operator is not None
    assert gate_system.operator.wait(timeout=30) == 137, "the failpoint kills the operator"
    assert fleet.channel()["application"]["release"] == "cut-short"
    assert _status(fleet.get("firmwarerelease", "cut-short")).get("phase") != "Published"
    gate_system.start_operator()
    status = _status(fleet.wait_phase("firmwarerelease", "cut-short", {"Published"}))
    assert status["publishedAt"] == fleet.channel()["application"]["publishedAt"]
    fleet.wait_for(lambda: "Published" in fleet.event_reasons("cut-short"), "the Published event")
    assert fleet.event_reasons("cut-short").count("Published") == 1
    line = (f'flashgate_release_publications_total{{namespace="{fleet.namespace}",'
            'tier="application"} 1.0')
    assert line in gate_system.metrics()
    gate_system.stop_operator()
    gate_system.start_operator()
    fleet.signing_key("app-2", "application")  # the new operator works on this fleet
    assert fleet.event_reasons("cut-short").count("Published") == 1


# ---- 11. annotations decide nothing -----------------------------------------------------------


def test_forged_bookkeeping_annotations_change_nothing(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    doc = fleet.release_doc("annotated", [app])
    doc["metadata"]["annotations"] = {
        "ota.flashgate.dev/last-handled-configuration": json.dumps({"spec": doc["spec"]}),
        "ota.flashgate.dev/reconcile_release": '{"started":"2020-01-01T00:00:00","success":true}',
        "kopf.zalando.org/last-handled-configuration": "{garbage",
    }
    fleet.apply(doc)
    assert _status(fleet.wait_phase("firmwarerelease", "annotated", {"Published", "Rejected"}))[
        "phase"] == "Published"


# ---- 12. credentials in URLs ---------------------------------------------------------------


def test_credentials_in_an_artifact_url_are_never_shown(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    doc = fleet.release_doc("with-credentials", [app])
    doc["spec"]["artifact"]["url"] = "https://builder:hunter2@firmware.example.com/fw.bin?X-Sig=s3cr3t"
    fleet.apply(doc)
    status = _status(fleet.wait_phase("firmwarerelease", "with-credentials", {"Published", "Rejected"}))
    assert status["phase"] == "Rejected"
    fleet.wait_for(lambda: fleet.event_reasons("with-credentials"), "an event")
    shown = json.dumps(status) + fleet.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=with-credentials", "-o", "json").stdout
    for secret in ("hunter2", "builder:", "s3cr3t"):
        assert secret not in shown


# ---- 13. a reset status publishes nothing again ------------------------------------------------


def test_a_published_release_reset_to_pending_is_not_published_again(
        fleet: Fleet, gate_system: GateSystem) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("first", [app], security_version=3, data=b"first " * 500))
    fleet.wait_phase("firmwarerelease", "first", {"Published"})
    fleet.apply(fleet.release_doc("second", [app], security_version=3, data=b"second " * 500))
    fleet.wait_phase("firmwarerelease", "second", {"Published"})
    gate_system.stop_operator()
    try:
        fleet.kubectl("patch", "firmwarerelease", "first", "--subresource=status", "--type=merge",
                      "-p", '{"status":{"phase":"Pending","observedGeneration":0}}')
    finally:
        gate_system.start_operator()
    status = _status(fleet.wait_phase("firmwarerelease", "first", {"Published", "Rejected"}))
    assert status["phase"] == "Published" and "superseded there by second" in status["message"]
    assert fleet.channel()["application"]["release"] == "second"
    assert fleet.event_reasons("first").count("Published") == 1
