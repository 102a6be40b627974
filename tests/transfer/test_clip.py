"""The open_clip backend, wired with a randomly initialised small CLIP model.

Random weights: these tests check the plumbing (registry, image tower, text tower, head,
artifact, predictor) against open_clip's own forward pass, never an accuracy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from app.errors import (
    BackboneHasNoClassifier,
    BackboneNotTrainable,
    BackboneUnavailable,
    InvalidParams,
)
from app.transfer import Predictor, TrainedModel, get_method
from app.transfer import backbones as registry
from app.transfer.backbones import BackboneSpec, load_backbone, parameter_count
from app.transfer.data import ClassInfo
from app.transfer.preprocess import load_for_model
from tests.factories import encode, photo
from tests.transfer.test_zero_shot import dataset, photo_items

open_clip = pytest.importorskip("open_clip")

#: The smallest open_clip architecture: ViT-S/32 image tower, 10-layer 256-wide text tower.
ARCHITECTURE = "ViT-S-32-alt"
NAME = "clip_test_s32"
ZS = get_method("zero_shot")


@contextmanager
def random_clip(weights_dir: Path) -> Iterator[Path]:
    """``<weights_dir>/clip_test_s32.safetensors`` with random weights (seed 0), and that
    name registered as an open_clip backbone while the context lasts."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(ARCHITECTURE, pretrained=None)
    weights_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(weights_dir / f"{NAME}.safetensors"),
    )
    spec = BackboneSpec(name=NAME, architecture=ARCHITECTURE, family="open_clip")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry._REGISTRY, NAME, spec)
        yield weights_dir


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with random_clip(tmp_path_factory.mktemp("clip-weights")) as weights_dir:
        yield weights_dir


def test_the_image_tower_is_a_backbone_and_the_head_is_clips_own_classifier(
    clip_weights: Path,
) -> None:
    backbone = load_backbone(NAME, weights_dir=clip_weights)
    assert backbone.source.kind == "file" and backbone.num_features == 256
    assert backbone.preprocessing.input_size == (3, 224, 224)
    assert parameter_count(NAME) == sum(p.numel() for p in backbone.model.parameters())
    names = ["cat", "coffee", "rocket"]
    data = dataset([], [ClassInfo(n) for n in names], backbone=NAME, weights_dir=clip_weights)
    model = ZS.fit(data, ZS.parse_params({"templates": ["{}"]}))
    assert model.metrics["backend"] == "clip" and model.metrics["validation"] == "none"
    assert model.head.head_type == "linear"

    # open_clip's own forward pass on the same weights and the same pixels
    reference = open_clip.create_model(ARCHITECTURE, pretrained=None)
    open_clip.load_checkpoint(reference, str(clip_weights / f"{NAME}.safetensors"))
    reference.eval()
    x = torch.stack(
        [load_for_model(encode(photo(n)), backbone.preprocessing, max_pixels=10**8)
         for n in ("chelsea", "coffee")]
    )  # fmt: skip
    tokens = open_clip.get_tokenizer(ARCHITECTURE)(names)
    with torch.inference_mode():
        image, text, scale = reference(x, tokens)
        want = (scale * image @ text.T).softmax(dim=-1)
        got = model.head(backbone.embed(x))
    assert torch.allclose(got, want, atol=1e-5)


def test_model_serves_probabilities_over_the_projects_classes(clip_weights: Path) -> None:
    data = dataset(photo_items(2), [], backbone=NAME, weights_dir=clip_weights)
    model = ZS.fit(data)
    m = model.metrics
    # measured on the 8 labeled crops like any zero-shot model; random weights: no claim
    assert m["backend"] == "clip" and m["validation"] == "zero-shot" and m["n_validation"] == 8
    assert 0 <= m["accuracy"] <= 1
    files = model.to_files()
    assert set(files) == {"model.json", "head.safetensors"}
    loaded = TrainedModel.from_files(files.__getitem__)
    assert loaded.backbone == NAME and loaded.classes == ["astronaut", "cat", "coffee", "rocket"]
    predictor = Predictor(weights_dir=clip_weights)
    probes = [encode(photo(n)) for n in ("chelsea", "rocket")]
    for p in predictor.predict("clip", files.__getitem__, probes, top_k=4):
        assert {c for c, _ in p.scores} == set(model.classes)
        assert abs(sum(s for _, s in p.scores) - 1) < 1e-5 and p.label == p.scores[0][0]
        assert all(0 <= s <= 1 for _, s in p.scores)


def test_backend_and_backbone_must_agree(clip_weights: Path) -> None:
    names = [ClassInfo("cat"), ClassInfo("dog")]
    clip_data = dataset([], names, backbone=NAME, weights_dir=clip_weights)
    timm_data = dataset([], names)
    with pytest.raises(BackboneHasNoClassifier):
        ZS.check(clip_data, ZS.parse_params({"backend": "conse"}))
    with pytest.raises(InvalidParams, match="CLIP backbone"):
        ZS.check(timm_data, ZS.parse_params({"backend": "clip"}))
    ZS.check(clip_data, ZS.parse_params({"backend": "auto"}))
    ZS.check(timm_data, ZS.parse_params({"backend": "auto"}))


def test_missing_or_mismatched_weights_are_backbone_unavailable(
    clip_weights: Path, tmp_path: Path
) -> None:
    with pytest.raises(BackboneUnavailable, match="No weights"):
        registry.resolve_weights("clip_vit_b32", weights_dir=tmp_path)  # no file, no hub
    (tmp_path / "clip_vit_b32.safetensors").symlink_to(clip_weights / f"{NAME}.safetensors")
    with pytest.raises(BackboneUnavailable, match="does not hold"):  # ViT-S weights, ViT-B net
        load_backbone("clip_vit_b32", weights_dir=tmp_path)


def test_frozen_feature_methods_train_on_the_image_tower_but_finetuning_is_refused(
    clip_weights: Path,
) -> None:
    data = dataset(photo_items(4), [], backbone=NAME, weights_dir=clip_weights)
    probe = get_method("linear_probe").fit(data)
    assert probe.backbone == NAME and probe.metrics["n_train"] == 16
    finetune, da = get_method("finetune"), get_method("domain_adaptation")
    with pytest.raises(BackboneNotTrainable, match="cannot be finetuned"):
        finetune.check(data, finetune.parse_params({}))
    with pytest.raises(BackboneNotTrainable):
        finetune.fit(data)  # auto's finetune candidate fails typed too
    data.samples = [
        dataclasses.replace(s, domain="source" if i % 2 else "target")
        for i, s in enumerate(data.samples)
    ]
    da.check(data, da.parse_params({}))  # DANN on frozen features: any backbone
    with pytest.raises(BackboneNotTrainable):
        da.check(data, da.parse_params({"dann_finetune_blocks": 1}))
    with pytest.raises(BackboneNotTrainable):
        registry.require_trainable(NAME)  # distill's student check
    registry.require_trainable("efficientnet_lite0")
