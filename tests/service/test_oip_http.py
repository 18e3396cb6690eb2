"""The Open Inference Protocol over HTTP, through NVIDIA's own client (tritonclient.http) against the
real server on loopback: health, metadata, config, inference (JSON and binary tensors, z computed
by the client or the `seeds` parameter), and the protocol's errors. Pixels are compared with
/sample's PNGs for the same seeds and classes."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import numpy as np
import pytest

from imagegen.contract.sampling import latents, to_uint8
from tests.service.conftest import Server, decode_png

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

SEEDS = [7, 1234, 2**40 + 3]


@pytest.fixture(scope="module")
def triton(server: Server) -> Any:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


def sample_pixels(client: httpx.Client, model_id: str, seed: int, label: int | None) -> np.ndarray:
    params: dict[str, Any] = {"model": model_id, "seed": seed}
    if label is not None:
        params["digit"] = label
    r = client.get("/sample", params=params)
    assert r.status_code == 200, r.text
    return decode_png(r.content)


def as_hwc_uint8(image: np.ndarray) -> np.ndarray:
    """A CHW float image in [0, 1] -> HWC uint8, as the PNG of /sample holds it."""
    return to_uint8(image).transpose(1, 2, 0)


def z_and_label_inputs(model: dict[str, Any], seeds: list[int], labels: list[int], binary: bool) -> list[Any]:
    manifest = model["manifest"]
    inputs = []
    if "z" in manifest["inputs"]:
        z = httpclient.InferInput("z", [len(seeds), manifest["latent_dim"]], "FP32")
        z.set_data_from_numpy(latents(seeds, manifest["latent_dim"]), binary_data=binary)
        inputs.append(z)
    if "label" in manifest["inputs"]:
        label = httpclient.InferInput("label", [len(labels)], "INT64")
        label.set_data_from_numpy(np.asarray(labels, dtype=np.int64), binary_data=binary)
        inputs.append(label)
    return inputs


def test_server_is_live_and_ready_with_metadata(triton: Any):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "imagegen"
    assert {"binary_tensor_data", "imagegen_seeds"} <= set(meta["extensions"])


def test_model_metadata_and_config_describe_the_manifest(triton: Any, conditional: dict[str, Any]):
    manifest = conditional["manifest"]
    assert triton.is_model_ready(conditional["id"])
    assert triton.is_model_ready(conditional["id"], str(manifest["version"]))
    meta = triton.get_model_metadata(conditional["id"])
    assert meta["versions"] == [str(manifest["version"])]
    assert meta["platform"] == "onnxruntime_onnx"
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs == {"z": ("FP32", [-1, manifest["latent_dim"]]), "label": ("INT64", [-1])}
    assert meta["outputs"] == [{"name": "image", "datatype": "FP32", "shape": manifest["outputs"]["image"]}]
    config = triton.get_model_config(conditional["id"])
    assert config["name"] == conditional["id"]
    assert config["max_batch_size"] >= 1
    dims = {t["name"]: t["dims"] for t in config["input"]}
    assert dims == {"z": [manifest["latent_dim"]], "label": [1]}
    assert config["output"][0]["dims"] == manifest["outputs"]["image"][1:]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_with_z_and_label_gives_the_pixels_of_sample(
    triton: Any, client: httpx.Client, conditional: dict[str, Any], binary: bool
):
    num_classes = conditional["manifest"]["num_classes"]
    labels = [(s * 3 + 1) % num_classes for s in SEEDS]
    outputs = [httpclient.InferRequestedOutput("image", binary_data=binary)]
    result = triton.infer(
        conditional["id"], z_and_label_inputs(conditional, SEEDS, labels, binary), outputs=outputs
    )
    images = result.as_numpy("image")
    image_spec = conditional["manifest"]["image"]
    assert images.dtype == np.float32
    assert images.shape == (len(SEEDS), image_spec["channels"], image_spec["height"], image_spec["width"])
    assert result.get_response()["model_version"] == str(conditional["manifest"]["version"])
    for image, seed, label in zip(images, SEEDS, labels, strict=True):
        np.testing.assert_array_equal(
            as_hwc_uint8(image), sample_pixels(client, conditional["id"], seed, label)
        )


def test_json_and_binary_outputs_are_the_same_floats(triton: Any, conditional: dict[str, Any]):
    inputs = z_and_label_inputs(conditional, SEEDS[:2], [0, 1], binary=True)
    as_json = triton.infer(
        conditional["id"], inputs, outputs=[httpclient.InferRequestedOutput("image", False)]
    )
    as_binary = triton.infer(conditional["id"], inputs)  # no outputs named: binary_data_output
    np.testing.assert_array_equal(as_json.as_numpy("image"), as_binary.as_numpy("image"))


def test_seeds_parameter_gives_the_pixels_of_sample(
    triton: Any, client: httpx.Client, conditional: dict[str, Any]
):
    model_id = conditional["id"]
    result = triton.infer(model_id, [], parameters={"seeds": SEEDS})
    for image, seed in zip(result.as_numpy("image"), SEEDS, strict=True):
        # No class given: seed % num_classes on both sides.
        np.testing.assert_array_equal(as_hwc_uint8(image), sample_pixels(client, model_id, seed, None))
    labels = [2, 0, 1]
    result = triton.infer(model_id, [], parameters={"seeds": SEEDS, "labels": labels})
    for image, seed, label in zip(result.as_numpy("image"), SEEDS, labels, strict=True):
        np.testing.assert_array_equal(as_hwc_uint8(image), sample_pixels(client, model_id, seed, label))


def test_seeds_parameter_as_a_string_equals_the_list(triton: Any, conditional: dict[str, Any]):
    listed = triton.infer(conditional["id"], [], parameters={"seeds": SEEDS})
    text = triton.infer(conditional["id"], [], parameters={"seeds": ",".join(map(str, SEEDS))})
    np.testing.assert_array_equal(listed.as_numpy("image"), text.as_numpy("image"))


def test_label_only_model_takes_the_label_input(
    triton: Any, client: httpx.Client, label_only: dict[str, Any]
):
    result = triton.infer(label_only["id"], z_and_label_inputs(label_only, [0, 0], [3, 5], binary=True))
    for image, label in zip(result.as_numpy("image"), [3, 5], strict=True):
        np.testing.assert_array_equal(as_hwc_uint8(image), sample_pixels(client, label_only["id"], 0, label))


def test_gzip_request_body_is_accepted(triton: Any, conditional: dict[str, Any]):
    inputs = z_and_label_inputs(conditional, SEEDS[:1], [1], binary=True)
    plain = triton.infer(conditional["id"], inputs)
    packed = triton.infer(conditional["id"], inputs, request_compression_algorithm="gzip")
    np.testing.assert_array_equal(plain.as_numpy("image"), packed.as_numpy("image"))


# -- errors, as the client reports them -------------------------------------------------------------


def raised(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    text = str(info.value)  # was a TypeError while the body's "error" was an object
    assert isinstance(text, str) and text
    return info.value


def test_unknown_model_is_404_with_a_string_message(triton: Any):
    error = raised(lambda: triton.get_model_metadata("no-such-model"))
    assert error.status() == "404"
    assert "no-such-model" in error.message()
    assert not triton.is_model_ready("no-such-model")
    assert raised(lambda: triton.infer("no-such-model", [], parameters={"seeds": [1]})).status() == "404"


def test_unknown_version_is_404(triton: Any, conditional: dict[str, Any]):
    error = raised(lambda: triton.get_model_metadata(conditional["id"], model_version="999"))
    assert error.status() == "404"


def test_wrong_datatype_is_400(triton: Any, conditional: dict[str, Any]):
    latent_dim = conditional["manifest"]["latent_dim"]
    z = httpclient.InferInput("z", [1, latent_dim], "FP64")
    z.set_data_from_numpy(np.zeros((1, latent_dim), dtype=np.float64))
    label = httpclient.InferInput("label", [1], "INT64")
    label.set_data_from_numpy(np.zeros(1, dtype=np.int64))
    error = raised(lambda: triton.infer(conditional["id"], [z, label]))
    assert error.status() == "400" and "FP32" in error.message()


def test_wrong_shape_is_400(triton: Any, conditional: dict[str, Any]):
    latent_dim = conditional["manifest"]["latent_dim"]
    z = httpclient.InferInput("z", [1, latent_dim + 1], "FP32")
    z.set_data_from_numpy(np.zeros((1, latent_dim + 1), dtype=np.float32))
    label = httpclient.InferInput("label", [1], "INT64")
    label.set_data_from_numpy(np.zeros(1, dtype=np.int64))
    error = raised(lambda: triton.infer(conditional["id"], [z, label]))
    assert error.status() == "400" and f"[N, {latent_dim}]" in error.message()


def test_missing_input_is_400(triton: Any, conditional: dict[str, Any]):
    label = httpclient.InferInput("label", [1], "INT64")
    label.set_data_from_numpy(np.zeros(1, dtype=np.int64))
    error = raised(lambda: triton.infer(conditional["id"], [label]))
    assert error.status() == "400" and "'z'" in error.message()


def test_label_out_of_range_and_batch_mismatch_are_400(triton: Any, conditional: dict[str, Any]):
    num_classes = conditional["manifest"]["num_classes"]
    inputs = z_and_label_inputs(conditional, [1], [0], binary=True)
    inputs[1].set_data_from_numpy(np.array([num_classes], dtype=np.int64))
    assert raised(lambda: triton.infer(conditional["id"], inputs)).status() == "400"
    inputs = z_and_label_inputs(conditional, [1, 2], [0], binary=True)
    assert "batch size" in raised(lambda: triton.infer(conditional["id"], inputs)).message()


def test_bad_seeds_parameters_are_400(triton: Any, conditional: dict[str, Any]):
    model_id = conditional["id"]
    for parameters in (
        {"seeds": [-1]},
        {"seeds": "1,two"},
        {"seeds": []},
        {"seeds": [1, 2], "labels": [0]},
        {"seeds": [1], "labels": [conditional["manifest"]["num_classes"]]},
        {"seed": [1]},  # a typo is not ignored
    ):
        assert raised(lambda p=parameters: triton.infer(model_id, [], parameters=p)).status() == "400", (
            parameters
        )


def test_more_items_than_max_items_is_400(server: Server, conditional: dict[str, Any]):
    body = {"inputs": [], "parameters": {"seeds": list(range(1025))}}  # the default max_items is 1024
    r = httpx.post(f"{server.url}/v2/models/{conditional['id']}/infer", json=body)
    assert r.status_code == 400 and "1024" in r.json()["error"]


# -- the wire format, checked with plain HTTP -----------------------------------------------------


def post(server: Server, model_id: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v2/models/{model_id}/infer", content=content, headers=headers, timeout=60
    )


def test_malformed_bodies_are_400_in_the_protocol_shape(server: Server, conditional: dict[str, Any]):
    model_id = conditional["id"]
    latent_dim = conditional["manifest"]["latent_dim"]
    z_header = {"name": "z", "datatype": "FP32", "shape": [1, latent_dim]}
    label = {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}
    header = json.dumps(
        {"inputs": [{**z_header, "parameters": {"binary_data_size": 4 * latent_dim}}, label]}
    ).encode()
    cases = {
        "not json": (b"{nope", {}),
        "not an object": (b"[1, 2]", {}),
        "deep nesting": (b"[" * 100_000 + b"]" * 100_000, {}),
        "values of the wrong count": (
            json.dumps({"inputs": [{**z_header, "data": [0.0] * (latent_dim - 1)}, label]}).encode(),
            {},
        ),
        "strings as numbers": (
            json.dumps({"inputs": [{**z_header, "data": ["0.5"] * latent_dim}, label]}).encode(),
            {},
        ),
        "NaN in z": (
            json.dumps({"inputs": [{**z_header, "data": [float("nan")] * latent_dim}, label]}).encode(),
            {},
        ),
        "binary data short": (
            header + b"\0" * (4 * latent_dim - 1),
            {"Inference-Header-Content-Length": str(len(header))},
        ),
        "binary data long": (
            header + b"\0" * (4 * latent_dim + 4),
            {"Inference-Header-Content-Length": str(len(header))},
        ),
        "header length past the body": (header, {"Inference-Header-Content-Length": str(len(header) + 10)}),
        "header length not a number": (header, {"Inference-Header-Content-Length": "-1"}),
        "huge shape": (
            json.dumps({"inputs": [{**z_header, "shape": [2**40, 2**40], "data": [0.0]}, label]}).encode(),
            {},
        ),
        "datatype not a string": (  # was a 500: an unhashable datatype looked up in DTYPES
            json.dumps({"inputs": [{**z_header, "datatype": ["FP32"], "data": [0.0] * latent_dim}]}).encode(),
            {},
        ),
        "unknown encoding": (b"{}", {"Content-Encoding": "br"}),
        "broken gzip": (b"\x1f\x8b\x08garbage", {"Content-Encoding": "gzip"}),
    }
    for what, (content, headers) in cases.items():
        r = post(server, model_id, content, **headers)
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert isinstance(r.json()["error"], str), what


def test_binary_input_with_json_output(server: Server, conditional: dict[str, Any]):
    latent_dim = conditional["manifest"]["latent_dim"]
    z = latents([5], latent_dim)
    doc = {
        "inputs": [
            {
                "name": "z",
                "datatype": "FP32",
                "shape": [1, latent_dim],
                "parameters": {"binary_data_size": z.nbytes},
            },
            {"name": "label", "datatype": "INT64", "shape": [1, 1], "data": [[2]]},  # [N, 1], as config.pbtxt
        ],
        "id": "req-1",
    }
    header = json.dumps(doc).encode()
    r = post(
        server,
        conditional["id"],
        header + z.tobytes(),
        **{"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    assert "inference-header-content-length" not in r.headers
    body = r.json()
    assert body["id"] == "req-1" and body["model_name"] == conditional["id"]
    assert len(body["outputs"][0]["data"]) == int(np.prod(body["outputs"][0]["shape"]))


def test_body_over_the_bound_is_refused(server: Server, conditional: dict[str, Any]):
    big = gzip.compress(b" " * (64 << 20))  # small on the wire, 64 MiB inflated
    r = post(server, conditional["id"], big, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]
    r = post(server, conditional["id"], b" " * (32 << 20))
    assert r.status_code == 413 and "bytes" in r.json()["error"]


def test_unknown_v2_route_and_method_use_the_protocol_shape(server: Server, conditional: dict[str, Any]):
    r = httpx.get(f"{server.url}/v2/nothing/here")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    r = httpx.get(f"{server.url}/v2/models/{conditional['id']}/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and isinstance(r.json()["error"], str)


def test_our_own_routes_keep_their_error_shape(client: httpx.Client):
    body = client.get("/v1/models/no-such-model").json()
    assert body["error"]["code"] == "unknown_model"
