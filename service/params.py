"""Client parameters -> a checked ImageRequest. Every bad value raises a 4xx ServiceError that
names the parameter and what is allowed; nothing a client sends reaches the model unchecked."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from imagegen.contract.manifest import Manifest
from imagegen.contract.sampling import MAX_SEED, default_label
from service.errors import InvalidParameter, LimitExceeded, ParameterNotSupported
from service.generation import ImageRequest, Output
from service.registry import ServedModel

_INT = re.compile(r"^\+?[0-9]+$")
FORMATS = ("png", "json")


def parse_int(name: str, raw: str, *, low: int, high: int, what: str = "an integer") -> int:
    text = raw.strip()
    if len(text) > 40 or not _INT.match(text):  # also keeps int() off 5,000-digit strings
        raise InvalidParameter(
            f"{name} must be {what} in [{low}, {high}], got {raw[:40]!r}", parameter=name, min=low, max=high
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


def resolve_class(served: ServedModel, digit: str | None, class_: str | None) -> int | None:
    """The class index from `digit=` (a number) or `class=` (a name, case-insensitive, or a number)."""
    manifest = served.manifest
    assert manifest is not None
    given = "digit" if digit is not None else "class" if class_ is not None else None
    if given is None:
        return None
    if digit is not None and class_ is not None:
        raise InvalidParameter("give digit= or class=, not both", parameter="class")
    if not manifest.conditional:
        raise ParameterNotSupported(
            f"model {served.id!r} is unconditional and takes no {given}=", parameter=given, model=served.id
        )
    top = manifest.num_classes - 1
    if digit is not None:
        return parse_int("digit", digit, low=0, high=top)
    assert class_ is not None
    index = served.lookup_class(class_)
    if index is None and len(class_) < 20 and _INT.match(class_.strip()):
        index = int(class_.strip())
        if index > top:
            index = None
    if index is None:
        raise InvalidParameter(
            f"unknown class {class_[:60]!r} for model {served.id!r}",
            parameter="class",
            allowed=manifest.class_names,
            min=0,
            max=top,
        )
    return index


@dataclass(frozen=True)
class GetRequest:
    """A checked GET /generate or /sample request."""

    request: ImageRequest
    seed: int
    seed_given: bool
    class_index: int | None
    fmt: str


def image_request(
    served: ServedModel,
    *,
    seed: str | None,
    n: str | None,
    scale: str | None,
    fmt: str | None,
    digit: str | None,
    class_: str | None,
    max_n: int,
    max_scale: int,
) -> GetRequest:
    manifest = served.manifest
    assert manifest is not None
    fmt_value = (fmt or "png").strip().lower()
    if fmt_value not in FORMATS:
        raise InvalidParameter(
            f"format must be one of {list(FORMATS)}, got {fmt[:20]!r}",
            parameter="format",
            allowed=list(FORMATS),
        )
    count = 1 if n is None else parse_int("n", n, low=1, high=max_n)
    factor = 1 if scale is None else parse_int("scale", scale, low=1, high=max_scale)
    check_output_size(manifest, count, factor)
    class_index = resolve_class(served, digit, class_)
    seed_value = parse_seed(seed)
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
