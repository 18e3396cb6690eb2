"""Seldon MLServer as a peer on the Open Inference Protocol: the same ONNX file as ours, served by a
custom `MLModel` on ONNX Runtime with one intra-op thread, with MLServer's adaptive batching.

MLServer lives in its own virtualenv so it never touches the project's (its pins differ):

    python3 -m venv /work/mlsvenv
    /work/mlsvenv/bin/pip install 'mlserver>=1.7,<1.8' onnxruntime==<the project's version> numpy \
        'uvloop<0.22'   # MLServer 1.7.1's parallel workers fail to start with uvloop >= 0.22

    python bench/mlserver_server.py --model-dir models/gan-mnist --http-port 8080 --grpc-port 8081 \\
        [--mlserver-venv /work/mlsvenv] [--parallel-workers 0] [--max-batch 64] [--max-batch-time 0.002]

writes MLServer's settings.json and model-settings.json into a temporary folder with a copy of
this file (the `OnnxModel` implementation MLServer imports from there) and runs `mlserver start`
on it in the foreground. bench/protocol_bench.py starts it this way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

try:  # only inside MLServer's venv
    import numpy as np
    import onnxruntime as ort
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse

    class OnnxModel(MLModel):  # type: ignore[misc]
        async def load(self) -> bool:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            uri = self.settings.parameters.uri
            self.session = ort.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
            self.output = self.session.get_outputs()[0].name
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
            if "label" in feeds:
                feeds["label"] = np.asarray(feeds["label"], dtype=np.int64).reshape(-1)
            (out,) = self.session.run([self.output], feeds)
            return InferenceResponse(
                model_name=self.name, outputs=[NumpyCodec.encode_output(self.output, out.astype(np.float32))]
            )

except ImportError:  # the project's venv: only the launcher below is used
    pass


def write_folder(
    model_dir: Path, http_port: int, grpc_port: int, workers: int, max_batch: int, max_batch_time: float
) -> Path:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    onnx = (model_dir / manifest["onnx"]["file"]).resolve()
    folder = Path(tempfile.mkdtemp(prefix="mlserver-"))
    shutil.copy(__file__, folder / "onnx_model.py")
    settings = {
        "http_port": http_port,
        "grpc_port": grpc_port,
        "parallel_workers": workers,
        "metrics_port": 0,
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": manifest["id"],
        "implementation": "onnx_model.OnnxModel",
        "max_batch_size": max_batch,
        "max_batch_time": max_batch_time,
        "parameters": {"uri": str(onnx)},
    }
    (folder / "model-settings.json").write_text(json.dumps(model))
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--grpc-port", type=int, default=8081)
    ap.add_argument("--parallel-workers", type=int, default=0, help="MLServer's inference workers (0: none)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-batch-time", type=float, default=0.002)
    ap.add_argument(
        "--mlserver-venv", type=Path, default=Path(os.environ.get("MLSERVER_VENV", "/work/mlsvenv"))
    )
    args = ap.parse_args(argv)
    folder = write_folder(
        args.model_dir,
        args.http_port,
        args.grpc_port,
        args.parallel_workers,
        args.max_batch,
        args.max_batch_time,
    )
    mlserver = args.mlserver_venv / "bin" / "mlserver"
    if not mlserver.exists():
        print(f"no MLServer at {mlserver}: see this file's docstring to install it", file=sys.stderr)
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    os.execve(str(mlserver), [str(mlserver), "start", str(folder)], env)


if __name__ == "__main__":
    sys.exit(main())
