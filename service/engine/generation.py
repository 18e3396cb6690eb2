"""What a generation job is and how a batch of them runs: seeds + labels -> pixels -> bytes.

`Generator` binds one model's runtime to the batcher's two callbacks (`run_batch` for a merged
run, `finish` to encode a finished job); `generate()` runs a request directly, without a
batcher, for `imagegen sample` -- the same code, so the same bytes as the HTTP endpoints.
Nothing here knows HTTP.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from imagegen.contract.sampling import build_feeds
from service.engine import imaging
from service.engine.batching import Job, Slice
from service.engine.runtime import ModelRuntime

# png: one PNG (a grid when n > 1); png_base64_list: one base64 PNG per image (for JSON responses);
# npy: float32 NCHW array in [0, 1]; array: that array itself (the Open Inference Protocol's output).
Output = Literal["png", "png_base64_list", "npy", "array"]


@dataclass(frozen=True)
class ImageRequest:
    """Items (seeds[i], labels[i]) of one model; labels are ignored by models without a label input."""

    seeds: tuple[int, ...]
    labels: tuple[int, ...]
    scale: int = 1
    output: Output = "png"

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True, eq=False)
class TensorRequest:
    """Items given as model feeds (row i of every feed is item i), as Open Inference Protocol
    clients send them; batched with ImageRequests of the same model. The result is the array."""

    feeds: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(next(iter(self.feeds.values())))


def render(request: ImageRequest, images: np.ndarray) -> Any:
    """Model output (float32 NCHW) -> the request's bytes: PNG, list of PNGs, or NPY (or the array)."""
    if request.output == "array":
        return np.ascontiguousarray(images, dtype=np.float32)
    if request.output == "npy":
        array = np.ascontiguousarray(images, dtype=np.float32)
        if request.scale > 1:
            array = array.repeat(request.scale, axis=2).repeat(request.scale, axis=3)
        return imaging.encode_npy(array)
    pixels = imaging.to_hwc_uint8(images)
    if request.output == "png_base64_list":
        # Base64 here too, so the event loop only assembles the JSON.
        return [png_base64(imaging.encode_png(imaging.upscale(image, request.scale))) for image in pixels]
    return imaging.encode_png(imaging.upscale(imaging.tile(pixels), request.scale))


def png_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Generator:
    """One model's batch callbacks. Both run in the batcher's worker thread."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.manifest = runtime.manifest

    def run_batch(self, slices: list[Slice]) -> list[np.ndarray]:
        images = self.runtime.run(self._feeds(slices))
        results, offset = [], 0
        for piece in slices:
            results.append(images[offset : offset + piece.size])
            offset += piece.size
        return results

    def _feeds(self, slices: list[Slice]) -> dict[str, np.ndarray]:
        """One run's feeds: seeds and labels through the sampling contract, in one call when every
        slice is an ImageRequest (the common case); TensorRequest rows copied in their place."""
        if all(isinstance(piece.job.payload, ImageRequest) for piece in slices):
            seeds: list[int] = []
            labels: list[int] = []
            for piece in slices:
                request: ImageRequest = piece.job.payload
                seeds.extend(request.seeds[piece.start : piece.stop])
                labels.extend(request.labels[piece.start : piece.stop])
            return build_feeds(self.manifest, seeds, labels)
        parts = []
        for piece in slices:
            request = piece.job.payload
            if isinstance(request, TensorRequest):
                parts.append({k: v[piece.start : piece.stop] for k, v in request.feeds.items()})
            else:
                rows = slice(piece.start, piece.stop)
                parts.append(build_feeds(self.manifest, request.seeds[rows], request.labels[rows]))
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def finish(self, job: Job) -> Any:
        parts = job.parts
        images = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if isinstance(job.payload, TensorRequest):
            return np.ascontiguousarray(images, dtype=np.float32)
        return render(job.payload, images)

    def generate(self, request: ImageRequest, max_batch: int) -> Any:
        """Run a request without a batcher (offline sampling), in runs of at most max_batch images."""
        job = Job(size=request.n, payload=request)
        for start in range(0, request.n, max_batch):
            piece = Slice(job, start, min(request.n, start + max_batch))
            job.parts.extend(self.run_batch([piece]))
        return self.finish(job)
