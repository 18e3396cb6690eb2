"""The OpenAPI description of the Open Inference Protocol's infer route: its body and response
(the route reads and writes them by hand, service/oip/rest.py)."""

from __future__ import annotations

from typing import Any

from imagegen.contract.sampling import MAX_SEED
from service.http.routers.common import protocol_error_responses
from service.oip import rest

MODEL_ERRORS = (404, 503)  # unknown model or version; a model that is loading, failed or unloaded

_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "description": "FP32 for z and image, INT64 for label."},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "description": "Values, flat or nested (row-major)."},
        "parameters": {
            "type": "object",
            "description": "binary_data_size: the tensor's bytes follow the JSON (binary data extension).",
        },
    },
}
_INFER_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "description": "seeds (and labels): images as /sample's, instead of z; binary_data_output: "
            "outputs as binary data after the JSON.",
            "properties": {
                "seeds": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
                },
                "labels": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                "binary_data_output": {"type": "boolean"},
                "priority": {"type": "integer"},
                "timeout": {"type": "integer"},
            },
            "additionalProperties": False,  # refused: 400 naming the known ones
        },
        "inputs": {"type": "array", "maxItems": rest.MAX_TENSORS, "items": _TENSOR},
        "outputs": {
            "type": "array",
            "maxItems": rest.MAX_TENSORS,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}
_BINARY = {"type": "string", "format": "binary"}
INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON; with the binary tensor data extension, the JSON header "
        "(Inference-Header-Content-Length bytes) followed by the tensors' bytes.",
        "content": {
            "application/json": {"schema": _INFER_BODY},
            "application/octet-stream": {"schema": _BINARY},
        },
    }
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image tensor FP32 [N, C, H, W]: JSON, or JSON header and binary data "
        "(Inference-Header-Content-Length) when the request asks for binary output.",
        "content": {
            "application/json": {"schema": _INFER_RESPONSE},
            "application/octet-stream": {"schema": _BINARY},
        },
    },
    **protocol_error_responses(400, *MODEL_ERRORS, 408, 413),
}
