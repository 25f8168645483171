"""Outbound HTTP that never reaches a non-public address (SSRF guard for web_fetch).

The check lives in the network backend, the one place a socket is opened: the
host name is resolved once, every resolved address must be public, and the
connection goes to an address that was checked. The URL keeps the host name,
so the Host header, TLS SNI and certificate checks use the name as usual.
Checking the URL first (scheme, userinfo, port, host lists) only gives clearer
errors; the backend is what enforces. Redirects are the caller's job, and each
hop comes through here again.

Two module-level seams exist for tests: `resolver(host)` (a name that resolves
to a private address) and `open_connection(ip, port, timeout)` (routing a
pretend-public address to a loopback test server).
"""
from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedError(Exception):
    """The URL or address is not allowed for this agent."""


# ipaddress' own is_global is wrong for several IPv6 forms on the Python
# versions we support (64:ff9b::/96, 2002::/16 are "global"), so the decision
# is made from explicit tables, with the properties as a second opinion.
_BLOCKED_V4 = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")]
# Only 2000::/3 is global unicast; inside it these are special-purpose.
_GLOBAL_V6 = ipaddress.ip_network("2000::/3")
_BLOCKED_V6 = [ipaddress.ip_network(n) for n in (
    "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20")]
_NAT64 = [ipaddress.ip_network("64:ff9b::/96")]


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, 6to4, IPv4-compatible)."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if any(ip in net for net in _NAT64) or int(ip) >> 32 == 0:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    if any(ip in net for net in _BLOCKED_V4):
        return False
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


def is_public_address(ip: IPAddress | str) -> bool:
    """True only for a globally routable unicast address, looking through IPv6 wrappings."""
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_v4(ip)
    if ip.scope_id:
        return False
    inner = _embedded_v4(ip)
    if inner is not None:
        # A wrapped address is only as public as the IPv4 address inside it.
        return _public_v4(inner)
    if ip not in _GLOBAL_V6 or any(ip in net for net in _BLOCKED_V6):
        return False
    return not (ip.is_private or ip.is_multicast or ip.is_reserved or ip.is_link_local
                or ip.is_site_local or ip.is_loopback or ip.is_unspecified)


def host_literal(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, including legacy forms resolvers accept
    (127.1, 2130706433, 0x7f000001, 0177.0.0.1), or None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%")[0] if ":" in host else host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _system_resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


# Replaceable by tests: host name -> list of address strings.
resolver = _system_resolve


def open_connection(ip: str, port: int, timeout: float | None) -> httpcore.NetworkStream:
    """Open a TCP connection to an already-vetted address (replaceable by tests)."""
    return httpcore.SyncBackend().connect_tcp(ip, port, timeout=timeout)


@dataclass
class Policy:
    """One agent's outbound rules (web_fetch's configuration)."""

    allow_private_networks: bool = False
    allowed_hosts: list[str] = field(default_factory=list)
    blocked_hosts: list[str] = field(default_factory=list)
    allowed_ports: list[int] = field(default_factory=lambda: [80, 443])
    schemes: tuple[str, ...] = ("http", "https")


def _host_matches(host: str, patterns: Iterable[str]) -> bool:
    """`example.com` (or `*.example.com`) matches the name and every subdomain."""
    host = host.rstrip(".").lower()
    for pattern in patterns:
        pattern = pattern.strip().lower().rstrip(".").removeprefix("*.")
        if pattern and (host == pattern or host.endswith("." + pattern)):
            return True
    return False


def check_url(url: httpx.URL, policy: Policy) -> None:
    """Refuse a URL by its shape alone: scheme, userinfo, port and host lists."""
    if url.scheme not in policy.schemes:
        raise BlockedError(f"only {'/'.join(policy.schemes)} URLs can be fetched, not {url.scheme or 'this'}")
    if url.userinfo:
        raise BlockedError("URLs with a user name or password are not fetched")
    if not url.host:
        raise BlockedError("the URL has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    if port not in policy.allowed_ports:
        raise BlockedError(f"port {port} is not allowed (allowed: {', '.join(map(str, policy.allowed_ports))})")
    check_host_name(url.host, policy)


def check_host_name(host: str, policy: Policy) -> None:
    if policy.blocked_hosts and _host_matches(host, policy.blocked_hosts):
        raise BlockedError(f"host {host} is blocked for this agent")
    if policy.allowed_hosts and not _host_matches(host, policy.allowed_hosts):
        raise BlockedError(f"host {host} is not in this agent's allowed hosts")


def vet_host(host: str, policy: Policy) -> list[str]:
    """Resolve once; every address must be public (unless private networks are allowed)."""
    check_host_name(host, policy)
    literal = host_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolver(host.rstrip(".") or host)
        except (OSError, UnicodeError) as exc:
            raise BlockedError(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise BlockedError(f"{host} has no address")
    if not policy.allow_private_networks:
        for address in addresses:
            # ANY bad address refuses the name: a DNS answer mixing public and
            # private addresses is a classic way round a "first address" check.
            if not is_public_address(address):
                shown = host if literal is not None else f"{host} resolves to {address}, which"
                raise BlockedError(f"{shown} is not a public address")
    return addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by one total deadline (slow drips)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float):
        self._stream, self._deadline = stream, deadline

    def _budget(self, timeout: float | None, error: type) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the total time limit was reached")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._budget(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        budget = self._budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, budget),
                               self._deadline)

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, refusing non-public destinations at connect time."""

    def __init__(self, policy: Policy, deadline: float):
        self.policy, self.deadline = policy, deadline
        self.connected: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options=None) -> httpcore.NetworkStream:
        if port not in self.policy.allowed_ports:
            raise BlockedError(f"port {port} is not allowed")
        addresses = vet_host(host, self.policy)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("the total time limit was reached")
        timeout = left if timeout is None else min(timeout, left)
        stream = open_connection(addresses[0], port, timeout)
        self.connected.append((addresses[0], port))
        return _DeadlineStream(stream, self.deadline)

    def connect_unix_socket(self, *args, **kwargs):
        raise BlockedError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_CORE_ERRORS = [(httpcore.ConnectTimeout, httpx.ConnectTimeout), (httpcore.ReadTimeout, httpx.ReadTimeout),
                (httpcore.WriteTimeout, httpx.WriteTimeout), (httpcore.PoolTimeout, httpx.PoolTimeout),
                (httpcore.ConnectError, httpx.ConnectError), (httpcore.ReadError, httpx.ReadError),
                (httpcore.WriteError, httpx.WriteError),
                (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
                (httpcore.ProtocolError, httpx.ProtocolError)]


def _httpx_error(exc: Exception) -> Exception:
    for core, mapped in _CORE_ERRORS:
        if isinstance(exc, core):
            return mapped(str(exc))
    return httpx.TransportError(str(exc))


class _Body(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response):
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_stream()
        except httpcore.TimeoutException as exc:
            raise _httpx_error(exc) from exc
        except httpcore.NetworkError as exc:
            raise _httpx_error(exc) from exc

    def close(self) -> None:
        self._response.close()


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport over httpcore with the guarded backend (public httpcore API only)."""

    def __init__(self, policy: Policy, total_timeout: float, verify: bool | ssl.SSLContext = True):
        self.backend = GuardedBackend(policy, time.monotonic() + total_timeout)
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=self.backend,
                                             max_connections=4)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        try:
            response = self._pool.handle_request(core_request)
        except httpcore.TimeoutException as exc:
            raise _httpx_error(exc) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise _httpx_error(exc) from exc
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_Body(response), extensions=response.extensions)

    def close(self) -> None:
        self._pool.close()
