"""Service settings: one typed class, read from `IMAGEGEN_*` environment variables.

Built once in `create_app(settings)` (or by `imagegen serve` from its options) and passed down;
nothing here runs at import time.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_threads() -> int:
    """One core fewer than the machine has (at least one): the event loop needs a core of its own.
    Measured on 2 cores: intra-op 1 served ~1.5x the requests of intra-op 2."""
    return max(1, (os.cpu_count() or 1) - 1)


class Settings(BaseSettings):
    """Everything the service can be told, each field an `IMAGEGEN_<NAME>` variable."""

    model_config = SettingsConfigDict(env_prefix="IMAGEGEN_", extra="ignore", frozen=True)

    models_dir: Path = Field(
        Path("./models"), description="Model repository: <id>/manifest.json + <id>/<version>/model.onnx."
    )
    grids_dir: Path | None = Field(
        Path("./docs/grids"),
        description="Folder of training sample grids (`<model-id>.png`) the playground's model card "
        "shows (GET /v1/models/{id}/grid); a missing folder or file is a 404.",
    )
    provider: Literal["auto", "cuda", "cpu"] = Field(
        "auto",
        description="auto: CUDA when onnxruntime offers it and a GPU answers, else CPU; "
        "cuda: fail at start-up without a GPU; cpu: always CPU.",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the HTTP server (0: any free port).")
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="TCP port of the Open Inference Protocol over gRPC (on `host`); unset: no gRPC. "
        "Needs grpcio (pip install 'imagegen[grpc]'). With it, a quarter of the connection limit "
        "goes to gRPC, the rest to HTTP.",
    )
    grpc_idle_timeout: float = Field(
        30.0, gt=0.0, le=3600.0, description="Seconds a gRPC connection may stay idle; then it is closed."
    )
    http: Literal["auto", "httptools", "h11"] = Field(
        "auto", description="HTTP parser: auto (httptools when installed, else h11), httptools or h11."
    )
    limit_concurrency: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="Most open client connections; a new one past it gets a JSON 503 with Retry-After "
        "and is closed at once. Lowered at start-up to fit the process's file-descriptor limit.",
    )
    max_client_connections: int = Field(
        256,
        ge=1,
        le=1_000_000,
        description="Most open connections from one client address (trusted proxies excepted); past it "
        "a new one gets a JSON 503 and is closed, so one client's idle sockets cannot take every slot.",
    )
    max_header_bytes: int = Field(
        16384,
        ge=1024,
        le=1 << 20,
        description="Most bytes of a request's line and headers; past it 431 and the connection is "
        "closed, before the rest is read.",
    )
    key_failure_limit: int = Field(
        20,
        ge=0,
        le=1_000_000,
        description="Wrong API or admin keys one client may send in a minute; past it 429 with "
        "Retry-After (before any key is compared) until the minute ends. 0: no limit.",
    )
    trusted_proxies: str = Field(
        "",
        max_length=4096,
        description="Comma-separated IPs or CIDRs of reverse proxies (e.g. the shipped nginx) whose "
        "X-Forwarded-For names the client; the early-retry hold and the API-key failure limit then "
        "key on that address. Empty: the TCP peer is the client.",
    )
    header_timeout: float = Field(
        10.0,
        gt=0.0,
        le=3600.0,
        description="Seconds a connection may take to send a request's complete headers, counted from "
        "its opening or from the end of the previous response; then it is closed.",
    )
    keepalive_timeout: float = Field(
        5.0, gt=0.0, le=3600.0, description="Seconds an idle keep-alive connection is kept after a response."
    )
    disk_check_interval: float = Field(
        10.0,
        ge=0.0,
        le=86400.0,
        description="Seconds between checks that each loaded model's files are still on disk unchanged "
        "(a stat; sha256 only when size or mtime moved); a change is reported in /v1/models and "
        "/readyz. 0: no checks.",
    )
    graceful_timeout: float = Field(
        20.0,
        ge=0.0,
        le=3600.0,
        description="On SIGTERM, seconds in-flight requests get to finish (clients that do not read "
        "included) before they are cancelled and their connections dropped; below compose's 30 s "
        "stop grace period.",
    )
    max_batch: int = Field(
        64, ge=1, le=65536, description="Most images one ONNX Runtime run takes (the dynamic batch bound)."
    )
    max_delay_ms: float = Field(
        2.0,
        ge=0.0,
        le=10000.0,
        description="Longest the oldest waiting request is held to let a batch fill, in milliseconds.",
    )
    wait_alone: bool = Field(
        False,
        description="Hold even a request that arrived alone for max_delay_ms (Triton's behaviour); "
        "default: one that finds the model idle, or with no other request within max_delay_ms "
        "before it, runs at once.",
    )
    queue_limit: int = Field(
        4096,
        ge=1,
        description="Most images waiting per model; past it requests get 503 with Retry-After.",
    )
    total_queue_limit: int = Field(
        8192,
        ge=1,
        description="Most images admitted and not yet finished over all models; past it requests get "
        "503 with Retry-After. Larger than queue_limit, so one model's storm leaves room for others.",
    )
    max_queue_wait_ms: float = Field(
        500.0,
        gt=0.0,
        le=600_000.0,
        description="A model admits no more images than it drains in this time (its measured images/s; "
        "at least two runs' worth, at most queue_limit); past it: 503 with Retry-After, before any work.",
    )
    max_response_bytes: int = Field(
        256 << 20,
        ge=1 << 20,
        description="Most bytes of image responses being built or sent at once (a client that does not "
        "read holds its response); past it requests get 503 with Retry-After.",
    )
    body_timeout: float = Field(
        10.0,
        gt=0.0,
        le=3600.0,
        description="Seconds a client may take to send a request body once its headers are in; then "
        "408 `body_timeout` and the connection is closed.",
    )
    upload_decode_timeout: float = Field(
        5.0,
        gt=0.0,
        le=60.0,
        description="Seconds an uploaded image may take to decode (its size is bounded first; the "
        "largest allowed decodes in ~40 ms); then 422 `image_too_complex`.",
    )
    max_n: int = Field(64, ge=1, description="Most images one GET /generate or /sample request may ask for.")
    max_items: int = Field(1024, ge=1, description="Most images one POST /v1/images request may ask for.")
    max_scale: int = Field(
        16, ge=1, le=64, description="Largest nearest-neighbour upscale factor (`scale=`)."
    )
    default_dataset: str = Field(
        "mnist", min_length=1, description="Dataset a bare family name (`model=gan`) resolves to."
    )
    cpu_threads: int = Field(
        default_factory=_default_threads,
        ge=1,
        le=256,
        description="ONNX Runtime intra-op threads per session on CPU, per worker process (default: "
        "cores - 1, at least 1, with one worker; cores / workers, at least 1, with several).",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Server processes sharing the port, each with its own models, batchers and event "
        "loop (default: one per available core: the CPU affinity, capped by the cgroup's CPU quota; "
        "1: a single process). With several, queue and connection limits are split between them, "
        "and repository load/unload reaches every worker before it answers.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: human-readable lines; json: one JSON object per line."
    )
    access_log: bool = Field(True, description="Log one line per request (with its request id).")
    opentelemetry: bool = Field(
        False,
        description="FastAPI's built-in OpenTelemetry instrumentation (a span and metrics per request, "
        "once an OpenTelemetry SDK is configured in the process). Off, FastAPI skips its per-request "
        "check for a configured SDK.",
    )
    api_key: SecretStr | None = Field(
        None,
        min_length=1,
        description="When set, every endpoint needs `Authorization: Bearer <key>` or `X-API-Key: <key>` "
        "except /healthz and a bare /readyz status (its per-model detail needs the key), and "
        "/metrics when public_metrics is on.",
    )
    admin_key: SecretStr | None = Field(
        None,
        min_length=1,
        description="When set, the model repository API (POST /v2/repository/index, "
        "/v2/repository/models/{id}/load and /unload) answers requests carrying "
        "`Authorization: Bearer <admin key>`; unset: those routes are disabled (403).",
    )
    public_metrics: bool = Field(
        False, description="Serve /metrics without the API key (for a scraper that cannot send one)."
    )
    max_query_bytes: int = Field(
        4096,
        ge=256,
        le=65536,
        description="Longest query string a request may carry, in bytes; longer ones get 414 "
        "`query_too_long` before any parsing. Kept well below the HTTP parser's own request-line "
        "limit (~64-128 KB), so clients see our JSON error, not the parser's plain-text 400.",
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 28, description="Largest POST body, in bytes; larger ones get 413."
    )
    max_json_depth: int = Field(
        16,
        ge=2,
        le=256,
        description="Deepest nesting of arrays/objects a JSON body may have; deeper ones get 400 "
        "`json_too_deep` before the JSON is parsed.",
    )

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: object) -> object:
        """`IMAGEGEN_LOG_LEVEL=debug` is DEBUG; an empty `IMAGEGEN_API_KEY=` or
        `IMAGEGEN_ADMIN_KEY=` means no key."""
        if isinstance(data, dict):
            if isinstance(data.get("log_level"), str):
                data = {**data, "log_level": data["log_level"].upper()}
            for secret in ("api_key", "admin_key"):
                if data.get(secret) == "":
                    data = {k: v for k, v in data.items() if k != secret}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_n > self.queue_limit:
            raise ValueError(f"max_n ({self.max_n}) must not exceed queue_limit ({self.queue_limit})")
        if self.max_items > self.queue_limit:
            raise ValueError(f"max_items ({self.max_items}) must not exceed queue_limit ({self.queue_limit})")
        if self.admin_key is not None and self.admin_key == self.api_key:
            raise ValueError(
                "admin_key must differ from api_key: every API client would control the repository"
            )
        if self.queue_limit > self.total_queue_limit:
            total = self.total_queue_limit
            raise ValueError(f"queue_limit ({self.queue_limit}) must not exceed total_queue_limit ({total})")
        for part in filter(None, (p.strip() for p in self.trusted_proxies.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {part[:60]!r} is not an IP address or CIDR") from None
        return self


class SettingsError(Exception):
    """Settings that cannot start the service; the message is one line per problem."""


def load_settings(**overrides: Any) -> Settings:  # any values: Settings validates them
    """Read settings from the environment, with explicit overrides (e.g. command-line options) on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        given = {k for k, v in overrides.items() if v is not None}
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            if not err["loc"]:
                name = "settings"
            elif field in given:  # the user typed the flag: name the flag, not the variable
                name = "--" + field.replace("_", "-")
            else:
                name = f"IMAGEGEN_{field.upper()}"
            problems.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
