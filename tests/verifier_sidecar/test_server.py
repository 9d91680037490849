"""The sidecar's HTTP API and process: real aiohttp servers on loopback (one started as a real
subprocess), the real client, the configuration checks, and no Kubernetes anywhere."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from flashgate.signing.filekeys import generate
from flashgate.trust import Algorithm, Reason
from flashgate.verifier_api.client import VerifierClient, VerifierUnavailable
from flashgate.verifier_api.models import KeyRequest, ReleaseRequest
from flashgate.verifier_sidecar.config import ConfigError, load_settings, settings_from
from flashgate.verifier_sidecar.server import MAX_BODY_BYTES, make_app

from .test_service import NOW, Fleet

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    (tmp_path / "artifacts").mkdir()
    return Fleet(tmp_path / "artifacts")


@asynccontextmanager
async def running(app: web.Application, unix_socket: Path | None = None) -> AsyncIterator[str]:
    """Serve app on a free loopback port (or a Unix socket); yield the client target."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site: web.BaseSite = (web.UnixSite(runner, str(unix_socket)) if unix_socket
                          else web.TCPSite(runner, "127.0.0.1", 0))
    await site.start()
    try:
        yield (f"unix://{unix_socket}" if unix_socket
               else f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()


def release_request(fleet: Fleet, **release: Any) -> ReleaseRequest:
    app = generate(Algorithm.ED25519)
    return ReleaseRequest.model_validate({
        "fleet": fleet.name, "name": "gw-app-4.2.0", "release": fleet.release([app], **release),
        "keys": [fleet.entry(app, "application")], "floor": 5, "now": NOW})


async def post_raw(base: str, path: str, data: bytes,
                   content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            base + path, data=data, headers={"Content-Type": content_type}) as response:
        return response.status, json.loads(await response.text())


def test_release_and_key_over_http(fleet: Fleet) -> None:
    async def scenario() -> None:
        async with running(make_app(fleet.settings())) as base:
            async with VerifierClient(base, timeout=10) as client:
                await client.healthy()
                accepted = await client.verify_release(release_request(fleet))
                assert accepted.accepted and accepted.reason is None, accepted.message
                rejected = await client.verify_release(release_request(fleet, version="9"))
                assert rejected.reason == Reason.ManifestMismatch
                key = generate(Algorithm.ED25519)
                verdict = await client.verify_key(KeyRequest.model_validate(
                    {"fleet": fleet.name, "spec": fleet.key_spec(key, "config")}))
                assert verdict.endorsed and verdict.key_id == key.key_id
            async with aiohttp.ClientSession() as session, \
                    session.get(base + "/metrics") as response:
                page = await response.text()
        counters = [line for line in page.splitlines()
                    if line.startswith("flashgate_verifier_verifications_total")]
        assert any('verdict="accepted"' in c and c.endswith(" 1.0") for c in counters), counters
        assert any('reason="ManifestMismatch"' in c for c in counters), counters
        assert any('kind="key"' in c and 'verdict="endorsed"' in c for c in counters), counters
        assert 'flashgate_verifier_fetch_bytes_total{scheme="file"} 15000.0' in page

    asyncio.run(scenario())


def test_wire_format_is_camel_case(fleet: Fleet) -> None:
    async def scenario() -> dict[str, Any]:
        async with running(make_app(fleet.settings())) as base:
            body = json.dumps(release_request(fleet).to_json()).encode()
            status, answer = await post_raw(base, "/v1/verify/release", body)
            assert status == 200
            return answer

    answer = asyncio.run(scenario())
    assert set(answer) == {"verdict", "reason", "message", "keyIds", "sha256", "size", "seconds"}
    assert answer["verdict"] == "accepted" and len(answer["keyIds"]) == 1


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "json"),
    (b"[]", "ReleaseRequest"),
    (json.dumps({"fleet": "f", "name": "n"}).encode(), "release"),
    (json.dumps({"fleet": "f", "name": "n", "release": {}, "keys": [], "now": 1}).encode(),
     "floor"),
])
def test_malformed_requests_are_400_with_json(fleet: Fleet, body: bytes, fragment: str) -> None:
    async def scenario() -> tuple[int, dict[str, Any]]:
        async with running(make_app(fleet.settings())) as base:
            return await post_raw(base, "/v1/verify/release", body)

    status, answer = asyncio.run(scenario())
    assert status == 400
    assert fragment.lower() in json.dumps(answer).lower(), answer
    assert "Traceback" not in json.dumps(answer)


def test_unknown_fields_and_wrong_types_are_400(fleet: Fleet) -> None:
    good: dict[str, Any] = release_request(fleet).to_json()

    async def scenario() -> list[int]:
        async with running(make_app(fleet.settings())) as base:
            answers = []
            for body in ({**good, "flor": 3}, {**good, "now": "soon"},
                         {**good, "release": {**good["release"], "tier": "firmware"}},
                         {**good, "floor": -1}):
                status, _ = await post_raw(base, "/v1/verify/release", json.dumps(body).encode())
                answers.append(status)
            status, _ = await post_raw(base, "/v1/verify/key", b'{"fleet": "f"}')
            answers.append(status)
            return answers

    assert asyncio.run(scenario()) == [400] * 5


def test_body_size_is_bounded_and_errors_are_json(fleet: Fleet) -> None:
    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        async with running(make_app(fleet.settings())) as base:
            big = await post_raw(base, "/v1/verify/release", b" " * (MAX_BODY_BYTES + 1))
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/v1/verify/release") as response:
                    wrong_method = response.status, await response.json()
                async with session.get(base + "/nowhere") as response:
                    missing = response.status, await response.json()
            return [big, wrong_method, missing]

    (big, _), (wrong_method, _), (missing, body) = asyncio.run(scenario())
    assert (big, wrong_method, missing) == (413, 405, 404)
    assert "error" in body


def test_progress_of_a_waiting_release_over_http(fleet: Fleet, tmp_path: Path) -> None:
    """GET /v1/verify/release/progress through the client, while one fleet's downloads trickle
    from a real server: fetching (with bytes), queued (with those ahead), unknown."""
    from .test_slots import SLOW, slow_server

    server = slow_server(tmp_path / "tls")
    try:
        settings = fleet.settings(caFile=str(server.ca), allowedNetworks=["127.0.0.1/32"],
                                  maxConcurrentFetches=2, maxConcurrentFetchesPerFleet=1,
                                  minBytesPerSecond=0)

        async def scenario() -> list[Any]:
            app = make_app(settings)
            async with running(app) as base, VerifierClient(base, timeout=20) as client:
                requests = []
                for i in range(3):
                    request = release_request(fleet, url=server.url(f"/slow/{i}"), data=SLOW)
                    requests.append(request.model_copy(update={"name": f"r{i}"}))
                tasks = [asyncio.create_task(client.verify_release(r)) for r in requests]
                answers = []
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    first = await client.progress(fleet.name, "r0")
                    if first.state == "fetching" and first.bytes_read > 0:
                        break
                answers.append(first)
                answers.append(await client.progress(fleet.name, "r2"))
                answers.append(await client.progress(fleet.name, "nothing"))
                answers.append(await client.progress("other-fleet", "r0"))
                async with aiohttp.ClientSession() as session, session.get(
                        base + "/v1/verify/release/progress?fleet=" + fleet.name) as response:
                    answers.append((response.status, await response.json()))
                    async with session.get(
                            base + f"/v1/verify/release/progress?fleet={fleet.name}&name=r1"
                    ) as raw:
                        answers.append(await raw.json())
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return answers

        first, last, unknown, elsewhere, missing, raw = asyncio.run(scenario())
    finally:
        server.stop()
    assert (first.state, first.active, first.fleet_active) == ("fetching", 1, 1)
    assert 0 < first.bytes_read < len(SLOW)
    assert (last.state, last.ahead, last.bytes_read) == ("queued", 1, 0)
    assert (unknown.state, elsewhere.state) == ("unknown", "unknown")
    assert missing[0] == 400 and missing[1]["details"] == ["name: required"]
    assert raw == {"state": "queued", "ahead": 0, "active": 1, "fleetActive": 1, "bytes": 0}


def test_unix_socket(fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "verifier.sock"

    async def scenario() -> None:
        async with running(make_app(fleet.settings()), unix_socket=path) as target, \
                VerifierClient(target, timeout=5) as client:
            await client.healthy()
            verdict = await client.verify_release(release_request(fleet))
            assert verdict.accepted, verdict.message

    asyncio.run(scenario())


def test_no_userinfo_or_query_in_answers_or_log_lines(fleet: Fleet,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Through the HTTP API: the verdict and the sidecar's log line of a release whose URL
    carries credentials, and of one whose fetch fails with a presigned query."""
    secrets = ("hunter2", "release-bot", "sekrit")

    async def scenario() -> list[str]:
        settings = fleet.settings(allowedNetworks=["127.0.0.1/32"], connectTimeoutSeconds=2)
        async with running(make_app(settings)) as base, VerifierClient(base, timeout=10) as client:
            messages = []
            for url in ("https://release-bot:hunter2@fw.example.com/fw.bin?sig=sekrit",
                        f"https://127.0.0.1:{free_port()}/fw.bin?X-Amz-Signature=sekrit"):
                verdict = await client.verify_release(release_request(fleet, url=url))
                assert verdict.reason in (Reason.ArtifactURLNotAllowed,
                                          Reason.ArtifactUnavailable), verdict.message
                messages.append(verdict.message)
            return messages

    with caplog.at_level(logging.INFO, logger="flashgate.verifier"):
        messages = asyncio.run(scenario())
    logged = [r.getMessage() for r in caplog.records if '"event": "verify"' in r.getMessage()]
    assert len(logged) == 2
    for text in (*messages, *logged):
        assert not any(secret in text for secret in secrets), text
    assert "https://127.0.0.1:" in messages[1] and "/fw.bin" in messages[1]


def test_a_client_gone_mid_body_is_no_internal_error(fleet: Fleet,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A client that promises a body and hangs up half way is nothing wrong on the sidecar's side:
    no "internal error" with a traceback in its log (the endpoints' fuzzing logged one)."""
    async def scenario() -> None:
        async with running(make_app(fleet.settings())) as base:
            port = int(base.rsplit(":", 1)[1])
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/verify/release HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            await asyncio.sleep(0.3)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


# ---- the client fails closed ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_client_raises_when_nothing_listens(fleet: Fleet, tmp_path: Path) -> None:
    async def scenario(target: str) -> None:
        async with VerifierClient(target, timeout=2) as client:
            with pytest.raises(VerifierUnavailable):
                await client.healthy()
            with pytest.raises(VerifierUnavailable):
                await client.verify_release(release_request(fleet))

    asyncio.run(scenario(f"http://127.0.0.1:{free_port()}"))
    asyncio.run(scenario(f"unix://{tmp_path / 'absent.sock'}"))


def test_client_raises_on_timeout_and_non_200(fleet: Fleet) -> None:
    async def silent(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def teapot(_: web.Request) -> web.Response:
        return web.json_response({"error": "no"}, status=418)

    async def not_a_verdict(_: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/healthz", silent)
        app.router.add_post("/v1/verify/release", teapot)
        app.router.add_post("/v1/verify/key", not_a_verdict)
        async with running(app) as base, VerifierClient(base, timeout=0.5) as client:
            with pytest.raises(VerifierUnavailable, match="no answer within"):
                await client.healthy()
            with pytest.raises(VerifierUnavailable) as info:
                await client.verify_release(release_request(fleet))
            assert info.value.status == 418
            key = generate(Algorithm.ED25519)
            with pytest.raises(VerifierUnavailable, match="not a verdict"):
                await client.verify_key(KeyRequest.model_validate(
                    {"fleet": fleet.name, "spec": fleet.key_spec(key, "os")}))

    asyncio.run(scenario())


# ---- configuration -------------------------------------------------------------------------

def root_doc(fleet: Fleet) -> dict[str, Any]:
    return {"roots": [{"publicKey": fleet.root.public_pem, "algorithm": "ed25519"}]}


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"roots": []}, "no fleet root"),
    ({"roots": [{"publicKey": "nope", "algorithm": "ed25519"}]}, "roots[0]"),
    ({"thresholds": {"bootloader": 0}}, "at least 1"),
    ({"thresholds": {"firmware": 2}}, "thresholds"),
    ({"maxSecurityVersionJump": -1}, "maxSecurityVersionJump"),
    ({"allowFileURLs": True}, "fileRoot"),
    ({"allowedNetworks": ["not-a-net"]}, "allowedNetworks"),
    ({"caFile": "/nonexistent/ca.pem"}, "caFile"),
    ({"treshold": {}}, "treshold"),
    ({"minBytesPerSecond": "fast"}, "minBytesPerSecond"),
    ({"headersTimeoutSeconds": 0}, "headersTimeoutSeconds"),
    ({"maxConcurrentFetches": 4, "maxConcurrentFetchesPerFleet": 5},
     "maxConcurrentFetchesPerFleet (5) cannot exceed maxConcurrentFetches (4)"),
    ({"artifactURLPrefixes": ["http://fw.example.com/"]}, "artifactURLPrefixes"),
    ({"fleets": {"gw-1": {"artifactURLPrefixes": ["https://u:p@fw.example.com/"]}}},
     "fleets.gw-1.artifactURLPrefixes"),
    ({"fleets": {"gw-1": {"artifactUrlPrefixes": []}}}, "artifactUrlPrefixes"),
])
def test_config_errors_are_clear(fleet: Fleet, extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from({**root_doc(fleet), **extra})
    assert fragment in str(info.value)


def test_root_algorithm_must_match_the_key(fleet: Fleet) -> None:
    with pytest.raises(ConfigError, match="expected algorithm"):
        settings_from({"roots": [{"publicKey": fleet.root.public_pem,
                                  "algorithm": "ecdsa-p256-sha256"}]})


def test_root_files_and_json(fleet: Fleet, tmp_path: Path) -> None:
    pem = tmp_path / "root.pem"
    pem.write_text(fleet.root.public_pem)
    path = tmp_path / "verifier.json"
    path.write_text(json.dumps({"rootFiles": [{"path": str(pem), "algorithm": "ed25519"}],
                                "thresholds": {"bootloader": 3}}))
    settings = load_settings(path)
    assert [r.key_id for r in settings.roots] == [fleet.root.key_id]
    assert settings.policy.threshold("bootloader") == 3  # type: ignore[arg-type]
    assert settings.policy.threshold("os") == 1  # type: ignore[arg-type]
    assert not settings.url_policy.allow_file
    assert settings.limits.headers_timeout == 30  # the default
    assert settings.config.fetches_per_fleet == 2  # half of the default 4
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid json"):
        load_settings(path)


# ---- the real process ----------------------------------------------------------------------

def write_config(fleet: Fleet, path: Path, **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({**root_doc(fleet), "thresholds": {"bootloader": 2},
                                    "allowFileURLs": True, "fileRoot": str(fleet.artifacts),
                                    **extra}))
    return path


@pytest.fixture
def sidecar(fleet: Fleet, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    config = write_config(fleet, tmp_path / "verifier.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashgate.verifier_sidecar", "--config", str(config),
         "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("flashgate-verifier listening on http://127.0.0.1:"), (
            line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        yield line.split()[-1], proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def test_subprocess_sidecar(fleet: Fleet, sidecar: tuple[str, subprocess.Popen[str]]) -> None:
    base, proc = sidecar

    async def scenario() -> None:
        async with VerifierClient(base, timeout=10) as client:
            await client.healthy()
            verdict = await client.verify_release(release_request(fleet))
            assert verdict.accepted, verdict.message
            # A key the caller calls fine, endorsed by someone else: UnknownKey.
            app, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
            request = ReleaseRequest.model_validate({
                "fleet": fleet.name, "name": "evil", "release": fleet.release([app]),
                "keys": [fleet.entry(app, "application", endorsement=fleet.endorse(
                    app, "application", by=impostor))], "floor": 5, "now": NOW})
            refused = await client.verify_release(request)
            assert refused.reason == Reason.UnknownKey

    asyncio.run(scenario())
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    lines = [json.loads(line.split(" ", 4)[-1]) for line in err.splitlines()
             if '"event": "verify"' in line]
    assert [(e["verdict"], e["reason"]) for e in lines] == [("accepted", None),
                                                           ("rejected", "UnknownKey")]
    assert lines[0]["bytes"] == 15000 and lines[0]["keyIds"]


def test_probe_listener_serves_health_and_metrics_only(fleet: Fleet, tmp_path: Path) -> None:
    """--probe-listen: what the kubelet and Prometheus reach on the pod's address; the
    verification API is not there."""
    config = write_config(fleet, tmp_path / "verifier.yaml")
    probe = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashgate.verifier_sidecar", "--config", str(config),
         "--listen", "127.0.0.1:0", "--probe-listen", f"127.0.0.1:{probe}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{probe}"
                async with session.get(f"{base}/healthz") as response:
                    assert (response.status, await response.text()) == (200, "ok")
                async with session.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    assert "flashgate_verifier_verifications" in await response.text()
                async with session.post(f"{base}/v1/verify/release", json={}) as response:
                    assert response.status == 404

        asyncio.run(scenario())
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--listen", "0.0.0.0:8181"], "loopback only"),
    (["--listen", "nonsense"], "HOST:PORT"),
    (["--probe-listen", "9090"], "--probe-listen '9090' is not HOST:PORT"),
])
def test_process_refuses_bad_listen_addresses(fleet: Fleet, tmp_path: Path, args: list[str],
                                              fragment: str) -> None:
    config = write_config(fleet, tmp_path / "verifier.yaml")
    result = subprocess.run([sys.executable, "-m", "flashgate.verifier_sidecar", "--config",
                             str(config), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr


def test_process_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "verifier.yaml"
    config.write_text("thresholds: {bootloader: 2}\n")
    result = subprocess.run([sys.executable, "-m", "flashgate.verifier_sidecar", "--config",
                             str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "no fleet root" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_no_kubernetes_in_the_sidecar() -> None:
    code = ("import sys\n"
            "import flashgate.verifier_sidecar.server, flashgate.verifier_api.models\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kopf')"
            " or m.startswith('flashgate.operator'))\n"
            "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the sidecar imports {result.stdout.strip()}"

