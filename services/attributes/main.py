"""attributes service: `person-crops` -> `face-observations`, `track-attributes` (+ dead letters).

Thin wiring: the registered stage ``attributes`` (``storelens.stages.faces.AttributesStage``:
face detector, quality gate, age/gender, emotion) under the runner on Kafka
(``storelens.runtime.workers.run_stage_service``) until SIGTERM.
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

    return run_stage_service("attributes")


if __name__ == "__main__":
    sys.exit(main())
