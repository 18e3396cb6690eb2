"""The ceiling: a FastAPI endpoint that returns one fixed PNG (no model, no batcher), on the same
server stack as `imagegen serve` (uvicorn with uvloop + httptools, no access log).

    python bench/fixed_png_server.py --model gan-mnist --port 8103

`GET /sample` answers the PNG of the model's seed 0 as our server encodes it (same size, same
headers' worth of work for the client), whatever the query; `GET /readyz` for the benchmark's
start-up check. What FastAPI and uvicorn cost per request on this machine, with nothing else.
Not part of the product.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from imagegen.contract.manifest import Manifest  # noqa: E402
from service.engine.generation import Generator, ImageRequest  # noqa: E402
from service.engine.runtime import ModelRuntime, RuntimeOptions  # noqa: E402


def seed_zero_png(model_dir: Path) -> bytes:
    manifest = Manifest.read(model_dir)
    options = RuntimeOptions(provider="cpu", strict=False, cpu_threads=1)
    runtime = ModelRuntime.load(manifest.onnx_path(model_dir), manifest, options)
    png: bytes = Generator(runtime).generate(ImageRequest(seeds=(0,), labels=(0,)), max_batch=1)
    return png


def build_app(png: bytes) -> FastAPI:
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})  # as imagegen serve

    @app.get("/sample")
    async def sample() -> Response:
        return Response(png, media_type="image/png")

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--port", type=int, default=8103)
    args = ap.parse_args()
    app = build_app(seed_zero_png(args.models_dir / args.model))
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", server_header=False, backlog=4096)


if __name__ == "__main__":
    main()
