"""Tensors of the Open Inference Protocol: datatypes, and decoding what a client sent (JSON values,
protobuf typed contents, or raw little-endian bytes) into numpy arrays, within bounds.

Every check raises ProtocolError("invalid", ...) naming the tensor and what was wrong, so a bad
tensor is a 400 / INVALID_ARGUMENT, never a crash: shape and datatype are checked before the
data is touched, and the element count is bounded before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from service.oip.errors import ProtocolError

# The protocol's fixed-size datatypes. BYTES (variable length) and BF16 (no numpy type) are not
# decoded: no model here takes them, and refusing them early gives the clearer error.
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(kind)
    for name, kind in {
        "BOOL": np.bool_,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
    }.items()
}
MAX_DIMS = 8


@dataclass(frozen=True)
class Tensor:
    """A named tensor; `data` has `shape` and the numpy type of `datatype`."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


class Header(NamedTuple):
    """A tensor's checked name, datatype and shape, with its numpy type and element count."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    dtype: np.dtype
    size: int  # element count


def check_header(name: object, datatype: object, shape: object, max_elements: int) -> Header:
    """The header of a tensor as a client sent it, checked; refuses unknown types and absurd shapes."""
    if not isinstance(name, str) or not name:
        raise ProtocolError("invalid", "every tensor needs a non-empty string 'name'")
    if datatype == "BYTES" or datatype == "BF16":
        raise ProtocolError("invalid", f"tensor {name!r}: datatype {datatype} is not supported here")
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise ProtocolError(
            "invalid", f"tensor {name!r}: unknown datatype {str(datatype)[:20]!r}; one of {sorted(DTYPES)}"
        )
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str | bytes)
        or len(shape) > MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(
            "invalid", f"tensor {name!r}: shape must be a list of at most {MAX_DIMS} non-negative integers"
        )
    count = 1
    for dim in shape:
        count *= dim
        if count > max_elements:  # checked per dim, so a product of huge dims never gets big
            raise ProtocolError(
                "invalid", f"tensor {name!r}: shape {list(shape)[:MAX_DIMS]} is over {max_elements} elements"
            )
    return Header(name, datatype, tuple(shape), DTYPES[datatype], count)


def from_bytes(name: object, datatype: object, shape: object, raw: bytes, max_elements: int) -> Tensor:
    """A tensor from its raw bytes: little-endian, row-major, exactly count * itemsize bytes.
    Name, datatype and shape are as the client sent them: check_header checks them first."""
    name, datatype, shape, dtype, count = check_header(name, datatype, shape, max_elements)
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            "invalid",
            f"tensor {name!r}: {len(raw)} bytes of data, but {datatype} {list(shape)} needs "
            f"{count * dtype.itemsize}",
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)  # a native, writable copy
    return Tensor(name, datatype, shape, array.reshape(shape))


def from_values(name: object, datatype: object, shape: object, values: Any, max_elements: int) -> Tensor:
    """A tensor from a list of numbers, flat or nested row-major (JSON `data`, protobuf contents).
    Name, datatype and shape are as the client sent them: check_header checks them first."""
    name, datatype, shape, dtype, count = check_header(name, datatype, shape, max_elements)
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise ProtocolError("invalid", f"tensor {name!r}: data must be an array of numbers")
    try:
        array = np.array(values)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(
            "invalid", f"tensor {name!r}: data must be numbers, flat or nested in a regular shape"
        ) from None
    if array.size != count:
        raise ProtocolError(
            "invalid", f"tensor {name!r}: {array.size} values, but shape {list(shape)} needs {count}"
        )
    return Tensor(name, datatype, shape, _cast(name, datatype, dtype, array).reshape(shape))


def _cast(name: str, datatype: str, dtype: np.dtype, array: np.ndarray) -> np.ndarray:
    """Numbers of the right kind only: no strings, no floats for an integer type, no out-of-range ints."""
    allowed = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}[dtype.kind]
    if array.size and array.dtype.kind not in allowed:
        what = {"b": "booleans", "f": "numbers"}.get(dtype.kind, "integers")
        raise ProtocolError("invalid", f"tensor {name!r}: {datatype} data must be {what}")
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ProtocolError("invalid", f"tensor {name!r}: a value is outside the range of {datatype}")
    return array.astype(dtype)


def to_bytes(array: np.ndarray) -> bytes:
    """Raw little-endian, row-major bytes of an array, as the protocol's binary data."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
