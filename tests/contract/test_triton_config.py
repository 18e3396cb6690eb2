"""Every shipped model has an up-to-date config.pbtxt that Triton's own ModelConfig parses and
that agrees with the ONNX graph (names, types, dims without the batch axis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from imagegen.contract.manifest import Manifest
from imagegen.contract.triton_config import CONFIG_NAME, config_pbtxt, main, stale_configs

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
MODEL_DIRS = sorted(p.parent for p in MODELS.glob("*/manifest.json"))
ONNX_TO_TRITON = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}


def test_every_shipped_model_has_an_up_to_date_config():
    assert MODEL_DIRS, "no models shipped"
    stale = stale_configs(MODELS)
    assert not stale, f"regenerate with `python -m imagegen.contract.triton_config models/`: {stale}"


def test_check_mode_reports_a_stale_file(tmp_path: Path):
    model_dir = tmp_path / MODEL_DIRS[0].name
    model_dir.mkdir()
    (model_dir / "manifest.json").write_bytes((MODEL_DIRS[0] / "manifest.json").read_bytes())
    assert main([str(tmp_path), "--check"]) == 1  # missing
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path), "--check"]) == 0
    path = model_dir / CONFIG_NAME
    path.write_text(path.read_text().replace("max_batch_size: 64", "max_batch_size: 8"))
    assert main([str(tmp_path), "--check"]) == 1


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_config_parses_as_triton_model_config_and_matches_the_graph(model_dir: Path):
    text_format = pytest.importorskip("google.protobuf.text_format")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    config = text_format.Parse((model_dir / CONFIG_NAME).read_text(), model_config_pb2.ModelConfig())
    manifest = Manifest.read(model_dir)
    assert config.name == manifest.id == model_dir.name
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size > 0
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert config.version_policy.latest.num_versions == 1
    # Triton serves the newest numeric folder: it must hold the manifest's model.onnx.
    newest = max(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert newest == manifest.version
    onnx_path = model_dir / str(newest) / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    data_type = model_config_pb2.DataType.Name

    graph_inputs = {i.name: i for i in session.get_inputs()}
    assert {i.name for i in config.input} == set(graph_inputs)
    for tensor in config.input:
        node = graph_inputs[tensor.name]
        assert data_type(tensor.data_type) == ONNX_TO_TRITON[node.type]
        # What Triton feeds the graph: [batch] + (reshape, when given, else dims).
        fed = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
        assert len(node.shape) == 1 + len(fed)
        assert list(node.shape[1:]) == fed
        assert int(np.prod(tensor.dims)) == int(np.prod(fed, dtype=np.int64))

    graph_outputs = {o.name: o for o in session.get_outputs()}
    assert [o.name for o in config.output] == ["image"]
    image = config.output[0]
    assert data_type(image.data_type) == ONNX_TO_TRITON[graph_outputs["image"].type]
    expected = [manifest.image.channels, manifest.image.height, manifest.image.width]
    assert list(image.dims) == expected
    graph_dims = graph_outputs["image"].shape[1:]
    assert all(not isinstance(g, int) or g == e for g, e in zip(graph_dims, expected, strict=True))


def test_label_only_model_config_has_no_z():
    label_models = [d for d in MODEL_DIRS if set(Manifest.read(d).inputs) == {"label"}]
    if not label_models:
        pytest.skip("no label-family model shipped")
    text = config_pbtxt(Manifest.read(label_models[0]))
    assert 'name: "z"' not in text and 'name: "label"' in text
