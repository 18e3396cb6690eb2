"""The naive baselines: a bare FastAPI endpoint that runs the model once per request and encodes
its PNG with Pillow in the handler, as the seeds' notebooks would serve it. No batching.

    python bench/naive_server.py --model gan-mnist --port 8100                 # torch eager
    python bench/naive_server.py --model gan-mnist --port 8101 --engine ort    # ONNX Runtime, 1 thread

It answers `/sample` and `/generate` with the service's seed contract (so the pixels match)
and `/readyz` for the benchmark's start-up check. Not part of the product.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Response
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from imagegen.contract.manifest import Manifest  # noqa: E402
from imagegen.contract.sampling import build_feeds  # noqa: E402

Render = Callable[[int, int], np.ndarray]  # (seed, label) -> float image (C, H, W) in [0, 1]


def torch_renderer(model_dir: Path) -> tuple[Render, Manifest]:
    import torch
    from torch_models import load_torch_sampler, torch_inputs

    sampler, manifest = load_torch_sampler(model_dir)

    def render(seed: int, label: int) -> np.ndarray:
        with torch.no_grad():
            return sampler(*torch_inputs(manifest, np.array([seed]), np.array([label])))[0].numpy()

    return render, manifest


def ort_renderer(model_dir: Path) -> tuple[Render, Manifest]:
    import onnxruntime as ort

    manifest = Manifest.read(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(manifest.onnx_path(model_dir)), options,
                                   providers=["CPUExecutionProvider"])

    def render(seed: int, label: int) -> np.ndarray:
        return session.run(["image"], build_feeds(manifest, [seed], [label]))[0][0]

    return render, manifest


def build_app(model_dir: Path, engine: str) -> FastAPI:
    render, manifest = (torch_renderer if engine == "torch" else ort_renderer)(model_dir)
    app = FastAPI()

    def png(seed: int, digit: int | None) -> Response:
        image = render(seed, digit if digit is not None else seed % manifest.num_classes)
        pixels = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @app.get("/sample")
    def sample(model: str = "", seed: int = 0, digit: int | None = None) -> Response:
        return png(seed, digit)

    @app.get("/generate")
    def generate(model: str = "", digit: int = 0, seed: int = 0) -> Response:
        return png(seed, digit)

    @app.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready"}

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--engine", choices=["torch", "ort"], default="torch")
    ap.add_argument("--port", type=int, default=8100)
    args = ap.parse_args()
    app = build_app(args.models_dir / args.model, args.engine)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
