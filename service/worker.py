"""One worker process of a multi-process server (`imagegen serve --workers N`, N > 1).

Started by service/supervisor.py with the listening socket the parent bound, its own Settings
(its share of the limits and cores) and a slot in the shared readiness array. It runs the same
app and uvicorn server as the single process, on the inherited socket; the kernel spreads the
connections between the workers accepting on it.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from typing import Any

from service.settings import Settings

# Values a worker writes in its readiness slot; the parent reads them.
STARTING, READY, FAILED = 0, 1, -1
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even by SIGKILL (which it cannot
    handle); orphaned workers kept serving on the shared port after their parent was killed."""
    import ctypes
    import ctypes.util
    import os

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:  # the parent died before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _report_readiness(server: Any, app: Any, slots: Any, index: int) -> None:
    """Marks this worker READY once its server listens and every model has been tried, or FAILED
    when none of them could be loaded (the parent then stops the server at start-up)."""
    registry = app.state.ctx.registry
    while not (server.started and registry.loaded):
        if server.should_exit:
            return
        time.sleep(0.05)
    if not registry.ready_ids():
        reasons = {i: registry.models[i].reason for i in registry.ids()}
        print(f"imagegen worker {index}: no model could be loaded: {reasons}", file=sys.stderr, flush=True)
        slots[index] = FAILED
        return
    slots[index] = READY


def run_worker(
    settings: Settings,
    sock: socket.socket,
    slots: Any,
    index: int,
    parent_pid: int = 0,
    control: tuple[socket.socket, str, str] | None = None,
) -> None:
    """The worker process's main: serve until SIGTERM, then exit 0 (1 if the server never started).
    `control`: this worker's private Unix socket, the folder of all of them and the peer token."""
    from service.app import create_app
    from service.commands import tune_gc
    from service.dataplane.memory import limit_malloc_arenas
    from service.engine.runtime import ProviderError
    from service.http.server import build_server
    from service.logs import setup_logging

    # SIGINT (a Ctrl-C to the whole process group) is the parent's to handle: it stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    limit_malloc_arenas()  # before any thread, as in the single process
    setup_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
    except ProviderError as exc:
        print(f"imagegen worker {index}: {exc}", file=sys.stderr, flush=True)
        slots[index] = FAILED
        sys.exit(2)
    app.state.peers_ready = lambda: all(slots[i] == READY for i in range(len(slots)))
    app.state.worker_count = len(slots)
    sockets = [sock]
    if control is not None:
        from service.peers import Peers

        control_sock, control_dir, token = control
        app.state.peers = Peers(index, len(slots), control_dir, token)
        sockets.append(control_sock)
    tune_gc()
    server = build_server(app, settings)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # replaced by uvicorn's; see commands.py
    lifecycle = app.state.ctx.lifecycle
    signal.signal(signal.SIGHUP, lambda signum, frame: lifecycle.request_rescan())
    threading.Thread(
        target=_report_readiness, args=(server, app, slots, index), name="readiness", daemon=True
    ).start()
    server.run(sockets=sockets)
    sys.exit(0 if server.started else 1)
