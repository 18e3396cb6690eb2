"""The Open Inference Protocol's messages, transport-free: what the REST codec and the gRPC
servicer decode into and encode from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from service.oip.tensors import Tensor

DATATYPES = {"z": "FP32", "label": "INT64", "image": "FP32"}
OUTPUT = "image"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # HTTP's binary_data parameter; None: the request's default


@dataclass
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None  # None: every output


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]


class ServerMetadata(TypedDict):
    """The protocol's server metadata (JSON body and ServerMetadataResponse fields)."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(TypedDict):
    name: str
    datatype: str
    shape: list[int]  # -1 for a variable dim


class ModelMetadata(TypedDict):
    """The protocol's model metadata (JSON body and ModelMetadataResponse fields)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
