"""Latent tools, torch-free: spherical interpolation between two seeds' latents, and a VAE's
encode-decode of an uploaded image.

- `interpolation_latents(seed_a, seed_b, dim, steps)`: the contract's `latent()` of each seed,
  walked by slerp (the path stays where a standard normal puts its mass; a straight line between
  two latents passes through the low-norm middle, which decodes to washed-out images).
- `read_upload` / `decode_image` / `model_input`: an upload (raw PNG/JPEG body or multipart
  `file`) -> checked Pillow image -> the model's channels and size as float32 NCHW in [0, 1].
  The pixel count is checked from the header, before any pixel is decoded.
- `Encoders`: the VAE's exported encoder (`extra_onnx.encoder` in the manifest), loaded on first
  use with its sha256 verified, through service/engine/runtime.py (the models' providers), one
  session per served model version, evicted when that version is retired.

Nothing here knows HTTP: bad input raises the service's 4xx errors.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort
from PIL import Image, UnidentifiedImageError

from imagegen.contract.manifest import ImageSpec, Manifest, OnnxSpec, sha256_file
from imagegen.contract.sampling import latent
from service.engine import imaging
from service.engine.runtime import RuntimeOptions, open_session
from service.errors import ModelLoadError, PayloadTooLarge, ServiceError, UnsupportedMediaType, clip

log = logging.getLogger("imagegen.latent")

MIN_STEPS, MAX_STEPS = 2, 32
ENCODER_ROLE = "encoder"
UPLOAD_TYPES = ("image/png", "image/jpeg", "multipart/form-data")
IMAGE_FORMATS = ("PNG", "JPEG")
# Most pixels an upload may declare (2048 x 2048), and most on either side; both are checked from
# the header before decoding, so a 40 KB PNG claiming 50,000 x 50,000 pixels (a decompression
# bomb) costs nothing. The side bound matters on its own: a 32 KB grey PNG of 1 x 16,777,216
# passed a 4096 x 4096 area check and took 5.4 s and ~1 GB to decode and resize.
MAX_UPLOAD_PIXELS = 1 << 22
MAX_UPLOAD_SIDE = 4096
# Most parts a multipart upload may have: the form carries one `file` (and perhaps a few small
# fields). Counted on the raw bytes before parsing: 10,000 parts took the parser 4.7 s.
MAX_UPLOAD_PARTS = 16


class InvalidImage(ServiceError):
    """An upload that is not a PNG or JPEG image (or a corrupt one)."""

    status, code = 422, "invalid_image"


class ImageTooComplex(ServiceError):
    """An upload within the size bounds that took longer than IMAGEGEN_UPLOAD_DECODE_TIMEOUT."""

    status, code = 422, "image_too_complex"


class ImageTooLarge(PayloadTooLarge):
    """An upload whose header declares more pixels than MAX_UPLOAD_PIXELS, or a side over
    MAX_UPLOAD_SIDE."""

    code = "image_too_large"


class TooManyParts(PayloadTooLarge):
    """A multipart upload with more parts than MAX_UPLOAD_PARTS."""

    code = "too_many_parts"


# -- interpolation ----------------------------------------------------------------------------


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation from a (t=0) to b (t=1): along the great circle between the two
    directions, with the norm interpolated linearly; nearly parallel vectors fall back to lerp."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0.0 or nb == 0.0:
        return ((1 - t) * a64 + t * b64).astype(np.float32)
    cos = float(np.clip(np.dot(a64 / na, b64 / nb), -1.0, 1.0))
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return ((1 - t) * a64 + t * b64).astype(np.float32)
    direction = (np.sin((1 - t) * omega) * a64 / na + np.sin(t * omega) * b64 / nb) / np.sin(omega)
    # numpy types the scalar ufunc results (norm, arccos, sin) as Any, so this is Any to mypy
    return cast(np.ndarray, (direction * ((1 - t) * na + t * nb)).astype(np.float32))


def interpolation_ts(steps: int) -> list[float]:
    """`steps` evenly spaced positions from 0 to 1, both ends included."""
    return [i / (steps - 1) for i in range(steps)]


def interpolation_latents(seed_a: int, seed_b: int, dim: int, steps: int) -> np.ndarray:
    """(steps, dim) float32: row 0 is latent(seed_a), the last row latent(seed_b) exactly."""
    a, b = latent(seed_a, dim), latent(seed_b, dim)
    rows = [slerp(a, b, t) for t in interpolation_ts(steps)]
    rows[0], rows[-1] = a, b  # exact ends: the strip's first image is /sample's image of seed_a
    return np.stack(rows)


def strip_png(images: np.ndarray, scale: int) -> bytes:
    """float32 NCHW in [0, 1] -> one PNG with the images side by side, left to right."""
    pixels = imaging.to_hwc_uint8(images)
    return imaging.encode_png(imaging.upscale(np.concatenate(list(pixels), axis=1), scale))


def png_list(images: np.ndarray, scale: int) -> list[bytes]:
    """float32 NCHW in [0, 1] -> one PNG per image."""
    return [imaging.encode_png(imaging.upscale(p, scale)) for p in imaging.to_hwc_uint8(images)]


# -- uploads ----------------------------------------------------------------------------------


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def check_upload_type(content_type: str) -> None:
    if media_type(content_type) not in UPLOAD_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type must be one of {list(UPLOAD_TYPES)}, got {clip(content_type, 60)!r}",
            allowed=list(UPLOAD_TYPES),
        )


def read_upload(content_type: str, body: bytes) -> bytes:
    """The image bytes of an upload: the raw body, or the `file` field of a multipart form."""
    if media_type(content_type) != "multipart/form-data":
        return body
    check_part_count(content_type, body)
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise InvalidImage("multipart body without parts (is the boundary right?)", field="file")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload:
                return payload
            raise InvalidImage("the multipart field 'file' is empty", field="file")
    raise InvalidImage(
        "the multipart form has no field 'file' (send the image as file=@image.png)", field="file"
    )


def check_part_count(content_type: str, body: bytes, max_parts: int = MAX_UPLOAD_PARTS) -> None:
    """Refuse a multipart body with more than `max_parts` parts before the parser sees it."""
    boundary = _boundary(content_type)
    if boundary is None:
        raise InvalidImage("multipart/form-data without a boundary parameter", field="file")
    # Each part starts with "--boundary"; the closing delimiter adds one more occurrence.
    if body.count(b"--" + boundary) > max_parts + 1:
        raise TooManyParts(
            f"the multipart body has more than {max_parts} parts; send the image as one field 'file'",
            max_parts=max_parts,
        )


def _boundary(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1", "replace")
    return None


def check_declared_size(width: int, height: int, max_pixels: int = MAX_UPLOAD_PIXELS) -> None:
    """The size a header declares, against the side and pixel bounds."""
    if width > MAX_UPLOAD_SIDE or height > MAX_UPLOAD_SIDE or width * height > max_pixels:
        raise ImageTooLarge(
            f"the image declares {width}x{height} pixels; at most {MAX_UPLOAD_SIDE} on a side and "
            f"{max_pixels:,} in all",
            max_pixels=max_pixels,
            max_side=MAX_UPLOAD_SIDE,
        )


def decode_image(data: bytes, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """PNG or JPEG bytes -> a loaded Pillow image. The size is read from the header and checked
    before the pixels are decoded; anything else is an InvalidImage."""
    if not data:
        raise InvalidImage("the upload is empty", allowed=list(IMAGE_FORMATS))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))
            check_declared_size(*image.size, max_pixels=max_pixels)
            image.load()
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"the image is over {max_pixels:,} pixels", max_pixels=max_pixels) from None
    except UnidentifiedImageError:
        raise InvalidImage("the upload is not a PNG or JPEG image", allowed=list(IMAGE_FORMATS)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise InvalidImage(f"the image cannot be decoded: {clip(str(exc), 80)}") from None
    return image


def model_input(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """A Pillow image -> (1, C, H, W) float32 in [0, 1] at the model's size and channels.
    Transparency is laid on white, as training does for RGBA images."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    image = image.convert("L" if spec.channels == 1 else "RGB")
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array[None, None] if array.ndim == 2 else array.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(array)


# -- the encoder ------------------------------------------------------------------------------


def has_encoder(manifest: Manifest | None) -> bool:
    return manifest is not None and ENCODER_ROLE in manifest.extra_onnx


@dataclass
class Encoder:
    """One model version's exported encoder: image (+ label) -> mu (the decoder's z)."""

    session: ort.InferenceSession
    spec: OnnxSpec
    takes_label: bool

    @classmethod
    def load(cls, model_dir: Path, manifest: Manifest, options: RuntimeOptions) -> Encoder:
        """Verified against the manifest's sha256, on the providers the models run on."""
        spec = manifest.extra_onnx[ENCODER_ROLE]
        path = model_dir / spec.file
        if not path.is_file():
            raise ModelLoadError(f"missing encoder file {spec.file}")
        if sha256_file(path) != spec.sha256:
            raise ModelLoadError(f"sha256 mismatch for {spec.file}")
        session, _ = open_session(path, options, manifest.id)
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if "image" not in inputs or not inputs <= {"image", "label"} or "mu" not in outputs:
            raise ModelLoadError(f"{spec.file}: expected inputs image(+label) and output mu")
        return cls(session, spec, "label" in inputs)

    def encode(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 and (N,) int64 -> mu (N, latent_dim) float32."""
        feeds = {"image": images}
        if self.takes_label:
            feeds["label"] = labels
        mu: np.ndarray = self.session.run(["mu"], feeds)[0]
        return mu


class Encoders:
    """Encoders loaded on first use, one per served model version (keyed by its ServedModel's
    serial, so the cache holds no reference to it); thread-safe. `evict(serial)` when the version
    is retired (service/store/drain.py), so a reload leaves no session behind."""

    def __init__(self, models_dir: Path, options: RuntimeOptions) -> None:
        self.models_dir = models_dir
        self.options = options
        self._loaded: dict[int, Encoder] = {}
        self._lock = threading.Lock()

    def get(self, serial: int, manifest: Manifest) -> Encoder:
        with self._lock:
            if serial not in self._loaded:
                self._loaded[serial] = Encoder.load(self.models_dir / manifest.id, manifest, self.options)
            return self._loaded[serial]

    def evict(self, serial: int) -> None:
        with self._lock:
            self._loaded.pop(serial, None)

    def __len__(self) -> int:
        return len(self._loaded)


def reconstruction_error(originals: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Mean squared error of each image against the (broadcast) original: (N,)."""
    diff = images.astype(np.float32) - originals.astype(np.float32)
    errors: np.ndarray = np.mean(diff * diff, axis=(1, 2, 3))
    return errors
