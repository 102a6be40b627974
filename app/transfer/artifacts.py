"""Model artifacts: ``model.json`` + safetensors tensors. Never pickle.

A frozen-backbone model stores only its head (``head.safetensors``) and names its backbone
by registry name and weights digest; models that changed the backbone add
``backbone.safetensors``.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from app.transfer.heads import Head, build_head
from app.transfer.preprocess import Preprocessing

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_FILE = "backbone.safetensors"


def library_versions() -> dict[str, str]:
    import sklearn
    import timm

    import app

    return {
        "dovecote": app.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "scikit-learn": sklearn.__version__,
    }


@dataclass
class TrainedModel:
    """A trained classifier: backbone reference + head + classes + honest metrics."""

    method: str
    backbone: str
    backbone_digest: str
    preprocessing: Preprocessing
    classes: list[str]
    head: Head
    metrics: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    backbone_state: dict[str, torch.Tensor] | None = None

    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "backbone": {"name": self.backbone, "weights_digest": self.backbone_digest},
            "preprocessing": self.preprocessing.to_dict(),
            "classes": self.classes,
            "head": {"type": self.head.head_type, "config": self.head.config()},
            "finetuned_backbone": self.backbone_state is not None,
            "params": self.params,
            "metrics": self.metrics,
            "versions": library_versions(),
        }

    def to_files(self) -> dict[str, bytes]:
        files = {
            MODEL_JSON: json.dumps(self.manifest(), indent=2).encode(),
            HEAD_FILE: save_tensors(self.head.tensors()),
        }
        if self.backbone_state is not None:
            files[BACKBONE_FILE] = save_tensors(
                {k: v.contiguous() for k, v in self.backbone_state.items()}
            )
        return files

    @classmethod
    def from_files(cls, read: Callable[[str], bytes]) -> TrainedModel:
        manifest = json.loads(read(MODEL_JSON))
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported artifact format {manifest.get('format_version')}")
        head_info = manifest["head"]
        return cls(
            method=manifest["method"],
            backbone=manifest["backbone"]["name"],
            backbone_digest=manifest["backbone"]["weights_digest"],
            preprocessing=Preprocessing.from_dict(manifest["preprocessing"]),
            classes=list(manifest["classes"]),
            head=build_head(head_info["type"], load_tensors(read(HEAD_FILE)), head_info["config"]),
            metrics=manifest["metrics"],
            params=manifest.get("params", {}),
            backbone_state=(
                load_tensors(read(BACKBONE_FILE)) if manifest.get("finetuned_backbone") else None
            ),
        )
