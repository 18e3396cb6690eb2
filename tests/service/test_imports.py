"""The service runs on onnxruntime, numpy and the web stack alone: it never imports torch or training."""

from __future__ import annotations

import subprocess
import sys

from tests.service.conftest import REPO


def test_service_never_imports_torch_or_training() -> None:
    # `imagegen serve` enters through training.cli, the torch-free dispatcher; nothing else of training.
    code = (
        "import sys, training.cli, service.app, service.commands, service.routes, service.registry; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
        "or (m.startswith('training') and m not in ('training', 'training.cli'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
