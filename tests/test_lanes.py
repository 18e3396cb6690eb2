"""The fast lane (`pytest -m "not slow"`) is a list of modules in tests/conftest.py: keep it true."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SLOW_MODULES

ROOT = Path(__file__).resolve().parents[1]


def test_every_slow_module_exists() -> None:
    # a renamed slow file must not silently join the fast lane
    assert sorted(m for m in SLOW_MODULES if not (ROOT / m).exists()) == []
