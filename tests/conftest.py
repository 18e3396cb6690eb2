"""Suite-wide: which test modules are slow (their own servers, processes, browsers, trainings).

`pytest -m "not slow"` is the fast lane for development; CI (`.ci/run`) runs everything. A
module is listed here rather than marked in its file so the lane is one visible decision.
"""

from __future__ import annotations

import pytest

SLOW_MODULES = {
    # processes, ranks and trainings of their own
    "tests/training/test_ddp.py",
    "tests/training/test_interrupt.py",
    "tests/training/test_tensorboard.py",
    "tests/training/test_export.py",
    "tests/training/test_evaluate.py",
    "tests/contract/test_cli.py",
    "tests/deploy/test_replicas.py",
    "tests/deploy/test_k8s.py",
    "tests/deploy/test_nginx.py",
    "tests/deploy/test_monitoring.py",
    # servers of their own, floods, timeouts, a browser, the fuzzer
    "tests/service/test_fuzz.py",
    "tests/service/test_playground.py",
    "tests/service/test_hardening_server.py",
    "tests/service/test_hardening_models.py",
    "tests/service/test_repository_control.py",
    "tests/service/test_overload.py",
    "tests/service/test_oip_admission.py",
    "tests/service/test_oip_grpc.py",
    "tests/service/test_memory.py",
    "tests/service/test_body.py",
    "tests/service/test_degraded.py",
    "tests/service/test_triton_config_check.py",
    "tests/service/test_batching_http.py",
    "tests/service/test_limits.py",
    "tests/service/test_scripts.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        if str(item.path.relative_to(root)) in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)

