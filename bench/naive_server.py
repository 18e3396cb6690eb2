"""The naive baseline: a bare FastAPI endpoint that runs the torch model once per request, as the
seeds' notebooks would serve it (no batching, no ONNX Runtime, PNG encoded in the handler).

    python bench/naive_server.py --model gan-mnist --port 8100

It answers `/sample` and `/generate` with the same seed contract as the service (so the
pixels match), and `/readyz` for the benchmark's start-up check. Not part of the product.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Response
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from torch_models import load_torch_sampler, torch_inputs  # noqa: E402


def build_app(model_dir: Path) -> FastAPI:
    sampler, manifest = load_torch_sampler(model_dir)
    app = FastAPI()

    def render(seed: int, digit: int | None) -> Response:
        label = digit if digit is not None else seed % manifest.num_classes
        with torch.no_grad():
            image = sampler(*torch_inputs(manifest, np.array([seed]), np.array([label])))[0]
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @app.get("/sample")
    def sample(model: str = "", seed: int = 0, digit: int | None = None) -> Response:
        return render(seed, digit)

    @app.get("/generate")
    def generate(model: str = "", digit: int = 0, seed: int = 0) -> Response:
        return render(seed, digit)

    @app.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready"}

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--port", type=int, default=8100)
    args = ap.parse_args()
    app = build_app(args.models_dir / args.model)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
