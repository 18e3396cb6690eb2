"""The test servers' launcher: `python -m tests.service.launch_server [--nofile N] ARGS...` sets up
the child in its own Python, then becomes `python -m imagegen.cli ARGS...` (same process).

- The child gets SIGTERM when pytest dies without tearing its fixtures down (Linux).
- `--nofile N`: the child's file-descriptor limit, soft and hard.

This is done here, not in a `preexec_fn`. A `preexec_fn` runs in a forked copy of pytest. When a
gRPC test holds a channel, grpc's fork handlers start a poller thread in that copy. subprocess then
closes the descriptors before exec, and the poller aborts the child: status -6, "epoll_wait error:
Bad file descriptor". That happened in 7 of 200 starts with one channel open.
"""

from __future__ import annotations

import os
import signal
import sys


def command(*args: str, nofile: int | None = None) -> list[str]:
    """The command line that starts `imagegen ARGS...` through this launcher."""
    limit = ["--nofile", str(nofile)] if nofile is not None else []
    return [sys.executable, "-m", "tests.service.launch_server", *limit, *args]


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def limit_descriptors(count: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def main(argv: list[str]) -> None:
    die_with_parent()
    if argv[:1] == ["--nofile"]:
        limit_descriptors(int(argv[1]))
        argv = argv[2:]
    os.execv(sys.executable, [sys.executable, "-m", "imagegen.cli", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
