"""Retry-storm benchmark (issue 26, item 5; rows 7 and 8): a storm of clients that reconnect for
each retry, directly and through the shipped nginx (`--via-nginx`).

One `imagegen serve` on loopback; with `--via-nginx` also a real nginx from
deploy/nginx/templates/default.conf.template (as tests/deploy/proxy.py runs it: TLS with a
generated certificate), the service told `IMAGEGEN_TRUSTED_PROXIES=127.0.0.1`. Each client is its
own loopback address (Linux routes all of 127/8 to loopback): the storm's clients 127.1.x.y,
the probe 127.0.0.2, the well-behaved client 127.0.0.3. Phases, back to back:

1. **alone**: the probe (`--other`, n=1, one request after another) and the well-behaved client
   (`--other`, n=4, honouring Retry-After): their unloaded p50 / p99.
   The well-behaved client asks `--other` for 4 images at a time, from its own address.
2. **unloaded**: `--unloaded-connections` clients asking `--model` for n=`--n`: images/s.
3. **storm**: `--connections` clients asking `--model` for n=`--n`, each on a new connection for
   every request, retrying at once after a 503 (ignoring Retry-After), with the probe and the
   well-behaved client running again.

Targets: storm images/s >= 0.8x unloaded; probe p50 <= 3x alone; through nginx, the well-behaved
client's p99 <= 3x alone.

    python bench/retry_storm.py                   # direct, 256 clients, 6 s per phase
    python bench/retry_storm.py --via-nginx       # the same through nginx
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from http_bench import Server as ServerSpec  # noqa: E402
from http_bench import free_port, start, stop  # noqa: E402
from machine import machine_info, write_result  # noqa: E402
from overload import Tally, _fmt, _p, _read_response  # noqa: E402

PROBE_SOURCE, CALM_SOURCE = "127.0.0.2", "127.0.0.3"


def storm_source(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


async def _client(
    target: tuple[int, ssl.SSLContext | None], source: str, path: str, stop_at: float, tally: Tally, mode: str
) -> None:
    """mode "storm": a new connection per request, the next at once; "probe": one keep-alive
    connection, the next at once; "calm": keep-alive, sleeping Retry-After after a 503."""
    port, tls = target
    reader = writer = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    ssl=tls,
                    local_addr=(source, 0),
                    server_hostname="127.0.0.1" if tls else None,
                )
            path_now = path.replace("{seed}", str(random.randrange(0, 2**31)))
            started = time.perf_counter()
            writer.write(f"GET {path_now} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            status, headers, keep_alive = await _read_response(reader)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - started
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.001)
            continue
        retry_after = float(headers.get(b"retry-after", b"0") or 0)
        if status == 200:
            tally.ok += 1
            tally.ok_latencies.append(elapsed)
        elif status in (503, 429):
            tally.refused += 1
            tally.refusal_latencies.append(elapsed)
            tally.retry_after.append(retry_after)
        else:
            tally.other[status] = tally.other.get(status, 0) + 1
        if mode == "storm" or not keep_alive:
            writer.close()
            reader = writer = None
        if mode == "calm" and status in (503, 429):
            await asyncio.sleep(retry_after)
    if writer is not None:
        writer.close()


def _role(
    target: tuple[int, bool], role: tuple[str, str, int, str], start_at: float, duration: float, out: mp.Queue
) -> None:
    name, path, clients, mode = role
    port, tls_cert = target
    tls = ssl.create_default_context(cafile=tls_cert) if tls_cert else None

    async def main() -> Tally:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = time.perf_counter() + duration
        tallies = [Tally() for _ in range(clients)]
        sources = {"probe": [PROBE_SOURCE], "calm": [CALM_SOURCE]}.get(mode) or [
            storm_source(i) for i in range(clients)
        ]
        await asyncio.gather(
            *(
                _client((port, tls), sources[i % len(sources)], path, stop_at, t, mode)
                for i, t in enumerate(tallies)
            )
        )
        total = Tally()
        for t in tallies:
            total.merge(t)
        return total

    out.put(asyncio.run(main()))


def run_phase(
    target: tuple[int, str | None], roles: list[tuple[str, str, int, str]], duration: float, n: int
) -> dict:
    ctx = mp.get_context("fork")
    start_at = time.time() + 0.5
    queues = {r[0]: ctx.Queue() for r in roles}
    procs = [ctx.Process(target=_role, args=(target, r, start_at, duration, queues[r[0]])) for r in roles]
    for p in procs:
        p.start()
    tallies = {name: q.get(timeout=duration + 120) for name, q in queues.items()}
    for p in procs:
        p.join(timeout=10)
    out: dict = {"loadavg_1m": os.getloadavg()[0]}
    for name, t in tallies.items():
        images = n if name == "storm" else 1
        out[name] = {
            "ok": t.ok, "refused": t.refused, "other": {str(k): v for k, v in t.other.items()},
            "errors": t.errors, "images_per_s": t.ok * images / duration,
            "p50_ms": _p(t.ok_latencies, 0.5), "p99_ms": _p(t.ok_latencies, 0.99),
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--via-nginx", action="store_true", help="through the shipped nginx template")
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--other", default="label-mnist")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--connections", type=int, default=256, help="storm clients (each its own address)")
    ap.add_argument("--unloaded-connections", type=int, default=4)
    ap.add_argument("--duration", type=float, default=6.0)
    args = ap.parse_args(argv)

    env = {"IMAGEGEN_TRUSTED_PROXIES": "127.0.0.1"} if args.via_nginx else {}
    spec = ServerSpec(
        "imagegen",
        [sys.executable, "-m", "imagegen.cli", "serve", "--port", "{port}", "--no-access-log"],
        env,
    )
    port = free_port()
    proc = start(spec, port)
    nginx = None
    target: tuple[int, str | None] = (port, None)
    try:
        if args.via_nginx:
            from tests.deploy.proxy import Nginx, first_start

            work = Path(tempfile.mkdtemp(prefix="retry-storm-"))
            secrets = first_start(work)
            nginx = Nginx.start(work / "nginx", f"127.0.0.1:{port}", secrets.tls_dir)
            target = (nginx.port, str(secrets.cert))
        storm = f"/sample?model={args.model}&seed={{seed}}&n={args.n}"
        probe = f"/sample?model={args.other}&seed={{seed}}"
        calm = f"/sample?model={args.other}&seed={{seed}}&n=4"  # honours Retry-After
        run_phase(target, [("warm", storm, 2, "probe"), ("probe", probe, 1, "probe")], 1.0, args.n)
        observers = [("probe", probe, 1, "probe"), ("calm", calm, 1, "calm")]
        unloaded = [("storm", storm, args.unloaded_connections, "probe")]
        stormed = [("storm", storm, args.connections, "storm"), *observers]
        phases = {
            name: run_phase(target, roles, args.duration, args.n)
            for name, roles in (("alone", observers), ("unloaded", unloaded), ("storm", stormed))
        }
    finally:
        if nginx is not None:
            nginx.stop()
        stop(proc)
    for name, phase in phases.items():
        print(f"{name}: {phase}")
    a, u, s = phases["alone"], phases["unloaded"], phases["storm"]
    summary = {
        "goodput_ratio": s["storm"]["images_per_s"] / max(u["storm"]["images_per_s"], 1e-9),
        "probe_p50_ratio": (s["probe"]["p50_ms"] or float("inf")) / (a["probe"]["p50_ms"] or 1e-9),
        "calm_p99_ratio": (s["calm"]["p99_ms"] or float("inf")) / (a["calm"]["p99_ms"] or 1e-9),
    }
    how = "through nginx" if args.via_nginx else "direct"
    print(f"{how}: goodput {_fmt(summary['goodput_ratio'], '.2f')}x unloaded (target >= 0.8)")
    print(
        f"  {args.other} p50 {_fmt(a['probe']['p50_ms'])} -> {_fmt(s['probe']['p50_ms'])} ms "
        f"= {_fmt(summary['probe_p50_ratio'])}x (target <= 3)"
    )
    print(
        f"  well-behaved p99 {_fmt(a['calm']['p99_ms'])} -> {_fmt(s['calm']['p99_ms'])} ms "
        f"= {_fmt(summary['calm_p99_ratio'])}x (target <= 3 through nginx); load {os.getloadavg()[0]:.1f}"
    )
    path = write_result("retry-storm-nginx" if args.via_nginx else "retry-storm", {
        "args": vars(args), "machine": machine_info(), "phases": phases, "summary": summary,
    })  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
