"""CPU per request of the ASGI app alone: our `/sample` against the fixed-PNG ceiling app.

    python bench/asgi_cost.py --model gan-mnist --requests 20000 --concurrency 64 [--profile out.prof]

Requests are handed to each app directly as ASGI calls (no socket, no uvicorn, no client), 64 at
a time, and the process's CPU time (all threads: the event loop and the inference worker) is
divided by the number of requests. What is left out (uvicorn's parsing and writes, the event
loop's socket work, the client) is the same for both apps, so the difference is exactly what
our app does more than a FastAPI endpoint that returns a fixed PNG. CPU time, not wall time,
so the figure holds on a loaded machine far better than a req/s figure does; rounds alternate
the two apps and the median is reported. `--profile` writes a cProfile of our app's rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from fixed_png_server import build_app as build_fixed_app  # noqa: E402
from fixed_png_server import seed_zero_png  # noqa: E402
from machine import machine_info, write_result  # noqa: E402

from service.app import create_app  # noqa: E402
from service.http.delivery import CLIENT_GONE  # noqa: E402
from service.settings import Settings  # noqa: E402


def batch_totals(metrics: Any, model: str) -> tuple[float, float]:
    """(runs, images) so far for `model`, from the service's own batch-size histogram."""
    runs = images = 0.0
    for metric in metrics.batch_size.collect():
        for sample in metric.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith("_count"):
                runs = sample.value
            elif sample.name.endswith("_sum"):
                images = sample.value
    return runs, images


def _never_gone() -> bool:
    return False


def scope_for(path: str, query: bytes, port: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"asgi-cost"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", port),  # a connection of its own: admission remembers clients
        # what `imagegen serve`'s protocol puts in every scope (service/http/protocols.py)
        "extensions": {CLIENT_GONE: _never_gone},
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: Any, path: str, query: bytes, port: int) -> int:
    """One request; returns the response's status. receive() never returns a disconnect while
    the response is pending (like a client that waits), so it blocks until the response is sent."""
    done = asyncio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        if not done.is_set():
            await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body"):
            done.set()

    await app(scope_for(path, query, port), receive, send)
    done.set()
    return status


async def round_cost(app: Any, path: str, queries: list[bytes], concurrency: int) -> float:
    """CPU microseconds per request for one pass over `queries`, `concurrency` in flight."""
    it = iter(queries)
    statuses: list[int] = []

    async def worker(port: int) -> None:
        for q in it:
            statuses.append(await call(app, path, q, port))

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(20000 + i) for i in range(concurrency)))
    cpu = time.process_time() - cpu0
    bad = [s for s in statuses if s != 200]
    if bad:
        raise SystemExit(f"{len(bad)} requests answered {sorted(set(bad))}, not 200")
    return cpu / len(queries) * 1e6


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(models_dir=args.models_dir, access_log=False)
    ours = create_app(settings)
    fixed = build_fixed_app(seed_zero_png(args.models_dir / args.model))
    family, dataset = args.model.split("-", 1)
    async with ours.router.lifespan_context(ours):
        registry = ours.state.ctx.registry
        while not registry.loaded:  # the lifespan started loading every model
            await asyncio.sleep(0.1)
        n = args.requests
        rounds: dict[str, list[float]] = {"ours": [], "fixed": []}
        mean_batch: list[float] = []
        profiler = cProfile.Profile() if args.profile else None
        for r in range(args.rounds + 1):  # round 0 warms both apps up and is not counted
            queries = [f"model={family}&dataset={dataset}&seed={r * n + i}".encode() for i in range(n)]
            if profiler and r:
                profiler.enable()
            runs0, images0 = batch_totals(ours.state.ctx.metrics, args.model)
            ours_us = await round_cost(ours, "/sample", queries, args.concurrency)
            runs1, images1 = batch_totals(ours.state.ctx.metrics, args.model)
            if profiler and r:
                profiler.disable()
            fixed_us = await round_cost(fixed, "/sample", queries, args.concurrency)
            batch = (images1 - images0) / max(runs1 - runs0, 1)
            if r:
                mean_batch.append(batch)
                rounds["ours"].append(ours_us)
                rounds["fixed"].append(fixed_us)
                print(
                    f"round {r}: ours {ours_us:.0f} us/request (mean batch {batch:.1f}), "
                    f"fixed PNG {fixed_us:.0f} us/request",
                    flush=True,
                )
        if profiler:
            profiler.dump_stats(args.profile)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "machine": machine_info(),
        "load_average": os.getloadavg()[0],
        "model": args.model,
        "requests_per_round": args.requests,
        "concurrency": args.concurrency,
        "rounds_us_per_request": rounds,
        "median_us_per_request": med,
        "mean_batch_per_round": mean_batch,
        "extra_us_over_fixed": med["ours"] - med["fixed"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default="")
    ap.add_argument("--save", action="store_true", help="write bench/results/asgi-cost-<time>.json")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    med = result["median_us_per_request"]
    print(
        f"{args.model}: ours {med['ours']:.0f} us/request, fixed PNG {med['fixed']:.0f}; "
        f"ours costs {result['extra_us_over_fixed']:.0f} us more (load average {result['load_average']:.1f})"
    )
    if args.save:
        print(write_result("asgi-cost", result))


if __name__ == "__main__":
    main()
