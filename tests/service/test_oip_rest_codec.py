"""The /v2 infer response codec (orjson): JSON tensor data reads back as the exact values, for
native, byte-swapped and float16 arrays; binary outputs carry the raw bytes after the header."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.oip.rest import encode_infer_response
from service.oip.tensors import Tensor
from service.oip.types import InferResponse


def response_of(data: np.ndarray, datatype: str) -> InferResponse:
    return InferResponse("gan-mnist", "1", "req-1", [Tensor("image", datatype, data.shape, data)])


@pytest.mark.parametrize(
    ("dtype", "datatype"), [("<f4", "FP32"), (">f4", "FP32"), ("<f2", "FP16"), ("u1", "UINT8")]
)
def test_json_data_reads_back_exactly(dtype: str, datatype: str) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random((2, 1, 28, 28)) * 200).astype(dtype)
    body, header_length = encode_infer_response(response_of(data, datatype), None, False)
    assert header_length is None
    doc = json.loads(body)
    assert doc["id"] == "req-1" and doc["outputs"][0]["shape"] == [2, 1, 28, 28]
    back = np.array(doc["outputs"][0]["data"]).astype(data.dtype.newbyteorder("="))
    assert np.array_equal(back, data.ravel())


def test_binary_output_follows_the_header() -> None:
    data = np.arange(6, dtype=np.float32).reshape(1, 6)
    body, header_length = encode_infer_response(response_of(data, "FP32"), None, True)
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert np.array_equal(np.frombuffer(body[header_length:], np.float32), data.ravel())
