"""Load-test baseline, not part of the service: one ONNX Runtime run + Pillow PNG per request.

No batching, FastAPI sync route. From the repository root:
    uvicorn --app-dir scripts/load naive_ort_app:app --port 8128 --loop uvloop --http httptools \
        --no-access-log
"""

import io
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from fastapi.responses import Response
from PIL import Image

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(
    os.environ.get("NAIVE_ONNX", "models/gan-mnist/1/model.onnx"), options, providers=["CPUExecutionProvider"]
)
app = FastAPI()


@app.get("/sample")
def sample(seed: int = 0, digit: int | None = None, model: str = "") -> Response:
    z = np.random.Generator(np.random.PCG64(seed)).standard_normal(64, dtype=np.float32)[None]
    label = np.array([seed % 10 if digit is None else digit], dtype=np.int64)
    image = session.run(["image"], {"z": z, "label": label})[0][0, 0]
    buf = io.BytesIO()
    Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png")
