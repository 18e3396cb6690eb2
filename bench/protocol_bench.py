"""The Open Inference Protocol side by side (issue "every core"): `POST /v2/models/<m>/infer` with
JSON tensors, with binary tensors (the extension tritonclient uses), and gRPC `ModelInfer`, on
our server (the default workers and `--workers 1`) and Seldon MLServer 1.7 serving the same ONNX
file with adaptive batching (bench/mlserver_server.py; its own venv, `--mlserver-venv`).

The body is the issue's: `z` FP32 [1, latent_dim] and `label` INT64 [1]. HTTP load is wrk (64
connections, 1 thread); gRPC load is an asyncio client process (GRPC_PROCESSES) with 64 RPCs in
flight over 4 connections (grpcio's own, from this venv: it shares the machine, so gRPC figures
are bounded by it as well).
Runs alternate servers over `--rounds`; medians are reported. Before measuring, both servers'
images for the same z are compared. MLServer 1.7 has no binary tensor extension (checked: its
JSON parser rejects the body), so that row is ours alone.

    python bench/protocol_bench.py                      # gan-mnist, 2 rounds of 5 s
    python bench/protocol_bench.py --model gan-emoji --rounds 3 --mlserver-workers 0,1

Prints a table and the ratios against the targets (JSON >= 2x MLServer with p99 < 100 ms, binary
>= 3x, gRPC >= 2x); writes bench/results/protocol-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from http_bench import Server, cpu_seconds, free_port, start, stop, wrk  # noqa: E402
from machine import machine_info, write_result  # noqa: E402

GRPC_CONNECTIONS = 4  # per load process
GRPC_PROCESSES = 1  # two measured lower on 2 cores (they take the server's CPU)
TARGETS = {"json": 2.0, "binary": 3.0, "grpc": 2.0, "json_p99_ms": 100.0}


def request_tensors(latent_dim: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.random.default_rng(7).standard_normal((1, latent_dim)).astype(np.float32)
    return z, np.array([3], dtype=np.int64)


def json_body(z: np.ndarray, label: np.ndarray) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "z", "datatype": "FP32", "shape": list(z.shape), "data": z.ravel().tolist()},
                {"name": "label", "datatype": "INT64", "shape": list(label.shape), "data": label.tolist()},
            ]
        }
    ).encode()


def binary_body(z: np.ndarray, label: np.ndarray) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "z",
                    "datatype": "FP32",
                    "shape": list(z.shape),
                    "parameters": {"binary_data_size": z.nbytes},
                },
                {
                    "name": "label",
                    "datatype": "INT64",
                    "shape": list(label.shape),
                    "parameters": {"binary_data_size": label.nbytes},
                },
            ],
            "outputs": [{"name": "image", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + z.tobytes() + label.tobytes(), len(header)


def write_temp(data: bytes) -> str:
    fd, path = tempfile.mkstemp(suffix=".body")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def run_wrk(port: int, model: str, body_file: str, duration: float, header_length: int | None = None) -> dict:
    if header_length is not None:
        os.environ["WRK_HEADER_LENGTH"] = str(header_length)
        os.environ["WRK_CONTENT_TYPE"] = "application/octet-stream"
    try:
        return wrk(port, f"/v2/models/{model}/infer", 64, duration, body_file=body_file)
    finally:
        os.environ.pop("WRK_HEADER_LENGTH", None)
        os.environ.pop("WRK_CONTENT_TYPE", None)


def grpc_load(target: str, model: str, z: np.ndarray, label: np.ndarray, duration: float) -> dict:
    """The gRPC load from GRPC_PROCESSES processes at once, their calls and latencies pooled."""
    import multiprocessing

    args = [(target, model, z, label, duration, 64 // GRPC_PROCESSES)] * GRPC_PROCESSES
    with multiprocessing.get_context("spawn").Pool(GRPC_PROCESSES) as pool:
        parts = pool.starmap(_grpc_process, args)
    latencies = [t for part in parts for t in part["latencies"]]
    elapsed = max(part["elapsed"] for part in parts)
    return {
        "ok_rps": len(latencies) / elapsed,
        "p99_ms": float(np.percentile(latencies, 99)) * 1000,
        "errors": sum(part["errors"] for part in parts),
        "processes": GRPC_PROCESSES,
    }


def _grpc_process(
    target: str, model: str, z: np.ndarray, label: np.ndarray, duration: float, in_flight: int
) -> dict:
    return asyncio.run(_grpc_calls(target, model, z, label, duration, in_flight))


async def _grpc_calls(
    target: str, model: str, z: np.ndarray, label: np.ndarray, duration: float, in_flight: int
) -> dict:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="z", datatype="FP32", shape=list(z.shape))
    request.inputs.add(name="label", datatype="INT64", shape=list(label.shape))
    request.raw_input_contents.extend([z.tobytes(), label.tobytes()])
    latencies: list[float] = []
    errors = 0
    # connections with in_flight / GRPC_CONNECTIONS RPCs each, as wrk's 64 connections spread over
    # a server's workers (the kernel hands each connection to one worker)
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(GRPC_CONNECTIONS)]
    stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels]
    try:
        for stub in stubs:
            await stub.ModelInfer(request, timeout=30)  # warm the connections
        stop_at = time.perf_counter() + duration

        async def loop(stub: Any) -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    await stub.ModelInfer(request, timeout=30)
                    latencies.append(time.perf_counter() - t)
                except grpc.aio.AioRpcError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(stubs[i % len(stubs)]) for i in range(in_flight)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    return {"latencies": latencies, "elapsed": elapsed, "errors": errors}


def infer_json(port: int, model: str, z: np.ndarray, label: np.ndarray) -> np.ndarray:
    r = httpx.post(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        content=json_body(z, label),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    return np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mlserver-venv", default=os.environ.get("MLSERVER_VENV", "/work/mlsvenv"))
    ap.add_argument("--mlserver-workers", default="0", help="MLServer parallel_workers to try (comma list)")
    args = ap.parse_args(argv)
    manifest = json.loads((args.models_dir / args.model / "manifest.json").read_text())
    z, label = request_tensors(manifest["latent_dim"])
    json_file = write_temp(json_body(z, label))
    binary, header_length = binary_body(z, label)
    binary_file = write_temp(binary)

    servers: dict[str, tuple[Server, int, int]] = {}
    for name, workers in (("ours", []), ("ours-w1", ["--workers", "1"])):
        http, grpc_port = free_port(), free_port()
        cmd = [
            sys.executable,
            "-m",
            "imagegen.cli",
            "serve",
            "--port",
            str(http),
            "--grpc-port",
            str(grpc_port),
            "--models-dir",
            str(args.models_dir),
            "--no-access-log",
            *workers,
        ]
        servers[name] = (Server(name, cmd), http, grpc_port)
    for w in args.mlserver_workers.split(","):
        http, grpc_port = free_port(), free_port()
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "mlserver_server.py"),
            "--model-dir",
            str(args.models_dir / args.model),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc_port),
            "--parallel-workers",
            w,
            "--mlserver-venv",
            args.mlserver_venv,
        ]
        servers[f"mlserver-pw{w}"] = (
            Server(f"mlserver-pw{w}", cmd, ready_path="/v2/health/ready"),
            http,
            grpc_port,
        )

    runs: list[dict] = []
    images: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    for rnd in range(args.rounds):
        for name, (spec, http, grpc_port) in servers.items():
            if name in failed:
                continue
            try:
                proc = start(spec, http)
            except RuntimeError as exc:  # MLServer 1.7.1's parallel workers crash on start here
                failed[name] = str(exc).splitlines()[-1][:300]
                print(f"{name} did not start: {failed[name]}", flush=True)
                continue
            try:
                try:
                    images.setdefault(name, infer_json(http, args.model, z, label))
                except (KeyError, ValueError, httpx.HTTPError) as exc:  # up, but it cannot infer
                    failed[name] = f"started but did not infer: {exc!r}"[:300]
                    print(f"{name}: {failed[name]}", flush=True)
                    continue
                paths = {"json": (json_file, None)}
                if name.startswith("ours"):
                    paths["binary"] = (binary_file, header_length)
                for path, (body, length) in paths.items():
                    cpu = cpu_seconds(proc.pid)
                    res = run_wrk(http, args.model, body, args.duration, length)
                    res["cpu_ms_per_request"] = 1000 * (cpu_seconds(proc.pid) - cpu) / max(1, res["requests"])
                    runs.append({"round": rnd, "server": name, "path": path, **res})
                    print(
                        f"round {rnd} {name:14} {path:6} {res['ok_rps']:7.0f} req/s  "
                        f"p99 {res['p99_ms']:6.1f} ms",
                        flush=True,
                    )
                res = grpc_load(f"127.0.0.1:{grpc_port}", args.model, z, label, args.duration)
                runs.append({"round": rnd, "server": name, "path": "grpc", **res})
                print(
                    f"round {rnd} {name:14} grpc   {res['ok_rps']:7.0f} req/s  p99 {res['p99_ms']:6.1f} ms",
                    flush=True,
                )
            finally:
                stop(proc)
    summary = summarize(runs)
    summary["max_abs_difference"] = {
        n: float(np.abs(im - images["ours-w1"]).max()) for n, im in images.items()
    }
    print(f"largest difference from ours-w1's image for the same z: {summary['max_abs_difference']}")
    path = write_result(
        "protocol",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "machine": machine_info(),
            "loadavg": os.getloadavg(),
            "runs": runs,
            "did_not_start": failed,
            "summary": summary,
        },
    )
    print(f"wrote {path}")
    return 0


def summarize(runs: list[dict]) -> dict:
    def med(server: str, path: str, key: str) -> float | None:
        values = [r[key] for r in runs if r["server"] == server and r["path"] == path]
        return statistics.median(values) if values else None

    servers = sorted({r["server"] for r in runs})
    mls = [s for s in servers if s.startswith("mlserver")]
    out: dict = {}
    print("\n| path | " + " | ".join(servers) + " | best ours / best MLServer | target |")
    print("|---|" + "---|" * (len(servers) + 2))
    for path in ("json", "binary", "grpc"):
        cells = []
        for s in servers:
            rps, p99 = med(s, path, "ok_rps"), med(s, path, "p99_ms")
            cells.append("-" if rps is None else f"{rps:,.0f} (p99 {p99:.1f} ms)")
        ours = max((med(s, path, "ok_rps") or 0) for s in servers if s.startswith("ours"))
        theirs = max((med(s, "json" if path == "binary" else path, "ok_rps") or 0) for s in mls) if mls else 0
        ratio = ours / theirs if theirs else float("nan")
        out[path] = {"ours_rps": ours, "mlserver_rps": theirs, "ratio": ratio}
        note = " (vs MLServer's JSON: it has no binary tensors)" if path == "binary" else ""
        print(f"| {path} | " + " | ".join(cells) + f" | {ratio:.2f}x{note} | >= {TARGETS[path]}x |")
    return out


if __name__ == "__main__":
    sys.exit(main())
