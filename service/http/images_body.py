"""POST /v1/images: its body model (`ImagesBody`) and the checks that make it an ImageRequest."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from imagegen.contract.sampling import MAX_SEED
from service.engine.generation import ImageRequest, Output
from service.errors import InvalidRequest, LimitExceeded
from service.http.params import (
    MAX_CLASS_CHARS,
    MAX_ID_CHARS,
    check_output_size,
    draw_seed,
    item_labels,
    parse_class,
    require_conditional,
)
from service.store.served import ServedModel


class ImagesBody(BaseModel):
    """POST /v1/images. Give `seeds` and/or `labels`; when both, the same length."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(max_length=MAX_ID_CHARS, description="Model id or family.")
    dataset: StrictStr | None = Field(
        None, max_length=MAX_ID_CHARS, description="Dataset when `model` is a family."
    )
    seeds: list[Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]] | None = Field(
        None, description="One seed per image. Omitted: the server draws s and uses s, s+1, ..."
    )
    labels: list[StrictInt | Annotated[StrictStr, Field(max_length=MAX_CLASS_CHARS)]] | None = Field(
        None, description="One class (index or name) per image. Omitted: seed % num_classes."
    )
    format: Literal["png_base64", "npy"] = Field(
        "png_base64",
        description="png_base64: JSON with one base64 PNG per image; npy: application/x-npy, float32 "
        "array (N, C, H*scale, W*scale) with values in [0, 1].",
    )
    scale: Annotated[StrictInt, Field(ge=1)] = Field(1, description="Nearest-neighbour upscale factor.")


def body_request(served: ServedModel, spec: ImagesBody, *, max_items: int, max_scale: int) -> ImageRequest:
    """A checked POST /v1/images body -> the ImageRequest its batcher runs."""
    count = _item_count(spec, max_items)
    if spec.scale > max_scale:
        raise LimitExceeded(
            f"scale must be in [1, {max_scale}], got {spec.scale}", parameter="scale", min=1, max=max_scale
        )
    assert served.manifest is not None
    check_output_size(served.manifest, count, spec.scale)
    if spec.seeds is not None:
        seeds = tuple(spec.seeds)
    else:
        start = draw_seed()
        seeds = tuple(range(start, start + count))
    if spec.labels is None:
        labels = item_labels(served, seeds, None)
    else:
        require_conditional(served, "labels")
        labels = tuple(parse_class(served, value, f"labels[{i}]") for i, value in enumerate(spec.labels))
    output: Output = "npy" if spec.format == "npy" else "png_base64_list"
    return ImageRequest(seeds, labels, spec.scale, output)


def _item_count(spec: ImagesBody, max_items: int) -> int:
    if spec.seeds is None and spec.labels is None:
        raise InvalidRequest("give seeds and/or labels", errors=[{"loc": ["seeds"], "msg": "missing"}])
    if spec.seeds is not None and spec.labels is not None and len(spec.seeds) != len(spec.labels):
        raise InvalidRequest(
            f"seeds ({len(spec.seeds)}) and labels ({len(spec.labels)}) differ in length",
            errors=[{"loc": ["labels"], "msg": "length differs from seeds"}],
        )
    count = len(spec.seeds if spec.seeds is not None else spec.labels or [])
    if count == 0:
        raise InvalidRequest("seeds/labels must not be empty", errors=[{"loc": ["seeds"], "msg": "empty"}])
    check_item_count(count, max_items)
    return count


def check_item_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise LimitExceeded(
            f"{count} images requested, at most {max_items}", parameter="seeds", max=max_items
        )
