"""A device-side HTTPS client for tests and benchmarks: http.client over ssl with a device's
client certificate. It sends the request target exactly as given (no normalization), so path
tricks reach the server unchanged."""
from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashgate.delivery.devcerts import DeviceCert


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class DeviceClient:
    host: str
    port: int
    server_ca: Path  # the delivery service's CA, as a device pins it
    workdir: Path  # where device keys are written for ssl to load
    _contexts: dict[bytes, ssl.SSLContext] = field(default_factory=dict)

    def context(self, cert: DeviceCert | None) -> ssl.SSLContext:
        key = cert.cert_pem if cert is not None else b""
        if key not in self._contexts:
            context = ssl.create_default_context(cafile=str(self.server_ca))
            if cert is not None:
                crt, pem = cert.write(self.workdir, f"device-{len(self._contexts)}")
                context.load_cert_chain(crt, pem)
            self._contexts[key] = context
        return self._contexts[key]

    def request(self, method: str, path: str, cert: DeviceCert | None = None, *,
                headers: dict[str, str] | None = None, body: bytes | None = None) -> Reply:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context(cert),
                                           timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                         response.read())
        finally:
            conn.close()

    def get(self, path: str, cert: DeviceCert | None = None, **kwargs: Any) -> Reply:
        return self.request("GET", path, cert, **kwargs)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text page (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric_name, _, rest = sample.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric_name == name and found == want:
            return float(value)
    return 0.0
