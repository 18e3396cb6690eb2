"""Pipelining benchmark (issue "safe to expose", row 4): one connection sends `--requests`
pipelined `GET /healthz` at once; the server's RSS is sampled every 20 ms while it lasts.

Before the bound, uvicorn queued every pipelined request it had read (~6 KB each) and read more
after each response: 100,000 took the RSS from 439 to 1,057 MiB. Now at most 16 wait behind the
one being served, and the connection closes once those are answered. Prints the answers the
client got and the RSS; writes bench/results/pipelining-*.json.

    python bench/pipelining.py
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from http_bench import Server as ServerSpec  # noqa: E402
from http_bench import free_port, start, stop  # noqa: E402
from machine import machine_info, write_result  # noqa: E402
from memory import rss_mib  # noqa: E402


def flood(port: int, requests: int, pid: int) -> dict:
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    peak = rss_mib(pid)
    done = threading.Event()

    def send() -> None:
        try:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
        except OSError:
            pass
        done.set()

    threading.Thread(target=send, daemon=True).start()
    answers = b""
    started = time.perf_counter()
    conn.setblocking(False)
    while True:
        peak = max(peak, rss_mib(pid))
        try:
            chunk = conn.recv(1 << 16)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        except OSError:
            break
        if not chunk:
            break
        answers += chunk
    conn.close()
    return {
        "sent": requests,
        "answered": answers.count(b"HTTP/1.1 200"),
        "seconds": time.perf_counter() - started,
        "peak_mib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    args = ap.parse_args(argv)
    spec = ServerSpec("imagegen", [sys.executable, "-m", "imagegen.cli", "serve", "--port", "{port}",
                                   "--workers", "1", "--no-access-log"])  # fmt: skip
    port = free_port()
    proc = start(spec, port)
    try:
        before = rss_mib(proc.pid)
        row = flood(port, args.requests, proc.pid)
        time.sleep(2)
        row |= {"before_mib": before, "after_mib": rss_mib(proc.pid)}
    finally:
        stop(proc)
    print(
        f"{row['sent']} pipelined requests: {row['answered']} answered in {row['seconds']:.1f} s; RSS "
        f"{row['before_mib']:.0f} -> peak {row['peak_mib']:.0f} -> after {row['after_mib']:.0f} MiB"
    )
    path = write_result("pipelining", {"machine": machine_info(), "loadavg": os.getloadavg(), "row": row})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
