"""Export a model as one self-contained file: preprocessed images in, class probabilities out.

``onnx``: an ONNX graph (opset 17) with input ``input`` ``(N, 3, H, W)`` float32 and output
``probabilities`` ``(N, C)``; the class names and the preprocessing ride in the model's
``metadata_props`` under ``dovecote``. ``torchscript``: a traced module with the same
contract and the same JSON as the extra file ``dovecote.json``. Both compute exactly what
the service's predictor computes (backbone -> head), so they agree with ``/predict``.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from typing import Any, Literal

import torch
from torch import nn

from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import Backbone

OPSET = 17  # ONNX opset of every exported graph

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: dict[str, tuple[str, str]] = {  # format -> (file suffix, media type)
    "onnx": (".onnx", "application/onnx"),
    "torchscript": (".pt", "application/octet-stream"),
}


class ExportedClassifier(nn.Module):
    """``probabilities = head(backbone.embed(x))`` as one module."""

    def __init__(self, backbone: Backbone, model: TrainedModel) -> None:
        super().__init__()
        self.network = (
            copy.deepcopy(backbone.model).to(memory_format=torch.contiguous_format).eval()
        )
        self.head = copy.deepcopy(model.head).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.network.forward_head(self.network.forward_features(x), pre_logits=True)  # type: ignore[operator]
        return self.head(feats)


def export_metadata(model: TrainedModel, model_id: str) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "classes": model.classes,
        "preprocessing": model.preprocessing.to_dict(),
        "input": "RGB image resized and normalised as `preprocessing` says, NCHW float32",
        "output": "class probabilities, columns in the order of `classes`",
        "method": model.method,
        "backbone": model.backbone,
    }


def export_model(
    backbone: Backbone, model: TrainedModel, *, model_id: str, fmt: ExportFormat
) -> bytes:
    module = ExportedClassifier(backbone, model)
    example = torch.zeros(1, *model.preprocessing.input_size)
    meta = json.dumps(export_metadata(model, model_id))
    buf = io.BytesIO()
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", FutureWarning
            )  # TorchScript is deprecated, still served
            traced = torch.jit.trace(module, example)
            torch.jit.save(traced, buf, _extra_files={"dovecote.json": meta})
        return buf.getvalue()
    import onnx

    proto = onnx.load_from_string(
        to_onnx(module, example, input_name="input", output_name="probabilities")
    )
    proto.metadata_props.add(key="dovecote", value=meta)
    return proto.SerializeToString()


def to_onnx(
    module: nn.Module, example: torch.Tensor, *, input_name: str, output_name: str
) -> bytes:
    """``module`` as an ONNX graph (opset 17) with a dynamic batch axis.

    Uses the TorchScript-based exporter: it needs only ``onnx`` and handles timm's
    TF-"same" padding.
    """
    buf = io.BytesIO()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's fused inference kernel (CLIP's ViT) has no ONNX op.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module, (example,), buf, dynamo=False, opset_version=OPSET,
                input_names=[input_name], output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            )  # fmt: skip
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return buf.getvalue()
