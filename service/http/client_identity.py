"""Who a request comes from: the TCP peer's address, or, behind a trusted proxy, the address the
proxy forwarded (`X-Forwarded-For`, which the shipped nginx sets to its own peer).

The early-retry hold and the admin-key failure limit key on it. Keyed on the connection (address
and port), a client that reconnected for each retry escaped the hold, and behind nginx, whose 32
upstream connections carry everyone's requests, a storm's hold fell on innocent clients that
happened to share a connection with it. A forwarded header from a peer that is not trusted is
ignored: any client can send one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` is believed (IPs or CIDRs, comma-separated)."""

    def __init__(self, spec: str) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
        )
        self._verdicts: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        verdict = self._verdicts.get(address)
        if verdict is None:
            verdict = _is_within(address, self.networks)
            if len(self._verdicts) < 4096:  # peers are few (proxies, clients); forged hops are not kept
                self._verdicts[address] = verdict
        return verdict

    def client_of(self, scope: dict[str, Any]) -> str | None:
        """The client's address for this ASGI scope (None when the server gave no peer)."""
        peer = scope.get("client")
        if not peer:
            return None
        address = str(peer[0])
        if not self.networks or not self.trusts(address):
            return address
        return self.forwarded_client(_forwarded_for(scope["headers"])) or address

    def forwarded_client(self, forwarded: str) -> str | None:
        """The last hop of an X-Forwarded-For list that is not a trusted proxy (a client can
        prepend anything; only what our proxies appended is believed)."""
        for hop in reversed(forwarded.split(",")):
            hop = hop.strip()
            if not hop:
                continue
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return None
            if not self.trusts(hop):
                return hop
        return None


def _forwarded_for(headers: list[tuple[bytes, bytes]]) -> str:
    values = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    return ",".join(values)[:1024]


def _is_within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
