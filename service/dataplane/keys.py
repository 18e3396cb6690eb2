"""The API key check that every transport applies (HTTP's route guard, gRPC's servicer), so a
request is let in the same way whatever carried it."""

from __future__ import annotations

import hmac

from service.settings import Settings


def key_matches(settings: Settings, given: str | None) -> bool:
    """True when no key is configured, or `given` is the key (compared in constant time)."""
    secret = settings.api_key
    if secret is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
