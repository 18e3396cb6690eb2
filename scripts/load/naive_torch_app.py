"""Load-test baseline, not part of the service: the torch generator at batch 1 per request.

Rebuilt from a training checkpoint (RUN_DIR), torch with 1 thread, Pillow PNG, no batching,
FastAPI sync route. From the repository root:
    uvicorn --app-dir scripts/load naive_torch_app:app --port 8129 --loop uvloop --http httptools \
        --no-access-log
"""

import io
import os
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI
from fastapi.responses import Response
from PIL import Image

from training.checkpoint import load_checkpoint

torch.set_num_threads(1)
model, _ = load_checkpoint(Path(os.environ.get("RUN_DIR", "runs/quick/gan-mnist")))
model.eval()
generator = model.export_specs()["model"].module.eval()
app = FastAPI()


@app.get("/sample")
def sample(seed: int = 0, digit: int | None = None, model: str = "") -> Response:
    z = np.random.Generator(np.random.PCG64(seed)).standard_normal(64, dtype=np.float32)[None]
    label = torch.tensor([seed % 10 if digit is None else digit])
    with torch.inference_mode():
        image = generator(torch.from_numpy(z), label)[0, 0].numpy()
    buf = io.BytesIO()
    Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png")
