"""A small asynchronous Kubernetes API client: flashgate's one way to talk to the API server (the
operator's, and the delivery service's, which only reads).

What they need and nothing more: JSON requests (get, create, replace, patch, delete),
paginated lists and watches, with the credentials of a kubeconfig or of the pod's ServiceAccount.
Credentials are loaded by the `kubernetes` package's own loaders (client certificates, tokens,
exec plugins, in-cluster token rotation); the requests go through one aiohttp session, so no
process ever blocks a thread on the network.

Errors are `ApiError` with the HTTP status and the API server's reason and message; callers test
`conflict`, `not_found` and `gone` rather than numbers. A 429 (API Priority and Fairness) is
retried after its Retry-After, a handful of times; every other failure is the caller's to handle.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import client, config

JSON = dict[str, Any]

_RETRIES_429 = 5
_MAX_RETRY_AFTER = 5.0
_REQUEST_TIMEOUT = 30.0
_TOKEN_REFRESH_SECONDS = 60.0
WATCH_SERVER_TIMEOUT = 290  # seconds the API server keeps a watch open before it ends it


@dataclass(frozen=True)
class Resource:
    """A kind of object as the REST API serves it."""

    group: str  # "" for the core API
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)


CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")


class ApiError(Exception):
    """The API server refused a request, or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message

    @property
    def conflict(self) -> bool:
        """409: a write lost a race (resourceVersion changed) or the object already exists."""
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def gone(self) -> bool:
        """410: a watch's resourceVersion is too old; list again."""
        return self.status == 410


def _ssl_context(cfg: client.Configuration) -> ssl.SSLContext | bool:
    if not cfg.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert \
        else ssl.create_default_context()
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    return context


def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """In-cluster credentials when running in a pod (and no kubeconfig is given), else the
    kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    cfg = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return cfg
        except config.ConfigException:
            pass
    config.load_kube_config(config_file=kubeconfig,  # type: ignore[no-untyped-call]
                            client_configuration=cfg)
    return cfg


class Kube:
    """One API server, one aiohttp session for requests and one for watches."""

    def __init__(self, cfg: client.Configuration) -> None:
        self._cfg = cfg
        self._server = str(cfg.host).rstrip("/")
        self._ssl = _ssl_context(cfg)
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._token_read: tuple[float, str | None] | None = None

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> Kube:
        return cls(load_configuration(kubeconfig))

    @property
    def server(self) -> str:
        return self._server

    def _sessions(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=128),
                timeout=aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT), trust_env=False)
        if self._watch_session is None or self._watch_session.closed:
            # Watches hold a connection each for minutes: a pool of their own, unbounded, so
            # they never starve requests.
            self._watch_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=WATCH_SERVER_TIMEOUT + 60),
                trust_env=False)
        return self._session, self._watch_session

    async def close(self) -> None:
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()

    def _token(self) -> str | None:
        """The bearer token, asked of the credentials loader at most once a minute: its hook
        re-reads rotated ServiceAccount tokens and exec plugins, and costs as much as the rest of
        a request."""
        now = time.monotonic()
        if self._token_read is None or now - self._token_read[0] > _TOKEN_REFRESH_SECONDS:
            token = self._cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
            self._token_read = (now, token)
        return self._token_read[1]

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: object = None, content_type: str = "application/json") -> JSON:
        """One request; its JSON answer. Raises ApiError."""
        session, _ = self._sessions()
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        for attempt in range(_RETRIES_429 + 1):
            try:
                async with session.request(
                        method, self._server + path, params=params, data=data,
                        headers=self._headers(content_type if data is not None else None)
                ) as response:
                    text = await response.text()
                    if response.status == 429 and attempt < _RETRIES_429:
                        delay = _retry_after(response.headers.get("Retry-After"))
                        await asyncio.sleep(delay)
                        continue
                    if response.status >= 400:
                        raise _error(response.status, text)
                    answer: JSON = json.loads(text) if text else {}
                    return answer
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ApiError(0, "Unreachable", f"{method} {path}: {type(exc).__name__}: "
                                                 f"{exc}") from None
        raise AssertionError("unreachable")

    async def get(self, resource: Resource, namespace: str | None, name: str) -> JSON:
        return await self.request("GET", resource.path(namespace, name))

    async def create(self, resource: Resource, namespace: str | None, body: JSON) -> JSON:
        return await self.request("POST", resource.path(namespace), body=body)

    async def replace(self, resource: Resource, namespace: str | None, name: str, body: JSON,
                      subresource: str | None = None) -> JSON:
        """PUT: carries metadata.resourceVersion, so a concurrent write makes it a 409."""
        return await self.request("PUT", resource.path(namespace, name, subresource), body=body)

    async def patch(self, resource: Resource, namespace: str | None, name: str, patch: object,
                    subresource: str | None = None, kind: str = "merge") -> JSON:
        content_type = {"merge": "application/merge-patch+json",
                        "json": "application/json-patch+json"}[kind]
        return await self.request("PATCH", resource.path(namespace, name, subresource),
                                  body=patch, content_type=content_type)

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> JSON:
        return await self.request("DELETE", resource.path(namespace, name))

    async def list_pages(self, resource: Resource, namespace: str | None, *,
                         label_selector: str | None = None,
                         limit: int = 500) -> AsyncIterator[JSON]:
        """Every page of a list (paginated, so memory stays bounded whatever the count); the last
        page's metadata.resourceVersion is where a watch continues."""
        params: dict[str, str] = {"limit": str(limit)}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self.request("GET", resource.path(namespace), params=params)
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            params["continue"] = token

    async def watch(self, resource: Resource, namespace: str | None, resource_version: str, *,
                    label_selector: str | None = None) -> AsyncIterator[tuple[str, JSON]]:
        """Events (type, object) after `resource_version`, bookmarks included, until the server
        ends the watch. Raises ApiError (410 Gone: list again)."""
        _, session = self._sessions()
        params = {"watch": "true", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SERVER_TIMEOUT)}
        if label_selector:
            params["labelSelector"] = label_selector
        try:
            async with session.get(self._server + resource.path(namespace), params=params,
                                   headers=self._headers(None)) as response:
                if response.status >= 400:
                    raise _error(response.status, await response.text())
                buffer = bytearray()
                # Lines are whole objects and may be large: split by hand rather than readline,
                # which has a line length limit.
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[:end + 1]
                        if line.strip():
                            event = json.loads(line)
                            if event.get("type") == "ERROR":
                                status = event.get("object") or {}
                                raise ApiError(int(status.get("code") or 500),
                                               str(status.get("reason") or "Error"),
                                               str(status.get("message") or ""))
                            yield str(event["type"]), event["object"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, "Unreachable", f"watch {resource.plural}: "
                                             f"{type(exc).__name__}: {exc}") from None


def _retry_after(header: str | None) -> float:
    try:
        return min(max(float(header or 1), 0.1), _MAX_RETRY_AFTER)
    except ValueError:
        return 1.0


def _error(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return ApiError(status, str(body.get("reason") or "Error"),
                    str(body.get("message") or text[:500]))
