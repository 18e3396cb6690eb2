"""Where a request's CPU goes: `imagegen serve` under wrk, sampled live by py-spy, stacks sorted
into the parts of the request path, as microseconds of server CPU per request.

    python bench/profile_request.py --model gan-mnist            # /sample n=1, 64 connections
    python bench/profile_request.py --model gan-emoji --seconds 10 --flame /tmp/emoji.svg

py-spy (`pip install py-spy`) samples every Python thread of the server (the event loop and the
batcher's worker) at `--rate` Hz, idle threads left out, so samples / rate is CPU time; each
stack goes to the first part (`PARTS`, checked from the innermost frame outwards) that one of its
frames belongs to. Time inside C (zlib, ONNX Runtime, uvloop's socket writes) counts for the
Python frame that called it. Needs root or ptrace rights over the server. Writes
bench/results/profile-<date>.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from http_bench import Server, cpu_seconds, free_port, start, stop, wrk  # noqa: E402
from machine import machine_info, write_result  # noqa: E402

# (part, pattern on one frame "function (file:line)"), most specific first. A stack's part is that
# of its innermost frame matching any pattern.
PARTS: list[tuple[str, re.Pattern[str]]] = [
    (part, re.compile(pattern))
    for part, pattern in [
        ("inference", r"service/engine/runtime\.py|onnxruntime"),
        ("seed contract (feeds)", r"contract/sampling\.py"),
        ("PNG encoding", r"service/engine/imaging\.py|render \(service/engine/generation"),
        ("metrics", r"prometheus_client|service/metrics\.py"),
        ("access log", r"\(logging/|service/logs\.py"),
        ("sending", r"(^|\.)(send|_send|write)\b.*(httptools_impl|h11_impl|uvloop|transports)"),
        ("parsing (HTTP + query)", r"service/http/params\.py|pydantic|httptools_impl\.py.*(on_|data_received)"
         r"|h11|datastructures\.py|urllib/parse"),
        ("ETag", r"service/http/etag\.py"),
        ("middleware", r"service/http/middleware\.py|service/dataplane/|service/http/delivery\.py"),
        ("batcher + thread hand-off", r"service/engine/batching\.py|concurrent/futures|threading\.py"
         r"|run_in_executor|call_soon_threadsafe|service/engine/generation\.py"),
        ("route + framework (FastAPI/Starlette)",
         r"fastapi/|starlette/|service/http/routers/|service/http/auth\.py|service/http/routing\.py"),
        ("uvicorn request cycle", r"uvicorn/"),
        ("event loop", r"asyncio/|uvloop"),
    ]
]


def part_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for part, pattern in PARTS:
            if pattern.search(frame):
                return part
    return "other"


def read_collapsed(path: Path) -> collections.Counter[str]:
    """py-spy's raw output: 'frame;frame;...;innermost count' per line -> samples per part."""
    parts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            parts[part_of(frames)] += int(count)
    return parts


def profile(model: str, seconds: float, rate: int, connections: int, flame: Path | None) -> dict:
    server = Server("batching", [sys.executable, "-m", "imagegen.cli", "serve", "--port", "{port}",
                                 "--models-dir", os.environ.get("BENCH_MODELS_DIR", str(ROOT / "models"))])
    port = free_port()
    proc = start(server, port)
    path = f"/sample?model={model}&seed={{seed}}"
    try:
        wrk(port, path, connections, 2)  # warm-up
        result: dict = {}
        load = threading.Thread(target=lambda: result.update(wrk(port, path, connections, seconds + 3)))
        cpu0 = cpu_seconds(proc.pid)
        load.start()
        time.sleep(1.5)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "stacks.txt"
            subprocess.run(["py-spy", "record", "--pid", str(proc.pid), "--rate", str(rate), "--duration",
                            str(round(seconds)), "--format", "raw", "--output", str(raw), "--nonblocking"],
                           check=True, capture_output=True)
            if flame is not None:
                flame.write_text(raw.read_text())
            samples = read_collapsed(raw)
        load.join()
        cpu_ms_per_request = (cpu_seconds(proc.pid) - cpu0) * 1e3 / max(result["requests"], 1)
    finally:
        stop(proc)
    # On a loaded machine a thread that is runnable but not running still looks busy to py-spy, so
    # samples give each part's share, and the process's CPU time (from /proc) the total.
    total = sum(samples.values())
    budget = {part: count / total * cpu_ms_per_request * 1e3 for part, count in samples.most_common()}
    sampled_us = total / rate / (result["ok_rps"] * round(seconds)) * 1e6
    return {"model": model, "connections": connections, "rate_hz": rate, "wrk": result,
            "server_cpu_ms_per_request": cpu_ms_per_request, "sampled_us_per_request": sampled_us,
            "samples": dict(samples), "us_per_request": budget}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds sampled")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--flame", type=Path, help="also keep the collapsed stacks here (flamegraph.pl input)")
    args = ap.parse_args(argv)
    out = profile(args.model, args.seconds, args.rate, args.connections, args.flame)
    total = sum(out["us_per_request"].values())
    print(f"{args.model} /sample n=1 @{args.connections}: {out['wrk']['ok_rps']:.0f} req/s, "
          f"p99 {out['wrk']['p99_ms']:.1f} ms, "
          f"server CPU {out['server_cpu_ms_per_request'] * 1e3:.0f} us/req "
          f"(py-spy sees {out['sampled_us_per_request']:.0f}); load average {os.getloadavg()[0]:.1f}")
    for part, us in out["us_per_request"].items():
        print(f"  {part:40} {us:7.0f} us  {us / total:6.1%}")
    path = write_result("profile", {"args": {k: str(v) for k, v in vars(args).items()},
                                    "machine": machine_info(), **out})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
