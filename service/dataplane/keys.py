"""The API key check that every transport applies (HTTP's route guard, gRPC's servicer), so a
request is let in the same way whatever carried it, and the limit on a client's failed key
checks (6,000 wrong admin keys in a row were each compared, with no limit and no trace of the
route they tried)."""

from __future__ import annotations

import hmac
import math
import time

from service.errors import ServiceError
from service.settings import Settings


def key_matches(settings: Settings, given: str | None) -> bool:
    """True when no key is configured, or `given` is the key (compared in constant time)."""
    secret = settings.api_key
    if secret is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())


# A client (service/http/client_identity.py) that fails this many key checks within the window is
# refused without a check until the window ends: a guess at a 32-byte key is hopeless anyway; the
# limit keeps a guesser from costing the server and fills no log.
MAX_KEY_FAILURES = 20
KEY_FAILURE_WINDOW_S = 60.0
_MAX_TRACKED = 10_000


class KeyFailures:
    """Failed key checks per client, in fixed windows of KEY_FAILURE_WINDOW_S seconds."""

    def __init__(self, limit: int = MAX_KEY_FAILURES, window_s: float = KEY_FAILURE_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[object, tuple[float, int]] = {}

    def blocked_for(self, client: object) -> int | None:
        """Whole seconds until `client` may try a key again, or None when it may now."""
        if not self.limit:
            return None
        entry = self._windows.get(client)
        if entry is None:
            return None
        started, failures = entry
        left = self.window_s - (time.monotonic() - started)
        if left <= 0:
            del self._windows[client]
            return None
        return max(1, math.ceil(left)) if failures >= self.limit else None

    def failed(self, client: object) -> None:
        if not self.limit:
            return
        now = time.monotonic()
        entry = self._windows.get(client)
        if entry is None or now - entry[0] >= self.window_s:
            if len(self._windows) >= _MAX_TRACKED:
                self._windows = {c: e for c, e in self._windows.items() if now - e[0] < self.window_s}
            entry = (now, 0)
        self._windows[client] = (entry[0], entry[1] + 1)

    def admit(self, client: object) -> None:
        """Refuse a client that failed too many checks in this window, before checking its key."""
        wait = self.blocked_for(client)
        if wait is not None:
            raise TooManyKeyFailures(
                f"too many failed key checks from this client; retry in {wait} s",
                headers={"Retry-After": str(wait)},
                retry_after_ms=wait * 1000,
            )


class TooManyKeyFailures(ServiceError):
    status, code = 429, "too_many_key_failures"
