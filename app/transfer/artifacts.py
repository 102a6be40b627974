"""Model artifacts: ``model.json`` + safetensors tensors. Never pickle.

A frozen-backbone model stores only its head (``head.safetensors``) and names its backbone
by registry name and weights digest; models that changed the backbone add
``backbone.safetensors``: every tensor of the network, or, when ``model.json`` says
``backbone_delta``, only those that differ from the pretrained weights it names (AdaBN's
BatchNorm statistics, ~170 KB instead of the ~19 MB network); the predictor loads them over
those weights, which must then be the ones named. Artifacts without ``backbone_delta``
(every one before it) hold the whole network.

Head tensors that are not the model's own (:attr:`Head.shared_buffers`: a zero-shot head's
copy of the backbone's 1000-class ImageNet classifier and ImageNet's class-text vectors,
identical in every zero-shot model on that backbone) are stored once per installation,
content-addressed: ``shared-tensors/<sha256>.safetensors`` (one tensor, ``tensor``), named in
``model.json`` by digest (``head.shared``). Such artifacts are format 2; format 1 (every
tensor in ``head.safetensors``) is still read.
"""

from __future__ import annotations

import hashlib
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

FORMAT_VERSION = 1  # every tensor in the artifact's own files
SHARED_FORMAT_VERSION = 2  # some head tensors in shared, content-addressed files
READABLE_FORMATS = frozenset({FORMAT_VERSION, SHARED_FORMAT_VERSION})
MODEL_JSON = "model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_FILE = "backbone.safetensors"
#: Folder of the shared tensors, at the root of the blob store (not under a model's prefix).
SHARED_DIR = "shared-tensors"
_SHARED_KEY = "tensor"


def shared_file(digest: str) -> str:
    """The file name of the shared tensor whose safetensors bytes have sha256 ``digest``."""
    return f"{SHARED_DIR}/{digest}.safetensors"


def is_shared_file(name: str) -> bool:
    """Whether artifact file ``name`` is a shared tensor (stored once, not per model)."""
    return name.startswith(f"{SHARED_DIR}/")


def shared_tensor(read: Callable[[str], bytes], digest: str) -> torch.Tensor:
    """The shared tensor of sha256 ``digest``, read and checked against it."""
    data = read(shared_file(digest))
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"shared tensor {digest} does not match its digest")
    return load_tensors(data)[_SHARED_KEY]


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
    #: ``backbone_state`` holds only what differs from the pretrained ``backbone_digest``.
    backbone_delta: bool = False

    def manifest(self, shared: dict[str, str] | None = None) -> dict[str, Any]:
        """``shared``: head tensor name -> digest of its shared file (:meth:`to_files`)."""
        head: dict[str, Any] = {"type": self.head.head_type, "config": self.head.config()}
        if shared:
            head["shared"] = shared
        return {
            "format_version": SHARED_FORMAT_VERSION if shared else FORMAT_VERSION,
            "method": self.method,
            "backbone": {"name": self.backbone, "weights_digest": self.backbone_digest},
            "preprocessing": self.preprocessing.to_dict(),
            "classes": self.classes,
            "head": head,
            "finetuned_backbone": self.backbone_state is not None,
            "backbone_delta": self.backbone_delta,
            "params": self.params,
            "metrics": self.metrics,
            "versions": library_versions(),
        }

    def to_files(self) -> dict[str, bytes]:
        """The artifact's files by name; shared tensors under :func:`shared_file` names,
        which the blob store keeps once for every model (:func:`is_shared_file`)."""
        tensors = self.head.tensors()
        files: dict[str, bytes] = {}
        shared: dict[str, str] = {}
        for name in self.head.shared_buffers:
            data = save_tensors({_SHARED_KEY: tensors.pop(name)})
            shared[name] = digest = hashlib.sha256(data).hexdigest()
            files[shared_file(digest)] = data
        files[MODEL_JSON] = json.dumps(self.manifest(shared), indent=2).encode()
        files[HEAD_FILE] = save_tensors(tensors)
        if self.backbone_state is not None:
            files[BACKBONE_FILE] = save_tensors(
                {k: v.contiguous() for k, v in self.backbone_state.items()}
            )
        return files

    @classmethod
    def from_files(
        cls,
        read: Callable[[str], bytes],
        load_shared: Callable[[str], torch.Tensor] | None = None,
    ) -> TrainedModel:
        """The model whose files ``read(name)`` returns; ``load_shared(digest)``: its shared
        tensors (default: :func:`shared_tensor` through ``read``; the predictor passes its
        cache, so a tensor another model holds is neither read nor copied again)."""
        manifest = json.loads(read(MODEL_JSON))
        if manifest.get("format_version") not in READABLE_FORMATS:
            raise ValueError(f"unsupported artifact format {manifest.get('format_version')}")
        head_info = manifest["head"]
        tensors = load_tensors(read(HEAD_FILE))
        for name, digest in head_info.get("shared", {}).items():
            tensors[name] = (load_shared or (lambda d: shared_tensor(read, d)))(digest)
        return cls(
            method=manifest["method"],
            backbone=manifest["backbone"]["name"],
            backbone_digest=manifest["backbone"]["weights_digest"],
            preprocessing=Preprocessing.from_dict(manifest["preprocessing"]),
            classes=list(manifest["classes"]),
            head=build_head(head_info["type"], tensors, head_info["config"]),
            metrics=manifest["metrics"],
            params=manifest.get("params", {}),
            backbone_state=(
                load_tensors(read(BACKBONE_FILE)) if manifest.get("finetuned_backbone") else None
            ),
            backbone_delta=bool(manifest.get("backbone_delta", False)),
        )
