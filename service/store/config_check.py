"""Checking a model folder's Triton configuration (`config.pbtxt`) against its manifest.

Export writes the file from the manifest (imagegen.contract.triton_config); Triton serves the
folder by it. A file that no longer describes the model (another name, platform, input, data
type or dims) would make Triton serve it differently from us, or refuse it, so the repository
scan reports such a model as failed with the first difference. The file may be edited where it
does not matter here (batch bound, batcher, instance groups, comments, field order, `dims` as a
list or repeated), so the fields that matter are compared, not the text.

The reader understands the protocol-buffer text format as far as Triton's configurations use
it: fields, nested messages (`{}` or `<>`), lists (`[...]`), strings, numbers, enum names and
comments. Torch-free and protobuf-free: the service does not depend on tritonclient.
"""

from __future__ import annotations

import re
from typing import Any

from imagegen.contract.manifest import Manifest
from imagegen.contract.triton_config import CONFIG_NAME, PLATFORM, model_config

# Triton also takes the backend in place of the platform.
BACKEND = "onnxruntime"

Message = dict[str, list[Any]]  # field name -> its values (a singular field has one)

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*                        # whitespace, comments
    |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<punct>[{}\[\]<>:,;])
    |(?P<word>[A-Za-z0-9_.+\-]+)
    |(?P<bad>.)""",
    re.VERBOSE,
)
_INT = re.compile(r"[+-]?[0-9]+")
_HEX = re.compile(r"[+-]?0[xX][0-9a-fA-F]+")
_CLOSE = {"{": "}", "<": ">"}


class ConfigSyntaxError(ValueError):
    """The file is not protocol-buffer text; the message says where (line) and what."""


def parse_pbtxt(text: str) -> Message:
    """Protocol-buffer text -> {field: [values]}; nested messages are Messages, scalars are str
    (strings and enum names), int or float."""
    tokens = _tokens(text)
    message, end = _message(tokens, 0, None)
    if end != len(tokens):
        raise ConfigSyntaxError(f"line {tokens[end][2]}: unexpected {tokens[end][1]!r}")
    return message


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, line) of each token; kind is string, punct or word."""
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None:
            continue  # whitespace or a comment
        line = text.count("\n", 0, match.start()) + 1
        if kind == "bad":
            raise ConfigSyntaxError(f"line {line}: unexpected character {match.group()!r}")
        tokens.append((kind, match.group(), line))
    return tokens


def _message(tokens: list[tuple[str, str, int]], at: int, close: str | None) -> tuple[Message, int]:
    """The fields from `at` to the `close` token (or the end); (message, index after it)."""
    fields: Message = {}
    while at < len(tokens):
        kind, text, line = tokens[at]
        if close is not None and text == close and kind == "punct":
            return fields, at + 1
        if kind != "word":
            raise ConfigSyntaxError(f"line {line}: expected a field name, got {text!r}")
        at += 1
        if _is(tokens, at, ":"):
            at += 1
        values, at = _values(tokens, at, line)
        fields.setdefault(text, []).extend(values)
        if _is(tokens, at, ",") or _is(tokens, at, ";"):
            at += 1
    if close is not None:
        raise ConfigSyntaxError(f"the file ends before a closing {close!r}")
    return fields, at


def _values(tokens: list[tuple[str, str, int]], at: int, line: int) -> tuple[list[Any], int]:
    """One value, or each value of a `[...]` list."""
    if not _is(tokens, at, "["):
        value, at = _value(tokens, at, line)
        return [value], at
    at += 1
    values: list[Any] = []
    while not _is(tokens, at, "]"):
        value, at = _value(tokens, at, line)
        values.append(value)
        if _is(tokens, at, ","):
            at += 1
        elif not _is(tokens, at, "]"):
            raise ConfigSyntaxError(f"line {line}: expected ',' or ']' in a list")
    return values, at + 1


def _value(tokens: list[tuple[str, str, int]], at: int, line: int) -> tuple[Any, int]:
    if at >= len(tokens):
        raise ConfigSyntaxError(f"line {line}: the file ends where a value was expected")
    kind, text, line = tokens[at]
    if kind == "punct" and text in _CLOSE:
        return _message(tokens, at + 1, _CLOSE[text])
    if kind == "string":
        return _unquote(text), at + 1
    if kind == "word":
        return _scalar(text), at + 1
    raise ConfigSyntaxError(f"line {line}: expected a value, got {text!r}")


def _is(tokens: list[tuple[str, str, int]], at: int, punct: str) -> bool:
    return at < len(tokens) and tokens[at][0] == "punct" and tokens[at][1] == punct


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _scalar(text: str) -> Any:
    if _INT.fullmatch(text):
        return int(text)
    if _HEX.fullmatch(text):
        return int(text, 16)
    try:
        return float(text)
    except ValueError:
        return text  # an enum name (TYPE_FP32) or true / false


# -- the check --------------------------------------------------------------------------------


def config_problem(text: str, manifest: Manifest) -> str | None:
    """None when the configuration describes the model of `manifest`; else the first difference,
    in words a client may read (no paths)."""
    try:
        config = parse_pbtxt(text)
    except ConfigSyntaxError as exc:
        return f"{CONFIG_NAME} is not valid protobuf text ({exc})"
    expected = model_config(manifest)
    for problem in (
        _name_problem(config, manifest.id),
        _platform_problem(config),
        _batch_problem(config),
        _tensors_problem(config, "input", expected["input"]),
        _tensors_problem(config, "output", expected["output"]),
    ):
        if problem is not None:
            return f"{CONFIG_NAME} does not match the model: {problem}"
    return None


def _one(message: Message, field: str) -> Any:
    """A singular field's value (the last, as protobuf's text parser keeps), or None."""
    values = message.get(field)
    return values[-1] if values else None


def _name_problem(config: Message, model_id: str) -> str | None:
    name = _one(config, "name")
    if name is not None and name != model_id:  # Triton's rule: absent, or the folder's name
        return f"name {str(name)[:60]!r}, the model is {model_id!r}"
    return None


def _platform_problem(config: Message) -> str | None:
    platform, backend = _one(config, "platform"), _one(config, "backend")
    if platform == PLATFORM or (platform is None and backend == BACKEND):
        return None
    found = f"platform {str(platform)[:40]!r}" if platform is not None else f"backend {str(backend)[:40]!r}"
    return f"{found}, expected platform {PLATFORM!r} (or backend {BACKEND!r})"


def _batch_problem(config: Message) -> str | None:
    size = _one(config, "max_batch_size")
    if not isinstance(size, int) or size <= 0:
        return f"max_batch_size {str(size)[:20]}, expected a positive integer (the first dim is the batch)"
    return None


def _tensors_problem(config: Message, field: str, expected: list[dict[str, Any]]) -> str | None:
    given = [t for t in config.get(field, []) if isinstance(t, dict)]
    names = sorted(str(_one(t, "name")) for t in given)
    wanted = sorted(t["name"] for t in expected)
    if names != wanted:
        return f"{field}s {[n[:40] for n in names][:8]}, the model's are {wanted}"
    by_name = {_one(t, "name"): t for t in given}
    for tensor in expected:
        problem = _tensor_problem(by_name[tensor["name"]], tensor)
        if problem is not None:
            return f"{field} {tensor['name']!r} {problem}"
    return None


def _tensor_problem(given: Message, expected: dict[str, Any]) -> str | None:
    data_type = _one(given, "data_type")
    if data_type != expected["data_type"]:
        return f"has data_type {str(data_type)[:20]}, the model's is {expected['data_type']}"
    dims = given.get("dims", [])
    if dims != expected["dims"]:
        return f"has dims {dims[:8]}, the model's are {expected['dims']} (without the batch axis)"
    if "reshape" in expected:
        reshape = _one(given, "reshape")
        shape = reshape.get("shape", []) if isinstance(reshape, dict) else None
        wanted = expected["reshape"]["shape"]
        if shape != wanted:
            return f"needs reshape {{ shape: {wanted} }} (the model takes one value per item)"
    return None
