"""A Keras 2 functional image model (HDF5) rebuilt as PyTorch ops: no TensorFlow needed."""
from __future__ import annotations

import json

import numpy as np

from storelens.errors import ModelError


def _tf_same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one spatial axis: extra pixel goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _activation(name: str):
    import torch

    acts = {
        "linear": lambda x: x,
        "relu": torch.relu,
        "softmax": lambda x: torch.softmax(x, dim=1),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }
    if name not in acts:
        raise ModelError(f"unsupported Keras activation {name!r}")
    return acts[name]


class KerasGraph:
    """A Keras 2 functional image model (channels_last) rebuilt as PyTorch ops (NCHW).

    Supported layers: InputLayer, Conv2D, SeparableConv2D, DepthwiseConv2D,
    BatchNormalization, Activation, ReLU, MaxPooling2D, Add,
    GlobalAveragePooling2D, Dropout; anything else raises ModelError. Outputs
    of a 4-D layer are NCHW; the model's output here is 2-D (N, classes).
    """

    def __init__(self, hdf5_path: str) -> None:
        import h5py
        import torch

        self._torch = torch
        try:
            with h5py.File(hdf5_path, "r") as f:
                if "model_config" not in f.attrs:
                    raise ModelError(f"{hdf5_path}: no model_config (a weights-only file); need a full Keras model")
                raw = f.attrs["model_config"]
                config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                group = f["model_weights"] if "model_weights" in f else f
                weights = {}
                for lname in group.attrs.get("layer_names", []):
                    lname = lname.decode() if isinstance(lname, bytes) else lname
                    g = group[lname]
                    names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
                    weights[lname] = {n.split("/")[-1].split(":")[0]: np.asarray(g[n]) for n in names}
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot read Keras HDF5 {hdf5_path}: {exc}") from exc
        self.path = hdf5_path
        self._build(config, weights)

    # -- graph ------------------------------------------------------------------------------
    def _build(self, config: dict, weights: dict) -> None:
        cls = config.get("class_name")
        cfg = config.get("config")
        if cls not in ("Model", "Functional"):
            raise ModelError(f"{self.path}: unsupported Keras model class {cls!r} (need a Keras 2 functional model)")
        nodes = []
        for layer in cfg["layers"]:
            inbound = layer.get("inbound_nodes") or []
            if len(inbound) > 1:
                raise ModelError(f"{self.path}: shared layer {layer['name']} is not supported")
            if inbound and not isinstance(inbound[0], list):
                raise ModelError(f"{self.path}: not a Keras 2 model_config (inbound_nodes format)")
            nodes.append((layer, [n[0] for n in inbound[0]] if inbound else []))
        self.inputs = [i[0] for i in cfg["input_layers"]]
        outs = cfg["output_layers"]
        if len(self.inputs) != 1 or len(outs) != 1:
            raise ModelError(f"{self.path}: only single-input single-output models are supported")
        self.output = outs[0][0]
        self.input_shape = None
        self.ops = []  # (name, fn, sources)
        for layer, srcs in nodes:
            lcfg = layer["config"]
            name = lcfg.get("name") or layer.get("name")
            if layer["class_name"] == "InputLayer":
                self.input_shape = tuple(lcfg.get("batch_input_shape") or lcfg.get("batch_shape"))[1:]
                continue
            self.ops.append((name, self._op(layer["class_name"], lcfg, weights.get(name, {})), srcs))
        if self.input_shape is None or len(self.input_shape) != 3:
            raise ModelError(f"{self.path}: expected an image input (H, W, C), got {self.input_shape}")

    def _op(self, kind: str, c: dict, w: dict):
        torch = self._torch
        F = torch.nn.functional
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        if c.get("data_format", "channels_last") != "channels_last":
            raise ModelError(f"{self.path}: layer {c.get('name')}: only channels_last is supported")

        def padded(x, k, s, d, padding, value=0.0):
            if padding == "valid":
                return x
            if padding != "same":
                raise ModelError(f"{self.path}: padding {padding!r} not supported")
            ph = _tf_same_pad(x.shape[2], k[0], s[0], d[0])
            pw = _tf_same_pad(x.shape[3], k[1], s[1], d[1])
            if ph == (0, 0) and pw == (0, 0):
                return x
            return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)

        if kind in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
            k, s = tuple(c["kernel_size"]), tuple(c["strides"])
            d = tuple(c.get("dilation_rate", (1, 1)))
            act = _activation(c.get("activation", "linear"))
            bias = t(w["bias"]) if c.get("use_bias", True) else None
            if kind == "Conv2D":
                kern = t(w["kernel"].transpose(3, 2, 0, 1))

                def conv(x):
                    return act(F.conv2d(padded(x, k, s, d, c["padding"]), kern, bias, s, 0, d))

                return conv
            dk = w["depthwise_kernel"]  # (kh, kw, in, mult); output channel = c * mult + m
            kh, kw, cin, mult = dk.shape
            dkern = t(dk.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None])
            if kind == "DepthwiseConv2D":

                def dwconv(x):
                    return act(F.conv2d(padded(x, k, s, d, c["padding"]), dkern, bias, s, 0, d, groups=cin))

                return dwconv
            pkern = t(w["pointwise_kernel"].transpose(3, 2, 0, 1))

            def sepconv(x):
                y = F.conv2d(padded(x, k, s, d, c["padding"]), dkern, None, s, 0, d, groups=cin)
                return act(F.conv2d(y, pkern, bias))

            return sepconv
        if kind == "BatchNormalization":
            if c.get("axis", -1) not in (-1, 3, [3], [-1]):
                raise ModelError(f"{self.path}: BatchNormalization over axis {c.get('axis')} not supported")
            eps = float(c["epsilon"])
            mean, var = w["moving_mean"], w["moving_variance"]
            gamma = w["gamma"] if c.get("scale", True) else np.ones_like(mean)
            beta = w["beta"] if c.get("center", True) else np.zeros_like(mean)
            # Same arithmetic as Keras: (x - mean) / sqrt(var + eps) * gamma + beta, folded.
            inv = gamma / np.sqrt(var.astype(np.float32) + np.float32(eps))
            scale, shift = t(inv[None, :, None, None]), t((beta - mean * inv)[None, :, None, None])
            return lambda x: x * scale + shift
        if kind == "Activation":
            return _activation(c["activation"])
        if kind == "ReLU":
            if c.get("max_value") is not None or c.get("negative_slope", 0) or c.get("threshold", 0):
                raise ModelError(f"{self.path}: ReLU with options is not supported")
            return torch.relu
        if kind == "MaxPooling2D":
            k = tuple(c["pool_size"])
            s = tuple(c.get("strides") or k)

            def pool(x):  # TF "same" max-pooling ignores the padding: pad with -inf
                return F.max_pool2d(padded(x, k, s, (1, 1), c["padding"], float("-inf")), k, s)

            return pool
        if kind == "Add":
            return "add"
        if kind == "GlobalAveragePooling2D":
            return lambda x: x.mean(dim=(2, 3))
        if kind == "Dropout":
            return lambda x: x
        raise ModelError(f"{self.path}: unsupported Keras layer type {kind!r}")

    def __call__(self, x_nhwc: np.ndarray) -> np.ndarray:
        """Run on a float32 (N, H, W, C) batch, Keras layout; returns the model output as numpy."""
        torch = self._torch
        x = np.asarray(x_nhwc, np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"input must be (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        with torch.inference_mode():
            vals = {self.inputs[0]: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))}
            for name, fn, srcs in self.ops:
                if fn == "add":
                    out = vals[srcs[0]]
                    for s in srcs[1:]:
                        out = out + vals[s]
                    vals[name] = out
                else:
                    vals[name] = fn(vals[srcs[0]])
            return vals[self.output].numpy()
