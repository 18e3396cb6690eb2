"""The client a request comes from: the peer, or behind a trusted proxy the forwarded address."""

from __future__ import annotations

from typing import Any

import pytest

from service.http.client_identity import TrustedProxies
from service.settings import SettingsError, load_settings


def _scope(peer: str, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"client": (peer, 40000), "headers": headers}


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards() -> None:
    proxies = TrustedProxies("")
    assert proxies.client_of(_scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9"


def test_the_port_is_not_part_of_the_client() -> None:
    """A client that reconnects for each retry is still the same client."""
    proxies = TrustedProxies("")
    a = {"client": ("203.0.113.9", 40000), "headers": []}
    b = {"client": ("203.0.113.9", 40001), "headers": []}
    assert proxies.client_of(a) == proxies.client_of(b)


def test_behind_a_trusted_proxy_the_last_untrusted_hop_is_the_client() -> None:
    proxies = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    assert proxies.client_of(_scope("127.0.0.1", "198.51.100.7")) == "198.51.100.7"
    # A client may prepend anything; only what the proxies appended counts.
    assert proxies.client_of(_scope("127.0.0.1", "1.2.3.4, 198.51.100.7, 10.1.2.3")) == "198.51.100.7"
    assert proxies.client_of(_scope("127.0.0.1", "1.2.3.4", "198.51.100.7")) == "198.51.100.7"


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored() -> None:
    proxies = TrustedProxies("127.0.0.1")
    assert proxies.client_of(_scope("203.0.113.9", "198.51.100.7")) == "203.0.113.9"


def test_garbage_or_missing_forwarding_falls_back_to_the_proxy() -> None:
    proxies = TrustedProxies("127.0.0.1")
    assert proxies.client_of(_scope("127.0.0.1", "not-an-ip")) == "127.0.0.1"
    assert proxies.client_of(_scope("127.0.0.1")) == "127.0.0.1"
    assert proxies.client_of({"client": None, "headers": []}) is None


def test_a_bad_trusted_proxies_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="trusted_proxies"):
        load_settings(trusted_proxies="127.0.0.1, nginx")
