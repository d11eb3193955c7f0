"""OpenVINO device names from StoreLens' ``device`` settings (one mapping for every OpenVINO backend)."""
from __future__ import annotations


def openvino_device(device: str) -> str:
    """The OpenVINO device for a ``device`` setting: ``cpu`` (any case, or PyTorch's ``cpu:0``) is ``CPU``;
    other names (``gpu``, ``GPU.1``, ``npu``, ``auto``) are OpenVINO's own, upper-cased.

    >>> [openvino_device(d) for d in ("cpu", "CPU", "cpu:0", "gpu", "GPU.1", "auto")]
    ['CPU', 'CPU', 'CPU', 'GPU', 'GPU.1', 'AUTO']
    """
    return "CPU" if device.lower().startswith("cpu") else device.upper()
