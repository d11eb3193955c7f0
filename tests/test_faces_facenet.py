"""facenet-pytorch backends: the MTCNN face detector and the InceptionResnetV1 embedder.

MTCNN runs on the real photos of the shared assets (its weights ship inside the
facenet-pytorch wheel) and is compared with YuNet, the default detector.
InceptionResnetV1's trained weights are downloaded at run time from a GitHub
release, which is not reachable here: the embedder is tested for its errors,
its alignment geometry, and, in a *plumbing* test, end to end with the state
dict of a randomly initialised network (loading, shapes, normalisation; not
recognition quality).
"""
from __future__ import annotations

import math
import socket

import cv2
import numpy as np
import pytest

from storelens.errors import ModelError
from storelens.backends.face_detectors import (
    MTCNN_DEFAULT_SCORE_THRESHOLD,
    FaceDetectorConfig,
    Faces,
    MtcnnFaceDetector,
    YuNetFaceDetector,
    build_face_detector,
)
from storelens.backends.face_embedders import DlibFaceEmbedder, build_embedder
from storelens.domain.face_quality import FaceQualityGate
from storelens.config.faces import EmbedderConfig
from storelens.paths import asset

try:
    import facenet_pytorch  # noqa: F401

    HAVE_FACENET = True
except Exception:  # pragma: no cover - installed through requirements-nodeps.txt
    HAVE_FACENET = False

needs_facenet = pytest.mark.skipif(not HAVE_FACENET, reason="facenet-pytorch cannot be imported")
needs_assets = pytest.mark.skipif(
    not asset("faces", "identities").is_dir() or not asset("models", "face_detection_yunet_2026may.onnx").is_file(),
    reason="shared assets (faces/, models/) not available",
)

IDENTITY_PHOTOS = sorted(
    (p.parent.name, p) for p in asset("faces", "identities").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg")
)
_IMAGES: dict[str, np.ndarray] = {}


def img(*parts: str) -> np.ndarray:
    key = "/".join(parts)
    if key not in _IMAGES:
        im = cv2.imread(str(asset("faces", *parts)))
        assert im is not None, key
        _IMAGES[key] = im
    return _IMAGES[key]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@pytest.fixture(scope="module")
def yunet():
    return YuNetFaceDetector()


@pytest.fixture(scope="module")
def mtcnn():
    return build_face_detector(FaceDetectorConfig(backend="mtcnn"))


# ------------------------------------------------------------------------------------------------
# MTCNN
# ------------------------------------------------------------------------------------------------


@needs_facenet
def test_facenet_pytorch_imports_with_the_installed_stack():
    import PIL
    import torch
    import torchvision
    from facenet_pytorch import MTCNN, InceptionResnetV1  # noqa: F401

    # installed with --no-deps: its pins (torch<2.3, numpy<2, Pillow<10.3) are ignored on purpose
    assert int(np.__version__.split(".")[0]) >= 2 and torch.__version__ and torchvision.__version__ and PIL.__version__


@needs_facenet
def test_build_face_detector_mtcnn(mtcnn):
    assert isinstance(mtcnn, MtcnnFaceDetector)
    # score_threshold not set: MTCNN's own default, not YuNet's 0.7
    assert mtcnn.score_threshold == MTCNN_DEFAULT_SCORE_THRESHOLD
    assert MtcnnFaceDetector(FaceDetectorConfig(backend="mtcnn", score_threshold=0.7)).score_threshold == 0.7


@needs_facenet
@needs_assets
@pytest.mark.parametrize("person,path", IDENTITY_PHOTOS, ids=[f"{a}/{b.name}" for a, b in IDENTITY_PHOTOS])
def test_mtcnn_agrees_with_yunet_on_each_identity_photo(mtcnn, yunet, person, path):
    image = img("identities", person, path.name)
    faces = mtcnn.detect(image)
    ref = yunet.detect(image)
    assert len(faces) == 1 and len(ref) == 1
    assert faces.bbox_xyxy.dtype == np.float32 and faces.landmarks5.shape == (1, 5, 2)
    assert faces.score[0] >= 0.99
    assert iou(faces.bbox_xyxy[0], ref.bbox_xyxy[0]) > 0.7  # measured 0.76-0.97
    lm, ref_lm = faces.landmarks5[0], ref.landmarks5[0]
    x0, y0, x1, y1 = ref.bbox_xyxy[0]
    size = math.sqrt((x1 - x0) * (y1 - y0))
    dist = np.linalg.norm(lm - ref_lm, axis=1) / size
    # same order: each MTCNN point is nearest to the YuNet point of the same index
    nearest = np.linalg.norm(lm[:, None] - ref_lm[None], axis=2).argmin(axis=1)
    assert nearest.tolist() == [0, 1, 2, 3, 4]
    # measured: eyes and nose 0.4-6%, mouth corners up to 6.5% (MTCNN puts them lower and wider)
    assert dist.max() < 0.08 and dist.mean() < 0.05, dist.round(3)


@needs_facenet
@needs_assets
def test_mtcnn_on_group_photos(mtcnn, yunet):
    image = img("identities_test", "obama_and_biden.jpg")
    faces = mtcnn.detect(image)
    ref = yunet.detect(image)
    where = {"biden": (840, 520), "obama": (1235, 480), "child": (1700, 1130)}
    found = sorted(k for b in faces.bbox_xyxy for k, (x, y) in where.items() if b[0] <= x <= b[2] and b[1] <= y <= b[3])
    assert found == ["biden", "child", "obama"]  # the girl at the bottom right, head turned, scores 0.99 too
    for name in ("biden", "obama"):
        x, y = where[name]
        mine = next(b for b in faces.bbox_xyxy if b[0] <= x <= b[2] and b[1] <= y <= b[3])
        assert max(iou(mine, r) for r in ref.bbox_xyxy) > 0.9, name  # measured 0.95
    # after the quality gate, exactly Obama and Biden, as with YuNet
    good = [b for b, q in zip(faces.bbox_xyxy, FaceQualityGate().check(image, faces)) if q.ok]
    assert sorted(int(b[0] > 1000) for b in good) == [0, 1]
    # YuNet's default threshold lets a false positive on the blurred background through (0.80)
    low = MtcnnFaceDetector(FaceDetectorConfig(backend="mtcnn", score_threshold=0.7)).detect(image)
    assert len(low) == 4 and 0.7 <= low.score.min() < MTCNN_DEFAULT_SCORE_THRESHOLD

    two = mtcnn.detect(img("identities_test", "kit_with_rose.jpg"))
    assert len(two) == 2 and two.score.min() > 0.99


@needs_facenet
def test_mtcnn_edge_cases(mtcnn):
    assert len(mtcnn.detect(np.zeros((10, 10, 3), np.uint8))) == 0  # below min_face_size: no pyramid level
    assert len(mtcnn.detect(np.full((480, 640, 3), 128, np.uint8))) == 0
    with pytest.raises(ValueError, match="HxWx3"):
        mtcnn.detect(np.zeros((100, 100), np.uint8))


@needs_facenet
@needs_assets
def test_mtcnn_max_side_maps_back_to_source_pixels(mtcnn):
    image = img("identities", "obama", "obama.jpg")
    full = mtcnn.detect(image)
    small = MtcnnFaceDetector(FaceDetectorConfig(backend="mtcnn", max_side=480)).detect(image)
    assert len(small) == 1
    w = full.bbox_xyxy[0, 2] - full.bbox_xyxy[0, 0]
    assert np.abs(small.bbox_xyxy - full.bbox_xyxy).max() < 0.06 * w
    assert np.abs(small.landmarks5 - full.landmarks5).max() < 0.06 * w


# ------------------------------------------------------------------------------------------------
# build_embedder, dlib
# ------------------------------------------------------------------------------------------------


@needs_assets
def test_build_embedder_dlib(yunet, tmp_path):
    image = img("identities", "obama", "obama.jpg")
    faces = yunet.detect(image)
    emb = build_embedder(EmbedderConfig())
    assert isinstance(emb, DlibFaceEmbedder)
    assert emb.dim == 128 == EmbedderConfig().dim and emb.name == "dlib-resnet-v1"
    v = emb.embed(image, faces)
    assert v.shape == (1, 128) and v.dtype == np.float32
    assert np.linalg.norm(v, axis=1) == pytest.approx(1.0, abs=1e-5)
    # cfg.weights is the recognition model
    same = build_embedder(EmbedderConfig(weights=emb.recognition_weights)).embed(image, faces)
    np.testing.assert_allclose(same, v, atol=1e-6)
    with pytest.raises(ModelError, match="missing.dat"):
        build_embedder(EmbedderConfig(weights=str(tmp_path / "missing.dat")))


# ------------------------------------------------------------------------------------------------
# facenet embedder: errors
# ------------------------------------------------------------------------------------------------


@needs_facenet
def test_facenet_without_weights_and_without_network_asks_for_a_local_file(tmp_path, monkeypatch):
    """facenet-pytorch's real download path runs and fails (no cached copy, name lookups fail)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached checkpoint

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (blocked by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # as here: there is no internet
    with pytest.raises(ModelError, match=r"faces\.embedder\.weights") as err:
        build_embedder(EmbedderConfig(backend="facenet"))
    assert "vggface2" in str(err.value) and "URLError" in str(err.value)


@needs_facenet
def test_facenet_weights_errors(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ModelError, match=str(missing)):
        build_embedder(EmbedderConfig(backend="facenet", weights=str(missing)))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot load facenet weights"):
        build_embedder(EmbedderConfig(backend="facenet", weights=str(garbage)))
    import torch

    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ModelError, match="do not fit InceptionResnetV1"):
        build_embedder(EmbedderConfig(backend="facenet", weights=str(wrong)))
    from storelens.backends.face_embedders.facenet import FacenetEmbedder

    with pytest.raises(ValueError, match="backend 'facenet'"):
        FacenetEmbedder(EmbedderConfig(backend="dlib"))


# ------------------------------------------------------------------------------------------------
# facenet embedder: alignment geometry
# ------------------------------------------------------------------------------------------------


def _dots(chip: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Centroid of each colour's pixels in an RGB chip (weighted by closeness to the colour)."""
    out = []
    ys, xs = np.mgrid[: chip.shape[0], : chip.shape[1]]
    for c in colours:
        d = np.abs(chip.astype(np.float32) - np.array(c, np.float32)).sum(axis=2)
        w = np.clip(1.0 - d / 200.0, 0, None)
        assert w.sum() > 5, c
        out.append([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
    return np.array(out)


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


@needs_facenet
@pytest.mark.parametrize("scale,angle", [(3.0, 20.0), (0.8, -15.0), (1.0, 0.0), (6.0, 35.0)])
def test_facenet_alignment_puts_the_landmarks_on_the_template(scale, angle):
    """Five coloured discs where the landmarks are: in the chip they sit on the template."""
    from storelens.backends.face_embedders.facenet import FACENET_CHIP_SIZE, FACENET_TEMPLATE_5, FacenetEmbedder

    emb = FacenetEmbedder.__new__(FacenetEmbedder)  # geometry only: no network needed
    emb.template = FACENET_TEMPLATE_5
    t = math.radians(angle)
    rot = scale * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    centre = np.array([700.0, 500.0])
    lm = (FACENET_TEMPLATE_5 - 80.0) @ rot.T + centre  # the template, turned, scaled and moved
    image = np.full((1000, 1400, 3), 90, np.uint8)
    for (x, y), c in zip(lm, COLOURS):
        cv2.circle(image, (round(x * 16), round(y * 16)), round(4 * scale * 16), c[::-1], -1, cv2.LINE_AA, shift=4)
    chips = emb.chips(image, lm[None])
    assert len(chips) == 1 and chips[0].shape == (FACENET_CHIP_SIZE, FACENET_CHIP_SIZE, 3) and chips[0].dtype == np.uint8
    got = _dots(chips[0], COLOURS)
    np.testing.assert_allclose(got, FACENET_TEMPLATE_5, atol=0.5)
    # the transform itself maps the landmarks exactly onto the template (they are a similarity of it)
    m = emb.transforms(lm[None])[0]
    np.testing.assert_allclose(lm @ m[:, :2].T + m[:, 2], FACENET_TEMPLATE_5, atol=1e-9)
    assert math.sqrt(abs(np.linalg.det(m[:, :2]))) == pytest.approx(1 / scale)


@needs_facenet
def test_facenet_box_chip_is_the_mtcnn_crop():
    """Box input: the box plus a 14/146 margin stretched to 160x160, like facenet-pytorch's extract_face."""
    from facenet_pytorch import extract_face

    from storelens.backends.face_embedders.facenet import FacenetEmbedder

    emb = FacenetEmbedder.__new__(FacenetEmbedder)
    emb.template = np.zeros((5, 2))
    image = np.full((600, 800, 3), 60, np.uint8)
    box = np.array([292.0, 146.0, 438.0, 365.0])  # 146 x 219: the margin is 14 x 21 px in the image
    cv2.rectangle(image, (292, 146), (437, 364), (255, 255, 255), -1)
    chip = emb.chips(image, box[None])[0]
    grey = chip.mean(axis=2)
    inside = np.where(grey > 157)
    # the box spans pixels 7..152 of the chip (a 7 px margin on each side), in both directions
    assert inside[1].min() == 7 and inside[1].max() == 152 and inside[0].min() == 7 and inside[0].max() == 152
    ref = extract_face(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), box, image_size=160, margin=14)
    ref = ref.permute(1, 2, 0).numpy()
    assert np.abs(ref.astype(np.float32) - chip.astype(np.float32)).mean() < 3.0


@needs_facenet
@needs_assets
def test_facenet_alignment_of_real_faces(yunet, mtcnn):
    """On real faces, YuNet's and MTCNN's landmarks of one face give nearly the same chip."""
    from storelens.backends.face_embedders.facenet import FACENET_TEMPLATE_5, FacenetEmbedder

    emb = FacenetEmbedder.__new__(FacenetEmbedder)
    emb.template = FACENET_TEMPLATE_5
    for person, path in IDENTITY_PHOTOS:
        image = img("identities", person, path.name)
        a, b = yunet.detect(image), mtcnn.detect(image)
        ma, mb = emb.transforms(a)[0], emb.transforms(b)[0]
        lm = a.landmarks5[0].astype(np.float64)
        # the fit leaves the landmarks near the template: measured 2.8-7.7 px on average per face, 10 px for
        # john2.jpeg (head turned). Frontal faces keep ~5 px: the template comes from MTCNN crops stretched
        # to a square (boxes ~1.36x taller than wide), which a similarity cannot reproduce.
        resid = np.linalg.norm(lm @ ma[:, :2].T + ma[:, 2] - FACENET_TEMPLATE_5, axis=1)
        assert resid.mean() < 12.0, (path.name, resid.round(1))
        # the two detectors' chips differ by a small shift, scale and turn (chip corners move 2-18 px)
        corners = np.array([[0, 0], [160, 0], [0, 160], [160, 160]], np.float64)
        inv_a = cv2.invertAffineTransform(ma)
        src = corners @ inv_a[:, :2].T + inv_a[:, 2]
        moved = np.linalg.norm(src @ mb[:, :2].T + mb[:, 2] - corners, axis=1)
        assert moved.max() < 24.0, (path.name, moved.round(1))


# ------------------------------------------------------------------------------------------------
# facenet embedder: plumbing with random weights
# ------------------------------------------------------------------------------------------------


@needs_facenet
@needs_assets
def test_facenet_plumbing_with_random_weights(tmp_path, yunet):
    """PLUMBING ONLY: a randomly initialised InceptionResnetV1 saved as a state dict.

    Proves the weights file is loaded (classifier entries dropped), chips are
    standardised and batched, and the output is (N, 512) float32 unit rows that
    equal facenet-pytorch's own forward pass. Says nothing about recognition
    quality: the trained weights are not available here.
    """
    import torch
    from facenet_pytorch import InceptionResnetV1

    from storelens.backends.face_embedders.facenet import FacenetEmbedder, standardize

    torch.manual_seed(0)
    ref_net = InceptionResnetV1(classify=True, num_classes=7).eval()  # with logits.*, as trained checkpoints have
    path = tmp_path / "random_inception_resnet_v1.pt"
    torch.save(ref_net.state_dict(), path)

    emb = build_embedder(EmbedderConfig(backend="facenet", weights=str(path)))
    assert isinstance(emb, FacenetEmbedder)
    assert emb.dim == 512 == EmbedderConfig(backend="facenet").dim
    assert emb.name == "facenet-inceptionresnetv1-vggface2"

    image = img("identities_test", "obama_and_biden.jpg")
    faces = yunet.detect(image)
    assert len(faces) == 3
    v = emb.embed(image, faces)
    assert v.shape == (3, 512) and v.dtype == np.float32 and np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # one face at a time == the batch (eval mode); landmarks array == Faces object
    np.testing.assert_allclose(emb.embed(image, faces[1]), v[1:2], atol=1e-5)
    np.testing.assert_allclose(emb.embed(image, faces.landmarks5), v, atol=1e-6)
    # same numbers as facenet-pytorch's own network (embedding mode) on our chips
    chips = emb.chips(image, faces)
    ref_net.classify = False
    with torch.no_grad():
        ref = ref_net(torch.from_numpy(standardize(np.stack(chips)))).numpy()
    np.testing.assert_allclose(v, ref, atol=1e-4)
    # boxes work too; no faces -> (0, 512)
    assert emb.embed(image, faces.bbox_xyxy).shape == (3, 512)
    assert emb.embed(image, Faces.empty()).shape == (0, 512)
    assert emb.embed(image, np.zeros((0, 4))).dtype == np.float32
