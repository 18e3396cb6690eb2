"""HTTP benchmark: `imagegen serve` with dynamic batching on and off, beside a naive server.

Each server runs as its own process on loopback; load comes from `wrk` (Debian package `wrk`),
a separate process, with `bench/wrk_report.lua` drawing a fresh seed per request and printing
p50/p95/p99. Prints a table and writes `bench/results/http-<date>.json`.

    python bench/http_bench.py                      # everything (about 10 minutes on 2 cores)
    python bench/http_bench.py --quick              # concurrency 64 only, /sample n=1
    python bench/http_bench.py --duration 10 --concurrency 1,16,64,256
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info, write_result  # noqa: E402

LUA = ROOT / "bench" / "wrk_report.lua"


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server: Server, port: int) -> subprocess.Popen:
    env = {**os.environ, **server.env, "IMAGEGEN_PORT": str(port), "IMAGEGEN_HOST": "127.0.0.1"}
    cmd = [c.replace("{port}", str(port)) for c in server.cmd]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{server.name} did not become ready")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (comparable on a machine shared with other jobs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, path: str, concurrency: int, duration: float, body_file: str | None = None) -> dict:
    env = {**os.environ, "WRK_PATH": path}
    if body_file:
        env["WRK_BODY_FILE"] = body_file
    cmd = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
        "-s", str(LUA), f"http://127.0.0.1:{port}{path.replace('{seed}', '0')}",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    res = json.loads(line[len("WRK_JSON "):])
    # wrk counts refusals (503 when a queue is full) as requests; only 2xx/3xx are served work.
    res["ok_rps"] = (res["requests"] - res["errors_status"]) / res["duration_s"]
    return res


def bulk_body(model: str, count: int, fmt: str) -> str:
    body = {"model": model, "seeds": list(range(1000, 1000 + count)), "format": fmt}
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gan-mnist", help="model id to load (default gan-mnist)")
    ap.add_argument("--label-model", default="label-mnist")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--concurrency", default="1,16,64,256")
    ap.add_argument("--bulk", type=int, default=1024, help="images per POST /v1/images request")
    ap.add_argument("--bulk-concurrency", type=int, default=2,
                    help="concurrent bulk requests (x --bulk must stay within IMAGEGEN_QUEUE_LIMIT)")
    ap.add_argument("--quick", action="store_true", help="only /sample n=1 at concurrency 64")
    ap.add_argument("--servers", default="batching,nobatch,naive,naive_ort")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2

    concurrencies = [64] if args.quick else [int(c) for c in args.concurrency.split(",")]
    serve = [sys.executable, "-m", "imagegen.cli", "serve", "--port", "{port}"]
    # The naive server holds only the one model it was written for, so it is given the same id.
    naive = [sys.executable, str(ROOT / "bench" / "naive_server.py"),
             "--model", args.model, "--port", "{port}"]
    naive_ort = [*naive, "--engine", "ort"]
    servers = {
        "batching": Server("batching", serve),
        "naive_ort": Server("naive_ort", naive_ort),
        "nobatch": Server("nobatch", serve, {"IMAGEGEN_MAX_BATCH": "1"}),
        "naive": Server("naive", naive),
    }
    routes = [("sample_n1", f"/sample?model={args.model}&seed={{seed}}")]
    if not args.quick:
        routes += [
            ("sample_n64", f"/sample?model={args.model}&seed={{seed}}&n=64"),
            ("generate_n1", f"/generate?model={args.model}&digit=3&seed={{seed}}"),
            ("generate_label_n1", f"/generate?model={args.label_model}&digit=3"),
        ]

    rows = []
    for name in args.servers.split(","):
        server = servers[name]
        port = free_port()
        proc = start(server, port)
        try:
            for route, path in routes:
                if name.startswith("naive") and route == "generate_label_n1":
                    continue
                for conc in concurrencies:
                    if route == "sample_n64" and conc > 64:
                        continue  # 256 x 64 images in flight exceeds any sane queue on 2 cores
                    cpu0 = cpu_seconds(proc.pid)
                    res = wrk(port, path, conc, args.duration)
                    cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1e3
                    res["server_cpu_ms_per_request"] = cpu_ms / max(res["requests"], 1)
                    rows.append({"server": name, "route": route, "concurrency": conc, **res})
                    print(f"{name:9} {route:18} c={conc:<4} {res['ok_rps']:9.1f} ok req/s  "
                          f"p50 {res['p50_ms']:7.1f}  p95 {res['p95_ms']:7.1f}  p99 {res['p99_ms']:7.1f} ms"
                          f"  cpu {res['server_cpu_ms_per_request']:.2f} ms/req"
                          f"  non-2xx {res['errors_status']}", flush=True)
            if not name.startswith("naive") and not args.quick:
                for fmt in ("npy", "png_base64"):
                    body = bulk_body(args.model, args.bulk, fmt)
                    try:
                        res = wrk(port, "/v1/images", args.bulk_concurrency, args.duration, body_file=body)
                    finally:
                        os.unlink(body)
                    images_s = res["ok_rps"] * args.bulk
                    conc = args.bulk_concurrency
                    rows.append({"server": name, "route": f"v1_images_{fmt}", "concurrency": conc,
                                 "images_per_request": args.bulk, "images_per_s": images_s, **res})
                    print(f"{name:9} v1/images {fmt:10} c={conc:<4} {images_s:9.0f} images/s  "
                          f"p99 {res['p99_ms']:7.1f} ms  non-2xx {res['errors_status']}", flush=True)
        finally:
            stop(proc)

    summary = summarize(rows)
    for line in summary["lines"]:
        print(line)
    path = write_result("http", {"args": vars(args), "machine": machine_info(), "rows": rows,
                                 "summary": summary})
    print(f"wrote {path}")
    return 0


def summarize(rows: list[dict]) -> dict:
    """The issue's target: /sample n=1 at concurrency 64, batching vs naive."""
    def pick(server: str) -> dict | None:
        return next((r for r in rows if r["server"] == server and r["route"] == "sample_n1"
                     and r["concurrency"] == 64), None)

    ours, base = pick("batching"), pick("naive")
    lines = []
    out: dict = {"lines": lines}
    if ours and base:
        ratio = ours["ok_rps"] / base["ok_rps"] if base["ok_rps"] else float("inf")
        out.update(ratio_vs_naive=ratio, p99_ms=ours["p99_ms"])
        lines.append(f"/sample n=1 @64: {ours['ok_rps']:.0f} req/s vs naive {base['ok_rps']:.0f} "
                     f"= {ratio:.1f}x (target >= 3x); p99 {ours['p99_ms']:.1f} ms (target < 100 ms)")
    return out


if __name__ == "__main__":
    sys.exit(main())
