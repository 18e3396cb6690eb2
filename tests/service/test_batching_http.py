"""Dynamic batching seen from outside: hundreds of concurrent requests merge into runs of more
than one image (per /metrics), and every image equals the one the same request gets alone."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.service.conftest import Server


def _batch_histogram(text: str, model: str) -> tuple[float, float]:
    """(batches, batches of exactly one image) for a model, from the Prometheus text."""
    count = float(
        re.search(rf'^imagegen_batch_size_count{{model="{re.escape(model)}"}} (\S+)$', text, re.M).group(1)
    )
    ones = float(
        re.search(
            rf'^imagegen_batch_size_bucket{{le="1.0",model="{re.escape(model)}"}} (\S+)$', text, re.M
        ).group(1)
    )
    return count, ones


async def _concurrent(url: str, model: str, seeds: list[int]) -> list[bytes]:
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as c:
        responses = await asyncio.gather(
            *(c.get("/sample", params={"model": model, "seed": s}) for s in seeds)
        )
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    return [r.content for r in responses]


def test_concurrent_requests_are_batched_and_identical(
    server: Server, client: httpx.Client, conditional: dict
) -> None:
    model = conditional["id"]
    before = _batch_histogram(client.get("/metrics").text, model)
    seeds = list(range(5000, 5300))
    batched = asyncio.run(_concurrent(server.url, model, seeds))
    after = _batch_histogram(client.get("/metrics").text, model)
    runs, single_runs = after[0] - before[0], after[1] - before[1]
    assert runs < len(seeds), "300 concurrent requests should share runs"
    assert runs - single_runs >= 1, "at least one run should hold more than one image"
    # Unbatched: one request at a time (each its own run), same pixels byte for byte.
    for seed, data in list(zip(seeds, batched, strict=True))[::15]:
        alone = client.get("/sample", params={"model": model, "seed": seed}).content
        assert alone == data, f"seed {seed}"
