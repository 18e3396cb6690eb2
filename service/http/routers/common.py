"""What the routers share: the error shape for the OpenAPI, and the headers of image responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    """`code` is machine-readable; the other fields name the parameter and what is allowed."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="e.g. invalid_parameter, unknown_model, overloaded")
    message: str = Field(description="What was wrong and what is allowed, in one sentence.")


class ErrorBody(BaseModel):
    """Every error outside /v2: `{"error": {"code", "message", ...details}}`."""

    error: ErrorDetail


_WHEN = {
    400: "Malformed or too deeply nested JSON.",
    401: "IMAGEGEN_API_KEY is set and the request has no key or a wrong one.",
    404: "Unknown model (lists the models) or route.",
    413: "Body larger than IMAGEGEN_MAX_BODY_BYTES.",
    414: "Query string longer than IMAGEGEN_MAX_QUERY_BYTES.",
    415: "Body not application/json.",
    429: "Too many failed key checks, or (OpenAI-compatible route) the server is overloaded: Retry-After.",
    422: "A parameter or body field outside what is allowed (the details say what is).",
    500: "A server fault, never caused by input (logged with the request id).",
    503: "Model loading or failed, queue full or shutting down (Retry-After where retrying helps).",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries in our error shape, for a router's `responses=`."""
    return {status: {"model": ErrorBody, "description": _WHEN[status]} for status in statuses}


class ProtocolErrorBody(BaseModel):
    """Every error under /v2, in the Open Inference Protocol's shape: `{"error": "message"}`."""

    error: str = Field(description="What was wrong and what is allowed, in one sentence.")


_PROTOCOL_WHEN = {
    400: "A request the model cannot take: malformed JSON or tensors, an unknown input, a wrong "
    "datatype or shape, a bad parameter.",
    401: "IMAGEGEN_API_KEY is set and the request has no key or a wrong one (the repository routes: "
    "the admin key).",
    403: "The model repository API is disabled: IMAGEGEN_ADMIN_KEY is not set.",
    404: "Unknown model or version.",
    408: "The body did not arrive within IMAGEGEN_BODY_TIMEOUT (the connection is closed).",
    413: "Body larger than a request to this model can need.",
    500: "A server fault, never caused by input (logged with the request id).",
    503: "Server or model not ready (loading, failed, unloaded), or overloaded: Retry-After says when "
    "to come back.",
}


def protocol_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries in the protocol's error shape, for the /v2 routes."""
    return {
        status: {"model": ProtocolErrorBody, "description": _PROTOCOL_WHEN[status]} for status in statuses
    }


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query `parameters` from a pydantic model (names by alias), for a route that reads
    its query by hand and documents it with `openapi_extra`."""
    schema = model.model_json_schema(by_alias=True)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "default")}
        description = prop.pop("description", "")
        params.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": description,
                "schema": prop,
            }
        )
    return params


# Every request passes the query-length check and may meet a server fault; keyed routers may 401,
# and 429 to a client past its failed key checks.
COMMON_ERRORS = (414, 500)
KEYED_ERRORS = (401, 414, 429, 500)
