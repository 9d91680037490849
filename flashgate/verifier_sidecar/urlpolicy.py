"""Where the sidecar may fetch an artifact from (docs/format.md step 8, first part).

The artifact URL is unsigned (docs/format.md, the job document): whoever can write a
`FirmwareRelease` chooses it. So before any connection the sidecar refuses URLs that would make it
a proxy into the pod's network: loopback, link-local (cloud metadata at 169.254.169.254), private
and carrier-grade NAT ranges, cluster-internal names. Every address a name resolves to must pass,
and the connection then goes only to the addresses that were checked (`CheckedURL.addresses`), so a
second DNS answer cannot differ from the first (DNS rebinding).

Two rules need no DNS and run before a release waits for a download slot (`check_release_url`):
- no credentials in the URL (userinfo): the URL is published to devices in the job document;
- the fleet's artifact hosts (`ArtifactPrefixes`, config `artifactURLPrefixes`): when set, the URL
  must lie under one of the prefixes, so whoever can write a FirmwareRelease cannot re-point a
  channel at a host of their own.
Redirects from an admitted URL are governed by the address rules only (devices are given the
admitted URL itself). `redact` is the one way a URL reaches a message or a log line: without
userinfo, query or fragment (presigned URLs carry their credentials in the query).
"""
from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

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


def _authority_and_path(url: str) -> tuple[str, str]:
    """The raw authority and path of URL text (before any query or fragment), as written."""
    _, sep, rest = url.partition("://")
    if not sep:
        return "", ""
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    authority, slash, path = rest.partition("/")
    return authority, slash + path


def _has_userinfo(url: str) -> bool:
    return "@" in _authority_and_path(url)[0]


CREDENTIALS_REFUSED = ("credentials in an artifact URL would be published to devices; use the "
                       "sidecar's s3 credentials or a presigned URL")

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]*")


def _redact_one(url: str) -> str:
    scheme, _, rest = url.partition("://")
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def redact(text: str) -> str:
    """`text` (a URL, or a message or log line holding URLs) with every URL's userinfo, query
    and fragment cut off: presigned URLs carry credentials in the query, and a URL with
    user:password must not reach a status, an event or a log."""
    return _URL_IN_TEXT.sub(lambda found: _redact_one(found.group()), text)


def check_credentials(url: str) -> None:
    """Raises URLNotAllowed when the URL carries userinfo (user@ or user:password@)."""
    # The raw text: yarl drops an empty userinfo ("https://@host/").
    if _has_userinfo(url):
        raise URLNotAllowed(CREDENTIALS_REFUSED)


@dataclass(frozen=True)
class URLPrefix:
    """One allowed artifact location: scheme, host, port and a path prefix, compared parsed
    (so "https://fw.example.com/a" admits /a and /a/x, not /ab nor fw.example.com.evil)."""

    text: str
    scheme: str
    host: str
    port: int | None
    path: str  # raw (percent-encoded); "" or ending in "/" admits everything below it

    @staticmethod
    def parse(text: str) -> URLPrefix:
        """Raises: ValueError when text is not an https://, s3:// or file:// prefix without
        credentials, query or fragment."""
        try:
            url = URL(text)
            host = _normal_host(url.host or "")
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a URL: {exc}") from None
        if url.scheme not in ("https", "s3", "file"):
            raise ValueError(f"{text!r}: the scheme must be https, s3 or file")
        if url.scheme != "file" and not host:
            raise ValueError(f"{text!r} has no host")
        if _has_userinfo(text) or url.raw_query_string or url.raw_fragment:
            raise ValueError(f"{text!r} must have no user, query or fragment")
        path = _authority_and_path(text)[1]
        if _unsafe_path(path):
            raise ValueError(f"{text!r} has dot segments or encoded slashes in its path")
        return URLPrefix(text, url.scheme, host, url.port, "" if path == "/" else path)

    def admits(self, url: URL) -> bool:
        """Whether the (parsed, credential-free) url lies under this prefix."""
        if (url.scheme, _normal_host(url.host or ""), url.port) != (self.scheme, self.host,
                                                                    self.port):
            return False
        if not self.path or self.path.endswith("/"):
            return url.raw_path.startswith(self.path)
        return url.raw_path == self.path or url.raw_path.startswith(self.path + "/")


def _unsafe_path(raw_path: str) -> bool:
    """Paths a server or device might resolve outside a prefix: dot segments (also encoded),
    encoded slashes and backslashes."""
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in raw_path:
        return True
    return any(segment in (".", "..") for segment in unquote(raw_path).split("/"))


@dataclass(frozen=True)
class ArtifactPrefixes:
    """Where each fleet's artifacts may be (config `artifactURLPrefixes`, per fleet under
    `fleets`). None: no such rule (any URL the address rules admit)."""

    default: tuple[URLPrefix, ...] | None = None
    per_fleet: Mapping[str, tuple[URLPrefix, ...] | None] = field(default_factory=dict)

    @staticmethod
    def make(default: Sequence[str] | None = None,
             per_fleet: Mapping[str, Sequence[str] | None] | None = None) -> ArtifactPrefixes:
        """Raises: ValueError for a malformed prefix."""
        def parsed(texts: Sequence[str] | None) -> tuple[URLPrefix, ...] | None:
            return None if texts is None else tuple(URLPrefix.parse(t) for t in texts)

        return ArtifactPrefixes(parsed(default), {fleet: parsed(texts) for fleet, texts
                                                  in (per_fleet or {}).items()})

    def for_fleet(self, fleet: str) -> tuple[URLPrefix, ...] | None:
        """The fleet's own list when it has one, else the default."""
        own = self.per_fleet.get(fleet)
        return own if own is not None else self.default

    def check(self, fleet: str, url: str) -> None:
        """Raises: URLNotAllowed when the fleet has a list and url is under none of it."""
        prefixes = self.for_fleet(fleet)
        if prefixes is None:
            return
        allowed = ", ".join(p.text for p in prefixes) or "none"
        try:
            parsed = URL(url)
            admitted = (not _unsafe_path(_authority_and_path(url)[1])
                        and any(p.admits(parsed) for p in prefixes))
        except ValueError:
            admitted = False
        if not admitted:
            raise URLNotAllowed(f"not under the artifact URL prefixes allowed for fleet {fleet} "
                                f"({allowed})")


def check_release_url(url: str, fleet: str, prefixes: ArtifactPrefixes) -> None:
    """The URL rules that need no DNS: no credentials, and the fleet's prefixes.

    Raises:
        URLNotAllowed: with the rule that refused it.
    """
    check_credentials(url)
    prefixes.check(fleet, url)


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
        check_credentials(str(url))
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
