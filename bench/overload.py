"""Overload benchmark (issue 16, row 7): does the server keep its goodput when clients retry at once?

One `imagegen serve` on loopback (default settings), three measurements back to back in one run:

1. **probe alone**: one client asking another model (`--other`, n=1) for images one after another:
   its unloaded p50.
2. **unloaded**: `--unloaded-connections` clients asking `--model` for n=`--n` images each, as
   fast as they are answered: the successful images/s the server manages without refusals.
3. **storm**: `--connections` clients asking `--model` for n=`--n` images, each sending its next
   request the moment a 503 comes back (ignoring Retry-After, as a hostile or naive client does),
   while the probe runs again: successful images/s and the probe's p50 under the storm.

Targets: storm images/s >= 80% of unloaded; probe p50 under the storm <= 3x its p50 alone.

The load comes from a raw HTTP/1.1 client on asyncio streams (uvloop when installed), one process
per role, so the load generator costs little CPU next to the server on a 2-core machine.

    python bench/overload.py                      # 256 connections, n=64, 8 s per phase
    python bench/overload.py --duration 4 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from http_bench import Server as ServerSpec  # noqa: E402
from http_bench import cpu_seconds, free_port, start, stop  # noqa: E402
from machine import machine_info, write_result  # noqa: E402


@dataclass
class Tally:
    """What one role's clients saw."""

    ok: int = 0  # 200 responses
    refused: int = 0  # 503 responses
    other: dict[int, int] = field(default_factory=dict)  # any other status
    errors: int = 0  # connection errors (reset, refused, closed mid-response)
    ok_latencies: list[float] = field(default_factory=list)  # seconds, 200s only
    refusal_latencies: list[float] = field(default_factory=list)
    retry_after: list[float] = field(default_factory=list)  # Retry-After values of the 503s seen

    def merge(self, other: Tally) -> None:
        self.ok += other.ok
        self.refused += other.refused
        self.errors += other.errors
        for status, count in other.other.items():
            self.other[status] = self.other.get(status, 0) + count
        self.ok_latencies += other.ok_latencies
        self.refusal_latencies += other.refusal_latencies
        self.retry_after += other.retry_after


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bool]:
    """(status, headers, keep_alive) of one response; its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    if length:
        await reader.readexactly(length)
    return status, headers, headers.get(b"connection", b"").lower() != b"close"


async def _client(port: int, path: str, stop_at: float, tally: Tally) -> None:
    """One connection's loop: a request, its response, at once the next (retry at once on 503)."""
    reader = writer = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            seed = random.randrange(0, 2**31)
            request = f"GET {path.replace('{seed}', str(seed))} HTTP/1.1\r\nHost: bench\r\n\r\n"
            started = time.perf_counter()
            writer.write(request.encode())
            status, headers, keep_alive = await _read_response(reader)
            elapsed = time.perf_counter() - started
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.001)  # a closed port would otherwise spin
            continue
        if status == 200:
            tally.ok += 1
            tally.ok_latencies.append(elapsed)
        elif status == 503:
            tally.refused += 1
            tally.refusal_latencies.append(elapsed)
            if b"retry-after" in headers:
                tally.retry_after.append(float(headers[b"retry-after"]))
        else:
            tally.other[status] = tally.other.get(status, 0) + 1
        if not keep_alive:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def _role(port: int, path: str, connections: int, start_at: float, duration: float, out: mp.Queue) -> None:
    """A process running `connections` clients from `start_at` (wall clock) for `duration` seconds."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> Tally:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = time.perf_counter() + duration
        tallies = [Tally() for _ in range(connections)]
        await asyncio.gather(*(_client(port, path, stop_at, t) for t in tallies))
        total = Tally()
        for t in tallies:
            total.merge(t)
        return total

    out.put(asyncio.run(main()))


def run_roles(port: int, roles: list[tuple[str, str, int]], duration: float) -> dict[str, Tally]:
    """Run each (name, path, connections) role in its own process, all starting together."""
    ctx = mp.get_context("fork")
    start_at = time.time() + 0.5
    procs, queues = {}, {}
    for name, path, connections in roles:
        queues[name] = ctx.Queue()
        procs[name] = ctx.Process(
            target=_role, args=(port, path, connections, start_at, duration, queues[name])
        )
        procs[name].start()
    results = {name: queues[name].get(timeout=duration + 120) for name in procs}
    for proc in procs.values():
        proc.join(timeout=10)
    return results


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def summarize(tally: Tally, duration: float, n: int) -> dict:
    return {
        "ok": tally.ok,
        "refused": tally.refused,
        "other_statuses": {str(k): v for k, v in tally.other.items()},
        "connection_errors": tally.errors,
        "images_per_s": tally.ok * n / duration,
        "ok_p50_ms": _p(tally.ok_latencies, 0.50),
        "ok_p99_ms": _p(tally.ok_latencies, 0.99),
        "refusal_p50_ms": _p(tally.refusal_latencies, 0.50),
        "refusal_p99_ms": _p(tally.refusal_latencies, 0.99),
        "retry_after_min": min(tally.retry_after) if tally.retry_after else None,
        "retry_after_max": max(tally.retry_after) if tally.retry_after else None,
        "retry_after_mean": statistics.fmean(tally.retry_after) if tally.retry_after else None,
        "refusals_per_s": tally.refused / duration,
    }


def run_phase(pid: int, port: int, roles: list[tuple[str, str, int]], duration: float, n: int) -> dict:
    cpu0 = cpu_seconds(pid)
    tallies = run_roles(port, roles, duration)
    phase: dict = {"server_cpu_s": cpu_seconds(pid) - cpu0, "loadavg_1m": os.getloadavg()[0]}
    for role, tally in tallies.items():
        phase[role] = summarize(tally, duration, n if role == "storm" else 1)
    return phase


def describe(phase: dict) -> str:
    parts = [f"server CPU {phase['server_cpu_s']:.1f} s, load {phase['loadavg_1m']:.1f}"]
    for role in ("storm", "probe"):
        if role in phase:
            r = phase[role]
            parts.append(
                f"{role}: {r['ok']} ok = {r['images_per_s']:.0f} images/s, p50 {_fmt(r['ok_p50_ms'])} ms, "
                f"p99 {_fmt(r['ok_p99_ms'])} ms, {r['refused']} x 503 (p50 {_fmt(r['refusal_p50_ms'])} ms, "
                f"Retry-After {_fmt(r['retry_after_min'], 'g')}..{_fmt(r['retry_after_max'], 'g')} s), "
                f"other {r['other_statuses']}, conn errors {r['connection_errors']}"
            )
    return "; ".join(parts)


def ratios(phases: dict) -> dict:
    unloaded = phases["unloaded"]["storm"]["images_per_s"]
    alone = phases["probe_alone"]["probe"]["ok_p50_ms"]
    stormed = phases["storm"]["probe"]["ok_p50_ms"]
    return {
        "goodput_ratio": phases["storm"]["storm"]["images_per_s"] / unloaded if unloaded else 0.0,
        "probe_p50_ratio": stormed / alone if alone and stormed else float("inf"),
    }


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gan-mnist", help="the model the storm asks for")
    ap.add_argument("--other", default="label-mnist", help="the model the probe asks for")
    ap.add_argument("--n", type=int, default=64, help="images per storm request")
    ap.add_argument("--connections", type=int, default=256, help="storm connections")
    ap.add_argument(
        "--unloaded-connections",
        type=int,
        default=4,
        help="connections of the unloaded phase (few enough that nothing is refused)",
    )
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per phase")
    ap.add_argument(
        "--repeat", type=int, default=3, help="rounds of (probe alone, unloaded, storm); medians are reported"
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra server environment (e.g. IMAGEGEN_QUEUE_LIMIT=4096)",
    )
    args = ap.parse_args(argv)

    env = dict(item.split("=", 1) for item in args.env)
    spec = ServerSpec(
        "imagegen",
        [sys.executable, "-m", "imagegen.cli", "serve", "--port", "{port}", "--no-access-log"],
        env,
    )
    storm_path = f"/sample?model={args.model}&seed={{seed}}&n={args.n}"
    probe_path = f"/sample?model={args.other}&seed={{seed}}"
    port = free_port()
    proc = start(spec, port)
    rounds: list[dict[str, dict]] = []
    try:
        run_roles(port, [("warm", storm_path, 2), ("warm2", probe_path, 1)], 1.0)  # first runs, caches
        for round_no in range(args.repeat):
            phases: dict[str, dict] = {}
            for phase, roles in (
                ("probe_alone", [("probe", probe_path, 1)]),
                ("unloaded", [("storm", storm_path, args.unloaded_connections)]),
                ("storm", [("storm", storm_path, args.connections), ("probe", probe_path, 1)]),
            ):
                phases[phase] = run_phase(proc.pid, port, roles, args.duration, args.n)
                print(f"round {round_no + 1} {phase}: {describe(phases[phase])}", flush=True)
            phases["summary"] = ratios(phases)
            print(
                f"round {round_no + 1}: goodput {_fmt(phases['summary']['goodput_ratio'], '.0%')}, "
                f"probe p50 x{_fmt(phases['summary']['probe_p50_ratio'], '.1f')}",
                flush=True,
            )
            rounds.append(phases)
    finally:
        stop(proc)

    goodput = statistics.median(r["summary"]["goodput_ratio"] for r in rounds)
    probe = statistics.median(r["summary"]["probe_p50_ratio"] for r in rounds)
    unloaded = statistics.median(r["unloaded"]["storm"]["images_per_s"] for r in rounds)
    stormed = statistics.median(r["storm"]["storm"]["images_per_s"] for r in rounds)
    alone_p50 = statistics.median(r["probe_alone"]["probe"]["ok_p50_ms"] for r in rounds)
    storm_p50 = statistics.median(r["storm"]["probe"]["ok_p50_ms"] for r in rounds)
    summary = {
        "goodput_ratio": goodput,
        "probe_p50_ratio": probe,
        "unloaded_images_per_s": unloaded,
        "storm_images_per_s": stormed,
        "probe_alone_p50_ms": alone_p50,
        "probe_storm_p50_ms": storm_p50,
    }
    print(f"medians over {len(rounds)} rounds (each: probe alone, unloaded, storm, back to back):")
    print(
        f"  goodput under the storm: {stormed:.0f} / {unloaded:.0f} images/s; per-round ratio "
        f"{goodput:.0%} of unloaded (target >= 80%)"
    )
    print(
        f"  {args.other} p50: {alone_p50:.1f} ms alone, {storm_p50:.1f} ms under the storm; per-round "
        f"ratio {probe:.1f}x (target <= 3x)"
    )
    load = os.getloadavg()
    path = write_result(
        "overload",
        {
            "args": vars(args),
            "machine": machine_info(),
            "loadavg": load,
            "rounds": rounds,
            "summary": summary,
        },
    )
    print(f"load average at the end {load[0]:.1f} (other jobs share the machine); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
