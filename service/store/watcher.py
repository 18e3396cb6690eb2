"""The watcher: files of loaded models changed or deleted on disk.

While serving, the files of each loaded model are watched (a cheap stat every
`disk_check_interval` seconds, the sha256 recomputed only when size or mtime moved); a file
deleted or changed on disk is reported in the model's `on_disk` field, and the loaded copy keeps
serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imagegen.contract.manifest import MANIFEST_NAME, Manifest, sha256_file

if TYPE_CHECKING:
    from service.store.repository import RepositoryEntry
    from service.store.served import ServedModel

log = logging.getLogger("imagegen.registry")

Fingerprint = tuple[int, int] | None  # (size, mtime_ns) of a file; None when it is missing


def fingerprint(path: Path) -> Fingerprint:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


@dataclass
class WatchedFile:
    """A file a loaded model came from, as it was when verified."""

    path: Path
    name: str  # relative to the model folder, for messages (never the absolute path)
    seen: Fingerprint

    def check(self, still_same: Callable[[Path], bool]) -> str | None:
        """None while the file is unchanged (or changed back); else what happened to it.
        `still_same(path)` is the expensive check, only run when size or mtime moved."""
        now = fingerprint(self.path)
        if now is None:
            return f"{self.name} was deleted from disk after the model was loaded"
        if now == self.seen:
            return None
        if still_same(self.path):
            self.seen = now  # touched or rewritten with the same content
            return None
        return f"{self.name} changed on disk after the model was loaded"


def watch_list(entry: RepositoryEntry) -> list[WatchedFile]:
    """The files of a checked folder to watch: its manifest and its ONNX file."""
    assert entry.manifest is not None and entry.onnx_path is not None
    files = [(entry.directory / MANIFEST_NAME, MANIFEST_NAME), (entry.onnx_path, entry.manifest.onnx.file)]
    return [WatchedFile(path, name, fingerprint(path)) for path, name in files]


def same_content(manifest: Manifest, name: str) -> Callable[[Path], bool]:
    """The content check for one watched file: the ONNX file's sha256 against the manifest's, or
    the manifest re-read and compared with the one loaded."""

    def same(path: Path) -> bool:
        try:
            if name == MANIFEST_NAME:
                return Manifest.read(path.parent) == manifest
            return sha256_file(path) == manifest.onnx.sha256
        except (OSError, ValueError):
            return False

    return same


def check_files(models: Iterable[ServedModel]) -> None:
    """Compare each ready model's files with what was loaded; record and log any change."""
    for served in list(models):  # a worker thread: the loop may swap models meanwhile
        if served.state != "ready" or served.manifest is None:
            continue
        manifest = served.manifest
        problems = [
            problem
            for watched in served.watched
            if (problem := watched.check(same_content(manifest, watched.name))) is not None
        ]
        problem = "; ".join(problems) or None
        if problem != served.disk_problem:
            if problem:
                log.warning("model %s: %s; serving the copy loaded at start-up", served.id, problem)
            else:
                log.info("model %s: its files on disk match the loaded copy again", served.id)
            served.disk_problem = problem


class DiskWatcher:
    """Checks the served models' files every `interval_s` seconds, off the event loop."""

    def __init__(
        self, models: Callable[[], Iterable[ServedModel]], interval_s: float, executor: Executor
    ) -> None:
        self.models = models
        self.interval_s = interval_s
        self.executor = executor
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="watch-model-files")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s)
            await loop.run_in_executor(self.executor, check_files, list(self.models()))
