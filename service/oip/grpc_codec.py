"""ModelInferRequest messages -> the protocol's InferRequest: each input from its raw bytes or
its typed contents field, bounded like HTTP's tensors (service/oip/tensors.py)."""

from __future__ import annotations

from typing import Any

from service.oip import rest
from service.oip.errors import ProtocolError
from service.oip.tensors import Tensor, from_bytes, from_values
from service.oip.types import InferRequest, RequestedOutput

# InferTensorContents' field for each datatype (the protocol's table).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_FIELDS = frozenset([*CONTENTS.values(), "bytes_contents"])


def decode_request(message: Any, max_elements: int) -> InferRequest:
    """A ModelInferRequest -> InferRequest: tensors from raw_input_contents (then for every input,
    in order) or from each input's typed contents; parameters as plain values."""
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise ProtocolError(
            "invalid", f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs: give one per input"
        )
    if len(message.inputs) > rest.MAX_TENSORS:
        raise ProtocolError("invalid", f"at most {rest.MAX_TENSORS} inputs")
    tensors = [
        _input(tensor, raw[i] if raw else None, max_elements) for i, tensor in enumerate(message.inputs)
    ]
    parameters = {key: _value(value) for key, value in message.parameters.items()}
    outputs = [RequestedOutput(o.name) for o in message.outputs] or None
    return InferRequest(message.model_name, message.model_version, message.id, parameters, tensors, outputs)


def _input(tensor: Any, raw: bytes | None, max_elements: int) -> Tensor:
    shape = list(tensor.shape)
    given = [f.name for f, _ in tensor.contents.ListFields()] if tensor.HasField("contents") else []
    if raw is not None:
        if given:
            raise ProtocolError(
                "invalid", f"input {tensor.name!r}: contents and raw_input_contents both given"
            )
        return from_bytes(tensor.name, tensor.datatype, shape, raw, max_elements)
    field = CONTENTS.get(tensor.datatype)
    if field is None or set(given) - {field}:
        raise ProtocolError(
            "invalid",
            f"input {tensor.name!r}: {tensor.datatype[:20]} data goes in contents.{field or '?'} "
            f"or raw_input_contents, got {sorted(set(given) & _FIELDS)}",
        )
    values = getattr(tensor.contents, field)
    return from_values(tensor.name, tensor.datatype, shape, list(values), max_elements)


def _value(parameter: Any) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)
