"""Several replicas on one host: what a Service in front of N pods does, simulated on loopback.

Starts N `imagegen serve` processes on free loopback ports and drives them with a small
round-robin client that retries a failed request on the next replica (GET /sample is
idempotent: an image depends only on model, seed and class). Three checks:

1. identical: the same seed gives byte-identical PNGs from every replica;
2. failover: SIGKILL one replica in the middle of a run; every request still completes, with
   the right bytes, because the client retries it elsewhere (no request is lost);
3. throughput: requests/s through 1 replica and through N, same client, same duration.

    python bench/replicas.py [--replicas 2] [--rounds 3] [--duration 5] [--concurrency 8] [--model gan-mnist]

Writes bench/results/replicas-<time>.json. tests/deploy/test_replicas.py runs checks 1 and 2.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def start_replica(models_dir: Path, cpu_threads: int, log: Path) -> Replica:
    port = free_port()
    command = [sys.executable, "-m", "imagegen.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--models-dir", str(models_dir), "--cpu-threads", str(cpu_threads), "--no-access-log",
               "--workers", "1"]  # a replica is one process: killing it must stop its serving
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    return Replica(port, proc)


def wait_ready(replica: Replica, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            raise RuntimeError(f"replica on port {replica.port} exited with {replica.proc.returncode}")
        try:
            status, _ = request(replica.address, "/readyz", timeout_s=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"replica on port {replica.port} not ready within {timeout_s} s")


@contextmanager
def replicas(
    n: int, model: str, cpu_threads: int = 1, ready_timeout_s: float = 60.0
) -> Iterator[list[Replica]]:
    """N replicas serving one model (copied into a scratch repository), stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="imagegen-replicas-") as scratch:
        models = Path(scratch) / "models"
        shutil.copytree(ROOT / "models" / model, models / model)
        started: list[Replica] = []
        try:
            for i in range(n):
                started.append(start_replica(models, cpu_threads, Path(scratch) / f"replica-{i}.log"))
            for replica in started:
                wait_ready(replica, ready_timeout_s)
            yield started
        except BaseException:
            for i in range(len(started)):
                log = Path(scratch) / f"replica-{i}.log"
                sys.stderr.write(f"--- replica {i} log ---\n{log.read_text(errors='replace')[-2000:]}\n")
            raise
        finally:
            for replica in started:
                if replica.proc.poll() is None:
                    replica.proc.send_signal(signal.SIGTERM)
            for replica in started:
                try:
                    replica.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    replica.proc.kill()
                    replica.proc.wait()


def request(address: tuple[str, int], path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class RoundRobin:
    """Sends each request to the next replica; on a connection error, timeout or 5xx, retries
    on the following one, up to `attempts` tries. Keeps one connection per thread and replica."""

    addresses: list[tuple[str, int]]
    attempts: int = 3
    timeout_s: float = 10.0
    retries: int = 0
    _next: Iterator[int] = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        self._next = itertools.cycle(range(len(self.addresses)))

    def _conn(self, index: int) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        if index not in conns:
            conns[index] = http.client.HTTPConnection(*self.addresses[index], timeout=self.timeout_s)
        return conns[index]

    def _drop(self, index: int) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(index, None)
        if conn is not None:
            conn.close()

    def get(self, path: str) -> bytes:
        with self._lock:
            index = next(self._next)
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                with self._lock:
                    self.retries += 1
            i = (index + attempt) % len(self.addresses)
            try:
                conn = self._conn(i)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status < 500:
                    if response.status != 200:
                        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")  # not retried
                    return body
                last = f"status {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            self._drop(i)
        raise RuntimeError(f"{path}: failed {self.attempts} times, last: {last}")


def sample_path(model: str, seed: int) -> str:
    return f"/sample?model={model}&seed={seed}"


def check_identical(reps: list[Replica], model: str, seeds: range) -> int:
    """Every seed's PNG from every replica; returns how many seeds were compared."""
    for seed in seeds:
        bodies = set()
        for replica in reps:
            status, body = request(replica.address, sample_path(model, seed))
            assert status == 200, (status, body[:200])
            bodies.add(body)
        if len(bodies) != 1:
            raise AssertionError(f"seed {seed}: replicas returned {len(bodies)} different PNGs")
    return len(seeds)


def failover(reps: list[Replica], model: str, requests: int, threads: int, kill_after: int) -> dict:
    """`requests` GETs through the round-robin client from `threads` threads; replica 0 is
    SIGKILLed once `kill_after` have completed, while the threads hold open keep-alive
    connections to it; requests past `kill_after` wait for the kill, so some always meet the
    dead replica. Every answer is compared with the PNG the surviving replica serves."""
    client = RoundRobin([r.address for r in reps], attempts=len(reps) + 1)
    results: dict[int, bytes] = {}
    errors: list[str] = []
    done = threading.Semaphore(0)
    seeds = iter(range(requests))
    seeds_lock = threading.Lock()
    killed = threading.Event()

    def worker() -> None:
        while True:
            with seeds_lock:
                seed = next(seeds, None)
            if seed is None:
                return
            if seed >= kill_after:
                killed.wait(timeout=60)
            try:
                results[seed] = client.get(sample_path(model, seed))
            except Exception as exc:  # counted as lost, reported below
                errors.append(f"seed {seed}: {exc}")
            done.release()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for _ in range(kill_after):
        done.acquire(timeout=60)
    reps[0].proc.kill()  # SIGKILL: no graceful stop, connections reset mid-request
    reps[0].proc.wait(timeout=10)
    killed.set()
    for t in pool:
        t.join(timeout=120)
    survivor = reps[1].address
    wrong = [s for s, body in results.items() if body != request(survivor, sample_path(model, s))[1]]
    return {"requests": requests, "completed": len(results), "lost": errors, "wrong_bytes": wrong,
            "retries": client.retries, "killed_after": kill_after}


def throughput(reps: list[Replica], model: str, duration_s: float, threads: int) -> dict:
    client = RoundRobin([r.address for r in reps])
    counts = [0] * threads
    stop = time.monotonic() + duration_s
    failures: list[str] = []

    def worker(k: int) -> None:
        seed = k * 1_000_000
        while time.monotonic() < stop:
            try:
                client.get(sample_path(model, seed))
                counts[k] += 1
            except Exception as exc:
                failures.append(repr(exc))
            seed += 1

    start = time.monotonic()
    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=duration_s + 60)
    elapsed = time.monotonic() - start
    return {"replicas": len(reps), "requests": sum(counts), "seconds": round(elapsed, 2),
            "rps": round(sum(counts) / elapsed, 1), "failures": len(failures)}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--model", default="gan-mnist")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs per replica count")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--cpu-threads", type=int, default=1, help="ONNX Runtime threads per replica")
    args = parser.parse_args()
    if args.replicas < 2:
        parser.error("--replicas must be at least 2 (the failover check kills one)")

    report: dict = {"model": args.model, "cpu_count": os.cpu_count(), "loadavg_before": loadavg(),
                    "concurrency": args.concurrency, "cpu_threads": args.cpu_threads, "throughput": []}
    with replicas(args.replicas, args.model, args.cpu_threads) as reps:
        report["identical_seeds"] = check_identical(reps, args.model, range(20))
        # Alternated (1, N, 1, N, ...) so a change in the machine's other load hits both alike.
        for _ in range(args.rounds):
            for subset in (reps[:1], reps):
                report["throughput"].append(throughput(subset, args.model, args.duration, args.concurrency))
        for n in (1, len(reps)):
            rps = sorted(t["rps"] for t in report["throughput"] if t["replicas"] == n)
            report[f"median_rps_{n}"] = rps[len(rps) // 2]
        report["failover"] = failover(
            reps, args.model, requests=300, threads=args.concurrency, kill_after=100
        )
    report["loadavg_after"] = loadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("replicas-%Y%m%dT%H%M%SZ.json", time.gmtime())
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    lost = report["failover"]["lost"] or report["failover"]["wrong_bytes"]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
