"""OpenVINO device names from StoreLens' ``device`` settings, and what a compiled model runs (one place for every
OpenVINO backend)."""
from __future__ import annotations


def openvino_device(device: str) -> str:
    """The OpenVINO device for a ``device`` setting: ``cpu`` (any case, or PyTorch's ``cpu:0``) is ``CPU``;
    other names (``gpu``, ``GPU.1``, ``npu``, ``auto``) are OpenVINO's own, upper-cased.

    >>> [openvino_device(d) for d in ("cpu", "CPU", "cpu:0", "gpu", "GPU.1", "auto")]
    ['CPU', 'CPU', 'CPU', 'GPU', 'GPU.1', 'AUTO']
    """
    return "CPU" if device.lower().startswith("cpu") else device.upper()


def latency_props(threads: int | None = None, precision: str = "f32") -> dict:
    """``compile_model`` properties for one request at a time (the latency hint), ``threads`` OpenVINO threads
    (``None``: OpenVINO's choice) and the float layers' ``precision`` (``"default"``: the device's own).

    >>> latency_props(2, "default")
    {'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_NUM_THREADS': 2}
    >>> latency_props()
    {'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'}
    """
    props: dict = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        props["INFERENCE_NUM_THREADS"] = int(threads)
    if precision != "default":
        props["INFERENCE_PRECISION_HINT"] = precision
    return props


def inference_precision(compiled) -> str:
    """The precision a compiled model's float layers really run in (``f32``, ``bf16``, ...; ``""`` if the device
    does not say): with ``precision: default`` that is the device's own choice, bf16 on AVX512-BF16/AMX CPUs."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    except Exception:  # noqa: BLE001 (a device without the property)
        return ""
