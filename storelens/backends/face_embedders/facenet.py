"""FaceNet embeddings: facenet-pytorch's InceptionResnetV1 (512-d) behind :class:`FaceEmbedder`.

:class:`FacenetEmbedder` is the ``faces.embedder.backend: facenet`` choice. It
takes the same ``faces`` as :class:`~storelens.backends.face_embedders.dlib.DlibFaceEmbedder`
and returns (N, 512) float32 unit rows. Each face becomes a 160x160 RGB chip,
standardised as ``(x - 127.5) / 128`` (facenet-pytorch's
``fixed_image_standardization``):

* from **five landmarks** (N, 5, 2) in YuNet's order (see
  :mod:`storelens.backends.face_detectors`; MTCNN's order is the same): a least-squares
  similarity transform maps them onto :data:`FACENET_TEMPLATE_5`, their mean
  position in the crops facenet-pytorch's pretrained models were evaluated on
  (MTCNN box + ``margin=14`` resized to 160x160, as in facenet-pytorch's LFW
  evaluation); or
* from a face **box** (N, 4) ``x1, y1, x2, y2``: that same MTCNN-style crop
  (box plus a 14/146 margin, stretched to 160x160). Boxes of other detectors
  frame faces a little differently than MTCNN's (YuNet's are 0-6% larger):
  prefer landmarks.

The MTCNN crops are not aligned and are stretched (the boxes are ~1.36 times
taller than wide), so a similarity alignment matches them on average rather
than exactly; it makes the chip independent of how a detector draws its box.

Weights: ``FacenetEmbedderConfig.weights`` is a local ``state_dict`` file of
InceptionResnetV1 (e.g. facenet-pytorch's ``20180402-114759-vggface2.pt``),
loaded with ``torch.load(..., weights_only=True)``; its classifier
(``logits.*``) entries, if any, are dropped. Without it, facenet-pytorch
downloads its ``pretrained`` weights from a GitHub release into
``$TORCH_HOME/checkpoints`` (once): that needs internet access, and failing it
raises :class:`~storelens.errors.ModelError` asking for a local file.

Use one embedder object per worker thread, like the other embedders. Torch's
thread count is left alone (``faces.emotion.threads`` sets it process-wide).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from storelens.backends.face_embedders.base import FACE_EMBEDDERS, as_faces_array, l2_normalize, to_rgb
from storelens.config.faces import FacenetEmbedderConfig
from storelens.errors import ModelError

log = logging.getLogger(__name__)

#: Side (pixels) of the square chip InceptionResnetV1 is fed.
FACENET_CHIP_SIZE = 160
#: facenet-pytorch's MTCNN ``margin`` (pixels of the 160x160 crop) used to derive
#: the template and for box input; its LFW evaluation uses 14.
FACENET_MARGIN = 14

#: Mean position of YuNet's five landmarks (eye on the image's left, eye on the
#: image's right, nose tip, mouth corner on the image's left, mouth corner on the
#: image's right) inside facenet-pytorch MTCNN crops (``image_size=160,
#: margin=14``). Measured on the 16 faces of ``faces/identities*`` in the shared
#: assets that both detectors find (the child turned away in obama_and_biden.jpg
#: left out): MTCNN box -> crop, YuNet landmarks mapped into it. Standard
#: deviation across faces: 3-5 px vertically, 9-16 px horizontally (MTCNN's box
#: placement and head yaw). MTCNN's own landmarks give the same template within
#: 0.2 px except the mouth corners, 1-2 px lower.
FACENET_TEMPLATE_5 = np.array(
    [[47.3, 64.3], [113.0, 63.9], [79.8, 93.0], [51.3, 114.5], [110.0, 114.2]], np.float64
)

#: Embedding dimension of InceptionResnetV1.
FACENET_DIM = 512
#: Faces per forward pass (bounds memory on crowded frames).
BATCH_SIZE = 32


def _facenet() -> Any:
    try:
        import facenet_pytorch
    except Exception as exc:  # ImportError, or torchvision failing to import on CPU-only torch
        raise ModelError(
            "faces.embedder.backend 'facenet' needs the facenet-pytorch package "
            f"(pip install --no-deps facenet-pytorch), which cannot be imported here: {exc}"
        ) from exc
    return facenet_pytorch


# -- alignment ---------------------------------------------------------------------------------


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the similarity (rotation, uniform scale, translation, no reflection)
    mapping the points ``src`` onto ``dst`` in the least-squares sense (Umeyama, 1991)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two equal sets of >= 2 points, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("degenerate points: all at one position")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def box_transform(box: np.ndarray, size: int = FACENET_CHIP_SIZE, margin: float = FACENET_MARGIN) -> np.ndarray:
    """2x3 matrix of facenet-pytorch's ``extract_face`` crop: ``box`` plus ``margin``
    (pixels of the output) stretched to ``size`` x ``size`` (edges onto edges)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    if bw <= 0 or bh <= 0:
        raise ValueError(f"empty face box {list(box)}")
    cw, ch = bw * size / (size - margin), bh * size / (size - margin)
    cx0, cy0 = x1 - (cw - bw) / 2, y1 - (ch - bh) / 2
    sx, sy = size / cw, size / ch
    # pixel centres: image x + 0.5 at crop edge cx0 -> chip 0.5 at its edge 0
    return np.array([[sx, 0.0, (0.5 - cx0) * sx - 0.5], [0.0, sy, (0.5 - cy0) * sy - 0.5]])


def warp_chip(rgb: np.ndarray, m: np.ndarray, size: int = FACENET_CHIP_SIZE) -> np.ndarray:
    """``size`` x ``size`` chip of ``rgb`` under the 2x3 image -> chip matrix ``m``.

    When the face is shrunk by more than 1.5x, its region is first downscaled with
    area averaging (no aliasing), then warped; outside the image is black.
    """
    m = np.asarray(m, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 1 / 1.5:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        h, w = rgb.shape[:2]
        x0, y0 = (max(0, int(np.floor(v)) - 2) for v in corners.min(0))
        x1, y1 = (int(np.ceil(v)) + 2 for v in corners.max(0))
        x1, y1 = min(w, x1), min(h, y1)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            roi = rgb[y0:y1, x0:x1]
            nw, nh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            small = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            sx, sy = nw / (x1 - x0), nh / (y1 - y0)
            # small pixel q <-> image pixel p = (q + 0.5) / s - 0.5 + offset (pixel centres)
            back = np.array([[1 / sx, 0.0, 0.5 / sx - 0.5 + x0], [0.0, 1 / sy, 0.5 / sy - 0.5 + y0]])
            m = np.concatenate([m[:, :2] @ back[:, :2], (m[:, :2] @ back[:, 2] + m[:, 2])[:, None]], axis=1)
            rgb = small
    return cv2.warpAffine(
        np.ascontiguousarray(rgb), m, (size, size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )


def chip_transforms(faces: Any, template: np.ndarray = FACENET_TEMPLATE_5) -> list[np.ndarray]:
    """One 2x3 image -> chip matrix per face (landmarks: similarity to ``template``; boxes: MTCNN crop)."""
    arr = as_faces_array(faces)
    if arr.ndim == 2:
        return [box_transform(b) for b in arr]
    return [similarity_transform(lm, template) for lm in arr]


def standardize(chips: np.ndarray) -> np.ndarray:
    """(N, 160, 160, 3) uint8 RGB chips -> (N, 3, 160, 160) float32 ``(x - 127.5) / 128``."""
    x = np.asarray(chips, np.float32)
    return np.ascontiguousarray(((x - 127.5) / 128.0).transpose(0, 3, 1, 2))


# -- weights -----------------------------------------------------------------------------------


def _load_state_dict(path: str) -> dict[str, Any]:
    import torch

    if not os.path.isfile(path):
        raise ModelError(
            f"facenet weights not found: {path} (faces.embedder.weights must be a local state-dict file "
            "of facenet-pytorch's InceptionResnetV1)"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load facenet weights {path} (a torch state-dict file is expected): {exc}") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise ModelError(f"facenet weights {path}: expected a state dict, got {type(sd).__name__}")
    out: dict[str, Any] = OrderedDict()
    meta = getattr(sd, "_metadata", None)
    if meta is not None:  # module versions (e.g. of BatchNorm) as saved
        out._metadata = meta  # type: ignore[attr-defined]
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if not k.startswith("logits."):  # the training classifier: embeddings do not use it
            out[k] = v
    return out


class FacenetEmbedder:
    """facenet-pytorch's InceptionResnetV1 (512-d), the :class:`FaceEmbedder` protocol.

    Args:
        cfg: ``faces.embedder`` settings with ``backend: facenet`` (``None``: the defaults
            with that backend). ``weights``: local state dict; ``None`` lets facenet-pytorch
            download ``pretrained`` (needs internet). ``device``: torch device.
        template: chip positions of the five landmarks (default :data:`FACENET_TEMPLATE_5`).
    """

    dim = FACENET_DIM

    def __init__(self, cfg: FacenetEmbedderConfig | None = None, template: np.ndarray | None = None) -> None:
        cfg = cfg if cfg is not None else FacenetEmbedderConfig()
        if not isinstance(cfg, FacenetEmbedderConfig):
            raise ValueError(f"FacenetEmbedder needs an EmbedderConfig with backend 'facenet', got {cfg.backend!r}")
        self.cfg = cfg
        self.name = cfg.model_name  # what the gallery and staff embeddings record
        self.template = np.asarray(FACENET_TEMPLATE_5 if template is None else template, np.float64)
        if self.template.shape != (5, 2):
            raise ValueError(f"template must be (5, 2), got {self.template.shape}")
        fp = _facenet()
        import torch

        self._torch = torch
        self.weights = cfg.weights
        if cfg.weights is not None:
            sd = _load_state_dict(cfg.weights)
            net = fp.InceptionResnetV1(classify=False)
            try:
                net.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise ModelError(f"facenet weights {cfg.weights} do not fit InceptionResnetV1: {exc}") from exc
        else:
            try:
                net = fp.InceptionResnetV1(pretrained=cfg.pretrained, classify=False)
            except Exception as exc:  # URLError without internet, HTTP errors, a broken cached file
                raise ModelError(
                    f"cannot get facenet-pytorch's pretrained '{cfg.pretrained}' InceptionResnetV1 weights "
                    f"(facenet-pytorch downloads them from GitHub at run time: {type(exc).__name__}: {exc}). "
                    "Set faces.embedder.weights to a local state-dict file of InceptionResnetV1 "
                    "(e.g. 20180402-114759-vggface2.pt)."
                ) from exc
            if hasattr(net, "logits"):
                del net.logits  # the classifier of the training identities: not needed for embeddings
        try:
            self._net = net.eval().to(cfg.device)
        except Exception as exc:
            raise ModelError(f"cannot move the facenet model to device {cfg.device!r}: {exc}") from exc

    # -- alignment -------------------------------------------------------------------------------

    def transforms(self, faces: Any) -> list[np.ndarray]:
        """One 2x3 image -> chip matrix per face."""
        return chip_transforms(faces, self.template)

    def chips(self, image_bgr: np.ndarray, faces: Any) -> list[np.ndarray]:
        """Aligned 160x160 RGB face chips (uint8), one per face, as the network sees them."""
        rgb = to_rgb(image_bgr)
        return [warp_chip(rgb, m) for m in self.transforms(faces)]

    # -- embedding -------------------------------------------------------------------------------

    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        """Aligned 160x160 RGB uint8 chips -> (N, 512) float32 unit vectors."""
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        for c in chips:
            if np.shape(c) != (FACENET_CHIP_SIZE, FACENET_CHIP_SIZE, 3):
                raise ValueError(f"face chips must be {FACENET_CHIP_SIZE}x{FACENET_CHIP_SIZE}x3, got {np.shape(c)}")
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(chips), BATCH_SIZE):
                x = torch.from_numpy(standardize(np.stack(chips[i : i + BATCH_SIZE]))).to(self.cfg.device)
                out.append(self._net(x).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))

    def embed(self, image_bgr: np.ndarray, faces: Any) -> np.ndarray:
        """(N, 4) boxes, (N, 5, 2) landmarks or a ``Faces``-like object -> (N, 512) float32 unit rows."""
        return self.embed_chips(self.chips(image_bgr, faces))


@FACE_EMBEDDERS.register("facenet")
def build(cfg: FacenetEmbedderConfig) -> FacenetEmbedder:
    return FacenetEmbedder(cfg)
