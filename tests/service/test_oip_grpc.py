"""The Open Inference Protocol over gRPC, through tritonclient.grpc (and its own protobuf stubs for
the typed-contents form it does not send) against a real server started with --grpc-port:
health, metadata, inference whose pixels equal /sample's, and the protocol's status codes.

Only tritonclient's stubs are imported here, never the service's: both declare the protocol's
`inference.*` messages, and one process's protobuf pool holds one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from imagegen.contract.sampling import latents, to_uint8
from tests.service.conftest import Server, decode_png, free_port, start_server

pytest.importorskip("grpc")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

SEEDS = [11, 4242, 2**50 + 1]


@pytest.fixture(scope="module")
def grpc_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    port = free_port()
    server = start_server(models_dir, tmp_path_factory.mktemp("grpc-server"), "--grpc-port", str(port))
    yield server, f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def triton(grpc_server: tuple[Server, str]) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(grpc_server[1])
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(grpc_server: tuple[Server, str]) -> Iterator[Any]:
    import grpc

    with grpc.insecure_channel(grpc_server[1]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def model(grpc_server: tuple[Server, str]) -> dict[str, Any]:
    """A ready model with z and label inputs, found through our own API (as conftest does)."""
    models = httpx.get(f"{grpc_server[0].url}/v1/models", timeout=30).json()["models"]
    found = [m for m in models if m["state"] == "ready" and set(m["manifest"]["inputs"]) == {"z", "label"}]
    found.sort(key=lambda m: (m["baseline"], m["manifest"]["image"]["channels"] != 1, m["id"]))
    assert found, "the gRPC tests need a ready model with z and label inputs"
    return found[0]


def sample_pixels(server: Server, model_id: str, seed: int, label: int | None) -> np.ndarray:
    params: dict[str, Any] = {"model": model_id, "seed": seed}
    if label is not None:
        params["digit"] = label
    r = httpx.get(f"{server.url}/sample", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return decode_png(r.content)


def as_hwc_uint8(image: np.ndarray) -> np.ndarray:
    return to_uint8(image).transpose(1, 2, 0)


def inputs(model: dict[str, Any], seeds: list[int], labels: list[int]) -> list[Any]:
    latent_dim = model["manifest"]["latent_dim"]
    z = grpcclient.InferInput("z", [len(seeds), latent_dim], "FP32")
    z.set_data_from_numpy(latents(seeds, latent_dim))
    label = grpcclient.InferInput("label", [len(labels)], "INT64")
    label.set_data_from_numpy(np.asarray(labels, dtype=np.int64))
    return [z, label]


def test_health_and_metadata(triton: Any, model: dict[str, Any]):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(model["id"])
    server_meta = triton.get_server_metadata(as_json=True)
    assert server_meta["name"] == "imagegen" and "imagegen_seeds" in server_meta["extensions"]
    meta = triton.get_model_metadata(model["id"], as_json=True)
    latent_dim = model["manifest"]["latent_dim"]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]} == {
        "z": ("FP32", ["-1", str(latent_dim)]),  # int64 fields are strings in protobuf's JSON
        "label": ("INT64", ["-1"]),
    }
    assert meta["versions"] == [str(model["manifest"]["version"])]


def test_infer_with_z_and_label_gives_the_pixels_of_sample(
    triton: Any, grpc_server: tuple[Server, str], model: dict[str, Any]
):
    labels = [1, 0, 2]
    result = triton.infer(model["id"], inputs(model, SEEDS, labels))  # raw_input_contents
    images = result.as_numpy("image")
    assert images.dtype == np.float32 and images.shape[0] == len(SEEDS)
    for image, seed, label in zip(images, SEEDS, labels, strict=True):
        np.testing.assert_array_equal(
            as_hwc_uint8(image), sample_pixels(grpc_server[0], model["id"], seed, label)
        )


def test_seeds_parameter_gives_the_pixels_of_sample(
    triton: Any, grpc_server: tuple[Server, str], model: dict[str, Any]
):
    # gRPC parameters are scalars: the seeds go as a string.
    result = triton.infer(model["id"], [], parameters={"seeds": ",".join(map(str, SEEDS)), "labels": "2,1,0"})
    for image, seed, label in zip(result.as_numpy("image"), SEEDS, [2, 1, 0], strict=True):
        np.testing.assert_array_equal(
            as_hwc_uint8(image), sample_pixels(grpc_server[0], model["id"], seed, label)
        )
    one = triton.infer(model["id"], [], parameters={"seeds": SEEDS[0]})  # one seed as an int64 parameter
    np.testing.assert_array_equal(
        as_hwc_uint8(one.as_numpy("image")[0]), sample_pixels(grpc_server[0], model["id"], SEEDS[0], None)
    )


def typed_request(model: dict[str, Any], seeds: list[int], labels: list[int]) -> Any:
    """A ModelInferRequest with the data in typed contents (fp32_contents, int64_contents)."""
    latent_dim = model["manifest"]["latent_dim"]
    request = service_pb2.ModelInferRequest(model_name=model["id"])
    z = request.inputs.add(name="z", datatype="FP32", shape=[len(seeds), latent_dim])
    z.contents.fp32_contents.extend(latents(seeds, latent_dim).ravel().tolist())
    label = request.inputs.add(name="label", datatype="INT64", shape=[len(labels)])
    label.contents.int64_contents.extend(labels)
    return request


def test_typed_contents_equal_raw_contents(triton: Any, stub: Any, model: dict[str, Any]):
    response = stub.ModelInfer(typed_request(model, SEEDS[:2], [3, 4]))
    typed = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(
        list(response.outputs[0].shape)
    )
    raw = triton.infer(model["id"], inputs(model, SEEDS[:2], [3, 4])).as_numpy("image")
    np.testing.assert_array_equal(typed, raw)


# -- status codes ---------------------------------------------------------------------------------


def status_of(call: Any) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert str(info.value)
    return info.value.status()


def test_unknown_model_is_not_found(triton: Any):
    assert status_of(lambda: triton.get_model_metadata("no-such-model")) == "StatusCode.NOT_FOUND"
    assert status_of(lambda: triton.is_model_ready("no-such-model")) == "StatusCode.NOT_FOUND"
    assert (
        status_of(lambda: triton.infer("no-such-model", [], parameters={"seeds": 1}))
        == "StatusCode.NOT_FOUND"
    )


def test_wrong_datatype_shape_or_missing_input_is_invalid_argument(triton: Any, model: dict[str, Any]):
    latent_dim = model["manifest"]["latent_dim"]
    wrong_type = grpcclient.InferInput("z", [1, latent_dim], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, latent_dim), dtype=np.float64))
    wrong_shape = grpcclient.InferInput("z", [1, latent_dim - 1], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, latent_dim - 1), dtype=np.float32))
    label = inputs(model, [1], [0])[1]
    for case in ([wrong_type, label], [wrong_shape, label], [label]):
        assert status_of(lambda c=case: triton.infer(model["id"], c)) == "StatusCode.INVALID_ARGUMENT"
    bad_seeds = lambda: triton.infer(model["id"], [], parameters={"seeds": "1,x"})  # noqa: E731
    assert status_of(bad_seeds) == "StatusCode.INVALID_ARGUMENT"


def test_inconsistent_raw_and_typed_contents_are_invalid_argument(stub: Any, model: dict[str, Any]):
    import grpc

    mismatched = typed_request(model, [1], [0])
    mismatched.inputs[0].contents.fp32_contents.append(0.5)  # one value too many for the shape
    extra_raw = typed_request(model, [1], [0])
    extra_raw.raw_input_contents.append(b"\0" * 4)  # raw for one input of two
    wrong_field = typed_request(model, [1], [0])
    wrong_field.inputs[1].contents.ClearField("int64_contents")
    wrong_field.inputs[1].contents.int_contents.append(0)  # INT64 data in the INT32 field
    for request in (mismatched, extra_raw, wrong_field):
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


def test_committed_stubs_match_the_proto(tmp_path: Path):
    pytest.importorskip("grpc_tools")
    from service.oip import stubs

    for name, text in stubs.generate(tmp_path).items():
        assert (stubs.PROTO.with_name(name)).read_text() == text, (
            f"regenerate: python -m service.oip.stubs ({name})"
        )


def test_model_config_is_tritons_and_the_same_as_http(triton: Any, grpc_server: tuple[Server, str]):
    """tritonclient's get_model_config got UNIMPLEMENTED; it now reads Triton's ModelConfig."""
    over_grpc = triton.get_model_config("gan-mnist", as_json=True)["config"]
    over_http = httpx.get(f"{grpc_server[0].url}/v2/models/gan-mnist/config", timeout=30).json()
    assert over_grpc["name"] == "gan-mnist" and over_grpc["platform"] == "onnxruntime_onnx"
    assert {i["name"]: i["data_type"] for i in over_grpc["input"]} == {
        "label": "TYPE_INT64",
        "z": "TYPE_FP32",
    }
    # json_format writes int64 fields as strings and leaves out empty ones; compare on values
    assert over_grpc["output"][0]["dims"] == [str(d) for d in over_http["output"][0]["dims"]]
    assert int(over_grpc["max_batch_size"]) == over_http["max_batch_size"]
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton.get_model_config("no-such-model")


def test_the_readme_grpc_examples_run_as_written(grpc_server: tuple[Server, str]):
    """The README's Triton-client block, against this server's ports."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python")[1:]]
    code = next(b for b in blocks if "tritonclient.grpc" in b)
    http_port = grpc_server[0].url.rsplit(":", 1)[1]
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{http_port}").replace("127.0.0.1:8001", grpc_server[1])
    exec(compile(code, "README.md", "exec"), {})
