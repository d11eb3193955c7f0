"""detect-track service: `frames` -> `tracks`, `person-crops` (+ dead letters; state snapshots in `detect-track-state`).

Thin wiring: the registered stage ``detect-track`` (storelens/stages/core.py) under the
runner on Kafka (``storelens.runtime.workers.run_stage_service``) until SIGTERM.
Env: STORELENS_CONFIG (site YAML), STORELENS_HTTP_PORT (health/metrics, default 9100), STORELENS_LOG_LEVEL.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    # before numpy is imported: the tracker's small matrices gain nothing from BLAS threads, which
    # would spin against the detector's threads on a small CPU (see storelens/cli.py)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from storelens.runtime.workers import run_stage_service

    return run_stage_service("detect-track")


if __name__ == "__main__":
    sys.exit(main())
