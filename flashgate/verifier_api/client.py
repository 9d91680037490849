"""The operator's client of the verifier sidecar's local API.

    async with VerifierClient("http://127.0.0.1:8181", timeout=660) as verifier:
        verdict = await verifier.verify_release(ReleaseRequest.model_validate(body))

Any failure to get a verdict (nothing listening, timeout, a non-200 answer, a body that is not a
verdict) raises `VerifierUnavailable`; the operator maps it to reason VerifierUnavailable and
retries: fail closed.
"""
from __future__ import annotations

from types import TracebackType
from typing import TypeVar

import aiohttp
from pydantic import ValidationError

from flashgate.verifier_api.models import (
    KeyRequest,
    KeyVerdict,
    ReleaseProgress,
    ReleaseRequest,
    ReleaseVerdict,
    _Body,
)


class VerifierUnavailable(Exception):
    """No verdict could be had from the sidecar; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


Answer = TypeVar("Answer", ReleaseVerdict, KeyVerdict, ReleaseProgress)


class VerifierClient:
    """Async client of the sidecar's local API.

    Args:
        target: "http://127.0.0.1:PORT", or a Unix socket as "unix:///path.sock" or "/path.sock".
        timeout: seconds for one call, end to end; it must exceed the sidecar's own
            totalTimeoutSeconds for downloads, or big artifacts read as VerifierUnavailable.
    """

    def __init__(self, target: str, timeout: float = 660.0) -> None:
        socket_path = target.removeprefix("unix://") if not target.startswith("http") else None
        self._socket = socket_path
        self._base = "http://localhost" if socket_path else target.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> VerifierClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = (aiohttp.UnixConnector(path=self._socket) if self._socket
                         else aiohttp.TCPConnector())
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                                  trust_env=False)
        return self._session

    async def verify_release(self, request: ReleaseRequest) -> ReleaseVerdict:
        """Raises: VerifierUnavailable."""
        return await self._post("/v1/verify/release", request, ReleaseVerdict)

    async def verify_key(self, request: KeyRequest) -> KeyVerdict:
        """Raises: VerifierUnavailable."""
        return await self._post("/v1/verify/key", request, KeyVerdict)

    async def healthy(self) -> None:
        """Raises: VerifierUnavailable unless GET /healthz answers 200 (within 10 s at most)."""
        await self._call("GET", "/healthz", None, timeout=min(self._timeout.total or 10, 10))

    async def progress(self, fleet: str, name: str) -> ReleaseProgress:
        """Where the download of release `name` of `fleet` stands (queued and how many of its
        fleet are ahead, fetching and how many bytes, or unknown); within 10 s at most.

        Raises: VerifierUnavailable."""
        text = await self._call("GET", "/v1/verify/release/progress", None,
                                timeout=min(self._timeout.total or 10, 10),
                                params={"fleet": fleet, "name": name})
        return self._parse("/v1/verify/release/progress", text, ReleaseProgress)

    async def _post(self, path: str, request: _Body, answer: type[Answer]) -> Answer:
        return self._parse(path, await self._call("POST", path, request.to_json()), answer)

    @staticmethod
    def _parse(path: str, text: str, answer: type[Answer]) -> Answer:
        try:
            return answer.model_validate_json(text)
        except ValidationError as exc:
            what = "progress report" if answer is ReleaseProgress else "verdict"
            raise VerifierUnavailable(f"{path} answered with a body that is not a {what}: "
                                      f"{exc.error_count()} errors") from None

    async def _call(self, method: str, path: str, body: dict[str, object] | None,
                    timeout: float | None = None,
                    params: dict[str, str] | None = None) -> str:
        limit = aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout
        try:
            async with self._client().request(method, self._base + path, json=body,
                                              params=params, timeout=limit) as response:
                text = await response.text()
                if response.status != 200:
                    raise VerifierUnavailable(
                        f"{method} {path} answered HTTP {response.status}: {text[:500]}",
                        status=response.status)
                return text
        except TimeoutError:  # before OSError, of which it is a subclass
            raise VerifierUnavailable(f"{method} {path}: no answer within "
                                      f"{limit.total:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise VerifierUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from None


__all__ = ["VerifierClient", "VerifierUnavailable"]
