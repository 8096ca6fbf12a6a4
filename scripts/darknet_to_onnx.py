#!/usr/bin/env python3
"""Convert a Darknet YOLO (v3 / v3-tiny style) .cfg + .weights pair to ONNX.

Written for fave-detect.  The resulting graph has one input, ``input``
(float32, 1x3xHxW, RGB in [0, 1], NCHW, H/W from the cfg's [net]
section), and one output per [yolo] section, ``yolo_<i>`` (i = order of the
[yolo] sections in the cfg), holding the *raw* output of the convolution that
feeds that yolo layer (1 x num_masks*(5+classes) x gh x gw).  Decoding
(sigmoid, exp, anchors) is left to the caller, who reads the anchors and masks
from the same cfg.

Supported sections: [net], [convolutional] (with or without batch_normalize,
activation leaky/linear), [maxpool], [route], [upsample], [shortcut], [yolo].
Batch normalisation is folded into the convolution weights and bias.

Usage: darknet_to_onnx.py CFG WEIGHTS OUT.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Darknet's batchnorm: (x - mean) / sqrt(var + 1e-5)   (src/normalization / blas.c)
BN_EPS = 1e-5
LEAKY_SLOPE = 0.1
OPSET = 13


def parse_cfg(path):
    """Return a list of (section_name, {key: value-string}) in file order."""
    sections = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                sections.append((line[1:-1].strip(), {}))
            else:
                if not sections:
                    raise ValueError(f"option outside any section: {line!r}")
                key, _, value = line.partition("=")
                sections[-1][1][key.strip()] = value.strip()
    return sections


class WeightReader:
    """Sequential reader over the float32 payload of a .weights file."""

    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        major, minor, _revision = np.frombuffer(data[:12], dtype="<i4")
        # Darknet writes `seen` as size_t (8 bytes) from format 0.2 on, int32 before.
        seen_bytes = 8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4
        self.floats = np.frombuffer(data[12 + seen_bytes:], dtype="<f4")
        self.pos = 0

    def take(self, n):
        if self.pos + n > self.floats.size:
            raise ValueError(f"weights file too short: need {self.pos + n} floats, have {self.floats.size}")
        out = self.floats[self.pos:self.pos + n].astype(np.float32)
        self.pos += n
        return out

    def remaining(self):
        return self.floats.size - self.pos


def convert(cfg_path, weights_path, out_path):
    sections = parse_cfg(cfg_path)
    if not sections or sections[0][0] not in ("net", "network"):
        raise ValueError("cfg must start with [net]")
    net = sections[0][1]
    height, width = int(net.get("height", 416)), int(net.get("width", 416))
    channels = int(net.get("channels", 3))

    reader = WeightReader(weights_path)
    nodes, inits, outputs = [], [], []
    # Per darknet layer: (tensor name, channels, height, width).
    layers = []
    cur = ("input", channels, height, width)
    n_yolo = 0

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    for idx, (kind, opt) in enumerate(sections[1:]):
        prefix = f"l{idx:03d}_{kind}"
        if kind == "convolutional":
            name, c, h, w = cur
            filters = int(opt["filters"])
            size = int(opt.get("size", 1))
            stride = int(opt.get("stride", 1))
            # Darknet: pad=1 means "same"-ish padding of size/2; `padding` overrides.
            pad = size // 2 if int(opt.get("pad", 0)) else int(opt.get("padding", 0))
            groups = int(opt.get("groups", 1))
            bn = int(opt.get("batch_normalize", 0))
            act = opt.get("activation", "logistic")

            bias = reader.take(filters)
            if bn:
                scale = reader.take(filters)
                mean = reader.take(filters)
                var = reader.take(filters)
            weight = reader.take(filters * (c // groups) * size * size).reshape(filters, c // groups, size, size)
            if bn:
                # Fold BN so the ONNX graph is one Conv per darknet conv layer.
                k = scale / np.sqrt(var + BN_EPS)
                weight = weight * k[:, None, None, None]
                bias = bias - mean * k

            conv_out = f"{prefix}_conv"
            nodes.append(helper.make_node(
                "Conv", [name, const(f"{prefix}_w", weight), const(f"{prefix}_b", bias)], [conv_out],
                kernel_shape=[size, size], strides=[stride, stride], pads=[pad, pad, pad, pad],
                group=groups, name=conv_out))
            oh = (h + 2 * pad - size) // stride + 1
            ow = (w + 2 * pad - size) // stride + 1
            if act == "leaky":
                out = f"{prefix}_leaky"
                nodes.append(helper.make_node("LeakyRelu", [conv_out], [out], alpha=LEAKY_SLOPE, name=out))
            elif act == "linear":
                out = conv_out
            else:
                raise ValueError(f"layer {idx}: unsupported activation {act!r}")
            cur = (out, filters, oh, ow)

        elif kind == "maxpool":
            name, c, h, w = cur
            size = int(opt.get("size", 1))
            stride = int(opt.get("stride", 1))
            padding = int(opt.get("padding", size - 1))
            # Darknet's window starts at -padding/2 (C integer division, so 0 for
            # padding=1) and runs off the right/bottom edge; out-of-range cells
            # never win the max.  So all padding goes at the end: this is what
            # keeps 13x13 -> 13x13 for the size-2 stride-1 pool of yolov3-tiny.
            begin = padding // 2
            end = padding - begin
            out = f"{prefix}"
            nodes.append(helper.make_node(
                "MaxPool", [name], [out], kernel_shape=[size, size], strides=[stride, stride],
                pads=[begin, begin, end, end], name=out))
            oh = (h + padding - size) // stride + 1
            ow = (w + padding - size) // stride + 1
            cur = (out, c, oh, ow)

        elif kind == "upsample":
            name, c, h, w = cur
            s = int(opt.get("stride", 2))
            out = f"{prefix}"
            # Nearest-neighbour: each input pixel becomes an s x s block.
            nodes.append(helper.make_node(
                "Resize", [name, "", const(f"{prefix}_scales", np.array([1, 1, s, s], dtype=np.float32))], [out],
                mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor", name=out))
            cur = (out, c, h * s, w * s)

        elif kind == "route":
            refs = [int(v) for v in opt["layers"].split(",")]
            srcs = [layers[r if r >= 0 else idx + r] for r in refs]
            if len({(s[2], s[3]) for s in srcs}) != 1:
                raise ValueError(f"layer {idx}: route inputs differ in spatial size")
            if len(srcs) == 1:
                cur = srcs[0]
            else:
                out = f"{prefix}"
                nodes.append(helper.make_node("Concat", [s[0] for s in srcs], [out], axis=1, name=out))
                cur = (out, sum(s[1] for s in srcs), srcs[0][2], srcs[0][3])

        elif kind == "shortcut":
            ref = int(opt["from"])
            other = layers[ref if ref >= 0 else idx + ref]
            if opt.get("activation", "linear") != "linear":
                raise ValueError(f"layer {idx}: shortcut activation unsupported")
            out = f"{prefix}"
            nodes.append(helper.make_node("Add", [cur[0], other[0]], [out], name=out))
            cur = (out, cur[1], cur[2], cur[3])

        elif kind == "yolo":
            name, c, h, w = cur
            out = f"yolo_{n_yolo}"
            # Identity gives the head output a stable, documented name.
            nodes.append(helper.make_node("Identity", [name], [out], name=out))
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, c, h, w]))
            n_yolo += 1
            # The yolo layer itself is the identity in terms of tensors (decode is in Rust).

        else:
            raise ValueError(f"layer {idx}: unsupported section [{kind}]")
        layers.append(cur)

    if reader.remaining() != 0:
        raise ValueError(f"{reader.remaining()} weight floats left unread: cfg and weights do not match")
    if not outputs:
        raise ValueError("no [yolo] section in cfg")

    graph = helper.make_graph(
        nodes, "darknet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, height, width])],
        outputs, initializer=inits)
    model = helper.make_model(graph, producer_name="fave darknet_to_onnx",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    # IR 8 is read by every ONNX runtime we care about (tract, onnxruntime).
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    shapes = ", ".join(f"{o.name}=1x{o.type.tensor_type.shape.dim[1].dim_value}x"
                       f"{o.type.tensor_type.shape.dim[2].dim_value}x{o.type.tensor_type.shape.dim[3].dim_value}"
                       for o in outputs)
    print(f"wrote {out_path}: {len(nodes)} nodes, outputs {shapes}")


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    convert(argv[1], argv[2], argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
