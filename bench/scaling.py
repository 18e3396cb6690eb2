"""Scaling: latency and server memory as n grows (1 to the max n), and throughput as
concurrency grows (from the newest bench/results/http-*.json). Writes two plots:

    docs/bench/latency_vs_n.png        docs/bench/throughput_vs_concurrency.png

    python bench/scaling.py [--model gan-mnist] [--reps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from http_bench import Server, free_port, start, stop  # noqa: E402
from machine import RESULTS, machine_info, write_result  # noqa: E402

DOCS = ROOT / "docs" / "bench"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency_vs_n(model: str, reps: int, max_n: int) -> list[dict]:
    port = free_port()
    serve = [sys.executable, "-m", "imagegen.cli", "serve", "--port", "{port}"]
    proc = start(Server("batching", serve), port)
    rows = []
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            n = 1
            while n <= max_n:
                times = []
                for rep in range(reps):
                    t0 = time.perf_counter()
                    r = client.get("/sample", params={"model": model, "seed": 1000 * rep, "n": n})
                    times.append((time.perf_counter() - t0) * 1e3)
                    r.raise_for_status()
                rows.append({"n": n, "p50_ms": statistics.median(times), "max_ms": max(times),
                             "bytes": len(r.content), "server_rss_mib": rss_mib(proc.pid)})
                print(f"n={n:<3} p50 {rows[-1]['p50_ms']:7.1f} ms  max {rows[-1]['max_ms']:7.1f} ms  "
                      f"{rows[-1]['bytes']:7d} B  RSS {rows[-1]['server_rss_mib']:.0f} MiB", flush=True)
                n *= 2
    finally:
        stop(proc)
    return rows


def newest_http_result() -> dict | None:
    files = sorted(RESULTS.glob("http-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def plot(rows_n: list[dict], http: dict | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    DOCS.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [r["n"] for r in rows_n]
    ax.plot(ns, [r["p50_ms"] for r in rows_n], "o-", label="p50 latency (ms)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("images per request (n)")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ax2.plot(ns, [r["server_rss_mib"] for r in rows_n], "s--", color="tab:orange", label="server RSS (MiB)")
    ax2.set_ylabel("server RSS (MiB)")
    fig.legend(loc="upper left")
    ax.set_title("GET /sample: latency and memory vs n")
    fig.tight_layout()
    paths.append(DOCS / "latency_vs_n.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    if http:
        fig, ax = plt.subplots(figsize=(6, 4))
        for server in ("batching", "nobatch", "naive"):
            pts = sorted((r["concurrency"], r.get("ok_rps", r["rps"])) for r in http["rows"]
                         if r["server"] == server and r["route"] == "sample_n1")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=server)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("requests/s (GET /sample, n=1)")
        ax.set_title("Throughput vs concurrency")
        ax.legend()
        fig.tight_layout()
        paths.append(DOCS / "throughput_vs_concurrency.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--max-n", type=int, default=64, help="the server's IMAGEGEN_MAX_N")
    args = ap.parse_args(argv)
    rows = latency_vs_n(args.model, args.reps, args.max_n)
    for p in plot(rows, newest_http_result()):
        print(f"wrote {p}")
    print(f"wrote {write_result('scaling', {'machine': machine_info(), 'latency_vs_n': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
