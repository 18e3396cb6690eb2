"""LitServe peer: the same ONNX file, seed contract and PNG bytes as `imagegen serve`, served by
LitServe with its own dynamic batching (max 64 images, 2 ms), for bench/http_bench.py.

    pip install '.[bench]'
    python bench/litserve_server.py --model gan-emoji --port 8102

`POST /sample` with `{"seed": 42}` (LitServe's endpoints take a JSON body) answers the PNG that
`GET /sample?model=gan-emoji&seed=42` answers from our server: feeds from
`imagegen.contract.sampling.build_feeds`, pixels and PNG from `service.engine.imaging`, one thread for
ONNX Runtime as our server uses on 2 cores. `GET /health` is LitServe's readiness route.
Not part of the product.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation at run time
# to declare its endpoint's body (a string annotation turns it into a query parameter).
import argparse
import os
import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
import onnxruntime as ort
from fastapi import Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from imagegen.contract.manifest import Manifest  # noqa: E402
from imagegen.contract.sampling import build_feeds, default_labels  # noqa: E402
from service.engine import imaging  # noqa: E402


def cpu_threads() -> int:
    """What `imagegen serve` uses by default: cores - 1, at least 1."""
    return max(1, (os.cpu_count() or 2) - 1)


class SampleAPI(ls.LitAPI):
    def __init__(self, model_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        self.manifest = Manifest.read(self.model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_threads()
        self.session = ort.InferenceSession(
            str(self.manifest.onnx_path(self.model_dir)), options, providers=["CPUExecutionProvider"]
        )

    def decode_request(self, request: dict[str, Any]) -> int:
        return int(request["seed"])

    def batch(self, seeds: list[int]) -> list[int]:
        return seeds

    def predict(self, seeds: list[int]) -> np.ndarray:
        labels = default_labels(seeds, self.manifest.num_classes)  # no class given: the contract's
        images = self.session.run(["image"], build_feeds(self.manifest, seeds, labels))[0]
        return imaging.to_hwc_uint8(images)

    def unbatch(self, pixels: np.ndarray) -> list[np.ndarray]:
        return list(pixels)

    def encode_response(self, pixels: np.ndarray) -> Response:
        return Response(imaging.encode_png(pixels), media_type="image/png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gan-mnist")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--port", type=int, default=8102)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--batch-timeout-ms", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=1, help="LitServe's workers_per_device")
    args = ap.parse_args()
    api = SampleAPI(args.models_dir / args.model, max_batch_size=args.max_batch,
                    batch_timeout=args.batch_timeout_ms / 1000, api_path="/sample")
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning",
               generate_client_file=False)


if __name__ == "__main__":
    main()
