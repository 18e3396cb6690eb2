"""HTTP benchmark: `imagegen serve` with dynamic batching on and off, beside its peers: naive
FastAPI servers (torch / ONNX Runtime per request), LitServe with its own batching on the same
ONNX file (bench/litserve_server.py), and the ceiling, a FastAPI endpoint returning a fixed PNG
on the same server stack (bench/fixed_png_server.py).

Each server runs as its own process on loopback; load comes from `wrk` (Debian package `wrk`),
a separate process, with `bench/wrk_report.lua` drawing a fresh seed per request and printing
p50/p95/p99. Prints a table and writes `bench/results/http-<date>.json`.

    python bench/http_bench.py                      # everything (about 10 minutes on 2 cores)
    python bench/http_bench.py --quick              # concurrency 64 only, /sample n=1
    python bench/http_bench.py --duration 10 --concurrency 1,16,64,256
    python bench/http_bench.py --compare            # the issue's ratios, peers side by side (below)

`--compare` keeps our server up, starts each model's peers only while that model is measured and
alternates them, `--repeats` rounds of short wrk runs, so each ratio comes from figures measured
back to back under the same load: /sample n=1 at
64 connections, ours vs LitServe per model and ours vs the fixed PNG; bulk POST /v1/images as npy
vs the engine alone (ONNX Runtime in this process, the server's batch and threads). It first
checks that LitServe's PNGs are byte-identical to ours for a few seeds. Medians are reported,
with the machine's load average.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import statistics
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
    ready_path: str = "/readyz"
    cwd: Path | None = None  # default: this checkout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server: Server, port: int) -> subprocess.Popen:
    env = {**os.environ, **server.env, "IMAGEGEN_PORT": str(port), "IMAGEGEN_HOST": "127.0.0.1"}
    cmd = [c.replace("{port}", str(port)) for c in server.cmd]
    # Its own process group, so stop() also ends the children a server spawns (LitServe's workers).
    proc = subprocess.Popen(cmd, env=env, cwd=server.cwd or ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{server.ready_path}", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{server.name} did not become ready")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it and its children), SIGKILL after 20 s."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
    _signal_group(proc, signal.SIGKILL)  # children that outlived their parent's SIGTERM


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server: every process of its process group (`imagegen serve
    --workers N`'s workers, LitServe's), from /proc (comparable on a machine shared with other jobs)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pid:  # pgrp: start() gives each server a session of its own
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(port: int, path: str, concurrency: int, duration: float, body_file: str | None = None,
        body_template: str | None = None) -> dict:
    """`body_template`: POST this JSON body, "{seed}" in it drawn afresh per request."""
    env = {**os.environ, "WRK_PATH": path}
    if body_file:
        env["WRK_BODY_FILE"] = body_file
    if body_template:
        env["WRK_BODY_TEMPLATE"] = body_template
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
    ap.add_argument("--servers", default="batching,nobatch,naive,naive_ort,litserve,fixed_png")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--compare", action="store_true", help="the issue's ratios, peers alternated (see above)")
    ap.add_argument("--compare-models", default="gan-mnist,gan-emoji")
    ap.add_argument("--repeats", type=int, default=3, help="--compare: rounds of alternated runs")
    ap.add_argument("--before", type=Path, default=None,
                    help="--compare: also serve the first model from this checkout (e.g. a git worktree "
                         "of an earlier commit), with the same models: before vs after in one run")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    if args.compare:
        return compare(args)

    concurrencies = [64] if args.quick else [int(c) for c in args.concurrency.split(",")]
    servers = peer_servers(args.model, args.models_dir)
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
                if name in ONLY_SAMPLE_N1 and route != "sample_n1":
                    continue
                for conc in concurrencies:
                    if route == "sample_n64" and conc > 64:
                        continue  # 256 x 64 images in flight exceeds any sane queue on 2 cores
                    cpu0 = cpu_seconds(proc.pid)
                    res = sample_wrk(name, port, path, conc, args.duration)
                    cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1e3
                    res["server_cpu_ms_per_request"] = cpu_ms / max(res["requests"], 1)
                    rows.append({"server": name, "route": route, "concurrency": conc, **res})
                    print(f"{name:9} {route:18} c={conc:<4} {res['ok_rps']:9.1f} ok req/s  "
                          f"p50 {res['p50_ms']:7.1f}  p95 {res['p95_ms']:7.1f}  p99 {res['p99_ms']:7.1f} ms"
                          f"  cpu {res['server_cpu_ms_per_request']:.2f} ms/req"
                          f"  non-2xx {res['errors_status']}", flush=True)
            if name in ("batching", "nobatch") and not args.quick:
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


# Peers that answer only `/sample` of one model without parameters (LitServe: POST with a JSON seed).
ONLY_SAMPLE_N1 = ("litserve", "fixed_png")
LITSERVE_BODY = '{"seed": {seed}}'


def peer_servers(model: str, models_dir: Path) -> dict[str, Server]:
    """Every server of the table; the peers hold only `model` (the one they were written for)."""
    serve = [sys.executable, "-m", "imagegen.cli", "serve", "--port", "{port}",
             "--models-dir", str(models_dir)]
    one_model = ["--model", model, "--models-dir", str(models_dir), "--port", "{port}"]
    naive = [sys.executable, str(ROOT / "bench" / "naive_server.py"), *one_model]
    return {
        "batching": Server("batching", serve),
        "naive_ort": Server("naive_ort", [*naive, "--engine", "ort"]),
        "nobatch": Server("nobatch", serve, {"IMAGEGEN_MAX_BATCH": "1"}),
        "workers1": Server("workers1", serve, {"IMAGEGEN_WORKERS": "1"}),
        "naive": Server("naive", naive),
        "litserve": Server("litserve", [sys.executable, str(ROOT / "bench" / "litserve_server.py"),
                                        *one_model], ready_path="/health"),
        "litserve2": Server("litserve2", [sys.executable, str(ROOT / "bench" / "litserve_server.py"),
                                          *one_model, "--workers", "2"], ready_path="/health"),
        "fixed_png": Server("fixed_png", [sys.executable, str(ROOT / "bench" / "fixed_png_server.py"),
                                          *one_model]),
    }


def sample_wrk(server: str, port: int, path: str, concurrency: int, duration: float) -> dict:
    """wrk on /sample: LitServe's route takes the seed in a JSON body, the others in the query."""
    if server.startswith("litserve"):
        return wrk(port, "/sample", concurrency, duration, body_template=LITSERVE_BODY)
    return wrk(port, path, concurrency, duration)


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


# --compare: the ratios, each measured back to back under the same load.

TARGETS = {"vs_fixed_png": 0.6, "fixed_png_p99_ms": 50.0, "vs_litserve": 1.5, "litserve_p99_ms": 100.0,
           "bulk_vs_engine": 0.7, "vs_workers1": 1.6}
PNG_CHECK_SEEDS = (0, 1, 42, 2**31 - 1)


def check_same_pngs(ours: int, litserve: int, model: str) -> dict:
    """LitServe's answer for a few seeds against ours: the same bytes (and so the same pixels)."""
    import numpy as np
    from PIL import Image

    same_bytes = same_pixels = True
    for seed in PNG_CHECK_SEEDS:
        a = httpx.get(f"http://127.0.0.1:{ours}/sample?model={model}&seed={seed}", timeout=30).content
        b = httpx.post(f"http://127.0.0.1:{litserve}/sample", json={"seed": seed}, timeout=30).content
        same_bytes &= a == b
        same_pixels &= bool(np.array_equal(np.asarray(Image.open(io.BytesIO(a))),
                                           np.asarray(Image.open(io.BytesIO(b)))))
    return {"seeds": list(PNG_CHECK_SEEDS), "same_bytes": same_bytes, "same_pixels": same_pixels}


def engine_images_per_s(models_dir: Path, model: str, batch: int, threads: int, seconds: float) -> dict:
    """ONNX Runtime alone in this process, as bench/engine.py runs it: images/s at `batch`, both the
    mean over `seconds` (what a server could sustain) and bench/engine.py's best-of call."""
    from engine import time_it

    from imagegen.contract.manifest import Manifest
    from imagegen.contract.sampling import build_feeds, default_labels
    from service.engine.runtime import ModelRuntime, RuntimeOptions

    model_dir = models_dir / model
    manifest = Manifest.read(model_dir)
    options = RuntimeOptions(provider="cpu", strict=False, cpu_threads=threads)
    runtime = ModelRuntime.load(manifest.onnx_path(model_dir), manifest, options)
    seeds = list(range(batch))
    feeds = build_feeds(manifest, seeds, default_labels(seeds, manifest.num_classes))
    runtime.run(feeds)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runtime.run(feeds)
        runs += 1
    mean = runs * batch / (time.perf_counter() - started)
    best = batch / time_it(lambda: runtime.run(feeds), min(seconds, 1.0))
    return {"batch": batch, "threads": threads, "mean_images_per_s": mean, "best_images_per_s": best}


def compare(args: argparse.Namespace) -> int:
    """Our server stays up; each model's peers (LitServe; for the first model also the fixed-PNG
    ceiling and --before) are up only while that model is measured: idle LitServe workers poll
    and would otherwise take CPU from whichever pair is being measured (11 of them took over a
    core in one trial)."""
    models = args.compare_models.split(",")
    ceiling_model = models[0]
    ours_server = peer_servers(ceiling_model, args.models_dir)["batching"]
    threads = max(1, (os.cpu_count() or 2) - 1)  # the server's default ONNX Runtime threads
    batch = 64  # the server's default max_batch: the size of the runs a bulk request becomes
    runs: list[dict] = []
    checks: dict[str, dict] = {}
    ours_proc = start(ours_server, ours := free_port())
    try:
        for model in models:
            peers = {f"litserve:{model}": peer_servers(model, args.models_dir)["litserve"],
                     # LitServe's best configuration is measured: one worker or two
                     f"litserve2:{model}": peer_servers(model, args.models_dir)["litserve2"],
                     # ours runs the default worker count (one per core): the single process beside it
                     "workers1": peer_servers(model, args.models_dir)["workers1"]}
            if model == ceiling_model:
                peers["fixed_png"] = peer_servers(model, args.models_dir)["fixed_png"]
                if args.before:
                    # `python -m` puts the working directory first on sys.path: that checkout's code runs
                    peers["before"] = Server("before", ours_server.cmd, cwd=args.before.resolve())
            procs = {"ours": (ours_proc, ours)}
            # LitServe's idle workers poll and take CPU from whichever server is measured: each is
            # up only for its own runs; the others stay up
            polling = {name: server for name, server in peers.items() if name.startswith("litserve")}
            try:
                for name, server in peers.items():
                    if name not in polling:
                        procs[name] = (start(server, port := free_port()), port)
                names = ["ours", *peers]
                for rnd in range(args.repeats):
                    for name in names[::-1] if rnd % 2 else names:
                        if name in polling:
                            procs[name] = (start(polling[name], port := free_port()), port)
                        try:
                            if name == f"litserve:{model}" and model not in checks:
                                checks[model] = check_same_pngs(ours, procs[name][1], model)
                                print(f"LitServe PNGs vs ours for {model}, seeds {list(PNG_CHECK_SEEDS)}: "
                                      f"{checks[model]}", flush=True)
                            runs.append(_sample_round(procs[name], name, model, rnd, args.duration))
                        finally:
                            if name in polling:
                                stop(procs.pop(name)[0])
            finally:
                for name, (proc, _) in procs.items():
                    if name != "ours":
                        stop(proc)
        for rnd in range(args.repeats):
            for step in (["bulk", "engine"] if rnd % 2 == 0 else ["engine", "bulk"]):
                if step == "engine":
                    res = engine_images_per_s(args.models_dir, ceiling_model, batch, threads, args.duration)
                    runs.append({"round": rnd, "server": "engine", "model": ceiling_model, **res})
                    print(f"round {rnd} engine b={batch} threads={threads}: {res['mean_images_per_s']:.0f} "
                          f"images/s mean, {res['best_images_per_s']:.0f} best", flush=True)
                    continue
                body = bulk_body(ceiling_model, args.bulk, "npy")
                try:
                    res = wrk(ours, "/v1/images", args.bulk_concurrency, args.duration, body_file=body)
                finally:
                    os.unlink(body)
                res["images_per_s"] = res["ok_rps"] * args.bulk
                runs.append({"round": rnd, "server": "ours_bulk_npy", "model": ceiling_model,
                             "images_per_request": args.bulk, **res})
                print(f"round {rnd} bulk npy x{args.bulk} c={args.bulk_concurrency}: "
                      f"{res['images_per_s']:.0f} images/s  p99 {res['p99_ms']:.1f} ms", flush=True)
    finally:
        stop(ours_proc)
    summary = compare_summary(runs, models, ceiling_model)
    for line in summary["lines"]:
        print(line)
    path = write_result("compare", {"args": {k: str(v) for k, v in vars(args).items()},
                                    "machine": machine_info(), "png_checks": checks, "runs": runs,
                                    "summary": summary})
    print(f"wrote {path}")
    return 0


def _sample_round(proc_port: tuple[subprocess.Popen, int], name: str, model: str, rnd: int,
                  duration: float) -> dict:
    """One wrk run of /sample n=1 at 64 connections against one server, with its CPU per request."""
    proc, port = proc_port
    cpu0 = cpu_seconds(proc.pid)
    res = sample_wrk(name.split(":")[0], port, f"/sample?model={model}&seed={{seed}}", 64, duration)
    res["server_cpu_ms_per_request"] = (cpu_seconds(proc.pid) - cpu0) * 1e3 / max(res["requests"], 1)
    print(f"round {rnd} {model:10} {name:20} {res['ok_rps']:8.0f} req/s  p99 {res['p99_ms']:6.1f} ms  "
          f"non-2xx {res['errors_status']}  load {os.getloadavg()[0]:.1f}", flush=True)
    return {"round": rnd, "server": name.split(":")[0], "model": model,
            "load_average": os.getloadavg()[0], **res}


def _or_below(value: float) -> float:
    """NaN (a server that was not measured) sorts below any figure."""
    return -1.0 if value != value else value


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def compare_summary(runs: list[dict], models: list[str], ceiling_model: str) -> dict:
    """Medians over the rounds, the ratios and which targets hold."""
    def med(server: str, model: str, key: str) -> float:
        return _median([r[key] for r in runs if r["server"] == server and r["model"] == model])

    lines: list[str] = []
    out: dict = {"lines": lines, "targets": TARGETS, "models": {}}
    load = _median([r["load_average"] for r in runs if "load_average" in r])
    out["median_load_average"] = load
    for model in models:
        ours, ours_p99 = med("ours", model, "ok_rps"), med("ours", model, "p99_ms")
        # LitServe's best of one and two workers
        best = max(("litserve", "litserve2"), key=lambda s: _or_below(med(s, model, "ok_rps")))
        lit, lit_p99 = med(best, model, "ok_rps"), med(best, model, "p99_ms")
        row = {"ours_rps": ours, "ours_p99_ms": ours_p99, "litserve_rps": lit, "litserve_p99_ms": lit_p99,
               "litserve_best": best, "litserve1_rps": med("litserve", model, "ok_rps"),
               "litserve2_rps": med("litserve2", model, "ok_rps"),
               "vs_litserve": ours / lit,
               "ours_cpu_ms_per_request": med("ours", model, "server_cpu_ms_per_request")}
        holds = row["vs_litserve"] >= TARGETS["vs_litserve"] and ours_p99 < TARGETS["litserve_p99_ms"]
        lines.append(f"{model} /sample n=1 @64: ours {ours:.0f} req/s (p99 {ours_p99:.1f} ms) vs LitServe "
                     f"{lit:.0f} (p99 {lit_p99:.1f} ms) = {row['vs_litserve']:.2f}x "
                     f"(target >= 1.5x, p99 < 100 ms: {'holds' if holds else 'missed'})")
        if model == ceiling_model:
            ceiling, ceiling_p99 = med("fixed_png", model, "ok_rps"), med("fixed_png", model, "p99_ms")
            row.update(fixed_png_rps=ceiling, fixed_png_p99_ms=ceiling_p99, vs_fixed_png=ours / ceiling)
            before = med("before", model, "ok_rps")
            if before == before:  # not NaN: --before was given
                row.update(before_rps=before, before_p99_ms=med("before", model, "p99_ms"),
                           before_cpu_ms_per_request=med("before", model, "server_cpu_ms_per_request"))
                lines.append(f"{model} /sample n=1 @64: ours {ours:.0f} req/s "
                             f"({row['ours_cpu_ms_per_request']:.3f} ms CPU a request) vs the --before "
                             f"checkout {before:.0f} ({row['before_cpu_ms_per_request']:.3f} ms)")
            holds = row["vs_fixed_png"] >= TARGETS["vs_fixed_png"] and ours_p99 < TARGETS["fixed_png_p99_ms"]
            lines.append(f"{model} /sample n=1 @64: ours {ours:.0f} req/s vs fixed PNG {ceiling:.0f} "
                         f"(p99 {ceiling_p99:.1f} ms) = {row['vs_fixed_png']:.2f}x "
                         f"(target >= 0.6x, p99 < 50 ms: {'holds' if holds else 'missed'})")
        single, single_p99 = med("workers1", model, "ok_rps"), med("workers1", model, "p99_ms")
        if single == single:  # not NaN
            single_cpu = med("workers1", model, "server_cpu_ms_per_request")
            row.update(workers1_rps=single, workers1_p99_ms=single_p99, vs_workers1=ours / single,
                       workers1_cpu_ms_per_request=single_cpu,
                       cpu_vs_workers1=row["ours_cpu_ms_per_request"] / single_cpu)
            holds = row["vs_workers1"] >= TARGETS["vs_workers1"]
            lines.append(f"{model} /sample n=1 @64: default workers {ours:.0f} req/s vs --workers 1 "
                         f"{single:.0f} "
                         f"(p99 {single_p99:.1f} ms) = {row['vs_workers1']:.2f}x, CPU a request "
                         f"{row['cpu_vs_workers1']:.2f}x (target >= 1.6x and <= 1.1x CPU: "
                         f"{'holds' if holds and row['cpu_vs_workers1'] <= 1.1 else 'missed'})")
        out["models"][model] = row
    bulk = med("ours_bulk_npy", ceiling_model, "images_per_s")
    engine_mean = med("engine", ceiling_model, "mean_images_per_s")
    engine_best = med("engine", ceiling_model, "best_images_per_s")
    out["bulk"] = {"images_per_s": bulk, "engine_mean_images_per_s": engine_mean,
                   "engine_best_images_per_s": engine_best, "vs_engine_mean": bulk / engine_mean,
                   "vs_engine_best": bulk / engine_best}
    holds = bulk / engine_mean >= TARGETS["bulk_vs_engine"]
    lines.append(f"{ceiling_model} POST /v1/images npy: {bulk:.0f} images/s vs engine {engine_mean:.0f} mean "
                 f"({engine_best:.0f} best-of) = {bulk / engine_mean:.2f}x "
                 f"({bulk / engine_best:.2f}x of best-of) (target >= 0.7x: {'holds' if holds else 'missed'})")
    lines.append(f"median load average during the runs: {load:.1f} on {os.cpu_count()} cores")
    return out


if __name__ == "__main__":
    sys.exit(main())
