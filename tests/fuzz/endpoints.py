"""Fuzz targets of flashgate's endpoints and input parsers beyond the trust core: the verifier
sidecar's HTTP API, the admission webhook's review handling, the delivery service's device API
(over TLS, as devices of every kind), and the signing station's inputs (its YAML files and its
command line). One function per target, bytes in, AssertionError on a
finding, as the trust core's targets (tests/fuzz/targets.py); hypothesis
(tests/fuzz/test_endpoints.py) and the long run (bench/fuzz_endpoints.py) feed them.

The properties, for every input:
- never an unexpected exception: an HTTP endpoint answers with a status it documents (never 500),
  and its error answers are JSON; a parser returns or raises its own error type (the station's
  `StationError`, the sidecar's `ConfigError`), the command line exits 0, 1 or 2;
- never a hang: each input is answered within `TIME_LIMIT` seconds (a raw HTTP request may also
  be refused by closing the connection), and the server answers /healthz afterwards;
- bounded memory on oversized input is a test of its own (test_endpoints.py): bodies above the
  servers' limits are refused while being read.

The servers are the real aiohttp applications (`verifier_sidecar.server.make_app`,
`operator.webhook.make_app`) on loopback, in a thread of their own (`Servers`), reached over real
sockets, so any byte sequence can be sent. The webhook's store is the operator tests' in-memory
one (tests/operator/fakes.py): the target is the review handling; reading the floor from the API
server is covered by the e2e tests.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import io
import json
import logging
import os
import select
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from flashgate.operator import webhook
from flashgate.operator.fleets import FleetView
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.signing.resources import release_doc, signing_key_doc
from flashgate.trust import Algorithm, Tier
from flashgate.trust.cose import CT_KEY, CT_RELEASE, sign1
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest
from flashgate.verifier_sidecar.config import settings_from
from flashgate.verifier_sidecar.server import make_app
from tests.fuzz.targets import timed
from tests.operator.fakes import MemoryStore

TIME_LIMIT = 5.0
"""Seconds one input may take (a verification with a file:// artifact takes milliseconds; the
limit is generous for 2 busy cores)."""
FLEET = "fuzz-fleet"
NOW = 1_800_000_000


# ---- the world the inputs are made from ----------------------------------------------------------

@dataclass(frozen=True)
class Material:
    """Real keys, a root endorsement, envelopes and files the seeds and strategies build on."""

    root: KeySigner
    app: KeySigner
    directory: Path
    key_doc: dict[str, Any]
    release: dict[str, Any]
    artifact: bytes

    @property
    def key_spec(self) -> dict[str, Any]:
        return dict(self.key_doc["spec"])

    @property
    def release_spec(self) -> dict[str, Any]:
        return dict(self.release["spec"])


@cache
def material() -> Material:
    directory = Path(tempfile.mkdtemp(prefix="flashgate-fuzz-"))
    (directory / "artifacts").mkdir()
    root, app = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    not_before, not_after = NOW - 86400, NOW + 365 * 86400
    endorsement = KeyEndorsement(fleet=FLEET, tier=Tier.APPLICATION,
                                 key_id=bytes.fromhex(app.key_id), algorithm=app.algorithm,
                                 public_key=app.spki_der, not_before=not_before,
                                 not_after=not_after)
    key_doc = signing_key_doc(name="app", fleet=FLEET, tier=Tier.APPLICATION,
                              algorithm=app.algorithm, public_pem=app.public_pem,
                              not_before=not_before, not_after=not_after,
                              endorsement=sign1(root, CT_KEY, endorsement.to_cbor()))
    artifact = b"fuzzed firmware " * 64
    (directory / "artifacts" / "fw.bin").write_bytes(artifact)
    manifest = ReleaseManifest(fleet=FLEET, product="gw", tier=Tier.APPLICATION, version="1.0.0",
                               security_version=3, artifact_name="fw.bin",
                               artifact_size=len(artifact),
                               artifact_sha256=hashlib.sha256(artifact).digest())
    release = release_doc(name="gw-1", manifest=manifest,
                          url=(directory / "artifacts" / "fw.bin").as_uri(), channel="stable",
                          signatures=[sign1(app, CT_RELEASE, manifest.to_cbor())])
    (directory / "root.pem").write_text(root.public_pem)
    (directory / "app.pem").write_bytes(app.private_pem())
    (directory / "release.yaml").write_text(json.dumps(release))
    (directory / "key.yaml").write_text(json.dumps(key_doc))
    return Material(root, app, directory, key_doc, release, artifact)


# ---- the servers ----------------------------------------------------------------------------------

class Servers:
    """The sidecar and the webhook applications on loopback, served from a thread of their own."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), name="fuzzed servers",
                         daemon=True).start()
        if not ready.wait(30) or len(self.ports) != 2:
            raise RuntimeError("the fuzzed servers did not start")

    def _run(self, ready: threading.Event) -> None:
        # Malformed requests are the point here: aiohttp logs each one it refuses with 400.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        m = material()
        settings = settings_from({
            "roots": [{"publicKey": m.root.public_pem, "algorithm": str(m.root.algorithm)}],
            "thresholds": {"bootloader": 2}, "maxSecurityVersionJump": 100,
            "allowFileURLs": True, "fileRoot": str(m.directory / "artifacts")})
        view = FleetView()
        view.on_key("ADDED", {**m.key_doc, "metadata": {**m.key_doc["metadata"], "uid": "k1"}})
        view.synced.set()
        apps = {"sidecar": make_app(settings),
                "webhook": webhook.make_app(webhook.Admission(view=view, store=MemoryStore()))}
        for name, app in apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.ports[name] = int(runner.addresses[0][1])


@cache
def servers() -> Servers:
    return Servers()


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(server: str, raw: bytes, timeout: float = TIME_LIMIT,
             complete: bool = True) -> Answer:
    """Send raw bytes to a server and read the first answer. A `complete` request must be
    answered within `timeout` (AssertionError otherwise); for other bytes the server may also
    close the connection, or wait for more input: when nothing came back within a tenth of a
    second, the sending side is closed, which ends that wait (status None, then)."""
    with socket.create_connection(("127.0.0.1", servers().ports[server]), timeout=timeout) as s:
        return _answer(s, raw, timeout, complete, server)


def _answer(s: socket.socket, raw: bytes, timeout: float, complete: bool,
            server: str) -> Answer:
    started = time.monotonic()
    with contextlib.suppress(OSError):  # the server may close before it read everything
        s.sendall(raw)
        if not complete and not select.select([s], [], [], 0.1)[0]:
            s.shutdown(socket.SHUT_WR)
    method = raw[:16].split(b" ", 1)[0].decode("latin-1")
    answer = http.client.HTTPResponse(s, method=method)  # type: ignore[arg-type]
    try:
        answer.begin()
        body = answer.read()
    except TimeoutError:
        assert not complete, f"{server}: no answer within {timeout}s to {raw[:300]!r}"
        return Answer(None, {}, b"")
    except (http.client.HTTPException, ConnectionError, ssl.SSLError):
        return Answer(None, {}, b"")
    finally:
        assert time.monotonic() - started < timeout + 1, f"{server}: {raw[:300]!r}"
    return Answer(answer.status, {k.lower(): v for k, v in answer.getheaders()}, body)


def request(method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a well-formed HTTP/1.1 request (the headers given win)."""
    fields = {"Host": "127.0.0.1", "Connection": "close", "Content-Length": str(len(body)),
              **({"Content-Type": "application/json"} if body else {}), **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1", "replace") + b"\r\n" + body


def healthy() -> None:
    """The sidecar still answers (no input may wedge it)."""
    answer = exchange("sidecar", request("GET", "/healthz"))
    assert answer.status == 200, f"the sidecar no longer answers /healthz: {answer}"


# ---- the sidecar's HTTP API ----------------------------------------------------------------------

SIDECAR_PATHS = ("/v1/verify/release", "/v1/verify/key", "/v1/verify/release/progress",
                 "/healthz", "/metrics")
SIDECAR_STATUSES = frozenset({200, 400, 404, 405, 413, 417, 431, 501, 505})
"""What the sidecar answers, its HTTP layer included (417: an Expect it does not know; 501: a
transfer coding it does not implement; 505: an HTTP version it does not speak). Never 500."""


def check_sidecar_answer(answer: Answer, what: str) -> None:
    """The sidecar answered with a status it documents; an error answer is an ErrorBody."""
    if answer.status is None:  # a request the HTTP parser refused outright
        return
    assert answer.status in SIDECAR_STATUSES, f"{what}: HTTP {answer.status} {answer.body[:300]!r}"
    if answer.status >= 400 and answer.headers.get("content-type", "").startswith(
            "application/json"):
        error = answer.json()
        assert isinstance(error.get("error"), str), error


def check_sidecar_body(data: bytes) -> None:
    """Any body POSTed to one of the sidecar's endpoints (the first byte chooses which)."""
    path = SIDECAR_PATHS[data[0] % 2] if data else SIDECAR_PATHS[0]
    answer = exchange("sidecar", request("POST", path, data[1:]))
    check_sidecar_answer(answer, f"POST {path}")
    if answer.status == 200:
        verdict = answer.json()
        assert verdict.get("verdict") in ("accepted", "rejected") or \
            isinstance(verdict.get("endorsed"), bool), verdict


def aiohttp_expect_failure(raw: bytes) -> bool:
    """Whether a request carries an Expect header that is not ASCII: aiohttp itself answers it
    with 500 before any flashgate code runs (its default expect handler cannot encode its own
    "Unknown Expect" message; the class of aio-libs/aiohttp#7715; test_endpoints.py keeps a
    strict xfail of it)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return any(line.lower().startswith(b"expect:") and not line.isascii()
               for line in head.split(b"\r\n"))


def check_sidecar_raw(data: bytes) -> None:
    """Any bytes as an HTTP request to the sidecar: an answer it documents, or the connection
    closed; the sidecar answers /healthz afterwards."""
    answer = exchange("sidecar", data, timeout=1, complete=False)
    if not (answer.status == 500 and aiohttp_expect_failure(data)):
        check_sidecar_answer(answer, f"raw {data[:80]!r}")
    healthy()


# ---- the admission webhook ------------------------------------------------------------------------

WEBHOOK_PATHS = (webhook.RELEASES_PATH, webhook.KEYS_PATH)


def check_webhook_answer(answer: Answer, body: bytes, what: str) -> None:
    """200 with an AdmissionReview answering the request's uid, or 400 for what is not one."""
    if answer.status is None:
        return
    assert answer.status in (200, 400, 413), f"{what}: HTTP {answer.status} {answer.body[:300]!r}"
    if answer.status != 200:
        return
    review = answer.json()
    response = review.get("response") or {}
    assert review.get("kind") == "AdmissionReview" and isinstance(response.get("allowed"), bool)
    sent = json.loads(body)
    assert response.get("uid") == str(sent["request"]["uid"]), (response, sent)
    if not response["allowed"]:
        assert response["status"]["message"], response


def check_webhook(data: bytes) -> None:
    """Any body POSTed to the webhook (the first byte chooses releases or keys)."""
    path = WEBHOOK_PATHS[data[0] % 2] if data else WEBHOOK_PATHS[0]
    body = data[1:]
    check_webhook_answer(exchange("webhook", request("POST", path, body)), body, f"POST {path}")


# ---- the delivery service -------------------------------------------------------------------------

DELIVERY_STATUSES = frozenset({200, 204, 304, 400, 401, 403, 404, 405, 413, 415, 431, 503})
"""What the delivery service answers (docs/delivery.md, "Errors"); never 500. aiohttp answers
400 (its HTTP parser) and 417 (an Expect it does not know) itself, in plain text, before any
handler runs."""
DELIVERY_STATUS_PATH = "/v1/fleets/fleet-a/devices/dev-1/status"


@dataclass(frozen=True)
class DeliveryUnderTest:
    running: Any  # tests.delivery.conftest.Running
    contexts: tuple[ssl.SSLContext, ...]  # fleet-a's device, fleet-b's, one of fleet-a signed
    #                                       by fleet-b's CA, none


@cache
def delivery() -> DeliveryUnderTest:
    """The delivery service in-process (tests/delivery/conftest.py), with channels, a trust
    bundle and an s3:// artifact published, and device certificates of every kind."""
    from tests.delivery.conftest import Pki, bundle_cm, channel_cm, document, start

    directory = material().directory / "delivery"
    directory.mkdir(exist_ok=True)
    (directory / "id").write_text("FGFUZZ\n")
    (directory / "secret").write_text("not-a-real-secret\n")
    pki = Pki(directory)
    running = start(pki, s3={"endpoint": "https://s3.example.com:9000", "region": "eu-west-1",
                             "accessKeyIdFile": str(directory / "id"),
                             "secretAccessKeyFile": str(directory / "secret")})
    running.publish("ADDED", channel_cm("fleet-a", {
        "application": document("fleet-a"),
        "os": document("fleet-a", "os-9", tier="os", url="s3://firmware/gw-3000/os.img")}))
    running.publish("ADDED", bundle_cm("fleet-a", json.dumps({"kind": "TrustBundle"})))
    certs = [pki.device("fleet-a", "dev-1"), pki.device("fleet-b", "dev-2"),
             pki.device("fleet-a", "dev-3", ca="fleet-b"), None]
    contexts = []
    for index, cert in enumerate(certs):
        # TLS 1.2: no session ticket arrives after the handshake, so a readable socket means
        # an answer (see _answer).
        context = ssl.create_default_context(cafile=str(pki.server_ca))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            context.load_cert_chain(*cert.write(directory, f"device-{index}"))
        contexts.append(context)
    return DeliveryUnderTest(running, tuple(contexts))


def delivery_exchange(raw: bytes, identity: int = 0, timeout: float = TIME_LIMIT) -> Answer:
    """Raw bytes over TLS to the delivery service, as the device `identity` (an index of
    `DeliveryUnderTest.contexts`); the first answer, or None when the connection ended."""
    service = delivery()
    context = service.contexts[identity % len(service.contexts)]
    with socket.create_connection(("127.0.0.1", service.running.port), timeout=timeout) as s, \
            context.wrap_socket(s, server_hostname="127.0.0.1") as tls:
        return _answer(tls, raw, timeout, complete=False, server="delivery")


def check_delivery_answer(answer: Answer, what: str) -> None:
    """A status the service documents; a refusal names its reason, and the reason its status."""
    from flashgate.delivery.server import REFUSALS
    if answer.status is None:
        return
    plain = answer.headers.get("content-type", "").startswith("text/plain")
    if answer.status in (400, 417) and plain:
        return  # aiohttp's own answer, before any handler (see DELIVERY_STATUSES)
    assert answer.status in DELIVERY_STATUSES, \
        f"{what}: HTTP {answer.status} {answer.body[:300]!r}"
    if answer.status >= 400:
        refusal = answer.json()
        assert REFUSALS.get(refusal.get("reason")) == answer.status and refusal.get("error"), \
            f"{what}: {refusal}"


def check_delivery_raw(data: bytes) -> None:
    """Any bytes as an HTTP request to the delivery service, over TLS, as one of four device
    identities (the first byte chooses): a documented answer or the connection ended; the
    service answers on its ops port afterwards."""
    identity = data[0] if data else 0
    answer = delivery_exchange(data[1:], identity)
    if not (answer.status == 500 and aiohttp_expect_failure(data[1:])):
        check_delivery_answer(answer, f"as {identity % 4}: {data[1:120]!r}")
    assert delivery().running.ops("/healthz").status == 200


def check_delivery_status(data: bytes) -> None:
    """Any body as a device's status report: recorded (204) or refused, never a 500."""
    raw = request("POST", DELIVERY_STATUS_PATH, data, {"Content-Type": "application/json"})
    answer = delivery_exchange(raw, identity=0)
    check_delivery_answer(answer, f"status report {data[:200]!r}")
    assert answer.status in (204, 400, 413, None), answer


# ---- the signing station --------------------------------------------------------------------------

def check_station_yaml(data: bytes) -> None:
    """Any bytes as the YAML of a FirmwareRelease and of SigningKeys the station reads: a result,
    or the station's own error (a message for people, exit code 2)."""
    from flashgate.signing.errors import StationError
    from flashgate.signing.resources import load_release, load_signing_keys
    with tempfile.TemporaryDirectory(prefix="flashgate-fuzz-") as directory:
        path = Path(directory) / "input.yaml"
        path.write_bytes(data)
        for load in (lambda: load_release(path, "--release"),
                     lambda: load_signing_keys([path], "--keys")):
            try:
                load()
            except StationError as error:
                assert error.message, "a StationError without a message"


STATION_ENV = {"FLASHGATE_PKCS11_MODULE": "/nonexistent/libsofthsm2.so",
               "FLASHGATE_PKCS11_TOKEN": "fuzz", "FLASHGATE_PKCS11_PIN": "0000",
               "KUBECONFIG": "/nonexistent/kubeconfig"}


@contextlib.contextmanager
def _station_sandbox(directory: Path) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """cwd in `directory`, no HSM (a module that does not exist), no cluster, output captured."""
    saved_env = {k: os.environ.get(k) for k in STATION_ENV}
    saved_cwd = Path.cwd()
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(STATION_ENV)
    os.chdir(directory)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def station_argv(data: bytes) -> list[str]:
    """Arguments from bytes: NUL separates them; the words FILE:name stand for the material's
    files (a dev key, the root, a release, a key, the artifact)."""
    m = material()
    files = {"FILE:key": m.directory / "app.pem", "FILE:root": m.directory / "root.pem",
             "FILE:release": m.directory / "release.yaml", "FILE:keys": m.directory / "key.yaml",
             "FILE:artifact": m.directory / "artifacts" / "fw.bin", "FILE:dir": m.directory}
    return [str(files.get(word, word)) for word in
            data.decode("utf-8", "surrogateescape").split("\0")]


def check_station_cli(data: bytes) -> None:
    """Any command line of `flashgate`: exit code 0, 1 or 2, never a traceback."""
    from flashgate.signing import cli
    argv = station_argv(data)
    with tempfile.TemporaryDirectory(prefix="flashgate-fuzz-") as directory, \
            _station_sandbox(Path(directory)) as (_, err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse: usage (2) or --help (0)
            code = exit_.code if isinstance(exit_.code, int) else 2
    assert code in (0, 1, 2), f"flashgate {argv}: exit {code}\n{err.getvalue()[-2000:]}"
    assert "Traceback" not in err.getvalue(), f"flashgate {argv}:\n{err.getvalue()[-2000:]}"


def check_sidecar_config(data: bytes) -> None:
    """Any bytes as the sidecar's configuration file: Settings, or a ConfigError."""
    from flashgate.verifier_sidecar.config import ConfigError, load_settings
    with tempfile.TemporaryDirectory(prefix="flashgate-fuzz-") as directory:
        path = Path(directory) / "verifier.yaml"
        path.write_bytes(data)
        with contextlib.suppress(ConfigError):
            load_settings(path)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sidecar_body": check_sidecar_body,
    "sidecar_raw": check_sidecar_raw,
    "webhook": check_webhook,
    "delivery_raw": check_delivery_raw,
    "delivery_status": check_delivery_status,
    "station_yaml": check_station_yaml,
    "station_cli": check_station_cli,
    "sidecar_config": check_sidecar_config,
}


def run(target: str, data: bytes, time_limit: float | None = TIME_LIMIT) -> None:
    """One input through one target; AssertionError on a finding (time included)."""
    timed(TARGETS[target], target, data, time_limit)


# ---- seeds -----------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@cache
def seeds(target: str) -> list[bytes]:
    """The starting corpus: well-formed inputs of each target, made from `material`."""
    m = material()
    key_request = json.dumps({"fleet": FLEET, "spec": m.key_spec}).encode()
    release_request = json.dumps({
        "fleet": FLEET, "name": "gw-1", "release": m.release_spec, "floor": 1, "now": NOW,
        "keys": [{"name": "app", "spec": m.key_spec}]}).encode()
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "7f0b", "namespace": FLEET, "operation": "CREATE",
                          "object": m.release}}
    key_review = {**review, "request": {**review["request"], "object": m.key_doc}}
    if target == "sidecar_body":
        return [b"\0" + release_request, b"\1" + key_request, b"\0{}", b"\1[]"]
    if target == "sidecar_raw":
        return [request("POST", "/v1/verify/release", release_request),
                request("POST", "/v1/verify/key", key_request),
                request("GET", "/v1/verify/release/progress?fleet=f&name=n"),
                request("GET", "/healthz"), request("GET", "/metrics"),
                request("POST", "/v1/verify/key", b"{}", {"Transfer-Encoding": "chunked"})]
    if target == "webhook":
        return [b"\0" + json.dumps(review).encode(), b"\1" + json.dumps(key_review).encode(),
                b"\0{}"]
    if target == "delivery_raw":
        channel = "/v1/fleets/fleet-a/channels/gw-3000/stable"
        return [bytes([who]) + request("GET", path, b"", {"If-None-Match": etag})
                for who in range(4)
                for path, etag in ((channel, ""), (f"{channel}/jobs/os", "*"),
                                   ("/v1/fleets/fleet-a/trust-bundle", 'W/"x"'))] + \
            [b"\0" + request("POST", DELIVERY_STATUS_PATH, b'{"installed": {}}')]
    if target == "delivery_status":
        return [json.dumps({"installed": {"application": {"release": "gw-1",
                                                          "securityVersion": 3}},
                            "lastRejection": {"release": "gw-2", "tier": "os",
                                              "reason": "HashMismatch", "message": "m"}}).encode(),
                b"{}"]
    if target == "station_yaml":
        return [(m.directory / "release.yaml").read_bytes(),
                (m.directory / "key.yaml").read_bytes(), b"---\n{}\n---\n[]\n",
                _laughs(b"kind: FirmwareRelease\nmetadata: {name: x}\nspec: {artifact: *a8}\n")]
    if target == "station_cli":
        lines = [
            ["verify", "--release", "FILE:release", "--artifact", "FILE:artifact", "--keys",
             "FILE:keys", "--root", "FILE:root", "--now", "2027-01-15T08:00:00Z"],
            ["sign", "--dev-file", "FILE:key", "--tier", "application", "--fleet", FLEET,
             "--product", "gw", "--version", "1.0.0", "--security-version", "3",
             "--artifact", "FILE:artifact", "--url", "https://fw.example.com/fw.bin",
             "-o", "out.yaml"],
            ["endorse", "--root-dev-file", "FILE:key", "--key", "FILE:key", "--tier", "config",
             "--fleet", FLEET, "--valid-for", "30d", "--name", "k", "-o", "k.yaml"],
            ["revoke", "--root-dev-file", "FILE:key", "--signing-key-yaml", "FILE:keys",
             "--reason", "fuzz", "-o", "r.json"],
            ["keygen", "--tier", "os", "--dev-file", "new.pem"],
            ["status", "-n", FLEET],
        ]
        return ["\0".join(line).encode() for line in lines]
    if target == "sidecar_config":
        return [json.dumps({"roots": [{"publicKey": m.root.public_pem,
                                       "algorithm": "ed25519"}],
                            "thresholds": {"bootloader": 2}}).encode(),
                b"roots: []\nmaxConcurrentFetches: 0\n", _laughs(b"roots: *a8\n")]
    raise KeyError(target)


def _laughs(tail: bytes) -> bytes:
    """YAML whose aliases stand for 9^9 strings ("billion laughs"), then `tail`, which may
    name the largest (*a8): a parser that expanded aliases would not come back."""
    levels = [b'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [b"a%d: &a%d [" % (i, i) + b",".join([b"*a%d" % (i - 1)] * 9) + b"]"
               for i in range(1, 9)]
    return b"\n".join(levels) + b"\n" + tail

