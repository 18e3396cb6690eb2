"""Two real `imagegen serve` replicas on loopback behind bench/replicas.py's round-robin client:
the same seed gives the same PNG bytes from both, and SIGKILLing one mid-run loses no request
the client retries. Bounded: one small model, 60 requests, every wait has a timeout."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import replicas  # noqa: E402

MODEL = "gan-mnist"


def test_replicas_agree_and_failover_loses_nothing() -> None:
    with replicas.replicas(2, MODEL, cpu_threads=1, ready_timeout_s=60) as reps:
        assert replicas.check_identical(reps, MODEL, range(5)) == 5

        report = replicas.failover(reps, MODEL, requests=60, threads=4, kill_after=20)
        assert reps[0].proc.returncode == -9  # the kill happened, mid-run
        assert report["lost"] == [] and report["completed"] == 60
        assert report["wrong_bytes"] == []
        # After the kill every request sent to the dead replica had to be retried elsewhere.
        assert report["retries"] >= 1
