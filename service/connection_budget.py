"""How many connections the process may hold: one budget below its file-descriptor limit, shared
by the HTTP server and, when its port is set, the gRPC server (20,500 idle gRPC connections once
ran the process out of descriptors, and then every HTTP request was reset)."""

from __future__ import annotations

import resource

FD_RESERVE = 64  # descriptors kept for files, the models, logs and the batchers' pipes
GRPC_SHARE = 4  # with gRPC on, it gets a quarter of the connections, HTTP the rest


def effective_connection_limit(limit: int) -> int:
    """`limit`, lowered to what the descriptor limit allows after FD_RESERVE (soft limit raised to
    the hard one first: the soft default of 1024 is a historical select() limit, not a resource)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(1, min(limit, soft - FD_RESERVE))


def split_connections(limit: int, grpc: bool) -> tuple[int, int]:
    """(HTTP's, gRPC's) connection caps out of the process's `limit` (IMAGEGEN_LIMIT_CONCURRENCY,
    lowered to the descriptors): gRPC's is 0 when its port is not set."""
    total = effective_connection_limit(limit)
    if not grpc:
        return total, 0
    share = max(1, total // GRPC_SHARE)
    return max(1, total - share), share
