"""The other workers of a multi-process server, for what must reach all of them at once.

Each worker (service/worker.py) also serves the same app on a private Unix socket, bound by the
supervisor in a folder only this user can enter (0700). Repository control (`load`, `unload`)
arrives at whichever worker the kernel gave the connection; that worker applies it and sends
the same request to every other worker's socket, marked with the server's peer token, and
answers only once all of them have: the repository is then the same whichever worker answers.
A request that carries the token applies locally only, so a broadcast never echoes; the token is
random per server and never leaves its processes, so no client can send one.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

PEER_HEADER = "x-imagegen-peer"
# Loading verifies and warms a model: minutes are possible on a loaded machine, not hours.
PEER_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PeerAnswer:
    worker: int
    status: int  # 0: the worker could not be reached
    body: str


def control_socket(control_dir: Path | str, index: int) -> Path:
    return Path(control_dir) / f"worker-{index}.sock"


@dataclass(frozen=True)
class Peers:
    """What one worker knows of the others: their sockets and the server's peer token."""

    index: int
    count: int
    control_dir: str
    token: str

    def is_peer_call(self, given: str | None) -> bool:
        """Whether a request's peer header (`given`) is this server's token."""
        return bool(given) and hmac.compare_digest(str(given).encode(), self.token.encode())

    def others(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]

    async def broadcast(self, path: str, authorization: str, body: bytes) -> list[PeerAnswer]:
        """POST `path` to every other worker at once; their answers, in worker order."""
        return list(
            await asyncio.gather(*(self._post(i, path, authorization, body) for i in self.others()))
        )

    async def _post(self, worker: int, path: str, authorization: str, body: bytes) -> PeerAnswer:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: worker-{worker}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: {authorization}\r\n{PEER_HEADER}: {self.token}\r\n\r\n"
        )
        try:
            return await asyncio.wait_for(self._exchange(worker, head.encode() + body), PEER_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            return PeerAnswer(worker, 0, f"worker {worker} could not be reached: {exc}")

    async def _exchange(self, worker: int, request: bytes) -> PeerAnswer:
        reader, writer = await asyncio.open_unix_connection(str(control_socket(self.control_dir, worker)))
        try:
            writer.write(request)
            await writer.drain()
            raw = await reader.read()  # Connection: close: the answer ends with the stream
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = _unchunk(body)
        return PeerAnswer(worker, status, body.decode("utf-8", "replace"))


def _unchunk(data: bytes) -> bytes:
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def failure_message(answers: list[PeerAnswer]) -> str | None:
    """None when every worker answered 200; else what the first failing one said."""
    for answer in answers:
        if answer.status != 200:
            try:
                said = json.loads(answer.body).get("error", answer.body)
            except (ValueError, AttributeError):
                said = answer.body
            return f"worker {answer.worker}: {str(said)[:300]}"
    return None
