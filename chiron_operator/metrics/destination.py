"""Where the operator may send a pool's Prometheus queries, and with which credentials.

A pool names its own Prometheus (`spec.prometheus.url`), so whoever may write a pool picks an
address the operator connects to from inside the cluster. Two rules keep that from reaching
what the tenant could not reach alone:

- addresses: loopback, link-local (the cloud metadata service lives at 169.254.169.254), the
  unspecified address (which Linux routes to loopback) and the Kubernetes API server's own
  address are refused, unless the cluster admin allows a network holding them
  (`--prometheus-allow-cidr`). Every address a host name resolves to is checked before the
  fetch, and the address actually connected to is checked again (a name that resolves
  differently the second time gains nothing).
- credentials: the operator's own token goes only to the URLs the admin lists
  (`--prometheus-token-url`); `token_url_allowed` compares parsed URLs, never string prefixes,
  so `http://prom:9090` does not allow `http://prom:9090.attacker.example`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Final, TypeAlias
from urllib.parse import SplitResult, urlsplit

Network: TypeAlias = IPv4Network | IPv6Network
Address: TypeAlias = IPv4Address | IPv6Address

ALLOW_FLAG: Final = "--prometheus-allow-cidr"
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class DestinationRefusedError(Exception):
    """A Prometheus URL the operator will not connect to; the message is safe for status."""


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Which addresses a pool's Prometheus may have.

    `allowed_networks` are let through whatever they hold (the dev cluster's Prometheus runs on
    127.0.0.1). `api_server_addresses` are the API server's (from `KUBERNETES_SERVICE_HOST`).
    """

    allowed_networks: tuple[Network, ...] = ()
    api_server_addresses: tuple[Address, ...] = ()

    @classmethod
    def build(cls, cidrs: Iterable[str], api_server_host: str | None) -> DestinationPolicy:
        """The policy of the operator's flags; raises ValueError naming a bad CIDR."""
        networks = tuple(ip_network(cidr.strip(), strict=False) for cidr in cidrs if cidr.strip())
        servers = _resolve(api_server_host, 443) if api_server_host else ()
        return cls(networks, tuple(dict.fromkeys(servers)))

    def refusal(self, address: Address) -> str | None:
        """Why `address` is refused (a phrase), or None when it may be connected to."""
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed_networks):
            return None
        if address in self.api_server_addresses:
            return "the Kubernetes API server's address"
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_unspecified:
            return "the unspecified address"
        return None

    def check_address(self, host: str, address: str) -> None:
        """Raise DestinationRefusedError when the connected `address` is refused."""
        found = ip_address(address.split("%", 1)[0])
        why = self.refusal(found)
        if why is not None:
            raise DestinationRefusedError(
                f"{host} is {found}, {why}: refused (the operator's admin can allow it with "
                f"{ALLOW_FLAG})"
            )

    def check_url(self, url: str) -> None:
        """Resolve the URL's host and refuse it when any of its addresses is refused."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise DestinationRefusedError("the URL's host or port is not valid") from exc
        if parts.scheme not in DEFAULT_PORTS or not host:
            raise DestinationRefusedError("the URL must be http(s)://host[:port][/path]")
        try:
            addresses = _resolve(host, port or DEFAULT_PORTS[parts.scheme])
        except OSError as exc:
            raise DestinationRefusedError(f"cannot resolve {host} ({type(exc).__name__})") from exc
        for address in addresses:
            self.check_address(host, str(address))


def _resolve(host: str, port: int) -> tuple[Address, ...]:
    """Every address `host` resolves to (a literal address resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return tuple(ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)


def check_token_url(url: str) -> str:
    """An allowlist entry as given, or ValueError: http(s), a host, no credentials or query."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.port == 0:
        raise ValueError(f"{url!r}: expected http(s)://host[:port][/path]")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no user info, query or fragment")
    return url


def token_url_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Whether `url` is one of `allowed` or under one's path, on the same scheme, host, port."""
    try:
        parts = urlsplit(url)
        if parts.username is not None or parts.query or parts.fragment:
            return False
        origin, path = _origin(parts), parts.path.rstrip("/")
        for entry in allowed:
            base = urlsplit(entry)
            prefix = base.path.rstrip("/")
            same_path = path == prefix or path.startswith(prefix + "/")
            if origin == _origin(base) and same_path:
                return True
    except ValueError:  # a port out of range
        return False
    return False
