"""CLIP image-text models (open_clip), an optional backend: ``pip install dovecote[clip]``.

A CLIP backbone (``family="open_clip"`` in the registry) serves its image tower like any
backbone: :class:`ImageTower` gives timm's interface, so ``Backbone.embed`` is the image
embedding :math:`g(x) \\in \\mathbb{R}^E` and the feature cache, predictor and export
serve it unchanged (linear probes and kNN on CLIP features come for free).

Zero-shot (Radford et al. 2021): class :math:`c`'s text embedding :math:`u_c` is the
prompt-ensembled, L2-normalised text-tower output for its name (see
:func:`app.transfer.text.embed_prompted`), and

.. math:: P(c \\mid x) = \\mathrm{softmax}_c\\big(s \\, \\hat g(x)^\\top u_c\\big),
          \\qquad \\hat g = g / \\lVert g \\rVert

with CLIP's learned logit scale :math:`s = \\exp(\\texttt{logit\\_scale}) \\le 100`:
a cosine-similarity classifier, served as a
:class:`~app.transfer.heads.LinearHead` with ``normalize=True``, :math:`W = s U`, :math:`b = 0`.

Weights come from a local file (``<weights_dir>/<name>.safetensors``, or an open_clip
checkpoint ``.pt``/``.bin``/``.pth``, read by ``open_clip.load_checkpoint``) or, with
``allow_hub``, the Hugging Face hub; a randomly initialised network is never served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from app.errors import BackboneUnavailable
from app.transfer.heads import LinearHead
from app.transfer.preprocess import Preprocessing
from app.transfer.text import Encoder

if TYPE_CHECKING:
    from app.transfer.backbones import BackboneSpec, WeightsSource

MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100 during training


class ImageTower(nn.Module):
    """CLIP's image encoder behind timm's interface: ``forward_features`` is the image
    embedding ``(N, E)``, ``forward_head(pre_logits=True)`` passes it through, and there
    is no ImageNet classifier (``get_classifier`` is the identity)."""

    def __init__(self, visual: nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.visual = visual
        self.num_features = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def create_clip(spec: BackboneSpec, source: WeightsSource) -> tuple[nn.Module, str]:
    """The whole CLIP model (image and text towers) with its weights, in eval mode on the
    CPU, and the weights digest."""
    import open_clip

    from app.transfer.backbones import file_digest

    if source.kind == "hub":
        model = open_clip.create_model(f"hf-hub:{source.location}")
        digest = hashlib.sha256(source.location.encode()).hexdigest()
    else:
        model = open_clip.create_model(spec.architecture, pretrained=None)
        try:
            open_clip.load_checkpoint(model, source.location, strict=True)
        except (
            RuntimeError,
            KeyError,
            ValueError,
            AssertionError,
        ) as exc:  # open_clip asserts shapes
            raise BackboneUnavailable(
                f"{source.location} does not hold open_clip {spec.architecture!r} weights: "
                f"{str(exc)[:300]}",
                backbone=spec.name,
            ) from None
        digest = file_digest(source.location)
    return model.eval(), digest


def preprocessing(model: nn.Module) -> Preprocessing:
    """CLIP's own image size, interpolation and normalisation, with Dovecote's
    whole-frame resize."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    return Preprocessing(
        input_size=(3, *cfg["size"]),  # type: ignore[arg-type]
        interpolation=cfg["interpolation"],
        mean=tuple(cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(cfg["std"]),  # type: ignore[arg-type]
        crop_pct=1.0,
        crop_mode="squash",
    )


def image_tower(model: nn.Module) -> ImageTower:
    return ImageTower(model.visual, int(model.text_projection.shape[-1]))  # type: ignore[union-attr,index]


@lru_cache(maxsize=8)
def image_tower_parameters(architecture: str) -> int:
    """Parameters of the image tower of open_clip ``architecture`` (built without weights)."""
    import open_clip

    visual = open_clip.create_model(architecture, pretrained=None).visual
    return sum(p.numel() for p in visual.parameters())


def _encode_text(model: Any, tokenizer: Any, sentences: Sequence[str]) -> np.ndarray:
    with torch.inference_mode():
        return model.encode_text(tokenizer(list(sentences)), normalize=True).float().numpy()


def text_encoder(spec: BackboneSpec, source: WeightsSource) -> tuple[Encoder, float]:
    """The text tower of CLIP backbone ``spec`` as an :data:`~app.transfer.text.Encoder`
    (L2-normalised ``(N, E)``), and the logit scale :math:`s`."""
    import open_clip

    model, _ = create_clip(spec, source)
    name = f"hf-hub:{source.location}" if source.kind == "hub" else spec.architecture
    tokenizer = open_clip.get_tokenizer(name)
    scale = min(float(model.logit_scale.detach().exp()), MAX_LOGIT_SCALE)  # type: ignore[operator]
    return lambda sentences: _encode_text(model, tokenizer, sentences), scale


def zero_shot_head(codes: np.ndarray, scale: float) -> LinearHead:
    """The cosine classifier :math:`\\mathrm{softmax}(s\\, U \\hat g)` over unit class
    vectors ``codes`` ``(C, E)``."""
    weight = torch.from_numpy(codes).float() * scale
    return LinearHead(weight, torch.zeros(len(codes)), normalize=True)
