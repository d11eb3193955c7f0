"""reid service: `person-crops` -> `customer-matches` (and `staff-tracks` for enrolled staff, `staff.faces`);
`customer-erasures` -> gallery deletions.

Thin wiring: the gallery (store: PostgreSQL with ``storage.backend: postgres``, FAISS
index rebuilt from it) + the registered stage ``reid`` (``storelens.stages.faces.ReidStage``)
under the runner on Kafka (``storelens.runtime.workers.run_stage_service``) until SIGTERM.
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
    from storelens.storage import open_gallery
    from storelens.storage.staff_faces import open_staff_faces

    galleries, staff = [], []

    def deps(config) -> dict:
        galleries.append(open_gallery(config))  # connects to the store and rebuilds the index from it
        # the opt-in staff face gallery (staff.faces; history tables staff_*), None when not configured
        staff.append(open_staff_faces(config))
        return {"gallery": galleries[-1], "staff_faces": staff[-1]}

    try:
        return run_stage_service("reid", deps)
    finally:
        for gallery in galleries:
            if gallery.store is not None:
                gallery.store.close()
        for source in staff:
            if source is not None:
                source.close()


if __name__ == "__main__":
    sys.exit(main())
