"""Engine benchmark: images/s per shipped model through the service's runtime (ONNX Runtime)
and through torch eager on the same weights, at batch 1, 16, 256 and 4096.

    python bench/engine.py                         # every model in models/, CPU
    python bench/engine.py --models gan-mnist --batches 1,256
    python bench/engine.py --provider cuda         # on a GPU machine with onnxruntime-gpu:
                                                   # adds IO binding + cuDNN option sweeps

Prints a table and writes bench/results/engine-<date>.json with the machine and versions.
FLOPs per image are counted from each ONNX graph (bench/flops.py).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from flops import count_flops  # noqa: E402
from machine import machine_info, write_result  # noqa: E402

from imagegen.contract.manifest import Manifest  # noqa: E402
from imagegen.contract.sampling import build_feeds  # noqa: E402
from service.engine.runtime import ModelRuntime, RuntimeOptions  # noqa: E402

# bf16 dense matrix rate of the GPUs this project is lent (TFLOP/s, vendor figures).
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


def time_it(fn, min_seconds: float, min_reps: int = 3) -> float:
    """Best-of seconds per call, after one warm-up call."""
    fn()
    best, total, reps = float("inf"), 0.0, 0
    while reps < min_reps or total < min_seconds:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, total, reps = min(best, elapsed), total + elapsed, reps + 1
        if total > 4 * min_seconds and reps >= 1:
            break
    return best


def feeds_for(manifest: Manifest, batch: int) -> dict[str, np.ndarray]:
    seeds = list(range(batch))
    return build_feeds(manifest, seeds, [s % manifest.num_classes for s in seeds])


def load_runtime(model_dir: Path, manifest: Manifest, args) -> ModelRuntime:
    options = RuntimeOptions(provider=args.provider, strict=args.provider == "cuda", cpu_threads=args.threads)
    return ModelRuntime.load(manifest.onnx_path(model_dir), manifest, options)


def bench_ort(runtime: ModelRuntime, manifest: Manifest, batches: list[int], args) -> dict[int, float]:
    out = {}
    for b in batches:
        feeds = feeds_for(manifest, b)
        out[b] = b / time_it(lambda feeds=feeds: runtime.run(feeds), args.seconds)
    return out


def bench_torch(
    model_dir: Path, manifest: Manifest, batches: list[int], args, reference: np.ndarray
) -> dict[int, float] | str:
    """`reference`: ONNX Runtime's images for `feeds_for(manifest, 8)`."""
    try:
        import torch
        from torch_models import load_torch_sampler
    except ImportError as exc:
        return f"torch not installed ({exc})"
    torch.set_num_threads(args.threads)
    sampler, _ = load_torch_sampler(model_dir)
    # Same weights, checked: the fp32 eager output must match ONNX Runtime's.
    check = feeds_for(manifest, 8)
    with torch.inference_mode():
        eager = sampler(*[torch.from_numpy(check[n]) for n in ("z", "label") if n in check]).numpy()
    diff = float(np.abs(eager - reference).max())
    if diff > 1e-3:
        return f"torch weights differ from the ONNX file (max abs diff {diff:.2e})"
    device = "cuda" if args.provider == "cuda" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sampler = sampler.to(device=device, dtype=dtype)
    out = {}
    for b in batches:
        feeds = feeds_for(manifest, b)
        tensors = [torch.from_numpy(feeds[n]).to(device) for n in ("z", "label") if n in feeds]
        tensors = [t.to(dtype) if t.is_floating_point() else t for t in tensors]

        def run(tensors=tensors):
            with torch.inference_mode():
                sampler(*tensors)
            if device == "cuda":
                torch.cuda.synchronize()

        out[b] = b / time_it(run, args.seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--models", default="", help="comma-separated ids (default: all)")
    ap.add_argument("--batches", default="1,16,256,4096")
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    ap.add_argument("--seconds", type=float, default=0.5, help="minimum timed seconds per point")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    import os

    args.threads = args.threads or os.cpu_count() or 1
    batches = [int(b) for b in args.batches.split(",")]
    ids = args.models.split(",") if args.models else sorted(
        p.name for p in args.models_dir.iterdir() if (p / "manifest.json").exists()
    )
    machine = machine_info()
    rows = []
    print(f"{'model':22} {'MFLOP/img':>9} {'engine':7} " + " ".join(f"{'b=' + str(b):>10}" for b in batches))
    for model_id in ids:
        model_dir = args.models_dir / model_id
        manifest = Manifest.read(model_dir)
        mflop = count_flops(manifest.onnx_path(model_dir)) / 1e6
        runtime = load_runtime(model_dir, manifest, args)
        results = {"ort": bench_ort(runtime, manifest, batches, args)}
        reference = runtime.run(feeds_for(manifest, 8))
        # ONNX Runtime's idle threads spin for a while after a run; a live session would steal
        # the cores from torch's timings.
        del runtime
        gc.collect()
        if not args.no_torch:
            results["torch"] = bench_torch(model_dir, manifest, batches, args, reference)
        for engine, res in results.items():
            if isinstance(res, str):
                print(f"{model_id:22} {mflop:9.2f} {engine:7} {res}")
                rows.append({"model": model_id, "engine": engine, "error": res})
                continue
            print(f"{model_id:22} {mflop:9.2f} {engine:7} " + " ".join(f"{res[b]:10.0f}" for b in batches),
                  flush=True)
            rows.append({
                "model": model_id, "engine": engine, "mflop_per_image": mflop,
                "images_per_s": {str(b): v for b, v in res.items()},
                "gflop_per_s": {str(b): v * mflop / 1e3 for b, v in res.items()},
            })
    gpu = machine.get("gpu") or ""
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in gpu), None)
    if peak:
        for row in rows:
            if "gflop_per_s" in row:
                row["share_of_bf16_peak"] = {b: g / (peak * 1e3) for b, g in row["gflop_per_s"].items()}
    path = write_result("engine", {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine,
                                   "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
