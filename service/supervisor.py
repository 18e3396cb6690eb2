"""The parent of a multi-process server (`imagegen serve --workers N`, N > 1).

It binds the listening socket once and starts N worker processes (service/worker.py) that all
accept on it, each with its own registry, batchers and ONNX Runtime sessions. Workers are started
with `spawn`, so none inherits a thread or a session from here.

- **Start.** The server is up once every worker listens and has tried its models; a worker that
  exits or loads no model before then stops them all, and the command exits 1 with the reason.
- **Supervision.** A worker that dies later is restarted and counted
  (`imagegen_worker_restarts_total`).
- **Signals.** SIGTERM/SIGINT: every worker gets SIGTERM and stops gracefully (graceful_timeout);
  one still running a few seconds past that is killed. SIGHUP goes to every worker (each rescans).
- **Metrics.** prometheus_client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR is a temporary
  folder set here before any process imports prometheus_client, removed at exit; any worker's
  /metrics then reports the whole server.
- **Limits.** Each worker gets its share (rounded up) of the queue and connection limits, and
  cores / N ONNX Runtime threads unless IMAGEGEN_CPU_THREADS is set (then it is per worker).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from service.peers import control_socket
from service.settings import Settings
from service.worker import FAILED, READY, STARTING, run_worker

log = logging.getLogger("imagegen.supervisor")

POLL_S = 0.1
# A worker still running this long past graceful_timeout after SIGTERM is killed.
KILL_GRACE_S = 5.0


def available_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its affinity, lowered to its cgroup's CPU quota (a container
    limited to 2 CPUs on a 64-core node sees 64 in its affinity)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def worker_count(settings: Settings) -> int:
    return settings.workers if settings.workers is not None else available_cores()


def _share(limit: int, count: int) -> int:
    return max(1, math.ceil(limit / count))


def worker_settings(settings: Settings, count: int) -> Settings:
    """One worker's settings: its share of the per-server limits and of the cores."""
    queue_limit = max(_share(settings.queue_limit, count), settings.max_n, settings.max_items)
    update: dict[str, Any] = {
        "workers": 1,
        "queue_limit": queue_limit,
        "total_queue_limit": max(_share(settings.total_queue_limit, count), queue_limit),
        "limit_concurrency": _share(settings.limit_concurrency, count),
    }
    if "cpu_threads" not in settings.model_fields_set:
        update["cpu_threads"] = max(1, available_cores() // count)
    return settings.model_copy(update=update)


def bind(settings: Settings, count: int) -> list[socket.socket]:
    """One listening socket per worker on the one port (SO_REUSEPORT): the kernel spreads new
    connections evenly over them by their addresses. On one shared socket, whichever worker
    accepted first took them, and a burst of 64 connections could land mostly on one worker
    (gan-mnist's /v2 JSON rate swung 1,485-3,039 req/s between runs). Bound here, so a restarted
    worker finds its socket and the connections waiting on it."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    first = socket.create_server((settings.host, settings.port), family=family, backlog=4096, reuse_port=True)
    port = first.getsockname()[1]  # port 0: the others join the port the first one got
    socks = [first]
    socks += [
        socket.create_server((settings.host, port), family=family, backlog=4096, reuse_port=True)
        for _ in range(count - 1)
    ]
    for sock in socks:
        sock.set_inheritable(True)
    return socks


def bind_control(control_dir: str, index: int) -> socket.socket:
    """Worker `index`'s private Unix socket; bound here, so it outlives a worker's restart."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(control_socket(control_dir, index)))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, settings: Settings, count: int, multiproc_dir: str) -> None:
        from prometheus_client import CollectorRegistry, Counter  # after PROMETHEUS_MULTIPROC_DIR

        self.settings = settings
        self.count = count
        self.multiproc_dir = multiproc_dir
        self.child_settings = worker_settings(settings, count)
        self.context = multiprocessing.get_context("spawn")
        self.slots: Any = self.context.Array("b", count, lock=False)
        self.socks = bind(settings, count)
        # Repository control reaches every worker through these (service/peers.py).
        self.control_dir = tempfile.mkdtemp(prefix="imagegen-workers-")  # 0700: this user only
        self.control_socks = [bind_control(self.control_dir, i) for i in range(count)]
        self.peer_token = secrets.token_hex(16)
        self.processes: list[Any] = [None] * count
        self.stopping = False
        # Written to the multiprocess folder; the workers' /metrics read it from there.
        self.restarts = Counter(
            "imagegen_worker_restarts_total",
            "Worker processes restarted after they died.",
            registry=CollectorRegistry(),
        )

    def _start(self, index: int) -> None:
        self.slots[index] = STARTING
        process = self.context.Process(
            target=run_worker,
            args=(self.child_settings, self.socks[index], self.slots, index, os.getpid()),
            kwargs={"control": (self.control_socks[index], self.control_dir, self.peer_token)},
            name=f"imagegen-worker-{index}",
        )
        process.start()
        self.processes[index] = process

    def _reap(self, process: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process.pid, self.multiproc_dir)  # type: ignore[no-untyped-call]

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_hangup(self, signum: int, frame: object) -> None:
        for process in self.processes:
            if process is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hangup)
        for index in range(self.count):
            self._start(index)
        try:
            problem = self._wait_started()
            if problem is not None:
                print(f"imagegen serve: {problem}; stopping", file=sys.stderr, flush=True)
                return 1
            host, port = self.socks[0].getsockname()[:2]
            log.info("serving on http://%s:%d with %d worker processes", host, port, self.count)
            self._supervise()
            return 0
        finally:
            self._stop_all()
            for sock in self.socks:
                sock.close()
            for control in self.control_socks:
                control.close()
            shutil.rmtree(self.control_dir, ignore_errors=True)

    def _wait_started(self) -> str | None:
        """None once every worker is ready; else why the server cannot start."""
        while not self.stopping:
            for index, process in enumerate(self.processes):
                if self.slots[index] == FAILED:
                    return f"worker {index} could not load any model (see its log above)"
                if not process.is_alive():
                    return f"worker {index} exited at start-up with status {process.exitcode}"
            if all(self.slots[i] == READY for i in range(self.count)):
                return None
            time.sleep(POLL_S)
        return None

    def _supervise(self) -> None:
        while not self.stopping:
            for index, process in enumerate(self.processes):
                if not process.is_alive() and not self.stopping:
                    log.warning(
                        "worker %d (pid %d) exited with status %s: restarting it",
                        index, process.pid, process.exitcode,
                    )  # fmt: skip
                    self._reap(process)
                    self.restarts.inc()
                    self._start(index)
            time.sleep(POLL_S)

    def _stop_all(self) -> None:
        alive = [p for p in self.processes if p is not None and p.is_alive()]
        for process in alive:
            process.terminate()  # SIGTERM: uvicorn's graceful stop in the worker
        deadline = time.monotonic() + self.settings.graceful_timeout + KILL_GRACE_S
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker pid %d did not stop in time: killing it", process.pid)
                process.kill()
                process.join()
        for process in self.processes:
            if process is not None:
                self._reap(process)


def serve_workers(settings: Settings, count: int) -> int:
    """Run the multi-process server until SIGTERM; the command's exit status."""
    multiproc_dir = tempfile.mkdtemp(prefix="imagegen-metrics-")
    # prometheus_client picks its value store when first imported, in this process and in each
    # spawned worker (which inherits the environment): it must be set before that.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    from prometheus_client import values

    # This process imported it already (with the command's modules): choose the store again, so
    # the restart counter made here is written to the folder too.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    try:
        return Supervisor(settings, count, multiproc_dir).run()
    finally:
        shutil.rmtree(multiproc_dir, ignore_errors=True)
