"""The latent tools' requests (GET /interpolate, POST /v1/reconstruct): their query models and
the checks, headers, ETag and size bound they share."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.dataplane.plane import DataPlane
from service.engine import latent
from service.errors import InvalidParameter, clip
from service.http.delivery import estimate_bytes
from service.http.params import MAX_ID_CHARS, CountText, FormatText, IdText, IndexText, SeedText, parse_int
from service.store.served import ServedModel


class ModelQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(max_length=MAX_ID_CHARS, description="A model id (`gan-mnist`) or a family (`gan`).")
    dataset: IdText = Field(None, description="Dataset when `model` is a family: mnist, fashion, emoji.")
    digit: IndexText = Field(None, description="Class index 0..num_classes-1 (conditional models only).")
    class_: IdText = Field(None, alias="class", description="Class name or index (conditional models only).")
    scale: CountText = Field(None, description="Nearest-neighbour upscale factor (1..max_scale).")
    format: FormatText = Field(None, description="png (default) or json.")


class InterpolateQuery(ModelQuery):
    """GET /interpolate: the latents of seed_a and seed_b, walked by spherical interpolation."""

    seed_a: SeedText = Field(description="Seed of the strip's first image (its latent, as /sample's).")
    seed_b: SeedText = Field(description="Seed of the strip's last image.")
    steps: CountText = Field(
        None, description=f"Images in the strip, {latent.MIN_STEPS}..{latent.MAX_STEPS} (default 8)."
    )


class ReconstructQuery(ModelQuery):
    """POST /v1/reconstruct: the query; the body is the image."""


def scale_and_format(query: ModelQuery, max_scale: int) -> tuple[int, str]:
    scale = 1 if query.scale is None else parse_int("scale", query.scale, low=1, high=max_scale)
    fmt = (query.format or "png").strip().lower()
    if fmt not in ("png", "json"):
        raise InvalidParameter(
            f"format must be one of ['png', 'json'], got {clip(query.format or '', 20)!r}",
            parameter="format",
            allowed=["png", "json"],
        )
    return scale, fmt


def model_headers(served: ServedModel) -> dict[str, str]:
    assert served.manifest is not None
    return {"X-Model-Id": served.id, "X-Model-Version": str(served.manifest.version)}


def latent_etag(served: ServedModel, *parts: object) -> str:
    """Everything the bytes depend on, provider included (as service.http.etag's image ETag)."""
    assert served.manifest is not None
    key = "|".join(str(p) for p in (served.id, served.manifest.version, served.provider or "", *parts))
    return '"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'


def response_bytes(served: ServedModel, images: int, scale: int, fmt: str) -> int:
    """Upper bound of the response's size, reserved at admission (a strip's canvas is no larger
    than the grid estimate_bytes assumes)."""
    image = served.require_manifest().image
    values = image.channels * image.height * image.width
    return estimate_bytes(values, images, scale, "png" if fmt == "png" else "json")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def candidate_classes(served: ServedModel, klass: int | None) -> list[int]:
    """The classes to try: the one asked for, every class of a conditional model, or 0."""
    manifest = served.require_manifest()
    if not manifest.conditional:
        return [0]
    return [klass] if klass is not None else list(range(manifest.num_classes))


def decode_upload(content_type: str, body: bytes, spec: Any) -> np.ndarray:
    return latent.model_input(latent.decode_image(latent.read_upload(content_type, body)), spec)


async def decode_upload_within(
    plane: DataPlane, content_type: str, body: bytes, spec: Any, limit_s: float
) -> np.ndarray:
    """The upload decoded off the event loop; past `limit_s` (IMAGEGEN_UPLOAD_DECODE_TIMEOUT)
    the request gets 422 `image_too_complex`."""
    too_slow = latent.ImageTooComplex(
        f"the image took over {limit_s} s to decode (IMAGEGEN_UPLOAD_DECODE_TIMEOUT); send a smaller "
        f"or simpler PNG or JPEG ({spec.width}x{spec.height} is all the model uses)"
    )
    return await plane.off_loop(decode_upload, content_type, body, spec, timeout_s=limit_s, too_slow=too_slow)
