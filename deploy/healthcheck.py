"""Container health check: exit 0 when the service answers GET /healthz with 2xx, else 1.

Standard library only, so the images need neither curl nor wget. Docker (HEALTHCHECK) and
compose (healthcheck.test) both run it inside the container; the port follows IMAGEGEN_PORT.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("IMAGEGEN_PORT", "8000")
    url = os.environ.get("IMAGEGEN_HEALTH_URL") or f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: {url}: HTTP {response.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
