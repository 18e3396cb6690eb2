"""The protocol's HTTP/REST body codec, without a web framework: an inference request body (JSON,
optionally followed by binary tensor data) -> InferRequest, and InferResponse -> body.

Binary tensor data extension: the JSON header's length is in the `Inference-Header-Content-Length`
header; an input with `parameters.binary_data_size` takes that many bytes, in input order, from
what follows. Outputs come back binary when the output asks (`parameters.binary_data`) or the
request does (`parameters.binary_data_output`), JSON otherwise.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np
import orjson

from service.oip.errors import ProtocolError
from service.oip.tensors import Tensor, check_header, from_bytes, from_values, to_bytes
from service.oip.types import InferRequest, InferResponse, RequestedOutput

HEADER_LENGTH = "Inference-Header-Content-Length"
OVERHEAD_BYTES = 64 * 1024  # the JSON around the tensors: names, shapes, seeds, parameters
BYTES_PER_VALUE = 32  # a float32 written as JSON text, with its separator, at most
MAX_TENSORS = 8  # inputs or requested outputs per request (a model here has two inputs, one output)


def max_body_bytes(max_elements: int, inputs: int = 2) -> int:
    """The largest body a valid request to a model can need: every input at its element bound as JSON."""
    return OVERHEAD_BYTES + inputs * max_elements * BYTES_PER_VALUE


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """gzip / deflate request bodies (tritonclient's request_compression_algorithm), bounded by
    `limit` after decompression so a small bomb cannot expand into memory."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    if encoding.strip().lower() not in ("gzip", "deflate"):
        raise ProtocolError("invalid", f"Content-Encoding {encoding[:30]!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise ProtocolError("invalid", f"the body is not valid {encoding.strip().lower()} data") from None
    if len(data) > limit:
        raise ProtocolError("too_large", f"the decompressed body is over {limit} bytes")
    return data


def bytes_per_value(requested: list[RequestedOutput] | None, binary_output: bool) -> int:
    """What one output value costs in the response: 4 bytes as binary data, at most
    BYTES_PER_VALUE as JSON text (for the response-bytes bound of admission)."""
    flags = [o.binary for o in requested or ()]
    binary = [binary_output if flag is None else flag for flag in flags] or [binary_output]
    return 4 if all(binary) else BYTES_PER_VALUE


def parse_infer_request(
    model_name: str, model_version: str, body: bytes, header_length: str | None, max_elements: int
) -> tuple[InferRequest, bool]:
    """(request, binary_data_output) from an HTTP body."""
    header, binary = _split(body, header_length)
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("invalid", "the request is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ProtocolError("invalid", "the request must be a JSON object")
    parameters = _mapping(doc.get("parameters"), "parameters")
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise ProtocolError("invalid", "'id' must be a string")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) > MAX_TENSORS:
        raise ProtocolError("invalid", f"'inputs' must be a list of at most {MAX_TENSORS} tensors")
    tensors, offset = [], 0
    for index, item in enumerate(inputs):
        tensor, offset = _input(item, index, binary, offset, max_elements)
        tensors.append(tensor)
    if offset != len(binary):
        raise ProtocolError(
            "invalid", f"{len(binary)} bytes of binary data after the JSON, the inputs account for {offset}"
        )
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError("invalid", "parameter 'binary_data_output' must be true or false")
    request = InferRequest(
        model_name, model_version, request_id, parameters, tensors, _outputs(doc.get("outputs"))
    )
    return request, binary_output


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not text.isdigit() or len(text) > 12 or int(text) > len(body):
        raise ProtocolError(
            "invalid", f"{HEADER_LENGTH} must be the JSON header's length, at most the body's ({len(body)})"
        )
    cut = int(text)
    return body[:cut], body[cut:]


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("invalid", f"'{what}' must be an object")
    return value


def _input(item: Any, index: int, binary: bytes, offset: int, max_elements: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise ProtocolError("invalid", f"inputs[{index}] must be an object")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    parameters = _mapping(item.get("parameters"), f"inputs[{index}].parameters")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise ProtocolError("invalid", f"input {str(name)[:60]!r} has neither data nor binary_data_size")
        return from_values(name, datatype, shape, item["data"], max_elements), offset
    if "data" in item:
        raise ProtocolError("invalid", f"input {str(name)[:60]!r} has both data and binary_data_size")
    check_header(name, datatype, shape, max_elements)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
        raise ProtocolError(
            "invalid", f"input {name!r}: binary_data_size {str(size)[:20]} overruns the binary data sent"
        )
    return from_bytes(name, datatype, shape, binary[offset : offset + size], max_elements), offset + size


def _outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_TENSORS:
        raise ProtocolError("invalid", f"'outputs' must be a list of at most {MAX_TENSORS} requested outputs")
    outputs = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError("invalid", f"outputs[{index}] must be an object with a string 'name'")
        parameters = _mapping(item.get("parameters"), f"outputs[{index}].parameters")
        if parameters.get("classification"):
            raise ProtocolError("invalid", "the classification extension is not supported")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise ProtocolError("invalid", f"outputs[{index}]: binary_data must be true or false")
        outputs.append(RequestedOutput(item["name"], binary))
    return outputs


def encode_infer_response(
    response: InferResponse, requested: list[RequestedOutput] | None, binary_output: bool
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is JSON alone)."""
    binary_of = {o.name: o.binary for o in requested or ()}
    outputs, chunks = [], []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        binary = binary_of.get(tensor.name)
        if binary if binary is not None else binary_output:
            raw = to_bytes(tensor.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            # orjson writes contiguous, native-order arrays straight from their buffer
            entry["data"] = np.ascontiguousarray(tensor.data.ravel(), tensor.data.dtype.newbyteorder("="))
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_as_list)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _as_list(value: Any) -> Any:
    """What orjson cannot write natively (an array of a dtype it lacks): as a list."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
