"""Memory benchmark (issue 16, row 5): the server's RSS warm, during a burst of clients that do not
read their large responses, and after the burst.

One `imagegen serve` on loopback per configuration (`--config NAME=ENV,...`; default: the server
as shipped, and the same with glibc's arenas unbounded, i.e. without the Dockerfile's
MALLOC_ARENA_MAX=2), each measured the same way, back to back in one run:

1. **warm**: after a few hundred ordinary requests (n=1..64 PNGs, JSON, NPY) to every model asked.
2. **burst**: `--clients` connections each send a large request (POST /v1/images as NPY, or a
   large upscaled PNG grid) and never read the answer, while `--readers` clients keep asking for
   large responses and reading them; the peak RSS is sampled every 50 ms.
3. **after**: the non-reading clients close; after `--settle` seconds of idleness, the RSS.

Target: RSS after a burst within 1.3x of warm. Prints a table, writes bench/results/memory-*.json.

    python bench/memory.py
    python bench/memory.py --config shipped= --config arenas8=MALLOC_ARENA_MAX=8
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from http_bench import Server as ServerSpec  # noqa: E402
from http_bench import free_port, start, stop  # noqa: E402
from machine import machine_info, write_result  # noqa: E402

MIB = 1 << 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def warm(url: str, models: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(40):
            for model in models:
                client.get("/sample", params={"model": model, "seed": i, "n": 1 + i % 64})
                client.get("/sample", params={"model": model, "seed": i, "n": 4, "format": "json"})
                client.post(
                    "/v1/images", json={"model": model, "seeds": list(range(i, i + 32)), "format": "npy"}
                )


def big_requests(model: str, port: int) -> list[bytes]:
    """Large responses: NPY of 1024 images at scale 4 (~51 MB for 28x28) and PNG grids at scale 16."""
    body = json.dumps({"model": model, "seeds": list(range(1024)), "scale": 4, "format": "npy"}).encode()
    post = (
        f"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    get = f"GET /sample?model={model}&n=64&scale=16 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    return [post, get]


def burst(pid: int, url: str, port: int, model: str, clients: int, readers: int, hold_s: float) -> dict:
    """Open `clients` non-reading connections (and `readers` reading ones) and sample the RSS."""
    requests = big_requests(model, port)
    conns, statuses = [], {}
    for i in range(clients):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # read nothing, buffer little
        conn.sendall(requests[i % len(requests)])
        conns.append(conn)
    stop_at = time.monotonic() + hold_s

    def reader() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < stop_at:
                r = client.post(
                    "/v1/images",
                    json={"model": model, "seeds": list(range(512)), "scale": 4, "format": "npy"},
                )
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    for t in threads:
        t.start()
    peak = 0.0
    while time.monotonic() < stop_at:
        peak = max(peak, rss_mib(pid))
        time.sleep(0.05)
    for t in threads:
        t.join()
    # What the non-reading clients got so far: a status line, or nothing (still being sent).
    seen: dict[str, int] = {}
    for conn in conns:
        conn.settimeout(0.2)
        try:
            head = conn.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError:
            head = "nothing"
        key = head.split(" ")[1] if head.startswith("HTTP/") else "nothing"
        seen[key] = seen.get(key, 0) + 1
        conn.close()
    return {"peak_mib": peak, "reader_statuses": statuses, "non_reader_statuses": seen}


def measure(name: str, env: dict[str, str], args: argparse.Namespace) -> dict:
    spec = ServerSpec(
        name,
        [sys.executable, "-m", "imagegen.cli", "serve", "--port", "{port}"]
        + ["--workers", "1", "--no-access-log"],
        env,
    )
    port = free_port()
    proc = start(spec, port)
    url = f"http://127.0.0.1:{port}"
    try:
        start_mib = rss_mib(proc.pid)
        warm(url, args.models)
        time.sleep(args.settle)
        warm_mib = rss_mib(proc.pid)
        result = burst(proc.pid, url, port, args.models[0], args.clients, args.readers, args.hold)
        time.sleep(args.settle)
        after_mib = rss_mib(proc.pid)
        warm(url, args.models)  # ordinary traffic again: does memory stay down?
        time.sleep(args.settle)
        after_traffic_mib = rss_mib(proc.pid)
    finally:
        stop(proc)
    row = {
        "config": name,
        "env": env,
        "start_mib": start_mib,
        "warm_mib": warm_mib,
        **result,
        "after_mib": after_mib,
        "after_traffic_mib": after_traffic_mib,
        "after_over_warm": after_mib / warm_mib,
    }
    print(
        f"{name:10} warm {warm_mib:7.0f} MiB  burst peak {result['peak_mib']:7.0f} MiB  after "
        f"{after_mib:7.0f} MiB ({row['after_over_warm']:.2f}x warm)  after more traffic "
        f"{after_traffic_mib:7.0f} MiB  non-readers got {result['non_reader_statuses']}  "
        f"readers got {result['reader_statuses']}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--models", default="gan-mnist,label-mnist", help="models warmed; the first takes the burst"
    )
    ap.add_argument("--clients", type=int, default=40, help="clients that do not read")
    ap.add_argument("--readers", type=int, default=2, help="clients asking for large responses and reading")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds the burst lasts")
    ap.add_argument("--settle", type=float, default=3.0, help="idle seconds before reading the RSS")
    ap.add_argument(
        "--config",
        action="append",
        metavar="NAME=VAR=VALUE,...",
        help="a server configuration: a name and its environment (repeatable)",
    )
    args = ap.parse_args(argv)
    args.models = args.models.split(",")
    configs = args.config or ["shipped=MALLOC_ARENA_MAX=2", "arenas-unbounded="]
    rows = []
    for config in configs:
        name, _, env_text = config.partition("=")
        env = dict(item.split("=", 1) for item in env_text.split(",") if item)
        rows.append(measure(name, env, args))
    path = write_result(
        "memory", {"args": vars(args), "machine": machine_info(), "loadavg": os.getloadavg(), "rows": rows}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
