"""Several cameras through detect-track at once in the embedded mode (issue 9, "cameras per machine").

Three real clips of two sizes (TUD-Campus and TUD-Stadtmitte 640x480, CAVIAR EnterExitCrossingPaths1front
384x288, each sampled to 20-40 frames) run through :class:`EmbeddedPipeline` twice with the ``bytereid``
tracker and the int8 YOLO detector: ``pipeline.batch_cameras: 1`` (every frame alone) and batched (the frames of
the cameras waiting at once: one detector call and one re-id inference for all of them). Batching may change
the cost, never the result: every camera's tracked frames (ids, boxes, scores) and line counts must be
identical, the appearance vectors equal to the re-id model's rounding, and the batched run must really have
batched. In float32 that is ~1e-7 (with ``reid_threads: 2`` OpenVINO splits a batch of one crop across both cores
and a batch of several by crop, so the sums run in another order); in bfloat16, OpenVINO's default on CPUs that
have it (AVX512-BF16, AMX), the rounding depends on the batch: up to ~6e-4 seen on an AMD EPYC with AVX512-BF16.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from storelens.backends.detectors import build_detector
from storelens.backends.trackers import build_tracker, tracker_factory
from storelens.backends.video import camera_frames
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import DecodeError
from storelens.paths import asset
from storelens.runtime.bus import BusMessage
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.runtime.runner import RunnerCore
from storelens.stages.core import DetectTrackStage

pytestmark = pytest.mark.slow

T0 = 1_700_000_000_000
EECP = "EnterExitCrossingPaths1front"
CAMERAS = [
    # test_audit's shop door line; walking up (into the shop) is "in"
    {"id": "shop", "source": str(asset("video", "caviar", EECP, f"{EECP}.mp4")), "target_fps": 2.5,
     "lines": [{"id": "door", "a": [340, 135], "b": [140, 135]}]},
    {"id": "campus", "source": str(asset("mot", "TUD-Campus", "TUD-Campus.mp4")), "target_fps": 8,
     "lines": [{"id": "x300", "a": [300, 480], "b": [300, 0]}]},
    {"id": "stadtmitte", "source": str(asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")), "target_fps": 3.5,
     "lines": [{"id": "x320", "a": [320, 480], "b": [320, 0]}]},
]


def site(batch_cameras: int):
    return parse_config({"store": {"id": "batching"}, "tracker": {"backend": "bytereid"},
                         "pipeline": {"batch_cameras": batch_cameras},
                         "cameras": [{**c, "start_ts_ms": T0} for c in CAMERAS]})


@pytest.fixture(scope="module")
def models():
    """The detector and the one re-id embedder every camera's tracker shares (as ``build_detect_track`` makes)."""
    cfg = site(1)
    make = tracker_factory(cfg.tracker)
    a, b = make(), make()
    assert a.embedder is b.embedder, "bytereid trackers share one re-id model"
    return build_detector(cfg.detector), a.embedder


def run(models, batch_cameras: int):
    """The pipeline's result, each camera's tracked frames in order, re-id inferences run and detect-track's runner."""
    detector, embedder = models
    cfg = site(batch_cameras)
    tracked = defaultdict(list)
    pipe = EmbeddedPipeline(cfg, detector=detector, tracker_factory=lambda: build_tracker(cfg.tracker, embedder),
                            on_tracked=lambda tf: tracked[tf.camera_id].append(tf))
    calls = embedder.calls
    res = pipe.run()
    return res, dict(tracked), embedder.calls - calls, pipe.runners["detect-track"]


@pytest.fixture(scope="module")
def runs(models):
    return {"alone": run(models, 1), "batched": run(models, 8)}


def without_appearance(tf: m.TrackedFrame):
    """A copy of ``tf`` with every track's appearance removed, and the appearances, one array per track."""
    stripped = m.TrackedFrame()
    stripped.CopyFrom(tf)
    for t in stripped.tracks:
        del t.appearance[:]
    return stripped, [np.array(t.appearance, dtype=np.float32) for t in tf.tracks]


def test_batching_changes_nothing_per_camera(runs, models):
    (alone, tracked_alone, _, _), (batched, tracked_batched, _, _) = runs["alone"], runs["batched"]
    embedder = models[1]
    # bf16: 8 bits of mantissa, and a model compiled per batch size (kernels differ): up to ~5e-3 measured
    atol = {"f32": 1e-5}.get(embedder.inference_precision, 1e-2)
    assert sorted(tracked_alone) == sorted(c["id"] for c in CAMERAS)
    assert sum(len(tf.tracks) for tfs in tracked_alone.values() for tf in tfs) > 0, "people were tracked"
    for cam in tracked_alone:
        assert [tf.seq for tf in tracked_batched[cam]] == [tf.seq for tf in tracked_alone[cam]], cam
        for a, b in zip(tracked_alone[cam], tracked_batched[cam]):
            (a_rest, a_app), (b_rest, b_app) = without_appearance(a), without_appearance(b)
            assert b_rest == a_rest, f"{cam} frame {a.seq}: ids, boxes and scores are the same"
            for x, y in zip(a_app, b_app):
                assert x.shape == y.shape == (256,), (cam, a.seq)
                np.testing.assert_allclose(y, x, rtol=0, atol=atol, err_msg=f"{cam} frame {a.seq}: appearance "
                                           f"({embedder.inference_precision})")
                assert float(x @ y) > 1 - atol, (cam, a.seq)  # unit rows: the same direction
    assert alone.crossings > 0, "people crossed the lines: the counts compared are not empty"
    assert batched.line_counts == alone.line_counts
    assert batched.crossings == alone.crossings
    assert batched.frames_per_camera == alone.frames_per_camera and batched.dead_letters == alone.dead_letters == 0


def test_batched_run_put_cameras_together(runs):
    _, _, reid_alone, runner_alone = runs["alone"]
    res, _, reid_batched, runner = runs["batched"]
    assert runner_alone.batch_max == 1 and runs["alone"][0].detect_batches == {}
    assert runner.batch_max == len(CAMERAS), "one frame per camera at most"
    assert max(res.detect_batches) > 1, res.detect_batches
    assert set(res.detect_batches) <= set(range(1, len(CAMERAS) + 1))
    # every frame message went through detect-track once, alone or in a batch (end-of-stream markers included)
    assert sum(n * k for n, k in res.detect_batches.items()) == res.frames + len(CAMERAS)
    assert reid_batched < reid_alone, "one re-id inference served several cameras"


def test_a_corrupt_frame_in_a_batch_is_its_own_dead_letter(models):
    """The stage checks every frame before it changes anything, so the runner can fall back to one by one."""
    detector, embedder = models
    cfg = site(8)
    firsts = [next(camera_frames(cam)) for cam in cfg.cameras]
    firsts[1].jpeg = firsts[1].jpeg[: len(firsts[1].jpeg) // 3]  # cut short: cannot be decoded
    stage = DetectTrackStage(cfg, detector, lambda: build_tracker(cfg.tracker, embedder))
    with pytest.raises(DecodeError):
        stage.handle_batch(topics.FRAMES, firsts)
    assert stage.last_seq == {} and stage.id_base == {}, "nothing changed"
    msgs = [BusMessage(topics.FRAMES, topics.camera_key(f.camera_id), m.encode(f), i) for i, f in enumerate(firsts)]
    handled = RunnerCore(stage).process_batch(msgs, topics.FRAMES)
    assert [h.dead_letter is not None for h in handled] == [False, True, False]
    assert handled[1].reason == "decode" and all(h.stop is None for h in handled)
    tracked = [h.outputs.publish[0].message for h in handled if h.dead_letter is None]
    assert [(t.camera_id, t.seq) for t in tracked] == [(firsts[0].camera_id, 0), (firsts[2].camera_id, 0)]
    assert stage.last_seq == {firsts[0].camera_id: 0, firsts[2].camera_id: 0}


def test_a_prebuilt_tracker_is_the_first_made_and_its_build_error_comes_at_make(tmp_path):
    """``tracker_factory(prebuild=True)`` (as ``build_detect_track`` makes it) builds the first tracker in a thread
    while the caller goes on; the first ``make()`` returns that one, the next share its re-id model, and a build that
    failed raises at ``make()``, as a lazily built tracker would, not when the factory is made."""
    import threading

    from storelens.errors import ModelError

    cfg = site(1)
    make = tracker_factory(cfg.tracker, prebuild=True)
    built = [t for t in threading.enumerate() if t.name.startswith("tracker-build")]
    assert built, "building in the background"
    a, b = make(), make()
    assert a is not b and a.embedder is b.embedder
    for t in built:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in built), "the build thread ends with the build"
    bad = tracker_factory(cfg.tracker.model_copy(update={"reid_weights": str(tmp_path / "missing.xml")}), prebuild=True)
    with pytest.raises(ModelError, match="missing.xml"):
        bad()
