"""Person appearance embedders for trackers, one module per backend, chosen by ``tracker.embedder``.

* ``mobilenet-openvino`` (default): :class:`~.mobilenet_openvino.OpenVinoMobileNetEmbedder`;
* ``mobilenet-torch``: :class:`~.mobilenet_torch.TorchMobileNetEmbedder`;
* ``omz-reid-openvino``: :class:`~.omz_reid_openvino.OpenVinoReidEmbedder` (Intel OMZ person re-identification,
  one batched inference per frame; the ``bytereid`` tracker's default).
"""
from __future__ import annotations

from storelens.backends.appearance.base import APPEARANCE, Embedder, crop_batch
from storelens.backends.appearance.mobilenet_openvino import OpenVinoMobileNetEmbedder
from storelens.backends.appearance.mobilenet_torch import TorchMobileNetEmbedder
from storelens.backends.appearance.omz_reid_openvino import OpenVinoReidEmbedder
from storelens.config.trackers import AppearanceEmbedderConfig

__all__ = ["APPEARANCE", "Embedder", "OpenVinoReidEmbedder", "OpenVinoMobileNetEmbedder", "TorchMobileNetEmbedder",
           "build_appearance_embedder", "crop_batch"]


def build_appearance_embedder(cfg: AppearanceEmbedderConfig) -> Embedder:
    """The embedder ``cfg.backend`` names."""
    return APPEARANCE.build(cfg)
