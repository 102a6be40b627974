"""Weakly-supervised localization on real photos: a cat pasted at known positions."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

from app.transfer import Predictor, TrainedModel, TrainingData, get_method
from app.transfer.backbones import load_backbone
from app.transfer.data import Sample
from app.transfer.localize import Box, box_from_map, class_activation_maps
from app.transfer.preprocess import load_for_model
from tests.scenes import Scene, scenes


def scene_data(items: list[Scene], **kwargs: object) -> TrainingData:
    blobs = {str(i): s.png for i, s in enumerate(items)}
    samples = [Sample(key=str(i), label=s.label) for i, s in enumerate(items)]
    return TrainingData(samples=samples, load_bytes=lambda s: blobs[s.key], **kwargs)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def test_cats() -> list[Scene]:
    return [s for s in scenes(40, split="test", seed=1) if s.label == "cat"]


test_cats.__test__ = False  # type: ignore[attr-defined]


def mean_iou(model: TrainedModel, key: str) -> float:
    cats = test_cats()
    predictor = Predictor()
    found = predictor.localize(
        key, model.to_files().__getitem__, [s.png for s in cats], ["cat"] * len(cats)
    )
    assert all(f is not None for f in found)
    return float(np.mean([f.box.iou(s.box) for f, s in zip(found, cats, strict=True)]))  # type: ignore[union-attr, arg-type]


@pytest.mark.parametrize("method", ["linear_probe", "knn"])
def test_boxes_cover_the_pasted_object(method: str) -> None:
    model = get_method(method).fit(scene_data(scenes(48, split="train", seed=0)))
    iou = mean_iou(model, method)
    centred = Box(0.25, 0.25, 0.5, 0.5)  # the box one would guess without looking
    guess = float(np.mean([centred.iou(s.box) for s in test_cats()]))  # type: ignore[arg-type]
    print(f"{method}: mean IoU {iou:.3f} over {len(test_cats())} cats (centred box {guess:.3f})")
    assert iou >= 0.5, iou
    assert iou >= guess + 0.15, (iou, guess)


def test_grad_cam_of_a_linear_head_is_its_class_activation_map() -> None:
    """For a linear head on average-pooled features, Grad-CAM = ReLU(w_c . A): the head
    applied at every position of the feature map (Zhou et al. 2016)."""
    backbone = load_backbone("efficientnet_lite0")
    model = get_method("linear_probe").fit(scene_data(scenes(12, split="train", seed=3)))
    x = torch.stack(
        [load_for_model(s.png, backbone.preprocessing, max_pixels=10**8) for s in test_cats()[:3]]
    )
    cls = model.classes.index("cat")
    got = class_activation_maps(backbone, model.head, x, torch.full((3,), cls))
    with torch.no_grad():
        fmap = backbone.model.forward_features(x)
        cam = torch.einsum("k,nkhw->nhw", model.head.linear.weight[cls], fmap).relu()  # type: ignore[union-attr]
        cam = torch.nn.functional.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear")[:, 0]
        cam = cam / cam.flatten(1).max(1).values[:, None, None]
    assert torch.allclose(got, cam, atol=1e-4)


def test_box_is_the_largest_component_normalised() -> None:
    heat = np.zeros((100, 200))
    heat[10:30, 20:60] = 1.0  # the largest region
    heat[70:75, 150:160] = 0.9  # a smaller one, above the threshold too
    box = box_from_map(heat, threshold=0.5, mass=None)
    assert box == Box(left=0.1, top=0.1, width=0.2, height=0.2)
    assert box_from_map(np.zeros((4, 4))) == Box(0.0, 0.0, 1.0, 1.0)
    assert Box(0, 0, 0.5, 0.5).iou(Box(0.25, 0, 0.5, 0.5)) == pytest.approx(1 / 3)


def test_a_finetuned_model_localizes_with_its_own_backbone() -> None:
    ft = get_method("finetune")
    model = ft.fit(
        scene_data(scenes(12, split="train", seed=4)),
        ft.parse_params(
            {"trainable": "last_n_blocks", "n": 1, "epochs": 1, "probe_candidate": False}
        ),
    )
    predictor = Predictor()
    cats = test_cats()[:2]
    found = predictor.localize(
        "ft", model.to_files().__getitem__, [s.png for s in cats], ["cat"] * 2
    )
    assert ("efficientnet_lite0", "finetuned:ft") in predictor.backbones._data
    assert list(predictor.backbones._data) == [("efficientnet_lite0", "finetuned:ft")]
    for loc in found:
        assert loc is not None and loc.label == "cat" and loc.heatmap.shape == (224, 224)
        assert 0 <= loc.box.left < 1 and 0 < loc.box.width <= 1 - loc.box.left + 1e-9
    assert predictor.localize("ft", model.to_files().__getitem__, [cats[0].png], ["dog"]) == [None]
