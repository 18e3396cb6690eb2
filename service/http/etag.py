"""Strong ETags for GET image responses, and If-None-Match matching."""

from __future__ import annotations

import hashlib


def image_etag(
    model_id: str,
    version: int,
    provider: str,
    seed: int,
    class_index: int | None,
    n: int,
    scale: int,
    fmt: str,
) -> str:
    """Everything the bytes depend on. The provider is part of it: CUDA and CPU agree only within
    float tolerance, so their PNG bytes may differ, and a cache must not mix them."""
    klass = "auto" if class_index is None else str(class_index)
    key = f"{model_id}|{version}|{provider}|{seed}|{klass}|{n}|{scale}|{fmt}"
    return '"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
