"""Client parameters -> a checked ImageRequest. Every bad value raises a 4xx ServiceError that
names the parameter and what is allowed; nothing a client sends reaches the model unchecked.

The request shapes are declared once here: `ImageQuery` (GET /generate and /sample) and
`ImagesBody` (POST /v1/images). FastAPI reads them for validation of names and lengths and for
the OpenAPI description; the values are then checked by the functions below, which know the
model (its classes) and the settings (max_n, max_scale) that a static schema cannot.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from imagegen.contract.manifest import Manifest
from imagegen.contract.sampling import MAX_SEED, default_label
from service.engine.generation import ImageRequest, Output
from service.errors import (
    InvalidParameter,
    LimitExceeded,
    ParameterNotSupported,
    UnknownParameter,
    clip,
)
from service.store.served import ServedModel

_INT = re.compile(r"^\+?[0-9]+$")
FORMATS = ("png", "json")
# Lengths of the free-text values a client may send; longer ones are refused before any lookup,
# so no error message can echo a megabyte back (issue 16, row 2).
MAX_ID_CHARS = 128
MAX_CLASS_CHARS = 128


# Integer query parameters are read as text: our parser gives the error codes and ranges (which
# depend on the model and the settings), but the OpenAPI documents the integer they must be. An
# optional query parameter is absent, never null, so the documented schema has no null.
_Text = Annotated[str, StringConstraints(max_length=64)]


SeedText = Annotated[_Text | None, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_SEED})]
CountText = Annotated[_Text | None, WithJsonSchema({"type": "integer", "minimum": 1})]
IndexText = Annotated[_Text | None, WithJsonSchema({"type": "integer", "minimum": 0})]
FormatText = Annotated[
    _Text | None, WithJsonSchema({"type": "string", "enum": list(FORMATS), "default": "png"})
]
IdText = Annotated[
    Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)] | None,
    WithJsonSchema({"type": "string", "maxLength": MAX_ID_CHARS}),
]


class ImageQuery(BaseModel):
    """The query parameters of GET /generate and GET /sample (the one list of them)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(
        max_length=MAX_ID_CHARS,
        description="A model id (`gan-mnist`) or a family (`gan`), resolved with `dataset=` "
        "(default from settings) to the family's non-baseline model.",
    )
    dataset: IdText = Field(None, description="Dataset when `model` is a family: mnist, fashion, emoji.")
    seed: SeedText = Field(
        None, description="Image i of n uses seed+i. Omitted: the server draws one (returned in X-Seed)."
    )
    n: CountText = Field(
        None, description="Number of images (1..max_n); n > 1 returns one grid PNG, ceil(sqrt(n)) columns."
    )
    scale: CountText = Field(None, description="Nearest-neighbour upscale factor (1..max_scale).")
    format: FormatText = Field(None, description="png (default) or json (base64 PNGs with seeds and labels).")
    digit: IndexText = Field(None, description="Class index 0..num_classes-1 (conditional models only).")
    class_: IdText = Field(
        None,
        alias="class",
        description="Class name, case-insensitive (`bag`, `Ankle boot`, `smileys-emotion`), or its "
        "index (conditional models only).",
    )


QUERY_NAMES = frozenset(f.alias or name for name, f in ImageQuery.model_fields.items())
QueryModel = TypeVar("QueryModel", bound=BaseModel)


def read_query(items: Iterable[tuple[str, str]]) -> ImageQuery:
    """The query string's (name, value) pairs -> an ImageQuery. Unknown and repeated names are
    errors (a typo like `digt=3` must not be ignored, nor `seed=1&seed=2` become 'the last one
    wins'). Linear in the number of pairs: a quadratic check stalled the server for 14.7 s on
    25,000 repeats (issue 16, row 1). Names and lengths are the model's; FastAPI's own query-model
    parameter costs ~150 us more per request (measured, docs/service.md), so it only documents."""
    return read_query_as(ImageQuery, items)


def read_query_as(model: type[QueryModel], items: Iterable[tuple[str, str]]) -> QueryModel:
    """`read_query` for any query model (the latent tools' too): repeated and unknown names are
    422s, then the model validates names and lengths."""
    names = frozenset(f.alias or name for name, f in model.model_fields.items())
    pairs = list(items)
    values = dict(pairs)
    if len(values) != len(pairs):
        counts = Counter(name for name, _ in pairs)
        repeated = sorted(clip(k, 40) for k, c in counts.items() if c > 1)[:8]
        raise InvalidParameter(f"query parameter(s) {repeated} given more than once", parameters=repeated)
    unknown = sorted(clip(k, 40) for k in values.keys() - names)[:8]
    if unknown:
        raise UnknownParameter(
            f"unknown query parameter(s) {unknown}", parameters=unknown, allowed=sorted(names)
        )
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise query_value_error(exc.errors()) from None


def query_value_error(errors: Sequence[Any]) -> InvalidParameter:
    """The first error of a query value, naming its parameter (`model` missing included)."""
    first = errors[0]
    loc = [p for p in first.get("loc", ()) if p != "query"]
    name = str(loc[0]) if loc else "query"
    if first.get("type") == "missing":
        return InvalidParameter(f"{name} is required", parameter=name)
    return InvalidParameter(f"{name}: {clip(str(first.get('msg', '')), 200)}", parameter=name)


def parse_int(name: str, raw: str, *, low: int, high: int, what: str = "an integer") -> int:
    text = raw.strip()
    if len(text) > 40 or not _INT.match(text):  # also keeps int() off 5,000-digit strings
        raise InvalidParameter(
            f"{name} must be {what} in [{low}, {high}], got {clip(raw, 40)!r}",
            parameter=name,
            min=low,
            max=high,
        )
    value = int(text)
    if not low <= value <= high:
        err = LimitExceeded if name in ("n", "scale") and value > high else InvalidParameter
        raise err(f"{name} must be in [{low}, {high}], got {value}", parameter=name, min=low, max=high)
    return value


def parse_seed(raw: str | None) -> int | None:
    if raw is None:
        return None
    return parse_int("seed", raw, low=0, high=MAX_SEED, what="a non-negative integer")


# Most pixel values (images x height x width x channels, after scale) one request may produce:
# 64 28x28 images at scale 16 fit; 1,024 64x64 RGB images at scale 16 (3 GB) do not.
MAX_OUTPUT_VALUES = 2**24


def check_output_size(manifest: Manifest, count: int, scale: int) -> None:
    image = manifest.image
    values = count * image.channels * image.height * image.width * scale * scale
    if values > MAX_OUTPUT_VALUES:
        raise LimitExceeded(
            f"{count} images of {image.width * scale}x{image.height * scale}x{image.channels} are "
            f"{values:,} values, over the limit of {MAX_OUTPUT_VALUES:,} per request: lower n or scale",
            parameter="scale",
            max_values=MAX_OUTPUT_VALUES,
        )


def draw_seed() -> int:
    """A fresh seed for requests without one; small enough to type back in."""
    return secrets.randbelow(2**31)


def require_conditional(served: ServedModel, parameter: str) -> Manifest:
    manifest = served.manifest
    assert manifest is not None
    if not manifest.conditional:
        raise ParameterNotSupported(
            f"model {served.id!r} is unconditional and takes no {parameter}",
            parameter=parameter.rstrip("="),
            model=served.id,
        )
    return manifest


def parse_class(served: ServedModel, value: int | str, parameter: str) -> int:
    """One class from a client: an index (int, or decimal text) or a class name (case-insensitive,
    `-`/`_`/space alike). The one class parser of `class=` and of POST `labels`."""
    manifest = served.manifest
    assert manifest is not None
    top = manifest.num_classes - 1
    index: int | None = None
    if isinstance(value, int):
        index = value if 0 <= value <= top else None
    else:
        index = served.lookup_class(value)
        text = value.strip()
        if index is None and len(text) < 20 and _INT.match(text) and int(text) <= top:
            index = int(text)
    if index is None:
        raise InvalidParameter(
            f"{parameter} = {clip(str(value), 40)!r} is not a class of {served.id!r}",
            parameter=parameter.split("[", 1)[0],
            allowed=manifest.class_names,
            min=0,
            max=top,
        )
    return index


def resolve_class(served: ServedModel, digit: str | None, class_: str | None) -> int | None:
    """The class index from `digit=` (a number) or `class=` (a name or a number)."""
    if digit is None and class_ is None:
        return None
    if digit is not None and class_ is not None:
        raise InvalidParameter("give digit= or class=, not both", parameter="class")
    manifest = require_conditional(served, "digit=" if digit is not None else "class=")
    if digit is not None:
        return parse_int("digit", digit, low=0, high=manifest.num_classes - 1)
    assert class_ is not None
    return parse_class(served, class_, "class")


@dataclass(frozen=True)
class GetRequest:
    """A checked GET /generate or /sample request."""

    request: ImageRequest
    seed: int
    seed_given: bool
    class_index: int | None
    fmt: str


def query_request(served: ServedModel, query: ImageQuery, *, max_n: int, max_scale: int) -> GetRequest:
    """A checked GET /generate or /sample query (or `imagegen sample`'s options) for this model."""
    manifest = served.manifest
    assert manifest is not None
    fmt_value = (query.format or "png").strip().lower()
    if fmt_value not in FORMATS:
        raise InvalidParameter(
            f"format must be one of {list(FORMATS)}, got {clip(query.format or '', 20)!r}",
            parameter="format",
            allowed=list(FORMATS),
        )
    count = 1 if query.n is None else parse_int("n", query.n, low=1, high=max_n)
    factor = 1 if query.scale is None else parse_int("scale", query.scale, low=1, high=max_scale)
    check_output_size(manifest, count, factor)
    class_index = resolve_class(served, query.digit, query.class_)
    seed_value = parse_seed(query.seed)
    given = seed_value is not None
    if seed_value is None:
        seed_value = draw_seed()
    if seed_value + count - 1 > MAX_SEED:
        raise InvalidParameter(
            f"seed + n - 1 must not exceed {MAX_SEED}", parameter="seed", min=0, max=MAX_SEED - count + 1
        )
    seeds = tuple(range(seed_value, seed_value + count))
    labels = item_labels(served, seeds, class_index)
    output: Output = "png_base64_list" if fmt_value == "json" else "png"
    return GetRequest(ImageRequest(seeds, labels, factor, output), seed_value, given, class_index, fmt_value)


def item_labels(served: ServedModel, seeds: Sequence[int], class_index: int | None) -> tuple[int, ...]:
    """One label per seed: the given class, or seed % num_classes (the sampling contract)."""
    manifest = served.manifest
    assert manifest is not None
    if class_index is not None:
        return (class_index,) * len(seeds)
    return tuple(default_label(s, manifest.num_classes) for s in seeds)
