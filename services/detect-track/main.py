"""detect-track service: `frames` -> `tracks` (+ dead letters). Settings -> dependencies -> run loop.

Env: STORELENS_CONFIG (site YAML), STORELENS_HTTP_PORT (health/metrics, default 9100).
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see storelens/cli.py
    from storelens.config import load_config
    from storelens.errors import StoreLensError
    from storelens.logs import setup_logging
    from storelens.service import ServiceRuntime

    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    try:
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        rt = ServiceRuntime("detect-track")
        rt.add_check("model", lambda: False)  # not ready until the models are loaded
        rt.start()
        from storelens.detection import build_detector
        from storelens.stages import DetectTrackStage
        from storelens.tracking import build_tracker
        from storelens.workers import DetectTrackWorker

        detector = build_detector(config.detector)
        stage = DetectTrackStage(config, detector, lambda: build_tracker(config.tracker))
        for cam in config.cameras:  # load every embedder before reporting ready
            stage.tracker(cam.id)
        return DetectTrackWorker(config, rt, stage).run()
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
