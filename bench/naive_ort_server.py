"""A second baseline: one ONNX Runtime run and one Pillow PNG per request, no batching (what a
first FastAPI + onnxruntime port of the seeds would look like). Not part of the product.

    python bench/naive_ort_server.py --model gan-mnist --port 8101
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Response
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from service.manifest import Manifest  # noqa: E402
from service.sampling import build_feeds  # noqa: E402


def build_app(model_dir: Path) -> FastAPI:
    manifest = Manifest.read(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(manifest.onnx_path(model_dir)), options,
                                   providers=["CPUExecutionProvider"])
    app = FastAPI()

    def render(seed: int, digit: int | None) -> Response:
        label = digit if digit is not None else seed % manifest.num_classes
        image = session.run(["image"], build_feeds(manifest, [seed], [label]))[0][0]
        pixels = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, format="PNG")
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
    ap.add_argument("--port", type=int, default=8101)
    args = ap.parse_args()
    app = build_app(args.models_dir / args.model)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
