"""Where the sidecar may fetch an artifact from (FORMAT.md step 8, first part).

The artifact URL is unsigned (DESIGN.md, Publishing): whoever can write a `FirmwareRelease` chooses
it. So before any connection the sidecar refuses URLs that would make it a proxy into the pod's
network: loopback, link-local (cloud metadata at 169.254.169.254), private and carrier-grade NAT
ranges, cluster-internal names. Every address a name resolves to must pass, and the connection
then goes only to the addresses that were checked (`CheckedURL.addresses`), so a second DNS answer
cannot differ from the first (DNS rebinding).
"""
from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from yarl import URL

from flashgate.trust.vocabulary import Reason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that only mean something inside a cluster or a cloud VM. In a pod, resolv.conf also
# appends search domains to short names, which is why single-label names are refused too and
# other names are resolved as absolute (with a trailing dot).
CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local", ".internal")
CLUSTER_NAMES = frozenset({"kubernetes.default", "metadata.google.internal", "metadata"})

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(Exception):
    """A fetch that did not produce the artifact's bytes; `reason` is the verdict's reason."""

    reason: ClassVar[Reason] = Reason.ArtifactUnavailable

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class URLNotAllowed(FetchError):
    """The URL policy refused the URL before any connection (→ ArtifactURLNotAllowed)."""

    reason: ClassVar[Reason] = Reason.ArtifactURLNotAllowed


class ArtifactUnavailable(FetchError):
    """The transfer failed: DNS, TLS, HTTP status, timeout, too slow (→ ArtifactUnavailable)."""

    reason: ClassVar[Reason] = Reason.ArtifactUnavailable


@dataclass(frozen=True)
class URLPolicy:
    """The sidecar's own rules for artifact URLs (from its config, never from the request).

    Attributes:
        allow_file: accept `file://` URLs (demos and tests only).
        file_root: directory every `file://` path must resolve inside (symlinks followed).
        allowed_hosts: host names or IP literals exempt from the name and address denials.
        allowed_networks: networks whose addresses are exempt from the address denial.
    """

    allow_file: bool = False
    file_root: Path | None = None
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()

    @staticmethod
    def make(*, allow_file: bool = False, file_root: Path | None = None,
             allowed_hosts: Iterable[str] = (), allowed_networks: Iterable[str] = ()) -> URLPolicy:
        return URLPolicy(allow_file=allow_file, file_root=file_root,
                         allowed_hosts=frozenset(_normal_host(h) for h in allowed_hosts),
                         allowed_networks=tuple(ipaddress.ip_network(n, strict=False)
                                                for n in allowed_networks))


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the policy; for https, the only addresses the connection may use."""

    url: URL
    addresses: tuple[str, ...] = ()
    path: Path | None = None  # file:// only: the resolved path inside file_root


def denied_address(address: IPAddress) -> str | None:
    """Why an address is not public (None when it is), looking through embedded IPv4 forms."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = denied_address(embedded)
            if inner is not None:
                return f"{inner} (embedded in {address})"
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("carrier-grade NAT", address in _CGNAT), ("private", address.is_private),
              ("reserved", address.is_reserved), ("not globally routable", not address.is_global))
    return next((why for why, hit in checks if hit), None)


def _normal_host(host: str) -> str:
    return host.strip().rstrip(".").lower().strip("[]")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _has_userinfo(url: str) -> bool:
    _, sep, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0] if sep else ""
    return "@" in authority


def _legacy_ipv4(host: str) -> bool:
    """Forms like 127.1, 0x7f.0.0.1 or 2130706433 that the C resolver maps onto an address."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _denied_name(host: str) -> str | None:
    if host in CLUSTER_NAMES or host.endswith(CLUSTER_SUFFIXES):
        return "a cluster-internal name"
    if "." not in host:
        return "a single-label name (resolved through the pod's search domains)"
    return None


class Checker:
    """Applies a URLPolicy; `resolve_timeout` bounds the DNS lookup."""

    def __init__(self, policy: URLPolicy, resolve_timeout: float) -> None:
        self.policy = policy
        self.resolve_timeout = resolve_timeout

    async def check(self, url: str | URL) -> CheckedURL:
        """The URL policy, before any connection.

        Raises:
            URLNotAllowed: scheme, userinfo, name, file path or any resolved address refused.
            ArtifactUnavailable: the name does not resolve.
        """
        # The raw text too: yarl drops an empty userinfo ("https://@host/").
        if _has_userinfo(str(url)):
            raise URLNotAllowed("artifact URL carries userinfo (user@host); credentials in "
                                "URLs are refused")
        try:
            parsed = url if isinstance(url, URL) else URL(url)
            scheme, host, port = parsed.scheme, parsed.host, parsed.port  # yarl parses lazily
        except ValueError as exc:  # UnicodeError (IDNA) included
            raise URLNotAllowed(f"artifact URL is not a valid URL: {exc}") from None
        if scheme == "file":
            return CheckedURL(parsed, path=self._file_path(parsed))
        if scheme == "s3":
            return CheckedURL(parsed)
        if scheme != "https":
            allowed = "https, s3" + (", file" if self.policy.allow_file else "")
            raise URLNotAllowed(f"artifact URL scheme {scheme or '(none)'}:// is not "
                                f"allowed (allowed: {allowed})")
        if not host:
            raise URLNotAllowed("artifact URL has no host")
        return CheckedURL(parsed, await self._addresses(host, port or 443))

    async def _addresses(self, raw_host: str, port: int) -> tuple[str, ...]:
        host = _normal_host(raw_host)
        exempt = host in self.policy.allowed_hosts
        literal = _literal(host)
        if literal is None and not exempt:
            why = _denied_name(host)
            if _legacy_ipv4(host):
                why = "a non-canonical IPv4 address form"
            if why is not None:
                raise URLNotAllowed(f"artifact host {host} is {why}")
        addresses = [literal] if literal is not None else await self._resolve(host, port, exempt)
        for address in addresses:
            why = denied_address(address)
            if why is not None and not exempt and not self._allowed_network(address):
                raise URLNotAllowed(f"artifact host {host} resolves to {address}, which is {why}"
                                    " (not in allowedHosts/allowedNetworks)")
        return tuple(dict.fromkeys(str(a) for a in addresses))

    def _allowed_network(self, address: IPAddress) -> bool:
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return any((plain or address) in net for net in self.policy.allowed_networks)

    async def _resolve(self, host: str, port: int, exempt: bool) -> list[IPAddress]:
        # Absolute name: no search-domain expansion, so "storage.default" stays out of the cluster.
        query = host if exempt else host + "."
        try:
            async with asyncio.timeout(self.resolve_timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    query, port, type=socket.SOCK_STREAM)
        except UnicodeError as exc:  # empty or over-long labels fail IDNA encoding
            raise URLNotAllowed(f"artifact host {host[:80]} is not a valid host name: "
                                f"{exc}") from None
        except TimeoutError:
            raise ArtifactUnavailable(f"resolving {host} timed out after "
                                      f"{self.resolve_timeout:g}s") from None
        except OSError as exc:
            raise ArtifactUnavailable(f"cannot resolve {host}: {exc}") from None
        found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not found:
            raise ArtifactUnavailable(f"{host} has no address")
        return found

    def _file_path(self, url: URL) -> Path:
        root = self.policy.file_root
        if not self.policy.allow_file or root is None:
            raise URLNotAllowed("file:// artifact URLs are disabled (allowFileURLs is false)")
        if url.host not in (None, "", "localhost"):
            raise URLNotAllowed(f"file:// URL names a remote host {url.host}")
        raw = url.path
        if "\x00" in raw or not raw.startswith("/"):
            raise URLNotAllowed("file:// URL path is not an absolute path")
        resolved = Path(raw).resolve()
        if not inside(resolved, root):
            raise URLNotAllowed(f"file:// path {raw} resolves outside fileRoot {root}")
        return resolved


def inside(path: Path, root: Path) -> bool:
    """Whether path (already resolved) lies under root (resolved here)."""
    return path.is_relative_to(root.resolve())
