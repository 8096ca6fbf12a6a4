#!/usr/bin/env python3
"""Independent cross-check of fave-detect's pipeline, outside Rust and tract.

Runs the converted model.onnx in onnxruntime on one image with the same
pre/post-processing as the crate (letterbox with Pillow's antialiased
bilinear resize, 0.5 grey padding; YOLOv3 decode; per-class NMS) and prints
`label score [x1, y1, x2, y2]`.  The known answers in tests/ came from this.

Not needed to build or test the crate.  Needs numpy, onnxruntime and pillow,
e.g. in a throwaway venv:  python3 -m venv /tmp/v && /tmp/v/bin/pip install
numpy onnxruntime pillow && /tmp/v/bin/python scripts/reference_detect.py IMG

Usage: reference_detect.py IMAGE [MODEL_DIR]
(MODEL_DIR defaults to $FAVE_MODELS/yolov3-tiny.)
"""

import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

THRESH, NMS_IOU = 0.25, 0.45


def yolo_heads(cfg_path):
    """[(anchors for this head, classes)] from the [yolo] sections, in order."""
    heads, cur = [], None
    for raw in open(cfg_path, encoding="utf-8"):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            cur = {} if line == "[yolo]" else None
            if cur is not None:
                heads.append(cur)
        elif cur is not None and "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            cur[k] = v
    out = []
    for h in heads:
        a = [float(v) for v in h["anchors"].split(",")]
        pairs = list(zip(a[0::2], a[1::2]))
        out.append(([pairs[int(m)] for m in h["mask"].split(",")], int(h["classes"])))
    return out


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write(__doc__)
        return 2
    model_dir = argv[2] if len(argv) == 3 else os.path.join(
        os.environ.get("FAVE_MODELS", "/root/.cache/fave-tools/models"), "yolov3-tiny")
    names = [l.strip() for l in open(os.path.join(model_dir, "coco.names")) if l.strip()]
    heads = yolo_heads(os.path.join(model_dir, "yolov3-tiny.cfg"))
    sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"))
    _, _, net_h, net_w = sess.get_inputs()[0].shape

    img = Image.open(argv[1]).convert("RGB")
    w, h = img.size
    if net_w * h < net_h * w:
        nw, nh = net_w, h * net_w // w
    else:
        nw, nh = w * net_h // h, net_h
    px, py = (net_w - nw) // 2, (net_h - nh) // 2
    canvas = np.full((net_h, net_w, 3), 0.5, np.float32)
    canvas[py:py + nh, px:px + nw] = np.asarray(img.resize((nw, nh), Image.BILINEAR), np.float32) / 255
    outs = sess.run(None, {"input": canvas.transpose(2, 0, 1)[None].copy()})

    sig = lambda v: 1 / (1 + np.exp(-v))
    dets = []
    for out, (anchors, classes) in zip(outs, heads):
        _, _, gh, gw = out.shape
        out = out.reshape(len(anchors), 5 + classes, gh, gw)
        for a, (aw, ah) in enumerate(anchors):
            for r in range(gh):
                for c in range(gw):
                    v = out[a, :, r, c]
                    obj = sig(v[4])
                    if obj <= THRESH:
                        continue
                    cx, cy = (c + sig(v[0])) / gw * net_w, (r + sig(v[1])) / gh * net_h
                    bw, bh = np.exp(v[2]) * aw, np.exp(v[3]) * ah
                    box = [(cx - bw / 2 - px) * w / nw, (cy - bh / 2 - py) * h / nh,
                           (cx + bw / 2 - px) * w / nw, (cy + bh / 2 - py) * h / nh]
                    box = [min(max(box[0], 0), w), min(max(box[1], 0), h),
                           min(max(box[2], 0), w), min(max(box[3], 0), h)]
                    scores = obj * sig(v[5:])
                    for k in np.nonzero(scores > THRESH)[0]:
                        dets.append((names[k], float(scores[k]), box))
    dets.sort(key=lambda d: -d[1])
    kept = []
    for d in dets:
        if all(k[0] != d[0] or iou(k[2], d[2]) <= NMS_IOU for k in kept):
            kept.append(d)
    for label, score, box in kept:
        print(f"{label} {score:.3f} [{', '.join(f'{float(v):.1f}' for v in box)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
